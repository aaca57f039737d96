package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/testredis"
	"github.com/authpipe/authpipe/internal/thresholds/internal/thtest"
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

// testGroup is the consumer group the stores count for.
const testGroup = "thresholds"

func newRedisStore(b *buffer.Redis) *Redis {
	return NewRedis(b.Client(), b.Key(""), b.StreamKey(), testGroup)
}

// eventOf decodes a buffered log with its fields, as the engine sees an
// event of a type a rule counts.
func eventOf(id string, raw []byte) (Event, error) {
	l, err := auth0log.DecodeShared(raw)
	if err != nil {
		return Event{}, err
	}
	return NewEvent(id, l), nil
}

// The Redis store and the in-memory store of `rules test` agree, cap and
// eviction included.
func TestStoresAgree(t *testing.T) {
	ctx := context.Background()
	rs := thtest.Rules(t, storeRules)
	start := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 2))
	var logs []auth0log.Log
	for i := range 400 {
		typ := []string{"fp", "fu", "s", "fp"}[rng.IntN(4)]
		ip := fmt.Sprintf("10.0.0.%d", rng.IntN(12))
		if i%7 == 0 {
			ip = "10.9.9.9" // a heavy hitter
		}
		logs = append(logs, thtest.Log(t, typ, start.Add(time.Duration(i)*500*time.Millisecond),
			map[string]string{"ip": ip, "user_name": fmt.Sprintf("u%d", rng.IntN(6))}))
	}
	b := thtest.RedisBuffer(t, testredis.Client(t), testredis.Name(t), nil)
	entries := thtest.Pending(t, b, testGroup, "c1", logs)
	rstore, mstore := newRedisStore(b), NewMemory()
	const maxGroups = 4

	for i := 0; i < len(entries); i += 10 {
		batch := entries[i:min(i+10, len(entries))]
		now := logs[min(i+9, len(logs)-1)].Date
		var rb, mb []Entry
		for _, en := range batch {
			e, err := eventOf(en.ID, en.Raw)
			require.NoError(t, err)
			rce, mce := Entry{ID: en.ID}, Entry{ID: en.ID}
			for _, r := range rs.Rules {
				rce.Ops = append(rce.Ops, rstore.ks.OpsFor(r, e, now)...)
				mce.Ops = append(mce.Ops, mstore.ks.OpsFor(r, e, now)...)
			}
			rb, mb = append(rb, rce), append(mb, mce)
		}
		rres, err := rstore.Count(ctx, rb, maxGroups)
		require.NoError(t, err)
		mres, err := mstore.Count(ctx, mb, maxGroups)
		require.NoError(t, err)
		require.Equal(t, mres.Counted, rres.Counted)
		require.Equal(t, len(batch), rres.Counted)
		require.Equal(t, len(mres.Cut), len(rres.Cut))

		if i%50 != 0 {
			continue
		}
		for _, r := range rs.Rules {
			lo, hi := WindowBuckets(r, now)
			for _, q := range []Query{
				{Rule: r, Lo: lo, Hi: hi, Threshold: r.Threshold, MaxCand: 200, Top: 5, Groups: []string{"10.0.0.1", "nobody"}},
				{Rule: r, Lo: lo, Hi: hi, Threshold: r.Threshold, MaxCand: 2, Top: 1},
				{Rule: r, Lo: lo, Hi: hi, Groups: []string{"10.9.9.9", "10.0.0.3", ""}},
			} {
				rv, err := rstore.Eval(ctx, q)
				require.NoError(t, err)
				mv, err := mstore.Eval(ctx, q)
				require.NoError(t, err)
				require.Equal(t, normalize(mv), normalize(rv), "rule %s at %s, query %+v", r.Name, now, q)
			}
		}
	}
	// Redelivered entries count as duplicates in both.
	var again []Entry
	for _, en := range entries[:5] {
		again = append(again, Entry{ID: en.ID, Ops: []Op{{kind: 'c', c: "x", x: "y", group: "g", ttl: time.Minute}}})
	}
	for _, en := range entries[5:12] { // without Ops: acknowledged in bulk
		again = append(again, Entry{ID: en.ID})
	}
	res, err := rstore.Count(ctx, again, maxGroups)
	require.NoError(t, err)
	require.Equal(t, CountResult{Duplicates: 12, Cut: map[string]int{}}, res)
	n, err := b.Client().Exists(ctx, "x").Result()
	require.NoError(t, err)
	require.Zero(t, n, "a duplicate's increments are not applied")
}

func normalize(r Result) Result {
	seen := map[string]bool{}
	var vals []GroupValue
	for _, v := range r.Values {
		if !seen[v.Group] {
			seen[v.Group] = true
			vals = append(vals, v)
		}
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i].Group < vals[j].Group })
	r.Values = vals
	return r
}

// An entry is counted once however often it is delivered: after a crash
// between read and count (ReadPending), after a reclaim by another
// replica, and when the slow original consumer finally counts it too.
func TestRedeliveredEntriesCountedOnce(t *testing.T) {
	ctx := context.Background()
	rs := thtest.Rules(t, storeRules)
	r, _ := rs.Get("PerIP")
	now := time.Now().UTC()
	b := thtest.RedisBuffer(t, testredis.Client(t), testredis.Name(t), nil)
	s := newRedisStore(b)
	logs := thtest.Burst(t, 6, "fp", "192.0.2.1", now)
	entries := thtest.Pending(t, b, testGroup, "a", logs)

	countAll := func(es []buffer.Entry) CountResult {
		var batch []Entry
		for _, en := range es {
			e, err := eventOf(en.ID, en.Raw)
			require.NoError(t, err)
			batch = append(batch, Entry{ID: en.ID, Ops: s.ks.OpsFor(r, e, now)})
		}
		res, err := s.Count(ctx, batch, 100)
		require.NoError(t, err)
		return res
	}
	value := func() float64 {
		lo, hi := WindowBuckets(r, now)
		res, err := s.Eval(ctx, Query{Rule: r, Lo: lo, Hi: hi, Groups: []string{"192.0.2.1"}})
		require.NoError(t, err)
		return res.Values[0].Value
	}

	// Consumer a crashed after reading: its entries come back with ReadPending.
	pending, err := b.ReadPending(ctx, testGroup, "a", "0", 100)
	require.NoError(t, err)
	require.Len(t, pending, 6)
	require.Equal(t, 4, countAll(pending[:4]).Counted)
	// Another replica reclaims the rest... and a's original batch is counted late.
	reclaimed, err := b.Reclaim(ctx, testGroup, "b", 0, 100)
	require.NoError(t, err)
	require.Len(t, reclaimed, 2)
	require.Equal(t, CountResult{Counted: 2, Cut: map[string]int{}}, countAll(reclaimed))
	require.Equal(t, CountResult{Duplicates: 6, Cut: map[string]int{}}, countAll(entries))
	require.Equal(t, float64(6), value())

	st, err := b.Stats(ctx, testGroup)
	require.NoError(t, err)
	require.Zero(t, st.Pending, "counting acknowledged every entry")
}

// The per-bucket cap keeps the top offenders and counts what it cut; keys expire.
func TestCountsAreBounded(t *testing.T) {
	ctx := context.Background()
	rs := thtest.Rules(t, storeRules)
	r, _ := rs.Get("PerIP")
	now := time.Now().UTC().Truncate(time.Minute).Add(30 * time.Second)
	b := thtest.RedisBuffer(t, testredis.Client(t), testredis.Name(t), nil)
	s := newRedisStore(b)
	var logs []auth0log.Log
	for i := range 200 {
		logs = append(logs, thtest.Log(t, "fp", now, map[string]string{"ip": fmt.Sprintf("198.51.100.%d", i)}))
		if i%4 == 0 {
			logs = append(logs, thtest.Log(t, "fp", now, map[string]string{"ip": "203.0.113.66"}))
		}
	}
	entries := thtest.Pending(t, b, testGroup, "a", logs)
	var batch []Entry
	for _, en := range entries {
		e, err := eventOf(en.ID, en.Raw)
		require.NoError(t, err)
		batch = append(batch, Entry{ID: en.ID, Ops: s.ks.OpsFor(r, e, now)})
	}
	res, err := s.Count(ctx, batch, 10)
	require.NoError(t, err)
	ck := s.ks.bucketKey(r, kindKeyCount, bucketOf(now, r.Bucket()))
	require.Equal(t, 191, res.Cut[s.ks.bucketKey(r, kindKeyCut, bucketOf(now, r.Bucket()))])

	card, err := b.Client().ZCard(ctx, ck).Result()
	require.NoError(t, err)
	require.EqualValues(t, 10, card)
	score, err := b.Client().ZScore(ctx, ck, "203.0.113.66").Result()
	require.NoError(t, err)
	require.EqualValues(t, 50, score, "the heavy hitter survives the flood with its full count")
	ttl, err := b.Client().PTTL(ctx, ck).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, r.Window)
	require.LessOrEqual(t, ttl, r.Window+r.Bucket()+KeyGrace)

	lo, hi := WindowBuckets(r, now)
	ev, err := s.Eval(ctx, Query{Rule: r, Lo: lo, Hi: hi, Threshold: r.Threshold, MaxCand: 200, Top: 3})
	require.NoError(t, err)
	require.EqualValues(t, 191, ev.CutGroups, "201 groups, 10 kept")
	require.EqualValues(t, 191, ev.CutEvents)
	require.Equal(t, "203.0.113.66", normalizeTop(ev)[0].Group)
}

// normalizeTop orders by value, highest first, then by group.
func normalizeTop(r Result) []GroupValue {
	v := append([]GroupValue(nil), r.Values...)
	sort.Slice(v, func(i, j int) bool {
		if v[i].Value != v[j].Value {
			return v[i].Value > v[j].Value
		}
		return v[i].Group < v[j].Group
	})
	return v
}

// Events older than every future window are acknowledged but not counted.
func TestTooOldEventsAreNotCounted(t *testing.T) {
	rs := thtest.Rules(t, storeRules)
	r, _ := rs.Get("PerIP")
	now := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	ks := Keyspace{prefix: "p:"}
	e := Event{ID: "1-0", Type: "fp", Fields: [5]string{"1.2.3.4"}}
	e.Date = now.Add(-r.Window - r.Bucket() - KeyGrace - time.Second)
	require.Empty(t, ks.OpsFor(r, e, now))
	e.Date = now.Add(-r.Window)
	ops := ks.OpsFor(r, e, now)
	require.Len(t, ops, 1)
	require.Equal(t, "p:thr:PerIP:"+r.CountFingerprint()+":c:"+fmt.Sprint(bucketOf(e.Date, r.Bucket())), ops[0].c)
	e.Fields[0] = ""
	require.Empty(t, ks.OpsFor(r, e, now), "no ip: the event cannot be grouped by ip")
	e.Type = "s"
	e.Fields[0] = "1.2.3.4"
	require.Empty(t, ks.OpsFor(r, e, now), "type not counted by the rule")
	e.Type = "fp"
	e.Date = now.Add(24 * time.Hour)
	ops = ks.OpsFor(r, e, now)
	require.Equal(t, bucketOf(now, r.Bucket()), ops[0].bucket, "a future date beyond clock skew counts as now")
	require.LessOrEqual(t, ops[0].ttl, r.Window+r.Bucket()+KeyGrace)
}

// A window covers at least its length and at most one bucket more.
func TestWindowBounds(t *testing.T) {
	rs := thtest.Rules(t, storeRules)
	r, _ := rs.Get("PerIP") // 1m window, 2s buckets
	ctx := context.Background()
	s := NewMemory()
	at := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	e := Event{ID: "1", Date: at, Type: "fp", Fields: [5]string{"1.2.3.4"}}
	_, err := s.Count(ctx, []Entry{{ID: e.ID, Ops: s.ks.OpsFor(r, e, at)}}, 10)
	require.NoError(t, err)
	val := func(now time.Time) float64 {
		lo, hi := WindowBuckets(r, now)
		res, err := s.Eval(ctx, Query{Rule: r, Lo: lo, Hi: hi, Groups: []string{"1.2.3.4"}})
		require.NoError(t, err)
		return res.Values[0].Value
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
		logs = append(logs, thtest.Log(t, "s", start.Add(time.Duration(i)*time.Millisecond), map[string]string{"ip": "10.0.0.1"}))
	}
	b := thtest.RedisBuffer(t, testredis.Client(t), testredis.Name(t), nil)
	entries := thtest.Pending(t, b, testGroup, "c1", logs)
	s := newRedisStore(b)
	batch := make([]Entry, 0, len(entries)+1)
	for _, en := range entries {
		batch = append(batch, Entry{ID: en.ID})
	}
	batch = append(batch, Entry{ID: entries[7].ID}) // twice in one batch
	res, err := s.Count(ctx, batch, 10)
	require.NoError(t, err)
	require.Equal(t, CountResult{Counted: len(entries), Duplicates: 1, Cut: map[string]int{}}, res)
	pending, err := b.Client().XPending(ctx, b.StreamKey(), testGroup).Result()
	require.NoError(t, err)
	require.Zero(t, pending.Count)
}

// An event's fields are the log's, as parsed when it entered authpipe,
// cleaned: control characters removed, 256 bytes at most.
func TestNewEvent(t *testing.T) {
	at := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	l := thtest.Log(t, "s", at, map[string]string{"ip": "10.0.0.1", "user_name": "u1", "user_id": "auth0|1", "client_id": "app", "connection": "db"})
	e := NewEvent("1-0", l)
	require.Equal(t, Event{ID: "1-0", Date: at, Type: "s", Fields: [5]string{"10.0.0.1", "auth0|1", "u1", "app", "db"}}, e)
	for i, name := range rules.Fields {
		require.Equal(t, i, rules.FieldIndex(name))
	}
	l.UserName = "u\x01" + strings.Repeat("x", 300)
	require.Equal(t, "u"+strings.Repeat("x", 254), NewEvent("1-0", l).Fields[rules.FieldIndex("user_name")])
}

// A local Memory store stays bounded over many windows: buckets are dropped
// one window (plus KeyGrace) after they end, ids once acknowledged or
// expired, as Redis expires its keys.
func TestLocalStorePrunes(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	rs := thtest.Rules(t, storeRules)
	s := NewLocal(clock)
	ctx := context.Background()
	// What the engine's count of a batch asks of the store.
	count := func(evs []Event) {
		batch := make([]Entry, 0, len(evs))
		for _, e := range evs {
			en := Entry{ID: e.ID}
			for _, r := range rs.Rules {
				en.Ops = append(en.Ops, s.ks.OpsFor(r, e, clock.Now())...)
			}
			batch = append(batch, en)
		}
		_, err := s.Count(ctx, batch, 50)
		require.NoError(t, err)
	}
	bound := 0
	var longest time.Duration
	for _, r := range rs.Rules {
		// c, d or o, x per live bucket
		bound += 3 * (int((r.Window+KeyGrace+pruneInterval)/r.Bucket()) + 2)
		longest = max(longest, r.Window)
	}
	peakKeys, peakIDs := 0, 0
	for i := range int(40*longest/time.Second) + 1 { // 40 of the longest windows, one batch a second
		var evs []Event
		for j := range 20 {
			ip := fmt.Sprintf("10.%d.%d.%d", i%7, j, i%251)
			evs = append(evs, Event{ID: fmt.Sprintf("%d-%d", i, j), Date: clock.Now(), Type: []string{"fp", "s", "fu"}[j%3],
				Fields: [5]string{ip, "", fmt.Sprintf("u%d", i*20+j)}})
		}
		count(evs)
		if i%2 == 0 { // half the batches acknowledged, half never
			ids := make([]string, len(evs))
			for k, e := range evs {
				ids[k] = e.ID
			}
			s.Forget(ids)
		}
		keys, ids := s.Size()
		peakKeys, peakIDs = max(peakKeys, keys), max(peakIDs, ids)
		require.LessOrEqual(t, keys, bound, "after %d s", i)
		s.mu.Lock()
		require.LessOrEqual(t, len(s.expires), bound)
		s.mu.Unlock()
		clock.Advance(time.Second)
	}
	t.Logf("peak %d keys (bound %d), %d ids", peakKeys, bound, peakIDs)
	// Unacknowledged ids live as long as the longest bucket they touched.
	require.LessOrEqual(t, peakIDs, 20*int(longest+2*KeyGrace+2*pruneInterval)/int(time.Second)/2)

	// Quiet for longer than every window: nothing left.
	clock.Advance(longest + 2*KeyGrace)
	s.Prune(clock.Now())
	keys, ids := s.Size()
	require.Zero(t, keys)
	require.Zero(t, ids)

	// A store for `rules test` keeps everything.
	m := NewMemory()
	_, err := m.Count(ctx, []Entry{{ID: "1", Ops: m.ks.OpsFor(rs.Rules[0], Event{ID: "1", Date: clock.Now(), Type: "fp", Fields: [5]string{"1.2.3.4"}}, clock.Now())}}, 10)
	require.NoError(t, err)
	m.Prune(clock.Now().Add(24 * time.Hour))
	keys, _ = m.Size()
	require.Equal(t, 1, keys)
}
