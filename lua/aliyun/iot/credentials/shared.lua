--- Fetched credentials shared by every OpenResty worker through a `lua_shared_dict` (the
-- client option `credentials_shared_dict`): one worker fetches, under a lock in the dict,
-- and stores the credentials there until they expire; the others take them from the dict,
-- or wait for the fetch in progress. The dict then holds secrets, as the workers' memory
-- does: it is nginx's shared memory, not a file.
-- @module aliyun.iot.credentials.shared

local cjson = require("cjson.safe").new()
local files = require "aliyun.iot.credentials.files"

local M = {}

-- How long a fetch may hold the lock [s] (STS's read timeout and then some), and the
-- waiting step of the other workers.
local LOCK_TTL, WAIT_STEP = 30, 0.05

--- The dict, or a raise when it does not exist (misuse, found when the client is made).
-- @tparam string name
-- @treturn table `ngx.shared[name]`
function M.dict(name)
  local ngx = rawget(_G, "ngx")
  local dict = ngx and ngx.shared and ngx.shared[name]
  if not dict then
    error(("credentials_shared_dict: lua_shared_dict %s is not defined"):format(tostring(name)), 4)
  end
  return dict
end

-- Credentials kept in the dict, unless they are within their refresh margin (`margin`
-- of their lifetime; nil: unless they expired).
local function stored(dict, key, now, margin)
  local t = cjson.decode(dict:get(key) or "")
  if type(t) ~= "table" or type(t.exp) ~= "number" or type(t.at) ~= "number" then return nil end
  if now >= t.exp - (margin and margin(t.exp - t.at) or 0) then return nil end
  if not (files.nonempty(t.id) and files.nonempty(t.secret)) then return nil end
  return {access_key_id = t.id, access_key_secret = t.secret, security_token = t.token}, t.exp
end

--- Wraps a fetch so that the workers share what it fetches.
-- @tparam table dict `ngx.shared[...]`
-- @tparam string key what identifies these credentials (no secret)
-- @tparam function fetch `fetch() -> creds, expires_at | nil, reason`
-- @tparam function margin `margin(lifetime) -> seconds` before expiry at which stored
--   credentials are stale (the caching provider's)
-- @treturn function a fetch of the same shape
function M.wrap(dict, key, fetch, margin)
  key = "aliyun-iot:credentials:" .. key
  return function()
    local now = os.time()
    local c, exp = stored(dict, key, now, margin)
    if c then return c, exp end
    if not dict:add(key .. ":lock", true, LOCK_TTL) then
      -- another worker is fetching: wait for its result
      local waited = 0
      while dict:get(key .. ":lock") and waited < LOCK_TTL do
        rawget(_G, "ngx").sleep(WAIT_STEP)
        waited = waited + WAIT_STEP
      end
      c, exp = stored(dict, key, os.time())
      if c then return c, exp end
      return nil, "another worker's fetch of these credentials did not succeed"
    end
    -- a worker that fetched may have stored and unlocked between our look and our lock
    c, exp = stored(dict, key, os.time(), margin)
    if c then
      dict:delete(key .. ":lock")
      return c, exp
    end
    local ok, creds, e = pcall(fetch)
    if ok and creds and e then
      local ttl = math.max(1, e - os.time())
      dict:set(key, cjson.encode{id = creds.access_key_id, secret = creds.access_key_secret,
                                 token = creds.security_token, exp = e, at = now}, ttl)
    end
    dict:delete(key .. ":lock")
    if not ok then error(creds, 0) end
    return creds, e
  end
end

return M
