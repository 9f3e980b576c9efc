-- The batch helpers against a service that says anything (issue 17, "Trust nothing a
-- server says"): odd ApplyIds, Status values and page fields, lying counts, endless pages,
-- device records that do not look like the API's, names that would be spreadsheet formulas.
-- Every case ends in a clear error (InvalidResponse, or Ambiguous where an apply may exist
-- unseen) with the ApplyIds kept, never a Lua error, never a bad record written, and with
-- requests bounded by what was asked. The service is spec/support/fake_iot.lua behind a
-- custom transport, so any answer at all can be handed over.
local iot = require "aliyun.iot"
local fake = require "spec.support.fake_iot"
local shell = require "spec.support.shell"
local validate = require "aliyun.iot.validate"
local cjson = require("cjson").new()

local PK = "a1TestPK001"
local NAMES = {"lamp_0001", "lamp_0002", "lamp_0003"}

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

local function client(svc, opts)
  local o = {access_key_id = "testid", access_key_secret = "testsecret", qps = false,
             endpoint = "http://127.0.0.1:9/", transport = svc.transport, max_retries = 0}
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(iot.new(o))
end

-- Sets field `path` ("Data.ApplyId", "ApplyDeviceList.ApplyDeviceInfo.1.IotId") of t.
local function set(t, path, v)
  local keys = {}
  for k in path:gmatch("[^.]+") do keys[#keys + 1] = tonumber(k) or k end
  for i = 1, #keys - 1 do t = t[keys[i]] end
  t[keys[#keys]] = v
end

-- A tamper that sets `path` in every answer to `action` (page `page` only, if given).
local function on(action, path, v, page)
  return function(a, p, out)
    if a == action and (not page or p.CurrentPage == tostring(page)) then set(out, path, v) end
    return out
  end
end

-- Every device line of a journal must look like what the API produces.
local function assert_clean_journal(path)
  local text = shell.read(path) or ""
  for line in text:gmatch("[^\n]+") do
    local ev = cjson.decode(line)
    if ev.event == "device" then
      assert.is_nil(validate.device_name_problem(ev.DeviceName), line)
      assert.truthy(type(ev.DeviceSecret) == "string" and ev.DeviceSecret:find("^%w+$"), line)
      assert.truthy(type(ev.IotId) == "string" and ev.IotId:find("^%w+$"), line)
    end
  end
end

-- {label, kind ("random" Count 3 | "named" NAMES | "random60" Count 60), tamper, code}
local PAGE, STATUS, IR = "QueryPageByApplyId", "QueryBatchRegisterDeviceStatus", "InvalidResponse"
local INFO = "ApplyDeviceList.ApplyDeviceInfo."

local CASES = {
  -- BatchRegisterDevice acted (Success) but its ApplyId cannot be used: never re-sent.
  {"BatchRegisterDevice ApplyId a table", "random", on("BatchRegisterDevice", "Data.ApplyId", {1}), "Ambiguous"},
  {"BatchRegisterDevice ApplyId \"abc\"", "random", on("BatchRegisterDevice", "Data.ApplyId", "abc"), "Ambiguous"},
  {"BatchRegisterDevice ApplyId -5", "random", on("BatchRegisterDevice", "Data.ApplyId", -5), "Ambiguous"},
  {"BatchRegisterDevice ApplyId 0", "random", on("BatchRegisterDevice", "Data.ApplyId", 0), "Ambiguous"},
  {"BatchRegisterDevice ApplyId 1.5", "random", on("BatchRegisterDevice", "Data.ApplyId", 1.5), "Ambiguous"},
  {"BatchRegisterDevice ApplyId true", "random", on("BatchRegisterDevice", "Data.ApplyId", true), "Ambiguous"},
  {"BatchRegisterDevice ApplyId 1e300", "random", on("BatchRegisterDevice", "Data.ApplyId", 1e300), "Ambiguous"},
  {"BatchRegisterDevice Data a string", "random", on("BatchRegisterDevice", "Data", "x"), "Ambiguous"},
  {"BatchCheckDeviceNames ApplyId a table", "named", on("BatchCheckDeviceNames", "Data.ApplyId", {}), IR},
  {"BatchCheckDeviceNames ApplyId \"12a\"", "named", on("BatchCheckDeviceNames", "Data.ApplyId", "12a"), IR},
  {"BatchCheckDeviceNames ApplyId false", "named", on("BatchCheckDeviceNames", "Data.ApplyId", false), IR},
  {"Status missing", "random", on(STATUS, "Data.Status", nil), IR},
  {"Status 42", "random", on(STATUS, "Data.Status", 42), IR},
  {"Status a table", "random", on(STATUS, "Data.Status", {"CREATE_SUCCESS"}), IR},
  {"Status true", "named", on(STATUS, "Data.Status", true), IR},
  {"Status \"DONE\"", "random", on(STATUS, "Data.Status", "DONE"), IR},
  {"status Data a string", "random", on(STATUS, "Data", "x"), IR},
  {"status InvalidList a string", "random", on(STATUS, "Data.InvalidList", "x"), IR},
  {"status InvalidDetailList entry with a table DeviceName", "named",
   on(STATUS, "Data.InvalidDetailList.invalidDetailList", {{DeviceName = {}}}), IR},
  {"status ValidList names that are numbers", "named", on(STATUS, "Data.ValidList.Name", {1, 2}), IR},
  {"PageCount 10,000,000", "random", on(PAGE, "PageCount", 10000000), IR},
  {"PageCount \"x\"", "random", on(PAGE, "PageCount", "x"), IR},
  {"Total \"3\"", "random", on(PAGE, "Total", "3"), IR},
  {"Total -1", "random", on(PAGE, "Total", -1), IR},
  {"Total 1e9", "random", on(PAGE, "Total", 1e9), IR},
  {"Page a table", "random", on(PAGE, "Page", {}), IR},
  {"PageSize 0", "random", on(PAGE, "PageSize", 0), IR},
  {"PageSize 1.5", "random", on(PAGE, "PageSize", 1.5), IR},
  {"ApplyDeviceList a string", "random", on(PAGE, "ApplyDeviceList", "x"), IR},
  {"a device record that is a string", "random", on(PAGE, INFO .. "2", "x"), IR},
  {"DeviceName a table", "random", on(PAGE, INFO .. "1.DeviceName", {}), IR},
  {"DeviceName a spreadsheet formula", "random",
   on(PAGE, INFO .. "1.DeviceName", '=HYPERLINK("http://x","y")'), IR},
  {"DeviceName with a NUL", "random", on(PAGE, INFO .. "3.DeviceName", "lamp\0one"), IR},
  {"DeviceSecret a number", "random", on(PAGE, INFO .. "1.DeviceSecret", 5), IR},
  {"DeviceSecret missing", "random", on(PAGE, INFO .. "2.DeviceSecret", nil), IR},
  {"DeviceSecret a formula", "random", on(PAGE, INFO .. "1.DeviceSecret", "=1+2"), IR},
  {"DeviceSecret with a NUL", "random", on(PAGE, INFO .. "1.DeviceSecret", "abc\0def"), IR},
  {"IotId a table", "random", on(PAGE, INFO .. "1.IotId", {}), IR},
  {"IotId with CR LF", "random", on(PAGE, INFO .. "1.IotId", "abc\r\ndef"), IR},
  {"a finished apply with fewer devices than asked", "random", function(a, _, out)
    if a == "QueryPageByApplyId" then
      out.Total, out.PageCount = 2, 1
      out.ApplyDeviceList.ApplyDeviceInfo[3] = nil
    end
    return out
  end, IR},
  {"an apply with more devices than asked", "random", function(a, _, out)
    if a == "QueryPageByApplyId" then
      out.Total = 4
      out.ApplyDeviceList.ApplyDeviceInfo[4] = fake.device(1, 4)
    end
    return out
  end, IR},
  {"a named apply listing a device it was not asked for", "named",
   on(PAGE, INFO .. "2.DeviceName", "other_0002"), IR},
  -- a named job's pages skip the DeviceName rule only for names the apply asked for
  {"named: DeviceName a table", "named", on(PAGE, INFO .. "1.DeviceName", {}), IR},
  {"named: DeviceName a number", "named", on(PAGE, INFO .. "1.DeviceName", 12345), IR},
  {"named: DeviceName a spreadsheet formula", "named",
   on(PAGE, INFO .. "1.DeviceName", '=HYPERLINK("http://x","y")'), IR},
  {"named: DeviceName with a NUL", "named", on(PAGE, INFO .. "2.DeviceName", "lamp\0one"), IR},
  {"named: DeviceSecret a formula", "named", on(PAGE, INFO .. "1.DeviceSecret", "=1+2"), IR},
  {"named: IotId with CR LF", "named", on(PAGE, INFO .. "2.IotId", "abc\r\ndef"), IR},
  {"named: a device record that is a string", "named", on(PAGE, INFO .. "2", "x"), IR},
  {"a device repeated across pages", "random60", function(a, p, out)
    if a == "QueryPageByApplyId" and p.CurrentPage == "2" then
      out.ApplyDeviceList.ApplyDeviceInfo[1] = fake.device(4415, 1)
    end
    return out
  end, IR},
  {"a page body that is not JSON", "random", function(a, _, out)
    if a == "QueryPageByApplyId" then return "<html>oops</html>" end
    return out
  end, IR},
}

describe("batch helpers against a hostile service", function()
  local path
  before_each(function() path = tmpname() end)
  after_each(function() os.remove(path) end)

  local function run(kind, svc)
    local c = client(svc)
    if kind == "named" then
      return c:register_named_devices{ProductKey = PK, Devices = NAMES, journal = path}
    end
    return c:register_devices{ProductKey = PK, Count = kind == "random60" and 60 or 3, journal = path}
  end

  for _, case in ipairs(CASES) do
    local label, kind, tamper, code = case[1], case[2], case[3], case[4]
    it(label .. " -> " .. code .. ", the ApplyIds kept, nothing bad written", function()
      local svc = fake.new{tamper = tamper}
      local res, err = run(kind, svc)
      assert.is_nil(res)
      assert.are.equal(code, err.code, tostring(err))
      assert.are.equal(code == "Ambiguous", err.ambiguous)
      -- every apply the service made is reported, under both names
      local made = {}
      for i, a in ipairs(svc.applies) do made[i] = a.ApplyId end
      -- an apply whose ApplyId came unusable is unknown to the job (and, for a
      -- BatchRegisterDevice, the reason the error is ambiguous)
      if label:find("^Batch") then made = {} end
      local got = {}
      for i, id in ipairs(err.ApplyIds) do got[i] = tonumber(tostring(id)) end
      assert.are.same(made, got)
      assert.are.equal(err.ApplyIds, err.apply_ids)
      assert.are.equal(err.Devices, err.devices)
      for _, d in ipairs(err.Devices) do assert.is_nil(validate.device_name_problem(d.DeviceName)) end
      assert_clean_journal(path)
      assert.is_true(#svc.requests <= 12, #svc.requests .. " requests")
      assert.is_nil(tostring(err):find("table: 0x", 1, true))
    end)
  end

  it("reads no more pages than the apply asked for, whatever Total and PageCount say", function()
    -- a lying Total within an apply's size, and pages that never run out
    local svc = fake.new{tamper = function(a, p, out)
      if a == "QueryPageByApplyId" then
        local page = tonumber(p.CurrentPage)
        local list = {}
        for i = 1, 50 do list[i] = fake.device(4415, (page - 1) * 50 + i) end
        out.Total, out.PageCount, out.ApplyDeviceList.ApplyDeviceInfo = 10000, 200, list
      end
      return out
    end}
    local res, err = client(svc):register_devices{ProductKey = PK, Count = 3}
    assert.is_nil(res)
    assert.are.equal("InvalidResponse", err.code)
    assert.are.equal(1, svc.count("QueryPageByApplyId"))
    assert.are.same({}, err.Devices)
  end)

  it("apply_devices is bounded too: Total beyond an apply's size ends it after one page", function()
    local svc = fake.new{tamper = on("QueryPageByApplyId", "Total", 10000000)}
    local c = client(svc)
    assert(c:batch_register_device{ProductKey = PK, Count = 3})
    local out = {}
    for dev, err in c:apply_devices{ProductKey = PK, ApplyId = 4415} do out[#out + 1] = {dev, err} end
    assert.are.equal(1, #out)
    assert.is_false(out[1][1])
    assert.are.equal("InvalidResponse", out[1][2].code)
    assert.are.equal(1, svc.count("QueryPageByApplyId"))
  end)

  it("apply_devices yields a device repeated across pages once, then InvalidResponse", function()
    local svc = fake.new{tamper = function(a, p, out)
      if a == "QueryPageByApplyId" and p.CurrentPage == "2" then
        out.ApplyDeviceList.ApplyDeviceInfo[1] = fake.device(4415, 1)
      end
      return out
    end}
    local c = client(svc)
    assert(c:batch_register_device{ProductKey = PK, Count = 60})
    local names, failure = {}, nil
    for dev, err in c:apply_devices{ProductKey = PK, ApplyId = 4415} do
      if dev then names[dev.DeviceName] = (names[dev.DeviceName] or 0) + 1 else failure = err end
    end
    for name, n in pairs(names) do assert.are.equal(1, n, name) end
    assert.are.equal("InvalidResponse", failure.code)
  end)

  it("starts no page request after the job's deadline", function()
    -- 10 pages, each answered after 0.1 s; the deadline leaves time for a few of them
    local svc = fake.new{delay = 0.1}
    local c = client(svc, {max_retries = 3})
    local res, err = c:register_devices{ProductKey = PK, Count = 500, deadline = 0.45}
    assert.is_nil(res)
    assert.are.equal("ApplyTimeout", err.code, tostring(err))
    assert.is_true(svc.count("QueryPageByApplyId") < 10, svc.count("QueryPageByApplyId"))
    assert.are.equal(1, #err.ApplyIds)
  end)

  it("apply_devices takes a deadline and starts no page request after it", function()
    local svc = fake.new{delay = 0.1}
    local c = client(svc)
    assert(c:batch_register_device{ProductKey = PK, Count = 500})
    local n, failure = 0, nil
    for dev, err in c:apply_devices{ProductKey = PK, ApplyId = 4415, deadline = 0.25} do
      if dev then n = n + 1 else failure = err end
    end
    assert.are.equal("ApplyTimeout", failure.code)
    assert.is_true(n < 500)
    assert.is_true(svc.count("QueryPageByApplyId") < 10)
  end)

  describe("an apply that never finishes", function()
    -- The client's clock and pauses are replaced by a simulated clock: an hour passes in
    -- no time, and a wait without a bound is caught (the clock stops at 10,000 s).
    local function simulated(c)
      local now = 0
      local function clock() return now end
      local function pause(_, s)
        now = now + s
        if now > 10000 then error("polled past 10,000 s: no bound", 0) end
      end
      -- today's internal names and the client's documented clock() / pause()
      c.clock, c.pause = clock, pause
    end
    local function forever(a, _, out)
      if a == "QueryBatchRegisterDeviceStatus" then out.Data.Status = "CREATE" end
      return out
    end

    it("is polled for an hour by default, and the error says so", function()
      local svc = fake.new{tamper = forever}
      local c = client(svc)
      simulated(c)
      local res, err = c:register_devices{ProductKey = PK, Count = 3}
      assert.is_nil(res)
      assert.are.equal("ApplyTimeout", err.code)
      assert.are.equal("CREATE", err.status)
      assert.matches("after 3600 s (apply_timeout", err.message, 1, true)
      assert.are.equal(1, #err.ApplyIds)
      local _, werr = c:wait_apply{ProductKey = PK, ApplyId = 4415}
      assert.are.equal("ApplyTimeout", werr.code)
    end)

    it("is polled for apply_timeout seconds when given, by every helper that waits", function()
      local svc = fake.new{tamper = forever}
      local c = client(svc)
      simulated(c)
      local _, err = c:register_devices{ProductKey = PK, Count = 3, apply_timeout = 60}
      assert.matches("after 60 s (apply_timeout", err.message, 1, true)
      _, err = c:register_named_devices{ProductKey = PK, Devices = NAMES, apply_timeout = 60}
      assert.are.equal("ApplyTimeout", err.code)
      _, err = c:wait_apply{ProductKey = PK, ApplyId = 4415, apply_timeout = 30}
      assert.matches("after 30 s (apply_timeout", err.message, 1, true)
      local p = tmpname()
      _, err = c:register_devices{ProductKey = PK, Count = 3, apply_timeout = 60, journal = p}
      assert.are.equal("ApplyTimeout", err.code)
      local _, rerr = c:resume{journal = p, apply_timeout = 90}
      os.remove(p)
      assert.matches("after 90 s (apply_timeout", rerr.message, 1, true)
      _, err = c:wait_apply{ProductKey = PK, ApplyId = 4415, apply_timeout = 0}
      assert.are.equal("apply_timeout", err.parameter)
    end)
  end)
end)
