"""The Lua scripts behind rate limits and budgets: one round trip admits a request against
every limit and budget of its key and project, all or nothing.

Rate limits are sliding windows of one-second buckets, in a hash per limit (field: the Unix
second, value: requests or tokens admitted in it). A request at second ``s`` counts buckets
``s - 60`` to ``s``: 61 buckets, so any two admissions less than 60 s apart are counted
together and a limit of N admits at most N in any 60 seconds (at the price of holding an
allowance up to one second longer than the minute). The whole allowance may be used at once.
A GCRA or token bucket would be cheaper (one field), but admits a burst of N and then N more
over the same minute as it refills: up to 2N - 1 in 60 s, which the contract forbids.

Budgets are a hash per budget and period: ``spent`` (settled nano-dollars), ``reserved``
(the sum of the reservations in flight), ``r:<id>`` (each reservation), ``seeded`` (1 once
started from the cost ledger, 2 when started from a gateway's last known spend because billing
did not answer). A sorted set beside it holds each reservation's expiry, so a gateway that
died before settling cannot hold budget forever. Money is whole nano-dollars: Lua numbers are
doubles, exact to 2**53 (nine million dollars of nano-dollars per counter; limits are capped
below that).

Every key a script touches carries the project's hash tag, so one script runs on one slot of
a Redis Cluster. Times come from the server (``TIME``), so replicas with skewed clocks agree;
tests may pass their own.
"""

from __future__ import annotations

# The start of the scripts that read limits: the time (the caller's ARGV[1], else the
# server's), its second, and how many rate and budget limits the KEYS hold (ARGV[2], ARGV[3]).
_CLOCK_AND_COUNTS = """
local now
if ARGV[1] ~= '' then now = tonumber(ARGV[1]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local sec = math.floor(now / 1000)
local nr, nb = tonumber(ARGV[2]), tonumber(ARGV[3])
"""

# KEYS: nr rate hashes, then nb (budget hash, reservation zset) pairs.
# ARGV: now_ms|'', nr, nb, reservation id, lease_ms, then per rate (limit, amount),
#       then per budget (limit, amount, ttl_ms).
# Answer: {verdict, which, retry_ms, second, then per rate (limit, remaining, reset_ms),
#          then per budget (limit, spent, reserved)}.
# verdict: 0 admitted, 1 over a rate limit (which = its index), 2 over a budget (which),
#          3 a budget needs seeding from the ledger (which), 4 larger than a whole limit.
ADMIT = (
    _CLOCK_AND_COUNTS
    + """local rid, lease = ARGV[4], tonumber(ARGV[5])
local a = 6
local verdict, which, retry = 0, 0, 0
local rates = {}
for i = 1, nr do
  local limit, amount = tonumber(ARGV[a]), tonumber(ARGV[a + 1]); a = a + 2
  local h = redis.call('HGETALL', KEYS[i])
  local used, newest, buckets = 0, -1, {}
  for j = 1, #h, 2 do
    local s, c = tonumber(h[j]), tonumber(h[j + 1])
    if s < sec - 60 then redis.call('HDEL', KEYS[i], h[j]) else
      used = used + c
      if s > newest then newest = s end
      buckets[#buckets + 1] = {s, c}
    end
  end
  rates[i] = {limit, amount, used, newest}
  if verdict == 0 and used + amount > limit then
    if amount > limit then verdict, which, retry = 4, i, 0 else
      table.sort(buckets, function(x, y) return x[1] < y[1] end)
      local freed = 0
      for _, b in ipairs(buckets) do
        freed = freed + b[2]
        if used - freed + amount <= limit then
          verdict, which, retry = 1, i, (b[1] + 61) * 1000 - now
          break
        end
      end
    end
  end
end
local budgets = {}
for j = 1, nb do
  local hk, zk = KEYS[nr + 2 * j - 1], KEYS[nr + 2 * j]
  local limit, amount, ttl = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local gone = redis.call('ZRANGEBYSCORE', zk, '-inf', now)
  for _, r in ipairs(gone) do
    local held = redis.call('HGET', hk, 'r:' .. r)
    if held then
      redis.call('HINCRBY', hk, 'reserved', -tonumber(held))
      redis.call('HDEL', hk, 'r:' .. r)
    end
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', zk, '-inf', now) end
  local v = redis.call('HMGET', hk, 'spent', 'reserved', 'seeded')
  local spent, reserved = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  if reserved < 0 then reserved = 0 end
  budgets[j] = {limit, amount, ttl, spent, reserved, hk, zk}
  if not v[3] then
    if verdict == 0 or verdict == 2 then verdict, which = 3, j end
  elseif verdict == 0 and spent + reserved + amount > limit then
    verdict, which = 2, j
  end
end
if verdict == 0 then
  for i = 1, nr do
    -- Even an estimate of 0 makes its bucket, so that its settlement can correct it.
    redis.call('HINCRBY', KEYS[i], sec, rates[i][2])
    rates[i][3] = rates[i][3] + rates[i][2]
    rates[i][4] = sec
    redis.call('PEXPIRE', KEYS[i], 62000)
  end
  for j = 1, nb do
    local b = budgets[j]
    if b[2] > 0 then
      redis.call('HSET', b[6], 'r:' .. rid, b[2])
      redis.call('HINCRBY', b[6], 'reserved', b[2])
      redis.call('ZADD', b[7], now + lease, rid)
      b[5] = b[5] + b[2]
    end
    if b[3] > 0 then
      redis.call('PEXPIRE', b[6], b[3]); redis.call('PEXPIRE', b[7], b[3])
    end
  end
end
local out = {verdict, which, retry, sec}
for i = 1, nr do
  local r = rates[i]
  local reset = 0
  if r[4] >= 0 and r[3] > 0 then reset = (r[4] + 61) * 1000 - now end
  out[#out + 1] = r[1]; out[#out + 1] = math.max(0, r[1] - r[3]); out[#out + 1] = reset
end
for j = 1, nb do
  local b = budgets[j]
  out[#out + 1] = b[1]; out[#out + 1] = b[4]; out[#out + 1] = b[5]
end
return out
"""
)

# KEYS: nt token-rate hashes, then nb (budget hash, reservation zset) pairs.
# ARGV: nt, nb, second of the admission, reservation id, then per token rate the correction
#       (real tokens minus the estimate admitted), then per budget (real cost, ttl_ms).
SETTLE = """
local nt, nb, sec, rid = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local a = 5
for i = 1, nt do
  local delta = tonumber(ARGV[a]); a = a + 1
  if delta ~= 0 and redis.call('HEXISTS', KEYS[i], sec) == 1 then
    if redis.call('HINCRBY', KEYS[i], sec, delta) < 0 then redis.call('HSET', KEYS[i], sec, 0) end
  end
end
for j = 1, nb do
  local hk, zk = KEYS[nt + 2 * j - 1], KEYS[nt + 2 * j]
  local amount, ttl = tonumber(ARGV[a]), tonumber(ARGV[a + 1]); a = a + 2
  local held = redis.call('HGET', hk, 'r:' .. rid)
  if held then
    redis.call('HINCRBY', hk, 'reserved', -tonumber(held))
    redis.call('HDEL', hk, 'r:' .. rid)
    redis.call('ZREM', zk, rid)
  end
  if amount > 0 then redis.call('HINCRBY', hk, 'spent', amount) end
  if ttl > 0 then redis.call('PEXPIRE', hk, ttl) end
end
return 1
"""

# KEYS: a budget hash. ARGV: spend known elsewhere (nano-dollars), source (1 the cost ledger,
# 2 a gateway's last known spend), ttl_ms. Spend only ever rises to what is known; a ledger
# seed marks the counter as started from the ledger. Answers the spend now held.
SEED = """
local known, source, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
if known > spent then redis.call('HSET', KEYS[1], 'spent', known); spent = known end
local seeded = redis.call('HGET', KEYS[1], 'seeded')
if source == '1' or not seeded then redis.call('HSET', KEYS[1], 'seeded', source) end
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return spent
"""

# KEYS: nr rate hashes, then nb budget hashes. ARGV: now_ms|'', nr, nb.
# Answer: per rate (used, reset_ms), then per budget (spent, reserved). Changes nothing.
PEEK = (
    _CLOCK_AND_COUNTS
    + """local out = {}
for i = 1, nr do
  local h = redis.call('HGETALL', KEYS[i])
  local used, newest = 0, -1
  for j = 1, #h, 2 do
    local s, c = tonumber(h[j]), tonumber(h[j + 1])
    if s >= sec - 60 then
      used = used + c
      if s > newest then newest = s end
    end
  end
  local reset = 0
  if newest >= 0 and used > 0 then reset = (newest + 61) * 1000 - now end
  out[#out + 1] = used; out[#out + 1] = reset
end
for j = 1, nb do
  local v = redis.call('HMGET', KEYS[nr + j], 'spent', 'reserved')
  out[#out + 1] = tonumber(v[1] or '0'); out[#out + 1] = math.max(0, tonumber(v[2] or '0'))
end
return out
"""
)
