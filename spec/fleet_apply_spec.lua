-- client:apply and `aliyun-iot apply` (issue 15) against the emulator over real HTTP: a
-- manifest applied creates, renames, tags and groups devices until the emulator's state
-- equals it; applied again, its plan is empty and no write is sent; a killed apply run
-- again repeats no write (the emulator's request log holds each once); limits are refused
-- before any request.
local fleet = require "spec.support.fleet"
local shell = require "spec.support.shell"

local PK, MANIFEST = fleet.PK, fleet.MANIFEST
local EXAMPLE = os.getenv("PWD") .. "/examples/fleet.csv"
local q = shell.quote

local WRITES = {BatchCheckDeviceNames = true, BatchRegisterDeviceWithApplyId = true,
  BatchRegisterDevice = true, RegisterDevice = true, CreateDeviceGroup = true,
  BatchUpdateDeviceNickname = true, SaveDeviceProp = true, DeleteDeviceProp = true,
  BatchAddDeviceGroupRelations = true, BatchDeleteDeviceGroupRelations = true,
  DisableThing = true, DeleteDevice = true}

-- The write requests the emulator received since `from`: {"Action params-as-JSON", ...}.
local function writes_since(emu, from)
  local out = {}
  for i, r in ipairs(emu:requests()) do
    if i >= from and WRITES[r.action] then
      local p = {}
      for k, v in pairs(r.params) do
        if not k:find("^Signature") and k ~= "Timestamp" and k ~= "AccessKeyId" and k ~= "Action"
           and k ~= "Format" and k ~= "Version" and k ~= "SignatureNonce" then p[k] = v end
      end
      local keys = {}
      for k in pairs(p) do keys[#keys + 1] = k end
      table.sort(keys)
      local parts = {}
      for j, k in ipairs(keys) do parts[j] = k .. "=" .. tostring(p[k]) end
      out[#out + 1] = r.action .. " " .. table.concat(parts, "&")
    end
  end
  return out
end

local function details(emu, name)
  local d = emu:state().products[PK]
  local out = {}
  for k, v in pairs(d and d.details and d.details[name] or {}) do
    if k ~= "Status" and k ~= "disabled" then out[k] = v end
  end
  return out
end

describe("fleet apply", function()
  local emu, c, dir, path

  local function run_cli(args) return fleet.run(dir, args) end

  setup(function()
    emu, dir = fleet.start()
    path = dir .. "/fleet.csv"
    shell.write(path, MANIFEST)
  end)
  teardown(function() fleet.stop(emu, dir) end)
  before_each(function() c = fleet.fresh(emu) end)

  it("creates, names, tags and groups an empty product's devices; a second apply sends no write", function()
    local res = assert(c:apply{ProductKey = PK, manifest = path})
    assert.are.equal(3, #res.Devices)
    local s = emu:state()
    assert.are.same({"lamp_0001", "lamp_0002", "lamp_0003"}, s.products[PK].names)
    assert.are.same({Nickname = "lamp_one", props = {site = "north", rev = "b"},
      groups = {"all_lamps", "north_site"}}, details(emu, "lamp_0001"))
    assert.are.same({Nickname = "", props = {site = "south"}, groups = {"all_lamps"}}, details(emu, "lamp_0002"))
    assert.are.same({Nickname = "lamp_three", groups = {}, props = {}}, details(emu, "lamp_0003"))
    -- one report record per change, in order
    local seen = {}
    for _, r in ipairs(res.Report) do
      seen[#seen + 1] = (r.DeviceName or r.target) .. " " .. r.change .. " " .. r.outcome
    end
    -- a group's creation is a change of its own, its record with no DeviceName
    assert.are.same({"lamp_0001 create created", "lamp_0002 create created", "lamp_0003 create created",
      "all_lamps create_group done", "north_site create_group done", "lamp_0001 tag_set done",
      "lamp_0002 tag_set done", "lamp_0001 join done", "lamp_0002 join done", "lamp_0001 join done"}, seen)
    for _, r in ipairs(res.Report) do assert.is_string(r.RequestId) end
    -- applied again: an empty plan, reads only
    local from = #emu:requests() + 1
    res = assert(c:apply{ProductKey = PK, manifest = path})
    assert.are.equal(0, res.Plan.changes)
    assert.are.same({}, res.Report)
    assert.are.same({}, writes_since(emu, from))
    assert.is_true(#emu:requests() >= from)
  end)

  it("updates a mixed product: renames, clears, sets and prunes tags, joins and leaves", function()
    assert(c:apply{ProductKey = PK, manifest = path})
    assert(c:register_device{ProductKey = PK, DeviceName = "stray_0001"})
    assert(c:batch_update_device_nickname{DeviceNicknameInfo = {
      {ProductKey = PK, DeviceName = "lamp_0002", Nickname = "lamp_two"}}})
    assert(c:save_device_prop{ProductKey = PK, DeviceName = "lamp_0001", Props = '{"site":"west","extra":"x"}'})
    local stale = assert(c:create_device_group{GroupName = "stale_group"}).Data.GroupId
    assert(c:batch_add_device_group_relations{GroupId = stale, Device = {{ProductKey = PK, DeviceName = "lamp_0002"}}})
    shell.write(dir .. "/mixed.csv", MANIFEST .. "lamp_0004,,batch=7,spare_group\n")
    local seen = {}
    local res = assert(c:apply{ProductKey = PK, manifest = dir .. "/mixed.csv", prune_tags = true,
      on_report = function(r, pos) seen[pos] = r end})
    assert.are.same(res.Report, seen)
    local by = {}
    for _, r in ipairs(res.Report) do
      by[(r.DeviceName or "") .. " " .. r.change .. " " .. (r.target or "")] = r.outcome
    end
    assert.are.same({["lamp_0004 create "] = "created", [" create_group spare_group"] = "done", ["lamp_0002 rename "] = "done",
      ["lamp_0001 tag_set site"] = "done", ["lamp_0001 tag_remove extra"] = "done",
      ["lamp_0004 tag_set batch"] = "done", ["lamp_0004 join spare_group"] = "done",
      ["lamp_0002 leave stale_group"] = "done"}, by)
    assert.are.same({{GroupName = "spare_group", outcome = "done", RequestId = res.Groups[1].RequestId}}, res.Groups)
    assert.are.same({Nickname = "lamp_one", props = {site = "north", rev = "b"},
      groups = {"all_lamps", "north_site"}}, details(emu, "lamp_0001"))
    assert.are.same({Nickname = "", props = {site = "south"}, groups = {"all_lamps"}}, details(emu, "lamp_0002"))
    assert.are.same({Nickname = "", props = {batch = "7"}, groups = {"spare_group"}}, details(emu, "lamp_0004"))
    -- the unlisted device is left alone
    assert.are.same({"lamp_0001", "lamp_0002", "lamp_0003", "lamp_0004", "stray_0001"}, emu:state().products[PK].names)
    assert.are.equal(0, assert(c:plan{ProductKey = PK, manifest = dir .. "/mixed.csv", prune_tags = true}).changes)
  end)

  it("moves a device from 10 groups to 10 others (leaves before joins)", function()
    local old, new = {}, {}
    for i = 1, 10 do old[i], new[i] = "old_g" .. i, "new_g" .. i end
    assert(c:apply{ProductKey = PK, manifest = {{DeviceName = "lamp_0001", groups = old}}})
    local res = assert(c:apply{ProductKey = PK, manifest = {{DeviceName = "lamp_0001", groups = new}}})
    assert.are.equal(30, #res.Report) -- 10 groups created, 10 leaves, 10 joins
    table.sort(new)
    assert.are.same(new, details(emu, "lamp_0001").groups)
    assert.are.equal(0, assert(c:plan{ProductKey = PK, manifest = {{DeviceName = "lamp_0001", groups = new}}}).changes)
  end)

  it("replaces a device's 100 tags with --prune-tags (removes first); kept tags over the limit refused unwritten", function()
    local a, b = {}, {}
    for i = 1, 100 do a["k" .. i], b["j" .. i] = "v", "w" end
    assert(c:apply{ProductKey = PK, manifest = {{DeviceName = "lamp_0001", tags = a}}})
    assert(c:apply{ProductKey = PK, manifest = {{DeviceName = "lamp_0001", tags = b}}, prune_tags = true})
    assert.are.same(b, details(emu, "lamp_0001").props)
    -- without prune_tags the 100 kept and one more would break the limit: refused, no write
    local from = #emu:requests() + 1
    local _, err = c:apply{ProductKey = PK, manifest = {{DeviceName = "lamp_0001", tags = {xx = "1"}}}}
    assert.are.equal("InvalidParameter", err.code)
    assert.matches("would hold 101 tags", err.message)
    assert.are.same({}, writes_since(emu, from))
  end)

  it("joins more than 200 devices to a group in calls of at most 200", function()
    local lines = {"DeviceName,groups"}
    for i = 1, 250 do lines[#lines + 1] = ("many_%04d,big_group"):format(i) end
    shell.write(dir .. "/many.csv", table.concat(lines, "\n") .. "\n")
    local from = #emu:requests() + 1
    assert(c:apply{ProductKey = PK, manifest = dir .. "/many.csv"})
    local sizes = {}
    for i, r in ipairs(emu:requests()) do
      if i >= from and r.action == "BatchAddDeviceGroupRelations" then
        local n = 0
        for k in pairs(r.params) do if k:find("^Device%.%d+%.DeviceName$") then n = n + 1 end end
        sizes[#sizes + 1] = n
      end
    end
    assert.are.same({200, 50}, sizes)
    for _, g in ipairs(emu:state().groups) do
      if g.GroupName == "big_group" then assert.are.equal(250, #g.devices) end
    end
  end)

  it("the CLI applies the example manifest, writes --report, and a second run changes nothing", function()
    local rep = dir .. "/report.jsonl"
    os.remove(rep)
    local code, out, err = run_cli(("apply --endpoint %s --product-key %s --manifest %s --report %s")
      :format(emu.endpoint, PK, q(EXAMPLE), q(rep)))
    assert.are.equal(0, code, err)
    assert.matches("\n%+ lamp_north_01  create\n", out)
    -- the created devices' nicknames are counted in the plan's totals
    assert.matches("Plan: 4 to create, 0 to update, 0 unchanged; 3 nicknames,", out)
    assert.matches("\nApply: 4 created, 13 done%.\n$", out) -- 3 of them groups created
    local n = 0
    for _, r in ipairs(fleet.records(rep)) do
      -- a device's change, or a group's creation (no DeviceName, the group its target)
      assert.is_string(r.change == "create_group" and r.target or r.DeviceName)
      assert.is_string(r.change)
      assert.is_nil(r.DeviceSecret)
      n = n + 1
    end
    assert.are.equal(17, n)
    assert.is_nil(err:find("DeviceSecret", 1, true))
    local from = #emu:requests() + 1
    code, out = run_cli(("apply --endpoint %s --product-key %s --manifest %s")
      :format(emu.endpoint, PK, q(EXAMPLE)))
    assert.are.equal(0, code)
    assert.matches("No changes", out)
    assert.are.same({}, writes_since(emu, from))
    -- --report never replaces a file
    local _
    code, _, err = run_cli(("apply --endpoint %s --product-key %s --manifest %s --report %s")
      :format(emu.endpoint, PK, q(EXAMPLE), q(rep)))
    assert.are.equal(2, code)
    assert.matches("report", err)
  end)

  it("refuses a manifest breaking a limit locally, with nothing sent", function()
    local tags = {}
    for i = 1, 101 do tags[i] = ("k%d=v"):format(i) end
    shell.write(dir .. "/bad.csv", "DeviceName,tags\nlamp_0001," .. table.concat(tags, ";") .. "\n")
    local code, out, err = run_cli(("apply --endpoint %s --product-key %s --manifest %s")
      :format(emu.endpoint, PK, q(dir .. "/bad.csv")))
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("bad%.csv:2:", err)
    local groups = "g_one;g_two;g_three;g_four;g_five;g_six;g_seven;g_eight;g_nine;g_ten1;g_eleven"
    shell.write(dir .. "/bad2.csv", "DeviceName,groups\nlamp_0001," .. groups .. "\n")
    local _, e2 = c:apply{ProductKey = PK, manifest = dir .. "/bad2.csv"}
    assert.are.equal("InvalidParameter", e2.code)
    local _, e3 = c:apply{ProductKey = PK, manifest = {{DeviceName = "lamp_0001", Nickname = "x"}}}
    assert.are.equal("InvalidParameter", e3.code)
    assert.are.equal(0, #emu:requests())
    assert.has_error(function() c:apply{ProductKey = PK, manifest = path, retire = true} end)
  end)

  it("a killed apply, run again with its --state, finishes without repeating a write", function()
    -- the first join is held by the emulator: the CLI is killed while it waits for it
    emu:fault{kind = "slow", action = "BatchAddDeviceGroupRelations", count = 1, delay = 2}
    os.remove(dir .. "/apply.report")
    local cmd = ("apply --endpoint %s --product-key %s --manifest %s --state apply.state --quiet " ..
      "--report apply.report"):format(emu.endpoint, PK, q(EXAMPLE))
    local pid = fleet.start_cli(dir, cmd, "kill")
    fleet.poll(function() return fleet.count(emu, "SaveDeviceProp") >= 4 end)
    assert.are.equal(4, fleet.count(emu, "SaveDeviceProp"))
    os.execute("sleep 0.3") -- the held join is sent meanwhile
    assert(os.execute("kill -9 " .. pid))
    -- the held join acts after the kill; wait for it before running again
    local function held() return fleet.count(emu, function(r) return r.fault == "slow" end) > 0 end
    assert.is_true(fleet.poll(held))
    assert.is_true(shell.read(dir .. "/apply.state") ~= nil)
    -- the outcomes decided before the kill reached the report (each batch's before the
    -- next batch of writes was sent): the 4 creations, the 3 groups created, the 4 tags set
    local function report_lines()
      local out = {}
      for _, r in ipairs(fleet.records(dir .. "/apply.report")) do
        out[#out + 1] = tostring(r.DeviceName) .. " " .. r.change .. " " .. tostring(r.target) .. " " .. r.outcome
      end
      table.sort(out)
      return out
    end
    local before = report_lines()
    assert.are.equal(11, #before, table.concat(before, "\n"))
    -- resume cannot finish an apply: refused, naming the command that can, nothing sent
    local from = #emu:requests() + 1
    local code, _, err = run_cli("resume --endpoint " .. emu.endpoint .. " --state apply.state")
    assert.are.equal(2, code, err)
    assert.matches("journal of an apply", err)
    assert.matches("aliyun%-iot apply %-%-product%-key " .. PK .. " %-%-manifest '?[^ ]*fleet%.csv'? %-%-state apply%.state", err)
    assert.are.equal(from - 1, #emu:requests())
    -- a report the journal did not record is refused and left as it is
    shell.write(dir .. "/other.report", "mine\n")
    code, _, err = run_cli((cmd:gsub("apply%.report", "other.report")))
    assert.are.equal(2, code, err)
    assert.matches("%-%-report other%.report exists and it is not the report the apply journal recorded", err)
    assert.are.equal("mine\n", shell.read(dir .. "/other.report"))
    assert.are.equal(from - 1, #emu:requests())
    -- the same command line finishes the apply and continues its report
    code, _, err = run_cli(cmd)
    assert.are.equal(0, code, err)
    local writes, seen = writes_since(emu, 1), {}
    for _, w in ipairs(writes) do
      assert.is_nil(seen[w], "sent twice: " .. w)
      seen[w] = true
    end
    assert.are.equal(0, assert(c:plan{ProductKey = PK, manifest = EXAMPLE}).changes)
    assert.are.equal(4, emu:state().products[PK].devices)
    local after, once = report_lines(), {}
    for _, l in ipairs(after) do
      assert.is_nil(once[l], "reported twice: " .. l)
      once[l] = true
    end
    for _, l in ipairs(before) do assert.is_true(once[l], l) end
  end)

  it("an empty --state file (a run killed before the journal's first line) is no creation started", function()
    shell.write(dir .. "/empty.state", "")
    local cmd = ("apply --endpoint %s --product-key %s --manifest %s --state empty.state --quiet")
      :format(emu.endpoint, PK, q(EXAMPLE))
    local code, _, err = run_cli(cmd)
    assert.are.equal(0, code, err)
    assert.are.equal(0, assert(c:plan{ProductKey = PK, manifest = EXAMPLE}).changes)
    assert.is_nil(shell.read(dir .. "/empty.state"))
    -- anything else at the path is still refused, left as it is, nothing sent
    local from = #emu:requests() + 1
    shell.write(dir .. "/target.state", "")
    assert(shell.ok(("cd %s && ln -sf target.state link.state"):format(q(dir))))
    code, _, err = run_cli((cmd:gsub("empty%.state", "link.state")))
    assert.are.equal(2, code, err)
    assert.is_true(shell.read(dir .. "/link.state") == "")
    shell.write(dir .. "/junk.state", "not a journal\n")
    code, _, err = run_cli((cmd:gsub("empty%.state", "junk.state")))
    assert.are.equal(2, code, err)
    assert.are.equal("not a journal\n", shell.read(dir .. "/junk.state"))
    assert.are.equal(from - 1, #emu:requests())
    -- the library alike
    shell.write(dir .. "/lib.state", "")
    emu:reset()
    assert(c:apply{ProductKey = PK, manifest = path, journal = dir .. "/lib.state"})
    assert.is_nil(shell.read(dir .. "/lib.state"))
    assert.are.equal(3, emu:state().products[PK].devices)
  end)

  it("a killed apply's creation is finished from its --state: no name checked or registered twice", function()
    emu:set{async_delay = 1}
    local cmd = ("apply --endpoint %s --product-key %s --manifest %s --state create.state --quiet")
      :format(emu.endpoint, PK, q(EXAMPLE))
    local pid = fleet.start_cli(dir, cmd, "kill")
    local function registered()
      return (shell.read(dir .. "/create.state") or ""):find('"event":"apply"', 1, true) ~= nil
        and #writes_since(emu, 1) >= 2
    end
    assert.is_true(fleet.poll(registered))
    assert(os.execute("kill -9 " .. pid))
    emu:set{async_delay = 0}
    local code, _, err = run_cli(cmd)
    assert.are.equal(0, code, err)
    local seen = {}
    for _, w in ipairs(writes_since(emu, 1)) do
      assert.is_nil(seen[w], "sent twice: " .. w)
      seen[w] = true
    end
    assert.are.equal(4, emu:state().products[PK].devices)
    assert.are.equal(0, assert(c:plan{ProductKey = PK, manifest = EXAMPLE}).changes)
    -- a journal of another product is refused before any request
    local from = #emu:requests() + 1
    code, _, err = run_cli(("apply --endpoint %s --product-key a1OtherPK9 --manifest %s --state create.state")
      :format(emu.endpoint, q(EXAMPLE)))
    assert.are.equal(2, code)
    assert.matches("not an apply's journal for product a1OtherPK9", err)
    assert.are.equal(from - 1, #emu:requests())
  end)

  it("--retire-unlisted retires the devices the manifest does not list, undo export first", function()
    assert(c:register_device{ProductKey = PK, DeviceName = "stray_0001"})
    assert(c:register_device{ProductKey = PK, DeviceName = "stray_0002"})
    emu:set_online{ProductKey = PK, DeviceName = "stray_0002", stay_online = true}
    local cmd = ("apply --endpoint %s --product-key %s --manifest fleet.csv --retire-unlisted --wait 0")
      :format(emu.endpoint, PK)
    os.remove(dir .. "/fleet.csv.undo.csv")
    local code, out, err = run_cli(cmd)
    assert.are.equal(1, code)
    assert.matches("\n%- stray_0001  retire\n", out)
    assert.matches("DevicesOnline.*stray_0002", err)
    assert.matches("stray_0001", shell.read(dir .. "/fleet.csv.undo.csv"))
    assert.are.same({"lamp_0001", "lamp_0002", "lamp_0003", "stray_0001", "stray_0002"},
      emu:state().products[PK].names)
    -- with --state the undo export defaults to STATE.undo.csv
    code, out, err = run_cli(cmd .. " --force --state ru.state")
    assert.are.equal(0, code, err)
    assert.matches("Apply: 2 deleted%.\n$", out)
    assert.matches("warning: %-%-force deleted 1 device%(s%) still ONLINE after %-%-wait 0 s: stray_0002", err)
    assert.matches("stray_0002", shell.read(dir .. "/ru.state.undo.csv"))
    assert.are.same({"lamp_0001", "lamp_0002", "lamp_0003"}, emu:state().products[PK].names)
    code, out, err = run_cli(("apply --endpoint %s --product-key %s --manifest fleet.csv --force"):format(emu.endpoint, PK))
    assert.are.equal(2, code)
    assert.matches("go with %-%-retire%-unlisted", err)
    assert.are.equal("", out)
    local from = #emu:requests() + 1
    code, out, err = run_cli(("apply --endpoint %s --product-key %s --manifest fleet.csv --retire-unlisted " ..
      "--state same.state --undo same.state"):format(emu.endpoint, PK))
    assert.are.equal(2, code)
    assert.matches("must be another file than the journal", err)
    assert.are.equal("", out)
    assert.is_nil(shell.read(dir .. "/same.state"))
    -- nor the retire's journal beside it: refused before any write, not when retiring
    code, out, err = run_cli(("apply --endpoint %s --product-key %s --manifest fleet.csv --retire-unlisted " ..
      "--state same.state --undo same.state.retire"):format(emu.endpoint, PK))
    assert.are.equal(2, code)
    assert.matches("retire's journal beside it", err)
    assert.are.equal("", out)
    assert.are.equal(from - 1, #emu:requests())
  end)

  it("adopts a device that appears between the plan and its creation, and names it", function()
    -- the check is held: the device is registered (with another nickname) meanwhile
    emu:fault{kind = "slow", action = "BatchCheckDeviceNames", count = 1, delay = 2}
    local pid = fleet.start_cli(dir, ("apply --endpoint %s --product-key %s --manifest fleet.csv --report adopt.jsonl")
      :format(emu.endpoint, PK), "adopt")
    assert.is_truthy(pid)
    fleet.poll(function() return fleet.count(emu, "QueryDevice") > 0 end)
    assert(c:register_device{ProductKey = PK, DeviceName = "lamp_0003", Nickname = "someone_else"})
    fleet.poll(function() return shell.read(dir .. "/adopt.code") end, 60)
    assert.are.equal("0\n", shell.read(dir .. "/adopt.code"), shell.read(dir .. "/adopt.err"))
    assert.matches('"DeviceName":"lamp_0003","change":"create","target":"lamp_three","outcome":"existing"',
      shell.read(dir .. "/adopt.jsonl"))
    assert.are.equal("lamp_three", details(emu, "lamp_0003").Nickname)
    assert.are.equal(0, assert(c:plan{ProductKey = PK, manifest = path}).changes)
  end)
end)
