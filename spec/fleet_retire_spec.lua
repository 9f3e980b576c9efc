-- client:retire and `aliyun-iot retire` (issue 15) against the emulator over real HTTP:
-- the undo export written before any write, online devices refused without --force (the
-- devices disabled, none deleted), exactly the listed devices deleted, a run again with the
-- same undo file finishing the job, --dry-run sending reads only, bad input refused unsent.
local fleet = require "spec.support.fleet"
local shell = require "spec.support.shell"

local PK = fleet.PK
local q = shell.quote
local actions = fleet.actions

describe("fleet retire", function()
  local emu, c, dir

  local function run_cli(args) return fleet.run(dir, args) end

  setup(function() emu, dir = fleet.start() end)
  teardown(function() fleet.stop(emu, dir) end)
  before_each(function()
    c = fleet.fresh(emu, dir, {"old_0001", "old_0002", "old_0003", "keep_0001"})
    shell.write(dir .. "/names.txt", "old_0001\nold_0002\nold_0003\ngone_0001\n")
  end)

  it("refuses online devices without --force: undo written first, all disabled, none deleted", function()
    emu:set_online{ProductKey = PK, DeviceName = "old_0002", stay_online = true}
    local from = #emu:requests() + 1
    local code, out, err = run_cli(("retire --endpoint %s --product-key %s --names-file names.txt --wait 0")
      :format(emu.endpoint, PK))
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("DevicesOnline", err)
    assert.matches("1 device%(s%) still ONLINE after a wait of 0 s: old_0002; none deleted, and " ..
      "all 3 device%(s%) of this retire are left disabled;", err)
    -- the way on: a longer wait, or --force, or back: the command that enables a device
    assert.matches("%-%-wait S", err)
    assert.matches("%-%-force", err)
    assert.matches("enable each again: aliyun%-iot call EnableThing ProductKey=" .. PK .. " DeviceName=NAME", err)
    assert.matches("retire stopped: 0 deleted, 1 absent, 0 failed, 3 not deleted yet; undo export names.txt.undo.csv", err)
    assert.is_nil(err:find("DeviceSecret", 1, true))
    local acts = actions(emu, from)
    assert.are.same({"BatchQueryDeviceDetail", "DisableThing", "DisableThing", "DisableThing",
      "BatchGetDeviceState"}, acts)
    assert.are.same({"keep_0001", "old_0001", "old_0002", "old_0003"}, emu:state().products[PK].names)
    -- the undo export: a new 0600 file with the three devices and their secrets
    local undo = shell.read(dir .. "/names.txt.undo.csv")
    assert.matches("^ProductKey,DeviceName,DeviceSecret,IotId\n", undo)
    local n = 0
    for name, secret in undo:gmatch(PK .. ",([%w_]+),(%w+),%w+\n") do
      n = n + 1
      assert.is_truthy(name:find("^old_000"))
      assert.are.equal(32, #secret)
    end
    assert.are.equal(3, n)
    assert.matches("^%-rw%-%-%-%-%-%-%-", shell.capture("ls -l " .. q(dir .. "/names.txt.undo.csv")))
    -- run again with --force: the same undo file is kept, exactly the listed devices deleted;
    -- DisableThing goes only to the device the read does not show DISABLE already
    local before = undo
    from = #emu:requests() + 1
    code, out, err = run_cli(("retire --endpoint %s --product-key %s --names-file names.txt --wait 0 --force --report r.jsonl")
      :format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    assert.are.same({"BatchQueryDeviceDetail", "DisableThing", "BatchGetDeviceState", "DeleteDevice",
      "DeleteDevice", "DeleteDevice"}, actions(emu, from))
    assert.are.equal("old_0002", emu:requests()[from + 1].params.DeviceName)
    assert.matches("2 device%(s%) disabled already %(DisableThing not sent again%): old_0001, old_0003", err)
    -- the one deleted while online: a warning on stderr, marked on stdout and in the report
    assert.matches("warning: %-%-force deleted 1 device%(s%) still ONLINE after %-%-wait 0 s: old_0002\n", err)
    assert.matches("\n%- old_0002  deleted %(while ONLINE, %-%-force%)\n", out)
    assert.matches("\n%- old_0003  deleted\n", out)
    assert.matches("Retire: 3 deleted %(1 while ONLINE%), 1 absent%.\n$", out)
    assert.are.equal(before, shell.read(dir .. "/names.txt.undo.csv"))
    assert.are.same({"keep_0001"}, emu:state().products[PK].names)
    local rep = shell.read(dir .. "/r.jsonl")
    assert.matches('"DeviceName":"gone_0001","change":"retire","outcome":"absent"', rep)
    assert.matches('"DeviceName":"old_0002","change":"retire","outcome":"deleted","online":"true"', rep)
    assert.matches('"DeviceName":"old_0001","change":"retire","outcome":"deleted","RequestId"', rep)
  end)

  it("waits with its progress on stderr, and a device DisableThing takes offline needs no --force", function()
    -- old_0001 online as the platform has it: DisableThing disconnects it, the wait ends at once
    emu:set_online{ProductKey = PK, DeviceName = "old_0001"}
    emu:set_online{ProductKey = PK, DeviceName = "old_0002", stay_online = true}
    shell.write(dir .. "/two.txt", "old_0001\nold_0003\n")
    local code, out, err = run_cli(("retire --endpoint %s --product-key %s --names-file two.txt --wait 30")
      :format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    assert.matches("Retire: 2 deleted, 0 absent%.\n$", out)
    assert.is_nil(err:find("waiting for", 1, true))
    assert.is_nil(err:find("warning", 1, true))
    -- a device that stays online: a note each time the wait pauses, naming it and --wait
    local quiet_from = #emu:requests() + 1
    shell.write(dir .. "/one.txt", "old_0002\n")
    code, out, err = run_cli(("retire --endpoint %s --product-key %s --names-file one.txt --wait 1.5")
      :format(emu.endpoint, PK))
    assert.are.equal(1, code)
    assert.are.equal("", out)
    local notes = 0
    local note = "aliyun%-iot: waiting for 1 of 1 devices to go offline %(ONLINE: old_0002%), %d+ s of up to %-%-wait 1%.5 s\n"
    for _ in err:gmatch(note) do
      notes = notes + 1
    end
    assert.is_true(notes >= 1, err)
    assert.matches("DevicesOnline", err)
    for _, a in ipairs(actions(emu, quiet_from)) do assert.are_not.equal("DeleteDevice", a) end
    assert.are.same({"keep_0001", "old_0002"}, emu:state().products[PK].names)
  end)

  it("deletes offline devices after disabling them, and refuses an undo file without them (library)", function()
    local seen = {}
    local res = assert(c:retire{ProductKey = PK, Devices = {"old_0001", "old_0003"}, undo = dir .. "/u.csv",
      wait = 5, on_report = function(r, pos) seen[pos] = r.outcome end})
    assert.are.same({"deleted", "deleted"}, seen)
    assert.are.same({"old_0001", "old_0003"}, res.Retire)
    assert.are.same({"keep_0001", "old_0002"}, emu:state().products[PK].names)
    -- an undo file that does not hold the devices is refused before any write
    local from = #emu:requests() + 1
    local _, err = c:retire{ProductKey = PK, Devices = {"old_0002"}, undo = dir .. "/u.csv"}
    assert.are.equal("InvalidParameter", err.code)
    assert.matches("does not hold device old_0002", err.message)
    assert.are.same({"BatchQueryDeviceDetail"}, actions(emu, from))
  end)

  it("refuses to delete a device made again under a name its undo file holds (another IotId)", function()
    emu:set_online{ProductKey = PK, DeviceName = "old_0002", stay_online = true}
    local undo = dir .. "/again.csv"
    local _, err = c:retire{ProductKey = PK, Devices = {"old_0002"}, undo = undo, wait = 0}
    assert.are.equal("DevicesOnline", err.code)
    -- meanwhile the device is deleted and a new one made under its name
    assert(c:call("DeleteDevice", {ProductKey = PK, DeviceName = "old_0002"}))
    local again = assert(c:register_device{ProductKey = PK, DeviceName = "old_0002"})
    local from = #emu:requests() + 1
    _, err = c:retire{ProductKey = PK, Devices = {"old_0002"}, undo = undo, wait = 0, force = true}
    assert.are.equal("InvalidParameter", err.code)
    assert.matches("holds another device named old_0002", err.message)
    assert.are.same({"BatchQueryDeviceDetail"}, actions(emu, from))
    assert.is_nil(shell.read(undo):find(again.Data.DeviceSecret, 1, true))
    assert.are.same({"keep_0001", "old_0001", "old_0002", "old_0003"}, emu:state().products[PK].names)
  end)

  it("a BatchGetDeviceState answer leaving out a device asked for deletes nothing (InvalidResponse)", function()
    emu:set_online{ProductKey = PK, DeviceName = "old_0001", stay_online = true}
    local lying = fleet.tampering(emu, "BatchGetDeviceState", function(res)
      -- the online device's status left out of the list
      res.body = res.body:gsub('{[^{}]-"Status":"ONLINE"[^{}]-},?', "")
    end)
    local _, err = lying:retire{ProductKey = PK, Devices = {"old_0001", "old_0002"}, undo = dir .. "/l.csv", wait = 0}
    assert.are.equal("InvalidResponse", err.code)
    assert.are.same({"keep_0001", "old_0001", "old_0002", "old_0003"}, emu:state().products[PK].names)
    for _, a in ipairs(actions(emu)) do assert.are_not.equal("DeleteDevice", a) end
  end)

  it("--dry-run lists what it would do (the devices online now), sending reads only; bad input refused unsent", function()
    emu:set_online{ProductKey = PK, DeviceName = "old_0003"}
    local code, out, err = run_cli(("retire --endpoint %s --product-key %s --names-file names.txt --dry-run")
      :format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    assert.matches("%- old_0001  planned\n", out)
    assert.matches("%- old_0003  planned %(ONLINE now%)\n", out)
    assert.matches("%? gone_0001  absent\n", out)
    assert.matches("Retire: 3 to delete %(1 ONLINE now%), 1 absent", out)
    assert.are.same({"RegisterDevice", "RegisterDevice", "RegisterDevice", "RegisterDevice",
      "BatchQueryDeviceDetail"}, actions(emu))
    assert.is_nil(shell.read(dir .. "/names.txt.undo.csv"))
    local from = #emu:requests() + 1
    shell.write(dir .. "/bad.txt", "old_0001\nold_0001\n")
    local _
    code, _, err = run_cli(("retire --endpoint %s --product-key %s --names-file bad.txt"):format(emu.endpoint, PK))
    assert.are.equal(2, code)
    assert.matches("given twice", err)
    code = run_cli(("retire --endpoint %s --product-key %s --names-file names.txt --wait soon"):format(emu.endpoint, PK))
    assert.are.equal(2, code)
    assert.are.equal(from - 1, #emu:requests())
  end)

  it("a retire killed while it waits is finished by running it again with the same undo file", function()
    emu:set_online{ProductKey = PK, DeviceName = "old_0003", stay_online = true}
    local pid = fleet.start_cli(dir, ("retire --endpoint %s --product-key %s --names-file names.txt --undo kept.csv")
      :format(emu.endpoint, PK), "kill")
    local function polled() return fleet.count(emu, "BatchGetDeviceState") > 0 end
    assert.is_true(fleet.poll(polled))
    assert(os.execute("kill -9 " .. pid))
    local undo = shell.read(dir .. "/kept.csv")
    assert.matches("old_0003", undo)
    assert.are.same({"keep_0001", "old_0001", "old_0002", "old_0003"}, emu:state().products[PK].names)
    emu:set_online{ProductKey = PK, DeviceName = "old_0003", online = false}
    local code, out, err = run_cli(("retire --endpoint %s --product-key %s --names-file names.txt --undo kept.csv")
      :format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    assert.matches("Retire: 3 deleted, 1 absent", out)
    assert.are.equal(undo, shell.read(dir .. "/kept.csv"))
    assert.are.same({"keep_0001"}, emu:state().products[PK].names)
  end)

  it("apply --retire-unlisted --state keeps a retire journal: stopped midway, run again repeats no answered write", function()
    shell.write(dir .. "/fleet.csv", "DeviceName,Nickname,tags,groups\nkeep_0001,,,\n")
    emu:set_online{ProductKey = PK, DeviceName = "old_0003", stay_online = true}
    -- the journal's path absolute (the undo export's beside it): the library run below shares them
    local cmd = ("apply --endpoint %s --product-key %s --manifest fleet.csv --retire-unlisted --state %s")
      :format(emu.endpoint, PK, q(dir .. "/a.state"))
    local function count(action, name)
      return fleet.count(emu, function(r) return r.action == action and (not name or r.params.DeviceName == name) end)
    end
    -- killed while it waits for old_0003 (the DisableThings answered)
    local pid = fleet.start_cli(dir, cmd, "kill")
    fleet.poll(function() return count("BatchGetDeviceState") > 0 end)
    assert.is_true(count("BatchGetDeviceState") > 0, shell.read(dir .. "/kill.err"))
    assert(os.execute("kill -9 " .. pid))
    assert.are.equal(3, count("DisableThing"))
    assert.matches('"event":"retire"', shell.read(dir .. "/a.state.retire"))
    -- run again (the library, the same journal, forced: old_0003 still shows ONLINE, so only
    -- the journal knows its DisableThing was answered), old_0002's DeleteDevice refused on
    -- the way (it never reaches the service): the apply fails, the two others deleted
    local curl = require("aliyun.iot").transports.curl
    local refusing = fleet.client(emu, {transport = function(req)
      local body = (req.body or "") .. req.url
      if body:find("Action=DeleteDevice", 1, true) and body:find("DeviceName=old_0002", 1, true) then
        return {status = 200, headers = {["content-type"] = "application/json"}, body = '{"RequestId":"R-1",' ..
          '"Success":false,"Code":"iot.common.QueryDeviceActionError","ErrorMessage":"refused"}'}
      end
      return curl(req)
    end})
    local _, aerr = refusing:apply{ProductKey = PK, manifest = dir .. "/fleet.csv", retire_unlisted = true,
      journal = dir .. "/a.state", undo = dir .. "/a.state.undo.csv", wait = 0, force = true}
    assert.are.equal("iot.common.QueryDeviceActionError", aerr and aerr.code, aerr and aerr.message)
    assert.are.same({"keep_0001", "old_0002"}, emu:state().products[PK].names)
    -- run again: its plan holds only the device left, the journal all three; none of the
    -- answered writes is sent again, the DeleteDevice the service never had is
    local code, out, err = run_cli(cmd)
    assert.are.equal(0, code, err)
    assert.matches("Apply: 1 deleted%.\n$", out)
    assert.are.same({"keep_0001"}, emu:state().products[PK].names)
    for _, n in ipairs{"old_0001", "old_0002", "old_0003"} do
      assert.are.equal(1, count("DisableThing", n), n)
      assert.are.equal(1, count("DeleteDevice", n), n)
    end
    -- the same command once more: nothing to do, nothing sent but reads
    code, out, err = run_cli(cmd)
    assert.are.equal(0, code, err)
    assert.matches("Apply: nothing to do%.\n$", out)
    assert.are.equal(3, count("DisableThing"))
    assert.are.equal(3, count("DeleteDevice"))
  end)

  it("--state: a retire killed while it waits, then while DeleteDevice is in flight, repeats no answered write", function()
    emu:set_online{ProductKey = PK, DeviceName = "old_0003", stay_online = true}
    local cmd = ("retire --endpoint %s --product-key %s --names-file names.txt --state r.state")
      :format(emu.endpoint, PK)
    local function start() return fleet.start_cli(dir, cmd, "kill") end
    local function count(action, fault)
      return fleet.count(emu, function(r) return r.action == action and (not fault or r.fault == fault) end)
    end
    local function until_(cond) assert.is_true(fleet.poll(cond), shell.read(dir .. "/kill.err")) end
    -- killed while it waits for old_0003 (the DisableThings answered)
    local pid = start()
    until_(function() return count("BatchGetDeviceState") > 0 end)
    assert(os.execute("kill -9 " .. pid))
    assert.are.equal(3, count("DisableThing"))
    assert.matches("^%-rw%-%-%-%-%-%-%-", shell.capture("ls -l " .. q(dir .. "/r.state")))
    local undo = shell.read(dir .. "/r.state.undo.csv")
    assert.matches("old_0003", undo)
    -- run again, killed while a DeleteDevice is held by the emulator (its answer lost)
    emu:set_online{ProductKey = PK, DeviceName = "old_0003", online = false}
    emu:fault{kind = "slow", action = "DeleteDevice", count = 1, delay = 1.5}
    local from = #emu:requests() + 1
    pid = start()
    until_(function() return count("DeleteDevice") >= 2 end)
    assert(os.execute("kill -9 " .. pid))
    until_(function() return count("DeleteDevice", "slow") == 1 end)
    assert.are.equal(3, count("DisableThing")) -- answered before: not sent again
    assert.are.equal("BatchQueryDeviceDetail", actions(emu, from)[1])
    -- the third run settles the lost answers by a read and sends no write
    from = #emu:requests() + 1
    local code, out, err = run_cli(cmd .. " --report r.jsonl")
    assert.are.equal(0, code, err)
    assert.are.same({"BatchQueryDeviceDetail"}, actions(emu, from))
    assert.matches("Retire: 3 deleted, 1 absent%.\n$", out)
    assert.matches('"DeviceName":"old_0002","change":"retire","outcome":"deleted"', shell.read(dir .. "/r.jsonl"))
    assert.are.equal(3, count("DeleteDevice"))
    assert.are.equal(undo, shell.read(dir .. "/r.state.undo.csv"))
    assert.are.same({"keep_0001"}, emu:state().products[PK].names)
    -- a finished retire's journal, or one of other devices, is refused with nothing sent
    from = #emu:requests() + 1
    code, out, err = run_cli(cmd)
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("holds a finished retire; give a new path %(%-%-state FILE%)", err)
    shell.write(dir .. "/other.txt", "old_0001\n")
    code, out, err = run_cli((cmd:gsub("names%.txt", "other.txt")))
    assert.are.equal(2, code)
    assert.matches("is the retire of 4 other device", err)
    assert.are.equal("", out)
    -- one path for the journal and the undo export is refused, nothing made
    code, out, err = run_cli(("retire --endpoint %s --product-key %s --names-file names.txt --state x.state " ..
      "--undo x.state"):format(emu.endpoint, PK))
    assert.are.equal(2, code)
    assert.matches("must be two files", err)
    assert.are.equal("", out)
    assert.is_nil(shell.read(dir .. "/x.state"))
    assert.are.equal(from - 1, #emu:requests())
  end)
end)
