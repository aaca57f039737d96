package thresholds

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/testredis"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

const storeRules = `
rules:
  - name: PerIP
    types: [fp, fu]
    group_by: ip
    window: 1m
    threshold: 3
  - name: Users
    types: [fp, fu]
    group_by: ip
    distinct: user_name
    window: 1m
    threshold: 2
  - name: Ratio
    types: [fp, fu]
    ratio: {of: [s, fp, fu]}
    min_events: 2
    window: 30s
    threshold: 0.5
  - name: RatioPerIP
    types: [fp]
    group_by: ip
    ratio: {of: [s, fp]}
    window: 30s
    threshold: 0.5
  - name: All
    types: [fp, fu, s]
    window: 20s
    threshold: 10
`

func mustRules(t testing.TB, src string) *rules.Set {
	t.Helper()
	rs, err := rules.LoadData("test.yml", []byte(src))
	require.NoError(t, err)
	return rs
}

func newRedisStore(b *buffer.Redis) *redisStore {
	return &redisStore{client: b.Client(), ks: keyspace{prefix: b.Key("")}, stream: b.StreamKey(), group: DefaultGroup}
}

// The Redis store and the in-memory store of `rules test` agree, cap and
// eviction included.
func TestStoresAgree(t *testing.T) {
	ctx := context.Background()
	rs := mustRules(t, storeRules)
	start := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	var logs []auth0log.Log
	for i := range 400 {
		typ := []string{"fp", "fu", "s", "fp"}[rng.IntN(4)]
		ip := fmt.Sprintf("10.0.0.%d", rng.IntN(12))
		if i%7 == 0 {
			ip = "10.9.9.9" // a heavy hitter
		}
		logs = append(logs, mkLog(t, typ, start.Add(time.Duration(i)*500*time.Millisecond),
			map[string]string{"ip": ip, "user_name": fmt.Sprintf("u%d", rng.IntN(6))}))
	}
	b := newBuffer(t, testredis.Client(t), testredis.Name(t), nil)
	entries := pendingFor(t, b, DefaultGroup, "c1", logs)
	rstore, mstore := newRedisStore(b), newMemStore()
	const maxGroups = 4

	for i := 0; i < len(entries); i += 10 {
		batch := entries[i:min(i+10, len(entries))]
		now := logs[min(i+9, len(logs)-1)].Date
		var rb, mb []countEntry
		for _, en := range batch {
			e, err := eventOf(en.ID, en.Raw)
			require.NoError(t, err)
			rce, mce := countEntry{id: en.ID}, countEntry{id: en.ID}
			for _, r := range rs.Rules {
				rce.ops = append(rce.ops, rstore.ks.opsFor(r, e, now)...)
				mce.ops = append(mce.ops, mstore.ks.opsFor(r, e, now)...)
			}
			rb, mb = append(rb, rce), append(mb, mce)
		}
		rres, err := rstore.count(ctx, rb, maxGroups)
		require.NoError(t, err)
		mres, err := mstore.count(ctx, mb, maxGroups)
		require.NoError(t, err)
		require.Equal(t, mres.counted, rres.counted)
		require.Equal(t, len(batch), rres.counted)
		require.Equal(t, len(mres.cut), len(rres.cut))

		if i%50 != 0 {
			continue
		}
		for _, r := range rs.Rules {
			lo, hi := windowBuckets(r, now)
			for _, q := range []evalQuery{
				{rule: r, lo: lo, hi: hi, threshold: r.Threshold, maxCand: 200, top: 5, groups: []string{"10.0.0.1", "nobody"}},
				{rule: r, lo: lo, hi: hi, threshold: r.Threshold, maxCand: 2, top: 1},
				{rule: r, lo: lo, hi: hi, groups: []string{"10.9.9.9", "10.0.0.3", ""}},
			} {
				rv, err := rstore.eval(ctx, q)
				require.NoError(t, err)
				mv, err := mstore.eval(ctx, q)
				require.NoError(t, err)
				require.Equal(t, normalize(mv), normalize(rv), "rule %s at %s, query %+v", r.Name, now, q)
			}
		}
	}
	// Redelivered entries count as duplicates in both.
	var again []countEntry
	for _, en := range entries[:5] {
		again = append(again, countEntry{id: en.ID, ops: []op{{kind: 'c', c: "x", x: "y", group: "g", ttl: time.Minute}}})
	}
	for _, en := range entries[5:12] { // without ops: acknowledged in bulk
		again = append(again, countEntry{id: en.ID})
	}
	res, err := rstore.count(ctx, again, maxGroups)
	require.NoError(t, err)
	require.Equal(t, countResult{duplicates: 12, cut: map[string]int{}}, res)
	n, err := b.Client().Exists(ctx, "x").Result()
	require.NoError(t, err)
	require.Zero(t, n, "a duplicate's increments are not applied")
}

func normalize(r evalResult) evalResult {
	seen := map[string]bool{}
	var vals []groupValue
	for _, v := range r.values {
		if !seen[v.group] {
			seen[v.group] = true
			vals = append(vals, v)
		}
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i].group < vals[j].group })
	r.values = vals
	return r
}

// An entry is counted once however often it is delivered: after a crash
// between read and count (ReadPending), after a reclaim by another
// replica, and when the slow original consumer finally counts it too.
func TestRedeliveredEntriesCountedOnce(t *testing.T) {
	ctx := context.Background()
	rs := mustRules(t, storeRules)
	r, _ := rs.Get("PerIP")
	now := time.Now().UTC()
	b := newBuffer(t, testredis.Client(t), testredis.Name(t), nil)
	s := newRedisStore(b)
	logs := burst(t, 6, "fp", "192.0.2.1", now)
	entries := pendingFor(t, b, DefaultGroup, "a", logs)

	countAll := func(es []buffer.Entry) countResult {
		var batch []countEntry
		for _, en := range es {
			e, err := eventOf(en.ID, en.Raw)
			require.NoError(t, err)
			batch = append(batch, countEntry{id: en.ID, ops: s.ks.opsFor(r, e, now)})
		}
		res, err := s.count(ctx, batch, 100)
		require.NoError(t, err)
		return res
	}
	value := func() float64 {
		lo, hi := windowBuckets(r, now)
		res, err := s.eval(ctx, evalQuery{rule: r, lo: lo, hi: hi, groups: []string{"192.0.2.1"}})
		require.NoError(t, err)
		return res.values[0].value
	}

	// Consumer a crashed after reading: its entries come back with ReadPending.
	pending, err := b.ReadPending(ctx, DefaultGroup, "a", "0", 100)
	require.NoError(t, err)
	require.Len(t, pending, 6)
	require.Equal(t, 4, countAll(pending[:4]).counted)
	// Another replica reclaims the rest... and a's original batch is counted late.
	reclaimed, err := b.Reclaim(ctx, DefaultGroup, "b", 0, 100)
	require.NoError(t, err)
	require.Len(t, reclaimed, 2)
	require.Equal(t, countResult{counted: 2, cut: map[string]int{}}, countAll(reclaimed))
	require.Equal(t, countResult{duplicates: 6, cut: map[string]int{}}, countAll(entries))
	require.Equal(t, float64(6), value())

	st, err := b.Stats(ctx, DefaultGroup)
	require.NoError(t, err)
	require.Zero(t, st.Pending, "counting acknowledged every entry")
}

// The per-bucket cap keeps the top offenders and counts what it cut; keys expire.
func TestCountsAreBounded(t *testing.T) {
	ctx := context.Background()
	rs := mustRules(t, storeRules)
	r, _ := rs.Get("PerIP")
	now := time.Now().UTC().Truncate(time.Minute).Add(30 * time.Second)
	b := newBuffer(t, testredis.Client(t), testredis.Name(t), nil)
	s := newRedisStore(b)
	var logs []auth0log.Log
	for i := range 200 {
		logs = append(logs, mkLog(t, "fp", now, map[string]string{"ip": fmt.Sprintf("198.51.100.%d", i)}))
		if i%4 == 0 {
			logs = append(logs, mkLog(t, "fp", now, map[string]string{"ip": "203.0.113.66"}))
		}
	}
	entries := pendingFor(t, b, DefaultGroup, "a", logs)
	var batch []countEntry
	for _, en := range entries {
		e, err := eventOf(en.ID, en.Raw)
		require.NoError(t, err)
		batch = append(batch, countEntry{id: en.ID, ops: s.ks.opsFor(r, e, now)})
	}
	res, err := s.count(ctx, batch, 10)
	require.NoError(t, err)
	ck := s.ks.bucketKey(r, kindKeyCount, bucketOf(now, r.Bucket()))
	require.Equal(t, 191, res.cut[s.ks.bucketKey(r, kindKeyCut, bucketOf(now, r.Bucket()))])

	card, err := b.Client().ZCard(ctx, ck).Result()
	require.NoError(t, err)
	require.EqualValues(t, 10, card)
	score, err := b.Client().ZScore(ctx, ck, "203.0.113.66").Result()
	require.NoError(t, err)
	require.EqualValues(t, 50, score, "the heavy hitter survives the flood with its full count")
	ttl, err := b.Client().PTTL(ctx, ck).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, r.Window)
	require.LessOrEqual(t, ttl, r.Window+r.Bucket()+keyGrace)

	lo, hi := windowBuckets(r, now)
	ev, err := s.eval(ctx, evalQuery{rule: r, lo: lo, hi: hi, threshold: r.Threshold, maxCand: 200, top: 3})
	require.NoError(t, err)
	require.EqualValues(t, 191, ev.cutGroups, "201 groups, 10 kept")
	require.EqualValues(t, 191, ev.cutEvents)
	require.Equal(t, "203.0.113.66", normalizeTop(ev)[0].group)
}

func normalizeTop(r evalResult) []groupValue {
	v := append([]groupValue(nil), r.values...)
	sortValues(v)
	return v
}

// Events older than every future window are acknowledged but not counted.
func TestTooOldEventsAreNotCounted(t *testing.T) {
	rs := mustRules(t, storeRules)
	r, _ := rs.Get("PerIP")
	now := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	ks := keyspace{prefix: "p:"}
	e := event{id: "1-0", typ: "fp", fields: [5]string{"1.2.3.4"}}
	e.date = now.Add(-r.Window - r.Bucket() - keyGrace - time.Second)
	require.Empty(t, ks.opsFor(r, e, now))
	e.date = now.Add(-r.Window)
	ops := ks.opsFor(r, e, now)
	require.Len(t, ops, 1)
	require.Equal(t, "p:thr:PerIP:"+r.CountFingerprint()+":c:"+fmt.Sprint(bucketOf(e.date, r.Bucket())), ops[0].c)
	e.fields[0] = ""
	require.Empty(t, ks.opsFor(r, e, now), "no ip: the event cannot be grouped by ip")
	e.typ = "s"
	e.fields[0] = "1.2.3.4"
	require.Empty(t, ks.opsFor(r, e, now), "type not counted by the rule")
	e.typ = "fp"
	e.date = now.Add(24 * time.Hour)
	ops = ks.opsFor(r, e, now)
	require.Equal(t, bucketOf(now, r.Bucket()), ops[0].bucket, "a future date beyond clock skew counts as now")
	require.LessOrEqual(t, ops[0].ttl, r.Window+r.Bucket()+keyGrace)
}

// A window covers at least its length and at most one bucket more.
func TestWindowBounds(t *testing.T) {
	rs := mustRules(t, storeRules)
	r, _ := rs.Get("PerIP") // 1m window, 2s buckets
	ctx := context.Background()
	s := newMemStore()
	at := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	e := event{id: "1", date: at, typ: "fp", fields: [5]string{"1.2.3.4"}}
	_, err := s.count(ctx, []countEntry{{id: e.id, ops: s.ks.opsFor(r, e, at)}}, 10)
	require.NoError(t, err)
	val := func(now time.Time) float64 {
		lo, hi := windowBuckets(r, now)
		res, err := s.eval(ctx, evalQuery{rule: r, lo: lo, hi: hi, groups: []string{"1.2.3.4"}})
		require.NoError(t, err)
		return res.values[0].value
	}
	require.Equal(t, 1.0, val(at))
	require.Equal(t, 1.0, val(at.Add(r.Window)))
	require.Equal(t, 1.0, val(at.Add(r.Window+r.Bucket()-time.Millisecond)))
	require.Equal(t, 0.0, val(at.Add(r.Window+r.Bucket())))
	require.Equal(t, 0.0, val(at.Add(-time.Second)), "not yet happened")
}

// Entries without ops are acknowledged in chunks: a batch larger than a
// chunk is counted whole, once.
func TestCountBulkAck(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	var logs []auth0log.Log
	for i := range 1234 {
		logs = append(logs, mkLog(t, "s", start.Add(time.Duration(i)*time.Millisecond), map[string]string{"ip": "10.0.0.1"}))
	}
	b := newBuffer(t, testredis.Client(t), testredis.Name(t), nil)
	entries := pendingFor(t, b, DefaultGroup, "c1", logs)
	s := newRedisStore(b)
	batch := make([]countEntry, 0, len(entries)+1)
	for _, en := range entries {
		batch = append(batch, countEntry{id: en.ID})
	}
	batch = append(batch, countEntry{id: entries[7].ID}) // twice in one batch
	res, err := s.count(ctx, batch, 10)
	require.NoError(t, err)
	require.Equal(t, countResult{counted: len(entries), duplicates: 1, cut: map[string]int{}}, res)
	pending, err := b.Client().XPending(ctx, b.StreamKey(), DefaultGroup).Result()
	require.NoError(t, err)
	require.Zero(t, pending.Count)
}

// The fields of an event are read only when a rule counts its type; a rule
// set of unknown types reads them always.
func TestEventFieldsReadOnDemand(t *testing.T) {
	const failures = `
rules:
  - name: PerIP
    types: [fp]
    group_by: ip
    window: 1m
    threshold: 3
  - name: Ratio
    types: [fp]
    ratio: {of: [fu, fp]}
    window: 1m
    threshold: 0.5
`
	path := filepath.Join(t.TempDir(), "rules.yml")
	require.NoError(t, os.WriteFile(path, []byte(failures), 0o600))
	rs, err := rules.LoadFiles([]string{path})
	require.NoError(t, err)

	at := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	l := mkLog(t, "s", at, map[string]string{"ip": "10.0.0.1", "user_name": "u1"})
	e, err := eventHead("1-0", l.Raw)
	require.NoError(t, err)
	require.Equal(t, [5]string{}, e.fields, "not read yet")
	require.NoError(t, e.readFields())
	require.Equal(t, "10.0.0.1", e.fields[rules.FieldIndex("ip")])
	require.Equal(t, "u1", e.fields[rules.FieldIndex("user_name")])
	require.Nil(t, e.raw)
	eager, err := eventOf("1-0", l.Raw)
	require.NoError(t, err)
	require.Equal(t, e, eager)

	// countBatch reads the fields of the types its rules count.
	ev, _ := newTestEvaluator(t, failures, clockwork.NewFakeClockAt(at))
	ev.rules.Store(rs)
	fp := mkLog(t, "fp", at, map[string]string{"ip": "10.0.0.2"})
	heads := []event{}
	for i, raw := range [][]byte{fp.Raw, l.Raw} {
		h, err := eventHead(fmt.Sprintf("%d-0", i+2), raw)
		require.NoError(t, err)
		heads = append(heads, h)
	}
	require.NoError(t, ev.countBatch(t.Context(), heads, nil, false))
	r, _ := rs.Get("PerIP")
	lo, hi := windowBuckets(r, at)
	got, err := ev.store.eval(t.Context(), evalQuery{rule: r, lo: lo, hi: hi, groups: []string{"10.0.0.2", "10.0.0.1"}})
	require.NoError(t, err)
	require.Equal(t, []groupValue{{group: "10.0.0.1", value: 0}, {group: "10.0.0.2", value: 1}}, normalize(got).values,
		"the fp counted by its ip; the s not at all")
}
