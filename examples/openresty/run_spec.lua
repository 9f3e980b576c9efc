-- examples/openresty/run.sh run as README says, against the local emulator: the endpoint
-- provisions devices, the port comes from PROVISION_PORT, nothing is written into the
-- checkout, and SIGTERM (as Ctrl-C) stops nginx and removes the temporary prefix.
-- Run: busted examples (from the repository root, after `make` and `make LUA=luajit`).
local emulator = require "aliyun.iot.emulator"
local cjson = require "cjson"
local socket = require "socket"

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function sh(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end
local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end
local function alive(pid) return read("/proc/" .. pid .. "/stat") ~= nil end
local function wait_until(f)
  for _ = 1, 500 do
    if f() then return true end
    socket.sleep(0.02)
  end
  return f()
end

describe("examples/openresty/run.sh", function()
  local emu, tmp

  lazy_setup(function()
    emu = emulator.start{products = {"a1OpenRestyPK"}, async_delay = 0.05}
    tmp = os.tmpname()
    os.remove(tmp)
    assert(sh("mkdir -m 700 " .. q(tmp)))
  end)
  lazy_teardown(function()
    emu:stop()
    sh("rm -rf " .. q(tmp))
  end)

  it("serves POST /provision on PROVISION_PORT, writes nothing into the checkout and " ..
     "cleans up on SIGTERM", function()
    local had_logs = sh("test -e logs || test -e examples/openresty/logs")
    local port = free_port()
    local log = tmp .. "/run.log"
    assert(sh(("env -u RESOLVER PROVISION_PORT=%d ALIYUN_IOT_ENDPOINT=%s " ..
      "ALIBABA_CLOUD_ACCESS_KEY_ID=%s ALIBABA_CLOUD_ACCESS_KEY_SECRET=%s " ..
      "examples/openresty/run.sh >%s 2>&1 </dev/null & echo $! >%s"):format(port,
      q(emu.endpoint), q(emu.access_key_id), q(emu.access_key_secret), q(log),
      q(tmp .. "/pid"))))
    local pid = assert((read(tmp .. "/pid") or ""):match("%d+"))
    local ok, err = pcall(function()
      assert(wait_until(function()
        local c = socket.tcp()
        c:settimeout(0.2)
        local up = c:connect("127.0.0.1", port)
        c:close()
        return up or not alive(pid)
      end), "nginx did not start")
      assert(alive(pid), "run.sh ended: " .. (read(log) or ""))
      local prefix = assert((read(log) or ""):match("prefix (%S+);"), read(log))
      assert.is_true(sh("test -d " .. q(prefix .. "/logs")))
      local status = io.popen(("curl -s -o %s -w '%%{http_code}' -d %s http://127.0.0.1:%d/provision")
        :format(q(tmp .. "/body"), q('{"ProductKey":"a1OpenRestyPK","Count":10}'), port)):read("*a")
      assert.are.equal("200", status, read(tmp .. "/body"))
      local body = cjson.decode(read(tmp .. "/body"))
      assert.are.equal(10, #body.Devices)
      assert.are.equal(10, emu:state().products.a1OpenRestyPK.devices)
      local master = assert((read(prefix .. "/logs/nginx.pid") or ""):match("%d+"))
      assert.is_true(sh("kill -TERM " .. pid))
      assert.is_true(wait_until(function() return not alive(pid) and not alive(master) end),
        "run.sh or nginx still running")
      assert.is_false(sh("test -e " .. q(prefix)), "the prefix folder is left behind")
    end)
    if alive(pid) then sh("kill -TERM " .. pid) end
    assert(ok, err)
    if not had_logs then
      assert.is_false(sh("test -e logs || test -e examples/openresty/logs"),
        "logs/ written into the checkout")
    end
  end)

  it("refuses a PROVISION_PORT that is not a number before starting anything", function()
    assert.is_false(sh("PROVISION_PORT=80x examples/openresty/run.sh >/dev/null 2>&1 </dev/null"))
  end)
end)
