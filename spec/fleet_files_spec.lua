-- The files of plan, apply and retire (issue 15, a breaker's findings): an output never
-- replaces the manifest, the undo export or apply's retire journal; --state and --undo that
-- cannot be used are refused before any request (exit 2, the emulator's request log
-- unchanged); an undo export that could not be written whole is removed, so the same command
-- works again; a --report FIFO is refused unopened; values quoted in errors are cut; a JSON
-- array manifest, a non-UTF-8 tag value are named as such.
local fleet = require "spec.support.fleet"
local shell = require "spec.support.shell"

local PK = fleet.PK
local q = shell.quote

describe("fleet files #lua54only", function()
  local emu, c, dir

  -- The CLI in `dir`, `pre` run first in the same shell (a ulimit); exit status, stdout,
  -- stderr. `timeout` ends a run that would hang (a FIFO's open) so that the spec fails.
  local function run_cli(args, pre)
    return fleet.run(dir, "--endpoint " .. emu.endpoint .. " " .. args, {pre = pre, timeout = 30})
  end

  local function requests() return #emu:requests() end

  -- Runs the CLI and asserts it was refused with exit status 2 before any request.
  local function refused(args, pattern)
    local from = requests()
    local code, out, err = run_cli(args)
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    if pattern then assert.matches(pattern, err) end
    assert.are.equal(from, requests(), "a request was sent: " .. err)
    return err
  end

  setup(function() emu, dir = fleet.start() end)
  teardown(function() fleet.stop(emu, dir) end)
  before_each(function()
    c = fleet.fresh(emu, dir, {"old_0001", "old_0002", "keep_0001"})
    shell.write(dir .. "/names.txt", "old_0001\nold_0002\n")
    shell.write(dir .. "/keep.csv", "DeviceName\nkeep_0001\n")
  end)

  it("never lets --out or --report take the undo export, the manifest or apply's retire journal", function()
    shell.write(dir .. "/names.txt.undo.csv", "held\n")
    local retire = "retire --product-key " .. PK .. " --names-file names.txt --wait 1 "
    refused(retire .. "--out names.txt.undo.csv",
      "%-%-out names.txt.undo.csv is the same file as the undo export names.txt.undo.csv")
    refused(retire .. "--state r.state --out r.state.undo.csv", "the undo export r.state.undo.csv")
    refused(retire .. "--undo u.csv --report ./u.csv", "%-%-report ./u.csv is the same file as the undo export u.csv")
    assert.are.equal("held\n", shell.read(dir .. "/names.txt.undo.csv"))
    assert.is_nil(shell.read(dir .. "/u.csv"))
    local apply = "apply --product-key " .. PK .. " --manifest keep.csv "
    refused(apply .. "--retire-unlisted --undo U.csv --out U.csv", "the same file as the undo export U.csv")
    refused(apply .. "--retire-unlisted --out keep.csv.undo.csv", "the undo export keep.csv.undo.csv")
    refused(apply .. "--retire-unlisted --state a.state --out a.state.retire",
      "the same file as the retire's journal a.state.retire")
    refused(apply .. "--out keep.csv", "%-%-out keep.csv is the same file as %-%-manifest keep.csv")
    refused("plan --product-key " .. PK .. " --manifest keep.csv --out ./keep.csv",
      "%-%-out ./keep.csv is the same file as %-%-manifest keep.csv")
    assert.are.equal("DeviceName\nkeep_0001\n", shell.read(dir .. "/keep.csv"))
    -- the devices are all still there
    assert.are.same({"keep_0001", "old_0001", "old_0002"}, emu:state().products[PK].names)
  end)

  it("refuses a --state or --undo it cannot use before any request (exit 2)", function()
    assert(shell.ok(("cd %s && mkdir folder && mkfifo fifo && ln -s nowhere dangling && " ..
      "touch target && ln -s target link"):format(q(dir))))
    local retire = "retire --product-key " .. PK .. " --names-file names.txt --wait 1 "
    for _, s in ipairs{"folder", "fifo", "dangling", "link", "missing/x.state"} do
      refused(retire .. "--undo u.csv --state " .. s, "InvalidParameter: retire journal " .. s)
      refused("apply --product-key " .. PK .. " --manifest keep.csv --state " .. s,
        "InvalidParameter: journal " .. s)
      refused("apply --product-key " .. PK .. " --manifest keep.csv --retire-unlisted --undo " .. s,
        "InvalidParameter: undo file " .. s)
    end
    for _, u in ipairs{"folder", "fifo", "/dev/null", "dangling", "missing/u.csv"} do
      refused(retire .. "--undo " .. u, "InvalidParameter: undo file " .. u)
    end
    -- apply's retire journal beside its --state, and an undo file that is no undo export
    assert(shell.ok("cd " .. q(dir) .. " && mkdir a.state.retire && echo text > notundo.csv"))
    refused("apply --product-key " .. PK .. " --manifest keep.csv --retire-unlisted --undo u.csv " ..
      "--state a.state", "retire journal a.state.retire is a folder")
    refused("apply --product-key " .. PK .. " --manifest keep.csv --retire-unlisted --undo notundo.csv",
      "notundo.csv exists and is not an undo export")
    assert.are.same({"keep_0001", "old_0001", "old_0002"}, emu:state().products[PK].names)
    assert.is_nil(shell.read(dir .. "/a.state"))
  end)

  it("refuses an apply's stale undo export after its reads and before any write", function()
    shell.write(dir .. "/stale.csv", "ProductKey,DeviceName,DeviceSecret,IotId\n" ..
      PK .. ",other_0001,0123456789abcdef0123456789abcdef,abc\n")
    shell.write(dir .. "/m.csv", "DeviceName,Nickname\nkeep_0001,keeper_1\nnew_0001,\n")
    local from = requests()
    local code, out, err = run_cli("apply --product-key " .. PK .. " --manifest m.csv " ..
      "--retire-unlisted --undo stale.csv --wait 1")
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    -- a refused undo path is named by its refusal only, never announced as the export
    assert.not_matches("undo export %(", err)
    assert.matches("undo file stale.csv exists and does not hold device old_000%d", err)
    for i, r in ipairs(emu:requests()) do
      -- reads only: QueryDevice, BatchQueryDeviceDetail, QueryDeviceProp, ...
      if i > from then assert.matches("^%a-Query", r.action) end
    end
    assert.are.same({"keep_0001", "old_0001", "old_0002"}, emu:state().products[PK].names)
    -- the library the same
    local res, lerr = c:apply{ProductKey = PK, manifest = dir .. "/m.csv", retire_unlisted = true,
                              undo = dir .. "/stale.csv", wait = 1}
    assert.is_nil(res)
    assert.are.equal("InvalidParameter", lerr.code)
    assert.are.equal("undo", lerr.parameter)
    from = requests()
    res, lerr = c:apply{ProductKey = PK, manifest = dir .. "/m.csv", retire_unlisted = true,
                        undo = dir, wait = 1}
    assert.is_nil(res)
    assert.matches("is a folder", lerr.message)
    assert.are.equal(from, requests())
  end)

  it("removes an undo export it could not write whole, so the same command finishes", function()
    local names = {}
    for i = 1, 150 do names[i] = ("uf_%04d"):format(i) end
    assert(c:register_named_devices{ProductKey = PK, Devices = names})
    shell.write(dir .. "/uf.txt", table.concat(names, "\n") .. "\n")
    local cmd = "retire --product-key " .. PK .. " --names-file uf.txt --state uf.state --undo uf.undo --wait 1"
    local from = requests()
    -- 6 blocks of 512 bytes: the journal fits, the undo export (150 secrets) does not
    local code, out, err = run_cli(cmd, "ulimit -f 6 &&")
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    assert.matches("UndoError: cannot write undo file uf.undo: File too large %(the partial file " ..
      "removed; no write sent%)", err)
    assert.is_nil(shell.read(dir .. "/uf.undo"))
    for i, r in ipairs(emu:requests()) do
      if i > from then assert.are.equal("BatchQueryDeviceDetail", r.action) end
    end
    code, out, err = run_cli(cmd)
    assert.are.equal(0, code, err)
    assert.matches("Retire: 150 deleted, 0 absent%.\n$", out)
    local undo = shell.read(dir .. "/uf.undo")
    local n = select(2, undo:gsub("\n", ""))
    assert.are.equal(151, n)
  end)

  it("refuses a --report FIFO without opening it", function()
    assert(shell.ok("mkfifo " .. q(dir .. "/rep.fifo")))
    refused("apply --product-key " .. PK .. " --manifest keep.csv --report rep.fifo",
      "cannot write %-%-report rep.fifo: it is a FIFO")
    shell.write(dir .. "/one.txt", "new_0001\n")
    refused("register --product-key " .. PK .. " --names-file one.txt --report rep.fifo",
      "it is a FIFO")
  end)

  it("cuts values quoted in errors, names a JSON array, refuses a tag value that is not UTF-8", function()
    shell.write(dir .. "/big.csv", "DeviceName,Nickname\nkeep_0001," .. ("x"):rep(200000) .. "\n")
    local err = refused("plan --product-key " .. PK .. " --manifest big.csv",
      'big.csv:2: Nickname "' .. ("x"):rep(64) .. '"%.%.%. %(200000 bytes%) must be')
    assert.is_true(#err < 400)
    shell.write(dir .. "/arr.json", '[{"DeviceName":"keep_0001"}]\n')
    refused("plan --product-key " .. PK .. " --manifest arr.json",
      "arr.json:1: is neither CSV with a header row nor JSON lines")
    shell.write(dir .. "/nu.csv", "DeviceName,tags\nkeep_0001,site=a\255b\n")
    refused("apply --product-key " .. PK .. " --manifest nu.csv",
      'nu.csv:2: device keep_0001: tag "site": its value is not UTF%-8 text')
  end)

  it("prints a nickname of the plan escaped once", function()
    local plan = require "aliyun.iot.cli.plan"
    local text = {}
    plan.print_plan({CreateGroups = {}, Unlisted = {}, Retire = {}, changes = 1,
      Totals = {create = 0, update = 1, nothing = 0, rename = 1, tag_set = 0, tag_remove = 0,
                join = 0, leave = 0, create_group = 0, unlisted = 0, retire = 0},
      Devices = {{DeviceName = "keep_0001", action = "update",
                  rename = {from = "evil\27[2J\"q", to = "good_1"}}}},
      function(s) text[#text + 1] = s end)
    assert.matches('    nickname: "evil\\x1B%[2J\\"q" %-> "good_1"\n', table.concat(text), 1)
  end)

  it("says what a Success false answer at HTTP 200 without Code or Message is", function()
    local response = require "aliyun.iot.response"
    local row = require("aliyun.iot.actions").get("QueryDevice")
    local _, err = response.classify(row, {status = 200, headers = {},
      body = '{"Success":false,"RequestId":"r1"}'}, nil, nil, function(s) return s end)
    assert.are.equal("the answer says Success false, with no Code nor Message (HTTP status 200)",
      err.message)
  end)
end)
