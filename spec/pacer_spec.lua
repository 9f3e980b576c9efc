-- QPS pacing on a simulated clock: `sleep` advances time, so runs are instant and exact.
-- Each test makes its own clock; state is shared per `now` function, so tests stay apart.
local pacer = require "aliyun.iot.pacer"

local function clock()
  local c = {t = 0}
  function c.now() return c.t end
  function c.sleep(s) assert(s > 0); c.t = c.t + s end
  return c
end

local function close(expected, actual)
  assert(math.abs(expected - actual) < 1e-9,
    ("expected %.12f, got %.12f"):format(expected, actual))
end

-- Runs workers as coroutines on one simulated clock: sleep yields the wake time and the
-- earliest sleeper runs next, as concurrent requests would.
local function simulate(workers)
  local c = {t = 0}
  function c.now() return c.t end
  function c.sleep(s) coroutine.yield(c.t + s) end
  local ready, seq = {}, 0
  function c.run()
    for _, f in ipairs(workers(c)) do
      seq = seq + 1
      ready[#ready + 1] = {co = coroutine.create(f), wake = 0, seq = seq}
    end
    while #ready > 0 do
      table.sort(ready, function(a, b)
        if a.wake ~= b.wake then return a.wake < b.wake end
        return a.seq < b.seq
      end)
      local w = table.remove(ready, 1)
      c.t = math.max(c.t, w.wake)
      local ok, wake = coroutine.resume(w.co)
      assert(ok, wake)
      if coroutine.status(w.co) ~= "dead" then
        seq = seq + 1
        w.wake, w.seq = wake, seq
        ready[#ready + 1] = w
      end
    end
  end
  return c
end

-- The largest number of starts in any window [s, s + 1).
local function max_per_second(starts)
  table.sort(starts)
  local best, j = 0, 1
  for i = 1, #starts do
    while starts[i] - starts[j] >= 1 do j = j + 1 end
    best = math.max(best, i - j + 1)
  end
  return best
end

describe("pacer", function()
  it("spaces one action's slots by (1 + margin) / qps", function()
    local c = clock()
    local p = pacer.new{now = c.now, sleep = c.sleep}
    local d = 1.02 / 30
    assert.are.equal(0, p:acquire("RegisterDevice"))
    close(d, p:acquire("RegisterDevice"))
    close(d, p:acquire("RegisterDevice"))
    close(2 * d, c.t)
    assert.are.equal(30, p:qps("RegisterDevice"))
  end)

  it("gives no burst after a pause", function()
    local c = clock()
    local p = pacer.new{now = c.now, sleep = c.sleep}
    p:acquire("BatchRegisterDevice")
    c.t = 100
    assert.are.equal(0, p:acquire("BatchRegisterDevice"))
    close(0.102, p:acquire("BatchRegisterDevice"))
  end)

  it("keeps actions independent", function()
    local c = clock()
    local p = pacer.new{now = c.now, sleep = c.sleep}
    assert.are.equal(0, p:acquire("BatchRegisterDevice"))
    assert.are.equal(0, p:acquire("QueryPageByApplyId"))
    assert.are.equal(0, p:acquire("BatchCheckDeviceNames"))
    assert.are.equal(0, c.t)
  end)

  it("schedules n slots without sleeping, interleaving with acquire", function()
    local c = clock()
    local p = pacer.new{now = c.now, sleep = function() error("schedule must not sleep") end}
    local d = 1.02 / 50
    local times = p:schedule("QueryPageByApplyId", 5)
    assert.are.equal(5, #times)
    for i = 1, 5 do close((i - 1) * d, times[i]) end
    assert.are.equal(0, c.t)
    p.sleep = c.sleep
    close(5 * d, p:acquire("QueryPageByApplyId"))
    times = p:schedule("QueryPageByApplyId", 2)
    close(6 * d, times[1])
    close(7 * d, times[2])
    assert.are.same({}, p:schedule("QueryPageByApplyId", 0))
    close(3 * d, p:acquire("QueryPageByApplyId"))
    close(8 * d, c.t)
  end)

  it("never waits with limits = false, and leaves unlisted actions unpaced", function()
    local c = clock()
    local p = pacer.new{limits = false, now = c.now, sleep = c.sleep}
    for _ = 1, 100 do assert.are.equal(0, p:acquire("BatchRegisterDevice")) end
    assert.are.same({0, 0, 0}, p:schedule("QueryPageByApplyId", 3))
    assert.is_nil(p:qps("BatchRegisterDevice"))
    p = pacer.new{limits = {BatchRegisterDevice = 1}, now = c.now, sleep = c.sleep}
    assert.are.equal(0, p:acquire("QueryDevice"))
    assert.are.equal(0, p:acquire("QueryDevice"))
    assert.is_nil(p:qps("QueryDevice"))
  end)

  it("applies the default QPS to unlisted actions and copies limits", function()
    local c = clock()
    local limits = {A = 10}
    local p = pacer.new{limits = limits, default = 5, now = c.now, sleep = c.sleep}
    limits.A = 1
    p:acquire("A")
    close(0.102, p:acquire("A"))
    p:acquire("Other")
    close(1.02 / 5, p:acquire("Other"))
    assert.are.equal(5, p:qps("Other"))
  end)

  it("shares slots between pacers of one scope and clock, not across scopes or clocks", function()
    local c = clock()
    local a = pacer.new{scope = "acct1", now = c.now, sleep = c.sleep}
    local b = pacer.new{scope = "acct1", now = c.now, sleep = c.sleep}
    local other = pacer.new{scope = "acct2", now = c.now, sleep = c.sleep}
    assert.are.equal(0, a:acquire("BatchRegisterDevice"))
    close(0.102, b:acquire("BatchRegisterDevice"))
    local times = a:schedule("BatchRegisterDevice", 1)
    close(0.204, times[1])
    assert.are.equal(0, other:acquire("BatchRegisterDevice"))
    local c2 = clock()
    c2.t = c.t
    local elsewhere = pacer.new{scope = "acct1", now = c2.now, sleep = c2.sleep}
    assert.are.equal(0, elsewhere:acquire("BatchRegisterDevice"))
  end)

  it("takes the scope per reservation: the AccessKeyId in use, not the pacer's", function()
    local c = clock()
    local p = pacer.new{now = c.now, sleep = c.sleep}
    local q = pacer.new{scope = "keyA", now = c.now, sleep = c.sleep}
    assert.are.equal(0, p:acquire("BatchRegisterDevice", "keyA"))
    close(0.102, q:acquire("BatchRegisterDevice"))
    close(0.204 - 0.102, p:schedule("BatchRegisterDevice", 1, "keyA")[1] - c.t)
    assert.are.equal(0, p:acquire("BatchRegisterDevice", "keyB"))
    assert.are.equal(0, p:acquire("BatchRegisterDevice"))
    assert.has_error(function() p:acquire("BatchRegisterDevice", 42) end)
  end)

  it("keeps every 1 s window within the limit over a simulated 10 s of concurrent work", function()
    local starts = {BatchRegisterDevice = {}, QueryPageByApplyId = {}}
    local sim = simulate(function(c)
      local p = pacer.new{scope = "sim", now = c.now, sleep = c.sleep}
      local workers = {}
      -- Five workers register in a loop; each request takes 30 ms.
      for _ = 1, 5 do
        workers[#workers + 1] = function()
          while c.now() < 10 do
            p:acquire("BatchRegisterDevice")
            table.insert(starts.BatchRegisterDevice, c.now())
            c.sleep(0.03)
          end
        end
      end
      -- Pages: fan-outs of 20 scheduled slots mixed with single acquires from 3 workers.
      workers[#workers + 1] = function()
        while c.now() < 10 do
          for _, t in ipairs(p:schedule("QueryPageByApplyId", 20)) do
            table.insert(starts.QueryPageByApplyId, t)
          end
          c.sleep(0.25)
        end
      end
      for _ = 1, 3 do
        workers[#workers + 1] = function()
          while c.now() < 10 do
            p:acquire("QueryPageByApplyId")
            table.insert(starts.QueryPageByApplyId, c.now())
            c.sleep(0.01)
          end
        end
      end
      return workers
    end)
    sim.run()
    for action, list in pairs(starts) do
      local qps = pacer.DEFAULT_LIMITS[action]
      assert.is_true(max_per_second(list) <= qps, action)
      -- Pacing must not starve the work either: the run uses the budget (98% of it).
      local within = 0
      for _, t in ipairs(list) do if t < 10 then within = within + 1 end end
      assert.is_true(within >= math.floor(10 * qps / 1.02), action .. " " .. within)
    end
  end)

  it("reserves through a shared dict when asked (OpenResty mode, fake dict)", function()
    local store, adds = {}, 0
    local dict = {}
    function dict.add(_, k, v)
      adds = adds + 1
      if store[k] ~= nil or adds == 1 then return false, "exists" end
      store[k] = v
      return true
    end
    function dict.get(_, k) return store[k] end
    function dict.set(_, k, v, ttl) assert(ttl > 0); store[k] = v; return true end
    function dict.delete(_, k) store[k] = nil end
    local c = clock()
    local slept = 0
    _G.ngx = {shared = {pace = dict}}
    local ok, err = pcall(function()
      local a = pacer.new{scope = "acct", shared_dict = "pace", now = c.now,
                          sleep = function(s) slept = slept + 1; c.sleep(s) end}
      local b = pacer.new{scope = "acct", shared_dict = "pace", now = c.now, sleep = c.sleep}
      a:acquire("BatchRegisterDevice") -- the first add finds the lock taken: one retry
      assert.are.equal(1, slept)
      local t0 = c.t
      close(0.102, b:acquire("BatchRegisterDevice"))
      local times = a:schedule("BatchRegisterDevice", 2)
      close(t0 + 0.204, times[1])
      close(t0 + 0.306, times[2])
      assert.is_nil(store["aliyun-iot:qps:acct:BatchRegisterDevice:lock"])
      close(t0 + 0.408, store["aliyun-iot:qps:acct:BatchRegisterDevice"])
      assert.has_error(function() pacer.new{shared_dict = "missing", now = c.now, sleep = c.sleep} end)
    end)
    _G.ngx = nil
    assert(ok, err)
  end)

  it("raises on misuse", function()
    local c = clock()
    assert.has_error(function() pacer.new{limits = {A = 0}, now = c.now, sleep = c.sleep} end)
    assert.has_error(function() pacer.new{limits = {A = "x"}, now = c.now, sleep = c.sleep} end)
    assert.has_error(function() pacer.new{} end)
    local p = pacer.new{now = c.now, sleep = c.sleep}
    assert.has_error(function() p:acquire(nil) end)
    assert.has_error(function() p:schedule("QueryDevice", 1.5) end)
  end)

  it("documents every action's QPS", function()
    assert.are.same({RegisterDevice = 30, BatchRegisterDevice = 10, BatchCheckDeviceNames = 10,
      BatchRegisterDeviceWithApplyId = 500, QueryBatchRegisterDeviceStatus = 30,
      QueryPageByApplyId = 50, BatchGetDeviceState = 50, QueryDevice = 50, DeleteDevice = 50,
      QueryDeviceDetail = 50, BatchQueryDeviceDetail = 5, QueryDeviceProp = 50, SaveDeviceProp = 50,
      DeleteDeviceProp = 50, BatchAddDeviceGroupRelations = 500, BatchDeleteDeviceGroupRelations = 500,
      CreateDeviceGroup = 50, QueryDeviceGroupList = 50, QueryDeviceListByDeviceGroup = 50,
      BatchUpdateDeviceNickname = 50, DisableThing = 50, EnableThing = 50}, pacer.DEFAULT_LIMITS)
  end)
end)
