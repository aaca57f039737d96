package buffer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
)

// Dead-letter operations: list with a cursor, replay into the stream, drop.
// Both backends keep the same contract (checked by the conformance suite,
// conformance_suite_test.go):
//
//   - Replay re-appends a dead letter's raw event to the tenant's stream as
//     a new entry, with its log_id, and deletes it from the dead letters in
//     the same step (one Lua script, one bbolt transaction): a dead letter is
//     never both replayed and kept, nor lost. The consumer groups deliver the
//     new entry like any other; the Segment messageId derives from tenant +
//     log_id, so Segment drops the copy if an earlier delivery had reached it
//     after all. Dedupe (the dedupe record) is bypassed on purpose: the log_id is
//     known already.
//   - ids empty means every dead letter there was when the call started
//     (those dead-lettered meanwhile stay), worked in batches of dlqBatch per
//     script or transaction, so neither Redis nor the bbolt file is held for
//     long. Unknown ids are skipped; the count says how many moved.
//   - Drop deletes dead letters for good, with the same selection rules.

// dlqBatch bounds the dead letters one script or transaction handles.
const dlqBatch = 500

// ErrInUse is what OpenBolt's error matches (errors.Is) when another
// process holds the buffer file: a running worker on the same data dir.
var ErrInUse = errors.New("buffer file in use by another process")

// inUseError keeps OpenBolt's message and matches ErrInUse.
type inUseError struct{ msg string }

func (e inUseError) Error() string        { return e.msg }
func (e inUseError) Is(target error) bool { return target == ErrInUse }

// BoltFile returns the path of a tenant's embedded buffer file in the data
// dir dir, whether or not it exists.
func BoltFile(dir, tenant string) string { return filepath.Join(dir, boltFileName(tenant)) }

// streamIDPattern is a complete stream entry id, "<ms>-<seq>".
var streamIDPattern = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// checkDLQIDs checks that every id is a complete dead-letter id.
func checkDLQIDs(ids []string) error {
	for _, id := range ids {
		if !streamIDPattern.MatchString(id) {
			return fmt.Errorf("dead-letter id %q: want <ms>-<seq>, as listed", id)
		}
		if _, err := parseID(id); err != nil {
			return fmt.Errorf("dead-letter id %q: %w", id, err)
		}
	}
	return nil
}

// ---- Redis ----

// dlqMoveScript replays or drops dead letters.
//
// KEYS: stream, dlq, behind.
// ARGV: op ("replay" | "drop"), sel ("ids" | "range"), then for "ids" the
// dead-letter ids, for "range" start (exclusive, "" for the first), end
// (inclusive) and count.
// A replayed dead letter is added to the stream (fields id, raw) and
// deleted from the dead letters; one without a log_id or raw event is left
// where it is. A replayed entry is out of log_id order: it is recorded in
// behind (stream id → its log_id's second), as appendScript does.
// Returns {done, last scanned id or ""}.
var dlqMoveScript = redis.NewScript(`#!lua
local function wrongtype(key, want)
  local t = redis.call('TYPE', key)['ok']
  return t ~= 'none' and t ~= want
end
if wrongtype(KEYS[1], 'stream') then return redis.error_reply('WRONGTYPE stream key does not hold a stream') end
if wrongtype(KEYS[2], 'stream') then return redis.error_reply('WRONGTYPE dead-letter key does not hold a stream') end
if wrongtype(KEYS[3], 'zset') then return redis.error_reply('WRONGTYPE behind key does not hold a sorted set') end
local op, sel = ARGV[1], ARGV[2]
local entries = {}
if sel == 'range' then
  local start = '-'
  if ARGV[3] ~= '' then start = '(' .. ARGV[3] end
  entries = redis.call('XRANGE', KEYS[2], start, ARGV[4], 'COUNT', ARGV[5])
else
  for i = 3, #ARGV do
    local e = redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i])
    if #e == 1 then entries[#entries + 1] = e[1] end
  end
end
local done, last = 0, ''
for _, e in ipairs(entries) do
  last = e[1]
  if op == 'drop' then
    done = done + redis.call('XDEL', KEYS[2], e[1])
  else
    local logid, raw
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == 'id' then logid = f[i + 1] elseif f[i] == 'raw' then raw = f[i + 1] end
    end
    -- XDEL first: an id given twice is replayed once.
    if logid and raw and #logid > 0 and #raw > 0 and redis.call('XDEL', KEYS[2], e[1]) == 1 then
      local sid = redis.call('XADD', KEYS[1], '*', 'id', logid, 'raw', raw)
      local sec = tonumber(logid:sub(4, 17))
      if #logid == 56 and sec then redis.call('ZADD', KEYS[3], sec, sid) end
      done = done + 1
    end
  end
end
return {done, last}
`)

// DeadLettersAfter lists up to count dead letters with ids after after ("" for
// the first), oldest first. Pass the last id listed to page on; an empty
// result is the end.
func (b *Redis) DeadLettersAfter(ctx context.Context, after string, count int) ([]DeadLetter, error) {
	count = pageSize(count)
	start := "-"
	if after != "" {
		if err := checkDLQIDs([]string{after}); err != nil {
			return nil, fmt.Errorf("list dead letters: %w", err)
		}
		start = "(" + after
	}
	msgs, err := b.client.XRangeN(ctx, b.dlq, start, "+", int64(count)).Result()
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	out := make([]DeadLetter, 0, len(msgs))
	for _, msg := range msgs {
		out = append(out, toDeadLetter(msg))
	}
	return out, nil
}

func toDeadLetter(msg redis.XMessage) DeadLetter {
	d := DeadLetter{
		ID:       msg.ID,
		StreamID: str(msg.Values["stream_id"]),
		LogID:    str(msg.Values["id"]),
		Raw:      []byte(str(msg.Values["raw"])),
		Reason:   str(msg.Values["reason"]),
	}
	d.Deliveries, _ = strconv.ParseInt(str(msg.Values["deliveries"]), 10, 64)
	if ms, err := strconv.ParseInt(str(msg.Values["failed_at"]), 10, 64); err == nil {
		d.FailedAt = time.UnixMilli(ms).UTC()
	}
	return d
}

// ReplayDeadLetters re-appends the dead letters ids (all of them when ids
// is empty) to the stream as new entries and deletes them from the dead
// letters, each batch in one script. It returns how many it replayed.
func (b *Redis) ReplayDeadLetters(ctx context.Context, ids []string) (int, error) {
	n, err := b.moveDeadLetters(ctx, "replay", ids, dlqBatch)
	return reportDLQ(b.log, b.m.replayed, "replay", "dead letters replayed", n, err)
}

// DropDeadLetters deletes the dead letters ids (all of them when ids is
// empty) for good. It returns how many it deleted.
func (b *Redis) DropDeadLetters(ctx context.Context, ids []string) (int, error) {
	n, err := b.moveDeadLetters(ctx, "drop", ids, dlqBatch)
	return reportDLQ(b.log, b.m.dropped, "drop", "dead letters dropped", n, err)
}

func (b *Redis) moveDeadLetters(ctx context.Context, op string, ids []string, batch int) (int, error) {
	keys := []string{b.stream, b.dlq, b.behind}
	if len(ids) > 0 {
		if err := checkDLQIDs(ids); err != nil {
			return 0, err
		}
		total := 0
		for chunk := range slices.Chunk(ids, batch) {
			args := make([]any, 0, 2+len(chunk))
			args = append(args, op, "ids")
			for _, id := range chunk {
				args = append(args, id)
			}
			n, _, err := runMove(ctx, b.client, keys, args)
			total += n
			if err != nil {
				return total, err
			}
		}
		return total, nil
	}
	// Everything dead-lettered up to now: the newest id bounds the walk, so
	// dead letters arriving meanwhile cannot keep it going.
	newest, err := b.client.XRevRangeN(ctx, b.dlq, "+", "-", 1).Result()
	if err != nil {
		return 0, fmt.Errorf("read newest dead letter: %w", err)
	}
	if len(newest) == 0 {
		return 0, nil
	}
	end, after, total := newest[0].ID, "", 0
	for {
		n, last, err := runMove(ctx, b.client, keys, []any{op, "range", after, end, batch})
		total += n
		if err != nil || last == "" || last == end {
			return total, err
		}
		after = last
	}
}

func runMove(ctx context.Context, client redis.UniversalClient, keys []string, args []any) (int, string, error) {
	res, err := dlqMoveScript.Run(ctx, client, keys, args...).Slice()
	if err != nil {
		return 0, "", err
	}
	if len(res) != 2 {
		return 0, "", fmt.Errorf("unexpected script reply %v", res)
	}
	n, _ := res[0].(int64)
	last, _ := res[1].(string)
	return int(n), last, nil
}

// ---- Bolt ----

// DeadLettersAfter lists up to count dead letters with ids after after ("" for
// the first), oldest first. Pass the last id listed to page on; an empty
// result is the end.
func (b *Bolt) DeadLettersAfter(_ context.Context, after string, count int) ([]DeadLetter, error) {
	count = pageSize(count)
	var from []byte // nil: Seek starts at the first key
	if after != "" {
		if err := checkDLQIDs([]string{after}); err != nil {
			return nil, fmt.Errorf("list dead letters: %w", err)
		}
		id, _ := parseID(after)
		from = id.succ().key()
	}
	var out []DeadLetter
	err := b.view(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bktDLQ).Cursor()
		for k, v := c.Seek(from); k != nil && len(out) < count; k, v = c.Next() {
			d, err := decodeDeadLetter(k, v)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	return out, nil
}

func decodeDeadLetter(k, v []byte) (DeadLetter, error) {
	var d boltDeadLetter
	if err := json.Unmarshal(v, &d); err != nil {
		return DeadLetter{}, fmt.Errorf("dead letter %s: %w", mustID(k), err)
	}
	return DeadLetter{
		ID: mustID(k).String(), StreamID: d.StreamID, LogID: d.LogID, Raw: d.Raw,
		Reason: d.Reason, Deliveries: d.Deliveries, FailedAt: time.UnixMilli(d.FailedAt).UTC(),
	}, nil
}

// ReplayDeadLetters re-appends the dead letters ids (all of them when ids
// is empty) to the stream as new entries and deletes them from the dead
// letters, each batch in one transaction. It returns how many it replayed.
func (b *Bolt) ReplayDeadLetters(ctx context.Context, ids []string) (int, error) {
	n, err := b.moveDeadLetters(ctx, true, ids, dlqBatch)
	if n > 0 {
		b.notify() // wake blocked readers: the replayed events are new entries
	}
	return reportDLQ(b.log, b.m.replayed, "replay", "dead letters replayed", n, err)
}

// DropDeadLetters deletes the dead letters ids (all of them when ids is
// empty) for good, each batch in one transaction. It returns how many it
// deleted.
func (b *Bolt) DropDeadLetters(ctx context.Context, ids []string) (int, error) {
	n, err := b.moveDeadLetters(ctx, false, ids, dlqBatch)
	return reportDLQ(b.log, b.m.dropped, "drop", "dead letters dropped", n, err)
}

func (b *Bolt) moveDeadLetters(ctx context.Context, replay bool, ids []string, batch int) (int, error) {
	if len(ids) > 0 {
		if err := checkDLQIDs(ids); err != nil {
			return 0, err
		}
		total := 0
		for chunk := range slices.Chunk(ids, batch) {
			keys := make([][]byte, len(chunk))
			for i, id := range chunk {
				sid, _ := parseID(id)
				keys[i] = sid.key()
			}
			n, err := b.moveTx(ctx, replay, func(*bbolt.Cursor) ([][]byte, error) { return keys, nil })
			total += n
			if err != nil {
				return total, err
			}
		}
		return total, nil
	}
	// Everything dead-lettered up to now (see Redis).
	var end []byte
	if err := b.view(func(tx *bbolt.Tx) error {
		if k, _ := tx.Bucket(bktDLQ).Cursor().Last(); k != nil {
			end = append([]byte(nil), k...)
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("read newest dead letter: %w", err)
	}
	if end == nil {
		return 0, nil
	}
	var after []byte
	total := 0
	for {
		var last []byte
		n, err := b.moveTx(ctx, replay, func(c *bbolt.Cursor) ([][]byte, error) {
			last = nil
			k, _ := c.First()
			if after != nil {
				k, _ = c.Seek(mustID(after).succ().key())
			}
			var keys [][]byte
			for ; k != nil && len(keys) < batch && string(k) <= string(end); k, _ = c.Next() {
				keys = append(keys, append([]byte(nil), k...))
			}
			if len(keys) > 0 {
				last = keys[len(keys)-1]
			}
			return keys, nil
		})
		total += n
		if err != nil || last == nil || string(last) == string(end) {
			return total, err
		}
		after = last
	}
}

// moveTx replays (or drops) the dead letters that pick selects, in one
// transaction. Selected keys that are not dead letters are skipped, as are
// dead letters without a log_id or raw event when replaying.
func (b *Bolt) moveTx(ctx context.Context, replay bool, pick func(*bbolt.Cursor) ([][]byte, error)) (int, error) {
	done := 0
	err := b.update(ctx, func(tx *bbolt.Tx) error {
		done = 0
		dlq, meta := tx.Bucket(bktDLQ), tx.Bucket(bktMeta)
		keys, err := pick(dlq.Cursor())
		if err != nil {
			return err
		}
		var last streamID
		if v := meta.Get(bkeyLast); v != nil {
			if last, err = idFromKey(v); err != nil {
				return fmt.Errorf("last stream id: %w", err)
			}
		}
		stream := tx.Bucket(bktStream)
		now := uint64(max(b.nowMS(), 0))
		for _, k := range keys {
			v := dlq.Get(k)
			if v == nil {
				continue
			}
			if replay {
				d, err := decodeDeadLetter(k, v)
				if err != nil {
					return err
				}
				if d.LogID == "" || len(d.LogID) > 255 || len(d.Raw) == 0 {
					continue
				}
				last = last.next(now)
				if err := stream.Put(last.key(), encodeEntry(d.LogID, d.Raw, nil)); err != nil {
					return err
				}
				if err := putBehind(tx, d.LogID, last); err != nil {
					return err
				}
			}
			if err := dlq.Delete(k); err != nil {
				return err
			}
			done++
		}
		if done == 0 {
			return errNoChange
		}
		if err := addCount(meta, -int64(done), bkeyDLQLen); err != nil {
			return err
		}
		if !replay {
			return nil
		}
		if err := meta.Put(bkeyLast, last.key()); err != nil {
			return err
		}
		return addCount(meta, int64(done), bkeyAdded, bkeyLength)
	})
	return done, err
}

// reportDLQ counts and logs what a replay or drop did, on both backends
// alike; a run that failed midway still reports the batches before it.
func reportDLQ(log *slog.Logger, done prometheus.Counter, op, msg string, n int, err error) (int, error) {
	if n > 0 {
		done.Add(float64(n))
		log.Info(msg, "count", n)
	}
	if err != nil {
		return n, fmt.Errorf("%s dead letters: %w", op, err)
	}
	return n, nil
}
