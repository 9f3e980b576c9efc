-- The credentials chain under hostile input (issue 13, break2): credentials that have
-- already expired, an External process_command that reads standard input, writes its
-- secrets to standard error or floods its output, and NO_PROXY patterns. Calls go to
-- the emulator over real HTTP; the CLI runs as a child process.
local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"
local shell = require "spec.support.shell"
local child = require "spec.support.credentials_child"
local q = shell.quote

local PK = "a1TestPK001"

local emu, home

local function requests(action)
  local n = 0
  for _, r in ipairs(emu:requests()) do
    if r.action == action then n = n + 1 end
  end
  return n
end

describe("credentials under hostile input", function()
  setup(function()
    emu = emulator.start{async_delay = 0}
    home = os.tmpname()
    os.remove(home)
    assert(shell.ok("mkdir -p " .. q(home)))
  end)
  teardown(function()
    emu:stop()
    os.execute("rm -rf " .. q(home))
  end)
  before_each(function() emu:reset() end)

  it("refuses credentials that have already expired, sending nothing with them", function()
    local calls = 0
    local c = assert(iot.new{endpoint = emu.endpoint, qps = false, credentials = function()
      calls = calls + 1
      return {access_key_id = "testid", access_key_secret = "testsecret",
              expiration = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() - 3600)}
    end})
    local res, err = c:query_device{ProductKey = PK}
    assert.is_nil(res)
    assert.are.equal("InvalidCredentials", err.code)
    assert.matches("already expired", err.message, 1, true)
    assert.matches("clock", err.message, 1, true)
    assert.are.equal(0, requests("QueryDevice"))
    -- an expiration that is not a number (cjson reads NaN) is no time either
    c = assert(iot.new{endpoint = emu.endpoint, qps = false, credentials = function()
      return {access_key_id = "testid", access_key_secret = "testsecret", expiration = 0 / 0}
    end})
    res, err = c:query_device{ProductKey = PK}
    assert.is_nil(res)
    assert.matches("not a time", err.message, 1, true)
    assert.are.equal(0, requests("QueryDevice"))
  end)

  it("keeps credentials in hand when a refresh answers expired ones", function()
    local calls = 0
    local c = assert(iot.new{endpoint = emu.endpoint, qps = false, credentials = function()
      calls = calls + 1
      -- first near their end (within the refresh margin), then already expired
      if calls == 1 then
        return {access_key_id = "testid", access_key_secret = "testsecret",
                expiration = os.time() + 100}
      end
      return {access_key_id = "expiredId", access_key_secret = "x", expiration = os.time() - 100}
    end})
    assert(c:query_device{ProductKey = PK})
    assert(c:query_device{ProductKey = PK})
    assert.are.equal(2, calls)
    assert.are.equal(2, requests("QueryDevice"))
  end)
end)
