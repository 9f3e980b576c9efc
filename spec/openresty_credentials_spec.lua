-- Credentials providers inside real nginx (issue 13): fetched through cosockets without
-- blocking the worker, and one fetch however many light threads wait for it. The
-- /creds location makes a client whose credentials assume a role at the emulator's STS
-- and sends 50 calls at once from 50 light threads (the time they start together is when
-- the credentials are missing: the first fetch, as after an expiry).
local http = require "socket.http"
local ltn12 = require "ltn12"
local emulator = require "aliyun.iot.emulator"
local openresty = require "spec.support.openresty"

local CREDS_LOCATION = [[
    location = /creds {
        content_by_lua_block {
            local iot = require "aliyun.iot"
            local c = assert(iot.new{endpoint = "@EMU@", sts_endpoint = "@EMU@", qps = false,
                credentials = {type = "ram_role_arn", access_key_id = "testid",
                               access_key_secret = "testsecret",
                               role_arn = "acs:ram::1234567890:role/provisioner"}})
            local threads = {}
            for i = 1, 50 do
                threads[i] = ngx.thread.spawn(function()
                    return c:query_device{ProductKey = "a1TestPK001"}
                end)
            end
            local ok, errs = 0, {}
            for i = 1, 50 do
                local _, res, err = ngx.thread.wait(threads[i])
                if res then ok = ok + 1 else errs[#errs + 1] = tostring(err) end
            end
            ngx.say(ok, " ", table.concat(errs, "; "))
        }
    }
]]

describe("OpenResty credentials #openresty", function()
  local emu, srv

  setup(function()
    emu = emulator.start{async_delay = 0}
    srv = openresty.start{workers = 1,
      locations = (CREDS_LOCATION:gsub("@EMU@", emu.endpoint))}
  end)
  teardown(function()
    if srv then srv.stop() end
    if emu then emu:stop() end
  end)

  it("50 light threads waiting for credentials: one AssumeRole, 50 calls served", function()
    local out = {}
    local _, status = http.request{url = srv.url .. "/creds", sink = ltn12.sink.table(out)}
    assert.are.equal(200, status, srv.log())
    assert.are.equal("50 ", (table.concat(out):gsub("\n$", "")))
    local assumed, queried = 0, 0
    for _, r in ipairs(emu:requests()) do
      if r.action == "AssumeRole" then assumed = assumed + 1 end
      if r.action == "QueryDevice" and r.status == 200 then queried = queried + 1 end
    end
    assert.are.same({1, 50}, {assumed, queried})
  end)
end)
