-- One rate-limit decision for one call (or, on Redis Cluster, for the part of it whose keys
-- share one hash slot), atomic in Redis (GCRA; see ratelimit.py for why).
--
-- ARGV[1]             n, the number of budgets
-- ARGV[2]             1 when the failed sign-in gate is checked here (Login), else 0
-- ARGV[3]             m, the number of planned reads
-- KEYS[i], i <= n     state of one limited subject: its theoretical arrival time (TAT), in ms
-- ARGV[2i+2], ARGV[2i+3]  that subject's limit (requests per window) and window, in ms
-- The gate (ratelimit.py, "Login throttling") adds:
-- KEYS[n+1]           the (email, IP) record: a hash {f = failures, t = last attempt in ms}
-- KEYS[n+2]           the email's failure TAT, in ms (a GCRA over failures, not requests)
-- next 4 ARGV         the email's failure limit, the window in ms, the free failures,
--                     the first backoff in ms
-- Then per planned read (taskapi.server.cache.reads): its key in KEYS, and in ARGV the hash
-- field to HGET, or '' to GET the key.
-- Returns             {allowed (1|0), then per budget: remaining, reset_ms, retry_after_ms,
--                      then, with the gate, its retry_after_ms and the failure charged to
--                      the email in ms (what a refund gives back), then, when allowed and
--                      m > 0, this node's replication id (the cache epoch) and each read's reply}
--
-- Every check runs first and the writes only when all allow, so a call rejected by one
-- check consumes none of the others. An allowed Login is charged as a failure up front,
-- so concurrent guesses cannot all pass one check; the server refunds the charge when
-- the password was right or the call failed for another reason.
-- The clock is Redis's own TIME, so replicas with skewed clocks still agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local gate = ARGV[2] == '1'
local m = tonumber(ARGV[3])
local allowed = 1
local out = {0}
local new_tats = {}
for i = 1, n do
  local limit = tonumber(ARGV[2 * i + 2])
  local window = tonumber(ARGV[2 * i + 3])
  local interval = window / limit
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - window
  -- SLACK_MS (ratelimit.py): a call less than 1 ms (at most half an interval) early is on
  -- time, and the figures count from that instant; sums of fractional intervals otherwise land
  -- a hair past a turn that should fit, refusing a burst's last call and under-counting remaining
  local ahead = now + math.min(1, interval / 2)
  local remaining, reset, retry = 0, tat - ahead, 0
  if allow_at <= ahead then
    remaining = math.max(0, math.floor((ahead + window - new_tat) / interval))
    reset = new_tat - ahead
  else
    allowed = 0
    retry = allow_at - ahead
  end
  new_tats[i] = new_tat
  out[#out + 1] = remaining
  -- Lua numbers reach Redis truncated to integers: round the times up explicitly.
  out[#out + 1] = math.ceil(reset)
  out[#out + 1] = math.ceil(retry)
end

local pair, email, failures, window, email_tat, interval
if gate then
  pair, email = KEYS[n + 1], KEYS[n + 2]
  local limit = tonumber(ARGV[2 * n + 4])
  window = tonumber(ARGV[2 * n + 5])
  local free, backoff = tonumber(ARGV[2 * n + 6]), tonumber(ARGV[2 * n + 7])
  local record = redis.call('HMGET', pair, 'f', 't')
  failures = tonumber(record[1]) or 0
  local last = tonumber(record[2]) or now
  local wait_until = now
  if failures > 0 and failures >= free then
    -- each failure past the free ones doubles the wait, up to the window
    wait_until = last + math.min(window, backoff * 2 ^ (failures - free))
  end
  interval = window / limit
  email_tat = math.max(tonumber(redis.call('GET', email)) or now, now)
  local cell_at = email_tat + interval - window -- when the email can take one more failure
  if failures > 0 and cell_at > now + math.min(1, interval / 2) then
    -- The email's bound is spent. An address that failed waits for a free cell, or until
    -- its own failures are forgotten; a clean address is not held back (the owner's).
    wait_until = math.max(wait_until, math.min(cell_at, last + window))
  end
  local retry = 0
  if wait_until > now then
    allowed = 0
    retry = wait_until - now
  end
  out[#out + 1] = math.ceil(retry)
  out[#out + 1] = 0
end

if allowed == 1 then
  for i = 1, n do
    -- The key lives exactly until the subject's budget is full again.
    -- %.17g: the exact double, so stored sums of fractional intervals gather no rounding
    redis.call('SET', KEYS[i], string.format('%.17g', new_tats[i]), 'PX', math.max(1, math.ceil(new_tats[i] - now)))
  end
  if gate then
    redis.call('HSET', pair, 'f', failures + 1, 't', now)
    redis.call('PEXPIRE', pair, window)
    -- Capped at a full window: guesses past the bound do not keep failing addresses out longer.
    local charged = math.min(email_tat + interval, now + window)
    redis.call('SET', email, string.format('%.17g', charged), 'PX', math.max(1, math.ceil(charged - now)))
    out[#out] = tostring(charged - email_tat) -- a string: an integer reply would truncate it
  end
end
out[1] = allowed
if allowed == 1 and m > 0 then
  -- The planned reads, with the epoch their tagged values are checked against: the id of the
  -- history this node serves, which a failover replaces (taskapi.server.cache.shared).
  out[#out + 1] = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)') or ''
  local first_key, first_arg = n + (gate and 2 or 0), 2 * n + 3 + (gate and 4 or 0)
  for j = 1, m do
    local key, field = KEYS[first_key + j], ARGV[first_arg + j]
    if field == '' then
      out[#out + 1] = redis.call('GET', key)
    else
      out[#out + 1] = redis.call('HGET', key, field)
    end
  end
end
return out
