package thresholds

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"
)

// memStore is the in-memory mirror of redisStore, used by `rules test`. It
// implements the same counting model (count.go) with the same cap, eviction
// order and window rules; TestStoresAgree runs both on the same input.
// Keys never expire: a test's windows are selected by bucket, as in Redis.
type memStore struct {
	ks keyspace

	mu     sync.Mutex
	acked  map[string]bool
	zsets  map[string]map[string]float64
	sets   map[string]map[string]bool // distinct members
	cuts   map[string][2]int64        // groups, events
	alerts map[string]activeAlert
}

func newMemStore() *memStore {
	return &memStore{
		ks:     keyspace{prefix: "mem:"},
		acked:  map[string]bool{},
		zsets:  map[string]map[string]float64{},
		sets:   map[string]map[string]bool{},
		cuts:   map[string][2]int64{},
		alerts: map[string]activeAlert{},
	}
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
	res := countResult{cut: map[string]int{}}
	for _, e := range entries {
		if s.acked[e.id] {
			res.duplicates++
			continue
		}
		s.acked[e.id] = true
		res.counted++
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
	switch r.kind() {
	case kindCount:
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
	case kindDistinct:
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
		dkeys := keysOf(kindKeyDistinct)
		for _, g := range cands {
			vals := map[string]bool{}
			prefix := g + groupSep
			for _, dk := range dkeys {
				for m := range s.sets[dk] {
					if strings.HasPrefix(m, prefix) {
						vals[m] = true
					}
				}
			}
			res.values = append(res.values, groupValue{group: g, value: float64(len(vals))})
		}
	case kindRatio:
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
				if c.score < r.minEvents() || n == q.maxCand {
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
	for _, f := range sortedKeys(s.alerts) {
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
