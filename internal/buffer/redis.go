package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// Key names inside a tenant's hash tag.
const (
	keyStream     = "stream"
	keyCheckpoint = "checkpoint"
	keySeen       = "seen"
	keyDLQ        = "dlq"
	keyReasons    = "reasons"
	keyBehind     = "behind"
	keyHead       = "head"
	keySeenIndex  = "seen:index" // the hours of the dedupe buckets; a bucket is seen:<yyyymmddhh>
)

const (
	defaultCount = 100
	// maxReasonBytes bounds a stored failure reason.
	maxReasonBytes = 1024
	// pendingPage is the XPENDING page size when looking up delivery counts.
	pendingPage = 1000
)

// Entry is one buffered event as a consumer sees it.
type Entry struct {
	ID         string // stream entry id, "ms-seq"
	LogID      string // Auth0 log_id
	Raw        []byte // the event's JSON as Auth0 sent it
	Deliveries int64  // times delivered, this delivery included

	fields []byte // the log's parsed fields as stored with it (auth0log.Log.Pack); nil if none were
}

// Log returns the entry's event with the fields parsed when it was
// buffered: read from the entry, without parsing its JSON, or, for an entry
// stored without them (by a version before they were stored, or a dead
// letter replayed as raw JSON), by decoding Raw once. An error means the
// entry holds no event authpipe can read (dead-letter it). The Log's Raw is
// e.Raw.
func (e Entry) Log() (auth0log.Log, error) {
	return auth0log.Unpack(e.LogID, e.fields, e.Raw)
}

// DeadLetter is one entry of the dead-letter stream.
type DeadLetter struct {
	ID         string // dead-letter stream entry id
	StreamID   string // id the entry had in the log stream
	LogID      string
	Raw        []byte
	Reason     string
	Deliveries int64 // times the entry was handed to a consumer
	FailedAt   time.Time
}

// Stats are a snapshot of a tenant's buffer as seen by one group.
type Stats struct {
	Length      int64 // entries in the stream (XLEN)
	Backlog     int64 // entries the group has not acknowledged: undelivered + pending
	Pending     int64 // entries delivered to the group, not yet acknowledged
	DeadLetters int64 // entries in the dead-letter stream
}

// Redis is the Redis Streams backend of one tenant's buffer. It is safe for
// concurrent use.
type Redis struct {
	client redis.UniversalClient
	cfg    Config
	log    *slog.Logger
	clock  clockwork.Clock
	m      *bufferMetrics
	fenced prometheus.Counter // appends refused by the fencing token
	loss   *lossWatch

	stream, checkpoint, seen, dlq, reasons, behind, head, seenIndex string

	margin time.Duration // dedupeMargin; shorter in tests of expiry

	mu      sync.Mutex
	cursors map[string]string // group → XAUTOCLAIM cursor
	room    int64             // MaxEvents − backlog at roomAt, less what this buffer appended since
	roomAt  time.Time         // when the backlog was read; zero: read it at the next Full
}

// fullRecheck bounds how long Full trusts its last reading of the backlog
// (see Full).
const fullRecheck = time.Second

// NewRedis returns the buffer of cfg.Tenant on client, which may be any
// UniversalClient (single node, Sentinel, Cluster). It registers the
// buffer's metrics on deps.Registerer; it does not talk to Redis.
func NewRedis(client redis.UniversalClient, cfg Config, deps Deps) (*Redis, error) {
	if client == nil {
		return nil, errors.New("new redis buffer: no redis client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new redis buffer: %w", err)
	}
	cfg = cfg.withDefaults()
	deps = deps.withDefaults()
	b := &Redis{
		client:  client,
		cfg:     cfg,
		log:     deps.Logger.With("component", "buffer", "tenant", cfg.Tenant),
		clock:   deps.Clock,
		cursors: make(map[string]string),
		margin:  dedupeMargin,
	}
	b.stream, b.checkpoint, b.seen = b.Key(keyStream), b.Key(keyCheckpoint), b.Key(keySeen)
	b.dlq, b.reasons, b.behind, b.head = b.Key(keyDLQ), b.Key(keyReasons), b.Key(keyBehind), b.Key(keyHead)
	b.seenIndex = b.Key(keySeenIndex)
	// The gauges first: registering them fails (rather than panics) when
	// this tenant's buffer metrics exist on the registry already.
	if err := registerGauges(deps.Registerer, cfg.Tenant, b.log, b.clock, b.gauges); err != nil {
		return nil, err
	}
	b.m = newMetrics(deps.Registerer, deps.Stages)
	b.fenced = newFenceCounter(deps.Registerer)
	b.loss = newLossWatch(deps.Registerer, b.log, b.clock)
	return b, nil
}

// Key returns the Redis key of one of the tenant's structures:
// "authpipe:{tenant}:"+name.
func (b *Redis) Key(name string) string { return "authpipe:{" + b.cfg.Tenant + "}:" + name }

// StreamKey returns the key of the tenant's log stream.
func (b *Redis) StreamKey() string { return b.stream }

// Client returns the Redis client the buffer uses.
func (b *Redis) Client() redis.UniversalClient { return b.client }

// Config returns the configuration in use, defaults applied.
func (b *Redis) Config() Config { return b.cfg }

// Ping checks that Redis answers.
func (b *Redis) Ping(ctx context.Context) error {
	if err := b.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis: %w", err)
	}
	return nil
}

// Checkpoint returns the stored checkpoint, "" when there is none yet.
func (b *Redis) Checkpoint(ctx context.Context) (string, error) {
	cp, err := b.client.Get(ctx, b.checkpoint).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read checkpoint: %w", err)
	}
	b.loss.noteCheckpoint(cp)
	return cp, nil
}

// Append stores a page of logs and the checkpoint that follows it, in one
// atomic script: logs whose log_id was stored before are skipped (dedupe),
// new ones are added to the stream in page order, and the checkpoint is set
// unless it would move backwards ("" leaves it as is). On error nothing was
// written. It returns how many logs were new.
//
// Append refuses (ErrDataLoss, nothing written) when the stored checkpoint
// is gone or older than one this process saw stored: Redis lost data, and
// the incident is handled (see CheckLoss) before the caller retries; and,
// for a page with a checkpoint, while a re-poll after lost data waits for
// the poller to take it (Resume).
func (b *Redis) Append(ctx context.Context, logs []auth0log.Log, checkpoint string) (int, error) {
	return b.appendPage(ctx, logs, checkpoint, nil)
}

// appendPage is Append, fenced when fence is not nil (see AppendFenced).
func (b *Redis) appendPage(ctx context.Context, logs []auth0log.Log, checkpoint string, fence *Fence) (int, error) {
	b.m.stage.Received.Add(float64(len(logs)))
	if checkpoint != "" && !b.loss.mayAdvance() {
		return 0, fmt.Errorf("append page of %d logs: %w: the poller has not yet taken the re-poll", len(logs), ErrDataLoss)
	}
	script, keys := appendScript, []string{b.stream, b.seen, b.checkpoint, b.behind, b.head}
	args := make([]any, 0, 6+3*len(logs))
	if fence != nil {
		if err := b.checkFence(*fence); err != nil {
			return 0, err
		}
		script, keys = fencedAppendScript, append(keys, fence.Key)
		args = append(args, fence.Token)
	}
	keys = append(keys, b.seenIndex)
	args = append(args, b.loss.expected(), checkpoint,
		int64((b.cfg.Retention + b.margin).Seconds()), int64(b.margin.Seconds()), len(logs))
	ids := make([]string, len(logs))
	hours := make(map[string]bool, 2)
	for i, l := range logs {
		// The log_ids were validated where the events were decoded
		// (auth0log); the script checks their format again for the
		// stream's own sake (see appendScript).
		h, err := idHour(l.ID)
		if err != nil {
			return 0, fmt.Errorf("append page: log %d: %w", i, err)
		}
		if len(l.Raw) == 0 {
			return 0, fmt.Errorf("append page: log %d (%s): empty raw event", i, l.ID)
		}
		if !hours[h] {
			hours[h] = true
			keys = append(keys, b.bucketKey(h))
		}
		args = append(args, l.ID, []byte(l.Raw), l.Pack())
		ids[i] = l.ID
	}
	if checkpoint == "" {
		// Behind the checkpoint (backfill): lower the delivered watermark
		// before the write, so a loss right after it polls them again.
		b.loss.noteBehind(behindFrom(ids))
	}
	res, err := script.Run(ctx, b.client, keys, args...).Int64Slice()
	if err != nil {
		b.forgetRoom() // Full asks Redis again: no page is fetched while it is down
		msg := err.Error()
		if fence != nil && strings.HasPrefix(msg, "FENCED ") {
			b.fenced.Inc()
			b.log.Warn("append refused: the writer's lease was taken over; nothing written",
				"token", fence.Token, "checkpoint", checkpoint)
			if cur, ok := fenceFound(msg); ok && cur < fence.Token {
				// The counter went backwards: lost with Redis' data.
				_, _, _ = b.check(ctx, observation{fence: cur})
			}
			return 0, fmt.Errorf("append page of %d logs: %w: %s", len(logs), ErrFenced, strings.TrimPrefix(msg, "FENCED "))
		}
		if strings.HasPrefix(msg, "LOST ") {
			_, _, cerr := b.check(ctx)
			return 0, errors.Join(fmt.Errorf("append page of %d logs: %w: %s", len(logs), ErrDataLoss, strings.TrimPrefix(msg, "LOST ")), cerr)
		}
		return 0, fmt.Errorf("append page of %d logs: %w", len(logs), err)
	}
	if len(res) != 2 {
		return 0, fmt.Errorf("append page: unexpected script reply %v", res)
	}
	added := int(res[0])
	b.mu.Lock()
	b.room -= int64(added)
	b.mu.Unlock()
	b.m.stage.Written.Add(float64(added))
	b.m.duplicates.Add(float64(len(logs) - added))
	if fence != nil {
		b.loss.noteFence(fence.Key, fence.Token)
	}
	if added > 0 {
		b.loss.noteStream()
	}
	if res[1] >= 0 {
		b.loss.noteCheckpoint(checkpoint)
	} else {
		b.log.Warn("checkpoint older than the stored one kept unchanged", "checkpoint", checkpoint)
	}
	return added, nil
}

// fenceFound reads the current fencing counter from a FENCED error: 0 when
// the counter is gone.
func fenceFound(msg string) (int64, bool) {
	i := strings.LastIndex(msg, ": ")
	if i < 0 {
		return 0, false
	}
	v := msg[i+2:]
	if v == "none" {
		return 0, true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// EnsureGroup creates the consumer group (and the stream) if missing. A new
// group starts at the beginning of the stream, so it sees every entry still
// buffered. The buffer remembers the group as one its consumers read with:
// should it go missing later, that is lost data (see CheckLoss), and the
// group is recreated where delivery stood.
func (b *Redis) EnsureGroup(ctx context.Context, group string) error {
	if group == "" {
		return errors.New("ensure group: empty group name")
	}
	if b.loss.knowsGroup(group) {
		if _, _, err := b.check(ctx); err != nil {
			return fmt.Errorf("create group %s: %w", group, err)
		}
	}
	err := b.client.XGroupCreateMkStream(ctx, b.stream, group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create group %s: %w", group, err)
	}
	b.loss.noteGroup(group)
	b.forgetRoom() // a new group starts with the whole stream as its backlog
	return nil
}

// Read delivers up to count new entries (XREADGROUP ">") to consumer,
// waiting up to block for some to arrive. block <= 0 does not wait; Read
// never sends BLOCK 0 (wait forever). A timeout returns no entries and no
// error. Entries stay pending until acknowledged.
func (b *Redis) Read(ctx context.Context, group, consumer string, count int, block time.Duration) ([]Entry, error) {
	count = pageSize(count)
	if block <= 0 {
		block = -1 // go-redis sends no BLOCK argument for a negative Block
	} else if block < time.Millisecond {
		block = time.Millisecond
	}
	msgs, err := b.readGroup(ctx, &redis.XReadGroupArgs{
		Group: group, Consumer: consumer, Streams: []string{b.stream, ">"},
		Count: int64(count), Block: block,
	})
	if err != nil {
		return nil, fmt.Errorf("read group %s: %w", group, err)
	}
	var out []Entry
	for _, msg := range msgs {
		e := toEntry(msg)
		e.Deliveries = 1
		out = append(out, e)
	}
	return out, nil
}

// readGroup runs XREADGROUP, again after regroup recreated a lost group.
// Nothing to read is no messages and no error.
func (b *Redis) readGroup(ctx context.Context, args *redis.XReadGroupArgs) ([]redis.XMessage, error) {
	res, err := b.client.XReadGroup(ctx, args).Result()
	if b.regroup(ctx, args.Group, err) {
		res, err = b.client.XReadGroup(ctx, args).Result()
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	var msgs []redis.XMessage
	for _, s := range res {
		msgs = append(msgs, s.Messages...)
	}
	return msgs, err
}

// ReadPending delivers again up to count entries of consumer's own pending
// list with ids after `after` ("0" for the first): what a restarted
// consumer held when it stopped. Pass the last returned id to page on; no
// entries means the list is done. Delivery counts are filled in (reading
// adds one); entries delivered more than MaxDeliveries times are
// dead-lettered instead of returned, and entries found deleted from the
// stream are counted as lost, logged at error and acknowledged (there is
// nothing left to deliver).
func (b *Redis) ReadPending(ctx context.Context, group, consumer, after string, count int) ([]Entry, error) {
	count = pageSize(count)
	if after == "" {
		after = "0"
	}
	// Keep reading while a whole page was dead-lettered or lost, so that an
	// empty result always means the end of the list.
	for {
		msgs, err := b.readGroup(ctx, &redis.XReadGroupArgs{
			Group: group, Consumer: consumer, Streams: []string{b.stream, after},
			Count: int64(count), Block: -1,
		})
		if err != nil {
			return nil, fmt.Errorf("read pending of group %s: %w", group, err)
		}
		if len(msgs) == 0 {
			return nil, nil
		}
		after = msgs[len(msgs)-1].ID
		var deleted []string
		kept := make([]redis.XMessage, 0, len(msgs))
		for _, msg := range msgs {
			if msg.Values == nil { // pending, but deleted from the stream
				deleted = append(deleted, msg.ID)
				continue
			}
			kept = append(kept, msg)
		}
		if len(deleted) > 0 {
			b.lost(group, deleted)
			// Drop them from the pending list so they neither hold back
			// trimming nor count as backlog.
			if err := b.ack(ctx, group, deleted, false); err != nil {
				return nil, err
			}
		}
		entries, err := b.settle(ctx, group, consumer, kept)
		if err != nil || len(entries) > 0 {
			return entries, err
		}
	}
}

// Ack acknowledges entries of group in one round trip (XACK of all ids and
// HDEL of their failure reasons, in one transaction).
func (b *Redis) Ack(ctx context.Context, group string, ids ...string) error {
	return b.ack(ctx, group, ids, true)
}

func (b *Redis) ack(ctx context.Context, group string, ids []string, count bool) error {
	if len(ids) == 0 {
		return nil
	}
	var xack *redis.IntCmd
	_, err := b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		xack = p.XAck(ctx, b.stream, group, ids...)
		p.HDel(ctx, b.reasons, ids...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("ack %d entries of group %s: %w", len(ids), group, err)
	}
	if count {
		b.m.stage.Acked.Add(float64(xack.Val()))
	}
	return nil
}

// Touch tells Redis that consumer still works on the entries: it resets
// their idle time (XCLAIM min-idle 0 JUSTID), so Reclaim leaves them alone,
// without adding to their delivery count. Entries no longer pending are
// ignored.
func (b *Redis) Touch(ctx context.Context, group, consumer string, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	args := &redis.XClaimArgs{Stream: b.stream, Group: group, Consumer: consumer, MinIdle: 0, Messages: ids}
	err := b.client.XClaimJustID(ctx, args).Err()
	if b.regroup(ctx, group, err) {
		err = b.client.XClaimJustID(ctx, args).Err()
	}
	if err != nil {
		return fmt.Errorf("touch %d entries of group %s: %w", len(ids), group, err)
	}
	return nil
}

// Reclaim takes over up to count entries of group that have been pending
// (with any consumer) for at least minIdle, and delivers them to consumer
// (XAUTOCLAIM). Successive calls walk the whole pending list. Delivery
// counts are filled in; entries delivered more than MaxDeliveries times are
// moved to the dead-letter stream with the reason "delivered N times without
// acknowledgement; last error: …" and not returned. Pending entries found
// deleted from the stream are counted in authpipe_buffer_lost_total and
// logged at error.
func (b *Redis) Reclaim(ctx context.Context, group, consumer string, minIdle time.Duration, count int) ([]Entry, error) {
	count = pageSize(count)
	b.mu.Lock()
	start := b.cursors[group]
	b.mu.Unlock()
	if start == "" {
		start = "0-0"
	}
	args := &redis.XAutoClaimArgs{
		Stream: b.stream, Group: group, Consumer: consumer,
		MinIdle: minIdle, Start: start, Count: int64(count),
	}
	msgs, next, deleted, err := b.client.XAutoClaimWithDeleted(ctx, args).Result()
	if b.regroup(ctx, group, err) {
		args.Start = "0-0"
		msgs, next, deleted, err = b.client.XAutoClaimWithDeleted(ctx, args).Result()
	}
	if err != nil {
		return nil, fmt.Errorf("reclaim entries of group %s: %w", group, err)
	}
	b.mu.Lock()
	b.cursors[group] = next
	b.mu.Unlock()
	if len(deleted) > 0 {
		b.lost(group, deleted) // XAUTOCLAIM already dropped them from the pending list
	}
	return b.settle(ctx, group, consumer, msgs)
}

// settle fills in delivery counts of entries just delivered to consumer from
// its pending list and dead-letters those delivered too often. Entries no
// longer pending with consumer (acknowledged or claimed meanwhile) are left
// out.
func (b *Redis) settle(ctx context.Context, group, consumer string, msgs []redis.XMessage) ([]Entry, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	counts, err := b.deliveries(ctx, group, consumer, msgs[0].ID, msgs[len(msgs)-1].ID, len(msgs))
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(msgs))
	for _, msg := range msgs {
		n, ok := counts[msg.ID]
		if !ok {
			continue
		}
		e := toEntry(msg)
		e.Deliveries = n
		// n counts this delivery too: n-1 earlier deliveries went unacknowledged.
		if n-1 >= int64(b.cfg.MaxDeliveries) {
			if _, err := b.deadLetter(ctx, group, e, "", "max"); err != nil {
				return nil, err
			}
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// deliveries returns the delivery count of consumer's pending entries with
// ids from first to last (XPENDING, extended form).
func (b *Redis) deliveries(ctx context.Context, group, consumer, first, last string, want int) (map[string]int64, error) {
	counts := make(map[string]int64, want)
	start := first
	for {
		res, err := b.client.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: b.stream, Group: group, Start: start, End: last, Count: pendingPage, Consumer: consumer,
		}).Result()
		if err != nil {
			return nil, fmt.Errorf("read delivery counts of group %s: %w", group, err)
		}
		for _, p := range res {
			counts[p.ID] = p.RetryCount
		}
		if len(res) < pendingPage {
			return counts, nil
		}
		start = "(" + res[len(res)-1].ID
	}
}

func (b *Redis) lost(group string, ids []string) {
	b.m.lost.Add(float64(len(ids)))
	b.log.Error("pending entries deleted from the stream before acknowledgement: events lost",
		"group", group, "count", len(ids), "ids", ids)
}

// NoteFailure records why delivering an entry failed; the last reason noted
// becomes the dead-letter reason if the entry runs out of deliveries. Ack
// and DeadLetter remove it.
func (b *Redis) NoteFailure(ctx context.Context, id, reason string) error {
	if err := b.client.HSet(ctx, b.reasons, id, truncate(reason)).Err(); err != nil {
		return fmt.Errorf("note failure of entry %s: %w", id, err)
	}
	return nil
}

// DeadLetter moves a pending entry of group to the dead-letter stream with
// reason, acknowledging it, in one script. The log_id and raw event are
// taken from the stream (e's are used only if the entry is gone). An entry
// no longer pending (acknowledged meanwhile) is left alone. Start reason
// with a kind (see Reason) to count it under that kind.
func (b *Redis) DeadLetter(ctx context.Context, group string, e Entry, reason string) error {
	_, err := b.deadLetter(ctx, group, e, truncate(reason), "given")
	return err
}

func (b *Redis) deadLetter(ctx context.Context, group string, e Entry, reason, mode string) (bool, error) {
	run := func() ([]any, error) {
		return deadLetterScript.Run(ctx, b.client, []string{b.stream, b.dlq, b.reasons},
			group, e.ID, e.LogID, e.Raw, reason, b.clock.Now().UnixMilli(), mode).Slice()
	}
	res, err := run()
	if b.regroup(ctx, group, err) {
		res, err = run()
	}
	if err != nil {
		return false, fmt.Errorf("dead-letter entry %s of group %s: %w", e.ID, group, err)
	}
	if len(res) == 0 || res[0] != int64(1) {
		return false, nil
	}
	kind := ReasonMaxDeliveries
	if mode != "max" {
		kind = reasonKind(reason)
	}
	b.m.deadLetters.WithLabelValues(kind).Inc()
	b.m.stage.Failed.Inc()
	var deliveries int64
	if len(res) > 1 {
		deliveries, _ = res[1].(int64)
	}
	b.log.Warn("entry moved to dead letters", "group", group, "id", e.ID, "log_id", e.LogID,
		"kind", kind, "deliveries", deliveries)
	return true, nil
}

// DeadLetters lists up to count dead letters, oldest first
// (DeadLettersAfter pages on).
func (b *Redis) DeadLetters(ctx context.Context, count int) ([]DeadLetter, error) {
	return b.DeadLettersAfter(ctx, "", count)
}

// Trim removes from the stream every entry that every consumer group has
// acknowledged, but never one still pending in a group or not yet
// delivered to a group: it trims by MINID = the smallest of every group's
// oldest pending id and every group's first undelivered id (just after its
// last-delivered-id), computed and applied in one script. While the stream
// has no group only entries older than the retention go. It also forgets
// the dedupe buckets (and the previous version's zset entries) whose log_ids
// are all older than the retention (Auth0 no longer serves those). It
// returns how many stream entries it removed. authpipe run calls it every
// TrimInterval.
func (b *Redis) Trim(ctx context.Context) (int64, error) {
	now := b.clock.Now()
	cutoff := max(now.Add(-b.cfg.Retention).UnixMilli(), 0)
	res, err := trimScript.Run(ctx, b.client, []string{b.stream, b.seen}, cutoff).Slice()
	if err != nil {
		return 0, fmt.Errorf("trim buffer: %w", err)
	}
	if len(res) != 3 {
		return 0, fmt.Errorf("trim buffer: unexpected script reply %v", res)
	}
	trimmed, _ := res[0].(int64)
	removed, _ := res[1].(int64)
	minID, _ := res[2].(string)
	b.m.trimmed.Add(float64(trimmed))
	dropped, err := b.dropBuckets(ctx, now.Add(-b.cfg.Retention))
	if err != nil {
		return trimmed, fmt.Errorf("trim buffer: %w", err)
	}
	if minID == "" && trimmed == 0 {
		b.log.Debug("buffer trim skipped the stream", "seen_removed", removed, "buckets_dropped", dropped)
	} else {
		b.log.Debug("buffer trimmed", "minid", minID, "trimmed", trimmed, "seen_removed", removed, "buckets_dropped", dropped)
	}
	return trimmed, nil
}

// snapshot is one consistent read of the figures behind Stats and Full.
type snapshot struct {
	length, deadLetters int64
	groups              []redis.XInfoGroup
}

func (b *Redis) snapshot(ctx context.Context) (snapshot, error) {
	var xlen, dlen *redis.IntCmd
	var groups *redis.XInfoGroupsCmd
	_, err := b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		xlen = p.XLen(ctx, b.stream)
		dlen = p.XLen(ctx, b.dlq)
		groups = p.XInfoGroups(ctx, b.stream)
		return nil
	})
	var s snapshot
	if xlen == nil || xlen.Err() != nil || dlen.Err() != nil {
		if err == nil {
			err = errors.New("no reply")
		}
		return s, fmt.Errorf("read buffer stats: %w", err)
	}
	s.length, s.deadLetters = xlen.Val(), dlen.Val()
	if gerr := groups.Err(); gerr != nil {
		if !strings.Contains(gerr.Error(), "no such key") {
			return s, fmt.Errorf("read buffer stats: consumer groups: %w", gerr)
		}
		return s, nil // no stream yet: no groups
	}
	s.groups = groups.Val()
	return s, nil
}

// backlog is the group's undelivered plus pending entries. Redis 7.0 does
// not always know the lag (undelivered count) and XINFO GROUPS then reports
// it as nil (-1 here):
//   - after every restart that loads the AOF, and on replicas: XREADGROUP
//     is persisted as XCLAIM … LASTID, which does not carry the group's
//     entries-read counter;
//   - after XDEL inside the undelivered range, or for a group set to an
//     arbitrary id.
//
// Redis knows the lag again once the group has read to the end of the
// stream. Counting it exactly meanwhile would mean walking the undelivered
// entries (XRANGE, O(backlog) per call), so the backlog is then the stream
// length: an upper bound (undelivered + pending ≤ XLEN unless pending entries
// were lost) that includes acknowledged entries kept for retention. Full
// and the backlog gauge err on the early side until the group catches up;
// they never under-report.
func backlog(g redis.XInfoGroup, length int64) int64 {
	if g.Lag < 0 {
		return max(length, g.Pending)
	}
	return g.Lag + g.Pending
}

// aggregate returns the backlog of the slowest group (the stream length
// when there is no group: nothing has been delivered) and the pending
// entries of all groups.
func (s snapshot) aggregate() (maxBacklog, pending int64) {
	if len(s.groups) == 0 {
		return s.length, 0
	}
	for _, g := range s.groups {
		maxBacklog = max(maxBacklog, backlog(g, s.length))
		pending += g.Pending
	}
	return maxBacklog, pending
}

// Stats reports the stream length, the group's backlog (undelivered +
// pending) and pending entries, and the dead letters. For a group that does
// not exist yet, everything in the stream is backlog. When Redis 7.0 does
// not know the group's lag (after a Redis restart or on a replica, until the
// group has read to the end of the stream; after XDEL), Backlog is the stream
// length: an upper bound, never an under-count.
func (b *Redis) Stats(ctx context.Context, group string) (Stats, error) {
	s, err := b.snapshot(ctx)
	if err != nil {
		return Stats{}, err
	}
	st := Stats{Length: s.length, DeadLetters: s.deadLetters, Backlog: s.length}
	for _, g := range s.groups {
		if g.Name == group {
			st.Backlog, st.Pending = backlog(g, s.length), g.Pending
		}
	}
	return st, nil
}

// Full reports whether the slowest group's backlog (the stream length while
// there is no group) has reached MaxEvents; always false when MaxEvents is 0.
// The poller pauses while it is full: Auth0 keeps the logs meanwhile.
//
// The poller asks before every page, and reading the backlog is a round
// trip on the path from one page to the next (about 14 % of the catch-up rate,
// BENCHMARKS.md). Between appends the backlog only shrinks (forwarders
// acknowledge), so while the last reading left room for more than this
// buffer has appended since, Full answers false without asking, for at
// most fullRecheck. Other writers (a backfill in another process, a group
// created elsewhere) are seen within fullRecheck; an append error or a
// group created here makes the next Full ask again.
func (b *Redis) Full(ctx context.Context) (bool, error) {
	if b.cfg.MaxEvents <= 0 {
		return false, nil
	}
	now := b.clock.Now()
	b.mu.Lock()
	known := !b.roomAt.IsZero() && b.room > 0 && now.Sub(b.roomAt) < fullRecheck
	b.mu.Unlock()
	if known {
		return false, nil
	}
	s, err := b.snapshot(ctx)
	if err != nil {
		return false, err
	}
	backlog, _ := s.aggregate()
	b.mu.Lock()
	b.room, b.roomAt = b.cfg.MaxEvents-backlog, now
	b.mu.Unlock()
	return backlog >= b.cfg.MaxEvents, nil
}

// forgetRoom makes the next Full read the backlog.
func (b *Redis) forgetRoom() {
	b.mu.Lock()
	b.roomAt = time.Time{}
	b.mu.Unlock()
}

// pageSize is count, or defaultCount when count is not positive.
func pageSize(count int) int {
	if count <= 0 {
		return defaultCount
	}
	return count
}

func toEntry(msg redis.XMessage) Entry {
	e := Entry{ID: msg.ID, LogID: str(msg.Values["id"]), Raw: []byte(str(msg.Values["raw"]))}
	if f := str(msg.Values["f"]); f != "" {
		e.fields = []byte(f)
	}
	return e
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// truncate bounds a reason to maxReasonBytes without splitting a character.
func truncate(s string) string {
	if len(s) <= maxReasonBytes {
		return s
	}
	cut := maxReasonBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
