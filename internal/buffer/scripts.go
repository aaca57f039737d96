package buffer

import "github.com/redis/go-redis/v9"

// appendScript stores a page of logs and its checkpoint in one step.
//
// KEYS: stream, seen, checkpoint, behind, head.
// ARGV: expected checkpoint ("" expects nothing), checkpoint ("" leaves it),
// n, then n quadruples log_id, score (ms), raw, fields (auth0log's stored
// form of the parsed fields, "" when there are none).
// Returns {added, checkpoint}: checkpoint 1 = moved forward, 0 = unchanged,
// -1 = refused because it would have moved backwards.
//
// The expected checkpoint is the highest this process has seen stored: a
// stored checkpoint that is gone or older means Redis lost data, and the
// script fails with a LOST error before writing anything (the page would
// otherwise hide the loss behind a new checkpoint). head holds the highest
// log_id ever added to the stream: a log added below it (a backfill, a page
// the poller fetched after a Log Streams push went ahead, a re-poll) breaks
// the stream's log_id order, so it is also recorded in behind (stream id →
// its log_id's second) for the delivered watermark to account for it.
//
// Everything that could fail is checked before the first write: a Lua script
// is not rolled back when a command fails halfway. The script checks each
// log_id's format itself although the events were validated when decoded
// (auth0log): the stream's invariants rest on it — a log_id is the dedupe
// key in seen, its 56 digits make string order time order for head, behind
// and the checkpoint, and behind takes its time from characters 4–17 — and
// the script is the one step every writer (poller, receiver, backfill, dlq
// replay, other replicas of other versions) shares. It costs a length, a
// prefix and a digit match per log.
var appendScript = redis.NewScript("#!lua\nlocal o = 0\n" + appendBody)

// fencedAppendScript is appendScript for the holder of a lease: it writes
// only while the holder's fencing token is still the lease's current one.
//
// KEYS: stream, seen, checkpoint, behind, head, the lease's fencing-token key.
// ARGV: the holder's token, then appendScript's ARGV.
// A token that is not the current one (a newer holder acquired the lease)
// fails with a FENCED error before anything is written; the error ends with
// the current counter ("none" when it is gone).
var fencedAppendScript = redis.NewScript(`#!lua
local o = 1
local fence = redis.call('GET', KEYS[6])
if fence ~= ARGV[1] then
  if not fence then fence = 'none' end
  return redis.error_reply('FENCED lease token ' .. ARGV[1] .. ' is not the current one: ' .. fence)
end
` + appendBody)

// appendBody is the body of both append scripts; ARGV starts at o+1.
const appendBody = `
local function isid(s)
  return type(s) == 'string' and #s == 56 and s:sub(1, 3) == '900' and not s:find('%D')
end
local function less(a, b) -- equal-length digit strings, locale-free
  for i = 1, #a do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return false
end
local function wrongtype(key, want)
  local t = redis.call('TYPE', key)['ok']
  return t ~= 'none' and t ~= want
end
if wrongtype(KEYS[1], 'stream') then return redis.error_reply('WRONGTYPE stream key does not hold a stream') end
if wrongtype(KEYS[2], 'zset') then return redis.error_reply('WRONGTYPE seen key does not hold a sorted set') end
if wrongtype(KEYS[3], 'string') then return redis.error_reply('WRONGTYPE checkpoint key does not hold a string') end
if wrongtype(KEYS[4], 'zset') then return redis.error_reply('WRONGTYPE behind key does not hold a sorted set') end
if wrongtype(KEYS[5], 'string') then return redis.error_reply('WRONGTYPE head key does not hold a string') end

local exp, cp = ARGV[o + 1], ARGV[o + 2]
if exp ~= '' and not isid(exp) then return redis.error_reply('ERR expected checkpoint is not a log_id') end
if cp ~= '' and not isid(cp) then return redis.error_reply('ERR checkpoint is not a log_id') end
local n = tonumber(ARGV[o + 3])
if not n or #ARGV ~= o + 3 + 4 * n then return redis.error_reply('ERR page arguments do not match the log count') end
for i = 0, n - 1 do
  local base = o + 4 + 4 * i
  if not isid(ARGV[base]) then return redis.error_reply('ERR log ' .. i .. ': log_id is not valid') end
  if not tonumber(ARGV[base + 1]) then return redis.error_reply('ERR log ' .. i .. ': score is not a number') end
  if #ARGV[base + 2] == 0 then return redis.error_reply('ERR log ' .. i .. ': raw event is empty') end
end
local cur = redis.call('GET', KEYS[3])
if cur and not isid(cur) then return redis.error_reply('ERR stored checkpoint is not a log_id') end
local head = redis.call('GET', KEYS[5])
if head and not isid(head) then return redis.error_reply('ERR stored head is not a log_id') end
if exp ~= '' and (not cur or less(cur, exp)) then
  return redis.error_reply('LOST checkpoint ' .. (cur or 'none') .. ' is older than ' .. exp .. ', seen stored before')
end

-- No command below can fail on its inputs or key types.
-- The new log_ids (not in seen, first of their page), found with one
-- ZMSCORE and recorded with one ZADD per chunk rather than a ZADD per log:
-- a page costs Redis about half the commands. Chunks keep unpack within
-- Lua's stack for any page size.
local chunk = 500
local new, taken = {}, {}
for c = 0, n - 1, chunk do
  local ids = {}
  for i = c, math.min(c + chunk, n) - 1 do ids[#ids + 1] = ARGV[o + 4 + 4 * i] end
  local scores = redis.call('ZMSCORE', KEYS[2], unpack(ids))
  for j = 1, #ids do
    if not scores[j] and not taken[ids[j]] then
      taken[ids[j]] = true
      new[#new + 1] = c + j - 1
    end
  end
end
for c = 1, #new, chunk do
  local members = {}
  for j = c, math.min(c + chunk - 1, #new) do
    local base = o + 4 + 4 * new[j]
    members[#members + 1] = ARGV[base + 1]
    members[#members + 1] = ARGV[base]
  end
  redis.call('ZADD', KEYS[2], unpack(members))
end
local behind, top = {}, head
for _, i in ipairs(new) do
  local base = o + 4 + 4 * i
  local id = ARGV[base]
  local sid = redis.call('XADD', KEYS[1], '*', 'id', id, 'raw', ARGV[base + 2], 'f', ARGV[base + 3])
  if top and less(id, top) then
    behind[#behind + 1] = id:sub(4, 17)
    behind[#behind + 1] = sid
  else
    top = id
  end
end
for c = 1, #behind, 2 * chunk do
  redis.call('ZADD', KEYS[4], unpack(behind, c, math.min(c + 2 * chunk - 1, #behind)))
end
if top ~= head then redis.call('SET', KEYS[5], top) end
local added = #new
local moved = 0
if cp ~= '' then
  if not cur or less(cur, cp) then
    redis.call('SET', KEYS[3], cp)
    moved = 1
  elseif less(cp, cur) then
    moved = -1
  end
end
return {added, moved}
`

// deadLetterScript moves one pending entry to the dead-letter stream.
//
// KEYS: stream, dlq, reasons.
// ARGV: group, stream id, log_id, raw, reason, failed_at (ms), mode.
// Mode "max" builds the reason from the delivery count and the last noted
// failure and counts deliveries excluding the claim that found it; mode
// "given" takes the reason as is. The entry's fields are read from the stream
// (ARGV log_id and raw are used only if the entry is gone).
// Returns {1, deliveries, reason} when moved, {0} when the entry was not
// pending in the group (already acknowledged or dead-lettered).
var deadLetterScript = redis.NewScript(`#!lua
local function wrongtype(key, want)
  local t = redis.call('TYPE', key)['ok']
  return t ~= 'none' and t ~= want
end
if wrongtype(KEYS[2], 'stream') then return redis.error_reply('WRONGTYPE dead-letter key does not hold a stream') end
if wrongtype(KEYS[3], 'hash') then return redis.error_reply('WRONGTYPE reasons key does not hold a hash') end
local group, id = ARGV[1], ARGV[2]
local p = redis.call('XPENDING', KEYS[1], group, id, id, 1)
if #p == 0 then return {0} end
local deliveries = tonumber(p[1][4])
local logid, raw = ARGV[3], ARGV[4]
local e = redis.call('XRANGE', KEYS[1], id, id)
if #e == 1 then
  local f = e[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'id' then logid = f[i + 1] elseif f[i] == 'raw' then raw = f[i + 1] end
  end
end
local reason = ARGV[5]
if ARGV[7] == 'max' then
  deliveries = deliveries - 1
  local last = redis.call('HGET', KEYS[3], id)
  if not last then last = 'unknown' end
  reason = 'delivered ' .. deliveries .. ' times without acknowledgement; last error: ' .. last
end
redis.call('XADD', KEYS[2], '*', 'id', logid, 'raw', raw, 'reason', reason,
  'deliveries', tostring(deliveries), 'failed_at', ARGV[6], 'stream_id', id)
redis.call('XACK', KEYS[1], group, id)
redis.call('HDEL', KEYS[3], id)
return {1, deliveries, reason}
`)

// trimScript trims the stream by MINID and the dedupe set by score.
//
// KEYS: stream, seen.
// ARGV: cutoff (ms): entries and log_ids older than it are past retention.
// The MINID is the smallest of the cutoff, the oldest pending id of every
// group and the first id every group has not been delivered yet (just after
// its last-delivered-id). Computing and trimming in one script means no
// delivery or group change can slip in between. Returns {trimmed, seen
// removed, minid}.
var trimScript = redis.NewScript(`#!lua
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local exact = 2 ^ 53
local cutoff = tonumber(ARGV[1])
local bms, bseq = cutoff, 0
local function bound(ms, seq)
  if ms < bms or (ms == bms and seq < bseq) then bms, bseq = ms, seq end
end
local trimmed, minid = 0, ''
if redis.call('TYPE', KEYS[1])['ok'] == 'stream' then
  local ok = true
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, pending, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1]
      elseif g[i] == 'pending' then pending = g[i + 1]
      elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    local ms, seq = parse(last or '')
    if not ms or ms >= exact then ok = false
    elseif seq + 1 >= exact then bound(ms, 0) -- cannot add exactly: keep the whole millisecond
    else bound(ms, seq + 1) end
    if pending and pending > 0 then
      local low = redis.call('XPENDING', KEYS[1], name)[2]
      local pms, pseq = parse(low or '')
      if not pms or pms >= exact then ok = false
      elseif pseq >= exact then bound(pms, 0)
      else bound(pms, pseq) end
    end
  end
  if ok then
    minid = string.format('%.0f-%.0f', bms, bseq)
    trimmed = redis.call('XTRIM', KEYS[1], 'MINID', minid)
  end
end
local removed = 0
if redis.call('TYPE', KEYS[2])['ok'] == 'zset' then
  removed = redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
end
return {trimmed, removed, minid}
`)
