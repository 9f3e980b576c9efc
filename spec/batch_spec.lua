-- The batch provisioning helpers against the local emulator over real HTTP on loopback:
-- exact device sets, chunking, invalid names (local and service-reported, sync and async),
-- deadlines, partial failures, journal + resume, QPS pacing, fault injection, XML.
local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"

local PK = "a1TestPK001"
local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))

local function sorted_names(devices)
  local out = {}
  for i, d in ipairs(devices) do out[i] = d.DeviceName end
  table.sort(out)
  return out
end

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

local shell = require "spec.support.shell"
local write = shell.write
local function read(path) return assert(shell.read(path)) end

local function lines_of(path)
  local out = {}
  for line in read(path):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

local function count_requests(emu, action, pred)
  local n = 0
  for _, r in ipairs(emu:requests()) do
    if r.action == action and (not pred or pred(r)) then n = n + 1 end
  end
  return n
end

describe("batch helpers", function()
  local emu

  local function client(opts)
    local o = {access_key_id = "testid", access_key_secret = "testsecret",
               endpoint = emu.endpoint, qps = false}
    for k, v in pairs(opts or {}) do o[k] = v end
    return assert(iot.new(o))
  end

  -- The emulator holds exactly these devices (and each record is complete, unique).
  local function assert_exact(devices)
    local names = sorted_names(devices)
    for i = 2, #names do assert.are_not.equal(names[i - 1], names[i]) end
    for _, d in ipairs(devices) do
      assert.are.equal(PK, d.ProductKey)
      assert.is_string(d.DeviceSecret)
      assert.is_string(d.IotId)
    end
    local state = emu:state().products[PK]
    assert.are.same(state.names, names)
    assert.are.equal(state.devices, #devices)
  end

  local function names_list(prefix, n)
    local t = {}
    for i = 1, n do t[i] = ("%s-%05d"):format(prefix, i) end
    return t
  end

  setup(function()
    emu = emulator.start{async_delay = 0}
  end)

  teardown(function()
    emu:stop()
  end)

  before_each(function()
    emu:reset()
    emu:set{async_delay = 0, qps_limits = false, invalid_names = "async", max_count = 10000}
  end)

  describe("register_devices", function()
    it("splits 2,500 into applies of 1,000, 1,000 and 500 and returns exactly the devices created", function()
      local c = client()
      local events = {}
      local res = assert(c:register_devices{ProductKey = PK, Count = 2500,
        on_progress = function(e) events[#events + 1] = e end})
      assert.are.equal(3, #res.ApplyIds)
      assert.are.equal(2500, #res.Devices)
      assert_exact(res.Devices)
      local counts = {}
      for _, r in ipairs(emu:requests()) do
        if r.action == "BatchRegisterDevice" then counts[#counts + 1] = r.params.Count end
      end
      assert.are.same({"1000", "1000", "500"}, counts)
      for _, r in ipairs(emu:requests()) do
        if r.action == "QueryPageByApplyId" then assert.are.equal("50", r.params.PageSize) end
      end
      local last = {}
      for _, e in ipairs(events) do last[e.phase] = e end
      assert.are.same({2500, 2500}, {last.register.done, last.register.total})
      assert.are.same({2500, 2500}, {last.fetch.done, last.fetch.total})
      assert.are.equal(2500, last.create.done)
    end)

    it("splits at a configured max_batch_size of 10,000", function()
      local c = client{max_batch_size = 10000}
      local res = assert(c:register_devices{ProductKey = PK, Count = "12000"})
      assert.are.equal(2, #res.ApplyIds)
      assert.are.equal(2, count_requests(emu, "BatchRegisterDevice"))
      assert.are.equal(1, count_requests(emu, "BatchRegisterDevice",
        function(r) return r.params.Count == "10000" end))
      assert_exact(res.Devices)
    end)

    it("rejects bad values before sending anything, and raises on misuse", function()
      local c = client()
      -- a job's cap is 10,000,000 devices; beyond int64 is no integer at all
      for _, count in ipairs{0, -1, 1.5, "1e3", "abc", 10000001, "10000001",
                             "99999999999999999999", 1e20, "-99999999999999999999"} do
        -- (the deadline ends a job that a missing cap lets run, instead of running forever)
        local res, err = c:register_devices{ProductKey = PK, Count = count, deadline = 2}
        assert.is_nil(res)
        assert.are.equal("InvalidParameter", err.code)
        assert.are.equal("Count", err.parameter)
      end
      local _, err = c:register_devices{Count = 5}
      assert.are.equal("ProductKey", err.parameter)
      assert.has_error(function() c:register_devices{ProductKey = PK, Count = 1, jornal = "x"} end)
      assert.has_error(function() c:register_devices(5) end)
      -- a hole would make the names after it vanish from the job
      assert.has_error(function()
        c:register_named_devices{ProductKey = PK, Devices = {"hole_0001", nil, "hole_0003"}}
      end)
      assert.are.same({}, emu:requests())
    end)

    it("ends an apply that stays CREATE at the deadline with ApplyTimeout and its ApplyId", function()
      emu:set{async_delay = 30}
      local c = client()
      local res, err = c:register_devices{ProductKey = PK, Count = 3, deadline = 0.6}
      assert.is_nil(res)
      assert.are.equal("ApplyTimeout", err.code)
      assert.are.equal("CREATE", err.status)
      assert.are.equal(1, #err.apply_ids)
      assert.are.equal(err.apply_ids[1], err.apply_id)
      assert.matches(tostring(err.apply_id), tostring(err), 1, true)
    end)

    it("ends a partial failure with every ApplyId created and the devices fetched", function()
      local c = client{max_retries = 1}
      local injected = false
      local res, err = c:register_devices{ProductKey = PK, Count = 2500, on_progress = function(e)
        if e.phase == "register" and not injected then
          injected = true
          emu:fault{kind = "503", count = 10, action = "BatchRegisterDevice"}
        end
      end}
      assert.is_nil(res)
      assert.are.equal("ServiceUnavailable", err.code)
      assert.is_false(err.ambiguous)
      assert.are.equal(1, #err.apply_ids)
      assert.are.equal(1000, #err.devices)
      assert_exact(err.devices)
      local text = tostring(err)
      assert.matches(tostring(err.apply_ids[1]), text, 1, true)
      for _, d in ipairs(err.devices) do assert.is_nil(text:find(d.DeviceSecret, 1, true)) end
    end)
  end)

  describe("register_named_devices", function()
    it("checks, registers and reads named devices in chunks of 1,000, nicknames included", function()
      local c = client()
      local names = names_list("lamp", 2100)
      local list = {}
      for i, n in ipairs(names) do list[i] = i % 2 == 0 and {DeviceName = n, DeviceNickname = "nick" .. i} or n end
      local res = assert(c:register_named_devices{ProductKey = PK, Devices = list})
      assert.are.equal(3, #res.ApplyIds)
      assert.are.same({}, res.Invalid)
      assert_exact(res.Devices)
      table.sort(names)
      assert.are.same(names, sorted_names(res.Devices))
      local sizes = {}
      for _, r in ipairs(emu:requests()) do
        if r.action == "BatchCheckDeviceNames" then
          local n = 0
          for k in pairs(r.params) do if k:match("^DeviceNameList%.%d+%.DeviceName$") then n = n + 1 end end
          sizes[#sizes + 1] = n
        end
      end
      assert.are.same({1000, 1000, 100}, sizes)
    end)

    it("checks each name once on the job's path (locally), not again in requests or pages", function()
      -- issue 16: the DeviceName rule ran three times per name (the local check, the
      -- request's validation, the page's answer check). The job vouches for the lists it
      -- builds from checked names; a page's names the apply asked for are the job's own.
      local validate = require "aliyun.iot.validate"
      local rule, nick_rule, names, nicks = validate.device_name_problem, validate.nickname_problem, 0, 0
      validate.device_name_problem = function(v) names = names + 1 return rule(v) end
      validate.nickname_problem = function(...) nicks = nicks + 1 return nick_rule(...) end
      local list = {}
      for i, n in ipairs(names_list("once", 1500)) do
        list[i] = i % 3 == 0 and {DeviceName = n, DeviceNickname = "nick" .. i} or n
      end
      local ok, res = pcall(function()
        return assert(client():register_named_devices{ProductKey = PK, Devices = list})
      end)
      validate.device_name_problem, validate.nickname_problem = rule, nick_rule
      assert(ok, res)
      assert.are.equal(1500, #res.Devices)
      assert.are.equal(1500, names)
      assert.are.equal(500, nicks)
    end)

    it("splits at a configured max_batch_size of 10,000", function()
      local c = client{max_batch_size = 10000}
      local res = assert(c:register_named_devices{ProductKey = PK, Devices = names_list("big", 10050)})
      assert.are.equal(2, #res.ApplyIds)
      assert.are.equal(2, count_requests(emu, "BatchCheckDeviceNames"))
      assert.are.equal(10050, #res.Devices)
      assert_exact(res.Devices)
    end)

    it("fails on locally invalid names without sending anything", function()
      local c = client()
      local res, err = c:register_named_devices{ProductKey = PK,
        Devices = {"good-001", "bad name", "abc", "good-001", "good-002"}}
      assert.is_nil(res)
      assert.are.equal("InvalidDeviceName", err.code)
      local bad = {}
      for _, b in ipairs(err.invalid) do bad[#bad + 1] = b.DeviceName; assert.is_string(b.ErrorMsg) end
      assert.are.same({"bad name", "abc", "good-001"}, bad)
      assert.are.same({}, emu:requests())
    end)

    for _, style in ipairs{"async", "sync"} do
      describe("with names the service rejects (" .. style .. " reporting)", function()
        before_each(function() emu:set{invalid_names = style} end)

        it("fails and registers nothing without skip_invalid", function()
          local c = client()
          assert(c:register_device{ProductKey = PK, DeviceName = "taken-001"})
          local res, err = c:register_named_devices{ProductKey = PK,
            Devices = {"new-0001", "taken-001", "new-0002"}}
          assert.is_nil(res)
          assert.are.equal("InvalidDeviceName", err.code)
          assert.are.equal(1, #err.invalid)
          assert.are.equal("taken-001", err.invalid[1].DeviceName)
          assert.matches("exists", err.invalid[1].ErrorMsg)
          assert.are.equal(0, count_requests(emu, "BatchRegisterDeviceWithApplyId"))
          assert.are.same({"taken-001"}, emu:state().products[PK].names)
        end)

        it("leaves invalid names out with skip_invalid, local ones and service-reported ones", function()
          local c = client()
          assert(c:register_device{ProductKey = PK, DeviceName = "taken-001"})
          local taken = emu:state().products[PK].names
          local res = assert(c:register_named_devices{ProductKey = PK, skip_invalid = true,
            Devices = {"new-0001", "taken-001", "bad name", "new-0002", "new-0001"}})
          assert.are.same({"new-0001", "new-0002"}, sorted_names(res.Devices))
          local bad = {}
          for _, b in ipairs(res.Invalid) do bad[#bad + 1] = b.DeviceName end
          table.sort(bad)
          assert.are.same({"bad name", "new-0001", "taken-001"}, bad)
          local state = emu:state().products[PK]
          assert.are.same({"new-0001", "new-0002", taken[1]}, state.names)
        end)

        it("gives the same Invalid names back when its finished journal is resumed", function()
          local path = tmpname()
          local c = client()
          assert(c:register_device{ProductKey = PK, DeviceName = "taken-001"})
          local res = assert(c:register_named_devices{ProductKey = PK, skip_invalid = true,
            journal = path, Devices = {"new-0001", "taken-001", "bad name"}})
          local again = assert(c:resume{journal = path})
          os.remove(path)
          assert.are.equal(2, #res.Invalid)
          assert.are.same(res.Invalid, again.Invalid)
          assert.are.same(sorted_names(res.Devices), sorted_names(again.Devices))
        end)
      end)
    end

    it("ends CREATE_FAILED with CreateFailed, the created devices and the failed name", function()
      local c = client()
      local res, err = c:register_named_devices{ProductKey = PK,
        Devices = {"race-001", "race-002", "race-003"}, on_progress = function(e)
          if e.phase == "check" then
            assert(c:register_device{ProductKey = PK, DeviceName = "race-002"})
          end
        end}
      assert.is_nil(res)
      assert.are.equal("CreateFailed", err.code)
      assert.are.same({"race-001", "race-003"}, sorted_names(err.devices))
      assert.are.equal("race-002", err.invalid[1].DeviceName)
      assert.are.equal(1, #err.apply_ids)
    end)
  end)

  describe("wait_apply and apply_devices", function()
    it("waits for each phase, and gives up at the deadline with ApplyTimeout", function()
      local c = client()
      local id = assert(c:batch_check_device_names{ProductKey = PK, DeviceName = {"w-0001"}}).Data.ApplyId
      local data = assert(c:wait_apply{ProductKey = PK, ApplyId = id, phase = "check"})
      assert.are.equal("CHECK_SUCCESS", data.Status)
      emu:set{async_delay = 30}
      assert(c:batch_register_device_with_apply_id{ProductKey = PK, ApplyId = id})
      local t0 = c:clock()
      local res, err = c:wait_apply{ProductKey = PK, ApplyId = id, deadline = 0.7}
      assert.is_nil(res)
      assert.are.equal("ApplyTimeout", err.code)
      assert.are.equal(id, err.apply_id)
      assert.are.equal("CREATE", err.status)
      assert.is_true(c:clock() - t0 < 5)
      local _, bad = c:wait_apply{ProductKey = PK, ApplyId = id, phase = "done"}
      assert.are.equal("InvalidParameter", bad.code)
    end)

    it("iterates over an apply's devices page by page, and yields false, err once on failure", function()
      local c = client()
      local id = assert(c:batch_register_device{ProductKey = PK, Count = 23}).Data.ApplyId
      assert(c:wait_apply{ProductKey = PK, ApplyId = id})
      local got = {}
      for dev, err in c:apply_devices{ProductKey = PK, ApplyId = id, page_size = 5} do
        assert.is_nil(err)
        got[#got + 1] = dev
      end
      assert.are.equal(23, #got)
      assert_exact(got)
      assert.are.equal(5, count_requests(emu, "QueryPageByApplyId"))
      local seen = {}
      for dev, err in c:apply_devices{ProductKey = PK, ApplyId = 999999999} do
        seen[#seen + 1] = {dev, err}
      end
      assert.are.equal(1, #seen)
      assert.is_false(seen[1][1])
      assert.are.equal("iot.device.DeviceApplyIsNotFound", seen[1][2].code)
    end)
  end)

  describe("journal and resume", function()
    local path
    before_each(function() path = tmpname() end)
    after_each(function() os.remove(path) end)

    local function events_of(p)
      local out = {}
      for _, line in ipairs(lines_of(p)) do out[#out + 1] = line:match('"event":"(%a+)"') end
      return out
    end

    -- The journal cut after the n-th line whose event is `event`.
    local function cut_after(p, event, n)
      local keep, seen = {}, 0
      for _, line in ipairs(lines_of(p)) do
        keep[#keep + 1] = line
        if line:match('"event":"(%a+)"') == event then
          seen = seen + 1
          if seen == n then break end
        end
      end
      write(p, table.concat(keep, "\n") .. "\n")
    end

    it("records the job (mode 0600) and a finished journal resumes without a request", function()
      local c = client()
      local res = assert(c:register_devices{ProductKey = PK, Count = 120, journal = path})
      local p = io.popen("stat -c %a " .. path)
      assert.are.equal("600", p:read("*l"))
      p:close()
      local ev = events_of(path)
      assert.are.same({"job", "submit", "apply"}, {ev[1], ev[2], ev[3]})
      assert.are.equal("done", ev[#ev])
      local n = #emu:requests()
      local again = assert(c:resume{journal = path})
      assert.are.same(sorted_names(res.Devices), sorted_names(again.Devices))
      assert.are.equal(n, #emu:requests())
      local _, err = c:register_devices{ProductKey = PK, Count = 1, journal = path}
      assert.are.equal("InvalidParameter", err.code)
      assert.are.equal("journal", err.parameter)
    end)

    it("finishes a random job cut short after its applies, creating nothing again", function()
      local c = client()
      assert(c:register_devices{ProductKey = PK, Count = 2500, journal = path})
      cut_after(path, "apply", 3)
      local n = count_requests(emu, "BatchRegisterDevice")
      local res = assert(c:resume{journal = path})
      assert.are.equal(n, count_requests(emu, "BatchRegisterDevice"))
      assert.are.equal(2500, #res.Devices)
      assert_exact(res.Devices)
    end)

    it("re-fetches only what a journal cut mid-devices lacks", function()
      local c = client()
      assert(c:register_devices{ProductKey = PK, Count = 1500, journal = path})
      cut_after(path, "device", 1210)
      local res = assert(c:resume{journal = path})
      assert.are.equal(1500, #res.Devices)
      assert_exact(res.Devices)
      local ev = events_of(path)
      local devices = 0
      for _, e in ipairs(ev) do if e == "device" then devices = devices + 1 end end
      assert.are.equal(1500, devices)
    end)

    it("submits only the remainder after a failed chunk", function()
      local c = client{max_retries = 0}
      local injected = false
      local _, err = c:register_devices{ProductKey = PK, Count = 2500, journal = path,
        on_progress = function(e)
          if e.phase == "register" and e.done == 2000 and not injected then
            injected = true
            emu:fault{kind = "503", count = 1, action = "BatchRegisterDevice"}
          end
        end}
      assert.are.equal(2, #err.apply_ids)
      assert.matches(path, tostring(err), 1, true)
      local res = assert(c:resume{journal = path})
      assert.are.equal(3, #res.ApplyIds)
      assert_exact(res.Devices)
      assert.are.equal(2500, #res.Devices)
    end)

    it("never submits again after an uncertain BatchRegisterDevice, and says so", function()
      local c = client()
      assert(c:register_devices{ProductKey = PK, Count = 2500, journal = path})
      cut_after(path, "submit", 3) -- killed while the third BatchRegisterDevice was in flight
      local n = count_requests(emu, "BatchRegisterDevice")
      local res, err = c:resume{journal = path}
      assert.is_nil(res)
      assert.is_true(err.ambiguous)
      assert.are.equal("Ambiguous", err.code)
      assert.matches("never arrived", tostring(err))
      assert.are.equal(2, #err.apply_ids)
      assert.are.equal(2000, #err.devices)
      assert.are.equal(n, count_requests(emu, "BatchRegisterDevice"))
    end)

    it("resumes a CREATE_FAILED job to the same CreateFailed, finished or cut before its end", function()
      local c = client()
      local function race(e)
        if e.phase == "check" then assert(c:register_device{ProductKey = PK, DeviceName = "race-002"}) end
      end
      local _, first = c:register_named_devices{ProductKey = PK, journal = path,
        Devices = {"race-001", "race-002", "race-003"}, on_progress = race}
      assert.are.equal("CreateFailed", first.code)
      local text = read(path)
      for _, cut in ipairs{false, true} do
        if cut then cut_after(path, "apply", 1) else write(path, text) end
        local res, err = c:resume{journal = path}
        assert.is_nil(res)
        assert.are.equal("CreateFailed", err.code)
        assert.are.same({"race-001", "race-003"}, sorted_names(err.devices))
        assert.are.equal("race-002", err.invalid[1].DeviceName)
        assert.are.same(first.apply_ids, err.apply_ids)
      end
      assert.are.equal(1, count_requests(emu, "BatchRegisterDeviceWithApplyId"))
    end)

    it("resumes a job whose names failed the check to the same InvalidDeviceName", function()
      local c = client()
      assert(c:register_device{ProductKey = PK, DeviceName = "taken-001"})
      local _, first = c:register_named_devices{ProductKey = PK, journal = path,
        Devices = {"new-0001", "taken-001"}}
      assert.are.equal("InvalidDeviceName", first.code)
      local res, err = c:resume{journal = path}
      assert.is_nil(res)
      assert.are.equal("InvalidDeviceName", err.code)
      assert.are.equal("taken-001", err.invalid[1].DeviceName)
      assert.are.same({}, err.devices)
      assert.are.equal(0, count_requests(emu, "BatchRegisterDeviceWithApplyId"))
    end)

    it("says so when the journal path is a directory", function()
      local dir = tmpname()
      assert(os.execute("mkdir " .. dir))
      local c = client()
      local _, err = c:register_devices{ProductKey = PK, Count = 1, journal = dir}
      local _, rerr = c:resume{journal = dir}
      os.remove(dir)
      assert.are.equal("journal", err.parameter)
      assert.matches("is a directory", tostring(err), 1, true)
      assert.is_nil(tostring(err):find("already exists", 1, true))
      assert.are.equal("JournalError", rerr.code)
      assert.are.same({}, emu:requests())
    end)

    it("finishes a named job cut short after its checks", function()
      local c = client()
      local names = names_list("res", 1200)
      names[#names + 1] = "bad name"
      assert(c:register_named_devices{ProductKey = PK, Devices = names, journal = path,
                                      skip_invalid = true})
      cut_after(path, "apply", 2)
      local n = count_requests(emu, "BatchCheckDeviceNames")
      local res = assert(c:resume{journal = path})
      assert.are.equal(n, count_requests(emu, "BatchCheckDeviceNames"))
      assert.are.equal(1200, #res.Devices)
      assert.are.equal("bad name", res.Invalid[1].DeviceName)
      assert_exact(res.Devices)
    end)

    -- The journal without the lines `drop(line, event)` says to drop.
    local function drop_lines(p, drop)
      local keep, dropped = {}, {}
      for _, line in ipairs(lines_of(p)) do
        local ev = line:match('"event":"(%a+)"')
        if drop(line, ev) then dropped[#dropped + 1] = line else keep[#keep + 1] = line end
      end
      write(p, table.concat(keep, "\n") .. "\n")
      return dropped
    end

    local function every_nth(event, want)
      local seen = 0
      return function(_, ev)
        if ev ~= event then return false end
        seen = seen + 1
        return want[seen] == true
      end
    end

    it("reads an apply again when its device lines fall short of its fetched Total (done kept or dropped)",
       function()
      for _, drop_done in ipairs{false, true} do
        emu:reset()
        os.remove(path)
        local c = client()
        local first = assert(c:register_devices{ProductKey = PK, Count = 5, journal = path})
        local second_and_fourth = every_nth("device", {[2] = true, [4] = true})
        local dropped = drop_lines(path, function(line, ev)
          if ev == "done" then return drop_done end
          return second_and_fourth(line, ev)
        end)
        assert.are.equal(drop_done and 3 or 2, #dropped)
        local before = count_requests(emu, "QueryPageByApplyId")
        local res, err = c:resume{journal = path}
        assert.is_nil(err, tostring(err))
        assert.are.equal(5, #res.Devices)
        assert.are.same(sorted_names(first.Devices), sorted_names(res.Devices))
        assert_exact(res.Devices)
        assert.is_true(count_requests(emu, "QueryPageByApplyId") > before)
        assert.are.equal(1, count_requests(emu, "BatchRegisterDevice"))
        -- the missing devices are journaled again: a second resume needs no request
        local _, n = read(path):gsub('"event":"device"', "")
        assert.are.equal(5, n)
        local n_req = #emu:requests()
        assert.are.equal(5, #assert(c:resume{journal = path}).Devices)
        assert.are.equal(n_req, #emu:requests())
      end
    end)

    it("reads the applies again when device lines fall short of done's Devices", function()
      local c = client{max_batch_size = 3}
      local first = assert(c:register_devices{ProductKey = PK, Count = 6, journal = path})
      -- apply 2's second device and its fetched line gone: only done still counts it
      local seen_dev = 0
      drop_lines(path, function(_, ev)
        if ev == "device" then
          seen_dev = seen_dev + 1
          return seen_dev == 5
        end
        return ev == "fetched" and seen_dev >= 4
      end)
      local res = assert(c:resume{journal = path})
      assert.are.same(sorted_names(first.Devices), sorted_names(res.Devices))
      assert.are.equal(2, count_requests(emu, "BatchRegisterDevice"))
    end)

    it("refuses a journal with more devices than an apply's Total, or devices of an unknown apply",
       function()
      local c = client()
      assert(c:register_devices{ProductKey = PK, Count = 3, journal = path})
      local lines = lines_of(path)
      local extra, fetched_at, device_at
      for i, line in ipairs(lines) do
        if line:find('"event":"device"', 1, true) then device_at = i end
        if line:find('"event":"fetched"', 1, true) then fetched_at = i end
      end
      local dev = lines[device_at]
      extra = dev:gsub('"DeviceName":"[^"]*"', '"DeviceName":"extra_0001"')
      -- a fourth device of a 3-device apply, before its fetched line
      local more = {}
      for i, line in ipairs(lines) do
        more[#more + 1] = line
        if i == device_at then more[#more + 1] = extra end
      end
      local n = #emu:requests()
      write(path, table.concat(more, "\n") .. "\n")
      local res, err = c:resume{journal = path}
      assert.is_nil(res)
      assert.are.equal("JournalError", err.code, tostring(err))
      assert.truthy(err.message:find(path .. ":" .. (device_at + 1) .. ": ", 1, true), err.message)
      assert.truthy(err.message:find("Total 3", 1, true), err.message)
      assert.truthy(fetched_at)
      -- a device line of an apply the journal never recorded
      local stranger = dev:gsub('"ApplyId":"%d+"', '"ApplyId":"777777"')
      local with = {}
      for i, line in ipairs(lines) do
        with[#with + 1] = line
        if i == device_at then with[#with + 1] = stranger end
      end
      write(path, table.concat(with, "\n") .. "\n")
      res, err = c:resume{journal = path}
      assert.is_nil(res)
      assert.are.equal("JournalError", err.code, tostring(err))
      assert.truthy(err.message:find(path .. ":" .. (device_at + 1) .. ": ", 1, true), err.message)
      assert.truthy(err.message:find("777777", 1, true), err.message)
      assert.are.equal(n, #emu:requests())
    end)

    it("refuses a journal that contradicts its job (ProductKey, Counts) with PATH:LINE, sending nothing",
       function()
      local c = client()
      assert(c:register_devices{ProductKey = PK, Count = 3, journal = path})
      local lines = lines_of(path)
      local at = {}
      for i, line in ipairs(lines) do
        local ev = line:match('"event":"(%a+)"')
        at[ev] = at[ev] or i
      end
      local function edited(line_no, from, to)
        local out = {}
        for i, line in ipairs(lines) do
          out[i] = i == line_no and line:gsub(from, to) or line
          if i == line_no then assert(out[i] ~= line, from) end
        end
        return table.concat(out, "\n") .. "\n"
      end
      local n = #emu:requests()
      local cases = {
        -- a device of another product
        {edited(at.device, '"ProductKey":"' .. PK .. '"', '"ProductKey":"a1Other"'), at.device,
         "ProductKey a1Other is not the job's " .. PK},
        -- an apply of another product
        {edited(at.apply, '"ProductKey":"' .. PK .. '"', '"ProductKey":"a1Other"'), at.apply,
         "ProductKey a1Other"},
        -- the job's Count raised after it finished with 3 devices
        {edited(1, '"Count":3', '"Count":4'), at.done, "the job's Count is 4"},
        -- an apply asking for more than the job's Count
        {edited(at.apply, '"Count":3', '"Count":4'), at.apply, "more than the job's Count 3"},
        -- an apply whose fetched Total is not what it asked
        {edited(at.apply, '"Count":3', '"Count":2'), at.fetched, "CREATE_SUCCESS with 3 devices, 2 asked"},
      }
      for _, case in ipairs(cases) do
        write(path, case[1])
        local res, err = c:resume{journal = path}
        assert.is_nil(res)
        assert.are.equal("JournalError", err.code, tostring(err))
        assert.truthy(err.message:find(path .. ":" .. case[2] .. ": ", 1, true), err.message)
        assert.truthy(err.message:find(case[3], 1, true), err.message)
      end
      assert.are.equal(n, #emu:requests())
    end)

    it("refuses a changed or damaged journal with JournalError naming the event, sending nothing", function()
      local c = client()
      local job = '{"event":"job","version":1,"kind":"random","ProductKey":"' .. PK .. '","Count":%s}'
      local apply = '{"event":"apply","seq":1,"ApplyId":"4415","ProductKey":"' .. PK .. '","phase":"create","Count":3}'
      local cases = {
        {job:format('"abc"'), "Count"},
        {job:format("2.5"), "Count"},
        {job:format("1000000000000"), "Count"},
        {job:format("3") .. '\n{"event":"apply","seq":1,"phase":"create","Count":3}', "ApplyId"},
        {job:format("3") .. "\n" .. apply .. '\n{"event":"device","ApplyId":"4415","DeviceSecret":"abc","IotId":"x1"}',
         "device"},
        {job:format("3") .. "\n" .. apply ..
         '\n{"event":"device","ApplyId":"4415","DeviceName":"lamp_0001","DeviceSecret":{},"IotId":"x1"}', "device"},
        {job:format("3") .. '\n{"event":"submit","action":"BatchRegisterDevice","Count":3}', "seq"},
        {'{"event":"job","version":1,"kind":"named","ProductKey":"' .. PK .. '","Devices":[{}]}', "Devices"},
      }
      for _, case in ipairs(cases) do
        write(path, case[1] .. "\n")
        local res, err = c:resume{journal = path}
        assert.is_nil(res)
        assert.are.equal("JournalError", err.code, tostring(err))
        assert.matches(case[2], err.message, 1, true)
      end
      assert.are.same({}, emu:requests())
    end)

    it("keeps ApplyIds beyond 2^53 exact through the journal", function()
      local big = emulator.start{async_delay = 0, apply_id_base = "900719925474099300"}
      local c = assert(iot.new{access_key_id = "testid", access_key_secret = "testsecret",
                               endpoint = big.endpoint, qps = false, max_batch_size = 50})
      local ok, res = pcall(function()
        local first = assert(c:register_devices{ProductKey = PK, Count = 120, journal = path})
        cut_after(path, "apply", 3)
        return {first, assert(c:resume{journal = path})}
      end)
      big:stop()
      assert(ok, res)
      local first, again = res[1], res[2]
      assert.are.equal("900719925474099302", tostring(first.ApplyIds[3]))
      assert.are.same(first.ApplyIds, again.ApplyIds)
      assert.are.same(sorted_names(first.Devices), sorted_names(again.Devices))
      assert.matches('"ApplyId":"900719925474099302"', read(path), 1, true)
    end)

    -- Runs a random job of `count` devices in a child process (client options `opts`, a
    -- Lua table constructor) and kills it (SIGKILL) once its journal holds `applies`
    -- events of kind `event` (default "apply").
    local function kill_job_after(opts, count, applies, event)
      local script = ([[
        local iot = require "aliyun.iot"
        local c = assert(iot.new{access_key_id = "testid", access_key_secret = "testsecret",
                                 endpoint = %q, %s})
        c:register_devices{ProductKey = %q, Count = %d, journal = %q}
      ]]):format(emu.endpoint, opts, PK, count, path)
      local file = tmpname() .. ".lua"
      write(file, script)
      local p = assert(io.popen(("echo $$; exec %s %s"):format(LUA, file)))
      local pid = p:read("*l")
      local core = require "aliyun.iot.core"
      local deadline = core.now() + 20
      while core.now() < deadline do
        local f = io.open(path, "rb")
        local text = f and f:read("*a") or ""
        if f then f:close() end
        local _, n = text:gsub('"event":"' .. (event or "apply") .. '"', "")
        if n >= applies then break end
        core.sleep(0.05)
      end
      os.execute("kill -9 " .. pid)
      p:close()
      os.remove(file)
    end

    it("finishes the job of a process killed while it waited", function()
      emu:set{async_delay = 2}
      kill_job_after("qps = false", 2100, 3)
      assert.is_nil(read(path):find('"event":"device"', 1, true))
      local c = client()
      emu:set{async_delay = 0}
      local res = assert(c:resume{journal = path})
      assert.are.equal(3, count_requests(emu, "BatchRegisterDevice"))
      assert.are.equal(2100, #res.Devices)
      assert_exact(res.Devices)
    end)

    it("finishes the job of a process killed in the backoff after a throttled submission", function()
      -- throttled with a wait the gateway names (x-acs-retry-after): the backoff is then
      -- surely long enough for the kill to land in it (a plain Throttling's full-jitter
      -- backoff may be a few ms, and a loaded machine kills the job in its next submission)
      emu:fault{kind = "retry_after", count = 3, action = "BatchRegisterDevice", delay = 2}
      kill_job_after("qps = false", 120, 1, "failed")
      -- killed in a backoff: every submission so far answered "not done" (a slow machine
      -- may have gone through more than one before the kill)
      local events = events_of(path)
      assert.are.equal("job", events[1])
      assert.is_true(#events >= 3 and #events % 2 == 1, table.concat(events, " "))
      for i = 2, #events, 2 do
        assert.are.same({"submit", "failed"}, {events[i], events[i + 1]})
      end
      local c = client()
      local res = assert(c:resume{journal = path})
      assert.are.equal(120, #res.Devices)
      assert_exact(res.Devices)
    end)

    it("refuses a journal another process holds, sending nothing, and resumes once it is free", function()
      assert(client():register_devices{ProductKey = PK, Count = 2500, journal = path})
      cut_after(path, "apply", 3)
      local before = #emu:requests()
      local core = require "aliyun.iot.core"
      local p = assert(io.popen(("echo $$; exec %s -e %q"):format(LUA, ([[
        local core = require "aliyun.iot.core"
        local lock = assert(core.lock_file(%q))
        print("locked"); io.stdout:flush()
        core.sleep(30)
      ]]):format(path))))
      local pid = p:read("*l")
      assert.are.equal("locked", p:read("*l"))
      local res, err = client():resume{journal = path}
      os.execute("kill -9 " .. pid)
      p:close()
      assert.is_nil(res)
      assert.are.equal("JournalError", err.code)
      assert.matches("journal " .. path .. " is in use by another process", err.message, 1, true)
      assert.are.equal(before, #emu:requests())
      local res2 = assert(client():resume{journal = path})
      assert.are.equal(2500, #res2.Devices)
      assert_exact(res2.Devices)
      -- the job released its lock at its end
      assert.is_truthy(core.lock_file(path))
    end)

    it("drops a torn last line before appending, so the journal stays readable", function()
      local c = client()
      assert(c:register_devices{ProductKey = PK, Count = 120, journal = path})
      local lines = lines_of(path)
      local i = #lines
      while not lines[i]:find('"event":"device"', 1, true) do i = i - 1 end
      -- mid-way through the last device line
      write(path, table.concat(lines, "\n", 1, i - 1) .. "\n" .. lines[i]:sub(1, 30))
      for _ = 1, 2 do
        local res = assert(c:resume{journal = path})
        assert.are.equal(120, #res.Devices)
        assert_exact(res.Devices)
      end
      assert.are.equal("done", events_of(path)[#events_of(path)])
    end)

    it("finishes the job of a process killed while it waited for a QPS slot: nothing was sent", function()
      -- the second chunk waits 5 s for its BatchRegisterDevice slot; the kill lands then
      kill_job_after("max_batch_size = 50, qps = {BatchRegisterDevice = 0.2}", 120, 1)
      local _, submits = read(path):gsub('"event":"submit"', "")
      assert.are.equal(1, submits)
      assert.are.equal(1, count_requests(emu, "BatchRegisterDevice"))
      local c = client{max_batch_size = 50}
      local res = assert(c:resume{journal = path})
      assert.are.equal(3, count_requests(emu, "BatchRegisterDevice"))
      assert.are.equal(120, #res.Devices)
      assert.are.equal(3, #res.ApplyIds)
      assert_exact(res.Devices)
    end)
  end)

  describe("deadline against a server that never answers", function()
    local srv, c
    setup(function()
      -- listening, so connections are accepted by the kernel, but never read or answered
      srv = assert(require("socket").bind("127.0.0.1", 0))
      local _, port = srv:getsockname()
      c = assert(iot.new{access_key_id = "testid", access_key_secret = "testsecret",
                         endpoint = ("http://127.0.0.1:%d/"):format(port), qps = false})
    end)
    teardown(function() srv:close() end)

    -- Runs f and returns its results and how long it took [s].
    local function timed(f)
      local t0 = c:clock()
      local res, err = f()
      return res, err, c:clock() - t0
    end

    -- The client's defaults (30 s timeout, 3 retries) would take 30 s and more.
    it("bounds register_devices' request in flight (an uncertain submission stays ambiguous)", function()
      local res, err, took = timed(function()
        return c:register_devices{ProductKey = PK, Count = 5, deadline = 1}
      end)
      assert.is_nil(res)
      assert.is_true(took < 3, took)
      assert.is_true(err.ambiguous)
      assert.matches("Timeout", tostring(err), 1, true)
    end)

    it("bounds wait_apply's status calls with ApplyTimeout", function()
      local res, err, took = timed(function()
        return c:wait_apply{ProductKey = PK, ApplyId = 4242, deadline = 1}
      end)
      assert.is_nil(res)
      assert.is_true(took < 3, took)
      assert.are.equal("ApplyTimeout", err.code)
      assert.are.equal(4242, err.apply_id)
    end)

    it("bounds register_named_devices' check with ApplyTimeout", function()
      local res, err, took = timed(function()
        return c:register_named_devices{ProductKey = PK, Devices = {"late-0001"}, deadline = 1}
      end)
      assert.is_nil(res)
      assert.is_true(took < 3, took)
      assert.are.equal("ApplyTimeout", err.code)
      assert.is_false(err.ambiguous)
    end)
  end)

  describe("pacing", function()
    it("keeps within the emulator's documented QPS limits: no throttling reaches the caller", function()
      emu:set{qps_limits = true}
      local c = client{qps = true, max_batch_size = 100}
      local res = assert(c:register_devices{ProductKey = PK, Count = 1200})
      assert_exact(res.Devices)
      local throttled = 0
      for _, r in ipairs(emu:requests()) do
        if r.code and r.code:find("^Throttling") then throttled = throttled + 1 end
      end
      assert.are.equal(throttled, c:stats().throttled)
      assert.are.equal(12, count_requests(emu, "BatchRegisterDevice",
        function(r) return r.status == 200 end))
    end)

    it("keeps within configured limits when the service enforces them", function()
      emu:set{qps_limits = {QueryPageByApplyId = 5}}
      local c = client{qps = {QueryPageByApplyId = 5}}
      local res = assert(c:register_devices{ProductKey = PK, Count = 400})
      assert_exact(res.Devices)
      local throttled = 0
      for _, r in ipairs(emu:requests()) do
        if r.code and r.code:find("^Throttling") then throttled = throttled + 1 end
      end
      assert.are.equal(throttled, c:stats().throttled)
    end)
  end)

  describe("under injected faults", function()
    local KINDS = {"503", "throttle", "reset", "reset_after", "truncate", "malformed"}
    local NAMED_ACTIONS = {"BatchCheckDeviceNames", "BatchRegisterDeviceWithApplyId",
                           "QueryBatchRegisterDeviceStatus", "QueryPageByApplyId"}
    local RANDOM_ACTIONS = {"BatchRegisterDevice", "QueryBatchRegisterDeviceStatus",
                            "QueryPageByApplyId"}

    for _, kind in ipairs(KINDS) do
      for _, action in ipairs(NAMED_ACTIONS) do
        it(("named devices: %s on %s loses and duplicates nothing"):format(kind, action), function()
          emu:fault{kind = kind, count = 2, action = action}
          local c = client{max_batch_size = 50}
          local names = names_list("f", 120)
          local res = assert(c:register_named_devices{ProductKey = PK, Devices = names})
          table.sort(names)
          assert.are.same(names, sorted_names(res.Devices))
          assert_exact(res.Devices)
        end)
      end
      for _, action in ipairs(RANDOM_ACTIONS) do
        local ambiguous = action == "BatchRegisterDevice" and kind ~= "503" and kind ~= "throttle"
        local what = ambiguous and "ends in the ambiguous error" or "loses and duplicates nothing"
        it(("random names: %s on %s %s"):format(kind, action, what), function()
          emu:fault{kind = kind, count = 1, action = action}
          local c = client{max_batch_size = 50}
          local res, err = c:register_devices{ProductKey = PK, Count = 120}
          if not ambiguous then
            assert(res, err)
            assert.are.equal(120, #res.Devices)
            assert_exact(res.Devices)
            return
          end
          assert.is_nil(res)
          assert.is_true(err.ambiguous)
          assert.matches("never arrived", tostring(err))
          -- Not re-sent: the one uncertain call, and no further chunk after it.
          assert.are.equal(1, count_requests(emu, "BatchRegisterDevice"))
          assert.are.same({}, err.apply_ids)
          local applies = emu:state().applies
          assert.are.equal(kind == "reset_after" and 1 or 0, #applies)
        end)
      end
    end

    it("a slow answer beyond the timeout is retried for a query", function()
      emu:fault{kind = "slow", delay = 1.5, count = 1, action = "QueryPageByApplyId"}
      local c = client{timeout = 0.5}
      local res = assert(c:register_devices{ProductKey = PK, Count = 60})
      assert_exact(res.Devices)
      -- The abandoned slow answer is still being served: wait until the emulator has
      -- logged it, or it would land in the next test's request log.
      local core = require "aliyun.iot.core"
      local deadline = core.now() + 5
      local function logged()
        for _, r in ipairs(emu:requests()) do if r.fault == "slow" then return true end end
      end
      while not logged() and core.now() < deadline do core.sleep(0.05) end
      assert.is_true(logged())
    end)

    it("an ambiguous chunk after good ones keeps their devices in the error", function()
      local c = client{max_batch_size = 50}
      local injected = false
      local res, err = c:register_devices{ProductKey = PK, Count = 150, on_progress = function(e)
        if e.phase == "register" and not injected then
          injected = true
          emu:fault{kind = "reset_after", count = 1, action = "BatchRegisterDevice"}
        end
      end}
      assert.is_nil(res)
      assert.is_true(err.ambiguous)
      assert.are.equal(1, #err.apply_ids)
      assert.are.equal(50, #err.devices)
      assert.are.equal(2, count_requests(emu, "BatchRegisterDevice"))
    end)
  end)

  describe("jobs that end early, errors and arguments (issue 11 section 4, issue 17)", function()
    local path
    before_each(function() path = tmpname() end)
    after_each(function() os.remove(path) end)

    it("releases the journal when on_progress raises, so resume in the same process works", function()
      local c = client()
      local function boom(e) if e.phase == "fetch" then error("stop here", 0) end end
      local ok, msg = pcall(c.register_devices, c, {ProductKey = PK, Count = 120, journal = path,
                                                   on_progress = boom})
      assert.is_false(ok)
      assert.are.equal("stop here", msg)
      -- resume's own on_progress raising releases it too
      ok, msg = pcall(c.resume, c, {journal = path, on_progress = boom})
      assert.is_false(ok)
      assert.are.equal("stop here", msg)
      local res = assert(c:resume{journal = path})
      assert.are.equal(120, #res.Devices)
      assert_exact(res.Devices)
    end)

    it("gives the job's error the result's names (ApplyIds, Devices, Invalid) and the snake_case aliases", function()
      local c = client()
      local _, err = c:register_named_devices{ProductKey = PK,
        Devices = {"race-001", "race-002", "race-003"}, on_progress = function(e)
          if e.phase == "check" then
            assert(c:register_device{ProductKey = PK, DeviceName = "race-002"})
          end
        end}
      assert.are.equal("CreateFailed", err.code)
      assert.are.equal(1, #err.ApplyIds)
      assert.are.same({"race-001", "race-003"}, sorted_names(err.Devices))
      assert.are.equal("race-002", err.Invalid[1].DeviceName)
      assert.are.equal(err.ApplyIds, err.apply_ids)
      assert.are.equal(err.Devices, err.devices)
      assert.are.equal(err.Invalid, err.invalid)
    end)

    it("raises on a wrong Lua type in every helper, sending nothing", function()
      local c = client()
      local cases = {
        {"register_devices", {ProductKey = 123, Count = 5}, "ProductKey"},
        {"register_devices", {ProductKey = PK, Count = {5}}, "Count"},
        {"register_devices", {ProductKey = PK, Count = true}, "Count"},
        {"register_devices", {ProductKey = PK, Count = 5, deadline = "5"}, "deadline"},
        {"register_devices", {ProductKey = PK, Count = 5, apply_timeout = "60"}, "apply_timeout"},
        {"register_named_devices", {ProductKey = 123, Devices = {"lamp_0001"}}, "ProductKey"},
        {"register_named_devices", {ProductKey = PK, Devices = "x"}, "Devices"},
        {"register_named_devices", {ProductKey = PK, Devices = {{}}}, "Devices[1].DeviceName"},
        {"register_named_devices", {ProductKey = PK, Devices = {{DeviceName = 5}}}, "Devices[1].DeviceName"},
        {"register_named_devices", {ProductKey = PK, Devices = {{DeviceName = "lamp_0001", DeviceNickname = 5}}},
         "Devices[1].DeviceNickname"},
        {"wait_apply", {ProductKey = {PK}, ApplyId = 1}, "ProductKey"},
        {"wait_apply", {ProductKey = PK, ApplyId = {1}}, "ApplyId"},
        {"wait_apply", {ProductKey = PK, ApplyId = 1, journal = path}, "only register_devices"},
        {"apply_devices", {ProductKey = PK, ApplyId = 1, on_progress = print}, "iterator"},
        {"apply_devices", {ProductKey = PK, ApplyId = 1, journal = path}, "journal"},
        {"resume", {journal = 5}, "journal"},
      }
      for _, case in ipairs(cases) do
        local ok, msg = pcall(c[case[1]], c, case[2])
        assert.is_false(ok, case[1] .. " " .. case[3])
        assert.truthy(tostring(msg):find(case[3], 1, true), tostring(msg))
        assert.is_nil(tostring(msg):find("table index is nil", 1, true))
      end
      assert.are.same({}, emu:requests())
    end)

    it("returns InvalidParameter for a bad value of the right type, sending nothing", function()
      local c = client()
      local cases = {
        {"register_devices", {ProductKey = "bad pk", Count = 5}, "ProductKey"},
        {"register_devices", {ProductKey = ("k"):rep(65), Count = 5}, "ProductKey"},
        {"register_devices", {ProductKey = "pk\tx", Count = 5}, "ProductKey"},
        {"register_devices", {ProductKey = PK, Count = 5, deadline = math.huge}, "deadline"},
        {"register_devices", {ProductKey = PK, Count = 5, deadline = 0 / 0}, "deadline"},
        {"register_devices", {ProductKey = PK, Count = 5, apply_timeout = -1}, "apply_timeout"},
        {"register_named_devices", {ProductKey = "", Devices = {"lamp_0001"}}, "ProductKey"},
        {"register_named_devices", {ProductKey = PK, Devices = {}}, "Devices"},
        {"wait_apply", {ProductKey = PK, ApplyId = "abc"}, "ApplyId"},
        {"wait_apply", {ProductKey = PK, ApplyId = 1, apply_timeout = 0}, "apply_timeout"},
        {"resume", {journal = path, deadline = -1}, "deadline"},
      }
      for _, case in ipairs(cases) do
        local res, err = c[case[1]](c, case[2])
        assert.is_nil(res)
        assert.are.equal("InvalidParameter", err.code, tostring(err))
        assert.are.equal(case[3], err.parameter, tostring(err))
      end
      for _, args in ipairs{{ProductKey = PK, ApplyId = "abc"}, {ProductKey = PK, ApplyId = 1, page_size = 51},
                            {ProductKey = "a b", ApplyId = 1}} do
        local seen = {}
        for dev, err in c:apply_devices(args) do seen[#seen + 1] = {dev, err} end
        assert.are.equal(1, #seen)
        assert.are.equal("InvalidParameter", seen[1][2].code)
      end
      local _, err = c:call("QueryBatchRegisterDeviceStatus", {ProductKey = "bad pk", ApplyId = 1})
      assert.are.equal("ProductKey", err.parameter)
      assert.are.same({}, emu:requests())
    end)

    it("checks every helper's arguments by its schema in aliyun.iot.batch.args (one options rule)", function()
      local args = require "aliyun.iot.batch.args"
      local valid = {
        wait_apply = {ProductKey = PK, ApplyId = 1}, apply_devices = {ProductKey = PK, ApplyId = "1"},
        register_devices = {ProductKey = PK, Count = "5"},
        register_named_devices = {ProductKey = PK, Devices = {"lamp_0001"}},
        check_device_names = {ProductKey = PK, Devices = {"lamp_0001"}},
        resume = {journal = path}, product_devices = {ProductKey = PK},
      }
      local function copy(t, drop)
        local c = {}
        for k, v in pairs(t) do if k ~= drop then c[k] = v end end
        return c
      end
      local samples = {true, {}, print, 5, "x"}
      for helper, schema in pairs(args.SCHEMAS) do
        assert.are.equal(valid[helper], args.check(valid[helper], helper, 1), helper)
        for name, entry in pairs(schema) do
          -- a value of a Lua type the entry does not name raises, naming the option
          for _, v in ipairs(samples) do
            if not entry.type:find(type(v), 1, true) then
              local a = copy(valid[helper])
              a[name] = v
              local ok, msg = pcall(args.check, a, helper, 1)
              assert.is_false(ok, helper .. " " .. name)
              assert.truthy(tostring(msg):find("'" .. name .. "'", 1, true), tostring(msg))
              break
            end
          end
          -- a required one missing is InvalidParameter naming it
          if entry.required then
            local res, err = args.check(copy(valid[helper], name), helper, 1)
            assert.is_nil(res)
            assert.are.equal("InvalidParameter", err.code)
            assert.are.equal(name, err.parameter)
          end
        end
        assert.has_error(function() args.check("x", helper, 1) end)
      end
      -- the documented conveniences and limits
      assert.truthy(args.check({ProductKey = PK, Count = 10000000}, "register_devices", 1))
      assert.is_nil(args.check({ProductKey = PK, Count = "10000001"}, "register_devices", 1))
      assert.is_nil(args.check({ProductKey = PK, Count = 2.5}, "register_devices", 1))
      assert.truthy(args.check({journal = path, deadline = 30 * 86400}, "resume", 1))
      assert.is_nil(args.check({journal = path, deadline = 30 * 86400 + 1}, "resume", 1))
      assert.is_nil(args.check({ProductKey = PK, ApplyId = 1, phase = "CHECK"}, "wait_apply", 1))
      assert.has_error(function()
        args.check({ProductKey = PK, Devices = {"lamp_0001", nil, "lamp_0003"}}, "register_named_devices", 1)
      end)
    end)

    it("takes Count as a digit string, and a deadline in apply_devices", function()
      local c = client()
      local res = assert(c:register_devices{ProductKey = PK, Count = "5", deadline = 30})
      assert.are.equal(5, #res.Devices)
      local n = 0
      for dev, err in c:apply_devices{ProductKey = PK, ApplyId = res.ApplyIds[1], deadline = 30} do
        assert(dev, err)
        n = n + 1
      end
      assert.are.equal(5, n)
    end)

    it("checks nicknames by the documented rule before sending anything", function()
      local c = client()
      local bad = {"abc", "a b c d", "lamp-one", ("灯"):rep(33), "lamp\0x", "Lamp, kitchen"}
      local list = {}
      for i, nick in ipairs(bad) do list[i] = {DeviceName = ("nick_%04d"):format(i), DeviceNickname = nick} end
      local res, err = c:register_named_devices{ProductKey = PK, Devices = list}
      assert.is_nil(res)
      assert.are.equal("InvalidDeviceName", err.code)
      assert.are.equal(#bad, #err.Invalid)
      for _, inv in ipairs(err.Invalid) do assert.matches("DeviceNickname", inv.ErrorMsg, 1, true) end
      local _, rerr = c:call("RegisterDevice", {ProductKey = PK, DeviceName = "nick_9999", Nickname = "a b"})
      assert.are.equal("Nickname", rerr.parameter)
      _, rerr = c:call("BatchCheckDeviceNames", {ProductKey = PK,
        DeviceNameList = {{DeviceName = "nick_9998", DeviceNickname = "abc"}}})
      assert.are.equal("InvalidParameter", rerr.code)
      assert.are.same({}, emu:requests())
      -- and lets every valid one through: 2 Chinese characters are 4, kana, 64 wide, _
      local good = {"灯泡", "ランプ", ("灯"):rep(32), "lamp_1", ("a"):rep(64), "Lamp_台灯"}
      list = {}
      for i, nick in ipairs(good) do list[i] = {DeviceName = ("good_%04d"):format(i), DeviceNickname = nick} end
      res = assert(c:register_named_devices{ProductKey = PK, Devices = list})
      assert.are.equal(#good, #res.Devices)
    end)

    it("registers valid names that start with - or @ (and reads them back)", function()
      local c = client()
      local names = {"-lamp-001", "@lamp-002", "lamp.a:b@c"}
      local res = assert(c:register_named_devices{ProductKey = PK, Devices = names})
      table.sort(names)
      assert.are.same(names, sorted_names(res.Devices))
    end)

    it("never repeats a page request when the client's max_retries is 0", function()
      local c = client{max_retries = 0}
      local injected = false
      local res, err = c:register_devices{ProductKey = PK, Count = 500, on_progress = function(e)
        if e.phase == "create" and e.done and e.done > 0 and not injected then
          injected = true -- after the first page: the next page request fails once
          emu:fault{kind = "503", count = 1, action = "QueryPageByApplyId"}
        end
      end}
      assert.is_nil(res)
      assert.are.equal("ServiceUnavailable", err.code)
      assert.are.equal(10, count_requests(emu, "QueryPageByApplyId"))
    end)
  end)

  describe("XML", function()
    for _, style in ipairs{"async", "sync"} do
      it("runs both flows end to end with Format=XML (" .. style .. " invalid names)", function()
        emu:set{invalid_names = style}
        local c = client{format = "XML", max_batch_size = 50}
        local res = assert(c:register_devices{ProductKey = PK, Count = 120})
        assert.are.equal(120, #res.Devices)
        assert(c:register_device{ProductKey = PK, DeviceName = "xml-taken"})
        local named = assert(c:register_named_devices{ProductKey = PK, skip_invalid = true,
          Devices = {"xml-00001", "xml-taken", {DeviceName = "xml-00002", DeviceNickname = "lamp2"}}})
        assert.are.same({"xml-00001", "xml-00002"}, sorted_names(named.Devices))
        assert.are.equal("xml-taken", named.Invalid[1].DeviceName)
        local all = {}
        for _, d in ipairs(res.Devices) do all[#all + 1] = d end
        for _, d in ipairs(named.Devices) do all[#all + 1] = d end
        all[#all + 1] = {ProductKey = PK, DeviceName = "xml-taken", DeviceSecret = "", IotId = ""}
        assert_exact(all)
        for _, r in ipairs(emu:requests()) do assert.are.equal("XML", r.params.Format) end
      end)
    end
  end)
end)
