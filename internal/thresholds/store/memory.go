package store

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// Memory is the in-memory mirror of Redis. It implements the same
// counting model with the same cap, eviction order and window rules;
// TestStoresAgree runs both on the same input. It serves two users:
//
//   - `rules test` (NewMemory): keys never expire, a test's windows are
//     selected by bucket, as in Redis.
//   - the engine on the embedded buffer (NewLocal): keys expire as
//     Redis' do, one window (plus KeyGrace) after their bucket ends, by the
//     injected clock, and Prune drops them, so memory stays bounded over
//     any run. The ids of counted entries are kept only until the buffer
//     has acknowledged them (Forget) or, if it never does, until the
//     buckets they were counted in expire: a redelivery of an entry whose
//     counts are gone would count nothing anyway.
type Memory struct {
	ks    Keyspace
	clock clockwork.Clock // nil: nothing expires

	mu        sync.Mutex
	acked     map[string]time.Time // entry id → when it may be forgotten
	zsets     map[string]map[string]float64
	sets      map[string]map[string]bool // distinct members
	cuts      map[string][2]int64        // groups, events
	expires   map[string]time.Time       // key → expiry (with a clock only)
	nextPrune time.Time
	alerts    map[string]ActiveAlert
}

// pruneInterval is how often, by the store's clock, a local store drops
// expired keys: keys outlive their expiry by at most this.
const pruneInterval = time.Second

// NewMemory returns a store whose keys never expire.
func NewMemory() *Memory {
	return &Memory{
		ks:      Keyspace{prefix: "mem:"},
		acked:   map[string]time.Time{},
		zsets:   map[string]map[string]float64{},
		sets:    map[string]map[string]bool{},
		cuts:    map[string][2]int64{},
		expires: map[string]time.Time{},
		alerts:  map[string]ActiveAlert{},
	}
}

// NewLocal returns a store whose keys expire by clock, for the engine on
// the embedded buffer.
func NewLocal(clock clockwork.Clock) *Memory {
	s := NewMemory()
	s.clock = clock
	return s
}

// touch extends key's expiry to at least at (local stores only).
func (s *Memory) touch(key string, at time.Time) {
	if s.clock == nil || key == "" {
		return
	}
	if cur, ok := s.expires[key]; !ok || at.After(cur) {
		s.expires[key] = at
	}
}

// Prune drops the keys that expired by now, and the ids of counted entries
// past theirs: what Redis' key expiry does. It does the work at most once
// per pruneInterval; a store without a clock keeps everything.
func (s *Memory) Prune(now time.Time) {
	if s.clock == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
}

func (s *Memory) pruneLocked(now time.Time) {
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

// Forget drops the ids of counted entries that the buffer has
// acknowledged: they are never delivered again.
func (s *Memory) Forget(ids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.acked, id)
	}
}

// ResetCounts drops every count (not the alert state), before the counts
// are rebuilt from the buffer.
func (s *Memory) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.acked)
	clear(s.zsets)
	clear(s.sets)
	clear(s.cuts)
	clear(s.expires)
}

// Size returns how many keys and entry ids the store holds.
func (s *Memory) Size() (keys, ids int) {
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

// Keys returns the store's keyspace.
func (s *Memory) Keys() Keyspace { return s.ks }

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
	slices.SortFunc(out, func(a, b scored) int {
		return cmp.Or(cmp.Compare(a.score, b.score), strings.Compare(a.member, b.member))
	})
	return out
}

// descending is the order of ZREVRANGE.
func descending(z map[string]float64) []scored {
	out := ascending(z)
	slices.Reverse(out)
	return out
}

func (s *Memory) zset(key string) map[string]float64 {
	z, ok := s.zsets[key]
	if !ok {
		z = map[string]float64{}
		s.zsets[key] = z
	}
	return z
}

func (s *Memory) incr(ck, dk, xk, member string, maxGroups int, cut map[string]int) {
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

// Count is Redis.Count in memory.
func (s *Memory) Count(_ context.Context, entries []Entry, maxGroups int) (CountResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var now time.Time
	if s.clock != nil {
		now = s.clock.Now()
		s.pruneLocked(now)
	}
	res := CountResult{Cut: map[string]int{}}
	for _, e := range entries {
		if _, ok := s.acked[e.ID]; ok {
			res.Duplicates++
			continue
		}
		res.Counted++
		keep := now
		for _, o := range e.Ops {
			if s.clock != nil {
				exp := now.Add(o.ttl)
				if exp.After(keep) {
					keep = exp
				}
				s.touch(o.c, exp)
				s.touch(o.d, exp)
				s.touch(o.x, exp)
			}
		}
		s.acked[e.ID] = keep
		for _, o := range e.Ops {
			if o.kind != 'd' {
				s.incr(o.c, "", o.x, o.group, maxGroups, res.Cut)
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
			s.incr(o.c, o.d, o.x, o.group, maxGroups, res.Cut)
		}
	}
	return res, nil
}

func (s *Memory) union(keys []string) map[string]float64 {
	u := map[string]float64{}
	for _, k := range keys {
		for m, sc := range s.zsets[k] {
			u[m] += sc
		}
	}
	return u
}

// Eval is Redis.Eval in memory.
func (s *Memory) Eval(_ context.Context, q Query) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := q.Rule
	keysOf := func(kind string) []string {
		var out []string
		for b := q.Lo; b <= q.Hi; b++ {
			out = append(out, s.ks.bucketKey(r, kind, b))
		}
		return out
	}
	var res Result
	for _, xk := range keysOf(kindKeyCut) {
		res.CutGroups += s.cuts[xk][0]
		res.CutEvents += s.cuts[xk][1]
	}
	switch r.Kind() {
	case rules.KindCount:
		u := s.union(keysOf(kindKeyCount))
		if q.MaxCand > 0 {
			for i, c := range descending(u) {
				if c.score < q.Threshold || i == q.MaxCand {
					break
				}
				res.Values = append(res.Values, GroupValue{Group: c.member, Value: c.score})
			}
		}
		if q.Top > 0 {
			for i, c := range descending(u) {
				if i == q.Top {
					break
				}
				res.Values = append(res.Values, GroupValue{Group: c.member, Value: c.score})
			}
		}
		for _, g := range q.Groups {
			res.Values = append(res.Values, GroupValue{Group: g, Value: u[g]})
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
		if q.MaxCand > 0 || q.Top > 0 {
			u := s.union(keysOf(kindKeyCount))
			for i, c := range descending(u) {
				if q.MaxCand == 0 || c.score < q.Threshold || i == q.MaxCand {
					break
				}
				add(c.member)
			}
			for i, c := range descending(u) {
				if i == q.Top {
					break
				}
				add(c.member)
			}
		}
		for _, g := range q.Groups {
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
			res.Values = append(res.Values, GroupValue{Group: g, Value: float64(len(vals[g]))})
		}
	case rules.KindRatio:
		num, den := s.union(keysOf(kindKeyCount)), s.union(keysOf(kindKeyOf))
		seen := map[string]bool{}
		add := func(g string) {
			if seen[g] {
				return
			}
			seen[g] = true
			gv := GroupValue{Group: g, Num: num[g], Den: den[g]}
			if gv.Den > 0 {
				gv.Value = gv.Num / gv.Den
			}
			res.Values = append(res.Values, gv)
		}
		if q.MaxCand > 0 {
			for i, c := range descending(den) {
				if c.score < r.MinDenominator() || i == q.MaxCand {
					break
				}
				add(c.member)
			}
		}
		for _, g := range q.Groups {
			add(g)
		}
	}
	return res, nil
}

// ActiveAlerts is Redis.ActiveAlerts in memory.
func (s *Memory) ActiveAlerts(context.Context) ([]ActiveAlert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ActiveAlert, 0, len(s.alerts))
	for _, f := range slices.Sorted(maps.Keys(s.alerts)) {
		out = append(out, s.alerts[f])
	}
	return out, nil
}

// ClaimAlert is Redis.ClaimAlert in memory.
func (s *Memory) ClaimAlert(_ context.Context, a ActiveAlert) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := AlertField(a.Rule, a.Group)
	if _, ok := s.alerts[f]; ok {
		return false, nil
	}
	s.alerts[f] = a
	return true, nil
}

// PutAlert is Redis.PutAlert in memory.
func (s *Memory) PutAlert(_ context.Context, a ActiveAlert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := AlertField(a.Rule, a.Group)
	if cur, ok := s.alerts[f]; ok && cur.StartsAt.Equal(a.StartsAt) {
		s.alerts[f] = a
	}
	return nil
}

// DropAlert is Redis.DropAlert in memory.
func (s *Memory) DropAlert(_ context.Context, rule, group string, startsAt time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := AlertField(rule, group)
	if cur, ok := s.alerts[f]; ok && cur.StartsAt.UnixNano() == startsAt.UnixNano() {
		delete(s.alerts, f)
		return true, nil
	}
	return false, nil
}
