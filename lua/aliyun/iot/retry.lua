--- Retry policy: whether a failed attempt is repeated, after how long, and what the
-- server's `Date` header teaches about our clock.
-- @module aliyun.iot.retry

local core = require "aliyun.iot.core"
local dates = require "aliyun.iot.dates"

local M = {}

--- Largest clock offset learnt from a `Date` header [s]; beyond it the header is ignored
-- (a gateway's broken clock must not make every later call sign for another year).
M.MAX_OFFSET = 86400

--- Backoff with full jitter: a random wait up to base * 2^attempt, capped at 8 s. The
-- randomness comes from OpenSSL (`core.random`), so processes do not retry in step.
-- @tparam integer attempt attempts made so far minus one
-- @tparam boolean throttled the answer was a throttling error
-- @treturn number seconds
function M.backoff(attempt, throttled)
  local base = throttled and 0.5 or 0.2
  return core.random() * math.min(8, base * 2 ^ attempt)
end

--- Learns the clock offset from an `InvalidTimeStamp.Expired` answer's Date header.
-- @tparam table c the client (`clock_offset` is set, `log` told)
-- @tparam table e the error (`e.date`)
-- @treturn boolean true when the offset was learnt
function M.learn_offset(c, e)
  local server = dates.http(e.date)
  if not server then return false end
  local offset = server - core.time()
  if not (math.abs(offset) <= M.MAX_OFFSET) then
    c.log("warn", ("ignoring the server's Date header %s: %.0f s away from our clock")
      :format(e.date, offset))
    return false
  end
  c.clock_offset = offset
  c.log("warn", ("clock offset of %.0f s learnt from the server's Date header"):format(offset))
  return true
end

--- Decides what follows a failed attempt.
-- @tparam table c the client
-- @tparam table item the request's state: `row`, `flat`, `attempt`, `skew_fixed`,
--   `retry_deadline`, `max_retries`, `deadline`
-- @tparam table e the attempt's error
-- @treturn ?string `"retry"`, `"resolve"` (a named RegisterDevice whose answer was lost:
--   repeat once and read the device back) or nil (give up)
-- @treturn ?number the pause before the repeat [s]
-- @treturn ?boolean true when only a deadline stopped a repeat
function M.decide(c, item, e)
  if item.resolving then return nil end
  local row = item.row
  local retry = e.retryable or (e.ambiguous and row.retry == "idempotent")
  local throttled = e.throttled or e.code:find("^Throttling") ~= nil
  if e.code == "InvalidTimeStamp.Expired" and not item.skew_fixed and M.learn_offset(c, e) then
    item.skew_fixed, retry = true, true
  end
  local named = e.ambiguous and row.retry == "named" and item.params.DeviceName ~= nil
  if not (retry or named) or item.attempt >= item.max_retries then return nil end
  -- never sooner than the server's x-acs-retry-after
  local delay = math.max(M.backoff(item.attempt, throttled), e.retry_after or 0)
  local at = c:clock() + delay
  if at > item.retry_deadline then return nil end
  if item.deadline and at >= item.deadline then return nil, nil, true end
  return named and "resolve" or "retry", delay
end

return M
