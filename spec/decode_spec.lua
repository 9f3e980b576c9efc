local core = require "aliyun.iot.core"

-- Lua 5.3/5.4 have an integer subtype; 5.1/5.2/LuaJIT carry big integers as strings.
local has_integers = math.type ~= nil

local function is_integer(v, expected)
  if has_integers then
    assert.are.equal("integer", math.type(v))
  else
    assert.are.equal("number", type(v))
  end
  assert.are.equal(expected, v)
end

describe("core.json_decode", function()
  it("gives integer literals back as integers (ApplyId 4415 is not 4415.0)", function()
    local v = assert(core.json_decode('{"Data":{"ApplyId":4415},"Success":true}'))
    is_integer(v.Data.ApplyId, 4415)
    assert.are.equal("4415", string.format("%s", tostring(v.Data.ApplyId)))
    assert.is_true(v.Success)
    is_integer(core.json_decode("0"), 0)
    is_integer(core.json_decode("-0"), 0)
    is_integer(core.json_decode("[-17]")[1], -17)
  end)

  it("keeps integers beyond 2^53 exact, up to the int64 limits", function()
    local cases = {
      { "9007199254740993", "9007199254740993" },        -- 2^53 + 1
      { "9223372036854775807", "9223372036854775807" },  -- int64 max
      { "-9223372036854775808", "-9223372036854775808" }, -- int64 min
    }
    for _, c in ipairs(cases) do
      local v = assert(core.json_decode('{"ApplyId":' .. c[1] .. '}')).ApplyId
      if has_integers then
        assert.are.equal("integer", math.type(v))
        assert.are.equal(c[2], string.format("%d", v))
      else
        assert.are.equal(c[2], v) -- decimal string, exact
      end
    end
    -- 2^53 itself is still exact as a double, so it stays a number everywhere.
    local v = core.json_decode("9007199254740992")
    assert.are.equal("number", type(v))
    assert.are.equal(2 ^ 53, v)
  end)

  -- Changed (issue 17): these used to fail the whole decode ("integer out of range");
  -- a field nobody reads must not sink the answer, so the literal's text is kept.
  it("keeps integer literals beyond int64 as their decimal text instead of clamping", function()
    local v = assert(core.json_decode(
      '{"a":{"b":[1, 123456789012345678901234567890]},"c":9223372036854775808,' ..
      '"d":-9223372036854775809,"ApplyId":4415}'))
    assert.are.equal("123456789012345678901234567890", v.a.b[2])
    assert.are.equal("9223372036854775808", v.c)
    assert.are.equal("-9223372036854775809", v.d)
    is_integer(v.a.b[1], 1)
    is_integer(v.ApplyId, 4415)
    assert.are.equal("9223372036854775808", core.json_decode("9223372036854775808"))
    assert.are.same({ "-9223372036854775809" }, core.json_decode("[-9223372036854775809]"))
  end)

  it("keeps non-integral numbers as floats", function()
    local v = assert(core.json_decode('[1.5, -0.25, 1e3, 2.0, 1E-2]'))
    assert.are.same({ 1.5, -0.25, 1000, 2, 0.01 }, v)
    if has_integers then
      for i = 1, #v do assert.are.equal("float", math.type(v[i])) end
    end
  end)

  -- Changed (issue 17): 1e400 and -1e400 used to be rejected with the non-numbers.
  it("keeps numbers a double cannot hold as their text, near the limit as numbers", function()
    local v = assert(core.json_decode(
      '{"Unknown":1e400,"n":[-1e400,1.8e308,1E+309,0.5e310],' ..
      '"max":1.7976931348623157e308,"near":17976931348623157e292,"tiny":1e-400,"z":0.0e999}'))
    assert.are.equal("1e400", v.Unknown)
    assert.are.same({ "-1e400", "1.8e308", "1E+309", "0.5e310" }, v.n)
    assert.are.equal(1.7976931348623157e308, v.max)
    assert.are.equal(1.7976931348623157e308, v.near)
    assert.are.equal(0, v.tiny)
    assert.are.equal(0, v.z)
    assert.are.equal("1e400", core.json_decode("1e400"))
  end)

  it("with numbers = true gives every number as a number, the ones no Lua number holds as floats", function()
    local text = '{"big":123456789012345678901234,"neg":-18446744073709551617,"huge":1e400,' ..
      '"n":[-1e400,1E+309,12,9007199254740993],"s":"123456789012345678901234"}'
    local v = assert(core.json_decode(text, true))
    assert.are.equal(1.2345678901234568e23, v.big)
    assert.are.equal(-18446744073709551617.0, v.neg)
    assert.are.equal(math.huge, v.huge)
    assert.are.same({ -math.huge, math.huge, 12 }, { v.n[1], v.n[2], v.n[3] })
    assert.are.equal("number", type(v.n[4]))
    if has_integers then assert.are.equal(9007199254740993, v.n[4]) end
    assert.are.equal("123456789012345678901234", v.s)
    -- the default is unchanged: text for what no Lua number holds, integers exact
    local d = assert(core.json_decode(text))
    assert.are.equal("123456789012345678901234", d.big)
    assert.are.equal("1e400", d.huge)
  end)

  it("rejects JSON's non-numbers and malformed numbers", function()
    for _, text in ipairs{ "NaN", "[Infinity]", "[-Infinity]", "[0x10]", "[01]", "[-]", "[+1]",
                           "[1e]", "[1e+]", "[.5]", "[1.5.2]", "[--1]", "{1e400:1}" } do
      local v, err = core.json_decode(text)
      assert.is_nil(v, text)
      assert.is_string(err, text)
    end
  end)

  -- Changed (issue 17): arrays used to be compacted, which moved every element after a
  -- null to another index; a null element now keeps its place as false.
  it("removes null members, also nested, and keeps a null element's place as false", function()
    local v = assert(core.json_decode(
      '{"a":null,"b":[1,null,"x",null,{"c":null,"d":2}],"e":{"f":null},"g":[null,null]}'))
    assert.is_nil(v.a)
    assert.are.same({ 1, false, "x", false, { d = 2 } }, v.b)
    assert.are.equal(5, #v.b)
    assert.are.same({}, v.e)
    assert.are.same({ false, false }, v.g)
    local nulls = 0
    local function walk(t)
      for _, x in pairs(t) do
        if type(x) == "userdata" then nulls = nulls + 1 end
        if type(x) == "table" then walk(x) end
      end
    end
    walk(v)
    assert.are.equal(0, nulls)
    v = assert(core.json_decode('{"List":[null,{"DeviceName":"b"}],"Top":[null]}'))
    assert.are.equal("b", v.List[2].DeviceName)
    assert.are.same({ false }, v.Top)
  end)

  it("skips a UTF-8 byte order mark before the document", function()
    local v = assert(core.json_decode('\239\187\191{"Data":{"ApplyId":4415},"Success":true}'))
    is_integer(v.Data.ApplyId, 4415)
    assert.is_true(v.Success)
    local _, err = core.json_decode('\239\187\191{"id":12345678901234, x}')
    assert.matches("character 23", err) -- counted from the document, not the mark
    -- only at the start, and only the whole mark
    assert.is_nil(core.json_decode('{"a":1}\239\187\191'))
    assert.is_nil(core.json_decode('\239\187{"a":1}'))
    assert.is_nil(core.json_decode(' \239\187\191{"a":1}'))
  end)

  it("treats a document that is only null as an error", function()
    local v, err = core.json_decode("null")
    assert.is_nil(v)
    assert.matches("null", err)
  end)

  it("leaves strings alone, digits and markers inside them included", function()
    local v = assert(core.json_decode('{"DeviceName":"12345678","n":"-1 2.0 \\" 3","e":""}'))
    assert.are.same({ DeviceName = "12345678", n = '-1 2.0 " 3', e = "" }, v)
    -- Raw 0xFF bytes (invalid UTF-8) survive as they were, in values and in keys.
    v = assert(core.json_decode('{"\255k":"\255i12","x":["\255s"]}'))
    assert.are.equal("\255i12", v["\255k"])
    assert.are.same({ "\255s" }, v.x)
    v = assert(core.json_decode('"\192\255\254"'))
    assert.are.equal("\192\255\254", v)
    -- A string's end is the first quote after an even run of backslashes: the numbers
    -- after it are numbers, those before it (escaped quotes) text.
    v = assert(core.json_decode('{"a":"x\\\\","b":5,"c":"\\\\\\"7\\\\","d":[6]}'))
    assert.are.same({ a = "x\\", b = 5, c = '\\"7\\', d = { 6 } }, v)
    assert.are.equal("integer", math.type and math.type(v.b) or "integer")
    assert.are.equal("integer", math.type and math.type(v.d[1]) or "integer")
  end)

  it("does not let a number stand as an object key", function()
    local v, err = core.json_decode('{1:2}')
    assert.is_nil(v)
    assert.is_string(err)
  end)

  it("reports truncated and malformed text with the caller's positions", function()
    for _, text in ipairs{ "", "{", '{"a":', '{"a":1', '["abc', "[1,]", "{'a':1}", "tru" } do
      local v, err = core.json_decode(text)
      assert.is_nil(v, text)
      assert.is_string(err, text)
    end
    local _, err = core.json_decode('{"id":12345678901234, x}')
    assert.matches("character 23", err) -- not the rewritten text's 27
  end)

  it("bounds nesting depth without crashing", function()
    local deep = string.rep("[", 100000) .. string.rep("]", 100000)
    local v, err = core.json_decode(deep)
    assert.is_nil(v)
    assert.matches("nested", err)
    local ok = string.rep("[", 100) .. "1" .. string.rep("]", 100)
    v = assert(core.json_decode(ok))
    for _ = 1, 100 do v = v[1] end
    is_integer(v, 1)
  end)

  it("gives the same values whichever way a document is read (fast path or cjson)", function()
    -- Objects, arrays, plain strings, integers and literals are read in one pass; an
    -- escape, a float or deep nesting sends the whole document through cjson.
    for _, n in ipairs{1, 31, 32, 33, 64, 65, 200} do
      local items, keys = {}, {}
      for i = 1, n do
        items[i] = tostring(i)
        keys[i] = ('"k%d":%s'):format(i, i % 7 == 0 and "null" or tostring(-i))
      end
      local list = assert(core.json_decode("[" .. table.concat(items, ",") .. ",null]"))
      assert.are.equal(n + 1, #list)
      for i = 1, n do is_integer(list[i], i) end
      assert.are.equal(false, list[n + 1])
      local obj = assert(core.json_decode("{" .. table.concat(keys, ",") .. "}"))
      for i = 1, n do
        if i % 7 == 0 then assert.is_nil(obj["k" .. i]) else is_integer(obj["k" .. i], -i) end
      end
      -- the same document with one escaped string goes through cjson: same values
      local slow = assert(core.json_decode("{" .. table.concat(keys, ",") .. ',"e":"\\u0041"}'))
      slow.e = nil
      assert.are.same(obj, slow)
    end
    assert.are.same({a = 1}, core.json_decode(' {"a":null,"a":1} '))
    assert.are.same({}, core.json_decode('{"a":1,"a":null}'))
    assert.are.same({a = {}, b = {}, c = true, d = false}, core.json_decode('{"a":[],"b":{},"c":true,"d":false}'))
    for _, bad in ipairs{"[1,]", '{"a":1,}', "[1 2]", '{"a" 1}', "[1]x", "tru", "[", '{"a":nul}', ""} do
      local v, err = core.json_decode(bad)
      assert.is_nil(v)
      assert.is_string(err)
    end
  end)

  it("decodes a realistic page of devices", function()
    local body = [[{"Page":1,"PageSize":50,"PageCount":1,"Total":2,"ApplyDeviceList":
      {"ApplyDeviceInfo":[{"DeviceId":null,"DeviceName":"light1","DeviceSecret":"s1",
      "IotId":"id1"},{"DeviceName":"light2","DeviceSecret":"s2","IotId":"id2"}]},
      "RequestId":"R","Success":true}]]
    local v = assert(core.json_decode(body))
    is_integer(v.Total, 2)
    assert.are.equal(2, #v.ApplyDeviceList.ApplyDeviceInfo)
    assert.is_nil(v.ApplyDeviceList.ApplyDeviceInfo[1].DeviceId)
    assert.are.equal("light2", v.ApplyDeviceList.ApplyDeviceInfo[2].DeviceName)
  end)

  it("raises on a non-string argument", function()
    assert.has_error(function() core.json_decode({}) end)
    assert.has_error(function() core.json_decode() end)
  end)

  it("does not change the settings of the application's cjson", function()
    local cjson = require "cjson.safe"
    core.json_decode("1")
    assert.is_not_nil(cjson.decode("[0x10]")) -- still accepts what our instance rejects
  end)
end)

describe("core.xml_decode", function()
  it("decodes a gateway error (with CDATA)", function()
    local root, t = core.xml_decode(
      "<?xml version='1.0' encoding='UTF-8'?><Error><RequestId>R-1</RequestId>" ..
      "<HostId>iot.cn-shanghai.aliyuncs.com</HostId><Code>RequestParameterMalformed</Code>" ..
      "<Message>Request parameters has malformed encoded characters.</Message>" ..
      "<Recommend><![CDATA[https://error-center.aliyun.com/status/search?Keyword=X&source=PopGw]]>" ..
      "</Recommend></Error>")
    assert.are.equal("Error", root)
    assert.are.same({
      RequestId = { "R-1" }, HostId = { "iot.cn-shanghai.aliyuncs.com" },
      Code = { "RequestParameterMalformed" },
      Message = { "Request parameters has malformed encoded characters." },
      Recommend = { "https://error-center.aliyun.com/status/search?Keyword=X&source=PopGw" },
    }, t)
  end)

  it("makes every child a list, a one-element list included, and keeps text as text", function()
    local root, t = core.xml_decode([[
<?xml version="1.0" encoding="utf-8"?>
<QueryBatchRegisterDeviceStatusResponse>
  <RequestId>E976E36B</RequestId>
  <Data>
    <Status>CREATE_FAILED</Status>
    <ValidList><Name>light3</Name></ValidList>
    <InvalidList>
      <Name>Elec_instrument</Name>
      <Name>12345678</Name>
    </InvalidList>
    <InvalidDetailList/>
  </Data>
  <Success>true</Success>
</QueryBatchRegisterDeviceStatusResponse>]])
    assert.are.equal("QueryBatchRegisterDeviceStatusResponse", root)
    assert.are.same({
      RequestId = { "E976E36B" },
      Success = { "true" },
      Data = { {
        Status = { "CREATE_FAILED" },
        ValidList = { { Name = { "light3" } } },
        InvalidList = { { Name = { "Elec_instrument", "12345678" } } },
        InvalidDetailList = { "" },
      } },
    }, t)
  end)

  it("decodes a page of devices in document order", function()
    local root, t = core.xml_decode(
      "<QueryPageByApplyIdResponse><Page>1</Page><ApplyDeviceList>" ..
      "<ApplyDeviceInfo><DeviceName>a</DeviceName><DeviceSecret>s1</DeviceSecret></ApplyDeviceInfo>" ..
      "<ApplyDeviceInfo><DeviceName>b</DeviceName><DeviceSecret>s2</DeviceSecret></ApplyDeviceInfo>" ..
      "</ApplyDeviceList><Total>2</Total></QueryPageByApplyIdResponse>")
    assert.are.equal("QueryPageByApplyIdResponse", root)
    local infos = t.ApplyDeviceList[1].ApplyDeviceInfo
    assert.are.equal(2, #infos)
    assert.are.equal("a", infos[1].DeviceName[1])
    assert.are.equal("s2", infos[2].DeviceSecret[1])
    assert.are.same({ "2" }, t.Total)
  end)

  it("keeps a leaf's text exactly: spaces, entities, CDATA, UTF-8; ignores attributes", function()
    local root, t = core.xml_decode(
      '<R a="1"><N b="2"> x &amp; &lt;y&gt; </N><M>a<![CDATA[<b>&]]>c</M>' ..
      '<U>\230\153\186\232\131\189\231\129\175</U><E></E><S/></R>')
    assert.are.equal("R", root)
    assert.are.same({ N = { " x & <y> " }, M = { "a<b>&c" }, U = { "智能灯" },
                      E = { "" }, S = { "" } }, t)
    root, t = core.xml_decode("<Only>text</Only>")
    assert.are.equal("Only", root)
    assert.are.equal("text", t)
  end)

  it("reports malformed and truncated XML with a position", function()
    for _, text in ipairs{ "", "<R>", "<R><A>1</A>", "<R><A></R>", "<R>&bogus;</R>",
                           "not xml", "<R></R><S/>", "<R>\255</R>" } do
      local root, err = core.xml_decode(text)
      assert.is_nil(root, text)
      assert.matches("line %d+, column %d+", err)
    end
  end)

  it("refuses DOCTYPEs (no entity expansion, no billion laughs)", function()
    local lol = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">' ..
      '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>'
    local root, err = core.xml_decode(lol)
    assert.is_nil(root)
    assert.matches("DOCTYPE", err)
  end)

  it("bounds nesting depth", function()
    local root, err = core.xml_decode(string.rep("<a>", 65) .. string.rep("</a>", 65))
    assert.is_nil(root)
    assert.matches("nested too deeply", err)
    root = core.xml_decode(string.rep("<a>", 64) .. "x" .. string.rep("</a>", 64))
    assert.are.equal("a", root)
  end)

  it("skips a UTF-8 byte order mark before the document", function()
    local root, t = core.xml_decode("\239\187\191<?xml version='1.0' encoding='UTF-8'?>" ..
      "<Error><Code>Throttling.User</Code></Error>")
    assert.are.equal("Error", root)
    assert.are.same({ Code = { "Throttling.User" } }, t)
    root, t = core.xml_decode("\239\187\191<R><A>1</A></R>")
    assert.are.equal("R", root)
    assert.are.same({ A = { "1" } }, t)
  end)

  it("refuses external entities (XXE) with the DOCTYPE that declares them", function()
    local xxe = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>' ..
      '<r>&x;</r>'
    local root, err = core.xml_decode(xxe)
    assert.is_nil(root)
    assert.matches("DOCTYPE", err)
  end)

  it("raises on a non-string argument", function()
    assert.has_error(function() core.xml_decode(nil) end)
  end)
end)
