-- The fast paths issue 16 added to hot helpers give exactly what the general code gives:
-- validate.list_length (one pass when the traversal yields 1, 2, ... in order) and
-- batch.outcomes.in_order (each device to its slot instead of a comparison sort). Each is
-- checked against the general algorithm on tables built every way that matters.

local validate = require "aliyun.iot.validate"
local outcomes = require "aliyun.iot.batch.outcomes"

-- The general definition of list_length (keys exactly 1..n; a hole's first index).
local function reference_length(t)
  if type(t) ~= "table" then return nil end
  local n, count = 0, 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k ~= math.floor(k) then return nil end
    count = count + 1
    if k > n then n = k end
  end
  if count == n then return n end
  for i = 1, n do
    if t[i] == nil then return nil, i end
  end
end

-- A stable sort by position, those without one last (what in_order promises).
local function reference_order(pos, devices)
  local out = {}
  for i, d in ipairs(devices) do out[i] = {d, pos[d.DeviceName] or math.huge, i} end
  table.sort(out, function(x, y)
    if x[2] ~= y[2] then return x[2] < y[2] end
    return x[3] < y[3]
  end)
  for i, t in ipairs(out) do out[i] = t[1] end
  return out
end

describe("validate.list_length", function()
  local function same(t)
    local n, hole = validate.list_length(t)
    local rn, rhole = reference_length(t)
    assert.are.equal(rn, n)
    assert.are.equal(rhole, hole)
  end

  it("gives the length of lists however they were built", function()
    same({})
    same({"a", "b", "c"})
    local backwards = {}
    for i = 300, 1, -1 do backwards[i] = i end -- keys land in the hash part, in any order
    same(backwards)
    assert.are.equal(300, validate.list_length(backwards))
    local grown = {}
    for i = 1, 10000 do grown[#grown + 1] = "name" .. i end
    assert.are.equal(10000, validate.list_length(grown))
    local shrunk = {1, 2, 3, 4}
    shrunk[4] = nil
    assert.are.equal(3, validate.list_length(shrunk))
    assert.are.equal(2, validate.list_length({[1.0] = "a", [2] = "b"}))
  end)

  it("refuses what is no list, and finds a hole's first index", function()
    same({1, 2, nil, 4})
    assert.are.same({nil, 3}, {validate.list_length({1, 2, nil, 4})})
    same({[2] = "b"})
    same({1, 2, x = 3})
    same({x = 1})
    same({[0] = 1, 2})
    same({1, [2.5] = 2})
    same({1, ["2"] = 2})
    same({1, [-1] = 2})
    same({1, [math.huge] = 2})
    assert.is_nil(validate.list_length("a"))
    assert.is_nil(validate.list_length(nil))
  end)

  it("agrees with the general walk on random tables", function()
    math.randomseed(16)
    for _ = 1, 500 do
      local t = {}
      for _ = 1, math.random(0, 12) do
        local r = math.random()
        if r < 0.7 then t[math.random(1, 10)] = true
        elseif r < 0.8 then t[#t + 1] = true
        elseif r < 0.9 then t["k" .. math.random(1, 3)] = true
        else t[math.random(-2, 0)] = true end
      end
      same(t)
    end
  end)
end)

describe("batch.outcomes.in_order", function()
  local function check(first_pos, names)
    local devices = {}
    for i, n in ipairs(names) do devices[i] = {DeviceName = n} end
    local got = outcomes.in_order({first_pos = first_pos}, devices)
    local want = reference_order(first_pos or {}, devices)
    assert.are.equal(#want, #got)
    for i = 1, #want do assert.are.equal(want[i], got[i]) end -- the same records
  end

  it("puts the devices in the order their names were asked for", function()
    local pos, names = {}, {}
    for i = 1, 1000 do pos["dev" .. i] = i; names[i] = "dev" .. (1001 - i) end
    check(pos, names)
  end)

  it("keeps the listed order of names without a position, after the others", function()
    check({a1 = 2, b1 = 1}, {"x9", "a1", "y9", "b1", "x8"})
    check(nil, {"b", "a"})
    check({}, {})
  end)

  it("keeps the listed order of devices that share a position", function()
    local devices = {{DeviceName = "a"}, {DeviceName = "b"}, {DeviceName = "a"}}
    local got = outcomes.in_order({first_pos = {a = 2, b = 1}}, devices)
    assert.are.equal(devices[2], got[1])
    assert.are.equal(devices[1], got[2])
    assert.are.equal(devices[3], got[3])
  end)

  it("keeps a list that is in the asked order already (the usual case) as it is", function()
    local pos, names = {}, {}
    for i = 1, 1000 do pos["dev" .. i] = i; names[i] = "dev" .. i end
    check(pos, names)
    check({a = 1, b = 1}, {"a", "b"})          -- a shared position: not rising
    check({a = 1, b = 2}, {"a", "b", "c"})     -- one without a position, last
    check({a = 1.5, b = 2}, {"a", "b"})
  end)

  it("places positions that are not whole numbers from 1 on as the sort would", function()
    check({a = 2.5, b = 1, c = 0, d = 3}, {"d", "a", "c", "b", "e"})
  end)

  it("agrees with a stable sort on random jobs", function()
    math.randomseed(7)
    for _ = 1, 300 do
      local n, pos, names = math.random(0, 30), {}, {}
      for i = 1, n do
        if math.random() < 0.8 then pos["n" .. i] = i end
      end
      for i = 1, math.random(0, 40) do names[i] = "n" .. math.random(1, n + 5) end
      check(pos, names)
    end
  end)
end)

describe("core.sign_rpc's sort memo", function()
  local core = require "aliyun.iot.core"

  -- The canonical query by definition: names in byte order, each name and value encoded.
  local function reference_query(flat)
    local names = {}
    for k in pairs(flat) do names[#names + 1] = k end
    table.sort(names)
    for i, k in ipairs(names) do
      names[i] = core.percent_encode(k) .. "=" .. core.percent_encode(tostring(flat[k]))
    end
    return table.concat(names, "&")
  end

  local function check(flat)
    local sig, sts, query = core.sign_rpc("POST", flat, "secret")
    assert.are.equal(reference_query(flat), query)
    assert.are.equal("POST&%2F&" .. core.percent_encode(query), sts)
    assert.are.equal(core.hmac_sha1("secret&", sts), sig)
  end

  local function names_list(n, prefix)
    local t = {Action = "BatchCheckDeviceNames", ProductKey = "pk"}
    for i = 1, n do t[prefix .. "." .. i] = "dev" .. i end
    return t
  end

  it("signs requests with the same names and other values", function()
    for round = 1, 3 do
      local flat = names_list(1000, "DeviceName")
      flat.SignatureNonce = "nonce" .. round
      check(flat)
    end
  end)

  it("signs requests with as many names, other ones", function()
    check(names_list(50, "DeviceName"))
    check(names_list(50, "DeviceNamf")) -- same count, same lengths, one byte apart
    check(names_list(50, "DeviceName"))
    local flat = names_list(50, "DeviceName")
    flat["DeviceName.50"], flat["DeviceName.5"] = nil, nil
    flat["DeviceName.0"], flat["A"] = "x", "y" -- same count, names shorter and longer
    check(flat)
  end)

  it("signs requests whose names differ but not in length", function()
    check({ab = "1", cd = "2", ef = "3", gh = "4"})
    check({zb = "1", cd = "2", ef = "3", gh = "4"})
    check({ab = "1", cd = "2", ef = "3", gh = "4"})
  end)

  it("signs the same names collected in another order", function()
    local a = names_list(200, "DeviceName")
    check(a)
    local b = {}
    local keys = {}
    for k in pairs(a) do keys[#keys + 1] = k end
    for i = #keys, 1, -1 do b[keys[i]] = a[keys[i]] .. "b" end
    b.Extra = "1"
    b.Extra = nil -- a table grown otherwise, traversed in its own order
    check(b)
    check(a)
  end)
end)

-- The per-call fast paths (issue 16, sequential calls): integers compared as numbers,
-- JSON text handed to cjson unrewritten when nothing in it needs marking. Each agrees
-- with the general path it skips.
describe("per-call fast paths", function()
  local core = require "aliyun.iot.core"
  local actions = require "aliyun.iot.actions"

  it("checks integer parameters as the decimal comparison does", function()
    if not math.type then return end -- no integer subtype: only the general path exists
    local ctx = {max_batch_size = 1000}
    local page, count = actions.rows.QueryDevice, actions.rows.BatchRegisterDevice
    for _, v in ipairs{math.mininteger, -1, 0, 1, 2, 49, 50, 51, 999, 1000, 1001,
                       math.maxinteger} do
      local s = tostring(v)
      for _, case in ipairs{{page, {ProductKey = "pk", PageSize = v}, {ProductKey = "pk", PageSize = s}},
                            {count, {ProductKey = "pk", Count = v}, {ProductKey = "pk", Count = s}}} do
        assert.are.same({validate.check(case[1], case[3], ctx)},
                        {validate.check(case[1], case[2], ctx)}, s)
      end
      assert.are.equal(validate.apply_id_problem(s), validate.apply_id_problem(v), s)
    end
  end)

  it("decodes JSON without integers as the marked path does", function()
    local docs = {
      '{"RequestId":"r","Success":true,"Data":{"Status":"CREATE_SUCCESS","List":{"Name":[]}}}',
      '{"a":"x","b":[true,false,"y"],"c":{}}',
      '{"a":1.5,"b":[-2.25e3,0.5],"c":"1"}',
      '{"a":null,"b":[null,"x"],"c":{"d":null,"e":"n"}}',
      '{"n":"null","m":["nnn"]}',
      '{"a":"\\"12\\"","b":"\\\\"}',
      '["x",null,{"y":false}]',
      '"just a string"',
      '{"a":}',
      '{"a":"x"',
    }
    for _, doc in ipairs(docs) do
      local plain, perr = core.json_decode(doc)
      -- the same document with an integer in it takes the rewriting path
      local marked, merr = core.json_decode('{"__int":7,"__doc":' .. doc .. '}')
      if plain == nil then
        assert.is_nil(marked, doc)
        assert.is_string(perr)
        assert.is_string(merr)
      else
        assert.are.same(marked.__doc, plain, doc)
      end
    end
  end)
end)

describe("validate.vouch (issue 16: a job's checked names are not checked again)", function()
  local actions = require "aliyun.iot.actions"
  local row = actions.get("BatchCheckDeviceNames")
  local ctx = {max_batch_size = 1000}
  local function check(params) return validate.check(row, params, ctx) end

  it("skips the entries of a list the library vouched for, not its shape or size", function()
    local bad = {"good_0001", "x", "good_0001"} -- too short, and a duplicate
    assert.is_not_nil(check{ProductKey = "pk", DeviceName = bad})
    assert.is_nil(check{ProductKey = "pk", DeviceName = validate.vouch({"good_0001", "good_0002"})})
    -- the entries of a vouched list are the voucher's word (no rule is run on them) ...
    assert.is_nil(check{ProductKey = "pk", DeviceName = validate.vouch({"good_0001", "x"})})
    -- ... its size and shape are checked all the same
    local big = {}
    for i = 1, 1001 do big[i] = ("name_%04d"):format(i) end
    assert.are.equal("DeviceName", (check{ProductKey = "pk", DeviceName = validate.vouch(big)}))
    local holed = validate.vouch({"good_0001", "good_0002", "good_0003"})
    holed[2] = nil
    assert.are.equal("DeviceName.2", (check{ProductKey = "pk", DeviceName = holed}))
    assert.are.equal("DeviceName", (check{ProductKey = "pk", DeviceName = validate.vouch({})}))
  end)

  it("checks every entry again once the list's length changed", function()
    local list = validate.vouch({"good_0001", "good_0002"})
    list[3] = "x"
    assert.are.equal("DeviceName.3", (check{ProductKey = "pk", DeviceName = list}))
    local recs = validate.vouch({{DeviceName = "good_0001", DeviceNickname = "nick1"}})
    recs[2] = {DeviceName = "good_0002", DeviceNickname = "!"}
    assert.are.equal("DeviceNameList.2", (check{ProductKey = "pk", DeviceNameList = recs}))
  end)

  it("is not taken by a list with the same entries that nobody vouched for", function()
    validate.vouch({"good_0001", "x"})
    assert.are.equal("DeviceName.2", (check{ProductKey = "pk", DeviceName = {"good_0001", "x"}}))
  end)
end)
