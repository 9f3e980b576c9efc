-- Starts a private nginx running examples/openresty/nginx.conf, with the few edits a test
-- needs (port, prefix, worker count, trust store, extra locations), for the OpenResty spec.
-- Every edit must match the example exactly once, so the spec breaks when they drift apart.
local socket = require "socket"

local M = {}

local ROOT = (os.getenv("PWD") or ".")

local shell = require "spec.support.shell"
local read, sh, q = shell.read, shell.ok, shell.quote

local function edit(text, from, to)
  local out, n = text:gsub(from:gsub("[%p]", "%%%0"), (to:gsub("%%", "%%%%")))
  assert(n == 1, "examples/openresty/nginx.conf no longer has: " .. from)
  return out
end

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

--- Starts nginx. opts: `workers` (1), `trusted` (CA file for lua_ssl_trusted_certificate),
-- `env` ({NAME = value} for nginx), `locations` (extra server-block text), `init` (Lua
-- code run after the example's init_by_lua code).
-- Returns {url = "http://127.0.0.1:PORT", prefix =, stop = function, log = function}.
function M.start(opts)
  opts = opts or {}
  local conf = assert(read(ROOT .. "/examples/openresty/nginx.conf"))
  local prefix = os.tmpname()
  os.remove(prefix)
  assert(sh("mkdir -p " .. q(prefix .. "/logs")))
  local port = free_port()
  conf = edit(conf, "worker_processes auto;", ("worker_processes %d;"):format(opts.workers or 1))
  conf = edit(conf, "listen 127.0.0.1:@PORT@;", ("listen 127.0.0.1:%d reuseport;\n%s")
    :format(port, opts.locations or ""))
  conf = edit(conf, '"@ROOT@/lua/?.lua;@ROOT@/lua/?/init.lua;@ROOT@/examples/openresty/?.lua;;"',
    ('"%s/lua/?.lua;%s/lua/?/init.lua;%s/examples/openresty/?.lua;%s/spec/support/?.lua;;"')
    :format(ROOT, ROOT, ROOT, ROOT))
  conf = edit(conf, '"@ROOT@/build/luajit/?.so;;"', ('"%s/build/luajit/?.so;;"'):format(ROOT))
  conf = edit(conf, "resolver @RESOLVER@", "resolver 127.0.0.1")
  if opts.init then
    conf = edit(conf, 'init_by_lua_block { require "provision" }',
      'init_by_lua_block { require "provision"; ' .. opts.init .. ' }')
  end
  if opts.trusted then
    conf = edit(conf, "/etc/ssl/certs/ca-certificates.crt", opts.trusted)
  end
  if (read("/proc/self/status") or ""):match("\nUid:%s+0%s") then conf = "user root;\n" .. conf end
  local f = assert(io.open(prefix .. "/nginx.conf", "wb"))
  f:write(conf)
  f:close()

  local env = {}
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. q(v) end
  local cmd = ("env %s nginx -p %s -c nginx.conf -e logs/error.log >%s/logs/start.log 2>&1")
    :format(table.concat(env, " "), q(prefix), q(prefix))
  local srv = {url = "http://127.0.0.1:" .. port, prefix = prefix}
  function srv.log() return (read(prefix .. "/logs/start.log") or "") .. (read(prefix .. "/logs/error.log") or "") end
  function srv.stop()
    local pid = (read(prefix .. "/logs/nginx.pid") or ""):match("%d+")
    if pid then
      sh("kill -QUIT " .. pid)
      local deadline = socket.gettime() + 5
      while read("/proc/" .. pid .. "/stat") and socket.gettime() < deadline do socket.sleep(0.02) end
      sh("kill -KILL " .. pid .. " 2>/dev/null")
    end
    sh("rm -rf " .. q(prefix))
  end
  if not sh(cmd) then
    local log = srv.log()
    srv.stop()
    error("nginx did not start: " .. log)
  end
  local deadline = socket.gettime() + 10
  while socket.gettime() < deadline do
    local c = socket.tcp()
    c:settimeout(0.2)
    local ok = c:connect("127.0.0.1", port)
    c:close()
    if ok then return srv end
    socket.sleep(0.01)
  end
  local log = srv.log()
  srv.stop()
  error("nginx did not answer: " .. log)
end

return M
