--- A local emulator of the Alibaba Cloud IoT Platform device-registration API (2018-01-20),
-- for offline tests: a real nginx + ngx_lua server on 127.0.0.1 with its own signature
-- verification, started and inspected from Lua.
--
--     local emu = require("aliyun.iot.emulator").start{}
--     -- emu.endpoint == "http://127.0.0.1:PORT/", credentials testid / testsecret
--     emu:stop()
--
-- This launcher runs under the caller's interpreter (Lua 5.1-5.4, LuaJIT) and needs only
-- the standard library and LuaSocket; it never loads `aliyun.iot` or `aliyun.iot.core`.
-- Needs nginx with the Lua module (Debian: nginx, libnginx-mod-http-lua, lua-resty-core),
-- and openssl for `tls = true`.
-- @module aliyun.iot.emulator
local literal = require "aliyun.iot.emulator.literal"

local M = {}

local Emulator = {}
Emulator.__index = Emulator

local DEFAULTS = {
    port = 0, tls = false, access_keys = { testid = "testsecret" }, security_tokens = {},
    products = { "a1TestPK001" }, iot_instance_id = false, async_delay = 0.3, qps_limits = false,
    max_count = 10000, invalid_names = "async", apply_id_base = 100000, nginx = false,
}

local function is_int(v)
    if type(v) ~= "number" then return false end
    if math.type then return math.type(v) == "integer" or (v == math.floor(v) and v < 2^53 and v > -2^53) end
    return v == math.floor(v) and v < 2^53 and v > -2^53
end

local function check(cond, msg) if not cond then error("aliyun.iot.emulator: " .. msg, 4) end end

-- Checks of the options that `set` may change too.
local CHECKS = {
    async_delay = function(v) check(type(v) == "number" and v >= 0, "async_delay must be a number >= 0") end,
    max_count = function(v) check(is_int(v) and v >= 1, "max_count must be a positive integer") end,
    invalid_names = function(v) check(v == "async" or v == "sync", 'invalid_names must be "async" or "sync"') end,
    qps_limits = function(v)
        check(type(v) == "boolean" or type(v) == "table", "qps_limits must be a boolean or {Action = qps}")
        if type(v) == "table" then
            for k, q in pairs(v) do
                check(type(k) == "string" and type(q) == "number" and q > 0, "qps_limits: {Action = qps > 0}")
            end
        end
    end,
}

local function options(opts)
    check(opts == nil or type(opts) == "table", "start expects a table of options")
    local o = {}
    for k, v in pairs(opts or {}) do
        check(DEFAULTS[k] ~= nil, "unknown option " .. tostring(k))
        o[k] = v
    end
    for k, v in pairs(DEFAULTS) do if o[k] == nil then o[k] = v end end
    for k, fn in pairs(CHECKS) do fn(o[k]) end
    check(is_int(o.port) and o.port >= 0 and o.port < 65536, "port must be 0..65535")
    check(type(o.tls) == "boolean", "tls must be a boolean")
    check(type(o.access_keys) == "table" and next(o.access_keys) ~= nil, "access_keys must be {id = secret, ...}")
    for k, v in pairs(o.access_keys) do check(type(k) == "string" and type(v) == "string", "access_keys must map strings to strings") end
    check(type(o.security_tokens) == "table", "security_tokens must be a list of strings")
    for _, v in pairs(o.security_tokens) do check(type(v) == "string", "security_tokens must be a list of strings") end
    check(type(o.products) == "table" and #o.products > 0, "products must be a non-empty list of ProductKeys")
    for _, v in ipairs(o.products) do check(type(v) == "string" and v ~= "", "products must be strings") end
    check(o.iot_instance_id == false or type(o.iot_instance_id) == "string", "iot_instance_id must be a string")
    local base = o.apply_id_base
    if type(base) == "number" then
        check(is_int(base) and base >= 0, "apply_id_base must be a non-negative integer")
        base = string.format("%d", base)
    end
    check(type(base) == "string" and base:find("^%d+$") and #base <= 18, "apply_id_base must be an integer below 10^18")
    o.apply_id_base = base
    return o
end

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("*a")
    f:close()
    return s
end

local function write_file(path, s)
    local f = assert(io.open(path, "wb"))
    assert(f:write(s))
    f:close()
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function run(cmd)
    local ok = os.execute(cmd)
    return ok == true or ok == 0
end

-- The directory holding aliyun/iot/emulator/*.lua, for nginx's lua_package_path; found from
-- this file so that it works from a checkout and from an installed tree alike.
local function module_root()
    local src = debug.getinfo(1, "S").source:gsub("^@", "")
    local root = src:match("^(.*)/aliyun/iot/emulator%.lua$") or "."
    if root:sub(1, 1) ~= "/" then root = (os.getenv("PWD") or ".") .. "/" .. root end
    check(read_file(root .. "/aliyun/iot/emulator/server.lua"), "cannot find the server modules beside " .. src)
    return root
end

local function find_first(paths)
    for _, p in ipairs(paths) do if read_file(p) then return p end end
end

local function own_pid()
    return assert(read_file("/proc/self/stat"), "emulator needs /proc"):match("^(%d+)")
end

local function is_root()
    local status = read_file("/proc/self/status") or ""
    return status:match("\nUid:%s+(%d+)") == "0"
end

local socket = require "socket"

local function free_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return tonumber(port)
end

local function sleep(s) socket.sleep(s) end

local function nginx_conf(prefix, root, port, tls_port, mods)
    local lines = {
        "daemon off;",
        "master_process on;",
        "worker_processes 1;", -- state in one worker's memory: see emulator/actions.lua
        is_root() and "user root;" or "",
        "pid " .. prefix .. "/nginx.pid;",
        "error_log " .. prefix .. "/error.log warn;",
        "load_module " .. mods.ndk .. ";",
        "load_module " .. mods.lua .. ";",
        "events { worker_connections 4096; }",
        "http {",
        "  access_log off;",
        "  server_tokens off;",
    }
    for _, t in ipairs { "client_body", "proxy", "fastcgi", "uwsgi", "scgi" } do
        lines[#lines + 1] = "  " .. t .. "_temp_path " .. prefix .. "/" .. t .. ";"
    end
    local server = [[
  lua_package_path "%s/?.lua;;";
  lua_shared_dict aliyun_iot_emulator 32m;
  # 10,000 names with nicknames in one form body or one GET URL
  client_body_buffer_size 16m;
  client_max_body_size 64m;
  client_header_buffer_size 4k;
  large_client_header_buffers 8 2m;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  lua_socket_log_errors off;
  init_by_lua_block { require("aliyun.iot.emulator.server").init("%s/config.lua") }
  init_worker_by_lua_block { require("aliyun.iot.emulator.server").init_worker() }
  server {
    listen 127.0.0.1:%d;
%s
    location / { content_by_lua_block { require("aliyun.iot.emulator.server").handle() } }
  }
}
]]
    local tls = ""
    if tls_port then
        tls = string.format("    listen 127.0.0.1:%d ssl;\n    ssl_certificate %s/server.pem;\n"
            .. "    ssl_certificate_key %s/server.key;", tls_port, prefix, prefix)
    end
    lines[#lines + 1] = string.format(server, root, prefix, port, tls)
    return table.concat(lines, "\n")
end

-- A throwaway CA and a server certificate for 127.0.0.1/localhost (EC keys: fast to make).
local function make_certs(prefix)
    local q = shell_quote(prefix)
    write_file(prefix .. "/ext.cnf", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        .. "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    local cmd = "(" .. table.concat({
        "cd " .. q,
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key"
            .. " -out ca.pem -days 2 -subj '/CN=aliyun-iot emulator CA'"
            .. " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key"
            .. " -out server.csr -subj /CN=127.0.0.1",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem"
            .. " -days 2 -extfile ext.cnf",
    }, " && ") .. ") >/dev/null 2>&1"
    check(run(cmd), "openssl could not make the TLS certificates")
    return prefix .. "/ca.pem"
end

-- nginx runs under a small sh watchdog: when the Lua process that started it exits, the
-- watchdog stops nginx and removes the prefix; `stop` does the same on request.
local WATCHDOG = [[
P=$1; LP=$2
"$3" -p "$P" -c "$P/nginx.conf" -e "$P/error.log" >"$P/stdout.log" 2>&1 &
n=$!
echo $n > "$P/master.pid"
( while kill -0 "$LP" 2>/dev/null; do sleep 0.2; done; touch "$P/orphaned"; kill $n ) </dev/null >/dev/null 2>&1 &
w=$!
wait $n
kill $w 2>/dev/null
[ -e "$P/orphaned" ] && rm -rf "$P"
]]

local function alive(pid)
    local stat = read_file("/proc/" .. pid .. "/stat")
    return stat ~= nil and not stat:match("^%d+ %b() Z")
end

local function launch(o, prefix, root, mods)
    local port = o.port ~= 0 and o.port or free_port()
    local tls_port = o.tls and free_port() or nil
    write_file(prefix .. "/nginx.conf", nginx_conf(prefix, root, port, tls_port, mods))
    os.remove(prefix .. "/master.pid")
    os.remove(prefix .. "/error.log")
    local nginx = o.nginx or find_first { "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx" } or "nginx"
    check(run("sh -c " .. shell_quote(WATCHDOG) .. " sh " .. shell_quote(prefix) .. " " .. own_pid()
        .. " " .. shell_quote(nginx) .. " </dev/null >/dev/null 2>&1 &"), "cannot run sh")
    local deadline = socket.gettime() + 10
    local pid
    while socket.gettime() < deadline do
        pid = pid or (read_file(prefix .. "/master.pid") or ""):match("%d+")
        local c = socket.tcp()
        c:settimeout(0.2)
        local ok = c:connect("127.0.0.1", port)
        c:close()
        if ok then return port, tls_port, pid end
        if pid and not alive(pid) then
            return nil, (read_file(prefix .. "/error.log") or "") .. (read_file(prefix .. "/stdout.log") or "")
        end
        sleep(0.005)
    end
    if pid then run("kill " .. pid .. " 2>/dev/null") end
    return nil, "nginx did not answer within 10 s: " .. (read_file(prefix .. "/error.log") or "")
end

--- Starts an emulator. Raises when it cannot start (it is test setup).
-- @param opts table, every field optional:
--   `port` (0: a free port), `tls` (false; true: HTTPS endpoint with a throwaway CA),
--   `access_keys` ({testid = "testsecret"}), `security_tokens` ({}; when non-empty a sent
--   SecurityToken must be one of them), `products` ({"a1TestPK001"}), `iot_instance_id`
--   (nil; when set, requests must carry it), `async_delay` (0.3 s per CHECK/CREATE phase),
--   `qps_limits` (false; true: the documented per-action limits; or {Action = qps}),
--   `max_count` (10000), `invalid_names` ("async" | "sync"), `apply_id_base` (100000; an
--   integer or a decimal string, ApplyIds count up from it), `nginx` (path of the binary).
-- @return emulator object: fields `endpoint` ("http://127.0.0.1:PORT/" or https), `ca_file`
--   (with tls), `port`, `control_endpoint` (plain HTTP), `access_key_id`, `access_key_secret`
--   (the first pair of access_keys); methods `stop`, `fault`, `clear_faults`, `requests`,
--   `state`, `reset`, `set`.
function M.start(opts)
    local o = options(opts)
    local root = module_root()
    local mods = {
        ndk = find_first { "/usr/lib/nginx/modules/ndk_http_module.so", "/usr/share/nginx/modules/ndk_http_module.so" },
        lua = find_first { "/usr/lib/nginx/modules/ngx_http_lua_module.so", "/usr/share/nginx/modules/ngx_http_lua_module.so" },
    }
    check(mods.ndk and mods.lua, "nginx's Lua module is missing (Debian: libnginx-mod-http-lua)")
    local tmp = os.tmpname()
    os.remove(tmp)
    local prefix = tmp .. "-iot-emulator"
    check(run("mkdir -p " .. shell_quote(prefix)), "cannot create " .. prefix)
    local ca_file = o.tls and make_certs(prefix) or nil
    local config = {}
    for k in pairs(CHECKS) do config[k] = o[k] end
    config.access_keys, config.security_tokens, config.products = o.access_keys, o.security_tokens, o.products
    config.iot_instance_id = o.iot_instance_id or nil
    config.apply_id_base = o.apply_id_base
    write_file(prefix .. "/config.lua", literal.encode(config))

    local port, tls_port, pid
    local err
    for _ = 1, o.port == 0 and 5 or 1 do
        port, tls_port, pid = launch(o, prefix, root, mods)
        if port then break end
        err = tls_port
        if not err:find("in use", 1, true) then break end
    end
    if not port then
        run("rm -rf " .. shell_quote(prefix))
        error("aliyun.iot.emulator: nginx did not start: " .. tostring(err), 2)
    end
    local id, secret = next(o.access_keys)
    if o.access_keys.testid then id, secret = "testid", o.access_keys.testid end
    return setmetatable({
        endpoint = (tls_port and "https" or "http") .. "://127.0.0.1:" .. (tls_port or port) .. "/",
        control_endpoint = "http://127.0.0.1:" .. port .. "/",
        port = tls_port or port, ca_file = ca_file, access_key_id = id, access_key_secret = secret,
        _prefix = prefix, _pid = pid,
    }, Emulator)
end

local function control(self, name, arg)
    if self._stopped then error("aliyun.iot.emulator: the emulator is stopped", 3) end
    local http, ltn12 = require "socket.http", require "ltn12"
    local body = arg ~= nil and literal.encode(arg) or nil
    local out = {}
    local _, code = http.request {
        url = self.control_endpoint .. "__emulator/" .. name,
        method = body and "POST" or "GET",
        headers = body and { ["content-length"] = #body, ["content-type"] = "text/plain" } or nil,
        source = body and ltn12.source.string(body) or nil,
        sink = ltn12.sink.table(out),
    }
    local text = table.concat(out)
    local v = literal.decode(text)
    if code ~= 200 then
        error("aliyun.iot.emulator: " .. name .. " failed: " .. tostring(type(v) == "table" and v.error or code), 3)
    end
    return v
end

--- Stops the server and removes its files. Idempotent.
function Emulator:stop()
    if self._stopped then return end
    self._stopped = true
    run("kill " .. self._pid .. " 2>/dev/null")
    local deadline = socket.gettime() + 5
    while alive(self._pid) and socket.gettime() < deadline do sleep(0.005) end
    run("rm -rf " .. shell_quote(self._prefix))
end

local FAULT_KINDS = { ["503"] = true, throttle = true, reset = true, slow = true, truncate = true,
                      malformed = true, reset_after = true }
local FAULT_FIELDS = { kind = true, count = true, probability = true, action = true, delay = true }

--- Injects a fault into the next matching API requests (control requests are never hit).
-- Faults meet only requests that passed every gateway check; the first matching fault wins.
-- @param f {kind = "503"|"throttle"|"reset"|"slow"|"truncate"|"malformed"|"reset_after",
--   count = N (the next N matching requests) or probability = p (each matching request, until
--   cleared), action = "BatchRegisterDevice" (optional: only that action),
--   delay = seconds (slow; default 1)}.
--   `503`: HTTP 503 ServiceUnavailable; `throttle`: HTTP 400 Throttling.User; `reset`: the
--   connection is closed without an answer; `slow`: answered normally after `delay`;
--   `truncate`: a 200 whose body stops halfway, then the connection closes; `malformed`: a
--   200 whose body is neither JSON nor XML; `reset_after`: the action is performed, then the
--   connection is closed without an answer. Only `slow` and `reset_after` change state.
function Emulator:fault(f)
    check(type(f) == "table" and FAULT_KINDS[f.kind], "fault: unknown kind " .. tostring(f and f.kind))
    for k in pairs(f) do check(FAULT_FIELDS[k], "fault: unknown field " .. tostring(k)) end
    check((f.count == nil) ~= (f.probability == nil), "fault: give count or probability")
    check(f.count == nil or (is_int(f.count) and f.count > 0), "fault: count must be a positive integer")
    check(f.probability == nil or (type(f.probability) == "number" and f.probability >= 0 and f.probability <= 1),
        "fault: probability must be within 0..1")
    check(f.delay == nil or (type(f.delay) == "number" and f.delay >= 0), "fault: delay must be seconds")
    control(self, "fault", f)
end

--- Removes every injected fault.
function Emulator:clear_faults() control(self, "clear_faults", {}) end

--- Every API request received so far, in order: array of {action=, method=, params=
-- (without Signature), signature = "V1"|"ACS3", status = HTTP status (0: connection
-- dropped), code = error code or nil, fault = kind or nil}.
function Emulator:requests() return control(self, "requests") end

local function exact_integer(s)
    local n = tonumber(s)
    if math.type then return math.tointeger(n) or s end
    if n and n < 2^53 then return n end
    return s -- beyond 2^53 a 5.1/LuaJIT number is not exact
end

--- The state after finishing every due asynchronous phase:
-- {products = {[ProductKey] = {devices = N, names = {sorted names}}}, applies = {{ApplyId=,
-- ProductKey=, Status=, Kind = "check"|"count", Count=, Valid = {...}, Invalid = {...},
-- Devices = {names created}}, ...}}. ApplyIds are integers (decimal strings beyond 2^53 on
-- Lua 5.1/5.2/LuaJIT).
function Emulator:state()
    local s = control(self, "state")
    for _, a in ipairs(s.applies) do a.ApplyId = exact_integer(a.ApplyId) end
    return s
end

--- Forgets devices, applies, requests, faults, nonces and QPS windows; keeps the options.
function Emulator:reset() control(self, "reset", {}) end

--- Changes options of the running server: `async_delay`, `qps_limits`, `invalid_names`,
-- `max_count` (checked as in `start`; others raise).
function Emulator:set(t)
    check(type(t) == "table", "set expects a table")
    for k, v in pairs(t) do
        check(CHECKS[k], "set: cannot change " .. tostring(k))
        CHECKS[k](v)
    end
    control(self, "set", t)
end

return M
