-- Issue 12's jobs against a lying service and a hand-edited journal (a hostile test of
-- the job's safety): an answer that names an ApplyId the job holds already is not a new
-- apply (a BatchRegisterDevice so answered is uncertain, a check so answered creates
-- nothing and is refused, and no BatchRegisterDeviceWithApplyId goes out twice for one
-- apply); a journal that records one apply twice is refused before anything is sent.
local iot = require "aliyun.iot"
local fake = require "spec.support.fake_iot"
local shell = require "spec.support.shell"

local PK = "a1TestPK001"

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

local function client(svc)
  return assert(iot.new{access_key_id = "testid", access_key_secret = "testsecret",
    qps = false, endpoint = "http://127.0.0.1:9/", transport = svc.transport,
    max_batch_size = 5, max_retries = 0})
end

-- The second apply-making answer names the first apply again (the service made another).
local lying = true
local function repeat_first_id(action, _, out, svc)
  if lying and (action == "BatchRegisterDevice" or action == "BatchCheckDeviceNames")
     and #svc.applies == 2 then
    out.Data.ApplyId = svc.applies[1].ApplyId
  end
  return out
end

describe("a job told an ApplyId it holds already", function()
  local path
  before_each(function() path, lying = tmpname(), true end)
  after_each(function() os.remove(path) end)

  it("BatchRegisterDevice: the submission is uncertain (Ambiguous), the apply kept once", function()
    local svc = fake.new{tamper = repeat_first_id}
    local res, err = client(svc):register_devices{ProductKey = PK, Count = 10, journal = path}
    assert.is_nil(res)
    assert.are.equal("Ambiguous", err.code, tostring(err))
    assert.are.same({"4415"}, (function()
      local t = {}
      for i, id in ipairs(err.ApplyIds) do t[i] = tostring(id) end
      return t
    end)())
    assert.are.equal(5, #err.Devices)
    -- the journal resumes into the same two ways out, not into a dead end
    local c = client(fake.new{})
    local _, rerr = c:resume{journal = path}
    assert.are.equal("Ambiguous", rerr.code, tostring(rerr))
    local done = assert(c:resume{journal = path, accept_ambiguous = true})
    assert.are.equal(5, #done.Devices)
  end)

  it("BatchCheckDeviceNames: refused, and no apply is registered twice", function()
    local svc = fake.new{tamper = repeat_first_id}
    local res, err = client(svc):register_devices{ProductKey = PK, Count = 10,
                                                  names = "client", journal = path}
    assert.is_nil(res)
    assert.are.equal("InvalidResponse", err.code, tostring(err))
    local sent = {}
    for _, r in ipairs(svc.requests) do
      if r.action == "BatchRegisterDeviceWithApplyId" then
        assert.is_nil(sent[r.params.ApplyId], "registered twice: " .. r.params.ApplyId)
        sent[r.params.ApplyId] = true
      end
    end
    -- a resume against an honest service finishes the job: exactly Count devices
    lying = false
    local done = assert(client(svc):resume{journal = path})
    assert.are.equal(10, #done.Devices)
  end)

  it("a journal recording one apply twice is refused, nothing sent", function()
    local svc = fake.new{}
    assert(client(svc):register_devices{ProductKey = PK, Count = 5, names = "client",
                                        journal = path})
    local text = shell.read(path)
    local apply = text:match('[^\n]*"event":"apply"[^\n]*\n') or
                  text:match('[^\n]*"apply"[^\n]*\n')
    local lines = {}
    for line in text:gmatch("[^\n]+\n") do
      if not line:find('"done"') then lines[#lines + 1] = line end
    end
    lines[#lines + 1] = apply
    local f = assert(io.open(path, "w"))
    f:write(table.concat(lines))
    f:close()
    local other = fake.new{}
    local res, err = client(other):resume{journal = path}
    assert.is_nil(res)
    assert.are.equal("JournalError", err.code, tostring(err))
    assert.truthy(tostring(err):find("4415"), tostring(err))
    assert.are.equal(0, #other.requests)
  end)
end)

describe("a hand-edited client-named journal", function()
  local path
  before_each(function() path, lying = tmpname(), false end)
  after_each(function() os.remove(path) end)

  -- A finished client-named job of 5 devices, its done line cut, `line` appended; the
  -- resume must refuse it (it would register more than Count) and send nothing.
  local function refused(line, pattern)
    local svc = fake.new{}
    local res = assert(client(svc):register_devices{ProductKey = PK, Count = 5,
                                                    names = "client", journal = path})
    local kept = {}
    for l in shell.read(path):gmatch("[^\n]+\n") do
      if not l:find('"done"') then kept[#kept + 1] = l end
    end
    kept[#kept + 1] = line(res.Devices) .. "\n"
    local f = assert(io.open(path, "w"))
    f:write(table.concat(kept))
    f:close()
    local before = #svc.requests
    local again, err = client(svc):resume{journal = path}
    assert.is_nil(again, "resumed to " .. (again and #again.Devices or 0) .. " devices")
    assert.are.equal("JournalError", err.code, tostring(err))
    assert.truthy(tostring(err):find(pattern), tostring(err))
    assert.are.equal(before, #svc.requests)
  end

  it("refuses more live names than Count", function()
    refused(function() return '{"event":"names","Names":["extraNameDrawnByHand"]}' end,
            "more than the job's Count")
  end)

  it("refuses a replacement of a name the job registered", function()
    refused(function(devices)
      return ('{"event":"names","Names":["extraNameDrawnByHand"],"Replaces":["%s"]}')
        :format(devices[1].DeviceName)
    end, "registered")
  end)

  it("refuses a replacement of a name no line drew", function()
    refused(function()
      return '{"event":"names","Names":["extraNameDrawnByHand"],"Replaces":["neverDrawn"]}'
    end, "no earlier")
  end)
end)

describe("a hand-edited journal that would take in devices not the job's", function()
  local path
  before_each(function() path, lying = tmpname(), false end)
  after_each(function() os.remove(path) end)

  -- A finished job (`args` to register_devices), its done line cut and each line passed
  -- through `edit` (nil drops it); the resume must refuse it and send nothing.
  local function refused(args, edit, pattern)
    local svc = fake.new{}
    args.ProductKey, args.journal = PK, path
    assert(client(svc):register_devices(args))
    local kept = {}
    for l in shell.read(path):gmatch("[^\n]+") do
      if not l:find('"done"') then kept[#kept + 1] = edit(l) or nil end
    end
    local f = assert(io.open(path, "w"))
    f:write(table.concat(kept, "\n") .. "\n")
    f:close()
    local before = #svc.requests
    local again, err = client(svc):resume{journal = path}
    assert.is_nil(again, "resumed to " .. (again and #again.Devices or 0) .. " devices")
    assert.are.equal("JournalError", err.code, tostring(err))
    assert.truthy(tostring(err):find(pattern), tostring(err))
    assert.are.equal(before, #svc.requests)
  end

  it("refuses a name-check apply in a BatchRegisterDevice job", function()
    -- the second apply swapped for another job's check apply: its devices would be taken
    refused({Count = 10}, function(l)
      if l:find('"apply"') and l:find('"seq":2') then
        return '{"event":"apply","ApplyId":"9999","ProductKey":"' .. PK ..
               '","phase":"check","Names":["otherJobsDevice1"]}'
      end
      if not l:find('"4416"') then return l end
    end, "check apply")
  end)

  it("refuses a device line whose name its check apply did not ask for", function()
    local n = 0
    refused({Count = 3, names = "client"}, function(l)
      if l:find('"event":"device"') then
        n = n + 1
        if n == 2 then return (l:gsub('"DeviceName":"%w+"', '"DeviceName":"otherJobsDevice1"')) end
      end
      return l
    end, "did not ask for")
  end)

  it("refuses a device recorded twice with different secrets", function()
    local copy
    refused({Count = 3, names = "client"}, function(l)
      if l:find('"event":"device"') and not copy then
        copy = l:gsub('"DeviceSecret":"%w+"', '"DeviceSecret":"AnotherSecret0000000000000000000"')
        return l .. "\n" .. copy
      end
      return l
    end, "twice")
  end)
end)

describe("a client-named journal missing a names line", function()
  it("is refused: its applies check names no line drew, nothing sent", function()
    local path = tmpname()
    lying = false
    local svc = fake.new{}
    assert(client(svc):register_devices{ProductKey = PK, Count = 7, names = "client",
                                        journal = path})
    local kept, cut = {}, false
    for l in shell.read(path):gmatch("[^\n]+") do
      if l:find('"event":"names"') and not cut and #kept > 1 then
        cut = true
      elseif not l:find('"done"') then
        kept[#kept + 1] = l
      end
    end
    local f = assert(io.open(path, "w"))
    f:write(table.concat(kept, "\n") .. "\n")
    f:close()
    local before = #svc.requests
    local again, err = client(svc):resume{journal = path}
    os.remove(path)
    assert.is_nil(again, "resumed to " .. (again and #again.Devices or 0) .. " devices")
    assert.are.equal("JournalError", err.code, tostring(err))
    assert.truthy(tostring(err):find("no earlier line drew"), tostring(err))
    assert.are.equal(before, #svc.requests)
  end)
end)

describe("BatchQueryDeviceDetail naming one device twice", function()
  local emulator = require "aliyun.iot.emulator"
  local cjson = require("cjson").new()
  local emu
  setup(function() emu = emulator.start{async_delay = 0} end)
  teardown(function() emu:stop() end)

  it("with two secrets is an InvalidResponse, neither secret taken", function()
    local names = {"twice-0001", "twice-0002"}
    local o = {access_key_id = "testid", access_key_secret = "testsecret",
               endpoint = emu.endpoint, qps = false}
    assert(iot.new(o):register_named_devices{ProductKey = PK, Devices = names})
    o.transport = function(req)
      local res = iot.transports.curl(req)
      if req.body and req.body:find("Action=BatchQueryDeviceDetail", 1, true) then
        local body = cjson.decode(res.body)
        local list = body.Data and body.Data.Data
        if type(list) == "table" and list[1] then
          local copy = {}
          for k, v in pairs(list[1]) do copy[k] = v end
          copy.DeviceSecret = "ForgedSecret0000000000000000000"
          list[#list + 1] = copy
          res.body = cjson.encode(body)
        end
      end
      return res
    end
    local res, err = iot.new(o):register_named_devices{ProductKey = PK, Devices = names,
                                                        existing = "adopt"}
    assert.is_nil(res, "adopted " .. (res and #res.Devices or 0) .. " devices")
    assert.are.equal("InvalidResponse", err.code, tostring(err))
    assert.is_nil(tostring(err):find("ForgedSecret", 1, true))
  end)
end)

describe("a page listing one device twice with two secrets", function()
  it("ends the job before either is journaled; a resume takes the honest one", function()
    local path = tmpname()
    local forge = true
    local svc = fake.new{tamper = function(action, _, out)
      if forge and action == "QueryPageByApplyId" then
        local list = out.ApplyDeviceList.ApplyDeviceInfo
        local copy = {}
        for k, v in pairs(list[1]) do copy[k] = v end
        list[1].DeviceSecret = "ForgedSecret0000000000000000000"
        list[2] = copy -- the page's count kept: one name, two secrets
      end
      return out
    end}
    local res, err = client(svc):register_devices{ProductKey = PK, Count = 3, journal = path}
    assert.is_nil(res, "a result of " .. (res and #res.Devices or 0) .. " devices")
    assert.are.equal("InvalidResponse", err.code, tostring(err))
    forge = false
    local again = assert(client(svc):resume{journal = path})
    os.remove(path)
    assert.are.equal(3, #again.Devices)
    for _, d in ipairs(again.Devices) do
      assert.are_not.equal("ForgedSecret0000000000000000000", d.DeviceSecret)
    end
  end)
end)

describe("a name check that lied (CHECK_SUCCESS for a taken name), then told the truth", function()
  local emulator = require "aliyun.iot.emulator"
  local cjson = require("cjson").new()
  local emu
  setup(function() emu = emulator.start{async_delay = 0} end)
  teardown(function() emu:stop() end)

  it("a resume replaces the taken name: exactly Count devices, none another's", function()
    local path = tmpname()
    local base = {access_key_id = "testid", access_key_secret = "testsecret",
                  endpoint = emu.endpoint, qps = false, max_batch_size = 3, timeout = 2}
    local taken, lie = nil, true
    local o = {}
    for k, v in pairs(base) do o[k] = v end
    o.transport = function(req)
      local body = req.body or ""
      if not taken and body:find("Action=BatchCheckDeviceNames", 1, true) then
        -- another job takes the first name this job checks
        taken = body:match("DeviceName%.1=(%w+)")
        assert(iot.new(base):register_named_devices{ProductKey = PK, Devices = {taken}})
      end
      local res = iot.transports.curl(req)
      if lie and body:find("Action=QueryBatchRegisterDeviceStatus", 1, true) then
        local b = cjson.decode(res.body)
        if b.Data and b.Data.Status == "CHECK_FAILED" then
          b.Data.Status, b.Data.InvalidList, b.Data.InvalidDetailList = "CHECK_SUCCESS", nil, nil
          res.body = cjson.encode(b)
        end
      end
      return res
    end
    local res, err = iot.new(o):register_devices{ProductKey = PK, Count = 7, names = "client",
                                                 journal = path}
    assert.is_nil(res)
    assert.is_not_nil(err)
    lie = false
    res, err = iot.new(o):resume{journal = path}
    assert.is_nil(err, tostring(err))
    assert.are.equal(7, #res.Devices)
    -- the finished journal reads again to the same devices
    local again, aerr = iot.new(o):resume{journal = path}
    os.remove(path)
    assert.is_nil(aerr, tostring(aerr))
    assert.are.equal(7, #again.Devices)
    local mine = {}
    for _, d in ipairs(res.Devices) do
      assert.are_not.equal(taken, d.DeviceName)
      mine[d.DeviceName] = true
    end
    local st = emu:state()
    assert.are.equal(8, st.products[PK].devices)
    for _, n in ipairs(st.products[PK].names) do assert.truthy(mine[n] or n == taken, n) end
  end)
end)

describe("a client-named journal replacing a name of a registered apply", function()
  it("is refused once the apply proves it passed its check: nothing more registered", function()
    local path = tmpname()
    lying = false
    local svc = fake.new{}
    local res = assert(client(svc):register_devices{ProductKey = PK, Count = 3,
                                                    names = "client", journal = path})
    local kept = {}
    for l in shell.read(path):gmatch("[^\n]+") do
      if not (l:find('"event":"device"') or l:find('"fetched"') or l:find('"done"')) then
        kept[#kept + 1] = l
      end
    end
    kept[#kept + 1] = ('{"event":"names","Names":["extraNameDrawnByHand"],"Replaces":["%s"]}')
      :format(res.Devices[1].DeviceName)
    local f = assert(io.open(path, "w"))
    f:write(table.concat(kept, "\n") .. "\n")
    f:close()
    local checks = svc.count("BatchCheckDeviceNames")
    local again, err = client(svc):resume{journal = path}
    os.remove(path)
    assert.is_nil(again, "resumed to " .. (again and #again.Devices or 0) .. " devices")
    assert.are.equal("JournalError", err.code, tostring(err))
    assert.are.equal(checks, svc.count("BatchCheckDeviceNames"))
    assert.are.equal(1, svc.count("BatchRegisterDeviceWithApplyId"))
  end)
end)

describe("resume{adopt_apply_ids} given numbers", function()
  it("takes an integer ApplyId and refuses a fraction as InvalidParameter", function()
    local path = tmpname()
    local lost = true
    local svc = fake.new{tamper = function(action, _, out, s)
      if action == "BatchRegisterDevice" and lost and #s.applies == 2 then
        lost = false
        return "{" -- the answer is lost: apply 4416 exists unseen
      end
      if action == "QueryPageByApplyId" then
        for _, d in ipairs(out.ApplyDeviceList.ApplyDeviceInfo) do
          d.DeviceName = d.DeviceName:gsub("_", "x") -- the service's random names
        end
      end
      return out
    end}
    local c = client(svc)
    local _, err = c:register_devices{ProductKey = PK, Count = 10, journal = path}
    assert.are.equal("Ambiguous", err.code, tostring(err))
    local res
    res, err = c:resume{journal = path, adopt_apply_ids = {4416.5}}
    assert.is_nil(res)
    assert.are.equal("InvalidParameter", err.code, tostring(err))
    res, err = c:resume{journal = path, adopt_apply_ids = {4416}}
    os.remove(path)
    assert.is_nil(err, tostring(err))
    assert.are.equal(10, #res.Devices)
  end)
end)
