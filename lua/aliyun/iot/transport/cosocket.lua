--- The OpenResty transport: HTTP/1.1 over `ngx.socket.tcp` cosockets, so a call made in a
-- request, timer or similar phase yields to nginx instead of blocking the worker.
-- The client picks it by itself in those phases (see `aliyun.iot.new`); it can also be
-- passed explicitly as `transport = iot.transports.cosocket`.
--
-- TLS is verified (peer and host name) against nginx's `lua_ssl_trusted_certificate`
-- (with `lua_ssl_verify_depth`), the only trust store cosockets know: a per-request
-- `ca_file` or `proxy` cannot apply and is refused rather than ignored. nginx checks host
-- names only against DNS names, so for an IP-address endpoint (https://127.0.0.1:...) only
-- the certificate chain is verified. Host names are resolved by nginx's `resolver`.
-- Connections are kept alive in ngx_lua's per-worker pool, one pool per scheme, host and
-- port; a `fresh_connect` request never takes a pooled connection and never gives its
-- connection back, since a request that must not be repeated must not meet a stale one.
-- @module aliyun.iot.transport.cosocket

local M = {}

local POOL_IDLE_MS = 60 * 1000 -- idle time before nginx closes a pooled connection
local POOL_SIZE = 32           -- pooled connections per host, per worker
local CHUNK = 65536            -- most bytes asked of one receive

-- TLS sessions per pool (per worker), so reconnecting skips the full handshake.
local tls_sessions = {}

-- The phases where cosockets and ngx.sleep work (request, timer and similar ones); not
-- init_by_lua, set_by_lua, header or body filters.
local PHASES = {rewrite = true, server_rewrite = true, access = true, content = true,
                timer = true, ssl_cert = true, ssl_session_fetch = true,
                ssl_client_hello = true}

--- True inside OpenResty in a phase where cosockets (and `ngx.sleep`) can be used: there
-- the client and the credentials providers must not block the worker.
-- @treturn boolean
function M.usable()
  local ngx = rawget(_G, "ngx")
  return ngx ~= nil and ngx.get_phase ~= nil and PHASES[ngx.get_phase()] == true
end

-- "aliyun-iot/0.1.0 ngx_lua/0.10.23 LuaJIT/2.1.0-beta3", as the libcurl transport names
-- libcurl and Lua (a client's user_agent option replaces it).
local USER_AGENT = (function()
  local v = rawget(_G, "ngx") and ngx.config and ngx.config.ngx_lua_version or 0
  return ("aliyun-iot/%s ngx_lua/%d.%d.%d %s"):format(
    (package.loaded["aliyun.iot.core"] or {})._VERSION or "?",
    math.floor(v / 1000000), math.floor(v / 1000) % 1000, v % 1000,
    ((rawget(_G, "jit") and jit.version or _VERSION):gsub(" ", "/")))
end)()

-- Reads "scheme://host[:port]/path?query" into its parts; nil for anything else.
local function parse_url(url)
  local scheme, authority, target = url:match("^(https?)://([^/?#]+)([^#]*)$")
  if not scheme then return nil end
  local host, port = authority:match("^%[([^%]]+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host then return nil end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  if target == "" then target = "/" elseif target:sub(1, 1) == "?" then target = "/" .. target end
  return scheme, host, port, target, authority
end

local function failure(code, message, sent)
  return nil, {code = code, message = message, sent = sent == true}
end

-- The last URL's parts: a client sends its POSTs to one URL, read once (never changed by
-- the exchange, so shared between requests).
local last_url, last_parts

local function url_parts(url)
  if url == last_url then return last_parts end
  local scheme, host, port, target, authority = parse_url(url)
  if not scheme then return nil end
  last_url, last_parts = url, {scheme = scheme, host = host, port = port, target = target,
    authority = authority, ip = host:find("^[%d.]+$") ~= nil or host:find(":", 1, true) ~= nil}
  local pool = scheme .. "://" .. host .. ":" .. port
  last_parts.pool, last_parts.keep_pool = pool, {pool = pool}
  last_parts.fresh_pool = {pool = pool .. "#fresh"}
  return last_parts
end

-- One exchange's state: the socket, the request's deadline and limits. Every read and
-- write first cuts the socket's timeouts to the time left, so the whole request stays
-- within its deadline however slowly the bytes drip in.
local Conn = {}
Conn.__index = Conn

function Conn:remaining_ms()
  ngx.update_time()
  return math.max(1, math.floor((self.deadline - ngx.now()) * 1000))
end

function Conn:arm()
  local left = self:remaining_ms()
  -- the same millisecond left as at the last arming (lines read back to back): the
  -- socket's timeouts already are these
  if left == self.armed then return end
  self.armed = left
  self.sock:settimeouts(math.min(self.connect_ms, left), left, left)
end

-- Fails the exchange: the socket is closed; `sent` once any request byte may be out.
function Conn:fail(code, message)
  self.sock:close()
  return failure(code, message, self.sent)
end

function Conn:read_failure(what, rerr)
  if rerr == "timeout" then return self:fail("Timeout", "timed out reading the " .. what) end
  return self:fail("ConnectionReset", "connection lost while reading the " .. what .. ": "
    .. tostring(rerr))
end

function Conn:line()
  self:arm()
  return self.sock:receive("*l")
end

-- Connects (from the pool unless fresh) and, for https on a new connection, handshakes.
-- A fresh connection comes from a pool nobody gives connections back to.
local function connect(req, u, deadline, fresh)
  local c = setmetatable({sock = ngx.socket.tcp(), deadline = deadline, sent = false,
                          connect_ms = math.floor(req.connect_timeout * 1000),
                          max = req.max_response_size, fresh = fresh}, Conn)
  local pool = u.pool
  c:arm()
  local ok, err = c.sock:connect(u.host, u.port, fresh and u.fresh_pool or u.keep_pool)
  if not ok then
    if err == "timeout" then
      return failure("Timeout", "connect to " .. u.authority .. " timed out", false)
    end
    if tostring(err):find("no resolver", 1, true) then
      err = err .. " (set `resolver` in nginx.conf)"
    end
    return failure("ConnectFailed", "cannot connect to " .. u.authority .. ": " .. tostring(err), false)
  end
  c.reused = (c.sock:getreusedtimes() or 0) > 0
  if u.scheme == "https" and not c.reused then
    c:arm()
    -- resty.core's sslhandshake raises (an assertion) instead of returning nil, err on
    -- some verification failures, hence the pcall (LuaJIT yields across it).
    local called, session, herr = pcall(c.sock.sslhandshake, c.sock, tls_sessions[pool],
                                        not u.ip and u.host or nil, true)
    if not called then herr = "certificate verification failed (see the nginx error log)" end
    tls_sessions[pool] = called and session or nil
    if not (called and session) then
      c.sock:close()
      local code = herr == "timeout" and "Timeout" or "TLSError"
      return failure(code, "TLS handshake with " .. u.authority .. " failed: " .. tostring(herr), false)
    end
  end
  return c
end

-- The request head and body as one string.
local function request_text(req, u, fresh)
  local body = req.body or ""
  local lines = {("%s %s HTTP/1.1"):format(req.method or "GET", u.target), "Host: " .. u.authority}
  local seen = {}
  for name, value in pairs(req.headers or {}) do
    local lname = name:lower()
    seen[lname] = true
    if lname ~= "host" and lname ~= "content-length" and lname ~= "connection" then
      lines[#lines + 1] = name .. ": " .. value
    end
  end
  if not seen["user-agent"] then lines[#lines + 1] = "User-Agent: " .. USER_AGENT end
  if body ~= "" or (req.method or "GET") ~= "GET" then
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  lines[#lines + 1] = fresh and "Connection: close" or "Connection: keep-alive"
  lines[#lines + 1] = ""
  lines[#lines + 1] = body
  return table.concat(lines, "\r\n")
end

function Conn:send(text)
  self:arm()
  -- From here on any request byte may have reached the server: errors carry sent = true.
  self.sent = true
  local n, err = self.sock:send(text)
  if not n then
    if err == "timeout" then return self:fail("Timeout", "timed out sending the request") end
    return self:fail("ConnectionReset", "connection lost while sending: " .. tostring(err))
  end
  return true
end

-- Reads the status line: status, version; or nil, err, plus `retry_fresh` when a reused
-- pooled connection turned out dead before any response byte came back.
function Conn:read_status_line()
  local line, err = self:line()
  if not line then
    if self.reused and (err == "closed" or err == "connection reset by peer") then
      self.sock:close()
      return nil, nil, true
    end
    return self:read_failure("status line", err)
  end
  local version, status = line:match("^HTTP/(%d%.%d) (%d%d%d)")
  if not status then return self:fail("TransportError", "not an HTTP response") end
  self.head_size = #line
  return tonumber(status), version
end

-- Reads header lines up to the blank line: lower-case name -> value (repeats joined).
function Conn:read_headers()
  local headers = {}
  while true do
    local line, err = self:line()
    if not line then return self:read_failure("headers", err) end
    if line == "" then return headers end
    self.head_size = self.head_size + #line
    if self.head_size > self.max then return self:fail("ResponseTooLarge", self:too_large()) end
    local name, value = line:match("^([^:%s]+)%s*:%s*(.-)%s*$")
    if not name then return self:fail("TransportError", "malformed response header") end
    name = name:lower()
    headers[name] = headers[name] and headers[name] .. ", " .. value or value
  end
end

function Conn:too_large()
  return ("response larger than max_response_size (%d bytes)"):format(self.max)
end

function Conn:take(chunk)
  self.size = self.size + #chunk
  if self.size > self.max then return false end
  self.parts[#self.parts + 1] = chunk
  return true
end

-- Reads exactly `len` bytes into the body, a piece at a time.
function Conn:read_exact(len)
  while len > 0 do
    self:arm()
    local data, rerr = self.sock:receiveany(math.min(len, CHUNK))
    if not data then return self:read_failure("body", rerr) end
    len = len - #data
    if not self:take(data) then return self:fail("ResponseTooLarge", self:too_large()) end
  end
  return true
end

function Conn:read_chunked()
  while true do
    local line, err = self:line()
    if not line then return self:read_failure("body", err) end
    local len = tonumber(line:match("^%s*(%x+)"), 16)
    if not len then return self:fail("TransportError", "malformed chunk size") end
    if len == 0 then
      repeat -- trailers
        line, err = self:line()
        if not line then return self:read_failure("body", err) end
      until line == ""
      return true
    end
    if self.size + len > self.max then return self:fail("ResponseTooLarge", self:too_large()) end
    local ok, e = self:read_exact(len)
    if not ok then return ok, e end
    line, err = self:line()
    if line ~= "" then return self:read_failure("body", err or "malformed chunk") end
  end
end

function Conn:read_to_close()
  while true do
    self:arm()
    local data, rerr = self.sock:receiveany(CHUNK)
    if not data then
      if rerr == "closed" then return true end
      return self:read_failure("body", rerr)
    end
    if not self:take(data) then return self:fail("ResponseTooLarge", self:too_large()) end
  end
end

-- Reads the body the headers announce; returns the body and whether the connection may
-- be kept, or nil, err.
function Conn:read_body(method, status, version, headers)
  self.parts, self.size = {}, 0
  local te = (headers["transfer-encoding"] or ""):lower()
  local clen = headers["content-length"]
  local keep = (headers.connection or ""):lower() ~= "close" and version == "1.1"
  local ok, err = true, nil
  if method == "HEAD" or status == 204 or status == 304 then
    -- no body
  elseif te:find("chunked", 1, true) then
    ok, err = self:read_chunked()
  elseif clen then
    local len = tonumber(clen)
    if not len or len < 0 or len ~= math.floor(len) then
      return self:fail("TransportError", "malformed Content-Length")
    end
    if len > self.max then return self:fail("ResponseTooLarge", self:too_large()) end
    ok, err = self:read_exact(len)
  else
    keep = false -- the body ends when the server closes the connection
    ok, err = self:read_to_close()
  end
  if not ok then return nil, err end
  return table.concat(self.parts), keep
end

-- One request on one connection. Returns res, or nil, err plus `retry_fresh` when a
-- reused pooled connection turned out dead before any response byte came back.
local function exchange(req, u, deadline, fresh)
  local c, err = connect(req, u, deadline, fresh)
  if not c then return nil, err end
  local ok, serr = c:send(request_text(req, u, fresh))
  if not ok then return nil, serr end
  local status, version, headers, retry_fresh
  repeat -- skips 1xx interim responses
    status, version, retry_fresh = c:read_status_line()
    if not status then return nil, version, retry_fresh end
    headers, err = c:read_headers()
    if not headers then return nil, err end
  until status >= 200
  local body, keep = c:read_body(req.method, status, version, headers)
  if not body then return nil, keep end
  if keep and not fresh then
    c.sock:setkeepalive(POOL_IDLE_MS, POOL_SIZE)
  else
    c.sock:close()
  end
  return {status = status, headers = headers, body = body}
end

--- Sends one request through a cosocket. Must run where cosockets are allowed (rewrite,
-- access, content, timer, ssl_cert, ssl_session_fetch phases).
-- @tparam table req `{method=, url=, headers={name=value}, body=, timeout= [s, whole
--   request], connect_timeout= [s], max_response_size= [bytes], fresh_connect=}`;
--   `ca_file` and `proxy` are refused (cosockets trust `lua_ssl_trusted_certificate` and
--   cannot use a proxy)
-- @treturn ?table `{status=, headers= (lower-case names; repeats joined by ", "), body=}`
-- @treturn ?table err `{code=, message=, sent=}`: `ConnectFailed`, `Timeout`,
--   `ConnectionReset`, `TLSError`, `ResponseTooLarge`, `TransportError`, or
--   `InvalidParameter` for `ca_file`/`proxy`; `sent` is true once any request byte may
--   have reached the server
function M.request(req)
  if req.ca_file or (req.proxy and req.proxy ~= "") then -- "": no proxy
    return failure("InvalidParameter", (req.ca_file and "ca_file" or "proxy") .. " cannot apply "
      .. "to OpenResty cosockets: set lua_ssl_trusted_certificate in nginx.conf instead, or "
      .. "use the libcurl transport (blocking)", false)
  end
  local u = url_parts(req.url or "")
  if not u then return failure("TransportError", "unsupported URL", false) end
  for name, value in pairs(req.headers or {}) do
    if name:find("[\r\n]") or tostring(value):find("[\r\n]") then
      return failure("TransportError", "header " .. name .. " holds CR or LF", false)
    end
  end
  ngx.update_time()
  local deadline = ngx.now() + (req.timeout or 30)
  req = setmetatable({
    connect_timeout = req.connect_timeout or 5,
    max_response_size = req.max_response_size or 16 * 1024 * 1024,
  }, {__index = req})
  local res, err, retry_fresh = exchange(req, u, deadline, req.fresh_connect)
  if retry_fresh then
    -- The pooled connection had been closed by the server (idle timeout) before our
    -- request reached it; only repeatable requests use pooled connections, so sending
    -- again on a new connection is safe (libcurl does the same).
    res, err = exchange(req, u, deadline, true)
  end
  return res, err
end

return M
