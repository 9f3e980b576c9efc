-- The batch helpers under a seeded random mix of emulator faults (503, throttling, resets
-- before and after the service acts, answers slower than the timeout, truncated and
-- malformed bodies): every job ends complete with exactly the expected devices, or with an
-- error that lists every ApplyId and only real devices; no retry creates a second apply.
-- spec/support/faults.lua holds the job and its audit; `make soak` runs 200 of them.
local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"
local faults = require "spec.support.faults"

local SEED = tonumber(os.getenv("FAULTS_SEED") or "") or 20240601
local JOBS = 10
-- Per action of a job; higher than the soak's 10% so that a few jobs meet every kind.
local P = 0.35

describe("batch helpers under faults", function()
  local emu, client

  setup(function()
    emu = emulator.start{async_delay = 0.02}
    client = assert(iot.new{access_key_id = "testid", access_key_secret = "testsecret",
      endpoint = emu.endpoint, qps = false, max_batch_size = 50, timeout = 0.5,
      max_retries = 3, retry_deadline = 20})
  end)
  teardown(function() emu:stop() end)

  it("the audit catches a lost device and a duplicate apply", function()
    emu:reset()
    -- a job whose outcome hides an apply the service holds
    local fake = {register_devices = function() return {ApplyIds = {}, Devices = {}} end,
                  register_named_devices = function() return {ApplyIds = {}, Devices = {}} end}
    local rng = function(n) return n and 1 or 0.9 end
    local state_before = emu.state
    emu.state = function(self)
      local s = state_before(self)
      s.applies[#s.applies + 1] = {ApplyId = 1, Devices = {"ghost_1", "ghost_1"}}
      return s
    end
    local ok, out = pcall(faults.run_job, emu, fake, rng, 0)
    emu.state = state_before
    assert.is_true(ok, out)
    assert.is_true(out.duplicates > 0)
    assert.is_true(#out.problems > 0)
  end)

  it("ends every job complete or with a full account (seed " .. SEED .. ")", function()
    local rng = math.random
    math.randomseed(SEED)
    local kinds_met, report = {}, {}
    for job = 1, JOBS do
      local out = faults.run_job(emu, client, rng, P)
      for _, f in ipairs(out.faults) do kinds_met[f.kind] = true end
      report[#report + 1] = ("job %d %s %s faults=%d lost=%d dup=%d"):format(job, out.kind,
        out.status, #out.faults, out.lost, out.duplicates)
      assert.are.same({}, out.problems, table.concat(report, "\n"))
      assert.are.equal(0, out.lost)
      assert.are.equal(0, out.duplicates)
    end
    local n = 0
    for _ in pairs(kinds_met) do n = n + 1 end
    assert.is_true(n >= 4, "the seed met too few fault kinds:\n" .. table.concat(report, "\n"))
  end)

  it("ends every client-named job complete, whatever the faults (seed " .. SEED .. ")", function()
    local rng = math.random
    math.randomseed(SEED)
    local report = {}
    for job = 1, JOBS do
      local out = faults.run_job(emu, client, rng, P, "client")
      report[#report + 1] = ("job %d %s faults=%d %s"):format(job, out.status, #out.faults,
        tostring(out.err))
      assert.are.same({}, out.problems, table.concat(report, "\n"))
      assert.are.equal("complete", out.status, table.concat(report, "\n"))
    end
  end)
end)
