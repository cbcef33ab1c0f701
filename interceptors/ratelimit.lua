-- One rate-limit decision for one call, atomic in Redis (GCRA; see ratelimit.py for why).
--
-- KEYS[i]           state of one limited subject: its theoretical arrival time (TAT), in ms
-- ARGV[2i-1]        that subject's limit (requests per window)
-- ARGV[2i]          that subject's window, in ms
-- Returns           {allowed (1|0), then per key: remaining, reset_ms, retry_after_ms}
--
-- Every limit is checked first and the new TATs are written only when all allow, so a
-- call rejected by one budget consumes none of the others.
-- The clock is Redis's own TIME, so replicas with skewed clocks still agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local allowed = 1
local out = {0}
local new_tats = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local interval = window / limit
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - window
  local remaining, reset, retry = 0, tat - now, 0
  if allow_at <= now then
    -- the epsilon keeps 5.9999999 from flooring to 5 when window/limit is not exact
    remaining = math.floor((now + window - new_tat) / interval + 1e-9)
    reset = new_tat - now
  else
    allowed = 0
    retry = allow_at - now
  end
  new_tats[i] = new_tat
  out[#out + 1] = remaining
  -- Lua numbers reach Redis truncated to integers: round the times up explicitly.
  out[#out + 1] = math.ceil(reset)
  out[#out + 1] = math.ceil(retry)
end
if allowed == 1 then
  for i, key in ipairs(KEYS) do
    -- The key lives exactly until the subject's budget is full again.
    redis.call('SET', key, string.format('%.3f', new_tats[i]), 'PX', math.max(1, math.ceil(new_tats[i] - now)))
  end
end
out[1] = allowed
return out
