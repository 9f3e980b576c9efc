-- Credentials providers inside real nginx (issue 13): fetched through cosockets without
-- blocking the worker, one fetch however many light threads wait for it, and one for all
-- workers with credentials_shared_dict. The
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
    location = /shared {
        content_by_lua_block {
            -- a client per request: only the shared dict can spare a fetch per request
            local iot = require "aliyun.iot"
            local c = assert(iot.new{endpoint = "@EMU@", sts_endpoint = "@EMU@", qps = false,
                credentials_shared_dict = "aliyun_iot_pacing",
                credentials = {type = "ram_role_arn", access_key_id = "testid",
                               access_key_secret = "testsecret",
                               role_arn = "acs:ram::1234567890:role/provisioner"}})
            local res, err = c:query_device{ProductKey = "a1TestPK001"}
            ngx.say(res and "ok" or tostring(err))
        }
    }
    location = /shared_policy {
        content_by_lua_block {
            -- the same role with the Policy of the query: a narrower session is its own
            local iot = require "aliyun.iot"
            local c = assert(iot.new{endpoint = "@EMU@", sts_endpoint = "@EMU@", qps = false,
                credentials_shared_dict = "aliyun_iot_pacing",
                credentials = {type = "ram_role_arn", access_key_id = "testid",
                               access_key_secret = "testsecret", policy = ngx.unescape_uri(ngx.var.arg_p),
                               role_arn = "acs:ram::1234567890:role/provisioner"}})
            local res, err = c:query_device{ProductKey = "a1TestPK001"}
            ngx.say(res and "ok" or tostring(err))
        }
    }
]]

describe("OpenResty credentials #openresty", function()
  local emu, srv

  setup(function()
    emu = emulator.start{async_delay = 0}
    srv = openresty.start{workers = 2,
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

  it("credentials_shared_dict: one AssumeRole for 20 parallel requests over 2 workers", function()
    emu:reset()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local args = {}
    for i = 1, 20 do args[i] = ("-o %s/%d %s/shared"):format(dir, i, srv.url) end
    assert(os.execute(("curl -s -Z --parallel-immediate --parallel-max 20 %s >/dev/null 2>&1")
      :format(table.concat(args, " "))))
    for i = 1, 20 do
      local f = assert(io.open(dir .. "/" .. i))
      assert.are.equal("ok\n", f:read("*a"))
      f:close()
    end
    os.execute("rm -rf " .. dir)
    local assumed = 0
    for _, r in ipairs(emu:requests()) do
      if r.action == "AssumeRole" then assumed = assumed + 1 end
    end
    assert.are.equal(1, assumed)
  end)

  it("credentials_shared_dict: a different Policy is a different session, not a shared one", function()
    emu:reset()
    local policies = {'{"Version":"1","Statement":[]}', '{"Version":"1"}'}
    for _, policy in ipairs(policies) do
      for _ = 1, 2 do
        local out = {}
        local _, status = http.request{url = srv.url .. "/shared_policy?p="
          .. policy:gsub("[^%w]", function(ch) return ("%%%02X"):format(ch:byte()) end),
          sink = ltn12.sink.table(out)}
        assert.are.equal(200, status, srv.log())
        assert.are.equal("ok\n", table.concat(out))
      end
    end
    local assumed = {}
    for _, r in ipairs(emu:requests()) do
      if r.action == "AssumeRole" then assumed[#assumed + 1] = r.params.Policy end
    end
    assert.are.same(policies, assumed)
  end)
end)
