package buffer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// behindCleanup bounds the acknowledged entries one survey removes from
// the behind set.
const behindCleanup = 1000

// dedupeSlack: the newest entry's log_id is checked against the dedupe
// record only while it is dated this much inside the retention, clear of
// Trim forgetting it.
const dedupeSlack = time.Hour

// surveyScript reads, in one step, what loss detection and the delivered
// watermark need, and drops acknowledged entries from the behind set.
//
// KEYS: stream, head, checkpoint, behind, and the poller lease's fencing
// counter when known.
// ARGV: unused; the most behind entries to drop.
// Returns {checkpoint, stream exists (0/1), {groups}, first unacknowledged
// id, its log_id, newest id, its log_id, head (the highest log_id ever
// added), lowest second behind, fencing counter ("" when not asked)}.
// Whether the dedupe record holds the newest log_id is asked after it
// (Seen): the buckets' keys depend on what it read, and the record only
// loses log_ids by the retention, which dedupeSlack keeps clear of.
var surveyScript = redis.NewScript(`#!lua
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  if am ~= bm then return am < bm end
  return as < bs
end
local function field(f, name)
  for i = 1, #f, 2 do
    if f[i] == name then return f[i + 1] end
  end
  return ''
end
local cp = redis.call('GET', KEYS[3]) or ''
local exists = redis.call('TYPE', KEYS[1])['ok'] == 'stream'
local groups, first, firstlog, newest, newestlog = {}, '', '', '', ''
if exists then
  local cand
  local function consider(id)
    if id and id ~= '' and (not cand or before(id, cand)) then cand = id end
  end
  local gs = redis.call('XINFO', 'GROUPS', KEYS[1])
  for _, g in ipairs(gs) do
    local name, pending, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1]
      elseif g[i] == 'pending' then pending = g[i + 1]
      elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    groups[#groups + 1] = name
    local nxt = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
    if #nxt > 0 then consider(nxt[1][1]) end
    if pending and pending > 0 then consider(redis.call('XPENDING', KEYS[1], name)[2]) end
  end
  local e = {}
  if #gs == 0 then
    e = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  elseif cand then
    e = redis.call('XRANGE', KEYS[1], cand, '+', 'COUNT', 1)
  end
  if #e > 0 then first, firstlog = e[1][1], field(e[1][2], 'id') end
  local n = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #n > 0 then newest, newestlog = n[1][1], field(n[1][2], 'id') end
end
local low = ''
if redis.call('TYPE', KEYS[4])['ok'] == 'zset' then
  local removed, most = 0, tonumber(ARGV[2])
  while true do
    local z = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    if #z == 0 then break end
    if removed < most and (first == '' or before(z[1], first)) then
      redis.call('ZREM', KEYS[4], z[1])
      removed = removed + 1
    else
      low = string.format('%014.0f', tonumber(z[2]))
      break
    end
  end
end
local fence = ''
if #KEYS >= 5 then fence = redis.call('GET', KEYS[5]) or '0' end
local head = redis.call('GET', KEYS[2]) or ''
return {cp, exists and 1 or 0, groups, first, firstlog, newest, newestlog, head, low, fence}
`)

// survey reads the buffer's state for loss detection (surveyScript).
func (b *Redis) survey(ctx context.Context, fenceKey string) (survey, error) {
	keys := []string{b.stream, b.head, b.checkpoint, b.behind}
	if fenceKey != "" {
		keys = append(keys, fenceKey)
	}
	res, err := surveyScript.Run(ctx, b.client, keys, "", behindCleanup).Slice()
	if err != nil {
		return survey{}, fmt.Errorf("survey buffer: %w", err)
	}
	if len(res) != 10 {
		return survey{}, fmt.Errorf("survey buffer: unexpected script reply %v", res)
	}
	sv := survey{
		checkpoint: str(res[0]),
		stream:     res[1] == int64(1),
		groups:     map[string]bool{},
		first:      str(res[3]),
		firstLog:   str(res[4]),
		newest:     str(res[5]),
		newestLog:  str(res[6]),
	}
	if err := b.surveyDedupe(ctx, &sv, str(res[7])); err != nil {
		return survey{}, err
	}
	if low := str(res[8]); low != "" {
		sv.behindLow = secondFrom(low)
	}
	groups, _ := res[2].([]any)
	for _, g := range groups {
		sv.groups[str(g)] = true
	}
	if fenceKey != "" {
		n, err := strconv.ParseInt(str(res[9]), 10, 64)
		if err != nil {
			return survey{}, fmt.Errorf("survey buffer: fencing counter %q: %w", str(res[9]), err)
		}
		sv.fence, sv.fenceRead = n, true
	}
	return sv, nil
}

// surveyDedupe asks whether the dedupe record holds the log_id of the
// newest stream entry — or, when acknowledged entries have all left the
// stream, the highest log_id ever added (head) — while it is dated
// dedupeSlack inside the retention, clear of Trim and EXPIREAT forgetting
// it.
func (b *Redis) surveyDedupe(ctx context.Context, sv *survey, head string) error {
	ref := sv.newestLog
	if ref == "" {
		ref = head
	}
	t, err := auth0log.IDTime(ref)
	if err != nil || t.Before(b.clock.Now().Add(-b.cfg.Retention+dedupeSlack)) {
		return nil
	}
	seen, err := b.Seen(ctx, []string{ref})
	if err != nil {
		return fmt.Errorf("survey buffer: %w", err)
	}
	sv.dedupeRef, sv.dedupeMissing = ref, !seen[0]
	return nil
}

// CheckLoss looks for signs that Redis lost data since this process last
// looked — a checkpoint gone or older than one seen stored, the stream
// gone, a consumer group of this process gone, the dedupe record without
// the newest entry's log_id, the poller lease's fencing counter below a
// token this process wrote with — and makes one incident of whatever it
// finds: counted in authpipe_buffer_data_loss_total, logged at error with
// what was found and the window polled again, consumer groups recreated
// where delivery stood. It also refreshes the delivered watermark. An
// error means Redis could not be surveyed (down, slow): never a sign of
// loss. authpipe run calls it every two seconds per tenant; reads that
// meet NOGROUP and appends that find the checkpoint gone call it at once.
func (b *Redis) CheckLoss(ctx context.Context) error {
	_, _, err := b.check(ctx)
	return err
}

// check is CheckLoss with observations made elsewhere; it returns the
// survey and the incident it opened, if any.
func (b *Redis) check(ctx context.Context, obs ...observation) (survey, *Incident, error) {
	w := b.loss
	w.checkMu.Lock()
	defer w.checkMu.Unlock()
	obs = append(obs, w.takeObservations()...)
	snap := w.snapshot()
	sv, err := b.survey(ctx, snap.fenceKey)
	if err != nil {
		w.putBack(obs)
		return survey{}, nil, err
	}
	var inc *Incident
	if found := observe(snap, sv, obs); len(found) > 0 {
		inc = w.open(snap, found)
	}
	err = b.restoreGroups(ctx, snap, &sv)
	w.absorb(snap, sv)
	return sv, inc, err
}

// restoreGroups recreates the groups of this process that sv found gone:
// where delivery stood when the stream survived, else at its start.
func (b *Redis) restoreGroups(ctx context.Context, snap memory, sv *survey) error {
	var errs []error
	for _, g := range slices.Sorted(maps.Keys(snap.groups)) {
		if sv.groups[g] {
			continue
		}
		at, err := b.restorePoint(ctx, snap, *sv)
		if err == nil {
			err = b.client.XGroupCreateMkStream(ctx, b.stream, g, at).Err()
			if err != nil && strings.HasPrefix(err.Error(), "BUSYGROUP") {
				err = nil // another replica recreated it
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("recreate consumer group %s: %w", g, err))
			continue
		}
		sv.groups[g], sv.stream = true, true
		b.mu.Lock()
		delete(b.cursors, g) // Reclaim walks the new pending list from its start
		b.mu.Unlock()
		b.forgetRoom()
		b.log.Warn("consumer group recreated after lost data", "group", g, "after_entry", at)
	}
	return errors.Join(errs...)
}

// restorePoint is where a recreated group starts delivering: at the first
// entry not acknowledged by every group when the last survey ran, when the
// stream still holds it; after the newest entry then if every entry had
// been acknowledged; otherwise (the stream is gone or new) at the start of
// what the stream holds now. It returns the id the group counts as
// delivered.
func (b *Redis) restorePoint(ctx context.Context, snap memory, sv survey) (string, error) {
	if !sv.stream || !snap.surveyed {
		return "0", nil
	}
	id, logID, at := snap.newest, snap.newestLog, snap.newest
	if snap.first != "" {
		id, logID, at = snap.first, snap.firstLog, predID(snap.first)
	}
	if id == "" {
		return "0", nil
	}
	msgs, err := b.client.XRange(ctx, b.stream, id, id).Result()
	if err != nil {
		return "", fmt.Errorf("read entry %s: %w", id, err)
	}
	if len(msgs) == 1 && str(msgs[0].Values["id"]) == logID {
		return at, nil // the stream still holds it
	}
	return "0", nil
}

// predID is the largest stream id before id ("0" for none).
func predID(id string) string {
	s, err := parseID(id)
	if err != nil || (s.ms == 0 && s.seq == 0) {
		return "0"
	}
	return s.pred().String()
}

// Resume tells the poller where to continue: the stored checkpoint; after
// lost data, the point up to which every event was known to be delivered
// (the whole of Auth0's retention when nothing was known), until the
// stored checkpoint has passed the lost window. since is the Generation of
// the poller's last Position (0 at first). It checks for lost data first.
func (b *Redis) Resume(ctx context.Context, since uint64) (Position, error) {
	sv, _, err := b.check(ctx)
	if err != nil {
		return Position{}, fmt.Errorf("resume: %w", err)
	}
	return b.loss.position(sv.checkpoint, since), nil
}

// LossGeneration is the number of data-loss incidents this buffer has
// found: when it changes, the poller asks Resume where to continue.
func (b *Redis) LossGeneration() uint64 { return b.loss.generation() }

// LastIncident returns the last data-loss incident this process found.
func (b *Redis) LastIncident() (Incident, bool) { return b.loss.lastIncident() }

// ObserveFence reports a fencing counter found below a token this process
// held (the poller lease saw it while acquiring; it must not block): the
// next check counts it as lost data unless an incident already did.
func (b *Redis) ObserveFence(found int64) { b.loss.record(observation{fence: found}) }

// isNoGroup reports whether Redis answered that the group (or the stream)
// does not exist.
func isNoGroup(err error) bool {
	return err != nil && strings.Contains(err.Error(), "NOGROUP")
}

// regroup handles a NOGROUP answer for group: when a consumer of this
// process reads with that group, the group was lost with Redis' data, and
// a check recreates it (counting the incident once). It reports whether to
// try the call again.
func (b *Redis) regroup(ctx context.Context, group string, err error) bool {
	if !isNoGroup(err) || !b.loss.knowsGroup(group) {
		return false
	}
	_, _, err = b.check(ctx)
	return err == nil
}
