-- A journal bound to its target (issue 12 §1): the job line records the endpoint, RegionId,
-- IotInstanceId, ApiVersion and AccessKeyId; a resume set for another endpoint, region,
-- instance or ProductKey is refused before any request, through the library and through
-- real CLI children; `resume --state FILE` alone goes back to the journal's endpoint; a
-- TMPDIR journal is removed once a resume completes its job. Two emulators: the request
-- logs of both prove that nothing was sent.
local iot = require "aliyun.iot"
local journal = require "aliyun.iot.journal"

local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))
local ROOT = os.getenv("PWD")
local BIN = ROOT .. "/bin/aliyun-iot"
local PK, OTHER_PK = "a1TestPK001", "a1OtherPK01"

local shell = require "spec.support.shell"
local q, read, write, sh = shell.quote, shell.read, shell.write, shell.capture

describe("a journal bound to its target", function()
  local emu, other, tmp

  local function client(opts)
    local o = {access_key_id = "testid", access_key_secret = "testsecret",
               endpoint = emu.endpoint}
    for k, v in pairs(opts or {}) do o[k] = v end
    return assert(iot.new(o))
  end

  local function sent() return #emu:requests() + #other:requests() end

  -- An unfinished job: its apply is journaled, its devices are not (the deadline ended it
  -- while the service was still creating them).
  local function unfinished(path)
    emu:set{async_delay = 3}
    local res, err = client():register_devices{ProductKey = PK, Count = 3, journal = path,
                                               deadline = 1}
    emu:set{async_delay = 0}
    assert.is_nil(res)
    assert.are.equal("ApplyTimeout", err.code)
    return path
  end

  setup(function()
    emu = require("aliyun.iot.emulator").start{async_delay = 0}
    other = require("aliyun.iot.emulator").start{async_delay = 0}
    tmp = require("spec.support.shell").temp_dir()
  end)

  teardown(function()
    if emu then emu:stop() end
    if other then other:stop() end
    os.execute("rm -rf " .. q(tmp))
  end)

  before_each(function()
    emu:reset()
    other:reset()
  end)

  describe("through the library", function()
    it("the job line records the endpoint, RegionId, ApiVersion and AccessKeyId, no secret", function()
      local path = tmp .. "/lib-record.state"
      assert(client():register_devices{ProductKey = PK, Count = 2, journal = path})
      local line = read(path):match("^[^\n]*")
      local job = journal.read(path)[1]
      assert.are.equal(emu.endpoint, job.endpoint)
      assert.are.equal("cn-shanghai", job.RegionId)
      assert.are.equal(iot.API_VERSION, job.ApiVersion)
      assert.are.equal("testid", job.AccessKeyId)
      assert.is_nil(job.IotInstanceId)
      assert.is_nil(line:find("testsecret", 1, true), line)
    end)

    it("resume refuses another endpoint, region, instance or ProductKey: nothing sent", function()
      local path = unfinished(tmp .. "/lib-mismatch.state")
      local before = sent()
      local cases = {
        {client{endpoint = other.endpoint}, {}, other.endpoint},
        {client{region_id = "cn-beijing"}, {}, "RegionId cn-beijing"},
        {client{iot_instance_id = "iot-060a0bcd"}, {}, "IotInstanceId iot-060a0bcd"},
        {client(), {ProductKey = OTHER_PK}, "ProductKey " .. OTHER_PK},
      }
      for i, case in ipairs(cases) do
        local args = {journal = path}
        for k, v in pairs(case[2]) do args[k] = v end
        local res, err = case[1]:resume(args)
        assert.is_nil(res, i)
        assert.are.equal("TargetMismatch", err.code, i)
        local msg = tostring(err)
        -- the journal's target and this one, both named
        assert.truthy(msg:find("records a job at endpoint " .. emu.endpoint .. ", RegionId " ..
          "cn-shanghai, no IotInstanceId, ProductKey " .. PK, 1, true), msg)
        assert.truthy(msg:find(case[3], 1, true), msg)
        assert.are.equal(emu.endpoint, err.journal_target.endpoint)
        assert.are.equal(PK, err.journal_target.ProductKey)
      end
      assert.are.equal(before, sent())
      -- the journal was released each time: the right client finishes the job
      local res = assert(client():resume{journal = path, ProductKey = PK})
      assert.are.equal(3, #res.Devices)
      assert.are.equal(3, emu:state().products[PK].devices)
      assert.are.equal(0, #other:requests())
    end)

    it("a journal recorded with an instance is refused to a client without it", function()
      local path = tmp .. "/lib-instance.state"
      write(path, ('{"event":"job","version":1,"kind":"random","ProductKey":"%s","Count":2,' ..
        '"endpoint":"%s","RegionId":"cn-shanghai","IotInstanceId":"iot-060a0bcd",' ..
        '"ApiVersion":"2018-01-20"}\n'):format(PK, emu.endpoint))
      local res, err = client():resume{journal = path}
      assert.is_nil(res)
      assert.are.equal("TargetMismatch", err.code)
      assert.truthy(tostring(err):find("IotInstanceId iot-060a0bcd, ProductKey", 1, true), tostring(err))
      assert.are.equal(0, sent())
    end)

    it("a journal written before targets were recorded resumes with the client's settings", function()
      local path = tmp .. "/lib-old.state"
      write(path, ('{"event":"job","version":1,"kind":"random","ProductKey":"%s","Count":2}\n'):format(PK))
      local res = assert(client{endpoint = other.endpoint}:resume{journal = path})
      assert.are.equal(2, #res.Devices)
      assert.are.equal(2, other:state().products[PK].devices)
      -- its ProductKey still holds
      local res2, err = client():resume{journal = path, ProductKey = OTHER_PK}
      assert.is_nil(res2)
      assert.are.equal("TargetMismatch", err.code)
    end)

    it("a job line with a malformed target is refused as a JournalError", function()
      for i, target in ipairs{'"endpoint":"ftp://x/","RegionId":"cn-shanghai"',
                              '"endpoint":"' .. emu.endpoint .. '"',
                              '"endpoint":"' .. emu.endpoint .. '","RegionId":"cn shanghai"',
                              '"endpoint":"' .. emu.endpoint .. '","RegionId":"cn-shanghai","IotInstanceId":5'} do
        local path = ("%s/lib-bad%d.state"):format(tmp, i)
        write(path, ('{"event":"job","version":1,"kind":"random","ProductKey":"%s","Count":2,%s}\n')
          :format(PK, target))
        local res, err = client():resume{journal = path}
        assert.is_nil(res, target)
        assert.are.equal("JournalError", err.code, target)
        assert.truthy(tostring(err):find(path .. ":1: job event", 1, true), tostring(err))
      end
      assert.are.equal(0, sent())
    end)
  end)

  describe("through the command", function()
    local function env_prefix()
      return "cd " .. q(tmp) .. " && env -u LUA_PATH -u LUA_CPATH HOME=" .. q(tmp) .. " TMPDIR=" ..
        q(tmp) .. " ALIBABA_CLOUD_ACCESS_KEY_ID=testid ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret " ..
        "TERM=dumb "
    end

    local function run(args)
      local code = sh(env_prefix() .. LUA .. " " .. q(BIN) .. " " .. args ..
        " < /dev/null > cli.out 2> cli.err; echo $?")
      return tonumber(code), read(tmp .. "/cli.out"), read(tmp .. "/cli.err")
    end

    -- A register that stops short (the deadline, while the service still creates): exit 1,
    -- the journal kept, the resume command printed.
    local function stopped(args)
      emu:set{async_delay = 3}
      local code, _, err = run("--endpoint " .. emu.endpoint .. " register --product-key " .. PK ..
        " --count 3 --deadline 1 " .. args)
      emu:set{async_delay = 0}
      assert.are.equal(1, code, err)
      return err
    end

    it("resume --state FILE alone goes back to the journal's endpoint and finishes", function()
      stopped("--state alone.state")
      local before = #emu:requests()
      local code, out, err = run("resume --state alone.state --out alone.csv")
      assert.are.equal(0, code, err)
      assert.are.equal("", out)
      assert.truthy(#emu:requests() > before)
      assert.are.equal(3, emu:state().products[PK].devices)
      assert.are.equal(4, select(2, read(tmp .. "/alone.csv"):gsub("\n", "")))
      -- a journal the user named stays
      assert.truthy(read(tmp .. "/alone.state"))
    end)

    it("a resume given another endpoint, region, instance or ProductKey: exit 2, nothing sent", function()
      stopped("--state moved.state")
      local before = sent()
      for _, flags in ipairs{"--endpoint " .. other.endpoint, "--region cn-beijing",
                             "--iot-instance-id iot-060a0bcd", "--product-key " .. OTHER_PK,
                             "--endpoint " .. emu.endpoint .. " --region cn-hangzhou"} do
        local code, out, err = run(flags .. " resume --state moved.state --out moved.csv")
        assert.are.equal(2, code, flags .. "\n" .. err)
        assert.are.equal("", out)
        assert.truthy(err:find("TargetMismatch: the journal moved.state records a job at endpoint " ..
          emu.endpoint, 1, true), err)
        assert.truthy(err:find("this resume is set for ", 1, true), err)
        assert.is_nil(err:find("internal error", 1, true), err)
        -- the way out: the command that goes back to the journal's target
        local again = err:match("to finish the job where it lives, run:\n  %S*aliyun%-iot (resume [^\n]+)\n")
        assert.truthy(again, err)
        assert.is_nil(read(tmp .. "/moved.csv"))
        assert.are.equal(before, sent(), flags)
      end
      local code, _, err = run("resume --state moved.state --endpoint " .. emu.endpoint ..
        " --product-key " .. PK .. " --out moved.csv")
      assert.are.equal(0, code, err)
      assert.are.equal(0, #other:requests())
    end)

    it("a journal kept in TMPDIR (no --state) is removed once a resume completes its job", function()
      local err = stopped("--out temp.csv")
      local resume = err:match("to finish it, run:\n  %S*aliyun%-iot (resume [^\n]+)\n")
      assert.truthy(resume, err)
      local state = resume:match("%-%-state (%S+)")
      assert.truthy(state:find("/aliyun%-iot%-%x+%.state$"), state)
      assert.truthy(read(state), state)
      local code, out
      code, out, err = run(resume)
      assert.are.equal(0, code, err)
      assert.are.equal("", out)
      assert.are.equal(4, select(2, read(tmp .. "/temp.csv"):gsub("\n", "")))
      assert.is_nil(read(state))
      assert.are.equal("", sh("cd " .. q(tmp) .. " && ls -A | grep '^aliyun-iot-' || true"))
    end)
  end)
end)
