"""The Lua scripts that make multi-step Redis operations atomic (run by :mod:`dask_redisparam.backend`).

Each script touches only the keys it is given in ``KEYS`` (all of one job, so of one Redis Cluster slot) and
builds no key name itself.
"""

from __future__ import annotations

PREFIX_CAP = 30
"""Task key prefixes that the job's metrics count by name; the others count as ``other`` (bounded cardinality)."""
METRICS_TTL = 7 * 86400
"""Seconds the job's metrics hash outlives its last count."""
EVENTS_MAX = 10000
"""About how many entries (messages) the job's stream of task events keeps (``XADD MAXLEN ~``)."""
EVENTS_TTL = 3600
"""Seconds the job's stream of task events outlives its last entry."""

__all__ = [
    "ACK",
    "EVENTS_MAX",
    "EVENTS_TTL",
    "METRICS_TTL",
    "PREFIX_CAP",
    "ASK_STOP",
    "CLAIM_RESOURCE",
    "COMPLETE",
    "COPY",
    "DEREGISTER",
    "EXTEND",
    "HEARTBEAT",
    "HOLD",
    "MOVE",
    "NOTIFY",
    "PROBE",
    "REAP",
    "REGISTER",
    "RELEASE_CLAIM",
    "REQUEUE_CLAIM",
    "UNREGISTER",
]

# Store a batch's results and its completion record, and forget the message; but only if the worker still holds the
# message (a reaped worker lost its claim: its late result is dropped) and the run is alive (keys of a dead run are
# never re-created, so nothing is left behind after a run ends).
# KEYS: alive, data, done, proc, worker, metrics, progress, events.
# ARGV: message, record, task count, m, m metric arguments (see below), n, n part fields (written just before, see
# dask_redisparam.wire.bulk), r, then field/value pairs, the first r of them references to large values. Refused, the
# script deletes those parts, unless the first reference is already stored (a repeat of a call that succeeded: the
# parts are the stored value's). If a reference's field exists already (the message ran twice: it was queued twice),
# the first values stay: the new references are not stored and their parts are deleted. The data hash keeps the TTL
# its manager gives it (the values outlive the run's lease: dask_redisparam.manager.lease); only a hash without one
# (or with a shorter one) gets the lease's.
# A part missing (Redis refused to store it: OOM) leaves everything as it was but the parts written (deleted), and
# returns -2.
# The metric arguments are the worker's id, the run's id, then groups, one per task key prefix of the batch:
# prefix, tasks finished, tasks failed, the sum of their durations, the first start, the last end, b, then b pairs
# (histogram bucket, count). Once the message is released they are counted in the job's metrics hash (a prefix
# beyond the first PREFIX_CAP counts as 'other'), in the run's progress hash if it exists (a prefix its manager did
# not list counts as 'other'), and one entry (worker, run, the groups) goes to the job's capped stream of events.
COMPLETE = """
local m = tonumber(ARGV[4])
local b = 4 + m
local n = tonumber(ARGV[b + 1])
local r = tonumber(ARGV[b + 2 + n])
local first = b + 3 + n
local function drop_parts()
  for i = b + 2, b + 1 + n do redis.call('HDEL', KEYS[2], ARGV[i]) end
end
for i = b + 2, b + 1 + n do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    drop_parts()
    return -2
  end
end
if redis.call('LREM', KEYS[4], 1, ARGV[1]) == 0 then
  if r == 0 or redis.call('HGET', KEYS[2], ARGV[first]) ~= ARGV[first + 1] then drop_parts() end
  return -1
end
if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('HINCRBY', KEYS[5], 'tasks', ARGV[3]) end
local ttl = redis.call('PTTL', KEYS[1])
if m > 0 then
  local progress = ttl >= 0 and redis.call('EXISTS', KEYS[7]) == 1
  local groups = {}
  local pos = 7
  while pos <= b do
    local p, ok, bad = ARGV[pos], tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2])
    local nb = tonumber(ARGV[pos + 6])
    local g = p
    if redis.call('HEXISTS', KEYS[6], 'sum|' .. g) == 0 and g ~= 'other' then
      if tonumber(redis.call('HINCRBY', KEYS[6], 'prefixes', 1)) > PREFIX_CAP then
        redis.call('HINCRBY', KEYS[6], 'prefixes', -1)
        g = 'other'
      end
    end
    if ok > 0 then redis.call('HINCRBY', KEYS[6], 'finished|' .. g, ok) end
    if bad > 0 then redis.call('HINCRBY', KEYS[6], 'failed|' .. g, bad) end
    redis.call('HINCRBYFLOAT', KEYS[6], 'sum|' .. g, ARGV[pos + 3])
    for j = pos + 7, pos + 5 + 2 * nb, 2 do redis.call('HINCRBY', KEYS[6], 'b' .. ARGV[j] .. '|' .. g, ARGV[j + 1]) end
    if progress then
      local q = p
      if redis.call('HEXISTS', KEYS[7], 'total|' .. q) == 0 then q = 'other' end
      if ok > 0 then redis.call('HINCRBY', KEYS[7], 'done|' .. q, ok) end
      if bad > 0 then redis.call('HINCRBY', KEYS[7], 'failed|' .. q, bad) end
    end
    table.insert(groups, table.concat({p, ARGV[pos + 1], ARGV[pos + 2], ARGV[pos + 4], ARGV[pos + 5]}, ' '))
    pos = pos + 7 + 2 * nb
  end
  redis.call('PEXPIRE', KEYS[6], METRICS_TTL)
  local entry = table.concat(groups, '\\n')
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', EVENTS_MAX, '*', 'w', ARGV[5], 'r', ARGV[6], 'g', entry)
  redis.call('PEXPIRE', KEYS[8], EVENTS_TTL)
end
if ttl < 0 then
  drop_parts()
  return 0
end
local start = first
for i = first, first + 2 * r - 2, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then
    drop_parts()
    start = first + 2 * r
    break
  end
end
for i = start, #ARGV, 2000 do  -- 1,000 values a call (one HSET each cost Redis a microsecond a value more)
  redis.call('HSET', KEYS[2], unpack(ARGV, i, math.min(i + 1999, #ARGV)))
end
if #ARGV >= first and redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ttl)
return 1
"""
for _name, _value in (("PREFIX_CAP", PREFIX_CAP), ("METRICS_TTL", METRICS_TTL * 1000), ("EVENTS_MAX", EVENTS_MAX)):
    COMPLETE = COMPLETE.replace(_name, str(_value))
COMPLETE = COMPLETE.replace("EVENTS_TTL", str(EVENTS_TTL * 1000))

# A worker died: put every message it held back on the queue, unchanged (they are signed), forget the worker, and
# return {run, msg, stamp, ...} of what moved (from the header "<version>|<run>|<msg>|" of
# dask_redisparam.wire.protocol; stamp: the server's time in microseconds), so that the runs' managers can count the
# loss once. The messages lost (those of a run) are counted in the job's metrics hash (KEYS[6]; ARGV[2]: its TTL, ms).
REAP = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local now = redis.call('TIME')
local stamp = now[1] .. string.format('%06d', tonumber(now[2]))
local out = {}
for i = #items, 1, -1 do
  local item = items[i]
  local ver, run, msg = string.match(item, '^([^|]*)|([^|]*)|([^|]*)|')
  redis.call('RPUSH', KEYS[2], item)
  if ver then
    table.insert(out, run)
    table.insert(out, msg)
    table.insert(out, stamp)
  end
end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
redis.call('SREM', KEYS[5], ARGV[1])
if #out > 0 then
  redis.call('HINCRBY', KEYS[6], 'lost', #out / 3)
  redis.call('PEXPIRE', KEYS[6], ARGV[2])
end
return out
"""

# Drop acknowledged completion records: the first ARGV[3] items, if they still are the ones acknowledged (so a
# repeated call after a lost reply removes nothing more).
ACK = """
local n = tonumber(ARGV[3])
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] and redis.call('LINDEX', KEYS[1], n - 1) == ARGV[2] then
  redis.call('LTRIM', KEYS[1], n, -1)
  return 1
end
return 0
"""

# Copy hash fields (ARGV: new, old, new, old...) from KEYS[1] to KEYS[2]; returns how many existed.
COPY = """
local n = 0
for i = 1, #ARGV, 2 do
  local v = redis.call('HGET', KEYS[1], ARGV[i + 1])
  if v then
    redis.call('HSET', KEYS[2], ARGV[i], v)
    n = n + 1
  end
end
return n
"""

# Keep a finished run's requested values in Redis: trim its data hash (KEYS[1]) to the fields ARGV[2..] (the values
# and the parts of large ones), then rename it to KEYS[2] (O(1): nothing is copied) with a TTL of ARGV[1] ms (0: none).
# Returns how many of those fields were there (-1: the data hash is gone, 0 fields left: nothing is renamed).
HOLD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local keep = {}
for i = 2, #ARGV do keep[ARGV[i]] = true end
local drop, n = {}, 0
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if keep[field] then n = n + 1 else drop[#drop + 1] = field end
end
for i = 1, #drop, 1000 do redis.call('HDEL', KEYS[1], unpack(drop, i, math.min(i + 999, #drop))) end
if n == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) else redis.call('PERSIST', KEYS[2]) end
return n
"""

# Give KEYS[1] a TTL of at least ARGV[1] ms (never shorten it: the job's registry of runs lives as long as the longest
# resume_ttl of its runs).
EXTEND = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
if ttl < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""

# Probe registered runs (KEYS: alive, data of each run; ARGV: 1 per run to declare it dead, deleting its alive key,
# else 0): returns {alive, data PTTL, {data fields}} per run; the fields only of a dead run (a live run's are not
# read: it is never reused).
PROBE = """
local out = {}
for i = 1, #KEYS, 2 do
  local alive = 0
  if ARGV[(i + 1) / 2] == '1' then
    redis.call('DEL', KEYS[i])
  else
    alive = redis.call('EXISTS', KEYS[i])
  end
  local fields = {}
  if alive == 0 then fields = redis.call('HKEYS', KEYS[i + 1]) end
  table.insert(out, {alive, redis.call('PTTL', KEYS[i + 1]), fields})
end
return out
"""

# Remove a run from the job's registry of runs (KEYS[1]): its record ARGV[1] and every field "<ARGV[1]>.*".
UNREGISTER = """
local prefix = ARGV[1] .. '.'
local n = redis.call('HDEL', KEYS[1], ARGV[1])
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, #prefix) == prefix then n = n + redis.call('HDEL', KEYS[1], field) end
end
return n
"""

# Move one message from a list (KEYS[1]) to the consuming end of another (KEYS[2]); ARGV[2] > 0 caps the target's
# length (newest kept) and ARGV[3] > 0 gives it a TTL in seconds.
MOVE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
else
  redis.call('RPUSH', KEYS[2], ARGV[1])
end
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
return 1
"""

# Tell a live run's manager that one of its messages was lost with its worker.
NOTIFY = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
"""

# Register a worker unless a live worker with the same id exists.
REGISTER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2, #ARGV - 1))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[#ARGV])
return 1
"""

# Put every message a worker holds back on the queue (consumed next), then forget the worker.
DEREGISTER = """
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do n = n + 1 end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('SREM', KEYS[5], ARGV[1])
return n
"""


# Renew a worker's lease (only if it still exists: never re-create a key without a TTL); report a stop request.
HEARTBEAT = """
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return {0, 0} end
if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
return {1, redis.call('HEXISTS', KEYS[1], 'stop')}
"""

# Ask one worker to stop, if it is live.
ASK_STOP = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'stop', '1')
return 1
"""


# ---------------------------------------------------------------- worker resources (backend/resources.py)
# Lua: give back a claim's amounts (the class text "A=1.0,B=2.0") to the daemon hash KEYS[2] (if it exists), and
# delete the hash when nothing is in use any more.
_FREE = """
local function free(cls)
  if redis.call('EXISTS', KEYS[2]) == 0 then return end
  for name, amount in string.gmatch(cls, '([^,=]+)=([^,]+)') do
    redis.call('HINCRBYFLOAT', KEYS[2], 'use|' .. name, -tonumber(amount))
  end
  local fields = redis.call('HGETALL', KEYS[2])
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 4) == 'use|' and tonumber(fields[i + 1]) > 1e-9 then return end
  end
  redis.call('DEL', KEYS[2])
end
"""

# Claim one message of the first class queue (KEYS[4..]) whose demand the daemon's free resources cover.
# KEYS: claim, daemon, proc, queues. ARGV: daemon id, k, k capacity pairs (name, amount), then per queue its class,
# m, m demand pairs. Returns {class, message}, or nil (nothing claimable; also while the worker holds a claim).
CLAIM_RESOURCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local k = tonumber(ARGV[2])
local pos = 3
for i = 1, k do
  redis.call('HSET', KEYS[2], 'cap|' .. ARGV[pos], ARGV[pos + 1])
  pos = pos + 2
end
for q = 4, #KEYS do
  local cls, m = ARGV[pos], tonumber(ARGV[pos + 1])
  local first, fits = pos + 2, true
  for j = first, first + 2 * m - 2, 2 do
    local cap = tonumber(redis.call('HGET', KEYS[2], 'cap|' .. ARGV[j]) or '0')
    local used = tonumber(redis.call('HGET', KEYS[2], 'use|' .. ARGV[j]) or '0')
    if used + tonumber(ARGV[j + 1]) > cap + 1e-9 then fits = false end
  end
  if fits then
    local msg = redis.call('LMOVE', KEYS[q], KEYS[3], 'RIGHT', 'LEFT')
    if msg then
      for j = first, first + 2 * m - 2, 2 do redis.call('HINCRBYFLOAT', KEYS[2], 'use|' .. ARGV[j], ARGV[j + 1]) end
      local head = string.match(msg, '^[^|]*|[^|]*|[^|]*|[^|]*|') or msg
      redis.call('HSET', KEYS[1], 'class', cls, 'daemon', ARGV[1], 'head', head)
      return {cls, msg}
    end
  end
  pos = first + 2 * m
end
local fields = redis.call('HGETALL', KEYS[2])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 4) == 'use|' and tonumber(fields[i + 1]) > 1e-9 then return nil end
end
redis.call('DEL', KEYS[2])
return nil
"""

# The worker completed its resource message: free the use, unless the message is still in its processing list
# (the completion did not happen). KEYS: claim, daemon, proc. Returns 1 freed, 0 no claim, -1 still held.
RELEASE_CLAIM = (
    _FREE
    + """
local head = redis.call('HGET', KEYS[1], 'head')
if not head then return 0 end
for _, item in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  if string.sub(item, 1, #head) == head then return -1 end
end
free(redis.call('HGET', KEYS[1], 'class'))
redis.call('DEL', KEYS[1])
return 1
"""
)

# A worker stops or died: its resource message goes back to its class's queue (consumed next), the use is freed.
# KEYS: claim, daemon, proc, the class's queue. ARGV: the class read from the claim. Returns {header, the server's
# time in microseconds} of the message moved, or 0.
REQUEUE_CLAIM = (
    _FREE
    + """
if redis.call('HGET', KEYS[1], 'class') ~= ARGV[1] then return 0 end
local head = redis.call('HGET', KEYS[1], 'head')
local moved = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  if string.sub(item, 1, #head) == head then
    redis.call('LREM', KEYS[3], 1, item)
    redis.call('RPUSH', KEYS[4], item)
    moved = 1
    break
  end
end
free(ARGV[1])
redis.call('DEL', KEYS[1])
if moved == 0 then return 0 end
local now = redis.call('TIME')
return {head, now[1] .. string.format('%06d', tonumber(now[2]))}
"""
)
