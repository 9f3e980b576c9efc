-- The emulator judged by clients we did not write: the official Alibaba Cloud Node.js SDKs
-- (@alicloud/pop-core for V1 GET/POST, @alicloud/iot20180120 on @alicloud/openapi-client for
-- ACS3 and V1) run tools/node/official_sdk.js against it. `make deps` installs them into
-- tools/node/node_modules; the spec is pending only when node itself is absent.
local emulator = require "aliyun.iot.emulator"

local function have_node()
    local p = io.popen("command -v node 2>/dev/null")
    local out = p:read("*a")
    p:close()
    return out ~= ""
end

local function exists(path)
    local f = io.open(path)
    if f then f:close() end
    return f ~= nil
end

describe("official Node.js SDK against the emulator", function()
    if not have_node() then
        pending("node is not installed")
        return
    end

    local function run(emu)
        assert(exists("tools/node/node_modules/@alicloud/iot20180120"),
            "the official SDKs are missing: run `make deps` (npm install --prefix tools/node)")
        local env = emu.ca_file and ("NODE_EXTRA_CA_CERTS=" .. emu.ca_file .. " ") or ""
        local p = io.popen(env .. "node tools/node/official_sdk.js " .. emu.endpoint .. " " .. emu.access_key_id
            .. " " .. emu.access_key_secret .. " a1TestPK001 2>&1")
        local out = p:read("*a")
        p:close()
        local ok, bad = 0, {}
        for line in out:gmatch("[^\n]+") do
            if line:find("^ok ") then ok = ok + 1 else bad[#bad + 1] = line end
        end
        assert.same({}, bad)
        assert.equal(32, ok)
        return out
    end

    local function verify(emu)
        -- 3+2 devices per pop-core method, 2+3 per Tea signing mode
        assert.equal(20, emu:state().products.a1TestPK001.devices)
        local rejected, by_style = 0, {}
        for _, r in ipairs(emu:requests()) do
            if r.code == "SignatureDoesNotMatch" then rejected = rejected + 1 end
            by_style[r.signature .. " " .. r.method] = true
        end
        assert.equal(4, rejected)
        assert.same({ ["V1 GET"] = true, ["V1 POST"] = true, ["ACS3 POST"] = true }, by_style)
    end

    it("drives check -> register -> pages and BatchRegisterDevice over HTTP (V1 GET/POST, ACS3)", function()
        local emu = emulator.start { async_delay = 0.05 }
        finally(function() emu:stop() end)
        run(emu)
        verify(emu)
    end)

    it("does the same over HTTPS with the emulator's CA", function()
        local emu = emulator.start { async_delay = 0.05, tls = true }
        finally(function() emu:stop() end)
        assert.matches("^https://", emu.endpoint)
        run(emu)
        verify(emu)
    end)
end)
