--- HTTP for the credentials providers (STS, instance metadata, a credentials URI) and the
-- checks of what they answer. Requests go through their own libcurl session (one per
-- process), with short timeouts and a small body cap; nothing a server sends is trusted:
-- every field is type-checked, and a message never quotes a body (it may hold a secret).
--
-- Inside OpenResty's request and timer phases they go through cosockets (the worker is
-- not blocked; a proxy cannot apply there); elsewhere through libcurl. A provider fetches
-- at most once per expiry, one fetch at a time (`aliyun.iot.credentials.cached`).
-- @module aliyun.iot.credentials.fetch

local curl = require "aliyun.iot.transport.curl"
local cosocket = require "aliyun.iot.transport.cosocket"
local dates = require "aliyun.iot.dates"
local errors = require "aliyun.iot.errors"
local files = require "aliyun.iot.credentials.files"
local cjson = require("cjson.safe").new()

local M = {}

-- A credentials answer is a few hundred bytes; a role list a few names.
local MAX_BODY = 65536

local session

--- Sends one request.
-- @tparam table req as for `aliyun.iot.transport.curl` (`method`, `url`, `headers`,
--   `body`, `timeout` [s], `connect_timeout` [s], `proxy`: "" never proxies)
-- @treturn ?table `{status=, headers=, body=}`
-- @treturn ?string why it failed (the transport's code and message)
function M.request(req)
  req.max_response_size = MAX_BODY
  if req.proxy ~= "" then req.proxy = curl.proxy_for(req.url, req.proxy) end
  local res, err
  if cosocket.usable() then
    -- inside OpenResty's request phases: other light threads go on while this waits
    res, err = cosocket.request(req)
  else
    session = session or curl.new{user_agent = curl.user_agent()}
    res, err = session:request(req)
  end
  if not res then
    return nil, ("%s: %s"):format(tostring(err.code), errors.printable(tostring(err.message)))
  end
  return res
end

--- Decodes a JSON object answer.
-- @tparam table res
-- @treturn ?table the object
-- @treturn ?string why not (HTTP status, not JSON, not an object)
function M.json(res)
  local t = cjson.decode(res.body or "")
  if type(t) ~= "table" then
    return nil, ("HTTP %d, the answer is not a JSON object"):format(res.status)
  end
  return t
end

-- A server's short text (a Code, a RequestId) fit for a message: printable and bounded.
local function short(v)
  if type(v) ~= "string" and type(v) ~= "number" then return nil end
  v = errors.printable(tostring(v))
  return #v > 80 and v:sub(1, 80) .. "..." or v
end
M.short = short

--- Checks a credentials object as STS, the metadata service and credentials URIs send it:
-- `AccessKeyId`, `AccessKeySecret`, `SecurityToken` (non-empty strings, the id and token
-- sendable) and `Expiration` (ISO 8601).
-- @tparam table t
-- @treturn ?table `{access_key_id=, access_key_secret=, security_token=}`
-- @treturn number|string the expiry in epoch seconds, or why the object was refused
function M.credentials(t)
  if type(t) ~= "table" then return nil, "the answer holds no credentials" end
  for _, k in ipairs{"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"} do
    if not files.nonempty(t[k]) then return nil, "the answer lacks " .. k end
  end
  if files.unsendable(t.AccessKeyId) or files.unsendable(t.SecurityToken) then
    return nil, "the answer's AccessKeyId or SecurityToken holds NUL, CR or LF"
  end
  local exp = dates.iso8601(t.Expiration)
  if not exp then return nil, "the answer's Expiration is not an ISO 8601 date-time" end
  return {access_key_id = t.AccessKeyId, access_key_secret = t.AccessKeySecret,
          security_token = t.SecurityToken}, exp
end

return M
