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

-- One request on one connection. Returns res, or nil, err plus `retry_fresh` when a
-- reused pooled connection turned out dead before any response byte came back.
local function exchange(req, u, deadline, fresh)
  local ngx = ngx
  local function remaining_ms()
    ngx.update_time()
    return math.max(1, math.floor((deadline - ngx.now()) * 1000))
  end

  local sock = ngx.socket.tcp()
  local pool = u.scheme .. "://" .. u.host .. ":" .. u.port
  local connect_ms = math.min(math.floor(req.connect_timeout * 1000), remaining_ms())
  sock:settimeouts(connect_ms, remaining_ms(), remaining_ms())
  -- A fresh connection comes from a pool nobody gives connections back to.
  local ok, err = sock:connect(u.host, u.port, {pool = fresh and pool .. "#fresh" or pool})
  if not ok then
    if err == "timeout" then
      return failure("Timeout", "connect to " .. u.authority .. " timed out", false)
    end
    if tostring(err):find("no resolver", 1, true) then
      err = err .. " (set `resolver` in nginx.conf)"
    end
    return failure("ConnectFailed", "cannot connect to " .. u.authority .. ": " .. tostring(err), false)
  end
  local reused = (sock:getreusedtimes() or 0) > 0
  if u.scheme == "https" and not reused then
    sock:settimeouts(connect_ms, remaining_ms(), remaining_ms())
    -- resty.core's sslhandshake raises (an assertion) instead of returning nil, err on
    -- some verification failures, hence the pcall (LuaJIT yields across it).
    local called, session, herr = pcall(sock.sslhandshake, sock, tls_sessions[pool],
                                        not u.ip and u.host or nil, true)
    if not called then herr = "certificate verification failed (see the nginx error log)" end
    tls_sessions[pool] = called and session or nil
    if not (called and session) then
      sock:close()
      local code = herr == "timeout" and "Timeout" or "TLSError"
      return failure(code, "TLS handshake with " .. u.authority .. " failed: " .. tostring(herr), false)
    end
  end

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

  local function fail(code, message)
    sock:close()
    return failure(code, message, true)
  end
  local function receive(pattern)
    sock:settimeouts(connect_ms, remaining_ms(), remaining_ms())
    return sock:receive(pattern)
  end
  local function read_failure(what, rerr)
    if rerr == "timeout" then return fail("Timeout", "timed out reading the " .. what) end
    return fail("ConnectionReset", "connection lost while reading the " .. what .. ": " .. tostring(rerr))
  end

  sock:settimeouts(connect_ms, remaining_ms(), remaining_ms())
  -- From here on any request byte may have reached the server: errors carry sent = true.
  local n
  n, err = sock:send(table.concat(lines, "\r\n"))
  if not n then
    if err == "timeout" then return fail("Timeout", "timed out sending the request") end
    return fail("ConnectionReset", "connection lost while sending: " .. tostring(err))
  end

  local max = req.max_response_size
  local status, version, headers, line
  repeat -- skips 1xx interim responses
    line, err = receive("*l")
    if not line then
      if reused and (err == "closed" or err == "connection reset by peer") then
        sock:close()
        return nil, nil, true
      end
      return read_failure("status line", err)
    end
    version, status = line:match("^HTTP/(%d%.%d) (%d%d%d)")
    if not status then return fail("TransportError", "not an HTTP response") end
    status = tonumber(status)
    headers = {}
    local head_size = #line
    while true do
      line, err = receive("*l")
      if not line then return read_failure("headers", err) end
      if line == "" then break end
      head_size = head_size + #line
      if head_size > max then
        return fail("ResponseTooLarge", ("response larger than max_response_size (%d bytes)"):format(max))
      end
      local name, value = line:match("^([^:%s]+)%s*:%s*(.-)%s*$")
      if not name then return fail("TransportError", "malformed response header") end
      name = name:lower()
      headers[name] = headers[name] and headers[name] .. ", " .. value or value
    end
  until status >= 200

  local parts, size = {}, 0
  local function take(chunk)
    size = size + #chunk
    if size > max then return false end
    parts[#parts + 1] = chunk
    return true
  end
  local too_large = ("response larger than max_response_size (%d bytes)"):format(max)
  -- Reads exactly `len` bytes into the body, a piece at a time so that the whole
  -- request stays within its deadline however slowly the bytes drip in.
  local function read_exact(len, what)
    while len > 0 do
      sock:settimeouts(connect_ms, remaining_ms(), remaining_ms())
      local data, rerr = sock:receiveany(math.min(len, CHUNK))
      if not data then return read_failure(what, rerr) end
      len = len - #data
      if not take(data) then return fail("ResponseTooLarge", too_large) end
    end
    return true
  end

  local te = (headers["transfer-encoding"] or ""):lower()
  local clen = headers["content-length"]
  local keep = (headers.connection or ""):lower() ~= "close" and version == "1.1"
  if req.method == "HEAD" or status == 204 or status == 304 then
    -- no body
  elseif te:find("chunked", 1, true) then
    while true do
      line, err = receive("*l")
      if not line then return read_failure("body", err) end
      local len = tonumber(line:match("^%s*(%x+)"), 16)
      if not len then return fail("TransportError", "malformed chunk size") end
      if len == 0 then
        repeat -- trailers
          line, err = receive("*l")
          if not line then return read_failure("body", err) end
        until line == ""
        break
      end
      if size + len > max then return fail("ResponseTooLarge", too_large) end
      local r1, r2, r3 = read_exact(len, "body")
      if not r1 then return r1, r2, r3 end
      line, err = receive("*l")
      if line ~= "" then return read_failure("body", err or "malformed chunk") end
    end
  elseif clen then
    local len = tonumber(clen)
    if not len or len < 0 or len ~= math.floor(len) then
      return fail("TransportError", "malformed Content-Length")
    end
    if len > max then return fail("ResponseTooLarge", too_large) end
    local r1, r2, r3 = read_exact(len, "body")
    if not r1 then return r1, r2, r3 end
  else
    keep = false -- the body ends when the server closes the connection
    while true do
      sock:settimeouts(connect_ms, remaining_ms(), remaining_ms())
      local data, rerr = sock:receiveany(CHUNK)
      if not data then
        if rerr == "closed" then break end
        return read_failure("body", rerr)
      end
      if not take(data) then return fail("ResponseTooLarge", too_large) end
    end
  end

  if keep and not fresh then
    sock:setkeepalive(POOL_IDLE_MS, POOL_SIZE)
  else
    sock:close()
  end
  return {status = status, headers = headers, body = table.concat(parts)}
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
  if req.ca_file or req.proxy then
    return failure("InvalidParameter", (req.ca_file and "ca_file" or "proxy") .. " cannot apply "
      .. "to OpenResty cosockets: set lua_ssl_trusted_certificate in nginx.conf instead, or "
      .. "use the libcurl transport (blocking)", false)
  end
  local scheme, host, port, target, authority = parse_url(req.url or "")
  if not scheme then return failure("TransportError", "unsupported URL", false) end
  for name, value in pairs(req.headers or {}) do
    if (name .. value):find("[\r\n]") then
      return failure("TransportError", "header " .. name .. " holds CR or LF", false)
    end
  end
  local u = {scheme = scheme, host = host, port = port, target = target, authority = authority,
             ip = host:find("^[%d.]+$") ~= nil or host:find(":", 1, true) ~= nil}
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
