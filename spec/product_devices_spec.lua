-- client:product_devices: every device of a product with its DeviceSecret, against the
-- emulator over real HTTP (25,000 devices past QueryDevice's 10,000 plain-paging limit,
-- secrets from BatchQueryDeviceDetail when a listing lacks them, the documented QPS kept,
-- devices coming and going during the walk), at flat memory; and against a service that
-- says anything (spec/support/fake_product.lua): every bad answer ends in InvalidResponse,
-- never a Lua error, with requests bounded by the first page's Total.
local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"
local fake = require "spec.support.fake_product"

local PK = "a1TestPK001"

local function client_for(endpoint, opts)
  local o = {access_key_id = "testid", access_key_secret = "testsecret", endpoint = endpoint,
             qps = false}
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(iot.new(o))
end

-- Every record the iterator yields, or raises on its error.
local function export(c, args)
  local out = {}
  for dev, err in c:product_devices(args or {ProductKey = PK}) do
    assert(dev, tostring(err))
    out[#out + 1] = dev
  end
  return out
end

local function by_name(devices)
  local t = {}
  for _, d in ipairs(devices) do
    assert.is_nil(t[d.DeviceName], "device " .. d.DeviceName .. " twice")
    t[d.DeviceName] = d
  end
  return t
end

describe("product_devices against the emulator", function()
  local emu, c

  -- The devices of the product as QueryPageByApplyId gives them: the emulator's own record
  -- of each secret, through another action than the iterator uses.
  local function registered(counts)
    local big = client_for(emu.endpoint, {max_batch_size = 10000})
    local all = {}
    for _, n in ipairs(counts) do
      local id = assert(big:call("BatchRegisterDevice", {ProductKey = PK, Count = n})).Data.ApplyId
      assert(big:wait_apply{ProductKey = PK, ApplyId = id})
      for dev, err in big:apply_devices{ProductKey = PK, ApplyId = id} do
        assert(dev, tostring(err))
        all[dev.DeviceName] = dev
      end
    end
    return all
  end

  local function requests_of(action)
    local out = {}
    for _, r in ipairs(emu:requests()) do
      if r.action == action then out[#out + 1] = r end
    end
    return out
  end

  setup(function() emu = emulator.start{async_delay = 0} end)
  teardown(function() emu:stop() end)
  before_each(function()
    emu:reset()
    emu:set{async_delay = 0, qps_limits = false, max_count = 10000, query_device_secrets = true}
    c = client_for(emu.endpoint)
  end)

  it("exports 25,000 devices, each once with its secret, following NextToken, at flat memory", function()
    local ref = registered{10000, 10000, 5000}
    local state = emu:state().products[PK]
    assert.are.equal(25000, state.devices)
    local before = #emu:requests()
    -- Each record is checked against the emulator's and marked in a field `ref` already
    -- has, so the spec's own tables neither grow nor shrink; a full collection every 1,000
    -- devices measures what the iterator holds.
    for _, want in pairs(ref) do want.seen = false end
    collectgarbage()
    collectgarbage()
    local base, growth, n = collectgarbage("count"), 0, 0
    for dev, err in c:product_devices{ProductKey = PK} do
      assert(dev, tostring(err))
      local want = ref[dev.DeviceName]
      assert(want and not want.seen, "device " .. dev.DeviceName .. " unknown or yielded twice")
      assert(dev.ProductKey == PK and dev.DeviceSecret == want.DeviceSecret and dev.IotId == want.IotId,
        "device " .. dev.DeviceName .. " has the wrong fields")
      want.seen = true
      n = n + 1
      if n % 1000 == 0 then
        collectgarbage()
        growth = math.max(growth, collectgarbage("count") - base)
      end
    end
    assert.are.equal(25000, n)
    for name, want in pairs(ref) do assert(want.seen, "device " .. name .. " not exported") end
    -- What holding the 25,000 records would take, built the same way: the iterator's
    -- growth (one DeviceName entry a device, one NextToken a page) must stay well below.
    collectgarbage()
    local before_records = collectgarbage("count")
    local held = {}
    for i = 1, 25000 do
      held[i] = {ProductKey = PK, DeviceName = ("name%016d"):format(i),
                 DeviceSecret = ("s%031d"):format(i), IotId = ("i%027d"):format(i)}
    end
    collectgarbage()
    local records_kb = collectgarbage("count") - before_records
    assert.are.equal(25000, #held)
    assert.is_true(growth < records_kb / 3,
      ("the iterator grew by %.0f KB; 25,000 records take %.0f KB"):format(growth, records_kb))
    -- NextToken from the second page on; pages of 50; the secrets came with the pages
    local pages = requests_of("QueryDevice")
    assert.are.equal(500, #pages)
    assert.is_nil(pages[1].params.NextToken)
    for i, r in ipairs(pages) do
      assert.are.equal("50", r.params.PageSize)
      assert.are.equal(tostring(i), r.params.CurrentPage)
      if i > 1 then assert.truthy(r.params.NextToken, "page " .. i .. " without NextToken") end
    end
    assert.are.equal(0, #requests_of("BatchQueryDeviceDetail"))
    assert.is_true(#emu:requests() - before >= 500)
  end)

  it("fetches the secrets a listing lacks with BatchQueryDeviceDetail, 100 names a call", function()
    local ref = registered{250}
    emu:set{query_device_secrets = false}
    local raw = assert(c:call("QueryDevice", {ProductKey = PK, PageSize = 1}))
    assert.is_nil(raw.Data.DeviceInfo[1].DeviceSecret) -- the emulator's listing really lacks them
    local got = by_name(export(c))
    for name, want in pairs(ref) do
      assert.are.same(want, got[name])
      got[name] = nil
    end
    assert.is_nil(next(got))
    local details = requests_of("BatchQueryDeviceDetail")
    assert.are.equal(3, #details)
    local asked = 0
    for _, r in ipairs(details) do
      local k = 0
      while r.params["DeviceName." .. (k + 1)] do k = k + 1 end
      assert.is_true(k >= 1 and k <= 100)
      asked = asked + k
    end
    assert.are.equal(250, asked)
  end)

  it("keeps QueryDevice and BatchQueryDeviceDetail within the documented QPS: nothing throttled", function()
    registered{600}
    emu:set{query_device_secrets = false, qps_limits = true}
    local paced = client_for(emu.endpoint, {qps = true, max_retries = 0})
    assert.are.equal(600, #export(paced))
    assert.are.equal(0, paced:stats().throttled)
    for _, r in ipairs(emu:requests()) do assert.is_nil(r.code, r.action) end
    assert.are.equal(6, #requests_of("BatchQueryDeviceDetail"))
  end)

  it("lists the devices there were when it started; one deleted before its page is left out", function()
    local ref = registered{120}
    local out, added, gone = {}, false, nil
    for dev, err in c:product_devices{ProductKey = PK} do
      assert(dev, tostring(err))
      out[#out + 1] = dev
      if not added then
        added = true
        assert(c:register_device{ProductKey = PK, DeviceName = "late_comer"})
        -- the oldest device is on the last page, not read yet
        local oldest = assert(c:call("QueryDevice", {ProductKey = PK, PageSize = 1, CurrentPage = 121}))
        gone = oldest.Data.DeviceInfo[1].DeviceName
        assert(c:delete_device{ProductKey = PK, DeviceName = gone})
      end
    end
    local got = by_name(out)
    assert.is_nil(got.late_comer)
    assert.is_nil(got[gone])
    assert.are.equal(119, #out)
    for name, d in pairs(got) do
      -- the page's DeviceStatus (what fleet plans read), the rest as the reference's
      assert.are.equal("UNACTIVE", d.DeviceStatus)
      d.DeviceStatus = nil
      assert.are.same(ref[name], d)
    end
  end)

  it("ends at its deadline with DeadlineExceeded, the page in flight cut to it", function()
    registered{120}
    emu:fault{kind = "slow", delay = 3, action = "QueryDevice", count = 5}
    local it = c:product_devices{ProductKey = PK, deadline = 0.3}
    local dev, err = it()
    emu:clear_faults()
    assert.is_false(dev)
    assert.are.equal("DeadlineExceeded", err.code, tostring(err))
    assert.is_nil(it())
  end)

  it("an empty product yields nothing; an unknown one yields the service's error once", function()
    assert.are.same({}, export(c))
    local it = c:product_devices{ProductKey = "a1NoSuchPK"}
    local dev, err = it()
    assert.is_false(dev)
    assert.are.equal("iot.prod.NotExistedProduct", err.code)
    assert.is_nil(it())
  end)

  it("refuses bad arguments before any request: a bad value as InvalidParameter, misuse raises", function()
    for _, args in ipairs{{ProductKey = ""}, {}, {ProductKey = PK, page_size = 51},
                          {ProductKey = PK, page_size = 0}, {ProductKey = PK, deadline = -1}} do
      local it = c:product_devices(args)
      local dev, err = it()
      assert.is_false(dev)
      assert.are.equal("InvalidParameter", err.code)
      assert.is_nil(it())
    end
    assert.has_error(function() c:product_devices{ProductKey = 5} end)
    assert.has_error(function() c:product_devices{ProductKey = PK, on_progress = print} end)
    assert.has_error(function() c:product_devices("a1TestPK001") end)
    assert.are.equal(0, #emu:requests())
  end)
end)

describe("product_devices against a service that says anything", function()
  local function run(opts)
    local svc = fake.new(opts)
    local c = client_for("http://127.0.0.1:9/", {transport = svc.transport, max_retries = 0})
    local it = c:product_devices{ProductKey = PK}
    local n, failure = 0, nil
    for _ = 1, 100000 do
      local dev, err = it()
      if dev == nil then break end
      if dev == false then failure = err break end
      n = n + 1
    end
    assert.is_nil(it()) -- ended for good
    return n, failure, svc
  end

  -- A tamper setting `field` of every QueryDevice answer (or of page `page` only).
  local function page_field(field, v, page)
    return function(action, p, out)
      if action == "QueryDevice" and (not page or p.CurrentPage == tostring(page)) then
        out[field] = v
      end
      return out
    end
  end

  local function first_device(field, v)
    return function(action, _, out)
      if action == "QueryDevice" then out.Data.DeviceInfo[1][field] = v end
      return out
    end
  end

  it("reads a well-behaved product (the fake itself is right)", function()
    local n, failure, svc = run{count = 120}
    assert.is_nil(failure)
    assert.are.equal(120, n)
    assert.are.equal(3, svc.count("QueryDevice"))
    n, failure, svc = run{count = 120, secrets = false}
    assert.is_nil(failure)
    assert.are.equal(120, n)
    assert.are.equal(2, svc.count("BatchQueryDeviceDetail"))
  end)

  local CASES = {
    {"a NextToken repeated (a loop)", {count = 500, tamper = function(action, _, out)
      if action == "QueryDevice" and out.NextToken then out.NextToken = "T450" end
      return out
    end}, "loop"},
    {"a NextToken that is a table", {count = 120, tamper = page_field("NextToken", {"T70"})}, "NextToken"},
    {"a NextToken with a newline", {count = 120, tamper = page_field("NextToken", "T70\n")}, "NextToken"},
    {"an empty page with a NextToken", {count = 120, tamper = function(action, p, out)
      if action == "QueryDevice" and p.CurrentPage == "2" then out.Data.DeviceInfo = {} end
      return out
    end}, "NextToken"},
    {"Total a string", {count = 120, tamper = page_field("Total", "120")}, "Total"},
    {"Total negative", {count = 120, tamper = page_field("Total", -1)}, "Total"},
    {"Total 1.5", {count = 120, tamper = page_field("Total", 1.5)}, "Total"},
    {"PageSize other than asked", {count = 120, tamper = page_field("PageSize", 10)}, "PageSize"},
    {"PageCount that does not match Total", {count = 120, tamper = page_field("PageCount", 7)}, "PageCount"},
    {"page 1 answered as page 2", {count = 120, tamper = page_field("Page", 2, 1)}, "Page"},
    {"Data a string", {count = 120, tamper = page_field("Data", "x")}, "Data"},
    {"Data.DeviceInfo not a list", {count = 120, tamper = function(action, _, out)
      if action == "QueryDevice" then out.Data.DeviceInfo = {a = 1} end
      return out
    end}, "DeviceInfo"},
    {"more devices than the page asked", {count = 120, tamper = function(action, _, out)
      if action == "QueryDevice" then
        out.Data.DeviceInfo[#out.Data.DeviceInfo + 1] = {DeviceName = "extra_one", DeviceSecret = "S1",
                                                          IotId = "I1"}
      end
      return out
    end}, "for a page of 50"},
    {"more devices than Total", {count = 120, tamper = function(action, _, out)
      if action == "QueryDevice" then out.Total, out.PageCount = 60, 2 end
      return out
    end}, "Total"},
    {"a listing cut short of Total", {count = 120, tamper = function(action, p, out)
      if action == "QueryDevice" and p.CurrentPage == "2" then out.Data.DeviceInfo, out.NextToken = {}, nil end
      return out
    end}, "the listing ended after 50 devices"},
    {"the same page over and over under new tokens", {count = 120, tamper = function(action, p, out, svc)
      if action == "QueryDevice" and p.NextToken then
        local again = fake.new{count = svc.total}
        local first = require("cjson").decode(again.transport{body = "Action=QueryDevice&PageSize=50"}.body)
        out.Data.DeviceInfo = first.Data.DeviceInfo
      end
      return out
    end}, "ended after 50 devices"},
    {"pages without devices while Total says 120", {count = 120, tamper = function(action, _, out)
      if action == "QueryDevice" then out.Data.DeviceInfo, out.NextToken = {}, nil end
      return out
    end}, "the listing ended after 0 devices"},
    {"a device record a string", {count = 120, tamper = function(action, _, out)
      if action == "QueryDevice" then out.Data.DeviceInfo[2] = "unit" end
      return out
    end}, "not an object"},
    {"a DeviceName with a comma and a formula", {count = 120, tamper = first_device("DeviceName", "=cmd,x")}, "DeviceName"},
    {"a DeviceSecret a number", {count = 120, tamper = first_device("DeviceSecret", 12345)}, "DeviceSecret"},
    {"an IotId with a quote", {count = 120, tamper = first_device("IotId", 'I"1')}, "IotId"},
    {"a device of another product", {count = 120, tamper = first_device("ProductKey", "a1Other")}, "another product"},
    {"a detail record not asked for", {count = 120, secrets = false, tamper = function(action, _, out)
      if action == "BatchQueryDeviceDetail" then out.Data.Data[1].DeviceName = "unit_999999" end
      return out
    end}, "not asked"},
    {"a detail record twice", {count = 120, secrets = false, tamper = function(action, _, out)
      if action == "BatchQueryDeviceDetail" then table.remove(out.Data.Data); out.Data.Data[2] = out.Data.Data[1] end
      return out
    end}, "twice"},
    {"a detail secret with a newline", {count = 120, secrets = false, tamper = function(action, _, out)
      if action == "BatchQueryDeviceDetail" then out.Data.Data[3].DeviceSecret = "abc\ndef" end
      return out
    end}, "DeviceSecret"},
    {"detail Data.Data not a list", {count = 120, secrets = false, tamper = function(action, _, out)
      if action == "BatchQueryDeviceDetail" then out.Data.Data = "x" end
      return out
    end}, "not a list"},
    {"a page that is not JSON of an object", {count = 120, tamper = function(action, _, out)
      if action == "QueryDevice" then return "[1, 2]" end
      return out
    end}, nil},
  }

  for _, case in ipairs(CASES) do
    -- (the pages Total allows, and a fresh first page to check a listing that ended short)
    it(case[1] .. ": InvalidResponse, requests bounded by Total", function()
      local _, failure, svc = run(case[2])
      assert.truthy(failure, "no failure")
      assert.are.equal("InvalidResponse", failure.code, tostring(failure))
      if case[3] then
        assert.truthy(tostring(failure.message):find(case[3], 1, true), tostring(failure))
      end
      assert.is_true(svc.count("QueryDevice") <= math.ceil(svc.total / 50) + 1)
      -- no secret in the error
      assert.is_nil(tostring(failure):find("S%d%d%d%d%d%d%d%d%d%d"), tostring(failure))
    end)
  end

  it("stops at the pages Total allows whatever tokens a page offers", function()
    local n, failure, svc = run{count = 120, tamper = function(action, p, out)
      if action == "QueryDevice" then
        out.Total, out.PageCount = 100, 2
        if p.CurrentPage == "2" then out.NextToken = "T20" end
      end
      return out
    end}
    assert.is_nil(failure)
    assert.are.equal(100, n)
    assert.are.equal(2, svc.count("QueryDevice"))
  end)

  it("pages by number when no NextToken comes, within the 10,000 the service allows", function()
    local n, failure, svc = run{count = 120, tamper = page_field("NextToken", nil)}
    assert.is_nil(failure)
    assert.are.equal(120, n)
    assert.are.equal(3, svc.count("QueryDevice"))
    for _, r in ipairs(svc.requests) do assert.is_nil(r.params.NextToken) end
  end)
end)
