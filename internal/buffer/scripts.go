package buffer

import "github.com/redis/go-redis/v9"

// appendScript stores a page of logs and its checkpoint in one step.
//
// KEYS: stream, seen (the previous version's dedupe zset, read until it is
// gone), checkpoint, behind, head, the dedupe bucket index, then the dedupe
// bucket of every hour the page's log_ids fall in (seen:<yyyymmddhh>).
// ARGV: expected checkpoint ("" expects nothing), checkpoint ("" leaves it),
// bucket life (seconds a bucket outlives its hour), bucket floor (seconds
// it lives at least after a write), n, then n triples log_id, raw, fields
// (auth0log's stored form of the parsed fields, "" when there are none).
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
// Dedupe: a log is new when its packed log_id (dedupe.go) is in neither its
// hour's bucket nor the previous version's seen zset, and it is the first
// of its page. New log_ids are added to their buckets; each bucket touched
// gets EXPIREAT its hour's end + life (and at least Redis' now + floor), and
// its hour is listed in the index (score: the hour's Unix time) for Trim and
// the metrics.
//
// Everything that could fail is checked before the first write: a Lua script
// is not rolled back when a command fails halfway. The script checks each
// log_id's format itself although the events were validated when decoded
// (auth0log): the stream's invariants rest on it — a log_id is the dedupe
// key, its 56 digits make string order time order for head, behind and the
// checkpoint, behind takes its time from characters 4–17 and the bucket its
// hour from characters 4–13 — and the script is the one step every writer
// (poller, receiver, backfill, other replicas of other versions) shares. It
// also refuses a log whose bucket is not among KEYS (Redis Cluster needs
// every key declared).
var appendScript = redis.NewScript("#!lua\nlocal o = 0\n" + appendBody)

// fencedAppendScript is appendScript for the holder of a lease: it writes
// only while the holder's fencing token is still the lease's current one.
//
// KEYS: stream, seen, checkpoint, behind, head, the lease's fencing-token
// key, then appendScript's index and buckets.
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

// appendBody is the body of both append scripts; ARGV starts at o+1 and
// the index key is KEYS[6+o].
const appendBody = `
local function isid(s)
  return type(s) == 'string' and #s == 56 and s:sub(1, 3) == '900' and not s:find('%D')
end
-- a < b for log_ids (equal-length digit strings), locale-free: Lua's < on
-- strings is strcoll. By groups of 14 digits, exact in Lua's doubles; a
-- loop over single bytes cost some 4 µs per log (every log is compared
-- with head).
local function less(a, b)
  for i = 1, #a, 14 do
    local x, y = a:sub(i, i + 13), b:sub(i, i + 13)
    if x ~= y then return tonumber(x) < tonumber(y) end
  end
  return false
end
local function wrongtype(key, want)
  local t = redis.call('TYPE', key)['ok']
  return t ~= 'none' and t ~= want, t == want
end
-- A log_id's 56 digits as four groups of 14 digits in 6 bytes each,
-- big-endian (packID in dedupe.go): exact in Lua's doubles.
local function pack(id)
  return struct.pack('>I6I6I6I6', tonumber(id:sub(1, 14)), tonumber(id:sub(15, 28)),
    tonumber(id:sub(29, 42)), tonumber(id:sub(43, 56)))
end
-- Unix time of an hour yyyymmddhh (UTC), by days from the civil date.
local function hourtime(h)
  local y, m, d, hh = tonumber(h:sub(1, 4)), tonumber(h:sub(5, 6)), tonumber(h:sub(7, 8)), tonumber(h:sub(9, 10))
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return (era * 146097 + doe - 719468) * 86400 + hh * 3600
end
if wrongtype(KEYS[1], 'stream') then return redis.error_reply('WRONGTYPE stream key does not hold a stream') end
local bad, legacy = wrongtype(KEYS[2], 'zset')
if bad then return redis.error_reply('WRONGTYPE seen key does not hold a sorted set') end
if wrongtype(KEYS[3], 'string') then return redis.error_reply('WRONGTYPE checkpoint key does not hold a string') end
if wrongtype(KEYS[4], 'zset') then return redis.error_reply('WRONGTYPE behind key does not hold a sorted set') end
if wrongtype(KEYS[5], 'string') then return redis.error_reply('WRONGTYPE head key does not hold a string') end
local kidx = 6 + o
if wrongtype(KEYS[kidx], 'zset') then return redis.error_reply('WRONGTYPE dedupe index key does not hold a sorted set') end
local declared = {}
for k = kidx + 1, #KEYS do
  if wrongtype(KEYS[k], 'set') then return redis.error_reply('WRONGTYPE dedupe bucket ' .. KEYS[k] .. ' does not hold a set') end
  declared[KEYS[k]] = true
end
local prefix = KEYS[2] .. ':'

local exp, cp = ARGV[o + 1], ARGV[o + 2]
if exp ~= '' and not isid(exp) then return redis.error_reply('ERR expected checkpoint is not a log_id') end
if cp ~= '' and not isid(cp) then return redis.error_reply('ERR checkpoint is not a log_id') end
local life, floor = tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4])
if not life or not floor then return redis.error_reply('ERR bucket life is not a number') end
local n = tonumber(ARGV[o + 5])
local a = o + 6 -- the first log's arguments
if not n or #ARGV ~= a - 1 + 3 * n then return redis.error_reply('ERR page arguments do not match the log count') end
for i = 0, n - 1 do
  local base = a + 3 * i
  local id = ARGV[base]
  if not isid(id) then return redis.error_reply('ERR log ' .. i .. ': log_id is not valid') end
  if not declared[prefix .. id:sub(4, 13)] then return redis.error_reply('ERR log ' .. i .. ': its dedupe bucket key is not declared') end
  if #ARGV[base + 1] == 0 then return redis.error_reply('ERR log ' .. i .. ': raw event is empty') end
end
local cur = redis.call('GET', KEYS[3])
if cur and not isid(cur) then return redis.error_reply('ERR stored checkpoint is not a log_id') end
local head = redis.call('GET', KEYS[5])
if head and not isid(head) then return redis.error_reply('ERR stored head is not a log_id') end
if exp ~= '' and (not cur or less(cur, exp)) then
  return redis.error_reply('LOST checkpoint ' .. (cur or 'none') .. ' is older than ' .. exp .. ', seen stored before')
end

-- No command below can fail on its inputs or key types.
-- The first occurrence of each log_id of the page, by bucket; looked up
-- with one SMISMEMBER per bucket and chunk (and one ZMSCORE per chunk in
-- the previous version's zset while it exists) rather than a command per
-- log. Chunks keep unpack within Lua's stack for any page size.
local chunk = 500
local taken, packed, found = {}, {}, {}
local buckets, hours = {}, {}
for i = 0, n - 1 do
  local id = ARGV[a + 3 * i]
  if taken[id] then
    found[i] = true
  else
    taken[id] = true
    packed[i] = pack(id)
    local h = id:sub(4, 13)
    if not buckets[h] then
      buckets[h] = {}
      hours[#hours + 1] = h
    end
    local bk = buckets[h]
    bk[#bk + 1] = i
  end
end
local function lookup(cmd, key, idx, member)
  for c = 1, #idx, chunk do
    local args = {}
    for j = c, math.min(c + chunk - 1, #idx) do args[#args + 1] = member(idx[j]) end
    local r = redis.call(cmd, key, unpack(args))
    for j = 1, #args do
      if r[j] and r[j] ~= 0 then found[idx[c + j - 1]] = true end
    end
  end
end
for _, h in ipairs(hours) do
  lookup('SMISMEMBER', prefix .. h, buckets[h], function(i) return packed[i] end)
end
if legacy then
  local rest = {}
  for i = 0, n - 1 do
    if packed[i] and not found[i] then rest[#rest + 1] = i end
  end
  lookup('ZMSCORE', KEYS[2], rest, function(i) return ARGV[a + 3 * i] end)
end
local new = {}
for i = 0, n - 1 do
  if not found[i] then new[#new + 1] = i end
end
local now = tonumber(redis.call('TIME')[1])
for _, h in ipairs(hours) do
  local members = {}
  for _, i in ipairs(buckets[h]) do
    if not found[i] then members[#members + 1] = packed[i] end
  end
  if #members > 0 then
    local key, t = prefix .. h, hourtime(h)
    for c = 1, #members, chunk do
      redis.call('SADD', key, unpack(members, c, math.min(c + chunk - 1, #members)))
    end
    local at = math.max(t + 3600 + life, now + floor)
    redis.call('EXPIREAT', key, at)
    redis.call('ZADD', KEYS[kidx], t, h)
    if redis.call('EXPIRETIME', KEYS[kidx]) < at then redis.call('EXPIREAT', KEYS[kidx], at) end
  end
end
local behind, top = {}, head
for _, i in ipairs(new) do
  local base = a + 3 * i
  local id = ARGV[base]
  local sid = redis.call('XADD', KEYS[1], '*', 'id', id, 'raw', ARGV[base + 1], 'f', ARGV[base + 2])
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

// trimScript removes from the stream every entry that all consumer groups
// have acknowledged, and forgets log_ids past the retention in the previous
// version's dedupe zset.
//
// KEYS: stream, seen (the previous version's zset).
// ARGV: cutoff (ms): log_ids older than it are past retention, and so are
// entries added before it while the stream has no group.
// The MINID is the smallest of every group's oldest pending id and every
// group's first id not delivered yet (just after its last-delivered-id):
// below it every group has acknowledged every entry (an entry dead-lettered
// is acknowledged too). Without any group nothing was delivered, and only
// entries older than the cutoff go. Computing and trimming in one script
// means no delivery or group change can slip in between. Returns {trimmed,
// seen removed, minid}.
var trimScript = redis.NewScript(`#!lua
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local exact = 2 ^ 53
local cutoff = tonumber(ARGV[1])
local bms, bseq
local function bound(ms, seq)
  if not bms or ms < bms or (ms == bms and seq < bseq) then bms, bseq = ms, seq end
end
local trimmed, minid = 0, ''
if redis.call('TYPE', KEYS[1])['ok'] == 'stream' then
  local ok = true
  local gs = redis.call('XINFO', 'GROUPS', KEYS[1])
  if #gs == 0 then bound(cutoff, 0) end
  for _, g in ipairs(gs) do
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
