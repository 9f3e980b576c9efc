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

-- An IPv4 address as a 32-bit number, nil for anything else.
local function ipv4(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  if not (a and a < 256 and b < 256 and c < 256 and d < 256) then return nil end
  return ((a * 256 + b) * 256 + c) * 256 + d
end

-- True when the IPv4 `host` is in the block `cidr` ("10.0.0.0/8").
local function in_block(host, cidr)
  local addr, bits = cidr:match("^([%d%.]+)/(%d+)$")
  local h, a, n = ipv4(host), addr and ipv4(addr), tonumber(bits)
  if not (h and a and n and n <= 32) then return false end
  local size = 2 ^ (32 - n)
  return math.floor(h / size) == math.floor(a / size)
end

-- True when one NO_PROXY entry covers host:port: `*`; an IPv4 block ("10.0.0.0/8"); else
-- a name or address, with an optional ":port" and a leading "." or "*." ignored, that is
-- the host or a domain it is in (`example.com`, `.example.com` and `*.example.com` all
-- cover `iot.example.com`), as curl and Go's net/http read the list.
local function covers(entry, host, port)
  if entry == "*" then return true end
  if entry:find("/", 1, true) then return in_block(host, entry) end
  local name, p = entry:match("^%[(.-)%]:?(%d*)$")
  if not name then
    name, p = entry:match("^([^:]*):(%d+)$")
    name = name or entry -- an IPv6 address without brackets has no port
  end
  if p and p ~= "" and p ~= port then return false end
  name = name:gsub("^%*?%.", "")
  return name ~= "" and (host == name or host:sub(-(#name + 1)) == "." .. name)
end

-- True when NO_PROXY (or no_proxy) covers the host and port.
local function bypassed(host, port)
  local list = env("NO_PROXY", "no_proxy")
  if not list then return false end
  host = host:lower()
  for entry in list:gmatch("[^,%s]+") do
    if covers(entry:lower(), host, port) then return true end
  end
  return false
end

-- The scheme, host (no brackets, no user) and port (default by scheme) of a URL.
local function parts(url)
  local scheme, authority = url:match("^(%a+)://([^/?#]*)")
  if not scheme then return nil end
  scheme, authority = scheme:lower(), authority:gsub("^.*@", "")
  local host, port = authority:match("^%[(.-)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]*):?(%d*)$") end
  if not host then return nil end
  if port == "" then port = scheme == "https" and "443" or "80" end
  return scheme, host, port
end

--- The proxy for a URL, as the official SDKs choose it: the `proxy` option when given,
-- else `HTTPS_PROXY` / `https_proxy` for https URLs and `HTTP_PROXY` / `http_proxy` for
-- http ones, unless `NO_PROXY` / `no_proxy` covers the host (names, domains, `*.domain`,
-- `host:port`, IPv4 blocks such as `10.0.0.0/8`, `*`). The answer is always explicit
-- ("" for none), so that libcurl's own choice of proxy variables never applies; libcurl
-- still skips a proxy for hosts its own reading of NO_PROXY names (a subset of these on
-- libcurl 7.86 and later).
-- @tparam string url
-- @tparam ?string option the `proxy` option
-- @treturn string proxy URL, or "" for a direct connection
function M.proxy_for(url, option)
  if option then return option end
  local scheme, host, port = parts(url)
  if not scheme then return "" end
  local proxy = scheme == "https" and env("HTTPS_PROXY", "https_proxy")
    or scheme == "http" and env("HTTP_PROXY", "http_proxy")
  if not proxy or bypassed(host, port) or proxy:find("[%z\r\n]") then return "" end
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
