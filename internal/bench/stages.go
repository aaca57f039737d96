package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/analytics-go/v3"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/auth0poll"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/forward"
	"github.com/authpipe/authpipe/internal/sim"
)

const (
	// pageSize is Auth0's largest page in checkpoint mode, and what the
	// poller appends per call.
	pageSize = 100
	// ceilingChunk bounds the payloads held at once by measureCeiling.
	ceilingChunk = 10_000
)

// measureCeiling writes every event of a into a scratch stream with
// pipelined XADD (one page per round trip, one connection), timing only the
// round trips, and deletes the stream.
func measureCeiling(ctx context.Context, rdb *redis.Client, a *sim.Auth0) (Ceiling, error) {
	c := Ceiling{Pipeline: pageSize}
	key := fmt.Sprintf("bench:{ceiling%d}:stream", time.Now().UnixNano())
	defer rdb.Del(context.WithoutCancel(ctx), key)
	ids := a.LogIDs()
	for off := 0; off < len(ids); off += ceilingChunk {
		chunk := ids[off:min(off+ceilingChunk, len(ids))]
		raws := make([][]byte, len(chunk))
		for i, id := range chunk {
			raws[i], _ = a.Log(id)
		}
		for p := 0; p < len(chunk); p += pageSize {
			end := min(p+pageSize, len(chunk))
			t := time.Now()
			_, err := rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
				for i := p; i < end; i++ {
					pl.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"id", chunk[i], "raw", raws[i]}})
				}
				return nil
			})
			c.Elapsed += time.Since(t)
			if err != nil {
				return c, fmt.Errorf("pipelined XADD: %w", err)
			}
			c.Events += end - p
		}
	}
	return c, nil
}

// countBuffer is a poller buffer that only counts: the poll stage alone.
type countBuffer struct{ n atomic.Int64 }

func (b *countBuffer) Checkpoint(context.Context) (string, error) { return "", nil }
func (b *countBuffer) Full(context.Context) (bool, error)         { return false, nil }
func (b *countBuffer) Append(_ context.Context, logs []auth0log.Log, _ string) (int, error) {
	b.n.Add(int64(len(logs)))
	return len(logs), nil
}

// stageBuffer is what the stage measurements need of either backend.
type stageBuffer interface {
	forward.Buffer
	Append(ctx context.Context, logs []auth0log.Log, checkpoint string) (int, error)
}

func measureStages(ctx context.Context, opts Options, auth0URL string, a *sim.Auth0, rdb *redis.Client, tmp string, logf func(string, ...any)) ([]StageResult, error) {
	n := opts.StageEvents
	var out []StageResult

	poll, err := stagePoll(ctx, auth0URL, n, opts.PollInterval)
	if err != nil {
		return nil, err
	}
	out = append(out, poll)
	logf("poll alone: %.0f events/s", poll.Rate())

	// The same events, decoded once, in pages of 100.
	ids := a.LogIDs()
	if len(ids) > n {
		ids = ids[:n]
	}
	var pages [][]auth0log.Log
	for off := 0; off < len(ids); off += pageSize {
		end := min(off+pageSize, len(ids))
		page := make([]auth0log.Log, 0, end-off)
		for _, id := range ids[off:end] {
			raw, _ := a.Log(id)
			l, err := auth0log.Decode(raw)
			if err != nil {
				return nil, fmt.Errorf("decode simulator event: %w", err)
			}
			page = append(page, l)
		}
		pages = append(pages, page)
	}

	enc, err := stageEncode(pages, len(ids))
	if err != nil {
		return nil, err
	}
	out = append(out, enc...)

	for _, backend := range opts.Backends {
		tenant := fmt.Sprintf("bench-stage-%s-%d", backend, time.Now().UnixNano()%1e6)
		var buf stageBuffer
		switch backend {
		case "redis":
			r, err := buffer.NewRedis(rdb, buffer.Config{Tenant: tenant}, buffer.Deps{})
			if err != nil {
				return nil, err
			}
			buf = r
		case "bolt":
			b, err := buffer.OpenBolt(filepath.Join(tmp, tenant), buffer.Config{Tenant: tenant}, buffer.Deps{})
			if err != nil {
				return nil, err
			}
			defer b.Close()
			buf = b
		}
		res, err := stageBuffers(ctx, backend, tenant, buf, pages, len(ids))
		if err != nil {
			return nil, fmt.Errorf("%s stages: %w", backend, err)
		}
		for _, r := range res {
			logf("%s %s alone: %.0f events/s", backend, r.Name, r.Rate())
		}
		out = append(out, res...)
	}
	return out, nil
}

// stageEncode measures, on one goroutine, the mapping of the events to
// Segment messages (forward.Map: decode, PII policy, size guard) and then
// the JSON encoding analytics-go does with them, which no configuration
// avoids: json.Marshal of each message when it is enqueued (makeMessage),
// and json.Marshal of each batch, which copies every message through
// encoding/json's compaction (send).
func stageEncode(pages [][]auth0log.Log, n int) ([]StageResult, error) {
	hashKey := []byte("bench-hash-key")
	tracks := make([]analytics.Track, 0, n)
	start := time.Now()
	for _, p := range pages {
		for _, l := range p {
			t, err := forward.Map("bench-encode", l, hashKey, forward.PIIPolicy{})
			if err != nil {
				return nil, fmt.Errorf("map simulator event: %w", err)
			}
			tracks = append(tracks, t)
		}
	}
	mapped := time.Since(start)

	start = time.Now()
	msgs := make([]encodedMessage, 0, forward.DefaultBatchSize)
	for i, t := range tracks {
		// analytics-go stamps these before makeMessage; Map already set them.
		b, err := json.Marshal(t)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, encodedMessage(b))
		if len(msgs) == forward.DefaultBatchSize || i == len(tracks)-1 {
			if _, err := json.Marshal(analyticsBatch{MessageId: "bench", SentAt: time.Now(), Messages: msgs, Context: &libraryContext}); err != nil {
				return nil, err
			}
			msgs = msgs[:0]
		}
	}
	encoded := time.Since(start)
	return []StageResult{
		{Name: "map (decode + PII + size guard)", Events: n, Elapsed: mapped, Note: "forward.Map, one goroutine"},
		{Name: stageAnalyticsEncoding, Events: n, Elapsed: encoded, Note: "message + batch json.Marshal as analytics-go does, one goroutine"},
	}, nil
}

// stageAnalyticsEncoding names the stage of analytics-go's own encoding.
const stageAnalyticsEncoding = "analytics-go JSON encoding"

// encodedMessage and analyticsBatch are analytics-go's unexported message
// and batch types (v3.3.0 message.go), as its send marshals them.
type encodedMessage []byte

func (m encodedMessage) MarshalJSON() ([]byte, error) { return m, nil }

type analyticsBatch struct {
	MessageId string             `json:"messageId"` //nolint:revive // analytics-go's field name
	SentAt    time.Time          `json:"sentAt"`
	Messages  []encodedMessage   `json:"batch"`
	Context   *analytics.Context `json:"context"`
}

var libraryContext = analytics.Context{Library: analytics.LibraryInfo{Name: "analytics-go", Version: "3.0.0"}}

// stagePoll runs the real poller against the simulator with a buffer that
// only counts, until n events were fetched and decoded.
func stagePoll(ctx context.Context, auth0URL string, n int, interval time.Duration) (StageResult, error) {
	cb := &countBuffer{}
	p, err := auth0poll.New(auth0poll.Config{
		Tenant: "bench-poll", Domain: auth0URL, ClientID: benchClientID, ClientSecret: benchClientSecret,
		PollInterval: interval,
	}, cb, auth0poll.Deps{})
	if err != nil {
		return StageResult{}, err
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Run(pctx) }()
	for cb.n.Load() < int64(n) {
		select {
		case err := <-done:
			cancel()
			return StageResult{}, fmt.Errorf("poller stopped: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	cancel()
	<-done
	return StageResult{Name: "poll (fetch + decode)", Events: int(cb.n.Load()), Elapsed: elapsed,
		Note: "real poller over HTTP, buffer that only counts"}, nil
}

// stageBuffers measures Append of the pages, then Read+Ack by a group of
// its own, then the forwarder alone over the filled buffer.
func stageBuffers(ctx context.Context, backend, tenant string, buf stageBuffer, pages [][]auth0log.Log, n int) ([]StageResult, error) {
	var out []StageResult

	start := time.Now()
	for _, p := range pages {
		if _, err := buf.Append(ctx, p, p[len(p)-1].ID); err != nil {
			return nil, err
		}
	}
	out = append(out, StageResult{Name: "buffer append", Backend: backend, Events: n, Elapsed: time.Since(start),
		Note: "pages of 100 with their checkpoint"})

	const group, readCount = "bench-readack", forward.DefaultReadCount
	if err := buf.EnsureGroup(ctx, group); err != nil {
		return nil, err
	}
	start = time.Now()
	for got := 0; got < n; {
		es, err := buf.Read(ctx, group, "bench", readCount, 100*time.Millisecond)
		if err != nil {
			return nil, err
		}
		if len(es) == 0 {
			return nil, fmt.Errorf("read+ack: stream ended after %d of %d entries", got, n)
		}
		ids := make([]string, len(es))
		for i, e := range es {
			ids[i] = e.ID
		}
		if err := buf.Ack(ctx, group, ids...); err != nil {
			return nil, err
		}
		got += len(es)
	}
	out = append(out, StageResult{Name: "buffer read + ack", Backend: backend, Events: n, Elapsed: time.Since(start),
		Note: fmt.Sprintf("reads of %d, one ack per read", readCount)})

	seg := sim.NewSegment(sim.SegmentOptions{WriteKey: benchWriteKey, IDsOnly: true})
	segSrv := httptest.NewServer(seg)
	defer segSrv.Close()
	f, err := forward.New(forward.Config{
		Tenant: tenant, WriteKey: benchWriteKey, Endpoint: segSrv.URL,
		Group: "forward", Consumer: "bench", HashKey: "bench-hash-key",
	}, buf, forward.Deps{})
	if err != nil {
		return nil, err
	}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start = time.Now()
	go func() { done <- f.Run(fctx) }()
	for seg.Count() < n {
		select {
		case err := <-done:
			cancel()
			return nil, fmt.Errorf("forwarder stopped: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	cancel()
	<-done
	out = append(out, StageResult{Name: "forward (map + Segment + ack)", Backend: backend, Events: n, Elapsed: elapsed,
		Note: "real forwarder over a filled buffer"})
	return out, nil
}
