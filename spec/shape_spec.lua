-- shape.xml and shape.json: what the client reads from a decoded answer has the type it
-- expects, or is absent (issue 17, "Trust nothing a server says").
local core = require "aliyun.iot.core"
local shape = require "aliyun.iot.shape"
local actions = require "aliyun.iot.actions"

local has_integers = math.type ~= nil

local function is_integer(v, expected)
  if has_integers then
    assert.are.equal("integer", math.type(v))
  else
    assert.are.equal("number", type(v))
  end
  assert.are.equal(expected, v)
end

local function xml(body, action)
  local root, tree = core.xml_decode(body)
  assert.is_string(root, tree)
  return shape.xml(tree, actions.get(action or "BatchRegisterDevice"), root)
end


describe("shape.xml", function()
  it("shapes a gateway's <Error> into plain string fields", function()
    for _, code in ipairs{"Throttling.User", "SignatureDoesNotMatch", "ServiceUnavailable"} do
      local e = xml("<?xml version='1.0' encoding='UTF-8'?><Error><RequestId>R-1</RequestId>" ..
        "<HostId>iot.cn-shanghai.aliyuncs.com</HostId><Code>" .. code .. "</Code>" ..
        "<Message>Request was denied due to user flow control.</Message>" ..
        "<Recommend><![CDATA[https://api.aliyun.com/troubleshoot?q=" .. code .. "]]></Recommend>" ..
        "</Error>")
      assert.are.same({
        RequestId = "R-1", HostId = "iot.cn-shanghai.aliyuncs.com", Code = code,
        Message = "Request was denied due to user flow control.",
        Recommend = "https://api.aliyun.com/troubleshoot?q=" .. code,
      }, e)
    end
  end)

  it("keeps a common field that is not text as it is, for the classifier to refuse", function()
    local bodies = {
      "<Error><Code><Inner>x</Inner></Code><Message><a>1</a><a>2</a></Message>" ..
        "<RequestId>R</RequestId><HostId/></Error>",
      "<BatchRegisterDeviceResponse><Code><x/></Code><ErrorMessage><y>1</y></ErrorMessage>" ..
        "<Success>false</Success><Recommend><z/></Recommend></BatchRegisterDeviceResponse>",
      "<Anything><Message><m>text</m></Message><RequestId><r/></RequestId></Anything>",
    }
    for _, body in ipairs(bodies) do
      for _, action in ipairs{"BatchRegisterDevice", "QueryPageByApplyId", "NoSuchAction"} do
        local t = xml(body, action)
        -- a table-valued Code dropped would turn an error into a success
        assert.is_true(t.Code ~= nil or t.Message ~= nil, body)
      end
    end
    assert.are.equal("R", xml(bodies[1]).RequestId)
    assert.are.equal("", xml(bodies[1]).HostId)
    assert.are.equal("table", type(xml(bodies[1]).Code))
  end)

  it("does not apply the action's row to an <Error>", function()
    -- QueryPageByApplyId's Page is an integer and its device list a list; an <Error> has
    -- neither, so fields of those names stay as the gateway wrote them.
    local e = xml("<Error><Code>Throttling.User</Code><Page>x</Page></Error>", "QueryPageByApplyId")
    assert.are.equal("Throttling.User", e.Code)
    assert.are.equal("x", e.Page)
    assert.is_nil(e.ApplyDeviceList)
  end)

  it("types Success only from the texts true and false, leaving other text for the checks", function()
    assert.is_true(xml("<R><Success>true</Success></R>").Success)
    assert.is_false(xml("<R><Success>false</Success></R>").Success)
    for _, text in ipairs{"yes", "1", "TRUE", ""} do
      assert.are.equal(text, xml("<R><Success>" .. text .. "</Success></R>").Success)
    end
  end)

  it("gives {} for a root that holds only text", function()
    assert.are.same({}, xml("<Error>Bad Gateway</Error>"))
  end)
end)

describe("shape.json", function()
  it("makes an integral float at an integer path the integer (4415.0 is 4415)", function()
    local t = shape.json(assert(core.json_decode(
      '{"Data":{"ApplyId":4415.0},"Success":true,"RequestId":"R"}')),
      actions.get("BatchRegisterDevice"))
    is_integer(t.Data.ApplyId, 4415)
    assert.is_true(t.Success)
    t = shape.json(assert(core.json_decode(
      '{"Page":1.0,"PageSize":5e1,"PageCount":-0.0,"Total":1E2,' ..
      '"ApplyDeviceList":{"ApplyDeviceInfo":[{"DeviceName":"a"}]}}')),
      actions.get("QueryPageByApplyId"))
    is_integer(t.Page, 1)
    is_integer(t.PageSize, 50)
    is_integer(t.PageCount, 0)
    is_integer(t.Total, 100)
  end)

  it("follows integer paths through lists", function()
    local t = shape.json(assert(core.json_decode(
      '{"DeviceStatusList":{"DeviceStatus":[{"Timestamp":1700000000000.0},null,' ..
      '{"Timestamp":"x"},{"Timestamp":17}]}}')), actions.get("BatchGetDeviceState"))
    local list = t.DeviceStatusList.DeviceStatus
    is_integer(list[1].Timestamp, 1700000000000)
    assert.is_false(list[2])
    assert.are.equal("x", list[3].Timestamp)
    is_integer(list[4].Timestamp, 17)
  end)

  it("leaves everything else alone: fractions, huge floats, text, tables, other paths", function()
    local t = shape.json(assert(core.json_decode(
      '{"Page":1.5,"PageSize":"50","PageCount":{"a":1},"Total":1e300,"Other":2.0,' ..
      '"ApplyDeviceList":[]}')), actions.get("QueryPageByApplyId"))
    assert.are.equal(1.5, t.Page)
    assert.are.equal("50", t.PageSize)
    assert.are.same({a = 1}, t.PageCount)
    assert.are.equal(1e300, t.Total)
    if has_integers then
      assert.are.equal("float", math.type(t.Other))
      assert.are.equal("float", math.type(t.Total))
    end
    assert.are.same({}, t.ApplyDeviceList)
    t = shape.json(assert(core.json_decode('{"Data":"nope"}')), actions.get("BatchRegisterDevice"))
    assert.are.equal("nope", t.Data)
    assert.are.equal("x", shape.json("x", actions.get("BatchRegisterDevice")))
  end)

  it("keeps common fields of any type as sent, for the classifier to refuse", function()
    local t = shape.json(assert(core.json_decode(
      '{"Code":400,"Message":{"a":1},"ErrorMessage":[1],"RequestId":true,' ..
      '"HostId":"h","Recommend":false}')), actions.get("BatchRegisterDevice"))
    assert.are.same({Code = 400, HostId = "h", Message = {a = 1}, ErrorMessage = {1},
                     RequestId = true, Recommend = false}, t)
  end)

  it("gives JSON and XML of the same answer the same result, 4415.0 included", function()
    local row = actions.get("BatchRegisterDevice")
    local j = shape.json(assert(core.json_decode(
      '{"Data":{"ApplyId":4415.0},"Success":true,"RequestId":"R"}')), row)
    local x = xml("<BatchRegisterDeviceResponse><Data><ApplyId>4415</ApplyId></Data>" ..
      "<Success>true</Success><RequestId>R</RequestId></BatchRegisterDeviceResponse>")
    assert.are.same(j, x)
    if has_integers then assert.are.equal(math.type(j.Data.ApplyId), math.type(x.Data.ApplyId)) end
  end)
end)
