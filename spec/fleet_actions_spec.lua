-- The fleet actions (docs/wire.md §10) through the client against the emulator over real
-- HTTP, and the emulator's own limits through a signer of the spec's (spec/emulator/signer.lua).
local emulator = require "aliyun.iot.emulator"
local fleet = require "spec.support.fleet"
local s = require "spec.emulator.signer"
local cjson = require "cjson"

local PK = fleet.PK

-- No pacing and no retry: the emulator's limits are met by each call as it is.
local function client_for(emu, opts)
  local o = {qps = false, max_retries = 0}
  for k, v in pairs(opts or {}) do o[k] = v end
  return fleet.client(emu, o)
end

describe("fleet actions", function()
  local emu, c

  -- Raw signed call, bypassing the client's own checks (the emulator's limits).
  local function raw(action, extra)
    local _, body = s.v1(emu, "POST", s.params(action, extra))
    return cjson.decode(body)
  end

  local function register(names)
    local r = assert(c:register_device{ProductKey = PK, DeviceName = names[1]})
    for i = 2, #names do assert(c:register_device{ProductKey = PK, DeviceName = names[i]}) end
    return r
  end

  local function group(name)
    return assert(c:create_device_group{GroupName = name}).Data.GroupId
  end

  local function devices(names)
    local out = {}
    for i, n in ipairs(names) do out[i] = {ProductKey = PK, DeviceName = n} end
    return out
  end

  setup(function() emu = emulator.start{async_delay = 0} end)
  teardown(function() emu:stop() end)
  before_each(function()
    emu:reset()
    emu:set{async_delay = 0, max_count = 10000}
    c = client_for(emu)
  end)

  it("every new action works and answers deep-equal in JSON and XML", function()
    local j, x = client_for(emu, {format = "JSON"}), client_for(emu, {format = "XML"})
    local reg = register{"fleet_001", "fleet_002", "fleet_003"}
    local gid = group("site_one")
    assert(j:save_device_prop{ProductKey = PK, DeviceName = "fleet_001", Props = '{"site":"north","rev":"b"}'})
    assert(x:save_device_prop{IotId = reg.Data.IotId, Props = '{"batch":"7"}'})
    assert(x:delete_device_prop{ProductKey = PK, DeviceName = "fleet_001", PropKey = "batch"})
    local add = assert(x:batch_add_device_group_relations{GroupId = gid, Device = devices{"fleet_001", "fleet_002"}})
    assert.are.same({2, 2, 0, 0}, {add.ValidDeviceCount, add.SuccessAddedDeviceCount,
                                   add.AlreadyRelatedGroupDeviceCount, add.ExceedTenGroupDeviceCount})
    assert(j:batch_update_device_nickname{DeviceNicknameInfo = {
      {ProductKey = PK, DeviceName = "fleet_002", Nickname = "lamp_two"}, {IotId = reg.Data.IotId, Nickname = "lamp_one"}}})
    assert(x:disable_thing{ProductKey = PK, DeviceName = "fleet_003"})
    local calls = {
      {"BatchQueryDeviceDetail", {ProductKey = PK, DeviceName = {"fleet_001", "nobody_here", "fleet_002"}}},
      {"BatchQueryDeviceDetail", {ProductKey = PK, DeviceName = {"nobody_here"}}},
      {"QueryDeviceProp", {ProductKey = PK, DeviceName = "fleet_001"}},
      {"QueryDeviceProp", {ProductKey = PK, DeviceName = "fleet_002"}},
      {"QueryDeviceGroupList", {}},
      {"QueryDeviceGroupList", {GroupName = "one", PageSize = 1}},
      {"QueryDeviceListByDeviceGroup", {GroupId = gid}},
      {"QueryDevice", {ProductKey = PK, PageSize = 1}},
      {"BatchGetDeviceState", {ProductKey = PK, DeviceName = {"fleet_001", "fleet_003"}}},
    }
    for _, call in ipairs(calls) do
      local a = assert(j:call(call[1], call[2]))
      local b = assert(x:call(call[1], call[2]))
      a.RequestId, b.RequestId = nil, nil
      assert.are.same(a, b, call[1])
    end
    local d = assert(x:batch_query_device_detail{ProductKey = PK, DeviceName = {"fleet_001", "nobody_here", "fleet_002"}})
    assert.are.equal(2, #d.Data.Data)
    assert.are.equal("lamp_two", d.Data.Data[2].Nickname)
    assert.is_string(d.Data.Data[1].DeviceSecret)
    assert.are.same({rev = "b", site = "north"},
      cjson.decode(assert(x:query_device_prop{ProductKey = PK, DeviceName = "fleet_001"}).Data))
    local members = assert(x:query_device_list_by_device_group{GroupId = gid})
    assert.are.equal(2, members.Total)
    assert.are.equal("fleet_001", members.Data.SimpleDeviceInfo[1].DeviceName)
    assert(j:batch_delete_device_group_relations{GroupId = gid, Device = devices{"fleet_001"}})
    local st = emu:state()
    assert.are.same({"a1TestPK001/fleet_002"}, st.groups[1].devices)
    assert.are.same({"site_one"}, st.products[PK].details.fleet_002.groups)
    assert.are.equal("lamp_one", st.products[PK].details.fleet_001.Nickname)
    assert.are.equal("DISABLE", st.products[PK].details.fleet_003.Status)
    assert(x:enable_thing{ProductKey = PK, DeviceName = "fleet_003"})
    assert.is_nil(emu:state().products[PK].details.fleet_003)
  end)

  it("BatchQueryDeviceDetail takes at most 100 names, refused by the client and the emulator", function()
    local names = {}
    for i = 1, 101 do names[i] = ("dev_%04d"):format(i) end
    local r, err = c:batch_query_device_detail{ProductKey = PK, DeviceName = names}
    assert.is_nil(r)
    assert.are.equal("InvalidParameter", err.code)
    assert.are.equal(0, #emu:requests())
    local extra = {ProductKey = PK}
    for i = 1, 101 do extra["DeviceName." .. i] = names[i] end
    assert.are.equal("iot.common.InvalidFormattedParameter", raw("BatchQueryDeviceDetail", extra).Code)
    extra["DeviceName.101"] = nil
    assert.is_true(raw("BatchQueryDeviceDetail", extra).Success)
  end)

  it("QueryDevice past 10,000 results needs NextToken; following it from the start lists every device once", function()
    c = client_for(emu, {max_batch_size = 10000})
    assert(c:batch_register_device{ProductKey = PK, Count = 10000})
    assert(c:register_device{ProductKey = PK, DeviceName = "the_last_one"})
    assert(c:query_device{ProductKey = PK, PageSize = 50, CurrentPage = 200})
    local r, err = c:query_device{ProductKey = PK, PageSize = 50, CurrentPage = 201}
    assert.is_nil(r)
    assert.are.equal("iot.common.InvalidPageParams", err.code)
    local seen, n, token, pages = {}, 0, nil, 0
    repeat
      local page = assert(c:query_device{ProductKey = PK, PageSize = 50, NextToken = token})
      pages = pages + 1
      for _, dev in ipairs(page.Data.DeviceInfo) do
        assert.is_nil(seen[dev.DeviceName])
        seen[dev.DeviceName], n = true, n + 1
      end
      token = page.NextToken
    until not token or pages > 300
    assert.are.equal(10001, n)
    assert.are.equal(201, pages)
    local bad = raw("QueryDevice", {ProductKey = PK, NextToken = "NTzz_" .. PK})
    assert.are.equal("iot.common.InvalidFormattedParameter", bad.Code)
  end)

  it("a second BatchRegisterDeviceWithApplyId is refused once the apply has moved on", function()
    local id = assert(c:batch_check_device_names{ProductKey = PK, DeviceName = {"twice_001"}}).Data.ApplyId
    assert(c:batch_register_device_with_apply_id{ProductKey = PK, ApplyId = id})
    local r, err = c:batch_register_device_with_apply_id{ProductKey = PK, ApplyId = id}
    assert.is_nil(r)
    assert.are.equal("iot.device.IncorrentDeviceApplyInfo", err.code)
    assert.are.equal(1, emu:state().products[PK].devices)
    local rnd = assert(c:batch_register_device{ProductKey = PK, Count = 1}).Data.ApplyId
    local kinds = {}
    for _, a in ipairs(emu:state().applies) do kinds[tostring(a.ApplyId)] = a.Kind end
    assert.are.same({[tostring(id)] = "check", [tostring(rnd)] = "count"}, kinds)
  end)

  it("props: at most 100 keys and 5 KB a device, a JSON object of strings; nothing changes when refused", function()
    register{"props_001"}
    local function save(props)
      return raw("SaveDeviceProp", {ProductKey = PK, DeviceName = "props_001", Props = props})
    end
    local many = {}
    for i = 1, 100 do many["k" .. i] = "v" end
    assert.is_true(save(cjson.encode(many)).Success)
    assert.are.equal("iot.common.InvalidFormattedParameter", save('{"one.more":"v"}').Code)
    assert(c:delete_device_prop{ProductKey = PK, DeviceName = "props_001", PropKey = "k1"})
    assert(c:delete_device_prop{ProductKey = PK, DeviceName = "props_001", PropKey = "k1"})
    assert.is_true(save('{"one.more":"v"}').Success)
    for i = 1, 100 do assert(c:delete_device_prop{ProductKey = PK, DeviceName = "props_001", PropKey = "k" .. i}) end
    -- 5 KB of JSON made of values within their own 128-character limit
    local big = {}
    for i = 1, 40 do big["big" .. i] = ("x"):rep(128) end
    assert.are.equal("iot.common.InvalidFormattedParameter", save(cjson.encode(big)).Code)
    -- the key and value rules of the page: 2 to 32 letters, digits and dots; 1 to 128 wide
    for _, bad in ipairs{"[1]", "not json", '{"a":{"b":"c"}}', '{"bad key":"v"}', '{"a":"v"}',
                         '{"under_score":"v"}', '{"' .. ("k"):rep(33) .. '":"v"}', '{"ok.key":""}',
                         cjson.encode{wide = ("\228\184\173"):rep(65)}, cjson.encode{long = ("x"):rep(129)}} do
      assert.are.equal("iot.common.InvalidFormattedParameter", save(bad).Code, bad)
    end
    assert.is_true(save(cjson.encode{["v1.2"] = ("\228\184\173"):rep(64), ab = ("x"):rep(128)}).Success)
    assert(c:delete_device_prop{ProductKey = PK, DeviceName = "props_001", PropKey = "v1.2"})
    assert(c:delete_device_prop{ProductKey = PK, DeviceName = "props_001", PropKey = "ab"})
    assert.are.same({["one.more"] = "v"}, emu:state().products[PK].details.props_001.props)
    assert.are.equal("MissingProps", raw("SaveDeviceProp", {ProductKey = PK, DeviceName = "props_001"}).Code)
  end)

  it("groups: 200 devices a call, 10 groups a device counted at the top level", function()
    local names = {}
    for i = 1, 201 do names[i] = ("grp_%04d"):format(i) end
    local id = assert(c:batch_check_device_names{ProductKey = PK, DeviceName = names}).Data.ApplyId
    assert(c:batch_register_device_with_apply_id{ProductKey = PK, ApplyId = id})
    local g0 = group("group_00")
    local r, err = c:batch_add_device_group_relations{GroupId = g0, Device = devices(names)}
    assert.is_nil(r)
    assert.are.equal("InvalidParameter", err.code)
    local extra = {GroupId = g0}
    for i = 1, 201 do extra["Device." .. i .. ".ProductKey"], extra["Device." .. i .. ".DeviceName"] = PK, names[i] end
    assert.are.equal("iot.common.InvalidFormattedParameter", raw("BatchAddDeviceGroupRelations", extra).Code)
    for i = 1, 10 do
      local g = i == 1 and g0 or group(("group_%02d"):format(i - 1 + 10))
      assert(c:batch_add_device_group_relations{GroupId = g, Device = devices{"grp_0001"}})
    end
    local g11 = group("group_eleven")
    local add = assert(c:batch_add_device_group_relations{GroupId = g11, Device = devices{"grp_0001", "grp_0002", "nobody_here"}})
    assert.are.same({2, 1, 0, 1}, {add.ValidDeviceCount, add.SuccessAddedDeviceCount,
                                   add.AlreadyRelatedGroupDeviceCount, add.ExceedTenGroupDeviceCount})
    add = assert(c:batch_add_device_group_relations{GroupId = g11, Device = devices{"grp_0002"}})
    assert.are.equal(1, add.AlreadyRelatedGroupDeviceCount)
    assert.are.equal(10, #emu:state().products[PK].details.grp_0001.groups)
    local _, e2 = c:create_device_group{GroupName = "group_eleven"}
    assert.are.equal("iot.group.GroupNameExisted", e2.code)
    local _, e3 = c:query_device_list_by_device_group{GroupId = "nosuchgroup"}
    assert.are.equal("iot.group.NotExistedGroup", e3.code)
    -- a deleted device leaves its groups
    assert(c:delete_device{ProductKey = PK, DeviceName = "grp_0002"})
    assert.are.equal(0, assert(c:query_device_list_by_device_group{GroupId = g11}).Total)
  end)

  it("nicknames follow the nickname rule; a bad entry changes nothing", function()
    register{"nick_001", "nick_002"}
    assert(c:batch_update_device_nickname{DeviceNicknameInfo = {
      {ProductKey = PK, DeviceName = "nick_001", Nickname = "good_name"}}})
    local r = raw("BatchUpdateDeviceNickname", {
      ["DeviceNicknameInfo.1.ProductKey"] = PK, ["DeviceNicknameInfo.1.DeviceName"] = "nick_002",
      ["DeviceNicknameInfo.1.Nickname"] = "fine_one",
      ["DeviceNicknameInfo.2.ProductKey"] = PK, ["DeviceNicknameInfo.2.DeviceName"] = "nick_001",
      ["DeviceNicknameInfo.2.Nickname"] = "no"})
    assert.are.equal("iot.common.InvalidFormattedParameter", r.Code)
    local _, err = c:batch_update_device_nickname{DeviceNicknameInfo = {
      {ProductKey = PK, DeviceName = "nick_001", Nickname = "a-b"}}}
    assert.are.equal("InvalidParameter", err.code)
    local _, e2 = c:batch_update_device_nickname{DeviceNicknameInfo = {
      {ProductKey = PK, DeviceName = "nobody_here", Nickname = "good_name"}}}
    assert.are.equal("iot.device.NotExistedDevice", e2.code)
    local d = emu:state().products[PK].details
    assert.are.equal("good_name", d.nick_001.Nickname)
    assert.is_nil(d.nick_002)
    -- an empty Nickname removes it
    assert(c:batch_update_device_nickname{DeviceNicknameInfo = {
      {ProductKey = PK, DeviceName = "nick_001", Nickname = ""}}})
    assert.is_nil(emu:state().products[PK].details.nick_001)
  end)

  it("device status: DisableThing disconnects an online device, unless a test marked it stay_online", function()
    register{"state_01", "state_02", "state_03", "state_04", "state_05"}
    emu:set_online{ProductKey = PK, DeviceName = {"state_01", "state_02"}}
    emu:set_online{ProductKey = PK, DeviceName = "state_02", online = false}
    emu:set_online{ProductKey = PK, DeviceName = "state_04", stay_online = true}
    emu:set_active{ProductKey = PK, DeviceName = "state_05"}
    assert.has_error(function() emu:set_online{ProductKey = PK, DeviceName = {"state_01", "nobody_here"}} end)
    assert.has_error(function() emu:set_online{ProductKey = PK, DeviceName = "state_01", online = false, stay_online = true} end)
    local function statuses()
      local r = assert(c:batch_get_device_state{ProductKey = PK,
        DeviceName = {"state_01", "state_02", "state_03", "state_04", "state_05"}})
      local out = {}
      for i, d in ipairs(r.DeviceStatusList.DeviceStatus) do out[i] = d.Status end
      return out
    end
    assert.are.same({"ONLINE", "OFFLINE", "UNACTIVE", "ONLINE", "ONLINE"}, statuses())
    -- set_online and set_active devices alike: disabled, they are disconnected at once
    for _, n in ipairs{"state_01", "state_04", "state_05"} do
      assert(c:disable_thing{ProductKey = PK, DeviceName = n})
      assert(c:disable_thing{ProductKey = PK, DeviceName = n})
    end
    assert.are.same({"DISABLE", "OFFLINE", "UNACTIVE", "ONLINE", "DISABLE"}, statuses())
    -- the stay_online device keeps its connection until the test takes it offline
    emu:set_online{ProductKey = PK, DeviceName = "state_04", online = false}
    assert.are.same({"DISABLE", "OFFLINE", "UNACTIVE", "DISABLE", "DISABLE"}, statuses())
    -- enabled again, a device stays offline until it connects again
    assert(c:enable_thing{ProductKey = PK, DeviceName = "state_01"})
    assert(c:enable_thing{ProductKey = PK, DeviceName = "state_05"})
    assert.are.same({"OFFLINE", "OFFLINE", "UNACTIVE", "DISABLE", "OFFLINE"}, statuses())
    local _, err = c:disable_thing{ProductKey = PK, DeviceName = "nobody_here"}
    assert.are.equal("iot.device.NotExistedDevice", err.code)
  end)

  it("each new action takes the fault knobs", function()
    local reg = register{"fault_01"}
    local gid = group("fault_group")
    local cases = {
      BatchQueryDeviceDetail = {ProductKey = PK, DeviceName = {"fault_01"}},
      QueryDeviceProp = {IotId = reg.Data.IotId},
      SaveDeviceProp = {IotId = reg.Data.IotId, Props = '{"ab":"c"}'},
      DeleteDeviceProp = {IotId = reg.Data.IotId, PropKey = "a"},
      QueryDeviceGroupList = {},
      BatchAddDeviceGroupRelations = {GroupId = gid, Device = devices{"fault_01"}},
      BatchDeleteDeviceGroupRelations = {GroupId = gid, Device = devices{"fault_01"}},
      QueryDeviceListByDeviceGroup = {GroupId = gid},
      BatchUpdateDeviceNickname = {DeviceNicknameInfo = {{IotId = reg.Data.IotId, Nickname = "faulty"}}},
      DisableThing = {IotId = reg.Data.IotId},
      EnableThing = {IotId = reg.Data.IotId},
      QueryDevice = {ProductKey = PK},
    }
    for action, params in pairs(cases) do
      for _, kind in ipairs{"503", "throttle", "reset", "truncate", "malformed"} do
        emu:fault{kind = kind, count = 1, action = action}
        local r, err = c:call(action, params)
        assert.is_nil(r, action .. " " .. kind)
        assert.is_table(err)
      end
      emu:fault{kind = "reset_after", count = 1, action = action}
      assert.is_nil((c:call(action, params)))
      emu:fault{kind = "slow", delay = 0.01, count = 1, action = action}
      assert(c:call(action, params))
    end
    emu:fault{kind = "503", count = 1, action = "CreateDeviceGroup"}
    assert.is_nil((c:create_device_group{GroupName = "other_group"}))
    assert.are.equal(1, #emu:state().groups)
  end)

  it("scopes groups and devices by account", function()
    local e = emulator.start{async_delay = 0, accounts = {
      alice = {access_keys = {alice_id = "alice_secret"}, products = {"a1Alice"}},
      bob = {access_keys = {bob_id = "bob_secret"}, products = {"a1Bob"}}}}
    local ok, why = pcall(function()
      local alice = client_for(e, {access_key_id = "alice_id", access_key_secret = "alice_secret"})
      local bob = client_for(e, {access_key_id = "bob_id", access_key_secret = "bob_secret"})
      local reg = assert(alice:register_device{ProductKey = "a1Alice", DeviceName = "alice_01"})
      local gid = assert(alice:create_device_group{GroupName = "shared_name"}).Data.GroupId
      assert(bob:create_device_group{GroupName = "shared_name"})
      local _, err = bob:query_device_list_by_device_group{GroupId = gid}
      assert.are.equal("iot.group.NotExistedGroup", err.code)
      assert.are.equal(1, assert(bob:query_device_group_list{}).Total)
      _, err = bob:save_device_prop{IotId = reg.Data.IotId, Props = '{"ab":"c"}'}
      assert.are.equal("iot.device.NotExistedDevice", err.code)
      _, err = bob:batch_query_device_detail{ProductKey = "a1Alice", DeviceName = {"alice_01"}}
      assert.are.equal("iot.prod.NotExistedProduct", err.code)
      local gb = assert(bob:create_device_group{GroupName = "bob_group"}).Data.GroupId
      local add = assert(bob:batch_add_device_group_relations{GroupId = gb,
        Device = {{ProductKey = "a1Alice", DeviceName = "alice_01"}}})
      assert.are.equal(0, add.ValidDeviceCount)
      _, err = bob:disable_thing{ProductKey = "a1Alice", DeviceName = "alice_01"}
      assert.are.equal("iot.prod.NotExistedProduct", err.code)
    end)
    e:stop()
    assert(ok, why)
  end)
end)
