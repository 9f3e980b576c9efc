-- examples/fleet.csv planned as a user plans it (`aliyun-iot plan`, a separate process,
-- credentials from the environment) against the local emulator: every device to create,
-- nothing written, exit 2 with --detailed-exitcode.
-- Run: busted examples/fleet_spec.lua (from the repository root, after `make`).
local emulator = require "aliyun.iot.emulator"

local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))

-- The command's stdout and exit status (the shell prints it last: io.popen's close says
-- nothing of it on Lua 5.1 and LuaJIT).
local function run(cmd)
  local p = assert(io.popen(cmd .. "; echo $?"))
  local out = p:read("*a")
  p:close()
  local body, code = out:match("^(.-)(%d+)\n$")
  return body, tonumber(code)
end

describe("examples/fleet.csv", function()
  local emu

  lazy_setup(function() emu = emulator.start{products = {"a1FleetPK"}, async_delay = 0} end)
  lazy_teardown(function() emu:stop() end)

  it("plans the whole fleet against an empty product, writing nothing", function()
    local out, code = run(("env -u LUA_PATH -u LUA_CPATH ALIBABA_CLOUD_ACCESS_KEY_ID=%s " ..
      "ALIBABA_CLOUD_ACCESS_KEY_SECRET=%s %s bin/aliyun-iot plan --endpoint %s --product-key a1FleetPK " ..
      "--manifest examples/fleet.csv --detailed-exitcode 2>/dev/null"):format(
      emu.access_key_id, emu.access_key_secret, LUA, emu.endpoint))
    assert.are.equal(2, code)
    assert.matches("\n%+ meter_0001  create\n", out)
    assert.matches("Plan: 4 to create, 0 to update, 0 unchanged;", out)
    assert.matches("3 groups to create", out)
    for _, r in ipairs(emu:requests()) do
      assert.truthy(r.action:find("^Query") or r.action:find("^BatchQuery"), r.action)
    end
  end)
end)
