--- Alibaba Cloud IoT Platform (API version 2018-01-20) client.
--
--     local iot = require "aliyun.iot"
--     local client = assert(iot.new{region_id = "cn-shanghai"})
--     local res, err = client:batch_register_device{ProductKey = "a1...", Count = 10}
--
-- Every call goes through one pipeline: validate (action table) -> flatten -> common
-- parameters (fresh nonce and timestamp per attempt) -> sign -> pace -> send -> decode ->
-- classify -> retry. Results keep the API's own field names, so the official docs apply.
-- Network and service failures return `nil, err` (see `aliyun.iot.errors`); misuse (a
-- wrong argument type, an unknown option) raises.
-- @module aliyun.iot

local core = require "aliyun.iot.core"
local actions = require "aliyun.iot.actions"
local validate = require "aliyun.iot.validate"
local errors = require "aliyun.iot.errors"
local shape = require "aliyun.iot.shape"
local credentials = require "aliyun.iot.credentials"
local pacer = require "aliyun.iot.pacer"
local curl = require "aliyun.iot.transport.curl"

local API_VERSION = "2018-01-20"

local M = {_VERSION = core._VERSION, API_VERSION = API_VERSION, errors = errors}

--- Built-in transports, each a function `(req) -> res | nil, err`: `curl` (the default,
-- libcurl) and `cosocket` (OpenResty's non-blocking sockets, loaded on first use).
M.transports = setmetatable({curl = curl.request}, {
  __index = function(t, k)
    if k == "cosocket" then
      local f = require("aliyun.iot.transport.cosocket").request
      rawset(t, k, f)
      return f
    end
  end,
})

local DEFAULTS = {
  region_id = "cn-shanghai",
  timeout = 30,
  connect_timeout = 5,
  format = "JSON",
  signature_algorithm = "HMAC-SHA1",
  max_retries = 3,
  retry_deadline = 60,
  max_response_size = 16 * 1024 * 1024,
  -- The limit BatchRegisterDevice's seed page states; current docs allow 10,000.
  max_batch_size = 1000,
  qps = true,
}

-- Option name -> accepted Lua types. A name not listed here is a typo and raises.
local OPTION_TYPES = {
  access_key_id = "string", access_key_secret = "string", security_token = "string",
  credentials = "function", region_id = "string", endpoint = "string",
  iot_instance_id = "string", timeout = "number", connect_timeout = "number",
  ca_file = "string", proxy = "string", format = "string", signature_algorithm = "string",
  max_retries = "number", retry_deadline = "number", max_response_size = "number",
  max_batch_size = "number", qps = "boolean|table", transport = "function",
  logger = "function", qps_shared_dict = "string", user_agent = "string",
}

local CALL_OPTION_TYPES = {
  timeout = "number", connect_timeout = "number", max_retries = "number",
  format = "string", method = "string",
}

local function check_options(opts, types, what, level)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("%s must be a table, got %s"):format(what, type(opts)), level + 1)
  end
  for k, v in pairs(opts) do
    local want = types[k]
    if not want then
      error(("unknown %s option '%s'"):format(what, tostring(k)), level + 1)
    end
    local ok = false
    for t in want:gmatch("[^|]+") do ok = ok or type(v) == t end
    if not ok then
      error(("%s option '%s' must be a %s, got %s"):format(what, k, want, type(v)), level + 1)
    end
  end
  return opts
end

local function invalid(parameter, message)
  return errors.new{code = "InvalidParameter", message = message, parameter = parameter}
end

-- Checks the values of call options (their names and types were checked already).
local function call_option_problem(o)
  for _, k in ipairs{"timeout", "connect_timeout"} do
    local v = o[k]
    if v ~= nil and not (v > 0 and v <= 86400) then
      return k, k .. " must be a number of seconds above 0 (at most a day)"
    end
  end
  local r = o.max_retries
  if r ~= nil and not (r >= 0 and r <= 100 and r == math.floor(r)) then
    return "max_retries", "max_retries must be a whole number from 0 to 100"
  end
  if o.format ~= nil and o.format:upper() ~= "JSON" and o.format:upper() ~= "XML" then
    return "format", "format must be JSON or XML"
  end
  if o.method ~= nil and o.method:upper() ~= "GET" and o.method:upper() ~= "POST" then
    return "method", "method must be GET or POST"
  end
end

-- Checks an endpoint URL: http(s) only, no credentials in it, no control characters.
-- Returns scheme, host (with port) or nil and a reason.
local function parse_endpoint(url)
  if url:find("[%c%s]") then return nil, "must not contain spaces or control characters" end
  local scheme, authority, path = url:match("^(https?)://([^/?#]+)(.*)$")
  if not scheme then return nil, "must be an http:// or https:// URL" end
  if authority:find("@", 1, true) then
    return nil, "must not carry credentials (user:password@); pass access keys as options"
  end
  if path ~= "" and path ~= "/" then return nil, "must have no path beyond /" end
  return scheme, authority
end

-- Seconds to add to the local clock, learnt from a server's Date header after an
-- InvalidTimeStamp.Expired answer (a skewed container clock is common).
local MONTHS = {Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
                Sep = 9, Oct = 10, Nov = 11, Dec = 12}

local function http_date_epoch(s)
  local d, mon, y, h, mi, sec = (s or ""):match("(%d+) (%a+) (%d+) (%d+):(%d+):(%d+)")
  if not d or not MONTHS[mon] then return nil end
  y, mon = tonumber(y), MONTHS[mon]
  -- days from civil (proleptic Gregorian), independent of the local time zone
  local yy = mon <= 2 and y - 1 or y
  local era = math.floor(yy / 400)
  local yoe = yy - era * 400
  local mp = (mon + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + tonumber(d) - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
end

-- Inside OpenResty's request, timer and similar phases the client must not block the
-- worker: it sends through cosockets and sleeps with ngx.sleep. Elsewhere (init_by_lua,
-- set_by_lua, header/body filters, or plain Lua) it uses libcurl and core.sleep.
local COSOCKET_PHASES = {rewrite = true, server_rewrite = true, access = true, content = true,
                         timer = true, ssl_cert = true, ssl_session_fetch = true,
                         ssl_client_hello = true}

local function in_cosocket_phase()
  local ngx = rawget(_G, "ngx")
  return ngx ~= nil and ngx.get_phase ~= nil and COSOCKET_PHASES[ngx.get_phase()] == true
end

local Client = {}
Client.__index = Client
Client.__name = "aliyun.iot.Client"

--- Makes a client.
-- @tparam table opts options (all optional; units in brackets):
--   `access_key_id`, `access_key_secret`, `security_token`; `credentials` (function
--   returning `{access_key_id=, access_key_secret=, security_token=, expiration=}`,
--   called when needed); without these, the environment, `~/.aliyun/config.json` and
--   `~/.alibabacloud/credentials` are read (see `aliyun.iot.credentials`);
--   `region_id` ("cn-shanghai"); `endpoint` ("https://iot.<region_id>.aliyuncs.com/");
--   `iot_instance_id` (sent with every call); `timeout` [s, 30]; `connect_timeout` [s, 5];
--   `ca_file`; `proxy`; `format` ("JSON" or "XML"); `signature_algorithm`
--   ("HMAC-SHA1" or "ACS3-HMAC-SHA256"); `max_retries` (3, retries after the first
--   attempt); `retry_deadline` [s, 60]; `max_response_size` [bytes, 16 MiB];
--   `max_batch_size` (1000, up to 10000); `qps` (true: the documented limits, false, or
--   a table Action -> requests per second); `transport` (function `(req) -> res | nil,
--   err`); `logger` (function `(level, message)`, receives redacted text only);
--   `qps_shared_dict` (OpenResty: lua_shared_dict name for pacing across workers);
--   `user_agent`.
-- @treturn ?table client
-- @treturn ?table err `InvalidParameter` for a bad option value, `NoCredentials` when
--   no credentials were found (the message lists where it looked)
-- @raise when opts is not a table, an option name is unknown or has the wrong type
function M.new(opts)
  opts = check_options(opts, OPTION_TYPES, "client", 2)
  local self = setmetatable({}, Client)
  for k, v in pairs(DEFAULTS) do self[k] = v end
  for k, v in pairs(opts) do self[k] = v end

  self.format = self.format:upper()
  if self.format ~= "JSON" and self.format ~= "XML" then
    return nil, invalid("format", "format must be JSON or XML")
  end
  if self.signature_algorithm ~= "HMAC-SHA1" and self.signature_algorithm ~= "ACS3-HMAC-SHA256" then
    return nil, invalid("signature_algorithm",
      "signature_algorithm must be HMAC-SHA1 or ACS3-HMAC-SHA256")
  end
  if self.max_batch_size < 1 or self.max_batch_size > 10000
      or self.max_batch_size ~= math.floor(self.max_batch_size) then
    return nil, invalid("max_batch_size", "max_batch_size must be an integer from 1 to 10000")
  end
  for _, k in ipairs{"timeout", "connect_timeout", "retry_deadline", "max_response_size"} do
    if not (self[k] > 0) then return nil, invalid(k, k .. " must be positive") end
  end
  for _, k in ipairs{"timeout", "connect_timeout"} do
    if not (self[k] <= 86400) then
      return nil, invalid(k, k .. " must be at most a day (86400 s)")
    end
  end
  if self.max_retries < 0 or self.max_retries ~= math.floor(self.max_retries) then
    return nil, invalid("max_retries", "max_retries must be a whole number >= 0")
  end
  if self.region_id:find("[^%w%-]") then
    return nil, invalid("region_id", "region_id may only hold letters, digits and -")
  end
  self.endpoint = self.endpoint or ("https://iot.%s.aliyuncs.com/"):format(self.region_id)
  local scheme, host = parse_endpoint(self.endpoint)
  if not scheme then return nil, invalid("endpoint", "endpoint " .. host) end
  self.host = host
  self.url = scheme .. "://" .. host .. "/"
  for _, k in ipairs{"iot_instance_id", "ca_file", "proxy", "user_agent", "security_token"} do
    if self[k] and self[k]:find("[%z\r\n]") then
      return nil, invalid(k, k .. " must not contain NUL, CR or LF")
    end
  end

  local user_logger = self.logger
  self:_watch_secrets(self.access_key_secret, self.security_token)
  self.redact = function(text) return self._redactor(text) end
  self.log = function(level, message)
    if user_logger then user_logger(level, self.redact(message)) end
  end

  local provider, err = credentials.resolve(opts, self.log, errors.new)
  if not provider then return nil, err end
  self.creds = provider

  -- One pacing budget per account in a process: pacers that share the clock function
  -- (core.now) and scope share their slots. With qps_shared_dict, nginx's clock and the
  -- shared dict take over so that all workers together keep the limits.
  local limits = false
  if self.qps == true then
    limits = pacer.DEFAULT_LIMITS
  elseif type(self.qps) == "table" then
    limits = {}
    for k, v in pairs(pacer.DEFAULT_LIMITS) do limits[k] = v end
    for k, v in pairs(self.qps) do limits[k] = v end
  end
  local shared = self.qps_shared_dict
  self.pacer = pacer.new{limits = limits, scope = self.access_key_id, shared_dict = shared,
                         now = not shared and core.now or nil,
                         -- ngx.sleep raises outside yielding phases (set_by_lua, init...)
                         sleep = function(s) self:_sleep(s) end}
  self.clock_offset = 0
  self.counters = {requests = 0, retries = 0, throttled = 0, bytes_sent = 0,
                   bytes_received = 0}
  return self
end

-- Builds the redactor for these secrets, unless it has them already: credentials found
-- in the environment, files or a credentials function are known only once fetched, and an
-- STS token may change mid-job.
function Client:_watch_secrets(secret, token)
  if self._redactor and secret == self._secret and token == self._token then return end
  self._secret, self._token = secret, token
  self._redactor = errors.redactor{secret, token}
end

-- The credentials for the next attempt, their secrets known to the redactor.
function Client:_credentials()
  local creds, err = self.creds:get()
  if creds then self:_watch_secrets(creds.access_key_secret, creds.security_token) end
  return creds, err
end

function Client:_now()
  if in_cosocket_phase() then
    ngx.update_time()
    return ngx.now()
  end
  return core.now()
end

function Client:_sleep(seconds)
  if seconds <= 0 then return end
  if in_cosocket_phase() then return ngx.sleep(seconds) end
  return core.sleep(seconds)
end

-- The transport for this moment: the user's, or cosockets inside OpenResty's yielding
-- phases, or this client's own libcurl session.
function Client:_transport()
  local cosocket = self.transport ~= nil and self.transport == rawget(M.transports, "cosocket")
  if self.transport and self.transport ~= M.transports.curl and not cosocket then
    return self.transport, nil
  end
  if cosocket or (in_cosocket_phase() and not self.transport) then
    if self.ca_file or self.proxy then
      -- cosockets trust only nginx's lua_ssl_trusted_certificate and cannot proxy
      return nil, errors.new{code = "InvalidParameter", parameter = self.ca_file and "ca_file" or "proxy",
        message = "ca_file and proxy cannot apply to OpenResty cosockets: set " ..
          "lua_ssl_trusted_certificate in nginx.conf instead, or pass " ..
          "transport = iot.transports.curl to use libcurl (blocking)"}
    end
    return M.transports.cosocket, nil
  end
  self.curl = self.curl or curl.new{user_agent = self.user_agent}
  return function(req) return self.curl:request(req) end, self.curl
end

--- Closes the client's connections. The client stays usable (a later call reconnects).
function Client:close()
  if self.curl then
    self.curl:close()
    self.curl = nil
  end
end
Client.__close = Client.close

--- Counters since the client was made.
-- @treturn table `{requests=, retries=, throttled=, bytes_sent= [bytes], bytes_received= [bytes]}`
function Client:stats()
  local t = {}
  for k, v in pairs(self.counters) do t[k] = v end
  return t
end

-- Builds one signed attempt: fresh SignatureNonce and Timestamp every time.
function Client:_build(row, action, flat, method, format, creds, opts)
  local p = {}
  for k, v in pairs(flat) do p[k] = v end
  if self.iot_instance_id and p.IotInstanceId == nil then p.IotInstanceId = self.iot_instance_id end
  local nonce = core.nonce()
  local timestamp = core.timestamp(core.time() + self.clock_offset)
  local req = {
    method = method, headers = {}, timeout = opts.timeout or self.timeout,
    connect_timeout = opts.connect_timeout or self.connect_timeout,
    max_response_size = self.max_response_size, ca_file = self.ca_file, proxy = self.proxy,
    -- libcurl re-sends a request on its own when a reused connection turns out dead, even
    -- after the server acted; calls that must never be repeated get a fresh connection.
    fresh_connect = row.retry ~= "idempotent",
  }
  local string_to_sign
  if self.signature_algorithm == "HMAC-SHA1" then
    p.Action, p.Version, p.Format = action, API_VERSION, format
    p.AccessKeyId, p.SecurityToken = creds.access_key_id, creds.security_token
    p.SignatureMethod, p.SignatureVersion = "HMAC-SHA1", "1.0"
    p.SignatureNonce, p.Timestamp, p.RegionId = nonce, timestamp, self.region_id
    local sig, sts, canonical = core.sign_rpc(method, p, creds.access_key_secret)
    string_to_sign = sts
    local qs = canonical .. "&Signature=" .. core.percent_encode(sig)
    if method == "GET" then
      req.url = self.url .. "?" .. qs
    else
      req.url = self.url
      req.body = qs
      req.headers["content-type"] = "application/x-www-form-urlencoded"
    end
  else
    -- ACS3 (reference §3): action and version travel in headers; RPC parameters in the
    -- form body (POST) or the query (GET). Format only when XML is wanted.
    if format == "XML" then p.Format = "XML" end
    local h = req.headers
    h.host = self.host
    h["x-acs-action"], h["x-acs-version"] = action, API_VERSION
    h["x-acs-date"], h["x-acs-signature-nonce"] = timestamp, nonce
    h["x-acs-security-token"] = creds.security_token
    h.accept = format == "XML" and "application/xml" or "application/json"
    local query, body = {}, ""
    if method == "GET" then
      query = p
    else
      body = core.canonical_query(p)
      h["content-type"] = "application/x-www-form-urlencoded"
    end
    local auth, _, hashed, sha = core.sign_acs3{
      method = method, path = "/", query = query, headers = h, body = body,
      access_key_id = creds.access_key_id, access_key_secret = creds.access_key_secret,
    }
    string_to_sign = "ACS3-HMAC-SHA256\n" .. hashed
    h["x-acs-content-sha256"], h.authorization = sha, auth
    local qs = method == "GET" and core.canonical_query(query) or ""
    req.url = qs ~= "" and (self.url .. "?" .. qs) or self.url
    if method ~= "GET" then req.body = body end
  end
  req.headers["user-agent"] = self.user_agent
  return req, string_to_sign
end

-- Reads the parameter list of a canonical query ("a=1&b=2") into name -> value.
local function query_pairs(q)
  local t = {}
  for pair in (q or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    t[k] = v
  end
  return t
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- Says how the server's echoed StringToSign differs from ours, naming parameters only
-- (values may be secrets). Same strings mean the AccessKeySecret itself is wrong.
local function signature_diff(ours, message)
  if not ours or not message then return nil end
  local hash = message:match("StringToSign is %[ACS3%-HMAC%-SHA256%s+(%x+)%]")
  if hash then
    -- ACS3 echoes only the hash of its canonical request: it says whether the two
    -- requests agree, not where they part.
    if ours == "ACS3-HMAC-SHA256\n" .. hash then
      return "the server's string to sign equals ours: the AccessKeySecret is probably wrong"
    end
    return "the server hashed another canonical request than ours (headers, query or body differ)"
  end
  local theirs = message:match("server string to sign is:%s*(.-)%s*$")
  if not theirs or ours:sub(1, 4) == "ACS3" then return nil end
  if theirs == ours then
    return "the server's string to sign equals ours: the AccessKeySecret is probably wrong"
  end
  local m1, q1 = ours:match("^([^&]*)&%%2F&(.*)$")
  local m2, q2 = theirs:match("^([^&]*)&%%2F&(.*)$")
  if not m1 or not m2 then return "the server's string to sign has another shape than ours" end
  local parts = {}
  if m1 ~= m2 then parts[#parts + 1] = ("method %s (ours) vs %s (server)"):format(m1, m2) end
  local a, b = query_pairs(unescape(q1)), query_pairs(unescape(q2))
  local names = {}
  for k in pairs(a) do if a[k] ~= b[k] then names[#names + 1] = unescape(k) end end
  for k in pairs(b) do if a[k] == nil then names[#names + 1] = unescape(k) end end
  table.sort(names)
  if #names > 0 then parts[#parts + 1] = "parameters " .. table.concat(names, ", ") end
  if #parts == 0 then return "the encoding of the string to sign differs" end
  return "differs from ours in: " .. table.concat(parts, "; ")
end

local RETRYABLE_CODES = {
  Throttling = true, ["Throttling.User"] = true, ["Throttling.Api"] = true,
  ServiceUnavailable = true,
}
local AMBIGUOUS_CODES = {InternalError = true, UnknownError = true, SignatureNonceUsed = true}
local REPEATABLE_TRANSPORT = {ConnectFailed = true, Timeout = true, ConnectionReset = true,
                              TransportError = true}

local function decode_body(body)
  local first = body:match("^%s*(.)")
  if first == "<" then
    local root, tree = core.xml_decode(body)
    if not root then return nil, tree end
    return tree, nil, root
  end
  return core.json_decode(body)
end

-- Turns a transport result into the result table or an error, and says whether a
-- repeat is safe: `retryable` (the request certainly did not take effect) or
-- `ambiguous` (it may have; only idempotent actions are repeated).
function Client:_classify(row, res, terr, sts)
  if not res then
    local e = errors.new{code = terr.code or "TransportError",
                         message = self.redact(terr.message or "transport failed")}
    if terr.sent then
      e.ambiguous = true
    elseif REPEATABLE_TRANSPORT[e.code] then
      -- nothing reached the server; a certificate or an option that fails will fail again
      e.retryable = true
    end
    return nil, e
  end
  local status = res.status
  local body = res.body or ""
  local decoded, derr, root = decode_body(body)
  if decoded == nil or type(decoded) ~= "table" then
    return nil, errors.new{
      code = "InvalidResponse", http_status = status, ambiguous = status < 500 or nil,
      retryable = status == 503,
      message = self.redact(("cannot decode the response (%s); body starts: %s")
        :format(tostring(derr or "not an object"), body:sub(1, 512))),
    }
  end
  if root and root ~= "Error" then
    decoded = shape.xml(decoded, row)
  end
  local ok_status = status >= 200 and status < 300
  if ok_status and decoded.Success ~= false and (decoded.Code == nil or decoded.Success == true) then
    return decoded
  end
  local message = decoded.Message or decoded.ErrorMessage or ("HTTP status " .. status)
  if decoded.Code == "SignatureDoesNotMatch" then
    -- compared before redaction, which would make a sent SecurityToken look different
    local diff = signature_diff(sts, message)
    if diff then message = message .. " (" .. diff .. ")" end
  end
  local e = errors.new{
    code = decoded.Code or ("HTTP" .. tostring(status)),
    message = self.redact(message),
    request_id = decoded.RequestId, http_status = status,
    host_id = decoded.HostId, recommend = decoded.Recommend,
  }
  if ok_status then
    -- An IoT business error: HTTP 200 with Success false (reference §5.2). Its body
    -- may hold lists callers need (invalid names); DeviceSecrets never appear in one.
    e.response = decoded
    return nil, e
  end
  if RETRYABLE_CODES[e.code] or status == 503 then
    e.retryable = true
  elseif AMBIGUOUS_CODES[e.code] or status == 500 or status == 502 or status == 504 then
    e.ambiguous = true
  end
  e.date = res.headers and res.headers.date
  return nil, e
end

-- Backoff with full jitter: a random wait up to base * 2^attempt, capped.
local function backoff(attempt, throttled)
  local base = throttled and 0.5 or 0.2
  return math.random() * math.min(8, base * 2 ^ attempt)
end

-- Sends an action with retries. `flat` is the flattened, validated parameter table.
function Client:_request(row, action, flat, opts)
  local format = (opts.format or self.format):upper()
  local method = (opts.method or row.method):upper()
  local max_retries = opts.max_retries or self.max_retries
  local deadline = self:_now() + self.retry_deadline
  local send, terr = self:_transport()
  if not send then return nil, terr end
  local attempt, skew_fixed = 0, false
  while true do
    local creds, cerr = self:_credentials()
    if not creds then return nil, cerr end
    self.pacer:acquire(action)
    if opts.on_send then
      -- internal hook (see _call_internal): after pacing, before this attempt is sent
      local ok, oerr = opts.on_send(opts)
      if not ok then return nil, oerr end
    end
    local req, sts = self:_build(row, action, flat, method, format, creds, opts)
    self.counters.requests = self.counters.requests + 1
    self.counters.bytes_sent = self.counters.bytes_sent + #req.url + #(req.body or "")
    local res, err = send(req)
    if res then
      self.counters.bytes_received = self.counters.bytes_received + #(res.body or "")
    end
    local result, e = self:_classify(row, res, err, sts)
    if result then return result end

    local retry = e.retryable or (e.ambiguous and row.retry == "idempotent")
    if e.code == "InvalidTimeStamp.Expired" and not skew_fixed then
      local server = http_date_epoch(e.date)
      if server then
        self.clock_offset = server - core.time()
        skew_fixed, retry = true, true
        self.log("warn", ("clock offset of %.0f s learnt from the server's Date header")
          :format(self.clock_offset))
      end
    elseif e.code:find("^Throttling") then
      self.counters.throttled = self.counters.throttled + 1
    end
    if e.ambiguous and row.retry == "named" and flat.DeviceName then
      retry = true
    end
    local delay = backoff(attempt, e.code:find("^Throttling") ~= nil)
    if not retry or attempt >= max_retries or self:_now() + delay > deadline then
      e.action = action
      return nil, e
    end
    self.log("warn", ("%s: %s; retrying in %.2f s (attempt %d of %d)")
      :format(action, tostring(e), delay, attempt + 2, max_retries + 1))
    if opts.on_retry and e.retryable then
      -- internal hook (see _call_internal): this attempt certainly did not act
      local ok, oerr = opts.on_retry(e)
      if ok == nil and oerr then return nil, oerr end
    end
    self.counters.retries = self.counters.retries + 1
    attempt = attempt + 1
    self:_sleep(delay)
    if e.ambiguous and row.retry == "named" then
      return self:_resolve_named(row, action, flat, opts)
    end
  end
end

-- A named RegisterDevice repeated after an ambiguous failure: if the first copy created
-- the device, the repeat answers AlreadyExistedDeviceName, and the device is read back.
function Client:_resolve_named(row, action, flat, opts)
  local format = (opts.format or self.format):upper()
  local r, e = self:_request(row, action, flat, {format = format, method = opts.method,
    timeout = opts.timeout, connect_timeout = opts.connect_timeout, max_retries = 0})
  if r or e.code ~= "iot.device.AlreadyExistedDeviceName" then return r, e end
  local detail, e2 = self:call("QueryDeviceDetail",
    {ProductKey = flat.ProductKey, DeviceName = flat.DeviceName}, {format = format})
  if not detail then return nil, e2 end
  return {RequestId = detail.RequestId, Success = true, Data = detail.Data}
end

-- Checks arguments, validates and flattens; returns the row and flat params or nil, err.
function Client:_prepare(action, params, level)
  if type(action) ~= "string" then
    error("action must be a string, got " .. type(action), level + 1)
  end
  if type(params) ~= "table" then
    error("params must be a table, got " .. type(params), level + 1)
  end
  local row = actions.get(action)
  local name, why = validate.check(row, params, self)
  if name then return nil, invalid(name, why) end
  local flat, msg, pname = core.flatten(params)
  if not flat then return nil, invalid(pname, pname .. ": " .. msg) end
  for k, v in pairs(flat) do
    if type(v) == "number" and v ~= math.floor(v) then
      return nil, invalid(k, k .. " must be an integer")
    elseif type(v) == "number" and not (math.type and math.type(v) == "integer")
        and math.abs(v) >= 2^63 then
      return nil, invalid(k, k .. " is out of range")
    end
  end
  return row, flat
end

--- Calls any IoT action.
-- @tparam string action the API's Action name, e.g. "QueryDeviceDetail"
-- @tparam table params parameters with the API's names; lists as Lua arrays
--   (`DeviceName = {"a", "b"}`, `DeviceNameList = {{DeviceName=, DeviceNickname=}}`)
-- @tparam[opt] table call_opts `timeout` [s], `connect_timeout` [s], `max_retries`,
--   `format` ("JSON"/"XML"), `method` ("POST" default, or "GET")
-- @treturn ?table the decoded response with the API's field names
-- @treturn ?table err (`aliyun.iot.errors`): `InvalidParameter` (with `parameter`),
--   gateway codes (e.g. `Throttling.User`, `SignatureDoesNotMatch`), IoT business codes
--   (e.g. `iot.device.AlreadyExistedDeviceName`, with `response`), or local codes
--   (`Timeout`, `ConnectFailed`, `TLSError`, `ResponseTooLarge`, `InvalidResponse`);
--   `ambiguous = true` when the service may have acted
-- @raise when action is not a string, params not a table, or call_opts is malformed
function Client:call(action, params, call_opts)
  return self:_call(action, params, call_opts, 3)
end

function Client:_call(action, params, call_opts, level)
  call_opts = check_options(call_opts, CALL_OPTION_TYPES, "call", level)
  local row, flat = self:_prepare(action, params, level)
  if not row then return nil, flat end
  local name, why = call_option_problem(call_opts)
  if name then return nil, invalid(name, why) end
  return self:_request(row, action, flat, call_opts)
end

-- The batch helpers' entry point: as `call`, plus internal options that `call` rejects.
-- `opts.on_send(opts) -> true | nil, err` runs once per attempt, after the QPS wait and
-- before the request is built and sent: the journal records a submission only when it
-- really goes out, and a job's deadline can shorten `opts.timeout` / `opts.connect_timeout`
-- for this attempt. Returning nil, err abandons the call (this attempt is not sent).
function Client:_call_internal(action, params, opts)
  local row, flat = self:_prepare(action, params, 2)
  if not row then return nil, flat end
  return self:_request(row, action, flat, opts)
end

--- Calls one action many times at once (fan-out), paced within the action's QPS.
-- Uses libcurl's multi interface, or light threads inside OpenResty; a custom transport
-- is called sequentially. A failed item is retried on its own as `call` would.
-- @tparam string action
-- @tparam {table,...} params_list one parameter table per call
-- @tparam[opt] table call_opts as for `call`, plus nothing else
-- @tparam[opt=8] integer concurrency most calls in flight at once
-- @treturn table results (results[i] or errs[i] is set for each i)
-- @treturn table errs
function Client:call_many(action, params_list, call_opts, concurrency)
  call_opts = check_options(call_opts, CALL_OPTION_TYPES, "call", 2)
  if type(params_list) ~= "table" then error("params_list must be a table", 2) end
  local keys, top = 0, 0
  for k in pairs(params_list) do
    if type(k) ~= "number" or k < 1 or k ~= math.floor(k) then top = -1 break end
    keys, top = keys + 1, math.max(top, k)
  end
  if top ~= keys then error("params_list must be a list (keys 1..n, no hole)", 2) end
  concurrency = concurrency or 8
  if type(concurrency) ~= "number" or concurrency < 1 or concurrency > 1000
      or concurrency ~= math.floor(concurrency) then
    error("concurrency must be a whole number from 1 to 1000", 2)
  end
  local results, errs, todo = {}, {}, {}
  local rows, flats = {}, {}
  local bad, why = call_option_problem(call_opts)
  if bad then
    for i in ipairs(params_list) do errs[i] = invalid(bad, why) end
    return results, errs
  end
  for i, params in ipairs(params_list) do
    local row, flat = self:_prepare(action, params, 2)
    if not row then errs[i] = flat else rows[i], flats[i] = row, flat; todo[#todo + 1] = i end
  end
  local send, batch = self:_transport()
  if not send then
    for _, i in ipairs(todo) do errs[i] = batch end
    return results, errs
  end
  if in_cosocket_phase() then
    local threads = {}
    -- A light thread's error would otherwise be lost (and results[i], errs[i] both nil).
    local function wait(t)
      local ok, err = ngx.thread.wait(t)
      if not ok then error(err, 0) end
    end
    for _, i in ipairs(todo) do
      threads[#threads + 1] = ngx.thread.spawn(function()
        results[i], errs[i] = self:_request(rows[i], action, flats[i], call_opts)
      end)
      if #threads >= concurrency then wait(table.remove(threads, 1)) end
    end
    for _, t in ipairs(threads) do wait(t) end
    return results, errs
  end
  if not batch or #todo < 2 then
    for _, i in ipairs(todo) do
      results[i], errs[i] = self:_request(rows[i], action, flats[i], call_opts)
    end
    return results, errs
  end
  local format = (call_opts.format or self.format):upper()
  local method = (call_opts.method or rows[todo[1]].method):upper()
  local slots = self.pacer:schedule(action, #todo)
  local reqs, stss = {}, {}
  for n, i in ipairs(todo) do
    local creds, cerr = self:_credentials()
    if not creds then errs[i] = cerr; return results, errs end
    reqs[n], stss[n] = self:_build(rows[i], action, flats[i], method, format, creds, call_opts)
    reqs[n].not_before = slots[n]
    self.counters.requests = self.counters.requests + 1
    self.counters.bytes_sent = self.counters.bytes_sent + #reqs[n].url + #(reqs[n].body or "")
  end
  local responses, terrs = batch:request_many(reqs, concurrency)
  for n, i in ipairs(todo) do
    local res = responses[n]
    if res then
      self.counters.bytes_received = self.counters.bytes_received + #(res.body or "")
    end
    local result, e = self:_classify(rows[i], res, terrs[n], stss[n])
    if result then
      results[i] = result
    elseif e.ambiguous and rows[i].retry == "named" and flats[i].DeviceName then
      self.counters.retries = self.counters.retries + 1
      results[i], errs[i] = self:_resolve_named(rows[i], action, flats[i], call_opts)
    elseif e.retryable or (e.ambiguous and rows[i].retry == "idempotent") then
      if e.code:find("^Throttling") then self.counters.throttled = self.counters.throttled + 1 end
      self.counters.retries = self.counters.retries + 1
      results[i], errs[i] = self:_request(rows[i], action, flats[i], call_opts)
    else
      e.action = action
      errs[i] = e
    end
  end
  return results, errs
end

-- One method per operation, snake_case of the action name (BatchRegisterDevice ->
-- client:batch_register_device(params [, call_opts])), each documented by its row in
-- aliyun.iot.actions and its doc page.
for name in pairs(actions.rows) do
  Client[actions.method_name(name)] = function(self, params, call_opts)
    return self:_call(name, params, call_opts, 3)
  end
end

require("aliyun.iot.batch").install(Client)
M.Client = Client
return M
