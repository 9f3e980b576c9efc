-- client:plan and `aliyun-iot plan` (issue 15) against the emulator over real HTTP: an
-- empty product, one already matching its manifest (an empty plan), and a mixed one; no
-- write ever sent (the emulator's request log holds reads only); answers that do not look
-- like the API's end in InvalidResponse.
local fleet = require "spec.support.fleet"
local shell = require "spec.support.shell"

local PK, MANIFEST = fleet.PK, fleet.MANIFEST
local q = shell.quote

local READS = {QueryDevice = true, BatchQueryDeviceDetail = true, QueryDeviceProp = true,
               QueryDeviceGroupList = true, QueryDeviceListByDeviceGroup = true}

local function assert_reads_only(emu, from)
  local acts = fleet.actions(emu, from)
  assert.is_true(#acts > 0)
  for _, a in ipairs(acts) do assert.is_true(READS[a], "a write was sent: " .. tostring(a)) end
end

local function by_name(p)
  local t = {}
  for _, d in ipairs(p.Devices) do t[d.DeviceName] = d end
  return t
end

describe("fleet plan", function()
  local emu, c, dir, path

  -- Makes the product match MANIFEST through direct calls (what apply would do).
  local function make_matching()
    fleet.register(c, {"lamp_0001", "lamp_0002", "lamp_0003"})
    assert(c:batch_update_device_nickname{DeviceNicknameInfo = {
      {ProductKey = PK, DeviceName = "lamp_0001", Nickname = "lamp_one"},
      {ProductKey = PK, DeviceName = "lamp_0003", Nickname = "lamp_three"}}})
    assert(c:save_device_prop{ProductKey = PK, DeviceName = "lamp_0001", Props = '{"site":"north","rev":"b"}'})
    assert(c:save_device_prop{ProductKey = PK, DeviceName = "lamp_0002", Props = '{"site":"south"}'})
    local north = assert(c:create_device_group{GroupName = "north_site"}).Data.GroupId
    local all = assert(c:create_device_group{GroupName = "all_lamps"}).Data.GroupId
    assert(c:batch_add_device_group_relations{GroupId = north, Device = {{ProductKey = PK, DeviceName = "lamp_0001"}}})
    assert(c:batch_add_device_group_relations{GroupId = all, Device = {
      {ProductKey = PK, DeviceName = "lamp_0001"}, {ProductKey = PK, DeviceName = "lamp_0002"}}})
    return north, all
  end

  local function run_cli(args) return fleet.run(dir, args) end

  setup(function()
    emu, dir = fleet.start()
    path = dir .. "/fleet.csv"
    shell.write(path, MANIFEST)
  end)
  teardown(function() fleet.stop(emu, dir) end)
  before_each(function() c = fleet.fresh(emu) end)

  it("plans every device's creation on an empty product, sending reads only", function()
    local p = assert(c:plan{ProductKey = PK, manifest = path})
    assert.are.equal(PK, p.ProductKey)
    local d = by_name(p)
    assert.are.same({DeviceName = "lamp_0001", action = "create", rename = {from = "", to = "lamp_one"},
      tags = {set = {site = "north", rev = "b"}}, join = {"all_lamps", "north_site"}}, d.lamp_0001)
    assert.are.same({DeviceName = "lamp_0003", action = "create", rename = {from = "", to = "lamp_three"}}, d.lamp_0003)
    assert.are.same({"all_lamps", "north_site"}, p.CreateGroups)
    local t = p.Totals
    -- the two created devices with a Nickname count as nicknames set
    assert.are.same({3, 0, 0, 2, 3, 3, 2}, {t.create, t.update, t.nothing, t.rename, t.tag_set, t.join, t.create_group})
    assert.are.equal(5, p.changes)
    assert.are.same({}, p.Unlisted)
    assert_reads_only(emu, 1)
    -- tags are read only for devices that exist: none here
    for _, r in ipairs(emu:requests()) do assert.are_not.equal("QueryDeviceProp", r.action) end
  end)

  it("plans nothing for a product that already matches (an empty plan)", function()
    make_matching()
    local from = #emu:requests() + 1
    local p = assert(c:plan{ProductKey = PK, manifest = path, prune_tags = true})
    assert.are.equal(0, p.changes)
    for _, d in ipairs(p.Devices) do assert.are.same({DeviceName = d.DeviceName, action = "nothing"}, d) end
    assert.are.same({}, p.CreateGroups)
    assert.are.equal(3, p.Totals.nothing)
    assert_reads_only(emu, from)
    -- one QueryDeviceProp a manifest device that exists and manages tags (all 3), no more
    assert.are.equal(3, fleet.count(emu, "QueryDeviceProp", from))
    -- the CLI agrees: exit 0 even with --detailed-exitcode, and says so
    local code, out = run_cli(("plan --endpoint %s --product-key %s --manifest %s --detailed-exitcode")
      :format(emu.endpoint, PK, q(path)))
    assert.are.equal(0, code)
    assert.matches("Plan: 0 to create, 0 to update, 3 unchanged;", out)
    assert.matches("No changes", out)
  end)

  it("plans a mixed product: create, rename, clear, tags set, removed or kept, join, leave, unlisted", function()
    local _, all = make_matching()
    assert(c:register_device{ProductKey = PK, DeviceName = "stray_0001"})
    assert(c:batch_update_device_nickname{DeviceNicknameInfo = {
      {ProductKey = PK, DeviceName = "lamp_0003", Nickname = "old_name"},
      {ProductKey = PK, DeviceName = "lamp_0002", Nickname = "lamp_two"}}})
    assert(c:save_device_prop{ProductKey = PK, DeviceName = "lamp_0001", Props = '{"site":"west","extra":"x"}'})
    local stale = assert(c:create_device_group{GroupName = "stale_group"}).Data.GroupId
    assert(c:batch_add_device_group_relations{GroupId = stale, Device = {{ProductKey = PK, DeviceName = "lamp_0002"}}})
    assert(c:batch_delete_device_group_relations{GroupId = all, Device = {{ProductKey = PK, DeviceName = "lamp_0002"}}})
    local mixed = MANIFEST .. "lamp_0004,,batch=7,spare_group\n"
    local from = #emu:requests() + 1
    shell.write(dir .. "/mixed.csv", mixed)
    local p = assert(c:plan{ProductKey = PK, manifest = dir .. "/mixed.csv"})
    local d = by_name(p)
    assert.are.same({DeviceName = "lamp_0001", action = "update",
      tags = {set = {site = "north"}, kept = {"extra"}}}, d.lamp_0001)
    assert.are.same({DeviceName = "lamp_0002", action = "update", rename = {from = "lamp_two", to = ""},
      join = {"all_lamps"}, leave = {"stale_group"}}, d.lamp_0002)
    assert.are.same({DeviceName = "lamp_0003", action = "update",
      rename = {from = "old_name", to = "lamp_three"}}, d.lamp_0003)
    assert.are.same({DeviceName = "lamp_0004", action = "create", tags = {set = {batch = "7"}},
      join = {"spare_group"}}, d.lamp_0004)
    assert.are.same({"spare_group"}, p.CreateGroups)
    assert.are.same({"stray_0001"}, p.Unlisted)
    assert.are.same({}, p.Retire)
    local t = p.Totals
    assert.are.same({1, 3, 0, 2, 2, 0, 2, 1, 1, 1, 0},
      {t.create, t.update, t.nothing, t.rename, t.tag_set, t.tag_remove, t.join, t.leave, t.create_group,
       t.unlisted, t.retire})
    -- with prune_tags the extra key is removed; with retire_unlisted the stray device retired
    local p2 = assert(c:plan{ProductKey = PK, manifest = dir .. "/mixed.csv", prune_tags = true, retire_unlisted = true})
    assert.are.same({set = {site = "north"}, remove = {"extra"}}, by_name(p2).lamp_0001.tags)
    assert.are.same({"stray_0001"}, p2.Retire)
    assert.are.same({1, 1}, {p2.Totals.tag_remove, p2.Totals.retire})
    assert_reads_only(emu, from)
    -- the CLI prints it device by device and in totals; 2 with --detailed-exitcode
    from = #emu:requests() + 1
    local code, out, err = run_cli(("plan --endpoint %s --product-key %s --manifest %s --prune-tags --detailed-exitcode")
      :format(emu.endpoint, PK, q(dir .. "/mixed.csv")))
    assert.are.equal(2, code, err)
    assert.matches("\n~ lamp_0001  update\n    tags set: site=north\n    tags removed: extra\n", out)
    assert.matches("\n~ lamp_0002  update\n    nickname: \"lamp_two\" %-> \"\"\n    groups joined: all_lamps\n" ..
      "    groups left: stale_group\n", out)
    assert.matches("\n%+ lamp_0004  create\n", out)
    assert.matches("^%+ group spare_group  create\n", out)
    assert.matches("\n%? stray_0001  unlisted %(left alone; %-%-retire%-unlisted retires it%)\n", out)
    assert.matches("Plan: 1 to create, 3 to update, 0 unchanged; 2 nicknames, 2 tags set, 1 tags removed, " ..
      "2 group joins, 1 group leaves, 1 groups to create; 1 unlisted, 0 to retire%.\n$", out)
    code, out = run_cli(("plan --endpoint %s --product-key %s --manifest %s --retire-unlisted")
      :format(emu.endpoint, PK, q(dir .. "/mixed.csv")))
    assert.are.equal(0, code)
    assert.matches("\n%- stray_0001  retire\n", out)
    assert_reads_only(emu, from)
  end)

  it("takes the manifest as a Lua array and JSON lines alike", function()
    make_matching()
    local p = assert(c:plan{ProductKey = PK, manifest = {
      {DeviceName = "lamp_0001", Nickname = "lamp_one", tags = {site = "north", rev = "b"}, groups = {"north_site", "all_lamps"}},
      {DeviceName = "lamp_0002", tags = "site=south", groups = "all_lamps"},
      {DeviceName = "lamp_0003", Nickname = "lamp_three"}}})
    assert.are.equal(0, p.changes)
    shell.write(dir .. "/fleet.jsonl", '{"DeviceName":"lamp_0001","Nickname":"lamp_one"}\n' ..
      '{"DeviceName":"lamp_0002","Nickname":"lamp_two"}\n')
    p = assert(c:plan{ProductKey = PK, manifest = dir .. "/fleet.jsonl"})
    assert.are.same({1, 1}, {p.Totals.update, p.Totals.unlisted})
  end)

  it("the CLI refuses a bad manifest or command line before any request", function()
    shell.write(dir .. "/bad.csv", "DeviceName,groups\nlamp_0001,a;b\n")
    local code, out, err = run_cli(("plan --endpoint %s --product-key %s --manifest %s")
      :format(emu.endpoint, PK, q(dir .. "/bad.csv")))
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("bad%.csv:2: device lamp_0001: group \"a\" must be 4 to 30 characters", err)
    -- the manifest is checked before anything is announced or read
    assert.is_nil(err:find("reading the state", 1, true), err)
    local groups = "g_one;g_two;g_three;g_four;g_five;g_six;g_seven;g_eight;g_nine;g_ten1;g_eleven"
    shell.write(dir .. "/bad11.csv", "DeviceName,groups\nlamp_0001,lamp_0002\nlamp_0002," .. groups .. "\n")
    code, out, err = run_cli(("plan --endpoint %s --product-key %s --manifest %s")
      :format(emu.endpoint, PK, q(dir .. "/bad11.csv")))
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("bad11%.csv:3: device lamp_0002: is in 11 groups, at most 10", err)
    assert.is_nil(err:find("reading the state", 1, true), err)
    code = run_cli(("plan --endpoint %s --product-key %s --manifest %s --detailed-exitcode")
      :format(emu.endpoint, PK, q(dir .. "/bad.csv")))
    assert.are.equal(1, code)
    code, out, err = run_cli("plan --product-key " .. PK)
    assert.are.equal("", out)
    assert.are.equal(2, code)
    assert.matches("'plan' needs %-%-manifest", err)
    code = run_cli("plan --product-key " .. PK .. " --detailed-exitcode")
    assert.are.equal(1, code)
    code = run_cli("register --product-key " .. PK .. " --count 1 --prune-tags")
    assert.are.equal(2, code)
    assert.are.equal(0, #emu:requests())
  end)

  it("the state reader passes the listing's error on and refuses records unlike the API's", function()
    local state = require "aliyun.iot.fleet.state"
    local port = require("aliyun.iot.batch.port").new(c)
    local m = assert(require("aliyun.iot.fleet.manifest").parse("DeviceName\nlamp_0001\n"))
    local function listing(items)
      local i = 0
      return function()
        i = i + 1
        return items[i], items.err
      end
    end
    local boom = {code = "Throttling", message = "slow down"}
    local s, err = state.read(port, {ProductKey = PK, manifest = m, devices = listing{false, err = boom}})
    assert.is_nil(s)
    assert.are.equal(boom, err)
    for _, items in ipairs{
      {"lamp_0001"}, {{DeviceName = "a b c d"}}, {{DeviceName = "lamp_0001", Nickname = 5}},
      {{DeviceName = "lamp_0001"}, {DeviceName = "lamp_0001"}},
      {{DeviceName = "lamp_0001", ProductKey = "a1Other"}},
    } do
      s, err = state.read(port, {ProductKey = PK, manifest = m, devices = listing(items)})
      assert.is_nil(s)
      assert.are.equal("InvalidResponse", err.code)
    end
    assert.are.equal(0, #emu:requests())
  end)

  it("ends in InvalidResponse when tags or groups do not look like the API's", function()
    make_matching()
    local function tampered(action, from, to)
      return fleet.tampering(emu, action, function(res) res.body = res.body:gsub(from, to) end)
    end
    local cases = {
      {"BatchQueryDeviceDetail", '"DeviceName":"lamp_0001"', '"DeviceName":"other_0001"'},
      {"BatchQueryDeviceDetail", '"Nickname":"lamp_one"', '"Nickname":1'},
      {"QueryDeviceProp", '"Data":"{', '"Data":"[{'},
      {"QueryDeviceProp", '\\"south\\"', '1'},
      {"QueryDeviceGroupList", '"Total":2', '"Total":3'},
      {"QueryDeviceGroupList", '"GroupName":"all_lamps"', '"GroupName":"north_site"'},
      {"QueryDeviceListByDeviceGroup", '"DeviceName":"lamp_0001"', '"DeviceName":7'},
      {"QueryDeviceListByDeviceGroup", '"PageSize":50', '"PageSize":10'},
    }
    -- the details leave out devices deleted since the listing: those are planned anew
    local gone = assert(tampered("BatchQueryDeviceDetail", '"Data":%[.-%]', '"Data":[]'):plan{ProductKey = PK, manifest = path})
    assert.are.same({3, 0}, {gone.Totals.create, gone.Totals.update})
    for _, case in ipairs(cases) do
      local p, err = tampered(case[1], case[2], case[3]):plan{ProductKey = PK, manifest = path}
      assert.is_nil(p, case[1] .. " " .. case[3])
      assert.are.equal("InvalidResponse", err.code, case[1] .. " " .. case[3])
    end
  end)
end)
