--- A provider over a fetch function: credentials are cached and fetched again a margin
-- before they expire, by one caller at a time however many wait (others keep the
-- unexpired credentials in hand, or, inside OpenResty, wait for the fetch in progress);
-- when a refresh fails, the credentials in hand stay in use until they expire (the
-- official Python and Java SDKs do so for ECS; we do it for every provider, docs/wire.md
-- §8 "Refreshing").
-- @module aliyun.iot.credentials.cached

local cosocket = require "aliyun.iot.transport.cosocket"
local errors = require "aliyun.iot.errors"

local M = {}

--- The most seconds before expiry at which credentials are fetched again (the Go SDK's 180 s).
M.MARGIN = 180

-- A fetch in another light thread is waited for at most this long, in small sleeps.
local WAIT_STEP, WAIT_MAX = 0.05, 30

local function sleeper()
  if cosocket.usable() then return rawget(_G, "ngx").sleep end
end

--- The default refresh margin: 180 s, at most a quarter of the credentials' lifetime.
-- @tparam number lifetime seconds
-- @treturn number seconds before expiry
function M.margin(lifetime) return math.min(M.MARGIN, lifetime / 4) end

-- Why credentials expiring at `exp` cannot be used at `now`, or nil. Credentials already
-- expired (a server's or user's clock far off, a stale cache behind a credentials URI)
-- would be fetched again at every call and every request sent with them refused; NaN
-- (cjson reads it) would do the same.
local function unusable_expiry(exp, now)
  if exp == nil then return nil end
  if type(exp) ~= "number" or exp ~= exp then
    return "the credentials came with an expiration that is not a time"
  end
  if exp < now then -- whole seconds: one that ends this second may still serve
    return ("the credentials fetched had already expired, %.0f s ago by this machine's "
      .. "clock (is it right?)"):format(now - exp)
  end
end

--- Makes a caching provider.
-- @tparam table o `source` (string, no secret), `fetch() -> creds, expires_at | nil, reason`
--   (`expires_at` epoch seconds or nil for credentials that never expire; credentials
--   already expired count as a failed fetch; may raise: the message is kept), `code`
--   (the error code of a failure), `new_error`, `logger`,
--   `margin(lifetime) -> seconds` (default: 180 s, at most a quarter of the lifetime, so
--   that short-lived credentials are not fetched at every call)
-- @treturn table provider `{source=, get=, refreshes=}`: `get() -> creds | nil, err`;
--   `refreshes` counts the fetches made
function M.new(o)
  local cached, expires_at, refresh_at, busy
  local p = {source = o.source, refreshes = 0, fetched = true}
  local margin = o.margin or M.margin

  local function fetch(now)
    busy = true
    p.refreshes = p.refreshes + 1
    local ok, c, exp = pcall(o.fetch)
    busy = false
    -- a failed fetch is a verdict on the provider; a signal is not, and stops the job
    if not ok and errors.signal(c) then error(c, 0) end
    local why = ok and c and unusable_expiry(exp, now)
    if ok and c and not why then
      cached, expires_at = c, exp
      refresh_at = exp and exp - margin(math.max(exp - now, 0))
      return cached
    end
    why = why or tostring(not ok and c or exp)
    if cached and (not expires_at or now < expires_at) then
      if o.logger then
        o.logger("warn", ("%s: %s; keeping the current credentials until they expire")
          :format(p.source, why))
      end
      return cached
    end
    return nil, o.new_error{code = o.code, message = p.source .. ": " .. why}
  end

  function p.get()
    local now = os.time()
    if cached and (not refresh_at or now < refresh_at) then return cached end
    if busy then
      if cached and now < expires_at then return cached end
      local sleep = sleeper()
      local waited = 0
      while busy and sleep and waited < WAIT_MAX do
        sleep(WAIT_STEP)
        waited = waited + WAIT_STEP
      end
      if busy or not cached then
        return nil, o.new_error{code = o.code,
          message = p.source .. ": another fetch of these credentials is in progress"}
      end
      return cached
    end
    return fetch(now)
  end
  return p
end

return M
