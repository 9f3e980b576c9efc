-- A fresh user's findings on plan/apply/retire (issue 15) at the CLI, against the emulator
-- over real HTTP: a retire's --report continued through its journal, `resume` on a retire's
-- journal, rename report lines with their target, usage errors exiting 2, retire's notes.
local fleet = require "spec.support.fleet"
local shell = require "spec.support.shell"
local cjson = require "cjson"

local PK = fleet.PK
local lines = fleet.records

local WRITES = {DisableThing = true, DeleteDevice = true, EnableThing = true}

describe("fleet CLI follow-ups", function()
  local emu, c, dir

  local function run_cli(args) return fleet.run(dir, args) end

  local function writes(from) return fleet.count(emu, WRITES, from) end

  setup(function() emu, dir = fleet.start() end)
  teardown(function() fleet.stop(emu, dir) end)
  before_each(function()
    c = fleet.fresh(emu, dir, {"old_0001", "old_0002", "keep_0001"})
    shell.write(dir .. "/names.txt", "old_0001\nold_0002\ngone_0001\n")
  end)

  it("retire --state --report: the same command run again continues the report its journal recorded", function()
    emu:set_online{ProductKey = PK, DeviceName = "old_0002", stay_online = true}
    local cmd = ("retire --endpoint %s --product-key %s --names-file names.txt --state r.state " ..
      "--report r.jsonl --wait 0"):format(emu.endpoint, PK)
    local code, out, err = run_cli(cmd)
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("DevicesOnline", err)
    assert.matches("; to finish it, run:\n  ", err, 1, true)
    local first = shell.read(dir .. "/r.jsonl")
    assert.matches('"DeviceName":"old_0001","change":"retire","outcome":"skipped"', first)
    local recorded
    for _, e in ipairs(lines(dir .. "/r.state")) do if e.event == "report" then recorded = e end end
    assert.are.equal("r.jsonl", recorded and recorded.path)
    assert.are.equal(0, recorded.size)
    -- resume is not the way: it names the command that is, sending nothing
    local from = #emu:requests()
    code, out, err = run_cli("resume --state r.state")
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("r%.state is a retire's journal: run the same 'aliyun%-iot retire %-%-product%-key " ..
      PK .. " %-%-names%-file NAMES%-FILE %-%-report r%.jsonl %-%-state r%.state' again to finish it", err)
    assert.are.equal(from, #emu:requests())
    -- another existing file as --report is refused, left as it is, nothing sent
    shell.write(dir .. "/mine.jsonl", "mine\n")
    code, out, err = run_cli((cmd:gsub("r%.jsonl", "mine.jsonl")))
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("%-%-report mine%.jsonl exists and it is not the report the retire journal recorded", err)
    assert.are.equal("mine\n", shell.read(dir .. "/mine.jsonl"))
    assert.are.equal(from, #emu:requests())
    -- the device gone offline, the same command finishes the retire and appends to its report
    emu:set_online{ProductKey = PK, DeviceName = "old_0002", online = false}
    code, out, err = run_cli(cmd)
    assert.are.equal(0, code, err)
    assert.matches("Retire: 2 deleted, 1 absent%.\n$", out)
    local all = shell.read(dir .. "/r.jsonl")
    assert.are.equal(first, all:sub(1, #first))
    assert.matches('"DeviceName":"old_0002","change":"retire","outcome":"deleted"', all:sub(#first + 1))
    assert.are.equal(6, #lines(dir .. "/r.jsonl"))
    assert.are.same({"keep_0001"}, emu:state().products[PK].names)
    assert.are.equal(4, writes()) -- two DisableThing, two DeleteDevice
  end)

  it("retire --report without --state: an existing file is refused, saying how to make it resumable", function()
    shell.write(dir .. "/r.jsonl", "mine\n")
    local from = #emu:requests()
    local code, out, err = run_cli(("retire --endpoint %s --product-key %s --names-file names.txt --report r.jsonl")
      :format(emu.endpoint, PK))
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("%-%-report r%.jsonl exists: give the path of a new file, or give %-%-state FILE to " ..
      "make a retire resumable with its report", err)
    assert.are.equal("mine\n", shell.read(dir .. "/r.jsonl"))
    assert.are.equal(from, #emu:requests())
    assert.is_nil(shell.read(dir .. "/names.txt.undo.csv"))
    -- a retire stopped midway without --state says the run again needs a new --report
    emu:set_online{ProductKey = PK, DeviceName = "old_0002", stay_online = true}
    code, out, err = run_cli(("retire --endpoint %s --product-key %s --names-file names.txt --report r2.jsonl --wait 0")
      :format(emu.endpoint, PK))
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("run the same command again with a new %-%-report path to finish\n", err)
  end)

  it("retire's notes: the undo export named once written, the devices disabled already before the wait, flags", function()
    -- refused before anything is written: no undo export is announced
    local code, out, err = run_cli(("retire --endpoint %s --product-key %s --names-file names.txt --state x.state " ..
      "--undo x.state"):format(emu.endpoint, PK))
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.is_nil(err:find("undo export (the", 1, true), err)
    emu:set_online{ProductKey = PK, DeviceName = "old_0002", stay_online = true}
    code, out, err = run_cli(("retire --endpoint %s --product-key %s --names-file names.txt --wait 0")
      :format(emu.endpoint, PK))
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("undo export %(the devices' secrets%): names%.txt%.undo%.csv\n", err)
    -- the CLI's way on names its flags only; the library's its arguments
    assert.matches("run again with a longer %-%-wait S for them to go offline, or with %-%-force to delete them", err)
    assert.is_nil(err:find("--wait S, wait", 1, true), err)
    assert.is_nil(err:find("`", 1, true), err)
    local _, lerr = c:retire{ProductKey = PK, Devices = {"old_0002"}, undo = dir .. "/lib.csv", wait = 0}
    assert.are.equal("DevicesOnline", lerr.code)
    assert.matches("a longer `wait` for them to go offline, or with `force = true`", lerr.message)
    assert.is_nil(lerr.message:find("--", 1, true))
    -- run again: the devices disabled already are said before the wait, not after it
    code, out, err = run_cli(("retire --endpoint %s --product-key %s --names-file names.txt --wait 1.5")
      :format(emu.endpoint, PK))
    assert.are.equal(1, code)
    assert.are.equal("", out)
    local disabled = err:find("1 device(s) disabled already (DisableThing not sent again): old_0001\n", 1, true)
    local waiting = err:find("waiting for 1 of 2 devices to go offline", 1, true)
    assert.is_truthy(disabled, err)
    assert.is_truthy(waiting, err)
    assert.is_true(disabled < waiting, err)
    -- the help says what the code does: the undo export beside the names file or manifest
    code, out = run_cli("--help")
    assert.are.equal(0, code)
    assert.truthy(out:find("NAMES-FILE.undo.csv", 1, true))
    assert.truthy(out:find("MANIFEST.undo.csv", 1, true))
    assert.is_nil(out:find(" FILE.undo.csv", 1, true))
  end)

  it("client:retire{report=}: recorded in the journal; one it did not record refused, nothing sent or left", function()
    local from = #emu:requests()
    local state = dir .. "/lib.state"
    local _, err = c:retire{ProductKey = PK, Devices = {"old_0001"}, undo = dir .. "/lib.csv", journal = state,
      report = {path = dir .. "/r.jsonl", id = "1:2", size = 0, new = false}}
    assert.are.equal("InvalidParameter", err and err.code)
    assert.matches("cannot be continued: no retire journal records it", err.message)
    assert.is_nil(shell.read(state))
    assert.are.equal(from, #emu:requests())
    -- a report event that is not one is refused as the journal's other lines are
    shell.write(state, cjson.encode{event = "retire", version = 1, ProductKey = PK, Names = {"old_0001"},
      undo = dir .. "/lib.csv", endpoint = emu.endpoint, RegionId = "cn-shanghai"} ..
      '\n{"event":"report","path":"r.jsonl","id":7,"size":0}\n')
    _, err = c:retire{ProductKey = PK, Devices = {"old_0001"}, undo = dir .. "/lib.csv", journal = state}
    assert.are.equal("JournalError", err and err.code)
    assert.matches("lib%.state:2: is not a report event", err.message)
    assert.are.equal(from, #emu:requests())
  end)

  it("apply --report: a rename line names its target, the nickname set or removed", function()
    assert(c:apply{ProductKey = PK, manifest = {{DeviceName = "old_0001", Nickname = "first"},
      {DeviceName = "old_0002", Nickname = "second"}}})
    shell.write(dir .. "/fleet.csv", "DeviceName,Nickname\nold_0001,renamed_one\nold_0002,\n")
    local code, _, err = run_cli(("apply --endpoint %s --product-key %s --manifest fleet.csv --report r.jsonl")
      :format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    local got = {}
    for _, r in ipairs(lines(dir .. "/r.jsonl")) do
      assert.are.equal("rename", r.change)
      got[r.DeviceName] = r.target
    end
    assert.are.same({old_0001 = "renamed_one", old_0002 = ""}, got)
  end)

  it("a usage error exits 2 whatever the flags; plan --detailed-exitcode keeps 1 (its 2 means changes)", function()
    local from = #emu:requests()
    local code, out, err = run_cli("apply --product-key " .. PK .. " --manifest m.csv --detailed-exitcode")
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("option %-%-detailed%-exitcode does not apply to 'apply'", err)
    code = run_cli("retire --product-key " .. PK .. " --names-file names.txt --detailed-exitcode")
    assert.are.equal(2, code)
    code = run_cli("plan --product-key " .. PK .. " --detailed-exitcode")
    assert.are.equal(1, code)
    assert.are.equal(from, #emu:requests())
  end)
end)
