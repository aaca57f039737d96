package buffer

import (
	"context"
	"fmt"

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
	args := make([]any, 0, 2+len(ids))
	args = append(args, "ZMSCORE", b.seen)
	for _, id := range ids {
		args = append(args, id)
	}
	// ZMSCORE answers nil for an absent member; go-redis' ZMScore turns nil
	// into 0, so the raw reply is read instead.
	res, err := b.client.Do(ctx, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("read dedupe record of %d logs: %w", len(ids), err)
	}
	if len(res) != len(ids) {
		return nil, fmt.Errorf("read dedupe record: %d answers for %d logs", len(res), len(ids))
	}
	seen := make([]bool, len(ids))
	for i, v := range res {
		seen[i] = v != nil
	}
	return seen, nil
}

// Seen reports, for each log_id, whether the buffer's dedupe record holds
// it (see Redis.Seen). It reads only.
func (b *Bolt) Seen(_ context.Context, ids []string) ([]bool, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	seen := make([]bool, len(ids))
	err := b.view(func(tx *bbolt.Tx) error {
		bkt := tx.Bucket(bktSeen)
		for i, id := range ids {
			seen[i] = bkt.Get([]byte(id)) != nil
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read dedupe record of %d logs: %w", len(ids), err)
	}
	return seen, nil
}
