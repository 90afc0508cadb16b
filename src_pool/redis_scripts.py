"""The Lua scripts behind :mod:`src_pool.redis_broker`: one round trip per batch.

Every operation that touches more than one key runs as one script, so that it
is atomic (a consumer that dies between two commands cannot lose an item) and
costs one round trip whatever the batch size. Scripts read the server's clock
(``TIME``), never the client's, so consumers on several hosts agree on
deadlines.

Keys (the same array for every script, built by :func:`queue_keys`)
    ``KEYS[1..10]``  the waiting items, one list per priority 0-9 (RPUSH at the
    tail, LPOP from the head: FIFO; released items go back to the head);
    ``KEYS[11]`` the *signal* list a consumer with nothing to do blocks on
    (one token per put, bounded, cleared whenever the queue is found empty);
    ``KEYS[12]`` the *full* flag (the high watermark was reached and the
    depth has not yet fallen to the low one, which the flag holds); ``KEYS[13]`` the *room* list
    blocked producers wait on; ``KEYS[14]`` the delayed-retry sorted set
    (score: due time in ms); ``KEYS[15]`` the dead-letter list (newest first);
    ``KEYS[16]`` the consumers sorted set (score: heartbeat deadline in ms);
    ``KEYS[17]`` this consumer's processing list; ``KEYS[18]`` the count of
    dead letters dropped by the dead-letter bound.
    Dead consumers' processing lists are named ``<prefix>:proc:<consumer>``:
    the reaper builds those names itself, so the broker is for a standalone
    Redis (or a single Cluster slot: every key shares the ``{name}`` hash tag).

Messages
    ``<priority>|<attempts>|<lost>|<json>`` (:mod:`src_pool.redis_codec`): a
    script re-queues or dead-letters an item, and counts a delivery lost with
    a dead consumer, without decoding and re-encoding the payload.
    Dead letters are ``<json header>\\n<message>``.

Consumers
    A consumer registers as ``<consumer_id>/<incarnation>`` (random per
    start): a process restarted with the same ``consumer_id`` gets a
    processing list of its own, and its predecessor's items come back through
    the reaper, counted, instead of being adopted unseen.
"""

from __future__ import annotations

QUEUE_LEVELS = 10
SIGNAL, FULL, ROOM, DELAYED, DEAD, CONSUMERS, PROCESSING, DROPPED = range(11, 19)


def queue_keys(prefix: str, consumer: str) -> list[str]:
    """The KEYS array of every script, for queue ``prefix`` and one consumer."""
    return [
        *(f"{prefix}:q:{level}" for level in range(QUEUE_LEVELS)),
        f"{prefix}:signal",
        f"{prefix}:full",
        f"{prefix}:room",
        f"{prefix}:delayed",
        f"{prefix}:dead",
        f"{prefix}:consumers",
        processing_key(prefix, consumer),
        f"{prefix}:dead:dropped",
    ]


def processing_key(prefix: str, consumer: str) -> str:
    return f"{prefix}:proc:{consumer}"


# Helpers shared by the scripts. Lua numbers are doubles: millisecond
# timestamps (~1.7e12) are exact.
_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function depth()
  local n = 0
  for i = 1, 10 do n = n + redis.call('LLEN', KEYS[i]) end
  return n
end
local function level(m)
  return string.byte(m, 1) - 47  -- '0' -> KEYS[1]
end
-- Wake up to n blocked consumers: one token each, never more than cap waiting.
local function signal(n, cap)
  local want = math.min(n, cap - redis.call('LLEN', KEYS[11]))
  while want > 0 do
    local k = math.min(want, 512)
    local t = {}
    for i = 1, k do t[i] = '1' end
    redis.call('RPUSH', KEYS[11], unpack(t))
    want = want - k
  end
end
-- Reopen the gate for producers once the depth fell to the low watermark
-- (the flag holds the low watermark of the producer that closed it).
local function reopen(d)
  local low = redis.call('GET', KEYS[12])
  if low and d <= tonumber(low) then
    redis.call('DEL', KEYS[12], KEYS[13])
    local t = {}
    for i = 1, 64 do t[i] = '1' end
    redis.call('RPUSH', KEYS[13], unpack(t))
    redis.call('PEXPIRE', KEYS[13], 2000)
  end
end
-- Move retries that are due to the tail of their queue.
local function promote(now, limit, cap)
  local due = redis.call('ZRANGEBYSCORE', KEYS[14], '-inf', now, 'LIMIT', 0, limit)
  for i = 1, #due do
    redis.call('RPUSH', KEYS[level(due[i])], due[i])
    redis.call('ZREM', KEYS[14], due[i])
  end
  if #due > 0 then signal(#due, cap) end
  return #due
end
-- Milliseconds until the next delayed retry is due, or -1 when there is none.
local function next_due(now)
  local first = redis.call('ZRANGE', KEYS[14], 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return math.max(0, tonumber(first[2]) - now)
end
local function dead_record(m, err, now, limit)
  redis.call('LPUSH', KEYS[15], cjson.encode({error = err, at = now}) .. '\\n' .. m)
  local over = redis.call('LLEN', KEYS[15]) - limit
  if over > 0 then
    redis.call('LTRIM', KEYS[15], 0, limit - 1)
    redis.call('INCRBY', KEYS[18], over)
  end
end
"""

#: ARGV: high watermark (0: unbounded), low watermark, signal cap, messages...
#: Pushes messages in order until the gate closes. Returns {pushed, depth}.
PUT = (
    _COMMON
    + """
local high = tonumber(ARGV[1])
local cap = tonumber(ARGV[3])
local d = depth()
local n = 0
for i = 4, #ARGV do
  if high > 0 then
    if redis.call('EXISTS', KEYS[12]) == 1 then break end
    if d >= high then
      redis.call('SET', KEYS[12], ARGV[2])
      break
    end
  end
  redis.call('RPUSH', KEYS[level(ARGV[i])], ARGV[i])
  d = d + 1
  n = n + 1
end
if n > 0 then signal(n, cap) end
return {n, d}
"""
)

#: ARGV: max items, consumer id, visibility ms, (unused), signal cap,
#: number of acks, acks..., then nothing.
#: Acknowledges, promotes due retries, then moves up to max items (highest
#: priority first, FIFO within one) into this consumer's processing list and
#: renews its heartbeat. Returns {depth, ms until next retry or -1, acks
#: that were still held, items...}.
FETCH = (
    _COMMON
    + """
local want = tonumber(ARGV[1])
local me = ARGV[2]
local cap = tonumber(ARGV[5])
local nacks = tonumber(ARGV[6])
local acked = 0
for i = 7, 6 + nacks do acked = acked + redis.call('LREM', KEYS[17], 1, ARGV[i]) end
local now = now_ms()
if redis.call('ZCARD', KEYS[14]) > 0 then promote(now, 1000, cap) end
local out = {0, 0, 0}
local got = 0
for lv = 10, 1, -1 do
  if got >= want then break end
  local items = redis.call('LPOP', KEYS[lv], want - got)
  if items then
    redis.call('RPUSH', KEYS[17], unpack(items))
    for i = 1, #items do out[4 + got + i - 1] = items[i] end
    got = got + #items
  end
end
if got > 0 or nacks > 0 then
  if redis.call('LLEN', KEYS[17]) > 0 then
    redis.call('ZADD', KEYS[16], now + tonumber(ARGV[3]), me)
  else
    redis.call('ZREM', KEYS[16], me)
  end
end
local d = depth()
if d == 0 then redis.call('DEL', KEYS[11]) end
reopen(d)
out[1] = d
out[2] = next_due(now)
out[3] = acked
return out
"""
)

#: ARGV: acks... Returns how many were still in the processing list.
ACK = """
local n = 0
for i = 1, #ARGV do n = n + redis.call('LREM', KEYS[17], 1, ARGV[i]) end
return n
"""

#: ARGV: signal cap, then messages in queue order. Each one still in this
#: consumer's processing list goes back to the head of its queue (so the
#: first one given ends first in line). Returns how many went back.
RELEASE = (
    _COMMON
    + """
local cap = tonumber(ARGV[1])
local n = 0
for i = #ARGV, 2, -1 do
  if redis.call('LREM', KEYS[17], 1, ARGV[i]) == 1 then
    redis.call('LPUSH', KEYS[level(ARGV[i])], ARGV[i])
    n = n + 1
  end
end
if n > 0 then signal(n, cap) end
return n
"""
)

#: ARGV: receipt, new message, delay ms, signal cap. Only if the receipt is
#: still in this consumer's processing list (it was not reaped meanwhile):
#: the new message goes to the tail of its queue, or to the delayed set.
RETRY = (
    _COMMON
    + """
if redis.call('LREM', KEYS[17], 1, ARGV[1]) == 0 then return 0 end
local delay = tonumber(ARGV[3])
if delay <= 0 then
  redis.call('RPUSH', KEYS[level(ARGV[2])], ARGV[2])
else
  redis.call('ZADD', KEYS[14], now_ms() + delay, ARGV[2])
end
-- Wake a blocked consumer either way: one that blocked before this retry
-- existed waits for a put, and must learn when the retry falls due.
signal(1, tonumber(ARGV[4]))
return 1
"""
)

#: ARGV: receipt, error, dead-letter limit. Only if the receipt is still in
#: this consumer's processing list. Returns 1 if it was dead-lettered.
DEAD_LETTER = (
    _COMMON
    + """
if redis.call('LREM', KEYS[17], 1, ARGV[1]) == 0 then return 0 end
dead_record(ARGV[1], ARGV[2], now_ms(), tonumber(ARGV[3]))
return 1
"""
)

#: ARGV: consumer, visibility ms, max lost deliveries, dead-letter limit,
#: (unused), signal cap, key prefix.
#: The periodic upkeep, in one round trip: renew this consumer's heartbeat
#: (or drop it when it holds nothing), re-queue the items of consumers whose
#: heartbeat expired (a lost delivery counted for each; dead-lettered once
#: they reach max lost deliveries), promote due retries, re-signal a queue that has
#: items but no token (a consumer that took a token and died), reopen the gate.
#: Returns {depth, items re-queued, items dead-lettered}.
UPKEEP = (
    _COMMON
    + """
local me = ARGV[1]
local max_lost = tonumber(ARGV[3])
local dead_limit = tonumber(ARGV[4])
local cap = tonumber(ARGV[6])
local now = now_ms()
if redis.call('LLEN', KEYS[17]) > 0 then
  redis.call('ZADD', KEYS[16], now + tonumber(ARGV[2]), me)
else
  redis.call('ZREM', KEYS[16], me)
end
local requeued, dead = 0, 0
local expired = redis.call('ZRANGEBYSCORE', KEYS[16], '-inf', now, 'LIMIT', 0, 50)
for _, c in ipairs(expired) do
  if c ~= me then
    local proc = ARGV[7] .. ':proc:' .. c
    local items = redis.call('LRANGE', proc, 0, -1)
    for i = #items, 1, -1 do
      local m = items[i]
      local pr, a, l, rest = string.match(m, '^(%d)|(%d+)|(%d+)|(.*)$')
      if pr == nil then  -- written before the lost count existed
        pr, a, rest = string.match(m, '^(%d)|(%d+)|({.*)$')
        l = '0'
      end
      if pr == nil then
        dead_record(m, 'MalformedMessage: not a src_pool message', now, dead_limit)
        dead = dead + 1
      else
        local lost = tonumber(l) + 1
        local again = pr .. '|' .. a .. '|' .. lost .. '|' .. rest
        if lost >= max_lost then
          dead_record(again, 'ConsumerLost: its consumer died ' .. lost ..
            ' time(s) while holding it (max_lost_deliveries ' .. max_lost .. '); its handler failed ' ..
            a .. ' time(s)', now, dead_limit)
          dead = dead + 1
        else
          redis.call('LPUSH', KEYS[tonumber(pr) + 1], again)
          requeued = requeued + 1
        end
      end
    end
    redis.call('DEL', proc)
    redis.call('ZREM', KEYS[16], c)
  end
end
promote(now, 1000, cap)
local d = depth()
if d > 0 and redis.call('LLEN', KEYS[11]) == 0 then signal(math.min(d, cap), cap) end
if d == 0 then redis.call('DEL', KEYS[11]) end
reopen(d)
return {d, requeued, dead}
"""
)

#: Returns {1 if the producers' gate is shut, depth}: what a blocked producer
#: reads to learn whether it may put again.
GATE = (
    _COMMON
    + """
return {redis.call('EXISTS', KEYS[12]), depth()}
"""
)

#: ARGV: consumer. Drop this consumer's heartbeat if it holds nothing.
LEAVE = """
if redis.call('LLEN', KEYS[17]) == 0 then redis.call('ZREM', KEYS[16], ARGV[1]) end
return redis.call('LLEN', KEYS[17])
"""
