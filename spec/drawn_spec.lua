-- Client-drawn random names (register_devices{names = "client"}, batch/drawn.lua) against
-- the emulator: exactly Count devices with names of the service's shape, the names in the
-- journal before the first request, no failure under `reset_after` on any action, a
-- registration whose answer was lost settled (never re-sent blindly), names taken by
-- others replaced, and a resume of an interrupted client-named journal.
local iot = require "aliyun.iot"
local core = require "aliyun.iot.core"
local emulator = require "aliyun.iot.emulator"
local journal = require "aliyun.iot.journal"
local cjson = require "cjson"

local PK = "a1TestPK001"
local NAME = "^" .. ("[A-Za-z0-9]"):rep(20) .. "$"

local emu, tmp, n_journal = nil, nil, 0

local function new_client(opts)
  local o = {access_key_id = "testid", access_key_secret = "testsecret",
             endpoint = emu.endpoint, qps = false, max_batch_size = 40, timeout = 2,
             retry_deadline = 30}
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(iot.new(o))
end

local function journal_path()
  n_journal = n_journal + 1
  return ("%s/j%d"):format(tmp, n_journal)
end

local function records(path)
  local out = {}
  for line in io.lines(path) do out[#out + 1] = cjson.decode(line) end
  return out
end

-- Checks a finished job against the emulator: exactly `count` devices, each once, all
-- of the result's, with client-drawn names from check applies only.
local function audit(res, count)
  assert.are.equal(count, #res.Devices)
  local seen = {}
  for _, d in ipairs(res.Devices) do
    assert.truthy(d.DeviceName:find(NAME), d.DeviceName)
    assert.is_nil(seen[d.DeviceName], "duplicate " .. d.DeviceName)
    seen[d.DeviceName] = true
  end
  local st = emu:state()
  assert.are.equal(count, st.products[PK].devices)
  for _, name in ipairs(st.products[PK].names) do assert.truthy(seen[name], name) end
  for _, a in ipairs(st.applies) do assert.are.equal("check", a.Kind) end
end

describe("register_devices{names = \"client\"}", function()
  setup(function()
    emu = emulator.start{async_delay = 0.02}
    tmp = require("spec.support.shell").temp_dir()
  end)
  teardown(function()
    emu:stop()
    os.execute("rm -rf " .. tmp)
  end)
  before_each(function() emu:reset() end)

  it("draws unbiased names of the service's shape (core.random_name)", function()
    local counts, n = {}, 0
    for _ = 1, 2000 do
      local s = core.random_name(20)
      assert.truthy(s:find(NAME), s)
      for c in s:gmatch(".") do counts[c] = (counts[c] or 0) + 1; n = n + 1 end
    end
    local kinds = 0
    for _, k in pairs(counts) do
      kinds = kinds + 1
      -- 40,000 draws over 62 characters: about 645 each; 4.5 sigma either side
      assert.is_true(k > 530 and k < 760, "a character drawn " .. k .. " times")
    end
    assert.are.equal(62, kinds)
    assert.has_error(function() core.random_name(0) end)
    assert.has_error(function() core.random_name(65) end)
  end)

  it("registers exactly Count devices; the journal holds every name before any request", function()
    local path = journal_path()
    local seen_first = nil
    local client = new_client{transport = function(req)
      if not seen_first then
        -- the first request of the job: every drawn name is on disk already
        local names = 0
        for _, r in ipairs(records(path)) do
          if r.event == "names" then names = names + #r.Names end
        end
        seen_first = names
      end
      return iot.transports.curl(req)
    end}
    local res, err = client:register_devices{ProductKey = PK, Count = 130, names = "client",
                                             journal = path}
    assert.is_nil(err, tostring(err))
    assert.are.equal(130, seen_first)
    audit(res, 130)
    assert.is_nil(res.Invalid)
    local recs = records(path)
    assert.are.equal("client", recs[1].kind)
    assert.are.equal("done", recs[#recs].event)
    -- the default stays BatchRegisterDevice
    emu:reset()
    res = assert(new_client():register_devices{ProductKey = PK, Count = 3})
    assert.are.equal(3, #res.Devices)
    assert.are.equal("count", emu:state().applies[1].Kind)
  end)

  for _, action in ipairs{"BatchCheckDeviceNames", "QueryBatchRegisterDeviceStatus",
                          "BatchRegisterDeviceWithApplyId", "QueryPageByApplyId"} do
    it("ends complete under reset_after on every " .. action, function()
      emu:fault{kind = "reset_after", action = action, probability = 0.5}
      local res, err = new_client():register_devices{ProductKey = PK, Count = 90,
        names = "client", journal = journal_path()}
      emu:clear_faults()
      assert.is_nil(err, tostring(err))
      audit(res, 90)
    end)
  end

  it("settles a lost BatchRegisterDeviceWithApplyId by its status, never re-sending it blindly", function()
    emu:fault{kind = "reset_after", action = "BatchRegisterDeviceWithApplyId", count = 2}
    local res, err = new_client():register_devices{ProductKey = PK, Count = 60,
      names = "client", journal = journal_path()}
    assert.is_nil(err, tostring(err))
    audit(res, 60)
    -- each apply was registered once: the lost answers were read from the status
    local sent = {}
    for _, r in ipairs(emu:requests()) do
      if r.action == "BatchRegisterDeviceWithApplyId" then
        assert.is_nil(r.code, "a registration refused: " .. tostring(r.code))
        sent[r.params.ApplyId] = (sent[r.params.ApplyId] or 0) + 1
      end
    end
    for id, n in pairs(sent) do assert.are.equal(1, n, "apply " .. id .. " sent twice") end
  end)

  it("settles a journaled registration on resume before anything else", function()
    local path = journal_path()
    -- a job stopped right after its first registration went out, its answer lost: the
    -- network is gone from then on
    emu:fault{kind = "reset_after", action = "BatchRegisterDeviceWithApplyId", count = 1}
    local gone = false
    local client = new_client{max_retries = 0, transport = function(req)
      if gone then return nil, {code = "ConnectFailed", message = "gone", sent = false} end
      gone = req.body ~= nil and req.body:find("Action=BatchRegisterDeviceWithApplyId", 1, true) ~= nil
      return iot.transports.curl(req)
    end}
    local _, err = client:register_named_devices{ProductKey = PK, journal = path,
      Devices = {"settle_a", "settle_b"}}
    emu:clear_faults()
    assert.is_not_nil(err)
    assert.are.equal("ConnectFailed", err.code)
    local registers = 0
    for _, r in ipairs(records(path)) do
      if r.event == "register" then registers = registers + 1 end
    end
    assert.are.equal(1, registers)
    local before = #emu:requests()
    local res
    res, err = new_client():resume{journal = path}
    assert.is_nil(err, tostring(err))
    assert.are.equal(2, #res.Devices)
    local reqs = emu:requests()
    assert.are.equal("QueryBatchRegisterDeviceStatus", reqs[before + 1].action)
    for i = before + 1, #reqs do
      assert.are_not.equal("BatchRegisterDeviceWithApplyId", reqs[i].action)
    end
  end)

  it("replaces a name taken by a device that is not the job's, and keeps its own", function()
    local path = journal_path()
    -- another job takes the first name this job will check, between the draw and the check
    local taken = nil
    local client = new_client{transport = function(req)
      if not taken and req.body and req.body:find("Action=BatchCheckDeviceNames", 1, true) then
        taken = req.body:match("DeviceName%.1=([%w]+)")
        assert(new_client():register_named_devices{ProductKey = PK, Devices = {taken}})
      end
      return iot.transports.curl(req)
    end}
    local res, err = client:register_devices{ProductKey = PK, Count = 50, names = "client",
                                             journal = path}
    assert.is_nil(err, tostring(err))
    assert.truthy(taken)
    assert.are.equal(50, #res.Devices)
    for _, d in ipairs(res.Devices) do assert.are_not.equal(taken, d.DeviceName) end
    assert.are.equal(51, emu:state().products[PK].devices)
    local replaced = false
    for _, r in ipairs(records(path)) do
      if r.event == "names" and r.Replaces then
        assert.are.same({taken}, r.Replaces)
        replaced = true
      end
    end
    assert.is_true(replaced)
    -- the finished journal resumes to the same devices, without a request
    local before = #emu:requests()
    local again = assert(new_client():resume{journal = path})
    assert.are.equal(50, #again.Devices)
    assert.are.equal(before, #emu:requests())
  end)

  it("resumes a client-named journal cut after its names: same names, Count devices", function()
    local path = journal_path()
    local drawn_names = {}
    -- a job whose every request fails without acting: only its names reach the journal
    emu:fault{kind = "503", probability = 1}
    local _, err = new_client{max_retries = 0}:register_devices{ProductKey = PK, Count = 45,
      names = "client", journal = path}
    emu:clear_faults()
    assert.is_not_nil(err)
    for _, r in ipairs(records(path)) do
      if r.event == "names" then
        for _, n in ipairs(r.Names) do drawn_names[n] = true end
      end
    end
    local res
    res, err = new_client():resume{journal = path}
    assert.is_nil(err, tostring(err))
    audit(res, 45)
    for _, d in ipairs(res.Devices) do assert.truthy(drawn_names[d.DeviceName]) end
    assert.is_true(journal.finished(journal.read(path)))
  end)

  it("refuses a names value other than client or service before any request", function()
    local _, err = new_client():register_devices{ProductKey = PK, Count = 3, names = "mine"}
    assert.are.equal("InvalidParameter", err.code)
    assert.are.equal(0, #emu:requests())
  end)
end)
