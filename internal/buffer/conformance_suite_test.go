package buffer_test

// The conformance suite of the buffer contract (the delivery contract of
// DESIGN.md as far as the buffer owns it). Every buffer backend runs it:
// Run(t, opener, options) checks append atomicity with the checkpoint, dedupe, consumer reads and acknowledgements, redelivery of
// pending entries after a reopen, Touch versus the delivery count, reclaim,
// dead letters with their reason (listed page by page, replayed into the
// stream, dropped), trimming that never removes a pending or
// undelivered entry, and Stats/Full, all through the backend's methods only.
// It lives in the external test package, so it sees what a caller sees.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/buffer/internal/testlog"
	"github.com/authpipe/authpipe/internal/metrics"
)

// Backend is what the suite checks: the methods the poller and the
// forwarder use, the operator's views, and Close (a no-op for backends
// without one, such as Redis).
type Backend interface {
	Ping(ctx context.Context) error
	Checkpoint(ctx context.Context) (string, error)
	Append(ctx context.Context, logs []auth0log.Log, checkpoint string) (int, error)
	Full(ctx context.Context) (bool, error)
	EnsureGroup(ctx context.Context, group string) error
	Read(ctx context.Context, group, consumer string, count int, block time.Duration) ([]buffer.Entry, error)
	ReadPending(ctx context.Context, group, consumer, after string, count int) ([]buffer.Entry, error)
	Ack(ctx context.Context, group string, ids ...string) error
	Touch(ctx context.Context, group, consumer string, ids ...string) error
	Reclaim(ctx context.Context, group, consumer string, minIdle time.Duration, count int) ([]buffer.Entry, error)
	NoteFailure(ctx context.Context, id, reason string) error
	DeadLetter(ctx context.Context, group string, e buffer.Entry, reason string) error
	DeadLetters(ctx context.Context, count int) ([]buffer.DeadLetter, error)
	DeadLettersAfter(ctx context.Context, after string, count int) ([]buffer.DeadLetter, error)
	ReplayDeadLetters(ctx context.Context, ids []string) (int, error)
	DropDeadLetters(ctx context.Context, ids []string) (int, error)
	Trim(ctx context.Context) (int64, error)
	Stats(ctx context.Context, group string) (buffer.Stats, error)
	Config() buffer.Config
	Close() error
}

// Opener opens a backend on one store (a tenant on a Redis server, a data
// dir). Opened again after Close, it must see the same data. It fills in
// cfg.Tenant when empty, then opens with TenantDeps(cfg, deps).
type Opener func(cfg buffer.Config, deps buffer.Deps) (Backend, error)

// TenantDeps are deps as package pipeline hands them to the buffer of
// cfg.Tenant: the registerer labels with the tenant (metrics.Tenant) and
// the stage counters are registered through it.
func TenantDeps(cfg buffer.Config, deps buffer.Deps) buffer.Deps {
	deps.Registerer = metrics.Tenant(deps.Registerer, cfg.Tenant)
	deps.Stages = metrics.NewStages(deps.Registerer)
	return deps
}

// Options describe how a backend differs where the contract leaves room.
type Options struct {
	// WallClockIdle: the backend measures idle time of pending entries by
	// the wall clock (Redis does, on the server), not by the injected
	// clock, so making entries idle means sleeping.
	WallClockIdle bool
}

// Run runs the suite. newOpener is called once per test case and returns
// an opener on a fresh, empty store.
func Run(t *testing.T, newOpener func(t *testing.T) Opener, opts Options) {
	tests := []struct {
		name string
		run  func(t *testing.T, h *Harness)
	}{
		{"Append", testAppend},
		{"ReadGivesParsedFields", testParsedFields},
		{"AppendAtomic", testAppendAtomic},
		{"ReadAckPending", testReadAckPending},
		{"ReadBlocks", testReadBlocks},
		{"TouchKeepsDeliveryCount", testTouch},
		{"Reclaim", testReclaim},
		{"ReclaimWalksPendingList", testReclaimWalks},
		{"ReadPendingDeadLetters", testReadPendingDeadLetters},
		{"DeadLetter", testDeadLetter},
		{"DeadLettersPaging", testDeadLettersPaging},
		{"ReplayDeadLetters", testReplayDeadLetters},
		{"DropDeadLetters", testDropDeadLetters},
		{"ReplayEmpty", testReplayEmpty},
		{"Trim", testTrim},
		{"TrimEmpty", testTrimEmpty},
		{"StatsAndFull", testStatsAndFull},
		{"Metrics", testMetrics},
		{"Reopen", testReopen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, &Harness{newOpener: newOpener, opts: opts})
		})
	}
}

// Harness opens backends for one test case.
type Harness struct {
	newOpener func(t *testing.T) Opener
	opts      Options

	B     Backend
	Reg   *prometheus.Registry
	Clock *clockwork.FakeClock

	open Opener
	cfg  buffer.Config
}

// Open opens a backend on a fresh store, closed when the test ends. The
// fake clock starts at the real time.
func (h *Harness) Open(t *testing.T, cfg buffer.Config) Backend {
	t.Helper()
	h.open = h.newOpener(t)
	h.Clock = clockwork.NewFakeClockAt(time.Now())
	h.openAgain(t, cfg)
	return h.B
}

func (h *Harness) openAgain(t *testing.T, cfg buffer.Config) {
	t.Helper()
	h.Reg = prometheus.NewPedanticRegistry()
	b, err := h.open(cfg, buffer.Deps{Registerer: h.Reg, Clock: h.Clock})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	h.B, h.cfg = b, b.Config()
}

// Reopen closes the backend and opens the same store again, with a fresh
// registry: what a restarted process sees.
func (h *Harness) Reopen(t *testing.T) {
	t.Helper()
	require.NoError(t, h.B.Close())
	h.openAgain(t, h.cfg)
}

// Idle lets d pass for idle times: the fake clock moves on, and with
// WallClockIdle the test sleeps as well.
func (h *Harness) Idle(d time.Duration) {
	if h.opts.WallClockIdle {
		time.Sleep(d)
	}
	h.Clock.Advance(d)
}

// Counter returns the value of a series of the backend's registry (the sum
// of the series of name whose labels include labels).
func (h *Harness) Counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := h.Reg.Gather()
	require.NoError(t, err)
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue metric
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// The suite's logs (see package testlog).
var (
	// Base is the time of the suite's logs.
	Base = testlog.Base
	// LogAt returns a log whose log_id embeds time at and ends in seq.
	LogAt = testlog.LogAt
	// Page returns n logs with ascending ids seq from..from+n-1 at time at.
	Page = testlog.Page
	// LogIDs returns the logs' log_ids.
	LogIDs = testlog.LogIDs
)

// EntryIDs returns the entries' stream ids.
func EntryIDs(es []buffer.Entry) []string {
	return testlog.IDs(es, func(e buffer.Entry) string { return e.ID })
}

// EntryLogIDs returns the entries' log_ids.
func EntryLogIDs(es []buffer.Entry) []string {
	return testlog.IDs(es, func(e buffer.Entry) string { return e.LogID })
}

// ReadAll delivers every undelivered entry of group to consumer, creating
// the group if needed. A new group sees the whole stream: that is how the
// suite looks at what is stored.
func ReadAll(t *testing.T, b Backend, group, consumer string) []buffer.Entry {
	t.Helper()
	ctx := t.Context()
	require.NoError(t, b.EnsureGroup(ctx, group))
	var all []buffer.Entry
	for {
		es, err := b.Read(ctx, group, consumer, 1000, -1)
		require.NoError(t, err)
		if len(es) == 0 {
			return all
		}
		all = append(all, es...)
	}
}

// ReadAllPending pages through consumer's pending list with ReadPending.
func ReadAllPending(t *testing.T, b Backend, group, consumer string, count int) []buffer.Entry {
	t.Helper()
	var all []buffer.Entry
	after := "0"
	for {
		es, err := b.ReadPending(t.Context(), group, consumer, after, count)
		require.NoError(t, err)
		if len(es) == 0 {
			return all
		}
		all = append(all, es...)
		after = es[len(es)-1].ID
	}
}

// storedLogIDs lists the log_ids in the stream, in stream order, through a
// throwaway group.
func storedLogIDs(t *testing.T, b Backend) []string {
	t.Helper()
	return nilIfEmpty(EntryLogIDs(ReadAll(t, b, fmt.Sprintf("audit-%d", time.Now().UnixNano()), "audit")))
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func appendAll(t *testing.T, b Backend, logs []auth0log.Log) int {
	t.Helper()
	added, err := b.Append(t.Context(), logs, logs[len(logs)-1].ID)
	require.NoError(t, err)
	return added
}

// delivered opens a backend holding n logs, all of them delivered to
// consumer c1 of group "fwd" and pending.
func delivered(t *testing.T, h *Harness, cfg buffer.Config, n int) (Backend, []auth0log.Log, []buffer.Entry) {
	t.Helper()
	b := h.Open(t, cfg)
	logs := Page(Base, 0, n)
	appendAll(t, b, logs)
	require.NoError(t, b.EnsureGroup(t.Context(), "fwd"))
	got, err := b.Read(t.Context(), "fwd", "c1", n+10, 10*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, got, n)
	return b, logs, got
}

func testAppend(t *testing.T, h *Harness) {
	p1 := Page(Base, 0, 5)
	p2 := Page(Base.Add(time.Second), 0, 5)
	cat := func(ps ...[]auth0log.Log) []auth0log.Log {
		var out []auth0log.Log
		for _, p := range ps {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name       string
		pages      [][]auth0log.Log
		checkpoint []string // per page; "" = the page's last id, "-" = none
		wantAdded  []int
		wantStream []auth0log.Log
		wantCP     string
	}{
		{name: "new page", pages: [][]auth0log.Log{p1}, wantAdded: []int{5}, wantStream: p1, wantCP: p1[4].ID},
		{name: "same page polled twice adds nothing", pages: [][]auth0log.Log{p1, p1}, wantAdded: []int{5, 0}, wantStream: p1, wantCP: p1[4].ID},
		{
			name:       "overlapping re-poll adds only new logs",
			pages:      [][]auth0log.Log{p1[:3], cat(p1[1:], p2[:2])},
			wantAdded:  []int{3, 4},
			wantStream: cat(p1, p2[:2]),
			wantCP:     p2[1].ID,
		},
		{
			name:       "duplicate inside one page",
			pages:      [][]auth0log.Log{{p1[0], p1[1], p1[0]}},
			checkpoint: []string{p1[1].ID},
			wantAdded:  []int{2},
			wantStream: p1[:2],
			wantCP:     p1[1].ID,
		},
		{
			name:       "checkpoint never moves backwards",
			pages:      [][]auth0log.Log{p2[:2], p1[:2]},
			checkpoint: []string{p2[1].ID, p1[1].ID},
			wantAdded:  []int{2, 2},
			wantStream: cat(p2[:2], p1[:2]),
			wantCP:     p2[1].ID,
		},
		{
			name:       "empty page moves the checkpoint",
			pages:      [][]auth0log.Log{p1[:1], {}},
			checkpoint: []string{p1[0].ID, auth0log.CheckpointAt(Base.Add(time.Hour))},
			wantAdded:  []int{1, 0},
			wantStream: p1[:1],
			wantCP:     auth0log.CheckpointAt(Base.Add(time.Hour)),
		},
		{
			name:       "empty checkpoint leaves it",
			pages:      [][]auth0log.Log{p1[:1], p1[1:2]},
			checkpoint: []string{p1[0].ID, "-"},
			wantAdded:  []int{1, 1},
			wantStream: p1[:2],
			wantCP:     p1[0].ID,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := h.Open(t, buffer.Config{})
			ctx := t.Context()
			require.NoError(t, b.Ping(ctx))
			cp, err := b.Checkpoint(ctx)
			require.NoError(t, err)
			require.Empty(t, cp)
			offered, added := 0, 0
			for i, p := range tt.pages {
				checkpoint := ""
				if tt.checkpoint != nil {
					checkpoint = tt.checkpoint[i]
				}
				switch checkpoint {
				case "":
					checkpoint = p[len(p)-1].ID
				case "-":
					checkpoint = ""
				}
				n, err := b.Append(ctx, p, checkpoint)
				require.NoError(t, err)
				require.Equal(t, tt.wantAdded[i], n, "page %d", i)
				offered += len(p)
				added += n
			}
			cp, err = b.Checkpoint(ctx)
			require.NoError(t, err)
			require.Equal(t, tt.wantCP, cp)
			tenant := b.Config().Tenant
			require.EqualValues(t, offered-added, h.Counter(t, "authpipe_buffer_duplicates_total"))
			require.EqualValues(t, offered, h.Counter(t, "authpipe_stage_events_received_total", "stage", "buffer", "tenant", tenant))
			require.EqualValues(t, added, h.Counter(t, "authpipe_stage_events_written_total", "stage", "buffer", "tenant", tenant))

			stored := ReadAll(t, b, "audit", "a")
			require.Equal(t, LogIDs(tt.wantStream), nilIfEmpty(EntryLogIDs(stored)))
			for i, e := range stored {
				require.JSONEq(t, string(tt.wantStream[i].Raw), string(e.Raw))
				if i > 0 {
					require.True(t, idLess(stored[i-1].ID, e.ID), "stream ids ascend: %s, %s", stored[i-1].ID, e.ID)
				}
			}
		})
	}
}

// idLess compares "<ms>-<seq>" ids.
func idLess(a, b string) bool {
	var ams, aseq, bms, bseq uint64
	_, _ = fmt.Sscanf(a, "%d-%d", &ams, &aseq)
	_, _ = fmt.Sscanf(b, "%d-%d", &bms, &bseq)
	return ams < bms || (ams == bms && aseq < bseq)
}

// testAppendAtomic: a page that fails anywhere leaves nothing behind: no
// stream entry, no seen id, no checkpoint change.
func testAppendAtomic(t *testing.T, h *Harness) {
	good := Page(Base, 0, 4)
	badMid := append(append([]auth0log.Log{}, good[:2]...), auth0log.Log{ID: "900-not-a-log-id", Raw: good[2].Raw}, good[3])
	emptyRaw := append(append([]auth0log.Log{}, good[:3]...), auth0log.Log{ID: good[3].ID})
	tests := []struct {
		name       string
		logs       []auth0log.Log
		checkpoint string
		wantErr    string
	}{
		{"invalid log id mid-page", badMid, good[3].ID, "log 2"},
		{"empty raw event at the end of the page", emptyRaw, good[3].ID, "log 3"},
		{"invalid checkpoint", good, "12345", "checkpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := h.Open(t, buffer.Config{})
			ctx := t.Context()
			earlier := Page(Base.Add(-time.Minute), 0, 2)
			appendAll(t, b, earlier)

			_, err := b.Append(ctx, tt.logs, tt.checkpoint)
			require.ErrorContains(t, err, tt.wantErr)

			cp, err := b.Checkpoint(ctx)
			require.NoError(t, err)
			require.Equal(t, earlier[1].ID, cp)
			st, err := b.Stats(ctx, "fwd")
			require.NoError(t, err)
			require.EqualValues(t, 2, st.Length)
			// None of the page was marked seen: it is stored whole now.
			require.Equal(t, 4, appendAll(t, b, good))
			require.Equal(t, append(LogIDs(earlier), LogIDs(good)...), storedLogIDs(t, b))
		})
	}
}

func testReadAckPending(t *testing.T, h *Harness) {
	tests := []struct {
		name        string
		logs        int
		read        int // count per Read
		ack         []int
		wantPending []int // indexes left pending, in order
	}{
		{name: "ack all", logs: 4, read: 10, ack: []int{0, 1, 2, 3}},
		{name: "ack some", logs: 5, read: 10, ack: []int{0, 2, 4}, wantPending: []int{1, 3}},
		{name: "ack none", logs: 3, read: 10, wantPending: []int{0, 1, 2}},
		{name: "read fewer than stored", logs: 5, read: 2, ack: []int{0}, wantPending: []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := h.Open(t, buffer.Config{})
			ctx := t.Context()
			logs := Page(Base, 0, tt.logs)
			appendAll(t, b, logs)
			require.NoError(t, b.EnsureGroup(ctx, "fwd"))
			require.NoError(t, b.EnsureGroup(ctx, "fwd"), "existing group is fine")

			got, err := b.Read(ctx, "fwd", "c1", tt.read, 50*time.Millisecond)
			require.NoError(t, err)
			require.Len(t, got, min(tt.read, tt.logs))
			for i, e := range got {
				require.Equal(t, logs[i].ID, e.LogID)
				require.JSONEq(t, string(logs[i].Raw), string(e.Raw))
				require.EqualValues(t, 1, e.Deliveries)
			}
			var acks []string
			for _, i := range tt.ack {
				acks = append(acks, got[i].ID)
			}
			require.NoError(t, b.NoteFailure(ctx, got[0].ID, "boom"))
			require.NoError(t, b.Ack(ctx, "fwd", acks...))
			require.NoError(t, b.Ack(ctx, "fwd", acks...), "acknowledging twice is fine")
			require.EqualValues(t, len(acks), h.Counter(t, "authpipe_stage_events_acked_total"))

			// A restarted process reads its own pending entries, page by page.
			h.Reopen(t)
			b = h.B
			again := ReadAllPending(t, b, "fwd", "c1", 1)
			var wantIDs []string
			for _, i := range tt.wantPending {
				wantIDs = append(wantIDs, got[i].ID)
			}
			require.Equal(t, wantIDs, nilIfEmpty(EntryIDs(again)))
			for _, e := range again {
				require.EqualValues(t, 2, e.Deliveries, "reading pending entries delivers them again")
				require.NotEmpty(t, e.Raw)
			}
			other, err := b.ReadPending(ctx, "fwd", "c2", "0", 10)
			require.NoError(t, err)
			require.Empty(t, other, "another consumer's pending list is its own")

			st, err := b.Stats(ctx, "fwd")
			require.NoError(t, err)
			require.Equal(t, buffer.Stats{
				Length:  int64(tt.logs),
				Pending: int64(len(tt.wantPending)),
				Backlog: int64(tt.logs - len(acks)),
			}, st)
			// The rest is still undelivered, in order, after the reopen.
			rest, err := b.Read(ctx, "fwd", "c1", 100, -1)
			require.NoError(t, err)
			require.Equal(t, LogIDs(logs[len(got):]), EntryLogIDs(rest))
		})
	}
}

func testReadBlocks(t *testing.T, h *Harness) {
	b := h.Open(t, buffer.Config{})
	ctx := t.Context()
	require.NoError(t, b.EnsureGroup(ctx, "fwd"))
	for _, block := range []time.Duration{-1, 0, time.Microsecond, 30 * time.Millisecond} {
		got, err := b.Read(ctx, "fwd", "c1", 10, block)
		require.NoError(t, err, "block %s", block)
		require.Empty(t, got)
	}
	// A blocked read wakes up for an append.
	done := make(chan []buffer.Entry, 1)
	go func() {
		es, _ := b.Read(ctx, "fwd", "c1", 10, 10*time.Second)
		done <- es
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	appendAll(t, b, Page(Base, 0, 2))
	select {
	case es := <-done:
		require.Len(t, es, 2)
	case <-time.After(5 * time.Second):
		t.Fatal("blocked read not woken by append")
	}
	require.Less(t, time.Since(start), 5*time.Second)

	// A blocked read ends with its context's deadline.
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	errs := make(chan error, 1)
	go func() {
		_, err := b.Read(cctx, "fwd", "c1", 10, 10*time.Second)
		errs <- err
	}()
	select {
	case err := <-errs:
		require.Error(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("blocked read ignores its context")
	}

	_, err := b.Read(ctx, "nogroup", "c1", 10, time.Millisecond)
	require.ErrorContains(t, err, "NOGROUP")
	require.Error(t, b.EnsureGroup(ctx, ""))
}

func testTouch(t *testing.T, h *Harness) {
	b, _, got := delivered(t, h, buffer.Config{}, 3)
	ctx := t.Context()

	h.Idle(300 * time.Millisecond)
	require.NoError(t, b.Touch(ctx, "fwd", "c1", got[0].ID, got[1].ID))
	require.NoError(t, b.Touch(ctx, "fwd", "c1")) // nothing to touch

	// Only the untouched entry is idle long enough to be reclaimed.
	re, err := b.Reclaim(ctx, "fwd", "c2", 250*time.Millisecond, 10)
	require.NoError(t, err)
	require.Equal(t, []string{got[2].ID}, EntryIDs(re))
	require.EqualValues(t, 2, re[0].Deliveries)

	// Touching did not count as a delivery.
	h.Idle(300 * time.Millisecond)
	re, err = b.Reclaim(ctx, "fwd", "c2", 250*time.Millisecond, 10)
	require.NoError(t, err)
	deliveries := map[string]int64{}
	for _, e := range re {
		deliveries[e.ID] = e.Deliveries
	}
	require.Equal(t, map[string]int64{got[0].ID: 2, got[1].ID: 2, got[2].ID: 3}, deliveries,
		"touch must not count a delivery")
	// Reclaimed entries changed owner.
	mine := ReadAllPending(t, b, "fwd", "c2", 10)
	require.ElementsMatch(t, EntryIDs(got), EntryIDs(mine))
	theirs, err := b.ReadPending(ctx, "fwd", "c1", "0", 10)
	require.NoError(t, err)
	require.Empty(t, theirs)
	// Touching an acknowledged entry does nothing.
	require.NoError(t, b.Ack(ctx, "fwd", got[0].ID))
	require.NoError(t, b.Touch(ctx, "fwd", "c1", got[0].ID))
	st, err := b.Stats(ctx, "fwd")
	require.NoError(t, err)
	require.EqualValues(t, 2, st.Pending)
}

func testReclaim(t *testing.T, h *Harness) {
	tests := []struct {
		name          string
		maxDeliveries int
		noteFailure   string
		wantReturned  []int64 // deliveries of what each reclaim returns (0 = nothing)
		wantReason    string  // dead letter reason, "" = none
	}{
		{name: "reclaimed until acked", maxDeliveries: 5, wantReturned: []int64{2, 3}},
		{name: "dead-lettered after max deliveries", maxDeliveries: 2, noteFailure: "segment 503",
			wantReturned: []int64{2, 0}, wantReason: "delivered 2 times without acknowledgement; last error: segment 503"},
		{name: "reason unknown without a noted failure", maxDeliveries: 1,
			wantReturned: []int64{0}, wantReason: "delivered 1 times without acknowledgement; last error: unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, logs, got := delivered(t, h, buffer.Config{MaxDeliveries: tt.maxDeliveries}, 1)
			ctx := t.Context()
			if tt.noteFailure != "" {
				require.NoError(t, b.NoteFailure(ctx, got[0].ID, tt.noteFailure))
			}

			re, err := b.Reclaim(ctx, "fwd", "c2", time.Hour, 10)
			require.NoError(t, err)
			require.Empty(t, re, "not idle long enough")

			for i, want := range tt.wantReturned {
				h.Idle(60 * time.Millisecond)
				re, err := b.Reclaim(ctx, "fwd", "c2", 50*time.Millisecond, 10)
				require.NoError(t, err)
				if want == 0 {
					require.Empty(t, re, "round %d", i)
					continue
				}
				require.Len(t, re, 1, "round %d", i)
				require.Equal(t, got[0].ID, re[0].ID)
				require.Equal(t, logs[0].ID, re[0].LogID)
				require.JSONEq(t, string(logs[0].Raw), string(re[0].Raw))
				require.Equal(t, want, re[0].Deliveries)
			}

			dls, st := deadLettersAndStats(t, b)
			if tt.wantReason == "" {
				require.Empty(t, dls)
				require.Equal(t, buffer.Stats{Length: 1, Backlog: 1, Pending: 1}, st)
				return
			}
			require.Len(t, dls, 1)
			dl := dls[0]
			require.Equal(t, tt.wantReason, dl.Reason)
			require.Equal(t, got[0].ID, dl.StreamID)
			require.Equal(t, logs[0].ID, dl.LogID)
			require.JSONEq(t, string(logs[0].Raw), string(dl.Raw))
			require.EqualValues(t, tt.maxDeliveries, dl.Deliveries)
			require.WithinDuration(t, h.Clock.Now(), dl.FailedAt, time.Millisecond)
			require.NotEmpty(t, dl.ID)
			require.Equal(t, buffer.Stats{Length: 1, DeadLetters: 1}, st, "dead letter leaves the pending list")
			require.EqualValues(t, 1, h.Counter(t, "authpipe_dead_letters_total", "reason", buffer.ReasonMaxDeliveries))
			require.EqualValues(t, 1, h.Counter(t, "authpipe_stage_events_failed_total"))
		})
	}
}

// deadLettersAndStats returns the dead letters and the stats of group "fwd".
func deadLettersAndStats(t *testing.T, b Backend) ([]buffer.DeadLetter, buffer.Stats) {
	t.Helper()
	dls, err := b.DeadLetters(t.Context(), 10)
	require.NoError(t, err)
	st, err := b.Stats(t.Context(), "fwd")
	require.NoError(t, err)
	return dls, st
}

// testReclaimWalksPendingList: entries beyond the first page are reached
// by later calls.
func testReclaimWalks(t *testing.T, h *Harness) {
	b, _, _ := delivered(t, h, buffer.Config{}, 7)
	ctx := t.Context()
	h.Idle(60 * time.Millisecond)
	seen := map[string]bool{}
	for range 5 {
		re, err := b.Reclaim(ctx, "fwd", "c2", 50*time.Millisecond, 3)
		require.NoError(t, err)
		require.LessOrEqual(t, len(re), 3)
		for _, e := range re {
			seen[e.ID] = true
		}
	}
	require.Len(t, seen, 7)
}

func testReadPendingDeadLetters(t *testing.T, h *Harness) {
	b, _, got := delivered(t, h, buffer.Config{MaxDeliveries: 1}, 3)
	ctx := t.Context()
	require.NoError(t, b.NoteFailure(ctx, got[1].ID, "worker crashed"))

	// After a restart every entry would be its second delivery: all go to
	// dead letters, and the empty result means the pending list is done.
	h.Reopen(t)
	b = h.B
	es, err := b.ReadPending(ctx, "fwd", "c1", "0", 1)
	require.NoError(t, err)
	require.Empty(t, es)
	dls, err := b.DeadLetters(ctx, 10)
	require.NoError(t, err)
	require.Len(t, dls, 3)
	require.Equal(t, EntryIDs(got), []string{dls[0].StreamID, dls[1].StreamID, dls[2].StreamID})
	require.Equal(t, "delivered 1 times without acknowledgement; last error: worker crashed", dls[1].Reason)
	require.Equal(t, "delivered 1 times without acknowledgement; last error: unknown", dls[0].Reason)
	st, err := b.Stats(ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, buffer.Stats{Length: 3, DeadLetters: 3}, st)
	first, err := b.DeadLetters(ctx, 2)
	require.NoError(t, err)
	require.Equal(t, dls[:2], first, "oldest first, count bounds")
}

func testDeadLetter(t *testing.T, h *Harness) {
	tests := []struct {
		name     string
		ackFirst bool
		reason   string
		wantKind string // "" = nothing moves
	}{
		{name: "rejected by segment", reason: buffer.Reason(buffer.ReasonSegmentRejected, "400 invalid"), wantKind: buffer.ReasonSegmentRejected},
		{name: "oversize", reason: "oversize: 40000 bytes", wantKind: buffer.ReasonOversize},
		{name: "invalid", reason: buffer.Reason(buffer.ReasonInvalid, "no type"), wantKind: buffer.ReasonInvalid},
		{name: "free text reason", reason: "something odd", wantKind: buffer.ReasonOther},
		{name: "already acknowledged: left alone", ackFirst: true, reason: "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, logs, got := delivered(t, h, buffer.Config{}, 2)
			ctx := t.Context()
			require.NoError(t, b.NoteFailure(ctx, got[0].ID, "400"))
			if tt.ackFirst {
				require.NoError(t, b.Ack(ctx, "fwd", got[0].ID))
			}

			require.NoError(t, b.DeadLetter(ctx, "fwd", buffer.Entry{ID: got[0].ID, Deliveries: 1}, tt.reason))
			dls, st := deadLettersAndStats(t, b)
			if tt.wantKind == "" {
				require.Empty(t, dls)
				require.Equal(t, buffer.Stats{Length: 2, Backlog: 1, Pending: 1}, st)
				return
			}
			require.Len(t, dls, 1)
			require.Equal(t, tt.reason, dls[0].Reason)
			require.Equal(t, logs[0].ID, dls[0].LogID, "log_id taken from the stream")
			require.JSONEq(t, string(logs[0].Raw), string(dls[0].Raw))
			require.Equal(t, got[0].ID, dls[0].StreamID)
			require.EqualValues(t, 1, dls[0].Deliveries)
			require.Equal(t, buffer.Stats{Length: 2, Backlog: 1, Pending: 1, DeadLetters: 1}, st)
			require.EqualValues(t, 1, h.Counter(t, "authpipe_dead_letters_total", "reason", tt.wantKind))
			// A second call finds it no longer pending.
			require.NoError(t, b.DeadLetter(ctx, "fwd", got[0], tt.reason))
			dls, _ = deadLettersAndStats(t, b)
			require.Len(t, dls, 1)
			// The other entry is still pending with c1, and dead letters survive a reopen.
			h.Reopen(t)
			b = h.B
			require.Equal(t, []string{got[1].ID}, EntryIDs(ReadAllPending(t, b, "fwd", "c1", 10)))
			again, err := b.DeadLetters(ctx, 10)
			require.NoError(t, err)
			require.Equal(t, dls, again)
		})
	}
}

func testTrim(t *testing.T, h *Harness) {
	type group struct {
		name string
		read int   // entries delivered (from the start)
		ack  []int // of those, acknowledged
	}
	tests := []struct {
		name         string
		logs         int
		groups       []group
		logAge       time.Duration // log ids embed a time this long before the clock
		future       bool          // clock past retention of every entry
		wantKept     []int         // indexes of entries left in the stream
		wantSeenGone bool          // dedupe forgot the log_ids
	}{
		// Entries leave once every group has acknowledged them, whatever
		// their age; the dedupe record keeps their log_ids for the retention.
		{name: "acknowledged by every group: gone within retention", logs: 4, groups: []group{{"g", 4, []int{0, 1, 2, 3}}}},
		{name: "no group: retention only, within", logs: 3, wantKept: []int{0, 1, 2}},
		{name: "no group: retention only, past", logs: 3, future: true, wantSeenGone: true},
		{name: "all acked: everything old goes", logs: 4, groups: []group{{"g", 4, []int{0, 1, 2, 3}}}, future: true, wantSeenGone: true},
		{name: "undelivered entries stay", logs: 6, groups: []group{{"g", 3, []int{0, 1, 2}}}, wantKept: []int{3, 4, 5}},
		{name: "undelivered entries stay past retention", logs: 6, groups: []group{{"g", 3, []int{0, 1, 2}}}, future: true, wantKept: []int{3, 4, 5}, wantSeenGone: true},
		{name: "oldest pending bounds the trim", logs: 6, groups: []group{{"g", 6, []int{0, 1, 3, 4, 5}}}, wantKept: []int{2, 3, 4, 5}},
		// Dedupe goes by the time in the log_id, the stream by the groups.
		{name: "logs older than retention: dedupe forgets, stream keeps", logs: 3, logAge: 2 * time.Hour, wantKept: []int{0, 1, 2}, wantSeenGone: true},
		{name: "nothing delivered to a group", logs: 4, groups: []group{{"g", 4, []int{0, 1, 2, 3}}, {"new", 0, nil}}, future: true, wantKept: []int{0, 1, 2, 3}, wantSeenGone: true},
		{
			name: "a slow threshold group keeps what the forwarder acknowledged",
			logs: 6,
			groups: []group{
				{"forward", 6, []int{0, 1, 2, 3, 4, 5}},
				{"thresholds", 6, []int{0, 1}}, // 2..5 pending
			},
			wantKept: []int{2, 3, 4, 5},
		},
		{
			name: "slowest of several groups bounds",
			logs: 8,
			groups: []group{
				{"fast", 8, []int{0, 1, 2, 3, 4, 5, 6, 7}},
				{"slow", 5, []int{0, 1, 2, 4}},   // 3 pending
				{"slower", 4, []int{0, 1, 2, 3}}, // 4 undelivered
			},
			wantKept: []int{3, 4, 5, 6, 7},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := h.Open(t, buffer.Config{Retention: time.Hour})
			ctx := t.Context()
			// Log ids embed the clock's time (less logAge): the dedupe set
			// is within retention unless the clock moves past it.
			logs := Page(h.Clock.Now().Add(-tt.logAge).Truncate(time.Second), 0, tt.logs)
			appendAll(t, b, logs)
			pending := map[string][]string{}
			for _, g := range tt.groups {
				require.NoError(t, b.EnsureGroup(ctx, g.name))
				if g.read == 0 {
					continue
				}
				got, err := b.Read(ctx, g.name, "c", g.read, 10*time.Millisecond)
				require.NoError(t, err)
				require.Len(t, got, g.read)
				acked := map[int]bool{}
				var acks []string
				for _, i := range g.ack {
					acks = append(acks, got[i].ID)
					acked[i] = true
				}
				require.NoError(t, b.Ack(ctx, g.name, acks...))
				for i, e := range got {
					if !acked[i] {
						pending[g.name] = append(pending[g.name], e.LogID)
					}
				}
			}
			if tt.future {
				h.Clock.Advance(2 * time.Hour)
			}

			n, err := b.Trim(ctx)
			require.NoError(t, err)
			require.EqualValues(t, tt.logs-len(tt.wantKept), n)
			require.EqualValues(t, n, h.Counter(t, "authpipe_buffer_trimmed_total"))
			n, err = b.Trim(ctx)
			require.NoError(t, err)
			require.Zero(t, n, "trim is idempotent")
			st, err := b.Stats(ctx, "none")
			require.NoError(t, err)
			require.EqualValues(t, len(tt.wantKept), st.Length)

			// Every entry still pending can be delivered again, with its data.
			for _, g := range tt.groups {
				again := ReadAllPending(t, b, g.name, "c", 100)
				require.Equal(t, pending[g.name], nilIfEmpty(EntryLogIDs(again)), "group %s", g.name)
				for _, e := range again {
					require.NotEmpty(t, e.Raw)
				}
			}
			var want []string
			for _, i := range tt.wantKept {
				want = append(want, logs[i].ID)
			}
			require.Equal(t, want, storedLogIDs(t, b))
			// The dedupe set forgot the log_ids past retention, and only those.
			added := appendAll(t, b, logs)
			if tt.wantSeenGone {
				require.Equal(t, tt.logs, added)
			} else {
				require.Zero(t, added)
			}
		})
	}
}

func testTrimEmpty(t *testing.T, h *Harness) {
	b := h.Open(t, buffer.Config{})
	ctx := t.Context()
	n, err := b.Trim(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoError(t, b.EnsureGroup(ctx, "g")) // empty stream with a group
	h.Clock.Advance(30 * 24 * time.Hour)
	n, err = b.Trim(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
}

func testStatsAndFull(t *testing.T, h *Harness) {
	b := h.Open(t, buffer.Config{MaxEvents: 5})
	ctx := t.Context()
	st, err := b.Stats(ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, buffer.Stats{}, st, "nothing stored yet")
	full, err := b.Full(ctx)
	require.NoError(t, err)
	require.False(t, full)

	appendAll(t, b, Page(Base, 0, 6))
	st, err = b.Stats(ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, buffer.Stats{Length: 6, Backlog: 6}, st, "no group yet: all is backlog")
	full, err = b.Full(ctx)
	require.NoError(t, err)
	require.True(t, full)

	require.NoError(t, b.EnsureGroup(ctx, "fwd"))
	got, err := b.Read(ctx, "fwd", "c", 4, 10*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, b.Ack(ctx, "fwd", got[0].ID, got[1].ID))
	require.NoError(t, b.DeadLetter(ctx, "fwd", got[2], "invalid: no type"))
	st, err = b.Stats(ctx, "fwd")
	require.NoError(t, err)
	// 6 stored: 2 acked, 1 dead-lettered, 1 pending, 2 undelivered.
	require.Equal(t, buffer.Stats{Length: 6, Backlog: 3, Pending: 1, DeadLetters: 1}, st)
	full, err = b.Full(ctx)
	require.NoError(t, err)
	require.False(t, full)

	// A second, slower group decides Full.
	require.NoError(t, b.EnsureGroup(ctx, "slow"))
	full, err = b.Full(ctx)
	require.NoError(t, err)
	require.True(t, full)
	st, err = b.Stats(ctx, "slow")
	require.NoError(t, err)
	require.Equal(t, buffer.Stats{Length: 6, Backlog: 6, DeadLetters: 1}, st)

	unbounded := h.Open(t, buffer.Config{})
	appendAll(t, unbounded, Page(Base, 0, 3))
	full, err = unbounded.Full(ctx)
	require.NoError(t, err)
	require.False(t, full, "MaxEvents 0 is never full")
}

func testMetrics(t *testing.T, h *Harness) {
	b := h.Open(t, buffer.Config{MaxDeliveries: 3})
	ctx := t.Context()
	tenant := b.Config().Tenant
	names := []string{
		"authpipe_buffer_backlog_events", "authpipe_buffer_pending_events", "authpipe_buffer_stream_events",
		"authpipe_dead_letter_events", "authpipe_buffer_duplicates_total", "authpipe_dead_letters_total",
		"authpipe_buffer_trimmed_total", "authpipe_buffer_lost_total",
	}
	logs := Page(Base, 0, 5)
	appendAll(t, b, logs)
	appendAll(t, b, logs[:2])
	require.NoError(t, b.EnsureGroup(ctx, "fwd"))
	got, err := b.Read(ctx, "fwd", "c", 3, 10*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, b.Ack(ctx, "fwd", got[0].ID))
	require.NoError(t, b.DeadLetter(ctx, "fwd", got[1], buffer.Reason(buffer.ReasonInvalid, "no user")))

	want := `
# HELP authpipe_buffer_backlog_events Entries not yet acknowledged by the slowest consumer group (undelivered + pending); the stream length while no group exists.
# TYPE authpipe_buffer_backlog_events gauge
authpipe_buffer_backlog_events{tenant="T"} 3
# HELP authpipe_buffer_duplicates_total Logs offered to the buffer that were already stored (same log_id), not stored again.
# TYPE authpipe_buffer_duplicates_total counter
authpipe_buffer_duplicates_total{tenant="T"} 2
# HELP authpipe_buffer_lost_total Pending entries found deleted from the stream before acknowledgement. Must stay 0.
# TYPE authpipe_buffer_lost_total counter
authpipe_buffer_lost_total{tenant="T"} 0
# HELP authpipe_buffer_pending_events Entries delivered but not yet acknowledged, summed over consumer groups.
# TYPE authpipe_buffer_pending_events gauge
authpipe_buffer_pending_events{tenant="T"} 1
# HELP authpipe_buffer_stream_events Entries in the stream (acknowledged ones included, until trimmed).
# TYPE authpipe_buffer_stream_events gauge
authpipe_buffer_stream_events{tenant="T"} 5
# HELP authpipe_buffer_trimmed_total Stream entries removed by trimming: acknowledged by every consumer group (or, while the stream has no group, older than the retention).
# TYPE authpipe_buffer_trimmed_total counter
authpipe_buffer_trimmed_total{tenant="T"} 0
# HELP authpipe_dead_letter_events Entries in the dead-letter stream.
# TYPE authpipe_dead_letter_events gauge
authpipe_dead_letter_events{tenant="T"} 1
# HELP authpipe_dead_letters_total Entries moved to the dead-letter stream, by reason.
# TYPE authpipe_dead_letters_total counter
authpipe_dead_letters_total{reason="invalid",tenant="T"} 1
authpipe_dead_letters_total{reason="max_deliveries",tenant="T"} 0
authpipe_dead_letters_total{reason="other",tenant="T"} 0
authpipe_dead_letters_total{reason="oversize",tenant="T"} 0
authpipe_dead_letters_total{reason="segment_rejected",tenant="T"} 0
`
	want = strings.ReplaceAll(want, `tenant="T"`, `tenant="`+tenant+`"`)
	require.NoError(t, testutil.GatherAndCompare(h.Reg, strings.NewReader(want), names...))

	stage := `
# HELP authpipe_stage_events_acked_total Events the next stage confirmed as durably taken.
# TYPE authpipe_stage_events_acked_total counter
authpipe_stage_events_acked_total{stage="buffer",tenant="T"} 1
# HELP authpipe_stage_events_failed_total Events a pipeline stage failed to pass on (each failure).
# TYPE authpipe_stage_events_failed_total counter
authpipe_stage_events_failed_total{stage="buffer",tenant="T"} 1
# HELP authpipe_stage_events_received_total Events that entered a pipeline stage.
# TYPE authpipe_stage_events_received_total counter
authpipe_stage_events_received_total{stage="buffer",tenant="T"} 7
# HELP authpipe_stage_events_written_total Events a pipeline stage passed on to the next.
# TYPE authpipe_stage_events_written_total counter
authpipe_stage_events_written_total{stage="buffer",tenant="T"} 5
`
	stage = strings.ReplaceAll(stage, `tenant="T"`, `tenant="`+tenant+`"`)
	require.NoError(t, testutil.GatherAndCompare(h.Reg, strings.NewReader(stage),
		"authpipe_stage_events_acked_total", "authpipe_stage_events_failed_total",
		"authpipe_stage_events_received_total", "authpipe_stage_events_written_total"))
	problems, err := testutil.GatherAndLint(h.Reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// testReopen: everything the contract keeps survives a restart of the
// process: checkpoint, dedupe, group progress, pending entries with their
// delivery counts and failure reasons, dead letters; new entries sort after
// the old ones.
func testReopen(t *testing.T, h *Harness) {
	b := h.Open(t, buffer.Config{MaxDeliveries: 2})
	ctx := t.Context()
	p1 := Page(Base, 0, 6)
	appendAll(t, b, p1)
	require.NoError(t, b.EnsureGroup(ctx, "fwd"))
	got, err := b.Read(ctx, "fwd", "c1", 4, -1)
	require.NoError(t, err)
	require.Len(t, got, 4)
	require.NoError(t, b.Ack(ctx, "fwd", got[0].ID))
	require.NoError(t, b.DeadLetter(ctx, "fwd", got[1], buffer.Reason(buffer.ReasonOversize, "too big")))
	require.NoError(t, b.NoteFailure(ctx, got[2].ID, "segment 500"))
	before, err := b.Stats(ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, buffer.Stats{Length: 6, Backlog: 4, Pending: 2, DeadLetters: 1}, before)

	h.Reopen(t)
	b = h.B
	cp, err := b.Checkpoint(ctx)
	require.NoError(t, err)
	require.Equal(t, p1[5].ID, cp)
	after, err := b.Stats(ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, before, after)
	require.Zero(t, appendAll(t, b, p1), "dedupe survived")
	dls, err := b.DeadLetters(ctx, 10)
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Equal(t, "oversize: too big", dls[0].Reason)

	p2 := Page(Base.Add(time.Second), 0, 2)
	appendAll(t, b, p2)
	// Pending entries come back to their consumer, counting the delivery.
	again := ReadAllPending(t, b, "fwd", "c1", 10)
	require.Equal(t, []string{got[2].ID, got[3].ID}, EntryIDs(again))
	require.EqualValues(t, 2, again[0].Deliveries)
	rest, err := b.Read(ctx, "fwd", "c1", 100, -1)
	require.NoError(t, err)
	require.Equal(t, append(LogIDs(p1[4:]), LogIDs(p2)...), EntryLogIDs(rest))
	require.True(t, idLess(got[3].ID, rest[0].ID))
	require.True(t, idLess(rest[1].ID, rest[2].ID), "entries appended after the reopen sort after the old ones")
	require.NoError(t, b.Ack(ctx, "fwd", got[3].ID))
	require.NoError(t, b.Ack(ctx, "fwd", EntryIDs(rest)...))

	// got[2] was delivered twice without acknowledgement: the next
	// delivery moves it to the dead letters, with the failure noted before
	// the first restart.
	h.Reopen(t)
	b = h.B
	es, err := b.ReadPending(ctx, "fwd", "c1", "0", 1)
	require.NoError(t, err)
	require.Empty(t, es)
	dls, err = b.DeadLetters(ctx, 10)
	require.NoError(t, err)
	require.Len(t, dls, 2)
	require.Equal(t, got[2].ID, dls[1].StreamID)
	require.Equal(t, "delivered 2 times without acknowledgement; last error: segment 500", dls[1].Reason)
	st, err := b.Stats(ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, buffer.Stats{Length: 8, DeadLetters: 2}, st)
}

// testParsedFields: an entry gives back the log as the poller decoded it —
// its fields read from what was stored with it, without the JSON being
// parsed again — also after a redelivery and for a log whose fields could
// not be stored (escapes), which is decoded from its raw JSON instead.
func testParsedFields(t *testing.T, h *Harness) {
	b := h.Open(t, buffer.Config{})
	ctx := t.Context()
	logs := Page(Base, 0, 3)
	raw := strings.Replace(string(logs[2].Raw), `"user_name":"user2"`, `"user_name":"us\u0065r2"`, 1)
	escaped, err := auth0log.Decode([]byte(raw))
	require.NoError(t, err)
	require.Nil(t, escaped.Pack(), "escaped fields are not stored")
	logs[2] = escaped
	appendAll(t, b, logs)
	require.NoError(t, b.EnsureGroup(ctx, "fwd"))

	check := func(entries []buffer.Entry) {
		t.Helper()
		require.Len(t, entries, len(logs))
		for i, e := range entries {
			l, err := e.Log()
			require.NoError(t, err)
			want := logs[i]
			require.Equal(t, want.ID, l.ID)
			require.Equal(t, want.Date, l.Date)
			require.Equal(t, want.Type, l.Type)
			require.Equal(t, [5]string{want.UserID, want.UserName, want.IP, want.ClientID, want.Connection},
				[5]string{l.UserID, l.UserName, l.IP, l.ClientID, l.Connection})
			require.Equal(t, string(want.Raw), string(l.Raw))
		}
		last, err := entries[2].Log()
		require.NoError(t, err)
		require.Equal(t, "user2", last.UserName)
		require.Equal(t, "198.51.100.2", last.IP)
	}
	check(ReadAll(t, b, "fwd", "c"))
	check(ReadAllPending(t, b, "fwd", "c", 10))
}
