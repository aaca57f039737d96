package thresholds

import (
	"context"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// memStore is the in-memory mirror of redisStore. It implements the same
// counting model (count.go) with the same cap, eviction order and window
// rules; TestStoresAgree runs both on the same input. It serves two users:
//
//   - `rules test` (newMemStore): keys never expire, a test's windows are
//     selected by bucket, as in Redis.
//   - the engine on the embedded buffer (newLocalStore): keys expire as
//     Redis' do, one window (plus keyGrace) after their bucket ends, by the
//     injected clock, and prune drops them, so memory stays bounded over
//     any run. The ids of counted entries are kept only until the buffer
//     has acknowledged them (forget) or, if it never does, until the
//     buckets they were counted in expire: a redelivery of an entry whose
//     counts are gone would count nothing anyway.
type memStore struct {
	ks    keyspace
	clock clockwork.Clock // nil: nothing expires

	mu        sync.Mutex
	acked     map[string]time.Time // entry id → when it may be forgotten
	zsets     map[string]map[string]float64
	sets      map[string]map[string]bool // distinct members
	cuts      map[string][2]int64        // groups, events
	expires   map[string]time.Time       // key → expiry (with a clock only)
	nextPrune time.Time
	alerts    map[string]activeAlert
}

// pruneInterval is how often, by the store's clock, a local store drops
// expired keys: keys outlive their expiry by at most this.
const pruneInterval = time.Second

func newMemStore() *memStore {
	return &memStore{
		ks:      keyspace{prefix: "mem:"},
		acked:   map[string]time.Time{},
		zsets:   map[string]map[string]float64{},
		sets:    map[string]map[string]bool{},
		cuts:    map[string][2]int64{},
		expires: map[string]time.Time{},
		alerts:  map[string]activeAlert{},
	}
}

// newLocalStore returns a memStore whose keys expire by clock, for the
// engine on the embedded buffer.
func newLocalStore(clock clockwork.Clock) *memStore {
	s := newMemStore()
	s.clock = clock
	return s
}

// touch extends key's expiry to at least at (local stores only).
func (s *memStore) touch(key string, at time.Time) {
	if s.clock == nil || key == "" {
		return
	}
	if cur, ok := s.expires[key]; !ok || at.After(cur) {
		s.expires[key] = at
	}
}

// prune drops the keys that expired by now, and the ids of counted entries
// past theirs: what Redis' key expiry does. It does the work at most once
// per pruneInterval; a store without a clock keeps everything.
func (s *memStore) prune(now time.Time) {
	if s.clock == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
}

func (s *memStore) pruneLocked(now time.Time) {
	if s.clock == nil || now.Before(s.nextPrune) {
		return
	}
	s.nextPrune = now.Add(pruneInterval)
	for k, at := range s.expires {
		if at.After(now) {
			continue
		}
		delete(s.expires, k)
		delete(s.zsets, k)
		delete(s.sets, k)
		delete(s.cuts, k)
	}
	for id, at := range s.acked {
		if !at.After(now) {
			delete(s.acked, id)
		}
	}
}

// forget drops the ids of counted entries that the buffer has
// acknowledged: they are never delivered again.
func (s *memStore) forget(ids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.acked, id)
	}
}

// resetCounts drops every count (not the alert state), before the counts
// are rebuilt from the buffer.
func (s *memStore) resetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.acked)
	clear(s.zsets)
	clear(s.sets)
	clear(s.cuts)
	clear(s.expires)
}

// size returns how many keys and entry ids the store holds.
func (s *memStore) size() (keys, ids int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for k := range s.zsets {
		seen[k] = true
	}
	for k := range s.sets {
		seen[k] = true
	}
	for k := range s.cuts {
		seen[k] = true
	}
	return len(seen), len(s.acked)
}

func (s *memStore) keys() keyspace { return s.ks }

type scored struct {
	member string
	score  float64
}

// ascending orders like a Redis sorted set: by score, then member bytes.
func ascending(z map[string]float64) []scored {
	out := make([]scored, 0, len(z))
	for m, sc := range z {
		out = append(out, scored{m, sc})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].score != out[j].score {
			return out[i].score < out[j].score
		}
		return out[i].member < out[j].member
	})
	return out
}

// descending is the order of ZREVRANGE.
func descending(z map[string]float64) []scored {
	out := ascending(z)
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

func (s *memStore) zset(key string) map[string]float64 {
	z, ok := s.zsets[key]
	if !ok {
		z = map[string]float64{}
		s.zsets[key] = z
	}
	return z
}

func (s *memStore) incr(ck, dk, xk, member string, maxGroups int, cut map[string]int) {
	z := s.zset(ck)
	if _, ok := z[member]; ok {
		z[member]++
		return
	}
	z[member] = 1
	if len(z) <= maxGroups {
		return
	}
	var victim *scored
	for _, c := range ascending(z)[:2] {
		if c.member != member {
			victim = &c
			break
		}
	}
	if victim == nil {
		return
	}
	delete(z, victim.member)
	if dk != "" {
		prefix := victim.member + groupSep
		for m := range s.sets[dk] {
			if strings.HasPrefix(m, prefix) {
				delete(s.sets[dk], m)
			}
		}
	}
	c := s.cuts[xk]
	c[0]++
	c[1] += int64(victim.score)
	s.cuts[xk] = c
	cut[xk]++
}

func (s *memStore) count(_ context.Context, entries []countEntry, maxGroups int) (countResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var now time.Time
	if s.clock != nil {
		now = s.clock.Now()
		s.pruneLocked(now)
	}
	res := countResult{cut: map[string]int{}}
	for _, e := range entries {
		if _, ok := s.acked[e.id]; ok {
			res.duplicates++
			continue
		}
		res.counted++
		keep := now
		for _, o := range e.ops {
			if s.clock != nil {
				exp := now.Add(o.ttl)
				keep = later(keep, exp)
				s.touch(o.c, exp)
				s.touch(o.d, exp)
				s.touch(o.x, exp)
			}
		}
		s.acked[e.id] = keep
		for _, o := range e.ops {
			if o.kind != 'd' {
				s.incr(o.c, "", o.x, o.group, maxGroups, res.cut)
				continue
			}
			if sc, ok := s.zset(o.c)[o.group]; ok && sc >= float64(o.dcap) {
				continue
			}
			set, ok := s.sets[o.d]
			if !ok {
				set = map[string]bool{}
				s.sets[o.d] = set
			}
			m := o.group + groupSep + o.value
			if set[m] {
				continue
			}
			set[m] = true
			s.incr(o.c, o.d, o.x, o.group, maxGroups, res.cut)
		}
	}
	return res, nil
}

func (s *memStore) union(keys []string) map[string]float64 {
	u := map[string]float64{}
	for _, k := range keys {
		for m, sc := range s.zsets[k] {
			u[m] += sc
		}
	}
	return u
}

func (s *memStore) eval(_ context.Context, q evalQuery) (evalResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := q.rule
	keysOf := func(kind string) []string {
		var out []string
		for b := q.lo; b <= q.hi; b++ {
			out = append(out, s.ks.bucketKey(r, kind, b))
		}
		return out
	}
	var res evalResult
	for _, xk := range keysOf(kindKeyCut) {
		res.cutGroups += s.cuts[xk][0]
		res.cutEvents += s.cuts[xk][1]
	}
	switch r.Kind() {
	case rules.KindCount:
		u := s.union(keysOf(kindKeyCount))
		if q.maxCand > 0 {
			n := 0
			for _, c := range descending(u) {
				if c.score < q.threshold || n == q.maxCand {
					break
				}
				res.values = append(res.values, groupValue{group: c.member, value: c.score})
				n++
			}
		}
		if q.top > 0 {
			for i, c := range descending(u) {
				if i == q.top {
					break
				}
				res.values = append(res.values, groupValue{group: c.member, value: c.score})
			}
		}
		for _, g := range q.groups {
			res.values = append(res.values, groupValue{group: g, value: u[g]})
		}
	case rules.KindDistinct:
		var cands []string
		seen := map[string]bool{}
		add := func(g string) {
			if !seen[g] {
				seen[g] = true
				cands = append(cands, g)
			}
		}
		if q.maxCand > 0 || q.top > 0 {
			u := s.union(keysOf(kindKeyCount))
			n := 0
			for _, c := range descending(u) {
				if q.maxCand == 0 || c.score < q.threshold || n == q.maxCand {
					break
				}
				add(c.member)
				n++
			}
			for i, c := range descending(u) {
				if i == q.top {
					break
				}
				add(c.member)
			}
		}
		for _, g := range q.groups {
			add(g)
		}
		// One pass over the window's members, not one per candidate:
		// cleanValue keeps groupSep out of groups, so a member's group is
		// what precedes its first groupSep.
		vals := make(map[string]map[string]bool, len(cands))
		for _, g := range cands {
			vals[g] = map[string]bool{}
		}
		for _, dk := range keysOf(kindKeyDistinct) {
			for m := range s.sets[dk] {
				g, v, _ := strings.Cut(m, groupSep)
				if set, ok := vals[g]; ok {
					set[v] = true
				}
			}
		}
		for _, g := range cands {
			res.values = append(res.values, groupValue{group: g, value: float64(len(vals[g]))})
		}
	case rules.KindRatio:
		num, den := s.union(keysOf(kindKeyCount)), s.union(keysOf(kindKeyOf))
		seen := map[string]bool{}
		add := func(g string) {
			if seen[g] {
				return
			}
			seen[g] = true
			gv := groupValue{group: g, num: num[g], den: den[g]}
			if gv.den > 0 {
				gv.value = gv.num / gv.den
			}
			res.values = append(res.values, gv)
		}
		if q.maxCand > 0 {
			n := 0
			for _, c := range descending(den) {
				if c.score < r.MinDenominator() || n == q.maxCand {
					break
				}
				add(c.member)
				n++
			}
		}
		for _, g := range q.groups {
			add(g)
		}
	}
	return res, nil
}

func (s *memStore) activeAlerts(context.Context) ([]activeAlert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]activeAlert, 0, len(s.alerts))
	for _, f := range slices.Sorted(maps.Keys(s.alerts)) {
		out = append(out, s.alerts[f])
	}
	return out, nil
}

func (s *memStore) claimAlert(_ context.Context, a activeAlert) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := alertField(a.Rule, a.Group)
	if _, ok := s.alerts[f]; ok {
		return false, nil
	}
	s.alerts[f] = a
	return true, nil
}

func (s *memStore) putAlert(_ context.Context, a activeAlert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := alertField(a.Rule, a.Group)
	if cur, ok := s.alerts[f]; ok && cur.StartsAt.Equal(a.StartsAt) {
		s.alerts[f] = a
	}
	return nil
}

func (s *memStore) dropAlert(_ context.Context, rule, group string, startsAt time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := alertField(rule, group)
	if cur, ok := s.alerts[f]; ok && cur.StartsAt.UnixNano() == startsAt.UnixNano() {
		delete(s.alerts, f)
		return true, nil
	}
	return false, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
