package audit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/inject"
)

// Keys name the Redis audit trail: a stream of entries and a hash holding
// its chain's ends, under one hash tag so that a script can touch both on
// Redis Cluster.
type Keys struct {
	Stream, Chain string
}

// KeysFor returns the keys under the hash tag tag.
func KeysFor(tag string) Keys {
	return Keys{Stream: "authpipe:{" + tag + "}:entries", Chain: "authpipe:{" + tag + "}:chain"}
}

// DefaultKeys are the deployment's audit keys: one stream for every
// replica, tenant and command (not under a tenant's keys).
var DefaultKeys = KeysFor("audit")

const (
	// redisTimeout bounds one append, retries included.
	redisTimeout = 2 * time.Second
	// casBackoff caps the random wait after an append lost to another
	// writer, so that writers in a race spread out.
	casBackoff = 20 * time.Millisecond
)

// appendScript appends one entry to the stream if the chain's last entry
// is still the one the writer chained it to (compare-and-append), trims
// the stream by age (MINID) and, when the trim removed entries from an
// intact head, records where the chain now starts.
//
// KEYS: stream, chain. ARGV: expected last hash, expected last seq, the
// entry's line, its hash, its seq, id milliseconds, MINID.
// Returns {1, stream id} when appended, {0, last hash, last seq} when
// another writer appended first.
var appendScript = redis.NewScript(`#!lua
local stream, chain = KEYS[1], KEYS[2]
local t = redis.call('TYPE', stream)['ok']
if t ~= 'none' and t ~= 'stream' then return redis.error_reply('WRONGTYPE the audit stream key does not hold a stream') end
t = redis.call('TYPE', chain)['ok']
if t ~= 'none' and t ~= 'hash' then return redis.error_reply('WRONGTYPE the audit chain key does not hold a hash') end
local cur = redis.call('HMGET', chain, 'last_hash', 'last_seq')
local curHash, curSeq = cur[1] or '', cur[2] or '0'
if curHash ~= ARGV[1] or curSeq ~= ARGV[2] then return {0, curHash, curSeq} end
local id = ARGV[6] .. '-*'
local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
if #newest == 1 then
  local ms = tonumber(string.match(newest[1][1], '^(%d+)-'))
  if ms > tonumber(ARGV[6]) then id = '*' end
end
-- The head is intact when the stream still starts where the chain record
-- says: only then does a trim move the recorded start (an entry deleted
-- at the head by hand stays visible to Verify).
local before = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
local startID = redis.call('HGET', chain, 'start_id')
local intact = (not startID) or (before ~= nil and before[1] == startID)
local newid = redis.call('XADD', stream, id, 'entry', ARGV[3])
local trimmed = redis.call('XTRIM', stream, 'MINID', ARGV[7])
redis.call('HSET', chain, 'last_hash', ARGV[4], 'last_seq', ARGV[5], 'last_id', newid)
if intact and (trimmed > 0 or not startID) then
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  local line
  for i = 1, #first[2], 2 do if first[2][i] == 'entry' then line = first[2][i + 1] end end
  local ok, e = pcall(cjson.decode, line or '')
  local seq, prev = '', ''
  if ok and type(e) == 'table' then
    seq = tostring(e['seq'] or '')
    if type(e['prev']) == 'string' then prev = e['prev'] end
  end
  redis.call('HSET', chain, 'start_id', first[1], 'start_seq', seq, 'start_prev', prev)
end
return {1, newid}
`)

// RedisSink appends entries to the Redis audit stream (Keys.Stream). The
// chain is the stream's: several writers (replicas, commands) append
// through a compare-and-append script that links each entry to the entry
// last appended by anyone, so the stream is one chain however many write.
// Each append trims, by MINID, entries older than the retention (from the
// head only) and records in Keys.Chain where the chain now starts
// (start_id, start_seq, start_prev) and ends (last_id, last_seq,
// last_hash), which Verify checks the stream against.
type RedisSink struct {
	client    redis.UniversalClient
	keys      Keys
	clock     clockwork.Clock
	retention time.Duration

	mu   sync.Mutex
	last link // the chain's end as last seen
}

// NewRedisSink returns the sink over keys (DefaultKeys in production),
// trimming entries older than retention; clock nil is the real clock.
func NewRedisSink(client redis.UniversalClient, keys Keys, retention time.Duration, clock clockwork.Clock) *RedisSink {
	inject.Defaults(nil, nil, &clock)
	return &RedisSink{client: client, keys: keys, clock: clock, retention: retention}
}

// Name implements Sink.
func (s *RedisSink) Name() string { return RedisSinkName }

// Append implements Sink.
func (s *RedisSink) Append(ctx context.Context, e Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisTimeout)
	defer cancel()
	now := s.clock.Now()
	ms := strconv.FormatInt(max(now.UnixMilli(), 1), 10)
	minID := strconv.FormatInt(max(now.Add(-s.retention).UnixMilli(), 0), 10)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			// Lost to another writer: wait a random while, growing.
			wait := time.Duration(rand.Int64N(int64(min(time.Millisecond<<min(attempt, 10), casBackoff)) + 1))
			select {
			case <-ctx.Done():
				return fmt.Errorf("append to the audit stream %s: other writers kept appending first: %w", s.keys.Stream, ctx.Err())
			case <-time.After(wait):
			}
		}
		e.Seq, e.Prev = s.last.seq+1, s.last.hash
		line, err := Marshal(e)
		if err != nil {
			return fmt.Errorf("encode audit entry: %w", err)
		}
		hash := Hash(line)
		res, err := appendScript.Run(ctx, s.client, []string{s.keys.Stream, s.keys.Chain},
			s.last.hash, strconv.FormatUint(s.last.seq, 10), line, hash, strconv.FormatUint(e.Seq, 10), ms, minID).Slice()
		if err != nil {
			return fmt.Errorf("append to the audit stream %s: %w", s.keys.Stream, err)
		}
		if ok, _ := res[0].(int64); ok == 1 {
			s.last = link{e.Seq, hash}
			return nil
		}
		if len(res) != 3 {
			return fmt.Errorf("append to the audit stream %s: unexpected reply %v", s.keys.Stream, res)
		}
		h, _ := res[1].(string)
		seq, err := strconv.ParseUint(fmt.Sprint(res[2]), 10, 64)
		if err != nil {
			return fmt.Errorf("audit chain %s: last_seq is not a number", s.keys.Chain)
		}
		s.last = link{seq, h} // another writer appended: chain to its entry
	}
}
