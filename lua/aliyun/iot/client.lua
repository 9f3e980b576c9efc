--- The client class: options, credentials, transport choice, clocks, stats, and the
-- entry points into the attempt engine (`call`, `call_many`, `invoke`, `invoke_many`,
-- one method per action). `aliyun.iot` makes clients and adds the batch helpers.
-- @classmod aliyun.iot.Client

local core = require "aliyun.iot.core"
local actions = require "aliyun.iot.actions"
local errors = require "aliyun.iot.errors"
local options = require "aliyun.iot.options"
local credentials = require "aliyun.iot.credentials"
local pacer = require "aliyun.iot.pacer"
local request = require "aliyun.iot.request"
local engine = require "aliyun.iot.engine"
local curl = require "aliyun.iot.transport.curl"
local cosocket = require "aliyun.iot.transport.cosocket"
local endpoints = require "aliyun.iot.endpoints"

local M = {}

--- Built-in transports, each a function `(req) -> res | nil, err`: `curl` (the default,
-- libcurl) and `cosocket` (OpenResty's non-blocking sockets).
M.transports = {curl = curl.request, cosocket = cosocket.request}

-- Inside OpenResty's request, timer and similar phases the client must not block the
-- worker: it sends through cosockets and sleeps with ngx.sleep. Elsewhere (init_by_lua,
-- set_by_lua, header/body filters, or plain Lua) it uses libcurl and core.sleep.
local in_cosocket_phase = cosocket.usable

local Client = {}
Client.__index = Client
Client.__name = "aliyun.iot.Client"
M.Client = Client

local invalid = options.invalid

-- Checks an endpoint URL: http(s) only, a host (name, IPv4 or [IPv6]) and an optional port
-- 1..65535, no credentials, no path, no control characters.
-- Returns scheme, authority or nil and a reason.
local function parse_endpoint(url)
  if url:find("[%c%s]") then return nil, "must not contain spaces or control characters" end
  local scheme, authority, path = url:match("^(https?)://([^/?#]*)(.*)$")
  if not scheme then return nil, "must be an http:// or https:// URL" end
  if authority:find("@", 1, true) then
    return nil, "must not carry credentials (user:password@); pass access keys as options"
  end
  if path ~= "" and path ~= "/" then return nil, "must have no path beyond /" end
  local host, port = authority:match("^(%[[%x:.]+%])(.*)$")
  if not host then host, port = authority:match("^([%w.%-]+)(.*)$") end
  if not host or host:find("^[.%-]") or host:find("%.%.") then
    return nil, "must name a host"
  end
  if port ~= "" then
    local n = port:match("^:(%d%d?%d?%d?%d?)$")
    if not n or tonumber(n) < 1 or tonumber(n) > 65535 then
      return nil, "has a malformed port (1 to 65535)"
    end
  end
  return scheme, authority
end

-- The pacer: one budget per account in a process (pacers that share the clock function,
-- core.now, and the AccessKeyId share their slots); with qps_shared_dict, nginx's clock
-- and the shared dict, so that all workers together keep the limits.
local function make_pacer(self)
  local limits = false
  if self.qps == true then
    limits = pacer.DEFAULT_LIMITS
  elseif type(self.qps) == "table" then
    limits = {}
    for k, v in pairs(pacer.DEFAULT_LIMITS) do limits[k] = v end
    for k, v in pairs(self.qps) do limits[k] = v end
  end
  local shared = self.qps_shared_dict
  return pacer.new{limits = limits, shared_dict = shared,
                   now = not shared and core.now or nil,
                   -- ngx.sleep raises outside yielding phases (set_by_lua, init...)
                   sleep = function(s) self:pause(s) end}
end

--- Makes a client (see `aliyun.iot.new` for the options).
-- @tparam table opts
-- @treturn ?Client
-- @treturn ?table err
-- @raise when opts is not a table, an option name is unknown or has the wrong type
-- @static
function M.new(opts)
  local given, err = options.check(options.CLIENT, opts, "client", 2)
  if not given then return nil, err end
  local self = setmetatable(options.defaults(options.CLIENT), Client)
  for k, v in pairs(given) do self[k] = v end
  self.format = self.format:upper()
  self.user_agent = curl.user_agent(self.user_agent)
  local region_from
  self.region_id, region_from = credentials.region(given)
  local why = options.problem("region_id", self.region_id, options.CLIENT.region_id)
  if why then return nil, invalid("region_id", why .. " (from " .. region_from .. ")") end
  self.endpoint = self.endpoint or endpoints.for_region(self.region_id)
  local scheme, host = parse_endpoint(self.endpoint)
  if not scheme then return nil, invalid("endpoint", "endpoint " .. host) end
  self.host, self.url = host, scheme .. "://" .. host .. "/"
  -- the option, or the environment's proxy for this endpoint (never for metadata: that
  -- provider asks for none)
  self.proxy_url = curl.proxy_for(self.url, self.proxy)

  local user_logger = self.logger
  self:_watch_secrets(self.access_key_secret, self.security_token)
  self.redact = function(text) return self._redactor(text) end
  self.log = function(level, message)
    if user_logger then user_logger(level, self.redact(message)) end
  end
  local provider, cerr = credentials.resolve(given, self.log, errors.new)
  if not provider then return nil, cerr end
  self.creds = provider
  self.pacer = make_pacer(self)
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

function Client:_in_cosocket_phase()
  return in_cosocket_phase()
end

--- A monotonic clock, the one `deadline` options are measured on.
-- @treturn number seconds (only differences mean something)
function Client:clock()
  -- (outside OpenResty, without the phase function's call: the engine reads the clock
  -- several times a call)
  if rawget(_G, "ngx") ~= nil and in_cosocket_phase() then
    local ngx = rawget(_G, "ngx")
    ngx.update_time()
    return ngx.now()
  end
  return core.now()
end

--- Waits without blocking OpenResty's worker where that matters (ngx.sleep inside yielding
-- phases, core.sleep elsewhere).
-- @tparam number seconds (nothing happens for 0 or less)
function Client:pause(seconds)
  if not (seconds > 0) then return end
  if rawget(_G, "ngx") ~= nil and in_cosocket_phase() then return rawget(_G, "ngx").sleep(seconds) end
  return core.sleep(seconds)
end

-- The transport for this moment: the user's, or cosockets inside OpenResty's yielding
-- phases, or this client's own libcurl session (also returned, for fan-out).
function Client:_transport()
  local sockets = self.transport ~= nil and self.transport == M.transports.cosocket
  if self.transport and self.transport ~= M.transports.curl and not sockets then
    return self.transport, nil
  end
  if sockets or (in_cosocket_phase() and not self.transport) then
    if self.ca_file or self.proxy then
      -- cosockets trust only nginx's lua_ssl_trusted_certificate and cannot proxy
      return nil, invalid(self.ca_file and "ca_file" or "proxy",
        "ca_file and proxy cannot apply to OpenResty cosockets: set " ..
        "lua_ssl_trusted_certificate in nginx.conf instead, or pass " ..
        "transport = iot.transports.curl to use libcurl (blocking)")
    end
    return M.transports.cosocket, nil
  end
  self.curl = self.curl or curl.new{user_agent = self.user_agent}
  -- one closure per client, not one per call (it finds the session current at each send)
  local send = self._curl_send
  if not send then
    send = function(req) return self.curl:request(req) end
    self._curl_send = send
  end
  return send, self.curl
end

--- Where this client sends its calls: what a job's journal records so that a resume goes
-- back to the same place (`client:resume` refuses another).
-- @tparam[opt] boolean with_key also name the AccessKeyId: the credentials are fetched as
--   a call fetches them (a credentials function may run)
-- @treturn table `{endpoint = the effective URL ("https://iot.cn-shanghai.aliyuncs.com/"),
--   RegionId = string, IotInstanceId = string or nil, ApiVersion = "2018-01-20",
--   AccessKeyId = string or nil}`. AccessKeyId is for information only (temporary
--   credentials change it on every refresh); nil without `with_key` or when the
--   credentials cannot be had now (the call that needs them then fails with the reason).
--   Never a secret.
function Client:target(with_key)
  local creds = with_key and self:_credentials() or nil
  return {endpoint = self.url, RegionId = self.region_id, IotInstanceId = self.iot_instance_id,
          ApiVersion = request.API_VERSION, AccessKeyId = creds and creds.access_key_id or nil}
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
  return self:_invoke(action, params, call_opts, options.CALL, "call", 3)
end

function Client:_invoke(action, params, opts, schema, what, level)
  local o, err = options.check(schema, opts, what, level)
  local row, flat, rpc = request.prepare(self, action, params, level)
  if not o then
    if rpc then rpc:close() end
    return nil, err
  end
  if not row then return nil, flat end
  local results, errs = engine.run(self, action,
    {{row = row, flat = flat, rpc = rpc, params = params}}, o, 1)
  return results[1], errs[1]
end

--- Calls one action through the attempt engine, with hooks for jobs built on the client
-- (the batch helpers use this).
-- @tparam string action
-- @tparam table params
-- @tparam[opt] table opts the call options, plus `on_send(opts) -> true | nil, err`
--   (after pacing, before each attempt is built and sent; it may shorten `opts.timeout`
--   and `opts.connect_timeout`; nil, err abandons the call unsent), `on_retry(err) ->
--   true | nil, err` (an attempt that certainly did not act is about to be repeated,
--   before the backoff; nil, err abandons it) and `deadline` (an absolute `clock()`
--   value: no attempt starts after it and each attempt's timeouts are cut to the time
--   left)
-- @treturn ?table the decoded response
-- @treturn ?table err as for `call`, or `DeadlineExceeded` (with `cause`, the last
--   attempt's error, and its `ambiguous`)
-- @raise as `call`
function Client:invoke(action, params, opts)
  return self:_invoke(action, params, opts, options.INVOKE, "invoke", 3)
end

function Client:_many(action, params_list, opts, concurrency, schema, what)
  local o, err = options.check(schema, opts, what, 3)
  if type(params_list) ~= "table" then error("params_list must be a table", 3) end
  if not options.is_list(params_list) then
    error("params_list must be a list (keys 1..n, no hole)", 3)
  end
  concurrency = concurrency or 8
  if type(concurrency) ~= "number" or not (concurrency >= 1 and concurrency <= 1000)
      or concurrency ~= math.floor(concurrency) then
    error("concurrency must be a whole number from 1 to 1000", 3)
  end
  local items, index, errs = {}, {}, {}
  for i, params in ipairs(params_list) do
    local row, flat, rpc = request.prepare(self, action, params, 3)
    if not o then
      errs[i] = err
      if rpc then rpc:close() end
    elseif not row then
      errs[i] = flat
    else
      items[#items + 1], index[#items + 1] = {row = row, flat = flat, rpc = rpc, params = params}, i
    end
  end
  local results = {}
  local r, e = engine.run(self, action, items, o or {}, concurrency)
  for n, i in ipairs(index) do results[i], errs[i] = r[n], e[n] end
  return results, errs
end

--- Calls one action many times at once (fan-out), paced within the action's QPS, each
-- request repeated and corrected as `call` would (the same engine, run in rounds).
-- Uses libcurl's multi interface, or light threads inside OpenResty; a custom transport
-- is called sequentially.
-- @tparam string action
-- @tparam {table,...} params_list one parameter table per call
-- @tparam[opt] table call_opts as for `call`
-- @tparam[opt=8] integer concurrency most calls in flight at once
-- @treturn table results (results[i] or errs[i] is set for each i)
-- @treturn table errs
-- @raise on misuse (as `call`; a params_list with holes; a bad concurrency)
function Client:call_many(action, params_list, call_opts, concurrency)
  return self:_many(action, params_list, call_opts, concurrency, options.CALL, "call")
end

--- `call_many` with the options of `invoke` (`on_send`, `on_retry`, `deadline`). In a
-- fan-out `on_send` runs when each request is built, before its paced start.
-- @treturn table results, @treturn table errs (one of them set per index)
function Client:invoke_many(action, params_list, opts, concurrency)
  return self:_many(action, params_list, opts, concurrency, options.INVOKE, "invoke")
end

-- One method per operation, snake_case of the action name (BatchRegisterDevice ->
-- client:batch_register_device(params [, call_opts])), each documented by its row in
-- aliyun.iot.actions and its doc page.
for name in pairs(actions.rows) do
  Client[actions.method_name(name)] = function(self, params, call_opts)
    return self:_invoke(name, params, call_opts, options.CALL, "call", 3)
  end
end

return M
