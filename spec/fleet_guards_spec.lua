-- What keeps apply and retire (issue 15) from doing what the user did not mean, against
-- the emulator over real HTTP, the request log counted to prove what was (not) sent: a
-- manifest of no device never retires a product's devices unasked; apply prints its plan
-- before its first write; a killed apply's journal refuses another manifest; `wait`,
-- hole-y device lists and JSON numbers are refused; a refused retire's disabled devices
-- are shown by plan with the way back; a failed group creation is in the report.
local fleet = require "spec.support.fleet"
local manifest = require "aliyun.iot.fleet.manifest"
local shell = require "spec.support.shell"

local PK = fleet.PK

local READS = {QueryDevice = true, BatchQueryDeviceDetail = true, QueryDeviceProp = true,
  QueryDeviceGroupList = true, QueryDeviceListByDeviceGroup = true, BatchGetDeviceState = true}

-- The actions the emulator received since `from`, and how many were writes.
local function since(emu, from)
  local acts, writes = fleet.actions(emu, from), 0
  for _, a in ipairs(acts) do
    if not READS[a] then writes = writes + 1 end
  end
  return acts, writes
end

describe("fleet guards", function()
  local emu, c, dir

  -- Polls until ok() is true, for `n` tenths of a second at the most; ok()'s last value.
  local function poll(n, ok) return fleet.poll(ok, n / 10) end

  -- Starts the CLI in the background: its pid (stdout and stderr to dir/bg.out, bg.err).
  local function start_cli(args) return fleet.start_cli(dir, args, "bg") end

  -- An apply of `file` with journal s.state killed while its registration is held by the
  -- emulator (1.5 s), as a kill leaves it: the journal unfinished, the held call answered.
  local function killed_apply(file)
    emu:fault{kind = "slow", action = "BatchRegisterDeviceWithApplyId", count = 1, delay = 1.5}
    local pid = start_cli(("apply --endpoint %s --product-key %s --manifest %s --state s.state")
      :format(emu.endpoint, PK, file))
    assert.is_truthy(pid)
    assert.is_truthy(poll(300, function() return fleet.count(emu, "BatchCheckDeviceNames") > 0 end))
    os.execute("sleep 0.3; kill -9 " .. pid .. " 2>/dev/null")
    assert.is_truthy(poll(300, function() return fleet.count(emu, "BatchRegisterDeviceWithApplyId") > 0 end))
    emu:clear_faults()
  end

  local function run_cli(args) return fleet.run(dir, args) end

  setup(function() emu, dir = fleet.start() end)
  teardown(function() fleet.stop(emu, dir) end)
  before_each(function() c = fleet.fresh(emu, dir) end)

  it("refuses a manifest of no device with --retire-unlisted unless --allow-empty-manifest", function()
    fleet.register(c, {"old_0001", "old_0002"})
    shell.write(dir .. "/hdr.csv", "DeviceName\n")
    local from = #emu:requests() + 1
    local code, out, err = run_cli(("apply --endpoint %s --product-key %s --manifest hdr.csv " ..
      "--retire-unlisted --wait 1"):format(emu.endpoint, PK))
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    assert.matches("the manifest lists no device: retire_unlisted would retire every device", err)
    assert.matches("%-%-allow%-empty%-manifest", err)
    assert.are.same({}, (since(emu, from)))
    assert.are.same({"old_0001", "old_0002"}, emu:state().products[PK].names)
    assert.is_nil(shell.read(dir .. "/hdr.csv.undo.csv"))
    -- the library: the same refusal, nothing sent
    local res, lerr = c:apply{ProductKey = PK, manifest = {}, retire_unlisted = true, undo = dir .. "/u.csv"}
    assert.is_nil(res)
    assert.are.equal("InvalidParameter", lerr.code)
    assert.are.same({}, (since(emu, from)))
    -- the flag alone is misuse; with --retire-unlisted it retires every device, as asked
    code, out, err = run_cli(("apply --endpoint %s --product-key %s --manifest hdr.csv --allow-empty-manifest")
      :format(emu.endpoint, PK))
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    assert.matches("go with %-%-retire%-unlisted", err)
    code, out, err = run_cli(("apply --endpoint %s --product-key %s --manifest hdr.csv --retire-unlisted " ..
      "--allow-empty-manifest --wait 1"):format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    assert.matches("Apply: 2 deleted%.\n$", out)
    assert.are.same({}, emu:state().products[PK].names)
  end)

  it("apply prints the plan before its first write (a killed apply has said what it meant)", function()
    shell.write(dir .. "/m.csv", "DeviceName,Nickname\nlamp_0001,lamp_one\n")
    -- the first write is held 5 s: the plan must be on stdout while it waits (printed
    -- after the writes, it would come with writes in the log)
    emu:fault{kind = "slow", action = "BatchCheckDeviceNames", count = 1, delay = 5}
    local from = #emu:requests() + 1
    local pid = start_cli(("apply --endpoint %s --product-key %s --manifest m.csv --timeout 60")
      :format(emu.endpoint, PK))
    assert.is_truthy(pid)
    local out = poll(150, function()
      local o = shell.read(dir .. "/bg.out") or ""
      return o:find("Plan:", 1, true) and o
    end) or ""
    local _, writes = since(emu, from)
    os.execute("kill -9 " .. pid .. " 2>/dev/null")
    assert.matches("%+ lamp_0001  create\n", out, shell.read(dir .. "/bg.err"))
    assert.matches("Plan: 1 to create", out)
    assert.are.equal(0, writes)
    -- the held call is answered after the kill: waited for, so that no later count sees it
    assert.is_truthy(poll(300, function()
      for _, a in ipairs((since(emu, from))) do if a == "BatchCheckDeviceNames" then return true end end
    end))
    emu:clear_faults()
    from = #emu:requests() + 1
    -- the library: on_plan is called once, before any write
    local seen
    assert(c:apply{ProductKey = PK, manifest = dir .. "/m.csv", on_plan = function(p)
      seen = {changes = p.changes, writes = select(2, since(emu, from))}
    end})
    assert.are.same({changes = 1, writes = 0}, seen)
  end)

  it("a killed apply's journal refuses another manifest before any request; the same one finishes it", function()
    shell.write(dir .. "/a.csv", "DeviceName\ntypo_0001\ntypo_0002\n")
    shell.write(dir .. "/b.csv", "DeviceName\nlamp_0001\n")
    killed_apply("a.csv")
    local code, _, err
    local journal = assert(shell.read(dir .. "/s.state"))
    assert.matches('"digest":"', journal)
    local from = #emu:requests() + 1
    code, _, err = run_cli(("apply --endpoint %s --product-key %s --manifest b.csv --state s.state")
      :format(emu.endpoint, PK))
    assert.are.equal(2, code, err)
    assert.matches("journal s%.state is an apply of another manifest %(a%.csv as it was then%)", err)
    assert.matches("run it again with that manifest unchanged", err)
    assert.matches("new journal path %(%-%-state FILE%)", err)
    assert.are.same({}, (since(emu, from)))
    -- the same devices written otherwise (JSON lines, comments) are the same manifest
    shell.write(dir .. "/a.jsonl", '# the same\n{"DeviceName":"typo_0001"}\n{"DeviceName": "typo_0002"}\n')
    assert.are.equal(manifest.digest(assert(manifest.load(dir .. "/a.csv"))),
      manifest.digest(assert(manifest.load(dir .. "/a.jsonl"))))
    assert.are_not.equal(manifest.digest(assert(manifest.load(dir .. "/a.csv"))),
      manifest.digest(assert(manifest.load{{DeviceName = "typo_0001"}, {DeviceName = "typo_0002", Nickname = ""}})))
    code, _, err = run_cli(("apply --endpoint %s --product-key %s --manifest a.jsonl --state s.state")
      :format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    assert.are.same({"typo_0001", "typo_0002"}, emu:state().products[PK].names)
  end)

  it("a journal written before digests is taken as it was", function()
    shell.write(dir .. "/a.csv", "DeviceName\ntypo_0001\n")
    killed_apply("a.csv")
    local code, _, err
    local journal = assert(shell.read(dir .. "/s.state"))
    local old = journal:gsub(',"digest":"[^"]*"', ""):gsub('"digest":"[^"]*",?', "")
    assert.are_not.equal(journal, old)
    shell.write(dir .. "/s.state", old)
    code, _, err = run_cli(("apply --endpoint %s --product-key %s --manifest a.csv --state s.state")
      :format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    assert.are.same({"typo_0001"}, emu:state().products[PK].names)
  end)

  it("checks wait alike in apply and retire, and refuses a Devices list with a hole", function()
    local from = #emu:requests() + 1
    for _, w in ipairs{-5, 0 / 0, math.huge, 86401} do
      local res, err = c:apply{ProductKey = PK, manifest = {{DeviceName = "lamp_0001"}}, retire_unlisted = true,
        undo = dir .. "/u.csv", wait = w}
      assert.is_nil(res)
      assert.are.equal("wait", err.parameter, tostring(w))
      res, err = c:retire{ProductKey = PK, Devices = {"lamp_0001"}, undo = dir .. "/u.csv", wait = w}
      assert.is_nil(res)
      assert.are.equal("wait", err.parameter, tostring(w))
    end
    shell.write(dir .. "/n.txt", "lamp_0001\n")
    local code, _, err = run_cli(("retire --endpoint %s --product-key %s --names-file n.txt --wait 90000")
      :format(emu.endpoint, PK))
    assert.are.equal(2, code, err)
    assert.has_error(function()
      c:retire{ProductKey = PK, Devices = {[1] = "lamp_0001", [3] = "lamp_0003"}, dry_run = true}
    end, "retire: Devices[2] is missing: a list must have no hole")
    assert.are.same({}, (since(emu, from)))
  end)

  it("refuses JSON numbers of any size where the manifest wants strings, naming the line", function()
    local cases = {
      {'{"DeviceName":123456789012345678901234}', "^f%.jsonl:2: DeviceName must be a string"},
      {'{"DeviceName":12345}', "^f%.jsonl:2: DeviceName must be a string"},
      {'{"DeviceName":"lamp_0002","Nickname":1e999999}', "^f%.jsonl:2: Nickname must be a string"},
      {'{"DeviceName":"lamp_0002","tags":{"k":99999999999999999999999}}', "^f%.jsonl:2: tags must be an object of strings"},
      {'{"DeviceName":"lamp_0002","groups":[1e400]}', "^f%.jsonl:2: groups must be an array of strings"},
      {'{"DeviceName":"lamp_0002","groups":[-18446744073709551617]}', "^f%.jsonl:2: groups must be an array of strings"},
    }
    for _, case in ipairs(cases) do
      local m, err = manifest.parse('{"DeviceName":"lamp_0001"}\n' .. case[1] .. "\n", "f.jsonl")
      assert.is_nil(m, case[1])
      assert.matches(case[2], err.message)
    end
    -- the CLI: refused with FILE:LINE, nothing sent
    shell.write(dir .. "/big.jsonl", '{"DeviceName":123456789012345678901234}\n')
    local from = #emu:requests() + 1
    local code, out, err = run_cli(("plan --endpoint %s --product-key %s --manifest big.jsonl"):format(emu.endpoint, PK))
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    assert.matches("big%.jsonl:1: DeviceName must be a string", err)
    assert.are.same({}, (since(emu, from)))
  end)

  it("plan notes the listed devices a refused retire left disabled, and the command that enables one works", function()
    fleet.register(c, {"old_0001", "old_0002", "old_0003"})
    -- a device that keeps its connection: ONLINE, so the retire is refused
    emu:set_online{ProductKey = PK, DeviceName = "old_0003", stay_online = true}
    shell.write(dir .. "/names.txt", "old_0001\nold_0002\nold_0003\n")
    shell.write(dir .. "/m.csv", "DeviceName\nold_0001\nold_0002\nold_0003\n")
    local code, _, err = run_cli(("retire --endpoint %s --product-key %s --names-file names.txt --wait 0")
      :format(emu.endpoint, PK))
    assert.are.equal(1, code, err)
    local enable = err:match("enable each again: (aliyun%-iot call EnableThing [^\n]*NAME)")
    assert.is_truthy(enable, err)
    local out
    code, out, err = run_cli(("plan --endpoint %s --product-key %s --manifest m.csv"):format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    assert.matches("Note: 2 listed device%(s%) disabled %(DISABLE%), which apply leaves so: old_0001, old_0002;", out)
    assert.matches("No changes", out)
    -- the command the refusal gave, for one device: the plan then notes only the other
    code, _, err = run_cli(("%s --endpoint %s"):format(enable:gsub("^aliyun%-iot ", ""):gsub("NAME", "old_0001"),
      emu.endpoint))
    assert.are.equal(0, code, err)
    code, out, err = run_cli(("plan --endpoint %s --product-key %s --manifest m.csv"):format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    assert.matches("Note: 1 listed device%(s%) disabled %(DISABLE%), which apply leaves so: old_0002;", out)
  end)

  it("reports a failed group creation, and the changes it stopped name it", function()
    shell.write(dir .. "/m.csv", "DeviceName,groups\nlamp_0001,north\nlamp_0002,north\n")
    assert(c:register_device{ProductKey = PK, DeviceName = "lamp_0001"})
    assert(c:register_device{ProductKey = PK, DeviceName = "lamp_0002"})
    emu:fault{kind = "reset_after", action = "CreateDeviceGroup", count = 1}
    local code, _, err = run_cli(("apply --endpoint %s --product-key %s --manifest m.csv --report r.jsonl")
      :format(emu.endpoint, PK))
    assert.are.equal(1, code, err)
    local recs = fleet.records(dir .. "/r.jsonl")
    assert.are.equal(3, #recs)
    assert.are.equal("create_group", recs[1].change)
    assert.are.equal("north", recs[1].target)
    assert.are.equal("failed", recs[1].outcome)
    assert.is_string(recs[1].code)
    assert.is_string(recs[1].message)
    assert.is_nil(recs[1].DeviceName)
    for i = 2, 3 do
      assert.are.equal("join", recs[i].change)
      assert.are.equal("skipped", recs[i].outcome)
      assert.matches("not sent: CreateDeviceGroup for group north failed first %(" .. recs[1].code .. "%)",
        recs[i].message)
    end
    -- run again: the group is found, the joins sent; the report of a success names it done
    code, _, err = run_cli(("apply --endpoint %s --product-key %s --manifest m.csv --report r2.jsonl")
      :format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    assert.matches('"change":"join","target":"north","outcome":"done"', shell.read(dir .. "/r2.jsonl"))
  end)
  it("refuses a journal another apply holds before reading the product, and a retire on an apply's journal", function()
    shell.write(dir .. "/m.csv", "DeviceName\nlamp_0001\n")
    killed_apply("m.csv")
    local from = #emu:requests() + 1
    -- held as a running apply holds it (flock on another open file)
    local lock = assert(require("aliyun.iot.core").lock_file(dir .. "/s.state"))
    local code, out, err = run_cli(("apply --endpoint %s --product-key %s --manifest m.csv --state s.state")
      :format(emu.endpoint, PK))
    lock:unlock()
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    assert.matches("journal s%.state is in use by another process", err)
    assert.are.same({}, (since(emu, from)))
    -- retire given the apply's journal: a wrong path (exit 2), not a damaged journal
    shell.write(dir .. "/n.txt", "lamp_0001\n")
    code, out, err = run_cli(("retire --endpoint %s --product-key %s --names-file n.txt --state s.state")
      :format(emu.endpoint, PK))
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    assert.matches("InvalidParameter: s%.state:1: is not a retire journal's first line", err)
    assert.are.same({}, (since(emu, from)))
    -- unlocked, the same apply finishes it
    code, out, err = run_cli(("apply --endpoint %s --product-key %s --manifest m.csv --state s.state")
      :format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    assert.matches("Apply: ", out)
  end)
end)
