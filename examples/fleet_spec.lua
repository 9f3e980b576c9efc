-- examples/fleet.csv planned as a user plans it (`aliyun-iot plan`, a separate process,
-- credentials from the environment) against the local emulator: every device to create,
-- nothing written, exit 2 with --detailed-exitcode; then applied (`aliyun-iot apply`): the
-- emulator holds the fleet, and the plan is empty.
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

  it("applies the fleet: the emulator holds it, and the plan is then empty", function()
    local cmd = ("env -u LUA_PATH -u LUA_CPATH ALIBABA_CLOUD_ACCESS_KEY_ID=%s " ..
      "ALIBABA_CLOUD_ACCESS_KEY_SECRET=%s %s bin/aliyun-iot %%s --endpoint %s --product-key a1FleetPK " ..
      "--manifest examples/fleet.csv 2>/dev/null"):format(
      emu.access_key_id, emu.access_key_secret, LUA, emu.endpoint)
    local out, code = run(cmd:format("apply"))
    assert.are.equal(0, code)
    assert.matches("\nApply: 4 created, 13 done%.\n$", out)
    local state = emu:state().products.a1FleetPK
    assert.are.same({"lamp_north_01", "lamp_north_02", "lamp_south_01", "meter_0001"}, state.names)
    assert.are.equal("meter_one", state.details.meter_0001.Nickname)
    assert.are.same({kind = "meter", site = "north"}, state.details.meter_0001.props)
    assert.are.same({"meters"}, state.details.meter_0001.groups)
    out, code = run(cmd:format("plan --detailed-exitcode"))
    assert.are.equal(0, code)
    assert.matches("No changes", out)
  end)
end)
