package buffer

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.etcd.io/bbolt"
)

// Seen reports, for each log_id, whether the tenant's dedupe record holds
// it: whether some Append (of any writer: poller, backfill, Log Streams
// receiver) stored it within the retention. It reads only.
//
// A writer that wants to know which of its logs it stored first asks Seen
// before its Append: the logs it stores are among those Seen reported
// absent, and when Append's count of new logs equals the number of those
// (each log_id counted once), they are exactly the ones it stored. A
// smaller count means another writer stored some of them in between.
func (b *Redis) Seen(ctx context.Context, ids []string) ([]bool, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	// One SMISMEMBER per hour bucket and one ZMSCORE of the previous
	// version's zset, in one pipeline (every key in the tenant's hash
	// slot). An id that is not an Auth0 log_id was never stored (Append
	// refuses it).
	type lookup struct {
		idx     []int
		members []any
		cmd     *redis.BoolSliceCmd
	}
	byHour := map[string]*lookup{}
	var valid []int
	var raw []any
	for i, id := range ids {
		h, packed, err := dedupeKey(id)
		if err != nil {
			continue
		}
		l := byHour[h]
		if l == nil {
			l = &lookup{}
			byHour[h] = l
		}
		l.idx, l.members = append(l.idx, i), append(l.members, packed)
		valid, raw = append(valid, i), append(raw, id)
	}
	seen := make([]bool, len(ids))
	if len(valid) == 0 {
		return seen, nil
	}
	var legacy *redis.Cmd
	_, err := b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for h, l := range byHour {
			l.cmd = p.SMIsMember(ctx, b.bucketKey(h), l.members...)
		}
		// ZMSCORE answers nil for an absent member; go-redis' ZMScore
		// turns nil into 0, so the raw reply is read instead.
		legacy = p.Do(ctx, append([]any{"ZMSCORE", b.seen}, raw...)...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read dedupe record of %d logs: %w", len(ids), err)
	}
	for _, l := range byHour {
		got := l.cmd.Val()
		if len(got) != len(l.idx) {
			return nil, fmt.Errorf("read dedupe record: %d answers for %d logs", len(got), len(l.idx))
		}
		for j, i := range l.idx {
			seen[i] = got[j]
		}
	}
	old, err := legacy.Slice()
	if err != nil || len(old) != len(valid) {
		return nil, fmt.Errorf("read dedupe record of %d logs: previous version's %s: %d answers, %v", len(ids), b.seen, len(old), err)
	}
	for j, i := range valid {
		seen[i] = seen[i] || old[j] != nil
	}
	return seen, nil
}

// bucketKey is the Redis key of the dedupe bucket of hour h (yyyymmddhh).
func (b *Redis) bucketKey(h string) string { return b.seen + ":" + h }

// dropBuckets forgets the dedupe buckets whose every log_id is older than
// cutoff (Trim): DEL of the buckets and their removal from the index in
// one transaction. Redis' own EXPIREAT (set by the append script) forgets
// them too when no authpipe trims. It returns how many buckets it dropped.
func (b *Redis) dropBuckets(ctx context.Context, cutoff time.Time) (int, error) {
	hours, err := b.client.ZRangeByScore(ctx, b.seenIndex, &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(cutoff.Add(-time.Hour).Unix(), 10),
	}).Result()
	if err != nil {
		return 0, fmt.Errorf("read dedupe index: %w", err)
	}
	var drop []string
	for _, h := range hours {
		if bucketExpired(h, cutoff) {
			drop = append(drop, h)
		}
	}
	if len(drop) == 0 {
		return 0, nil
	}
	_, err = b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		keys := make([]string, len(drop))
		members := make([]any, len(drop))
		for i, h := range drop {
			keys[i], members[i] = b.bucketKey(h), h
		}
		p.Del(ctx, keys...)
		p.ZRem(ctx, b.seenIndex, members...)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("drop %d dedupe buckets: %w", len(drop), err)
	}
	return len(drop), nil
}

// dedupeEntries counts the log_ids in the dedupe record: every bucket the
// index lists, and the previous version's zset.
func (b *Redis) dedupeEntries(ctx context.Context) (int64, error) {
	hours, err := b.client.ZRange(ctx, b.seenIndex, 0, -1).Result()
	if err != nil {
		return 0, fmt.Errorf("read dedupe index: %w", err)
	}
	var cards []*redis.IntCmd
	var legacy *redis.IntCmd
	_, err = b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, h := range hours {
			cards = append(cards, p.SCard(ctx, b.bucketKey(h)))
		}
		legacy = p.ZCard(ctx, b.seen)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count dedupe record: %w", err)
	}
	n := legacy.Val()
	for _, c := range cards {
		n += c.Val()
	}
	return n, nil
}

// Seen reports, for each log_id, whether the buffer's dedupe record holds
// it (see Redis.Seen). It reads only.
func (b *Bolt) Seen(_ context.Context, ids []string) ([]bool, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	seen := make([]bool, len(ids))
	err := b.view(func(tx *bbolt.Tx) error {
		d := dedupeOf(tx)
		for i, id := range ids {
			seen[i] = d.has(id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read dedupe record of %d logs: %w", len(ids), err)
	}
	return seen, nil
}
