--- The default transport: libcurl through the C core's session (keep-alive, TLS
-- verification, multi-interface fan-out).
-- A transport is a function `(req) -> res | nil, err` (see `aliyun.iot.new`); this module
-- is also an object factory, so each client owns a session whose connections it reuses.
-- @module aliyun.iot.transport.curl

local core = require "aliyun.iot.core"

local M = {}

--- The user agent to send: `given` (else ours, the C session's default), with
-- `ALIBABA_CLOUD_USER_AGENT` appended when that is set, as the official SDKs do.
-- @tparam ?string given
-- @treturn ?string nil when neither is set (the session's default then applies)
function M.user_agent(given)
  local extra = os.getenv("ALIBABA_CLOUD_USER_AGENT")
  if extra == nil or extra == "" or extra:find("[%z\r\n]") then return given end
  local ours = given or ("aliyun-iot/%s %s"):format(core._VERSION,
    rawget(_G, "jit") and rawget(_G, "jit").version:gsub(" ", "/") or _VERSION:gsub(" ", "/"))
  return ours .. " " .. extra
end

local function env(a, b)
  local v = os.getenv(a) or os.getenv(b)
  if v == "" then return nil end
  return v
end

-- True when NO_PROXY (or no_proxy) names the host: `*`, the host itself, or a domain it
-- is in (`example.com` and `.example.com` both cover `iot.example.com`).
local function bypassed(host)
  local list = env("NO_PROXY", "no_proxy")
  if not list then return false end
  host = host:lower()
  for entry in list:gmatch("[^,%s]+") do
    entry = entry:lower():gsub("^%.", "")
    if entry == "*" or host == entry or host:sub(-(#entry + 1)) == "." .. entry then
      return true
    end
  end
  return false
end

--- The proxy for a URL, as the official SDKs choose it: the `proxy` option when given,
-- else `HTTPS_PROXY` / `https_proxy` for https URLs and `HTTP_PROXY` / `http_proxy` for
-- http ones, unless `NO_PROXY` / `no_proxy` names the host. The answer is always explicit
-- ("" for none), so that libcurl's own environment rules, which differ, never apply.
-- @tparam string url
-- @tparam ?string option the `proxy` option
-- @treturn string proxy URL, or "" for a direct connection
function M.proxy_for(url, option)
  if option then return option end
  local scheme, host = url:match("^(%a+)://%[?([^/:%]?#]*)")
  if not scheme then return "" end
  local proxy = scheme:lower() == "https" and env("HTTPS_PROXY", "https_proxy")
    or scheme:lower() == "http" and env("HTTP_PROXY", "http_proxy")
  if not proxy or bypassed(host) or proxy:find("[%z\r\n]") then return "" end
  return proxy
end

local Transport = {}
Transport.__index = Transport

--- Makes a transport object owning one libcurl session.
-- @tparam[opt] table opts `{user_agent=}`
-- @treturn table object with `request`, `request_many`, `close`
function M.new(opts)
  return setmetatable({session = core.session(opts)}, Transport)
end

--- Sends one request.
-- @tparam table req `{method=, url=, headers=, body=, timeout= [s], connect_timeout= [s],
--   max_response_size= [bytes], ca_file=, proxy=, fresh_connect=}`
-- @treturn ?table `{status=, headers= (lower-case names), body=}`
-- @treturn ?table err `{code=, message=, sent=}` (ConnectFailed, Timeout,
--   ConnectionReset, TLSError, ResponseTooLarge, TransportError)
function Transport:request(req)
  return self.session:perform(req)
end

--- Sends many requests at once over libcurl's multi interface.
-- @tparam {table,...} reqs requests as for `request`, each may carry `not_before`
--   (a `core.now()` time before which it is not started)
-- @tparam integer concurrency most requests in flight at once
-- @treturn table responses, @treturn table errors (exactly one set per index)
function Transport:request_many(reqs, concurrency)
  return self.session:perform_many(reqs, concurrency)
end

--- Closes the session's connections (idempotent).
function Transport:close()
  self.session:close()
end

local shared

--- The transport as a plain function, for `iot.new{transport = iot.transports.curl}` and
-- for wrapping: one process-wide session.
-- @tparam table req as for `Transport:request`
function M.request(req)
  shared = shared or M.new()
  return shared:request(req)
end

return M
