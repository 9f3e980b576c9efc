--- A local emulator of the Alibaba Cloud IoT Platform device-registration API (2018-01-20),
-- for offline tests: a real nginx + ngx_lua server on 127.0.0.1 with its own signature
-- verification, started and inspected from Lua.
--
--     local emu = require("aliyun.iot.emulator").start{}
--     -- emu.endpoint == "http://127.0.0.1:PORT/", credentials testid / testsecret
--     emu:stop()
--
-- This launcher runs under the caller's interpreter (Lua 5.1-5.4, LuaJIT) and needs the
-- standard library, LuaSocket (Debian: lua-socket) and lua-cjson; it never loads
-- `aliyun.iot` or `aliyun.iot.core` (the server verifies signatures with its own code).
-- Needs nginx with the Lua module (Debian: nginx, libnginx-mod-http-lua, lua-resty-core),
-- and openssl for `tls = true`.
-- @module aliyun.iot.emulator
local knobs = require "aliyun.iot.emulator.knobs"
local cjson = require("cjson.safe").new()
cjson.decode_invalid_numbers(false)

local M = {}

local Emulator = {}
Emulator.__index = Emulator

local DEFAULTS = {
    port = 0, tls = false, access_keys = false, accounts = false, security_tokens = {},
    products = false, iot_instance_id = false, async_delay = 0.3, qps_limits = false,
    max_count = 10000, invalid_names = "async", apply_id_base = 100000, nginx = false,
    product_secrets = false, query_device_secrets = true, credentials_ttl = false,
    credentials_fail = false, imds = "v2", oidc_token = false, ecs_role = "EmulatorEcsRole",
}

local is_int = knobs.is_int

local function check(cond, msg) if not cond then error("aliyun.iot.emulator: " .. msg, 4) end end

local function check_strings(t, what)
    check(type(t) == "table", what .. " must be a list of strings")
    for _, v in pairs(t) do check(type(v) == "string" and v ~= "", what .. " must be a list of strings") end
end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    return keys
end

-- The accounts: `accounts = {name = {access_keys = {id = secret}, products = {...}}}`, or the
-- plain form (`access_keys`, `products`), which is one account named "default" owning every
-- key and product given. An AccessKeyId or a ProductKey belongs to one account only.
local function accounts_of(o)
    if not o.accounts then
        local keys = o.access_keys or { testid = "testsecret" }
        return { default = { access_keys = keys, products = o.products or { "a1TestPK001" } } }
    end
    check(not o.access_keys and not o.products, "give access_keys and products inside accounts, not beside them")
    check(type(o.accounts) == "table" and next(o.accounts) ~= nil, "accounts must be {name = {access_keys =, products =}}")
    local key_owner, pk_owner, out = {}, {}, {}
    for name, a in pairs(o.accounts) do
        check(type(name) == "string" and name ~= "" and type(a) == "table", "accounts must be {name = {access_keys =, products =}}")
        for k in pairs(a) do check(k == "access_keys" or k == "products", "accounts." .. name .. ": unknown field " .. tostring(k)) end
        check(type(a.access_keys) == "table", "accounts." .. name .. " needs access_keys")
        for id in pairs(a.access_keys) do
            check(not key_owner[id], "AccessKeyId " .. tostring(id) .. " is in two accounts")
            key_owner[id] = name
        end
        local products = a.products or {}
        check_strings(products, "accounts." .. name .. ".products")
        for _, pk in ipairs(products) do
            check(not pk_owner[pk], "ProductKey " .. pk .. " is in two accounts")
            pk_owner[pk] = name
        end
        out[name] = { access_keys = a.access_keys, products = products }
    end
    return out
end

local function check_accounts(accounts)
    local n = 0
    for _, a in pairs(accounts) do
        check(type(a.access_keys) == "table" and next(a.access_keys) ~= nil, "access_keys must be {id = secret, ...}")
        for k, v in pairs(a.access_keys) do
            check(type(k) == "string" and k ~= "" and type(v) == "string" and v ~= "", "access_keys must map strings to strings")
        end
        check_strings(a.products, "products")
        n = n + #a.products
    end
    check(n > 0, "products must be a non-empty list of ProductKeys")
end

-- product_secrets: {ProductKey = ProductSecret} for products of the emulator.
local function check_product_secrets(secrets, accounts)
    if not secrets then return {} end
    check(type(secrets) == "table", "product_secrets must be {ProductKey = ProductSecret}")
    local known = {}
    for _, a in pairs(accounts) do for _, pk in ipairs(a.products) do known[pk] = true end end
    for pk, secret in pairs(secrets) do
        check(type(pk) == "string" and known[pk], "product_secrets: " .. tostring(pk) .. " is not a product of the emulator")
        check(type(secret) == "string" and secret ~= "", "product_secrets: the secret of " .. pk .. " must be a non-empty string")
    end
    return secrets
end

local function options(opts)
    check(opts == nil or type(opts) == "table", "start expects a table of options")
    local o = {}
    for k, v in pairs(opts or {}) do
        check(DEFAULTS[k] ~= nil, "unknown option " .. tostring(k))
        o[k] = v
    end
    for k, v in pairs(DEFAULTS) do if o[k] == nil then o[k] = v end end
    for k in pairs(knobs.SETTABLE) do
        local ok, msg = knobs.SETTABLE[k](o[k])
        check(ok, msg)
    end
    check(is_int(o.port) and o.port >= 0 and o.port < 65536, "port must be 0..65535")
    check(type(o.tls) == "boolean", "tls must be a boolean")
    o.accounts = accounts_of(o)
    check_accounts(o.accounts)
    check_strings(o.security_tokens, "security_tokens")
    o.product_secrets = check_product_secrets(o.product_secrets, o.accounts)
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

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function run(cmd)
    local ok = os.execute(cmd)
    return ok == true or ok == 0
end

-- Every file is made 0600 before anything is written into it (config.json holds the
-- AccessKeySecrets): created empty under umask 077, then filled.
local function write_file(path, s)
    check(run("umask 077 && : > " .. shell_quote(path)), "cannot create " .. path)
    local f = assert(io.open(path, "wb"))
    assert(f:write(s))
    assert(f:close())
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
  # a request line (a GET URL) or one header up to 1 MiB, 4 MiB in all; the server refuses
  # any header over 16 KiB itself (server.lua), before parsing it
  large_client_header_buffers 4 1m;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  lua_socket_log_errors off;
  init_by_lua_block { require("aliyun.iot.emulator.server").init("%s/config.json") }
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
-- watchdog stops nginx and removes the prefix; `stop` does the same on request. Both run
-- with an empty environment and umask 077 (their files hold the AccessKeySecrets).
local WATCHDOG = [[
umask 077
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
    os.remove(prefix .. "/nginx.pid")
    os.remove(prefix .. "/error.log")
    local nginx = o.nginx or find_first { "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx" } or "nginx"
    -- a clean environment: the caller's may hold ALIBABA_CLOUD_ACCESS_KEY_SECRET and the like
    check(run("env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin sh -c "
        .. shell_quote(WATCHDOG) .. " sh " .. shell_quote(prefix) .. " " .. own_pid()
        .. " " .. shell_quote(nginx) .. " </dev/null >/dev/null 2>&1 &"), "cannot run sh")
    local deadline = socket.gettime() + 10
    local pid
    while socket.gettime() < deadline do
        pid = pid or (read_file(prefix .. "/master.pid") or ""):match("%d+")
        -- nginx writes its own pid file (nginx.pid) only once it holds its ports: until
        -- then, whatever answers on the port is somebody else's server (another emulator)
        if pid and read_file(prefix .. "/nginx.pid") then
            local c = socket.tcp()
            c:settimeout(0.2)
            local ok = c:connect("127.0.0.1", port)
            c:close()
            if ok then return port, tls_port, pid end
        end
        local log = read_file(prefix .. "/error.log") or ""
        if (pid and not alive(pid)) or log:find("still could not bind", 1, true)
            or log:find("[emerg]", 1, true) then
            if pid then run("kill " .. pid .. " 2>/dev/null") end
            return nil, log .. (read_file(prefix .. "/stdout.log") or "")
        end
        sleep(0.005)
    end
    if pid then run("kill " .. pid .. " 2>/dev/null") end
    return nil, "nginx did not answer within 10 s: " .. (read_file(prefix .. "/error.log") or "")
end

-- A private folder (0700) for the server's files.
local function make_prefix()
    local p = io.popen("mktemp -d \"${TMPDIR:-/tmp}/aliyun-iot-emulator.XXXXXX\" 2>/dev/null")
    local prefix = p and p:read("*l")
    if p then p:close() end
    check(prefix and prefix:sub(1, 1) == "/", "mktemp -d failed")
    return prefix
end

-- The key the object advertises: testid when present, else the first key of the first
-- account by name; and its account.
local function first_key(accounts)
    for name, a in pairs(accounts) do
        if a.access_keys.testid then return "testid", a.access_keys.testid, name end
    end
    local name = sorted_keys(accounts)[1]
    local a = accounts[name]
    local id = sorted_keys(a.access_keys)[1]
    return id, a.access_keys[id], name
end

--- Starts an emulator. Raises when it cannot start (it is test setup).
-- @param opts table, every field optional:
--   `port` (0: a free port), `tls` (false; true: HTTPS endpoint with a throwaway CA),
--   `access_keys` ({testid = "testsecret"}) and `products` ({"a1TestPK001"}): one account,
--   named "default", owning all of these keys and products; or instead of both,
--   `accounts` ({name = {access_keys = {id = secret, ...}, products = {ProductKey, ...}}}):
--   each account sees only its own products, their devices and the applies its keys (and
--   the credentials issued to it) made; an AccessKeyId or ProductKey is in one account only.
--   `security_tokens` ({}: SecurityTokens are not checked, a request may carry any or
--   none; non-empty: a request that carries a SecurityToken with a configured AccessKey
--   must carry one of these), `iot_instance_id` (nil; when set, requests must carry it),
--   `async_delay` (0.3 s per CHECK/CREATE phase), `qps_limits` (false; true: the documented
--   per-action limits, per account; or {Action = qps}), `max_count` (10000),
--   `invalid_names` ("async" | "sync"), `query_device_secrets` (true; false: QueryDevice
--   lists devices without their DeviceSecret, which BatchQueryDeviceDetail still gives),
--   `apply_id_base` (100000; an integer or a decimal
--   string, ApplyIds count up from it), `nginx` (path of the binary), `product_secrets`
--   ({ProductKey = ProductSecret}: those products take dynamic registrations,
--   `POST /auth/register/device`, see `set_active`).
--   Credentials it serves (STS `AssumeRole` and `AssumeRoleWithOIDC` on `endpoint`, ECS
--   instance metadata under `endpoint .. "latest/"`, a credentials URI at
--   `endpoint .. "credentials-uri"`): `credentials_ttl` (false: STS's DurationSeconds,
--   3600 for metadata and the URI; or seconds, short for tests), `credentials_fail`
--   (false; true: metadata and URI credentials answer 500), `imds` ("v2": token optional;
--   "v1": the token PUT refused; "v2_only": a token required), `oidc_token` (false: every
--   AssumeRoleWithOIDC refused; or the one token accepted), `ecs_role`
--   ("EmulatorEcsRole"). Metadata, URI and OIDC credentials act for the account of the
--   advertised key; AssumeRole's for the caller's.
-- @return emulator object: fields `endpoint` ("http://127.0.0.1:PORT/" or https), `ca_file`
--   (with tls), `port`, `control_endpoint` (plain HTTP), `prefix` (its private folder,
--   removed by `stop`), `access_key_id`, `access_key_secret` (testid when configured, else
--   the first key of the first account by name); methods `stop`, `fault`, `clear_faults`,
--   `requests`, `state`, `reset`, `set`, `set_active`, `set_online`, `issue_credentials`.
function M.start(opts)
    local o = options(opts)
    local root = module_root()
    local mods = {
        ndk = find_first { "/usr/lib/nginx/modules/ndk_http_module.so", "/usr/share/nginx/modules/ndk_http_module.so" },
        lua = find_first { "/usr/lib/nginx/modules/ngx_http_lua_module.so", "/usr/share/nginx/modules/ngx_http_lua_module.so" },
    }
    check(mods.ndk and mods.lua, "nginx's Lua module is missing (Debian: libnginx-mod-http-lua)")
    local prefix = make_prefix()
    local ca_file = o.tls and make_certs(prefix) or nil
    local config = {}
    for k in pairs(knobs.SETTABLE) do config[k] = o[k] end
    config.accounts, config.security_tokens = o.accounts, o.security_tokens
    config.iot_instance_id = o.iot_instance_id or nil
    config.apply_id_base = o.apply_id_base
    config.product_secrets = o.product_secrets
    -- the account that OIDC, metadata and URI credentials act for
    config.issue_account = select(3, first_key(o.accounts))
    write_file(prefix .. "/config.json", assert(cjson.encode(config)))

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
    local id, secret = first_key(o.accounts)
    return setmetatable({
        endpoint = (tls_port and "https" or "http") .. "://127.0.0.1:" .. (tls_port or port) .. "/",
        control_endpoint = "http://127.0.0.1:" .. port .. "/",
        port = tls_port or port, ca_file = ca_file, access_key_id = id, access_key_secret = secret,
        prefix = prefix, _prefix = prefix, _pid = pid,
    }, Emulator)
end

-- JSON numbers come back as floats from lua-cjson on 5.3+; integers go back to integers.
local function integers(v)
    if type(v) == "table" then
        for k, x in pairs(v) do v[k] = integers(x) end
    elseif math.tointeger and type(v) == "number" then
        return math.tointeger(v) or v
    end
    return v
end

-- A control request: JSON both ways; `arg` (a table) makes it a POST.
local function control(self, name, arg)
    if self._stopped then error("aliyun.iot.emulator: the emulator is stopped", 3) end
    local http, ltn12 = require "socket.http", require "ltn12"
    local body = arg ~= nil and assert(cjson.encode(arg)) or nil
    local headers = { accept = "application/json" }
    if body then headers["content-length"], headers["content-type"] = #body, "application/json" end
    local out = {}
    local _, code = http.request {
        url = self.control_endpoint .. "__emulator/" .. name,
        method = body and "POST" or "GET", headers = headers,
        source = body and ltn12.source.string(body) or nil,
        sink = ltn12.sink.table(out),
    }
    local v = cjson.decode(table.concat(out))
    if code ~= 200 then
        error("aliyun.iot.emulator: " .. name .. " failed: " .. tostring(type(v) == "table" and v.error or code), 3)
    end
    return integers(v)
end

--- Stops the server and removes its files. Idempotent.
function Emulator:stop()
    if self._stopped then return end
    self._stopped = true
    if not self._pid then return run("rm -rf " .. shell_quote(self._prefix)) end
    run("kill " .. self._pid .. " 2>/dev/null")
    local deadline = socket.gettime() + 5
    while alive(self._pid) and socket.gettime() < deadline do sleep(0.005) end
    run("rm -rf " .. shell_quote(self._prefix))
end

--- Injects a fault into the next matching API requests (control requests are never hit).
-- Faults meet only requests that passed every gateway check; the first matching fault wins.
-- @param f {kind = "503"|"throttle"|"reset"|"slow"|"truncate"|"malformed"|"reset_after"|"retry_after",
--   count = N (the next N matching requests) or probability = p (each matching request, until
--   cleared), action = "BatchRegisterDevice" (optional: only that action),
--   delay = seconds (slow; default 1)}.
--   `503`: HTTP 503 ServiceUnavailable; `throttle`: HTTP 400 Throttling.User; `reset`: the
--   connection is closed without an answer; `slow`: answered normally after `delay`;
--   `truncate`: a 200 whose body stops halfway, then the connection closes; `malformed`: a
--   200 whose body is neither JSON nor XML; `reset_after`: the action is performed, then the
--   connection is closed without an answer; `retry_after`: HTTP 429 TooManyRequests with
--   `x-acs-retry-after` set to `delay` (default 0.2 s) in milliseconds. Only `slow` and
--   `reset_after` change state.
function Emulator:fault(f)
    local ok, msg = knobs.check_fault(f)
    check(ok, "fault: " .. tostring(msg))
    control(self, "fault", f)
end

--- Removes every injected fault.
function Emulator:clear_faults() control(self, "clear_faults", {}) end

--- Every API request received so far, in order: array of {action=, method=, params=
-- (without Signature; a SecurityToken as "<redacted>"), signature = "V1"|"ACS3"|"none" (a
-- request refused for an oversized header), status = HTTP status (0: connection dropped),
-- code = error code or nil, fault = kind or nil, user_agent = the User-Agent header}.
-- Instance metadata and credentials-URI requests are there too, `action` being the path and
-- `params.token` "given" or "none" (an IMDSv2 token sent or not).
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
-- Devices = {names created}, account = name}, ...}}; each product also has `account`, and
-- `details`: per DeviceName that has a nickname, props, groups, a disable or a connection
-- state, {Nickname =, props = {key = value}, groups = {sorted group names}, disabled =,
-- Status =}. `groups` lists the device groups: {GroupId =, GroupName =, account =,
-- devices = {sorted "ProductKey/DeviceName"}}. Kind "count" is a random-name apply
-- (BatchRegisterDevice), "check" a named one (BatchCheckDeviceNames).
-- ApplyIds are integers (decimal strings beyond 2^53 on
-- Lua 5.1/5.2/LuaJIT).
function Emulator:state()
    local s = control(self, "state")
    for _, a in ipairs(s.applies) do a.ApplyId = exact_integer(a.ApplyId) end
    return s
end

--- Temporary credentials of an account, as STS issues them: they act for that account (see
-- its products, devices and applies) only with their SecurityToken, until they expire
-- (then InvalidSecurityToken.Expired; another token: InvalidSecurityToken.MismatchWithAccessKey).
-- They outlive `reset`.
-- @param t {account = name ("default" for the plain access_keys form), expires_in = seconds
--   (1..43200, default 3600)}
-- @return {AccessKeyId = "STS....", AccessKeySecret =, SecurityToken =, Expiration = ISO 8601 UTC}
function Emulator:issue_credentials(t)
    check(type(t) == "table" and type(t.account) == "string", "issue_credentials expects {account = name}")
    return control(self, "issue_credentials", t)
end

--- Forgets devices, applies, requests, faults, nonces and QPS windows; keeps the options
-- and the credentials issued.
function Emulator:reset() control(self, "reset", {}) end

--- Marks a device active, as its first connection would (dynamic registration then refuses
-- it), or inactive again with `active = false`. Raises for a device that does not exist.
-- @param t {ProductKey =, DeviceName =, active = true (default) | false}
function Emulator:set_active(t)
    check(type(t) == "table" and type(t.ProductKey) == "string" and type(t.DeviceName) == "string",
        "set_active expects {ProductKey =, DeviceName =}")
    control(self, "set_active", t)
end

--- Marks devices online (as if connected) or offline (`online = false`); either makes them
-- active. DisableThing takes an online device offline, as the platform disconnects a
-- disabled device: BatchGetDeviceState shows DISABLE at once. A test that needs a device
-- that stays connected though disabled (retire's wait, `--force`) says so with
-- `stay_online = true`: that device shows ONLINE until a test takes it offline, then
-- DISABLE. Raises, changing nothing, when a device does not exist.
-- @param t {ProductKey =, DeviceName = name or {names}, online = true (default) | false,
--   stay_online = true | false (default; only with online)}
function Emulator:set_online(t)
    check(type(t) == "table" and type(t.ProductKey) == "string"
        and (type(t.DeviceName) == "string" or type(t.DeviceName) == "table"),
        "set_online expects {ProductKey =, DeviceName = name or {names}}")
    control(self, "set_online", t)
end

--- Changes options of the running server: `async_delay`, `qps_limits`, `invalid_names`,
-- `max_count`, `query_device_secrets`, `credentials_ttl`, `credentials_fail`, `imds`,
-- `oidc_token`, `ecs_role` (checked as in `start`; anything else or an invalid value
-- raises, and the server, which checks again, changes nothing). Sent as JSON.
function Emulator:set(t)
    check(type(t) == "table", "set expects a table")
    local ok, msg = knobs.check_settings(t)
    check(ok, "set: " .. tostring(msg))
    control(self, "set", t)
end

return M
