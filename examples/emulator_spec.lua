-- How to test your own provisioning code offline: start the emulator that ships with
-- aliyun-iot from your busted suite, point the client at it, inspect what it holds.
-- Run: busted examples/emulator_spec.lua (needs nginx with libnginx-mod-http-lua).
local emulator = require "aliyun.iot.emulator"
local iot = require "aliyun.iot"

describe("my provisioning code", function()
    local emu, client

    lazy_setup(function()
        emu = emulator.start { products = { "a1MyProduct" }, async_delay = 0 }
        client = assert(iot.new { endpoint = emu.endpoint, access_key_id = emu.access_key_id,
                                  access_key_secret = emu.access_key_secret })
    end)
    lazy_teardown(function() emu:stop() end)
    before_each(function() emu:reset() end)

    it("registers a device exactly once", function()
        local res = assert(client:call("RegisterDevice",
            { ProductKey = "a1MyProduct", DeviceName = "lamp-01" }))
        assert.equal("lamp-01", res.Data.DeviceName)
        assert.same({ "lamp-01" }, emu:state().products.a1MyProduct.names)
    end)

    it("sees a throttled call as an error", function()
        emu:fault { kind = "throttle", count = 10, action = "QueryDevice" }
        local res, err = client:call("QueryDevice", { ProductKey = "a1MyProduct" }, { max_retries = 0 })
        assert.is_nil(res)
        assert.equal("Throttling.User", err.code)
    end)
end)
