-- Re-runs that converge (issue 12 §3), against the emulator over loopback: named jobs with
-- existing = "fail" | "skip" | "adopt" (refused names confirmed with BatchQueryDeviceDetail,
-- never by message text), the per-device Report, client:check_device_names, journal and
-- resume of adopted devices; and the CLI: --existing, --report, --dry-run, check.
local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"
local journal = require "aliyun.iot.journal"
local cjson = require "cjson"
local shell = require "spec.support.shell"

local PK = "a1TestPK001"
local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))
local q, read, write, sh = shell.quote, shell.read, shell.write, shell.capture

local emu

local function client(opts)
  local o = {access_key_id = "testid", access_key_secret = "testsecret",
             endpoint = emu.endpoint, qps = false}
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(iot.new(o))
end

local function count(action, pred)
  local n = 0
  for _, r in ipairs(emu:requests()) do
    if r.action == action and (not pred or pred(r)) then n = n + 1 end
  end
  return n
end

local function device_count()
  local p = emu:state().products[PK]
  return p and p.devices or 0
end

local function by_name(list)
  local t = {}
  for _, d in ipairs(list) do t[d.DeviceName] = d end
  return t
end

local function outcomes_of(report)
  local t = {}
  for i, r in ipairs(report) do t[i] = r.DeviceName .. "=" .. r.outcome end
  return t
end

local function names(prefix, n)
  local t = {}
  for i = 1, n do t[i] = ("%s-%04d"):format(prefix, i) end
  return t
end

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

describe("named jobs run again #existing", function()
  setup(function() emu = emulator.start{async_delay = 0} end)
  teardown(function() emu:stop() end)
  before_each(function()
    emu:reset()
    emu:set{async_delay = 0, qps_limits = false, invalid_names = "async", max_count = 10000}
  end)

  for _, style in ipairs{"async", "sync"} do
    describe("(invalid names " .. style .. ")", function()
      before_each(function() emu:set{invalid_names = style} end)

      it("adopt: the same names twice give the same devices, in the order asked, creating nothing", function()
        local c = client()
        local list = {"old-0002", "old-0001", "old-0003"}
        local first = assert(c:register_named_devices{ProductKey = PK, Devices = list})
        local before, registers = device_count(), count("BatchRegisterDeviceWithApplyId")
        local again = assert(c:register_named_devices{ProductKey = PK, Devices = list,
                                                      existing = "adopt"})
        assert.are.equal(before, device_count())
        assert.are.equal(registers, count("BatchRegisterDeviceWithApplyId"))
        assert.are.same(first.Devices, again.Devices)
        assert.are.same({"old-0002", "old-0001", "old-0003"},
          {again.Devices[1].DeviceName, again.Devices[2].DeviceName, again.Devices[3].DeviceName})
        assert.are.same({"old-0002", "old-0001", "old-0003"}, again.Existing)
        assert.are.same({}, again.Invalid)
        for i, r in ipairs(again.Report) do
          assert.are.equal(list[i], r.DeviceName)
          assert.are.equal("existing", r.outcome)
          assert.is_string(r.RequestId)
          assert.is_nil(r.DeviceSecret)
        end
        for i, r in ipairs(first.Report) do
          assert.are.same({list[i], "created"}, {r.DeviceName, r.outcome})
          assert.is_string(r.ApplyId)
        end
      end)

      it("a mixed list (existing, new, locally invalid) under fail, skip and adopt", function()
        local c = client()
        local old = assert(c:register_named_devices{ProductKey = PK, Devices = {"mix-old1", "mix-old2"}})
        local secret = by_name(old.Devices)
        local list = {"mix-old1", "mix-new1", "bad name", "mix-old2", "mix-new1"}
        -- fail (the default): the existing names are invalid, nothing registered
        local n0 = device_count()
        local res, err = c:register_named_devices{ProductKey = PK, Devices = list, skip_invalid = false}
        assert.is_nil(res)
        assert.are.equal("InvalidDeviceName", err.code)
        assert.are.equal(n0, device_count())
        assert.are.equal(#list, #err.Report)
        -- locally invalid names end it before anything is sent: the others are failed
        assert.are.same({"mix-old1=failed", "mix-new1=failed", "bad name=invalid",
                         "mix-old2=failed", "mix-new1=invalid"}, outcomes_of(err.Report))
        _, err = c:register_named_devices{ProductKey = PK, Devices = {"mix-old1", "mix-new0"}}
        assert.are.equal("InvalidDeviceName", err.code)
        assert.are.same({"mix-old1=invalid", "mix-new0=failed"}, outcomes_of(err.Report))
        assert.are.equal(0, count("BatchQueryDeviceDetail"))
        -- skip: the existing ones left out, reported as existing, no error for them
        res = assert(c:register_named_devices{ProductKey = PK, Devices = list, skip_invalid = true,
                                              existing = "skip"})
        assert.are.same({"mix-new1"}, {res.Devices[1].DeviceName, res.Devices[2]})
        assert.are.same({"mix-old1", "mix-old2"}, res.Existing)
        assert.are.equal(2, #res.Invalid)
        assert.are.same({"mix-old1=existing", "mix-new1=created", "bad name=invalid",
                         "mix-old2=existing", "mix-new1=invalid"}, outcomes_of(res.Report))
        -- a finished journal read again tells the same
        local path = tmpname()
        local first = assert(c:register_named_devices{ProductKey = PK, Devices = list,
          skip_invalid = true, existing = "skip", journal = path})
        local again = assert(c:resume{journal = path})
        assert.are.same(first.Report, again.Report)
        assert.are.same(first.Existing, again.Existing)
        assert.are.same(first.Devices, again.Devices)
        os.remove(path)
        -- adopt: the existing ones with their secrets, in the order asked
        local n1 = device_count()
        res = assert(c:register_named_devices{ProductKey = PK, Devices = list, skip_invalid = true,
                                              existing = "adopt"})
        assert.are.equal(n1, device_count())
        assert.are.same({"mix-old1", "mix-new1", "mix-old2"},
          {res.Devices[1].DeviceName, res.Devices[2].DeviceName, res.Devices[3].DeviceName})
        assert.are.equal(secret["mix-old1"].DeviceSecret, res.Devices[1].DeviceSecret)
        assert.are.equal(secret["mix-old2"].IotId, res.Devices[3].IotId)
        assert.are.same({"mix-old1=existing", "mix-new1=existing", "bad name=invalid",
                         "mix-old2=existing", "mix-new1=invalid"}, outcomes_of(res.Report))
      end)
    end)
  end

  it("a name taken between check and registration (CREATE_FAILED) is adopted, or fails the job", function()
    local c, other = client(), client()
    local taken
    local function grab(e)
      if e.phase == "check" and not taken then
        taken = assert(other:register_device{ProductKey = PK, DeviceName = "race-0002"}).Data
      end
    end
    local res = assert(c:register_named_devices{ProductKey = PK, existing = "adopt",
      Devices = {"race-0001", "race-0002", "race-0003"}, on_progress = grab})
    local got = by_name(res.Devices)
    assert.are.equal(taken.DeviceSecret, got["race-0002"].DeviceSecret)
    assert.are.same({"race-0001=created", "race-0002=existing", "race-0003=created"},
      outcomes_of(res.Report))
    taken = nil
    local _, err = c:register_named_devices{ProductKey = PK, on_progress = function(e)
      if e.phase == "check" and not taken then
        taken = assert(other:register_device{ProductKey = PK, DeviceName = "race-0005"}).Data
      end
    end, Devices = {"race-0004", "race-0005"}}
    assert.are.equal("CreateFailed", err.code)
    assert.are.same({"race-0004=created", "race-0005=failed"}, outcomes_of(err.Report))
    assert.are.equal("CreateFailed", err.Report[2].code)
  end)

  it("a registration refused with AlreadyExistedDeviceName: the existing name adopted, the rest checked again", function()
    local other = client()
    local refused, grab = 0, "ref-0002"
    local c = client{transport = function(req)
      local what = (req.url or "") .. (req.body or "")
      if refused == 0 and what:find("Action=BatchRegisterDeviceWithApplyId", 1, true) then
        refused = 1
        -- the name was taken after its check; the service refuses the whole registration
        assert(other:register_device{ProductKey = PK, DeviceName = grab})
        return {status = 200, headers = {["content-type"] = "application/json"},
                body = '{"Success":false,"Code":"iot.device.AlreadyExistedDeviceName",' ..
                       '"ErrorMessage":"The device name already exists.","RequestId":"R-1"}'}
      end
      return iot.transports.curl(req)
    end}
    local res = assert(c:register_named_devices{ProductKey = PK, existing = "adopt",
      Devices = {"ref-0001", "ref-0002", "ref-0003"}})
    assert.are.equal(1, refused)
    assert.are.same({"ref-0001=created", "ref-0002=existing", "ref-0003=created"},
      outcomes_of(res.Report))
    assert.are.equal(3, #res.Devices)
    assert.are.equal(3, device_count())
    -- without adopt the refusal ends the job, as before
    refused, grab = 0, "ref-0005"
    local _, err = c:register_named_devices{ProductKey = PK, Devices = {"ref-0004", "ref-0005"}}
    assert.are.equal("iot.device.AlreadyExistedDeviceName", err.code)
    assert.are.same({"ref-0004=unknown", "ref-0005=unknown"}, outcomes_of(err.Report))
  end)

  it("trusts no BatchQueryDeviceDetail answer: a device not asked for, a bad secret, a wrong type", function()
    assert(client():register_named_devices{ProductKey = PK, Devices = {"hos-0001"}})
    local bodies = {
      '{"RequestId":"R","Success":true,"Data":{"Data":[{"DeviceName":"someone-else",' ..
        '"DeviceSecret":"abc","IotId":"def","ProductKey":"' .. PK .. '"}]}}',
      '{"RequestId":"R","Success":true,"Data":{"Data":[{"DeviceName":"hos-0001",' ..
        '"DeviceSecret":"a\\nb","IotId":"def"}]}}',
      '{"RequestId":"R","Success":true,"Data":{"Data":[{"DeviceName":"hos-0001",' ..
        '"DeviceSecret":"abc","IotId":"def","ProductKey":"other"}]}}',
      '{"RequestId":"R","Success":true,"Data":{"Data":"many"}}',
      -- one name listed twice with two secrets: which one is the device's cannot be told
      '{"RequestId":"R","Success":true,"Data":{"Data":[{"DeviceName":"hos-0001",' ..
        '"DeviceSecret":"abc","IotId":"def"},{"DeviceName":"hos-0001",' ..
        '"DeviceSecret":"xyz","IotId":"def"}]}}',
      '{"RequestId":"R","Success":true,"Data":7}',
    }
    for _, body in ipairs(bodies) do
      local path = tmpname()
      local c = client{transport = function(req)
        if ((req.url or "") .. (req.body or "")):find("Action=BatchQueryDeviceDetail", 1, true) then
          return {status = 200, headers = {["content-type"] = "application/json"}, body = body}
        end
        return iot.transports.curl(req)
      end}
      local res, err = c:register_named_devices{ProductKey = PK, Devices = {"hos-0001"},
                                                existing = "adopt", journal = path}
      assert.is_nil(res, body)
      assert.are.equal("InvalidResponse", err.code, body)
      assert.are.equal("BatchQueryDeviceDetail", err.action)
      assert.is_nil(read(path):find('"event":"existing"', 1, true))
      -- refused by the service, never looked up: not known to be invalid (a resume settles it)
      assert.are.same({"hos-0001=unknown"}, outcomes_of(err.Report))
      os.remove(path)
    end
  end)

  it("a job stopped before its look-up reports the refused names unknown, and a resume settles them", function()
    assert(client():register_named_devices{ProductKey = PK, Devices = {"lk-0001", "lk-0002"}})
    local n = device_count()
    for _, mode in ipairs{"adopt", "skip"} do
      local path = tmpname()
      emu:fault{kind = "503", count = 1000, action = "BatchQueryDeviceDetail"}
      local _, err = client{max_retries = 0}:register_named_devices{ProductKey = PK,
        Devices = {"lk-0001", "lk-0002", "bad name"}, existing = mode, skip_invalid = true,
        journal = path}
      assert.are.equal("ServiceUnavailable", err.code)
      local rep = err.Report
      assert.are.same({"lk-0001=unknown", "lk-0002=unknown", "bad name=invalid"}, outcomes_of(rep))
      assert.are.equal("ServiceUnavailable", rep[1].code)
      assert.truthy(rep[1].message:find("BatchQueryDeviceDetail", 1, true), rep[1].message)
      assert.is_string(rep[1].ApplyId)
      emu:clear_faults()
      local res = assert(client():resume{journal = path})
      assert.are.same({"lk-0001=existing", "lk-0002=existing", "bad name=invalid"},
        outcomes_of(res.Report))
      assert.are.equal(n, device_count())
      os.remove(path)
    end
  end)

  it("a server's ErrorMsg reaches --report and check's JSON with no terminal control and as UTF-8", function()
    -- the check's verdict carries C1 CSI, a right-to-left override, an OSC title sequence
    -- and a byte that is no UTF-8; the library keeps the text, the CLI's writers escape it
    local msg = '\\u009b2J\\u202eevil\\u001b]0;x\\u0007 \255 done'
    local c = client{transport = function(req)
      if ((req.url or "") .. (req.body or "")):find("Action=QueryBatchRegisterDeviceStatus", 1, true) then
        return {status = 200, headers = {["content-type"] = "application/json"}, body =
          '{"RequestId":"R","Success":true,"Data":{"Status":"CHECK_FAILED","InvalidDetailList":' ..
          '{"invalidDetailList":[{"DeviceName":"esc-0001","ErrorMsg":"' .. msg .. '"}]}}}'}
      end
      return iot.transports.curl(req)
    end}
    local _, err = c:register_named_devices{ProductKey = PK, Devices = {"esc-0001"}}
    assert.are.equal("InvalidDeviceName", err.code)
    local rec = err.Report[1]
    assert.are.equal("invalid", rec.outcome)
    assert.truthy(rec.message:find("\194\155", 1, true)) -- the library keeps it as sent
    local report_line = require("aliyun.iot.cli.outcomes").line(rec)
    local check_json = require("aliyun.iot.cli.json").json({Invalid = err.Invalid}, {"Invalid"})
    for _, text in ipairs{report_line, check_json} do
      assert.is_nil(text:find("[\128-\255]"), text) -- C1, bidi, the stray byte: all escaped
      assert.is_nil(text:find("[%z\1-\9\11-\31\127]"), text)
      assert.truthy(text:find("\\u009b2J\\u202eevil", 1, true), text)
      assert.truthy(text:find("\\ufffd done", 1, true), text)
    end
    assert.are.equal("esc-0001", cjson.decode(report_line).DeviceName)
    assert.are.equal("esc-0001", cjson.decode(check_json).Invalid[1].DeviceName)
  end)

  it("looks names up 100 at a time, within BatchQueryDeviceDetail's 5 calls a second", function()
    local list = names("many", 250)
    assert(client():register_named_devices{ProductKey = PK, Devices = list})
    emu:set{qps_limits = {BatchQueryDeviceDetail = 5}}
    local c = client{qps = true}
    local res = assert(c:register_named_devices{ProductKey = PK, Devices = list, existing = "adopt"})
    assert.are.equal(250, #res.Devices)
    assert.are.equal(3, count("BatchQueryDeviceDetail"))
    for _, r in ipairs(emu:requests()) do
      if r.action == "BatchQueryDeviceDetail" then
        assert.is_nil(r.params["DeviceName.101"])
        assert.is_string(r.params["DeviceName.1"])
      end
    end
    assert.are.equal(0, c:stats().throttled)
  end)

  it("journals adopted devices: a resume finishes without looking them up again", function()
    local c = client()
    assert(c:register_named_devices{ProductKey = PK, Devices = {"jr-0001", "jr-0002"}})
    local path = tmpname()
    local ok = pcall(c.register_named_devices, c, {ProductKey = PK, existing = "adopt",
      Devices = {"jr-0001", "jr-0003", "jr-0002"}, journal = path,
      on_progress = function(e) if e.phase == "register" then error("stop here") end end})
    assert.is_false(ok)
    local records = assert(journal.read(path))
    assert.are.equal("adopt", records[1].existing)
    local adopted = 0
    for _, r in ipairs(records) do if r.event == "existing" then adopted = adopted + 1 end end
    assert.are.equal(2, adopted)
    local lookups = count("BatchQueryDeviceDetail")
    local res = assert(c:resume{journal = path})
    assert.are.same({"jr-0001", "jr-0003", "jr-0002"},
      {res.Devices[1].DeviceName, res.Devices[2].DeviceName, res.Devices[3].DeviceName})
    assert.are.same({"jr-0001=existing", "jr-0003=created", "jr-0002=existing"}, outcomes_of(res.Report))
    assert.are.equal(lookups, count("BatchQueryDeviceDetail"))
    -- a finished journal gives the same again, without a request
    local n = #emu:requests()
    assert.are.same(res.Devices, assert(c:resume{journal = path}).Devices)
    assert.are.equal(n, #emu:requests())
    -- the existing event is held to the journal's rules like any other
    local text = read(path)
    local bad = tmpname()
    -- one event changed as decoded data (the encoder's key order is its own)
    local function with(event, field, value)
      local out, done = {}, false
      for line in text:gmatch("([^\n]*)\n") do
        local r = cjson.decode(line)
        if r.event == event and not done then
          r[field], done = value, true
          line = cjson.encode(r)
        end
        out[#out + 1] = line
      end
      return table.concat(out, "\n") .. "\n"
    end
    write(bad, with("existing", "RequestId", "a b"))
    local _, _, jerr = journal.open(bad)
    assert.are.equal("JournalError", jerr.code)
    assert.truthy(jerr.message:find("RequestId", 1, true), jerr.message)
    write(bad, with("job", "existing", "fail"))
    local _, rerr = c:resume{journal = bad}
    assert.are.equal("JournalError", rerr.code)
    os.remove(path)
    os.remove(bad)
  end)

  it("on_report hears each requested position once, as the job decides it", function()
    local c = client()
    assert(c:register_named_devices{ProductKey = PK, Devices = {"rep-0001"}})
    local heard = {}
    local res = assert(c:register_named_devices{ProductKey = PK, existing = "skip", skip_invalid = true,
      Devices = {"rep-0001", "rep-0002", "x", "rep-0002"},
      on_report = function(rec, pos)
        assert.is_nil(heard[pos])
        heard[pos] = rec.outcome
      end})
    assert.are.same({"existing", "created", "invalid", "invalid"}, heard)
    assert.are.equal(4, #res.Report)
    assert.has_error(function() c:register_devices{ProductKey = PK, Count = 1, on_report = print} end)
    local _, err = c:register_named_devices{ProductKey = PK, Devices = {"rep-0003"}, existing = "keep"}
    assert.are.equal("existing", err.parameter)
  end)

  it("check_device_names asks the service and registers nothing", function()
    local c = client()
    assert(c:register_named_devices{ProductKey = PK, Devices = {"chk-0001"}})
    local n, registers = device_count(), count("BatchRegisterDeviceWithApplyId")
    local res = assert(c:check_device_names{ProductKey = PK,
      Devices = {"chk-0001", "chk-0002", "bad name", "chk-0003"}})
    assert.are.same({"chk-0002", "chk-0003"}, res.Valid)
    assert.are.same({"chk-0001"}, res.Existing)
    assert.are.same({"bad name"}, {res.Invalid[1].DeviceName, res.Invalid[2]})
    assert.are.equal(n, device_count())
    assert.are.equal(registers, count("BatchRegisterDeviceWithApplyId"))
  end)
end)

describe("aliyun-iot: --existing, --report, --dry-run, check #existing", function()
  local tmp
  local BIN = os.getenv("PWD") .. "/bin/aliyun-iot"

  local function run(args, env, no_product_key)
    local out, err = tmp .. "/stdout", tmp .. "/stderr"
    local code = sh("cd " .. q(tmp) .. " && env -u LUA_PATH -u LUA_CPATH HOME=" .. q(tmp) ..
      " TMPDIR=" .. q(tmp) .. " ALIBABA_CLOUD_ACCESS_KEY_ID=testid" ..
      " ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret TERM=dumb " .. (env or "") .. " " .. LUA .. " " .. q(BIN) ..
      " --endpoint " .. emu.endpoint .. (no_product_key and "" or " --product-key " .. PK) ..
      " " .. args ..
      " < /dev/null > " .. q(out) .. " 2> " .. q(err) .. "; echo $?")
    local stderr = read(err)
    assert.is_nil(stderr:find("testsecret", 1, true))
    return tonumber(code), read(out), stderr
  end

  local function report_lines(path)
    local out = {}
    for line in read(path):gmatch("([^\n]*)\n") do out[#out + 1] = cjson.decode(line) end
    return out
  end

  setup(function()
    emu = emulator.start{async_delay = 0}
    tmp = tmpname()
    assert(os.execute("mkdir -p " .. q(tmp)))
  end)
  teardown(function()
    emu:stop()
    os.execute("rm -rf " .. q(tmp))
  end)
  before_each(function()
    emu:reset()
    emu:set{async_delay = 0, qps_limits = false, invalid_names = "async"}
  end)

  it("a names file run twice with --existing adopt: identical outputs, nothing created again", function()
    write(tmp .. "/names", "twice-0001\ntwice-0002,Lamp\ntwice-0003\n")
    local code, _, err = run("register --names-file names --existing adopt --out one.csv --report one.jsonl")
    assert.are.equal(0, code, err)
    local n = emu:state().products[PK].devices
    code, _, err = run("register --names-file names --existing adopt --out two.csv --report two.jsonl")
    assert.are.equal(0, code, err)
    assert.truthy(err:find("3 devices existed already (adopted", 1, true), err)
    assert.are.equal(n, emu:state().products[PK].devices)
    assert.are.equal(read(tmp .. "/one.csv"), read(tmp .. "/two.csv"))
    assert.are.equal("600", (sh("stat -c %a " .. q(tmp .. "/two.jsonl")):gsub("%s+$", "")))
    local one, two = report_lines(tmp .. "/one.jsonl"), report_lines(tmp .. "/two.jsonl")
    assert.are.equal(3, #one)
    assert.are.equal(3, #two)
    for _, r in ipairs(one) do assert.are.equal("created", r.outcome) assert.is_string(r.ApplyId) end
    for _, r in ipairs(two) do assert.are.equal("existing", r.outcome) assert.is_string(r.RequestId) end
    -- no secret in a report
    for _, line in ipairs(one) do assert.is_nil(line.DeviceSecret) end
    for secret in read(tmp .. "/one.csv"):gmatch(",([%w]+),[%w]+\r\n") do
      assert.is_nil(read(tmp .. "/one.jsonl"):find(secret, 1, true))
    end
  end)

  it("--report: one line per requested name with its outcome; never an existing file", function()
    assert(client():register_named_devices{ProductKey = PK, Devices = {"rpt-0001"}})
    write(tmp .. "/mixed", "rpt-0001\nrpt-0002\nbad name\nrpt-0002\n")
    local code, out, err = run("register --names-file mixed --existing skip --skip-invalid --report mixed.jsonl")
    assert.are.equal(3, code, err)
    local lines = report_lines(tmp .. "/mixed.jsonl")
    local got = {}
    for _, r in ipairs(lines) do got[#got + 1] = r.DeviceName .. "=" .. r.outcome end
    table.sort(got)
    assert.are.same({"bad name=invalid", "rpt-0001=existing", "rpt-0002=created", "rpt-0002=invalid"}, got)
    assert.truthy(out:find("rpt-0002", 1, true))
    assert.is_nil(out:find("rpt-0001", 1, true))
    -- an existing file is never overwritten: refused before any request
    write(tmp .. "/taken.jsonl", "mine\n")
    local before = #emu:requests()
    code, out, err = run("register --names-file mixed --skip-invalid --report taken.jsonl")
    assert.are.equal("", out)
    assert.are.equal(2, code)
    assert.truthy(err:find("exists", 1, true), err)
    assert.are.equal("mine\n", read(tmp .. "/taken.jsonl"))
    assert.are.equal(before, #emu:requests())
  end)

  it("--report is refused where it cannot be kept, and a refused run leaves no file behind", function()
    write(tmp .. "/rn", "rn-0001\nrn-0002\n")
    write(tmp .. "/exists.txt", "mine\n")
    local function leftovers()
      local t = {}
      for f in sh("ls -A " .. q(tmp)):gmatch("[^\n]+") do
        if f:find("%.tmp$") or f:find("^rn%.") or f:find("^s%.state$") then t[#t + 1] = f end
      end
      return t
    end
    local cases = {
      -- random names have no requested names to report (was a Lua error, exit 1)
      {"register --count 2 --report rn.jsonl --out rn.csv", "--report applies to --names-file only"},
      -- '-' is no file (it used to create one named "-")
      {"register --names-file rn --report - --out rn.csv", "--report needs a file name"},
      -- the report and the journal the job is about to create
      {"register --names-file rn --report s.state --state s.state --out rn.csv",
       "--report s.state is the same file as --state s.state"},
      -- the esp-idf config file beside the values file
      {"register --names-file rn --format esp-idf --out rn.csv --report rn.config.csv",
       "--out's esp-idf config file rn.config.csv is the same file as --report rn.config.csv"},
      {"register --names-file rn --format esp-idf --out rn.csv --state rn.config.csv",
       "is the same file as --state rn.config.csv"},
      -- refused once the output (and the esp-idf config file) were made: both removed
      {"register --names-file rn --out rn.csv --report exists.txt", "--report exists.txt exists"},
      {"register --names-file rn --format esp-idf --out rn.csv --report exists.txt",
       "--report exists.txt exists"},
    }
    for _, c in ipairs(cases) do
      local code, out, err = run(c[1])
      assert.are.equal(2, code, c[1] .. "\n" .. err)
      assert.truthy(err:find(c[2], 1, true), err)
      assert.is_nil(err:find("internal error", 1, true), err)
      assert.are.equal("", out)
      assert.are.same({}, leftovers(), c[1])
      assert.are.equal("mine\n", read(tmp .. "/exists.txt"))
    end
    assert.are.equal(0, #emu:requests())
  end)

  it("resume --report: the whole report of a names job; refused for a job of random names", function()
    write(tmp .. "/rs", "rs-0001\nrs-0002\n")
    local code, _, err = run("register --names-file rs --state rs.state --out rs1.csv")
    assert.are.equal(0, code, err)
    code, _, err = run("resume --state rs.state --report rs.jsonl --out rs2.csv", nil, true)
    assert.are.equal(0, code, err)
    assert.are.equal(2, #report_lines(tmp .. "/rs.jsonl"))
    -- random names: no requested name to report (it wrote an empty file, exit 0)
    code, _, err = run("register --count 2 --state rc.state --out rc1.csv")
    assert.are.equal(0, code, err)
    local before = #emu:requests()
    code, _, err = run("resume --state rc.state --report rc.jsonl --out rc2.csv", nil, true)
    assert.are.equal(2, code, err)
    assert.truthy(err:find("holds a job of random names", 1, true), err)
    assert.is_nil(read(tmp .. "/rc.jsonl"))
    assert.is_nil(read(tmp .. "/rc2.csv"))
    assert.are.equal(before, #emu:requests())
  end)

  it("--dry-run refuses the options it could only ignore", function()
    write(tmp .. "/dr", "dr-0001\n")
    for _, extra in ipairs{"--report dr.jsonl", "--state dr.state", "--mqtt",
                           "--format esp-idf --out dr.csv", "--format json", "--no-secrets"} do
      local code, out, err = run("register --names-file dr --dry-run " .. extra)
      assert.are.equal(2, code, extra)
      assert.truthy(err:find("does not apply to --dry-run", 1, true), err)
      assert.are.equal("", out)
    end
    assert.is_nil(read(tmp .. "/dr.jsonl"))
    assert.is_nil(read(tmp .. "/dr.csv"))
    -- its plan never replaces a file (a devices file of an earlier run keeps its secrets)
    write(tmp .. "/devices.csv", "ProductKey,DeviceName,DeviceSecret,IotId\n")
    local code, _, err = run("register --names-file dr --dry-run --out devices.csv")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("devices.csv exists", 1, true) or err:find("file of DeviceSecrets", 1, true), err)
    assert.are.equal("ProductKey,DeviceName,DeviceSecret,IotId\n", read(tmp .. "/devices.csv"))
    assert.are.equal(0, run("register --names-file dr --dry-run --out plan.json"))
    assert.truthy(read(tmp .. "/plan.json"):find("BatchCheckDeviceNames", 1, true))
    assert.are.equal(0, #emu:requests())
  end)

  it("--dry-run checks the names file locally and sends nothing", function()
    write(tmp .. "/dry", "dry-0001\ndry-0002,Kitchen_lamp\nbad name\n")
    -- no credentials needed: nothing is sent
    local code, out, err = run("register --names-file dry --dry-run --skip-invalid",
      "ALIBABA_CLOUD_ACCESS_KEY_ID= ALIBABA_CLOUD_ACCESS_KEY_SECRET=")
    assert.are.equal(3, code, err)
    assert.are.equal(0, #emu:requests())
    local plan = cjson.decode(out)
    assert.are.equal("BatchCheckDeviceNames", plan.Requests[1].Action)
    assert.are.equal("dry-0002", plan.Requests[1].Parameters.DeviceNameList[2].DeviceName)
    assert.are.equal("bad name", plan.Invalid[1].DeviceName)
    assert.truthy(err:find("nothing was sent", 1, true), err)
    write(tmp .. "/dry2", "dry-0001\ndry-0001\n")
    code = run("register --names-file dry2 --dry-run")
    assert.are.equal(2, code)
    write(tmp .. "/dry3", "dry-0001\n")
    code = run("register --names-file dry3 --dry-run")
    assert.are.equal(0, code)
    assert.are.equal(0, #emu:requests())
  end)

  it("check asks the service and registers nothing", function()
    assert(client():register_named_devices{ProductKey = PK, Devices = {"cc-0001"}})
    local n, registers = emu:state().products[PK].devices, count("BatchRegisterDeviceWithApplyId")
    write(tmp .. "/chk", "cc-0001\ncc-0002\n")
    local code, out, err = run("check --names-file chk")
    assert.are.equal(3, code, err)
    local res = cjson.decode(out)
    assert.are.same({"cc-0002"}, res.Valid)
    assert.are.same({"cc-0001"}, res.Existing)
    assert.are.equal(n, emu:state().products[PK].devices)
    assert.are.equal(registers, count("BatchRegisterDeviceWithApplyId"))
    write(tmp .. "/chk2", "cc-0003\n")
    code = run("check --names-file chk2")
    assert.are.equal(0, code)
  end)
end)
