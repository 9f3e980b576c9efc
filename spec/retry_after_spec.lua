-- x-acs-retry-after (issue 13): any 4xx/5xx carrying it is throttling, and the next attempt
-- waits at least that long; it lets an action that is never re-sent on doubt be repeated
-- only when the decoded answer proves the refusal (a 4xx with a code), never after a 5xx
-- or an answer without a code. Against the emulator's `retry_after` fault: HTTP 429 with a code that is not
-- a Throttling one.
local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"
local response = require "aliyun.iot.response"

describe("x-acs-retry-after", function()
  local emu
  setup(function() emu = emulator.start{async_delay = 0} end)
  teardown(function() emu:stop() end)
  before_each(function() emu:reset() end)

  it("repeats a BatchRegisterDevice refused with it, no sooner than it asks", function()
    local logs = {}
    local c = assert(iot.new{endpoint = emu.endpoint, access_key_id = "testid",
      access_key_secret = "testsecret", qps = false,
      logger = function(level, msg) logs[#logs + 1] = level .. " " .. msg end})
    emu:fault{kind = "retry_after", count = 1, action = "BatchRegisterDevice", delay = 0.4}
    local res, err = c:batch_register_device{ProductKey = "a1TestPK001", Count = 2}
    assert(res, tostring(err))
    local sent = {}
    for _, r in ipairs(emu:requests()) do
      if r.action == "BatchRegisterDevice" then sent[#sent + 1] = r.status end
    end
    assert.are.same({429, 200}, sent)
    assert.are.equal(1, c:stats().throttled)
    local wait
    for _, l in ipairs(logs) do wait = wait or tonumber(l:match("TooManyRequests.*retrying in ([%d.]+) s")) end
    assert.truthy(wait, table.concat(logs, "\n"))
    assert.is_true(wait >= 0.4)
  end)

  it("reads milliseconds, bounded; anything else is no signal", function()
    assert.are.equal(0.25, response.retry_after{["x-acs-retry-after"] = "250"})
    assert.are.equal(response.MAX_RETRY_AFTER, response.retry_after{["x-acs-retry-after"] = "99999999999"})
    for _, v in ipairs{"abc", "1.5", "-1", "", ("9"):rep(30)} do
      assert.is_nil(response.retry_after{["x-acs-retry-after"] = v})
    end
    assert.is_nil(response.retry_after{})
    assert.is_nil(response.retry_after(nil))
  end)

  it("never turns a 5xx or a codeless answer into a refusal of a non-idempotent call", function()
    local row = require("aliyun.iot.actions").get("BatchRegisterDevice")
    local function classify(status, body)
      local _, e = response.classify(row, {status = status, body = body,
        headers = {["x-acs-retry-after"] = "300"}}, nil, nil, function(s) return s end)
      return e
    end
    for _, case in ipairs{{500, '{"RequestId":"r1"}'}, {503, '{"Code":"InternalError","RequestId":"r2"}'},
                          {400, '{"RequestId":"r3"}'}} do
      local e = classify(case[1], case[2])
      assert.is_true(e.ambiguous, case[2])
      assert.is_falsy(e.retryable, case[2])
      assert.are.equal(0.3, e.retry_after)
      assert.is_true(e.throttled)
    end
    local e = classify(429, '{"Code":"TooManyRequests","RequestId":"r4"}')
    assert.is_true(e.retryable)
    assert.is_falsy(e.ambiguous)
  end)
end)
