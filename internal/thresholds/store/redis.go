package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// Redis keeps counts and alert state in Redis, under the tenant's hash
// tag. Counting and acknowledging are one script: an entry is counted only
// if XACK removed it from the thresholds group's pending list in that same
// script, so a redelivered entry is never counted twice and an entry is
// never acknowledged without being counted.
type Redis struct {
	client redis.UniversalClient
	ks     Keyspace
	stream string // the tenant's log stream
	group  string // the thresholds consumer group
}

// NewRedis returns the store of the keys under prefix (the tenant's, with
// its hash tag), counting the entries of stream that group reads.
func NewRedis(client redis.UniversalClient, prefix, stream, group string) *Redis {
	return &Redis{client: client, ks: Keyspace{prefix: prefix}, stream: stream, group: group}
}

// Keys returns the store's keyspace.
func (s *Redis) Keys() Keyspace { return s.ks }

// countScript acknowledges entries and counts the fresh ones.
//
// KEYS: stream, then every bucket key the ops name.
// ARGV: group, max groups, n entries, then per entry: id, n ops, then per
// op 8 fields: kind ('c'|'d'), c key index, x key index, d key index (0
// for none), ttl ms, group, value, distinct cap; then the ids of the
// entries without ops.
// Returns {counted, duplicates, {x key, groups cut, …}}.
//
// An entry with ops is acknowledged alone, to learn whether it is fresh;
// the entries without ops (most of them: the shipped rules count failures)
// need no answer of their own and are acknowledged a chunk per XACK, which
// saves Redis a command per event.
var countScript = redis.NewScript(`#!lua
local grp = ARGV[1]
local cap = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local SEP = '\31'
local cut = {}

local function evict(ck, dk, xk, newcomer, ttl)
  local low = redis.call('ZRANGE', ck, 0, 1, 'WITHSCORES')
  local victim, score = low[1], low[2]
  if victim == newcomer then victim, score = low[3], low[4] end
  if not victim then return end
  redis.call('ZREM', ck, victim)
  if dk then
    redis.call('ZREMRANGEBYLEX', dk, '[' .. victim .. SEP, '(' .. victim .. ' ')
  end
  redis.call('HINCRBY', xk, 'groups', 1)
  redis.call('HINCRBY', xk, 'events', math.floor(tonumber(score)))
  redis.call('PEXPIRE', xk, ttl)
  cut[xk] = (cut[xk] or 0) + 1
end

-- Counts set the TTL of a bucket key once per call and TTL, not once per
-- event: a batch adds to the same few keys over and over.
local expiring = {}

local function incr(ck, dk, xk, member, ttl)
  -- Scores start at 1 and only grow: 1 after the increment means the
  -- member is new (one command where ZSCORE, then ZINCRBY or ZADD, took two).
  if tonumber(redis.call('ZINCRBY', ck, 1, member)) == 1 then
    if redis.call('ZCARD', ck) > cap then evict(ck, dk, xk, member, ttl) end
  end
  if expiring[ck] ~= ttl then
    redis.call('PEXPIRE', ck, ttl)
    expiring[ck] = ttl
  end
end

local counted, dups = 0, 0
local i = 4
for _ = 1, n do
  local id, nops = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local fresh = redis.call('XACK', KEYS[1], grp, id) == 1
  if fresh then counted = counted + 1 else dups = dups + 1 end
  for _ = 1, nops do
    if fresh then
      local kind = ARGV[i]
      local ck, xk = KEYS[tonumber(ARGV[i + 1])], KEYS[tonumber(ARGV[i + 2])]
      local ttl, g, v = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
      if kind == 'd' then
        local dk, dcap = KEYS[tonumber(ARGV[i + 3])], tonumber(ARGV[i + 7])
        local s = redis.call('ZSCORE', ck, g)
        if (not s or tonumber(s) < dcap) and redis.call('ZADD', dk, 'NX', 0, g .. SEP .. v) == 1 then
          redis.call('PEXPIRE', dk, ttl)
          incr(ck, dk, xk, g, ttl)
        end
      else
        incr(ck, nil, xk, g, ttl)
      end
    end
    i = i + 8
  end
end
local chunk = 500
for c = i, #ARGV, chunk do
  local ids = {}
  for j = c, math.min(c + chunk - 1, #ARGV) do ids[#ids + 1] = ARGV[j] end
  local acked = redis.call('XACK', KEYS[1], grp, unpack(ids))
  counted = counted + acked
  dups = dups + #ids - acked
end
local out = {}
for k, v in pairs(cut) do
  out[#out + 1] = k
  out[#out + 1] = v
end
return {counted, dups, out}
`)

// Count counts the fresh entries of a batch and acknowledges them all
// (see "Counted once"), each bucket capped at maxGroups groups.
func (s *Redis) Count(ctx context.Context, entries []Entry, maxGroups int) (CountResult, error) {
	if len(entries) == 0 {
		return CountResult{}, nil
	}
	keys := []string{s.stream}
	index := map[string]int{}
	idx := func(k string) string {
		if k == "" {
			return "0"
		}
		i, ok := index[k]
		if !ok {
			keys = append(keys, k)
			i = len(keys)
			index[k] = i
		}
		return strconv.Itoa(i)
	}
	withOps := 0
	for _, e := range entries {
		if len(e.Ops) > 0 {
			withOps++
		}
	}
	args := make([]any, 0, 3+len(entries)+withOps*9)
	args = append(args, s.group, maxGroups, withOps)
	for _, e := range entries {
		if len(e.Ops) == 0 {
			continue
		}
		args = append(args, e.ID, len(e.Ops))
		for _, o := range e.Ops {
			args = append(args, string(o.kind), idx(o.c), idx(o.x), idx(o.d), o.ttl.Milliseconds(), o.group, o.value, o.dcap)
		}
	}
	for _, e := range entries {
		if len(e.Ops) == 0 {
			args = append(args, e.ID)
		}
	}
	res, err := countScript.Run(ctx, s.client, keys, args...).Slice()
	if err != nil {
		return CountResult{}, fmt.Errorf("count events: %w", err)
	}
	if len(res) != 3 {
		return CountResult{}, errors.New("count events: unexpected script reply")
	}
	out := CountResult{Counted: int(toInt(res[0])), Duplicates: int(toInt(res[1])), Cut: map[string]int{}}
	cut, _ := res[2].([]any)
	for i := 0; i+1 < len(cut); i += 2 {
		out.Cut[toString(cut[i])] += int(toInt(cut[i+1]))
	}
	return out, nil
}

// evalCountScript sums a count rule's buckets.
//
// KEYS: tmp, nb c keys, nb x keys.
// ARGV: nb, threshold, max candidates, top, n groups, groups…
// Returns {{group, value, …}, cut groups, cut events}.
var evalCountScript = redis.NewScript(`#!lua
local nb = tonumber(ARGV[1])
local maxc, top, ng = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local res = {}
if maxc > 0 or top > 0 then
  local ck = {}
  for i = 1, nb do ck[i] = KEYS[1 + i] end
  redis.call('ZUNIONSTORE', KEYS[1], nb, unpack(ck))
  local function add(list)
    for i = 1, #list, 2 do
      res[#res + 1] = list[i]
      res[#res + 1] = list[i + 1]
    end
  end
  if maxc > 0 then add(redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0, maxc)) end
  if top > 0 then add(redis.call('ZREVRANGE', KEYS[1], 0, top - 1, 'WITHSCORES')) end
  for i = 1, ng do
    local g = ARGV[5 + i]
    res[#res + 1] = g
    res[#res + 1] = redis.call('ZSCORE', KEYS[1], g) or '0'
  end
  redis.call('DEL', KEYS[1])
else
  for i = 1, ng do
    local g, sum = ARGV[5 + i], 0
    for b = 1, nb do sum = sum + (tonumber(redis.call('ZSCORE', KEYS[1 + b], g)) or 0) end
    res[#res + 1] = g
    res[#res + 1] = tostring(sum)
  end
end
local cg, ce = 0, 0
for i = 1, nb do
  local x = redis.call('HMGET', KEYS[1 + nb + i], 'groups', 'events')
  cg = cg + (tonumber(x[1]) or 0)
  ce = ce + (tonumber(x[2]) or 0)
end
return {res, cg, ce}
`)

// evalDistinctScript counts a distinct rule's values exactly for the
// candidate groups: those whose summed per-bucket counts (an upper bound)
// reach the threshold, the top ones by that bound, and the groups asked for.
//
// KEYS: tmp, nb c keys, nb d keys, nb x keys.
// ARGV: nb, threshold, max candidates, top, n groups, groups…
// Returns {{group, value, …}, cut groups, cut events}.
var evalDistinctScript = redis.NewScript(`#!lua
local nb = tonumber(ARGV[1])
local maxc, top, ng = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local SEP = '\31'
local cands, seen = {}, {}
local function cand(g)
  if not seen[g] then
    seen[g] = true
    cands[#cands + 1] = g
  end
end
if maxc > 0 or top > 0 then
  local ck = {}
  for i = 1, nb do ck[i] = KEYS[1 + i] end
  redis.call('ZUNIONSTORE', KEYS[1], nb, unpack(ck))
  if maxc > 0 then
    for _, g in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[2], 'LIMIT', 0, maxc)) do cand(g) end
  end
  if top > 0 then
    for _, g in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, top - 1)) do cand(g) end
  end
  redis.call('DEL', KEYS[1])
end
for i = 1, ng do cand(ARGV[5 + i]) end
local res = {}
for _, g in ipairs(cands) do
  local vals, n = {}, 0
  for b = 1, nb do
    for _, v in ipairs(redis.call('ZRANGEBYLEX', KEYS[1 + nb + b], '[' .. g .. SEP, '(' .. g .. ' ')) do
      if not vals[v] then
        vals[v] = true
        n = n + 1
      end
    end
  end
  res[#res + 1] = g
  res[#res + 1] = tostring(n)
end
local cg, ce = 0, 0
for i = 1, nb do
  local x = redis.call('HMGET', KEYS[1 + 2 * nb + i], 'groups', 'events')
  cg = cg + (tonumber(x[1]) or 0)
  ce = ce + (tonumber(x[2]) or 0)
end
return {res, cg, ce}
`)

// evalRatioScript returns numerator and denominator of a ratio rule for the
// groups with the most denominator events at or above min_events, and the
// groups asked for.
//
// KEYS: tmp c, tmp o, nb c keys, nb o keys, nb x keys.
// ARGV: nb, min events, max candidates, n groups, groups…
// Returns {{group, num, den, …}, cut groups, cut events}.
var evalRatioScript = redis.NewScript(`#!lua
local nb = tonumber(ARGV[1])
local maxc, ng = tonumber(ARGV[3]), tonumber(ARGV[4])
local ck, ok = {}, {}
for i = 1, nb do
  ck[i] = KEYS[2 + i]
  ok[i] = KEYS[2 + nb + i]
end
redis.call('ZUNIONSTORE', KEYS[1], nb, unpack(ck))
redis.call('ZUNIONSTORE', KEYS[2], nb, unpack(ok))
local res, seen = {}, {}
local function add(g, den)
  if seen[g] then return end
  seen[g] = true
  res[#res + 1] = g
  res[#res + 1] = redis.call('ZSCORE', KEYS[1], g) or '0'
  res[#res + 1] = den or redis.call('ZSCORE', KEYS[2], g) or '0'
end
if maxc > 0 then
  local list = redis.call('ZREVRANGEBYSCORE', KEYS[2], '+inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0, maxc)
  for i = 1, #list, 2 do add(list[i], list[i + 1]) end
end
for i = 1, ng do add(ARGV[4 + i], nil) end
redis.call('DEL', KEYS[1], KEYS[2])
local cg, ce = 0, 0
for i = 1, nb do
  local x = redis.call('HMGET', KEYS[2 + 2 * nb + i], 'groups', 'events')
  cg = cg + (tonumber(x[1]) or 0)
  ce = ce + (tonumber(x[2]) or 0)
end
return {res, cg, ce}
`)

// Eval returns a rule's values in one window for the query's groups.
func (s *Redis) Eval(ctx context.Context, q Query) (Result, error) {
	r := q.Rule
	var buckets []int64
	for b := q.Lo; b <= q.Hi; b++ {
		buckets = append(buckets, b)
	}
	keysOf := func(kind string) []string {
		out := make([]string, len(buckets))
		for i, b := range buckets {
			out[i] = s.ks.bucketKey(r, kind, b)
		}
		return out
	}
	nb := len(buckets)
	var (
		script *redis.Script
		keys   []string
		args   []any
	)
	switch r.Kind() {
	case rules.KindCount:
		script = evalCountScript
		keys = append([]string{s.ks.tmpKey(r, kindKeyCount)}, keysOf(kindKeyCount)...)
		keys = append(keys, keysOf(kindKeyCut)...)
		args = []any{nb, strconv.FormatFloat(q.Threshold, 'f', -1, 64), q.MaxCand, q.Top, len(q.Groups)}
	case rules.KindDistinct:
		script = evalDistinctScript
		keys = append([]string{s.ks.tmpKey(r, kindKeyCount)}, keysOf(kindKeyCount)...)
		keys = append(keys, keysOf(kindKeyDistinct)...)
		keys = append(keys, keysOf(kindKeyCut)...)
		args = []any{nb, strconv.FormatFloat(q.Threshold, 'f', -1, 64), q.MaxCand, q.Top, len(q.Groups)}
	case rules.KindRatio:
		script = evalRatioScript
		keys = []string{s.ks.tmpKey(r, kindKeyCount), s.ks.tmpKey(r, kindKeyOf)}
		keys = append(keys, keysOf(kindKeyCount)...)
		keys = append(keys, keysOf(kindKeyOf)...)
		keys = append(keys, keysOf(kindKeyCut)...)
		args = []any{nb, strconv.FormatFloat(r.MinDenominator(), 'f', -1, 64), q.MaxCand, len(q.Groups)}
	}
	for _, g := range q.Groups {
		args = append(args, g)
	}
	res, err := script.Run(ctx, s.client, keys, args...).Slice()
	if err != nil {
		return Result{}, fmt.Errorf("evaluate rule %s: %w", r.Name, err)
	}
	if len(res) != 3 {
		return Result{}, fmt.Errorf("evaluate rule %s: unexpected script reply", r.Name)
	}
	out := Result{CutGroups: toInt(res[1]), CutEvents: toInt(res[2])}
	list, _ := res[0].([]any)
	if r.Kind() == rules.KindRatio {
		for i := 0; i+2 < len(list); i += 3 {
			num, den := toFloat(list[i+1]), toFloat(list[i+2])
			gv := GroupValue{Group: toString(list[i]), Num: num, Den: den}
			if den > 0 {
				gv.Value = num / den
			}
			out.Values = append(out.Values, gv)
		}
		return out, nil
	}
	for i := 0; i+1 < len(list); i += 2 {
		out.Values = append(out.Values, GroupValue{Group: toString(list[i]), Value: toFloat(list[i+1])})
	}
	return out, nil
}

// ActiveAlerts returns the tenant's active alerts, ordered by AlertField.
func (s *Redis) ActiveAlerts(ctx context.Context) ([]ActiveAlert, error) {
	m, err := s.client.HGetAll(ctx, s.ks.alertsKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("read active alerts: %w", err)
	}
	out := make([]ActiveAlert, 0, len(m))
	for _, field := range slices.Sorted(maps.Keys(m)) {
		a, err := decodeAlertState(m[field])
		if err != nil {
			// A corrupt entry would never resolve: drop it.
			_ = s.client.HDel(ctx, s.ks.alertsKey(), field).Err()
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// The stored value is "<startsAt unix ns> <json>", so compare-and-delete can
// match the start without decoding JSON.
func encodeAlertState(a ActiveAlert) (string, error) {
	b, err := json.Marshal(a)
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(a.StartsAt.UnixNano(), 10) + " " + string(b), nil
}

func decodeAlertState(v string) (ActiveAlert, error) {
	_, js, ok := strings.Cut(v, " ")
	if !ok {
		return ActiveAlert{}, errors.New("malformed alert state")
	}
	var a ActiveAlert
	err := json.Unmarshal([]byte(js), &a)
	return a, err
}

// ClaimAlert stores a as active unless its rule/group already is.
func (s *Redis) ClaimAlert(ctx context.Context, a ActiveAlert) (bool, error) {
	v, err := encodeAlertState(a)
	if err != nil {
		return false, err
	}
	ok, err := s.client.HSetNX(ctx, s.ks.alertsKey(), AlertField(a.Rule, a.Group), v).Result()
	if err != nil {
		return false, fmt.Errorf("claim alert: %w", err)
	}
	return ok, nil
}

// putAlertScript overwrites an alert's state only if it still has the same start.
// KEYS: alerts. ARGV: field, start prefix, value.
var putAlertScript = redis.NewScript(`#!lua
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2] + 1) == ARGV[2] .. ' ' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
`)

// dropAlertScript deletes an alert's state only if it still has the same start.
// KEYS: alerts. ARGV: field, start prefix.
var dropAlertScript = redis.NewScript(`#!lua
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2] + 1) == ARGV[2] .. ' ' then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
`)

// PutAlert overwrites the state of an active alert that still has a's start.
func (s *Redis) PutAlert(ctx context.Context, a ActiveAlert) error {
	v, err := encodeAlertState(a)
	if err != nil {
		return err
	}
	start := strconv.FormatInt(a.StartsAt.UnixNano(), 10)
	if err := putAlertScript.Run(ctx, s.client, []string{s.ks.alertsKey()}, AlertField(a.Rule, a.Group), start, v).Err(); err != nil {
		return fmt.Errorf("update alert: %w", err)
	}
	return nil
}

// DropAlert removes the alert of rule/group if it still started at startsAt.
func (s *Redis) DropAlert(ctx context.Context, rule, group string, startsAt time.Time) (bool, error) {
	start := strconv.FormatInt(startsAt.UnixNano(), 10)
	n, err := dropAlertScript.Run(ctx, s.client, []string{s.ks.alertsKey()}, AlertField(rule, group), start).Int64()
	if err != nil {
		return false, fmt.Errorf("resolve alert: %w", err)
	}
	return n == 1, nil
}

// toInt reads a count from a script reply: an integer, or a number as a
// string (Lua numbers that went through tostring).
func toInt(v any) int64 { return int64(toFloat(v)) }

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int64:
		return float64(x)
	case string:
		f, _ := strconv.ParseFloat(x, 64)
		return f
	}
	return 0
}

func toString(v any) string {
	s, _ := v.(string)
	return s
}
