-- examples/provision.lua run as a user runs it (a separate process, credentials from the
-- environment), against the local emulator: the CSV holds exactly the devices created.
-- Run: busted examples/provision_spec.lua (from the repository root, after `make`).
local emulator = require "aliyun.iot.emulator"

local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))

local function run(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  local ok, _, code = p:close()
  if type(ok) == "number" then code = ok end -- Lua 5.1 returns the status itself
  return out, code
end

describe("examples/provision.lua", function()
  local emu

  lazy_setup(function()
    emu = emulator.start{products = {"a1ProvisionPK"}, async_delay = 0.05}
  end)
  lazy_teardown(function() emu:stop() end)

  it("prints a CSV of exactly the devices it created", function()
    local out, code = run(("env ALIBABA_CLOUD_ACCESS_KEY_ID=%s ALIBABA_CLOUD_ACCESS_KEY_SECRET=%s " ..
      "%s examples/provision.lua a1ProvisionPK 1234 %s 2>/dev/null"):format(
      emu.access_key_id, emu.access_key_secret, LUA, emu.endpoint))
    assert.are.equal(0, code)
    local lines = {}
    for line in out:gmatch("([^\r\n]+)\r\n") do lines[#lines + 1] = line end
    assert.are.equal("ProductKey,DeviceName,DeviceSecret,IotId", lines[1])
    local names = {}
    for i = 2, #lines do
      local pk, name, secret, iot_id = lines[i]:match("^([^,]+),([^,]+),([^,]+),([^,]+)$")
      assert.are.equal("a1ProvisionPK", pk)
      assert.truthy(secret and iot_id)
      names[#names + 1] = name
    end
    table.sort(names)
    assert.are.same(emu:state().products.a1ProvisionPK.names, names)
    assert.are.equal(1234, #names)
  end)

  it("exits 2 on missing arguments", function()
    local _, code = run(LUA .. " examples/provision.lua 2>/dev/null")
    assert.are.equal(2, code)
  end)
end)
