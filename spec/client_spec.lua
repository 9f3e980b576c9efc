-- The client against the local emulator over real HTTP on loopback.
local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"

local PK = "a1TestPK001"
local SECRET = "testsecret"

local function client_for(emu, opts)
  local o = {access_key_id = "testid", access_key_secret = SECRET, endpoint = emu.endpoint,
             qps = false, max_retries = 0}
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(iot.new(o))
end

local function is_integer(v)
  if math.type then return math.type(v) == "integer" end
  return type(v) == "number" and v == math.floor(v)
end

describe("client", function()
  local emu, client

  setup(function()
    emu = emulator.start{async_delay = 0}
  end)

  teardown(function()
    emu:stop()
  end)

  before_each(function()
    emu:reset()
    emu:set{async_delay = 0}
    client = client_for(emu)
  end)

  -- Registers named devices through the check/register flow and returns the ApplyId.
  local function register_named(c, names)
    local r = assert(c:batch_check_device_names{ProductKey = PK, DeviceName = names})
    local id = r.Data.ApplyId
    local s = assert(c:query_batch_register_device_status{ProductKey = PK, ApplyId = id})
    assert.are.equal("CHECK_SUCCESS", s.Data.Status)
    assert(c:batch_register_device_with_apply_id{ProductKey = PK, ApplyId = id})
    s = assert(c:query_batch_register_device_status{ProductKey = PK, ApplyId = id})
    assert.are.equal("CREATE_SUCCESS", s.Data.Status)
    return id
  end

  describe("every operation", function()
    for _, format in ipairs{"JSON", "XML"} do
      it("works in " .. format, function()
        local c = client_for(emu, {format = format})
        local r = assert(c:batch_register_device{ProductKey = PK, Count = 3})
        assert.is_true(r.Success)
        assert.is_true(is_integer(r.Data.ApplyId))
        local s = assert(c:query_batch_register_device_status{ProductKey = PK, ApplyId = r.Data.ApplyId})
        assert.are.equal("CREATE_SUCCESS", s.Data.Status)
        local page = assert(c:query_page_by_apply_id{ApplyId = r.Data.ApplyId, PageSize = 50})
        assert.are.equal(3, page.Total)
        assert.are.equal(3, #page.ApplyDeviceList.ApplyDeviceInfo)
        local dev = page.ApplyDeviceList.ApplyDeviceInfo[1]
        assert.is_string(dev.DeviceSecret)

        local id = register_named(c, {"light_001", "light_002"})
        page = assert(c:query_page_by_apply_id{ApplyId = id})
        assert.are.equal(2, page.Total)

        local reg = assert(c:register_device{ProductKey = PK, DeviceName = "single_01", Nickname = "lamp_one"})
        assert.are.equal("single_01", reg.Data.DeviceName)
        local detail = assert(c:query_device_detail{IotId = reg.Data.IotId})
        assert.are.equal("single_01", detail.Data.DeviceName)
        detail = assert(c:query_device_detail{ProductKey = PK, DeviceName = "light_001"})
        assert.are.equal("light_001", detail.Data.DeviceName)

        local list = assert(c:query_device{ProductKey = PK, PageSize = 50})
        assert.are.equal(6, list.Total)
        assert.are.equal(6, #list.Data.DeviceInfo)

        local state = assert(c:batch_get_device_state{ProductKey = PK, DeviceName = {"light_001", "light_002"}})
        assert.are.equal(2, #state.DeviceStatusList.DeviceStatus)

        assert(c:delete_device{ProductKey = PK, DeviceName = "single_01"})
        local gone, err = c:query_device_detail{ProductKey = PK, DeviceName = "single_01"}
        assert.is_nil(gone)
        assert.are.equal("iot.device.NotExistedDevice", err.code)
      end)
    end

    it("gives deep-equal results in JSON and XML for every action", function()
      local j, x = client_for(emu, {format = "JSON"}), client_for(emu, {format = "XML"})
      local id = register_named(j, {"cmp_0001", "cmp_0002"})
      local bad = assert(j:batch_check_device_names{ProductKey = PK, DeviceName = {"cmp_0001", "cmp_0003"}}).Data.ApplyId
      local reg = assert(j:register_device{ProductKey = PK, DeviceName = "cmp_0004"})
      local calls = {
        {"QueryBatchRegisterDeviceStatus", {ProductKey = PK, ApplyId = id}},
        {"QueryBatchRegisterDeviceStatus", {ProductKey = PK, ApplyId = bad}},
        {"QueryPageByApplyId", {ApplyId = id, PageSize = 1}},
        {"QueryPageByApplyId", {ApplyId = id}},
        {"QueryDeviceDetail", {IotId = reg.Data.IotId}},
        {"QueryDevice", {ProductKey = PK, PageSize = 2}},
        {"BatchGetDeviceState", {ProductKey = PK, DeviceName = {"cmp_0001"}}},
        {"BatchGetDeviceState", {IotId = {reg.Data.IotId}}},
      }
      for _, call in ipairs(calls) do
        local a = assert(j:call(call[1], call[2]))
        local b = assert(x:call(call[1], call[2]))
        a.RequestId, b.RequestId = nil, nil
        assert.are.same(a, b, call[1])
      end
      -- actions that change state: compare shapes over two fresh calls
      for _, action in ipairs{"BatchRegisterDevice", "BatchCheckDeviceNames"} do
        local params = action == "BatchRegisterDevice" and {ProductKey = PK, Count = 1}
          or {ProductKey = PK, DeviceName = {"cmp_0100"}}
        local a, b = assert(j:call(action, params)), assert(x:call(action, params))
        assert.is_true(is_integer(a.Data.ApplyId) and is_integer(b.Data.ApplyId))
        a.RequestId, b.RequestId, a.Data.ApplyId, b.Data.ApplyId = nil, nil, nil, nil
        assert.are.same(a, b, action)
      end
    end)
  end)

  describe("wire", function()
    it("sends POST with a form body by default and GET when asked, on one connection", function()
      assert(client:query_device{ProductKey = PK})
      assert(client:query_device({ProductKey = PK}, {method = "GET"}))
      assert(client:query_device{ProductKey = PK})
      local reqs = emu:requests()
      assert.are.same({"POST", "GET", "POST"}, {reqs[1].method, reqs[2].method, reqs[3].method})
    end)

    it("signs correctly with a secret holding & = + / and non-ASCII, both algorithms", function()
      local secret = "te&st+se/cr=et\228\184\173"
      local special = emulator.start{access_keys = {special = secret}, async_delay = 0}
      local ok = true
      for _, alg in ipairs{"HMAC-SHA1", "ACS3-HMAC-SHA256"} do
        local c = assert(iot.new{access_key_id = "special", access_key_secret = secret,
          endpoint = special.endpoint, qps = false, signature_algorithm = alg})
        ok = ok and c:query_device{ProductKey = PK} ~= nil
      end
      special:stop()
      assert.is_true(ok)
    end)

    it("signs with ACS3-HMAC-SHA256 too", function()
      local c = client_for(emu, {signature_algorithm = "ACS3-HMAC-SHA256"})
      local r = assert(c:batch_register_device{ProductKey = PK, Count = 2})
      assert(c:query_page_by_apply_id({ApplyId = r.Data.ApplyId}, {method = "GET"}))
      local reqs = emu:requests()
      assert.are.equal("ACS3", reqs[1].signature)
      assert.are.equal("ACS3", reqs[2].signature)
    end)

    it("sends a fresh nonce and timestamp with every attempt", function()
      emu:fault{kind = "throttle", count = 2}
      local c = client_for(emu, {max_retries = 3})
      assert(c:query_device{ProductKey = PK})
      local reqs = emu:requests()
      assert.are.equal(3, #reqs)
      assert.are_not.equal(reqs[1].params.SignatureNonce, reqs[2].params.SignatureNonce)
      assert.are_not.equal(reqs[2].params.SignatureNonce, reqs[3].params.SignatureNonce)
      assert.are.equal(2, c:stats().throttled)
      assert.are.equal(2, c:stats().retries)
    end)

    it("sends IotInstanceId with every call when set", function()
      local inst = emulator.start{iot_instance_id = "iot-test-01", async_delay = 0}
      local c = client_for(inst, {iot_instance_id = "iot-test-01"})
      local ok, err = c:query_device{ProductKey = PK}
      local sent = inst:requests()[1].params.IotInstanceId
      local _, missing = client_for(inst):query_device{ProductKey = PK}
      inst:stop()
      assert(ok, err)
      assert.are.equal("iot-test-01", sent)
      assert.is_table(missing)
    end)

    it("sends an ApplyId back exactly, beyond 2^53 too", function()
      local big = emulator.start{apply_id_base = "9007199254740993", async_delay = 0}
      local c = client_for(big)
      local r = assert(c:batch_register_device{ProductKey = PK, Count = 1})
      local id = r.Data.ApplyId
      if math.type then
        assert.are.equal("integer", math.type(id))
        assert.is_true(id > 9007199254740992)
      end
      local s = assert(c:query_batch_register_device_status{ProductKey = PK, ApplyId = id})
      assert.are.equal("CREATE_SUCCESS", s.Data.Status)
      local sent = big:requests()[2].params.ApplyId
      big:stop()
      assert.are.equal(tostring(id):gsub("%.0$", ""), sent)
      assert.is_nil(sent:find("%."))
    end)

    it("accepts an ApplyId given as an integral float or a digit string", function()
      local r = assert(client:batch_register_device{ProductKey = PK, Count = 1})
      local id = r.Data.ApplyId
      assert(client:query_batch_register_device_status{ProductKey = PK, ApplyId = id + 0.0})
      assert(client:query_batch_register_device_status{ProductKey = PK, ApplyId = tostring(id)})
      for _, req in ipairs(emu:requests()) do
        if req.params.ApplyId then assert.are.equal(tostring(id), req.params.ApplyId) end
      end
    end)
  end)

  describe("errors", function()
    it("reports gateway errors with their fields and a readable string", function()
      local c = assert(iot.new{access_key_id = "nobody", access_key_secret = "x1234567",
                               endpoint = emu.endpoint, qps = false})
      local r, err = c:query_device{ProductKey = PK}
      assert.is_nil(r)
      assert.matches("^InvalidAccessKeyId", err.code)
      assert.is_number(err.http_status)
      assert.is_string(err.request_id)
      assert.matches("HTTP %d+", tostring(err))
    end)

    it("says what differs on SignatureDoesNotMatch, without the secret or token", function()
      local token = "CAIS+sts/Token==value"
      local c = assert(iot.new{access_key_id = "testid", access_key_secret = "wrongsecret",
                               security_token = token, endpoint = emu.endpoint, qps = false})
      local _, err = c:query_device{ProductKey = PK}
      assert.are.equal("SignatureDoesNotMatch", err.code)
      assert.matches("AccessKeySecret is probably wrong", err.message, 1, true)
      local text = tostring(err) .. err.message
      assert.is_nil(text:find("wrongsecret", 1, true))
      assert.is_nil(text:find("sts/Token", 1, true))
      assert.is_nil(text:find("sts%2FToken", 1, true))
      assert.is_nil(text:find("sts%252FToken", 1, true))
    end)

    it("returns business errors (HTTP 200, Success false) with the response", function()
      assert(client:register_device{ProductKey = PK, DeviceName = "dup_0001"})
      local r, err = client:register_device{ProductKey = PK, DeviceName = "dup_0001"}
      assert.is_nil(r)
      assert.are.equal("iot.device.AlreadyExistedDeviceName", err.code)
      assert.are.equal(200, err.http_status)
      assert.is_table(err.response)
      assert.is_false(err.response.Success)
    end)

    it("validates before sending anything", function()
      local cases = {
        {"BatchRegisterDevice", {ProductKey = PK, Count = 0}, "Count"},
        {"BatchRegisterDevice", {ProductKey = PK, Count = 1001}, "Count"},
        {"BatchRegisterDevice", {ProductKey = PK, Count = 1.5}, "Count"},
        {"BatchRegisterDevice", {ProductKey = PK, Count = "1e3"}, "Count"},
        {"BatchRegisterDevice", {Count = 1}, "ProductKey"},
        {"BatchRegisterDevice", {ProductKey = "", Count = 1}, "ProductKey"},
        {"RegisterDevice", {ProductKey = PK, DeviceName = "ab"}, "DeviceName"},
        {"RegisterDevice", {ProductKey = PK, DeviceName = "a b c d"}, "DeviceName"},
        {"RegisterDevice", {ProductKey = PK, DeviceName = "dev\r\nX: y"}, "DeviceName"},
        {"BatchCheckDeviceNames", {ProductKey = PK, DeviceName = {"abcd", "abcd"}}, "DeviceName.2"},
        {"QueryBatchRegisterDeviceStatus", {ProductKey = PK, ApplyId = 4415.5}, "ApplyId"},
        {"QueryBatchRegisterDeviceStatus", {ProductKey = PK, ApplyId = -1}, "ApplyId"},
        {"QueryBatchRegisterDeviceStatus", {ProductKey = PK, ApplyId = "abc"}, "ApplyId"},
        {"QueryPageByApplyId", {ApplyId = 1, PageSize = 51}, "PageSize"},
        {"QueryPageByApplyId", {ApplyId = 1, PageSize = 0}, "PageSize"},
        {"QueryDeviceDetail", {}, "IotId"},
      }
      for _, case in ipairs(cases) do
        local r, err = client:call(case[1], case[2])
        assert.is_nil(r, case[3])
        assert.are.equal("InvalidParameter", err.code, case[3])
        assert.are.equal(case[3], err.parameter)
      end
      assert.are.equal(0, #emu:requests())
    end)

    it("reaches an action the table does not know, with any parameters", function()
      local r, err = client:call("GetDeviceStatus", {ProductKey = PK, DeviceName = "any_0001"})
      assert.is_nil(r)
      assert.are.equal("InvalidApi.NotFound", err.code)
      assert.are.equal(1, #emu:requests())
    end)

    it("rejects a misspelt parameter of a known action before sending", function()
      local r, err = client:query_device_detail{ProductKey = PK, DeviceNmae = "lamp_0001"}
      assert.is_nil(r)
      assert.are.equal("InvalidParameter", err.code)
      assert.are.equal("DeviceNmae", err.parameter)
      assert.matches("unknown parameter DeviceNmae", err.message, 1, true)
      assert(client:query_device{ProductKey = PK, IotInstanceId = nil})
      assert.are.equal(1, #emu:requests())
    end)

    it("keeps secrets found outside the options out of errors", function()
      local token = "STS.tokenABCDEF123456"
      local sts = emulator.start{security_tokens = {token}, async_delay = 0}
      local c = assert(iot.new{endpoint = sts.endpoint, qps = false, credentials = function()
        return {access_key_id = "testid", access_key_secret = "nope-not-it", security_token = token}
      end})
      local _, err = c:query_device{ProductKey = PK}
      sts:stop()
      assert.are.equal("SignatureDoesNotMatch", err.code)
      local text = tostring(err) .. err.message
      assert.is_nil(text:find("tokenABCDEF", 1, true))
      assert.is_nil(text:find("nope-not-it", 1, true))
    end)

    it("refuses timeouts beyond a day and params lists with holes", function()
      local c, err = iot.new{access_key_id = "a", access_key_secret = "b", timeout = 9999999}
      assert.is_nil(c)
      assert.are.equal("timeout", err.parameter)
      assert.has_error(function()
        client:call_many("QueryDevice", {{ProductKey = PK}, nil, {ProductKey = PK}})
      end)
    end)

    it("checks call option values before sending", function()
      local cases = {{timeout = 0}, {timeout = -5}, {timeout = 0 / 0}, {connect_timeout = 1e9},
                     {max_retries = 1.5}, {max_retries = -1}, {format = "YAML"}, {method = "PUT"}}
      for _, o in ipairs(cases) do
        local r, err = client:query_device({ProductKey = PK}, o)
        assert.is_nil(r)
        assert.are.equal("InvalidParameter", err.code)
        assert.are.equal(next(o), err.parameter)
      end
      local _, errs = client:call_many("QueryDevice", {{ProductKey = PK}}, {format = "YAML"})
      assert.are.equal("format", errs[1].parameter)
      assert.has_error(function() client:call_many("QueryDevice", {{ProductKey = PK}}, nil, 0) end)
      assert.has_error(function() client:call_many("QueryDevice", {{ProductKey = PK}}, nil, 1.5) end)
      assert.are.equal(0, #emu:requests())
    end)

    it("says whether an ACS3 signature failed on the secret or on the request", function()
      local c = assert(iot.new{access_key_id = "testid", access_key_secret = "wrongsecret",
        endpoint = emu.endpoint, qps = false, signature_algorithm = "ACS3-HMAC-SHA256"})
      local _, err = c:query_device{ProductKey = PK}
      assert.are.equal("SignatureDoesNotMatch", err.code)
      assert.matches("AccessKeySecret is probably wrong", err.message, 1, true)
      assert.is_nil(tostring(err):find("wrongsecret", 1, true))
    end)

    it("raises on misuse", function()
      assert.has_error(function() client:call(1, {}) end)
      assert.has_error(function() client:call("QueryDevice", "x") end)
      assert.has_error(function() client:query_device({ProductKey = PK}, {tiemout = 1}) end)
      assert.has_error(function() iot.new{acess_key_id = "x"} end)
      assert.has_error(function() iot.new{timeout = "5"} end)
    end)

    it("rejects bad endpoints before sending", function()
      for _, url in ipairs{"ftp://x/", "http://a\r\nb/", "http://user:pw@host/", "iot.example"} do
        local c, err = iot.new{access_key_id = "a", access_key_secret = "b", endpoint = url}
        assert.is_nil(c)
        assert.are.equal("endpoint", err.parameter)
      end
    end)
  end)

  describe("retries", function()
    it("retries throttling and 503 for any action", function()
      emu:fault{kind = "throttle", count = 1, action = "BatchRegisterDevice"}
      emu:fault{kind = "503", count = 1, action = "BatchRegisterDevice"}
      local c = client_for(emu, {max_retries = 3})
      assert(c:batch_register_device{ProductKey = PK, Count = 2})
      assert.are.equal(1, #emu:state().applies)
    end)

    it("never re-sends BatchRegisterDevice after a timeout once sent", function()
      emu:fault{kind = "slow", delay = 1.5, count = 1, action = "BatchRegisterDevice"}
      local c = client_for(emu, {max_retries = 3, timeout = 0.5})
      local r, err = c:batch_register_device{ProductKey = PK, Count = 2}
      assert.is_nil(r)
      assert.are.equal("Timeout", err.code)
      assert.is_true(err.ambiguous)
      require("aliyun.iot.core").sleep(1.5) -- the emulator records it once it has answered
      assert.are.equal(1, #emu:requests())
    end)

    it("never re-sends BatchRegisterDevice after a reset once it acted", function()
      emu:fault{kind = "reset_after", count = 1, action = "BatchRegisterDevice"}
      local c = client_for(emu, {max_retries = 3})
      local r, err = c:batch_register_device{ProductKey = PK, Count = 2}
      assert.is_nil(r)
      assert.is_true(err.ambiguous)
      assert.are.equal(1, #emu:requests())
      assert.are.equal(1, #emu:state().applies)
    end)

    it("re-sends idempotent actions after ambiguous failures", function()
      local r = assert(client:batch_register_device{ProductKey = PK, Count = 1})
      emu:fault{kind = "reset", count = 1}
      emu:fault{kind = "truncate", count = 1}
      emu:fault{kind = "malformed", count = 1}
      local c = client_for(emu, {max_retries = 3})
      assert(c:query_page_by_apply_id{ApplyId = r.Data.ApplyId})
      assert.are.equal(3, c:stats().retries)
    end)

    it("resolves a named RegisterDevice whose answer was lost", function()
      emu:fault{kind = "reset_after", count = 1, action = "RegisterDevice"}
      local c = client_for(emu, {max_retries = 2})
      local r = assert(c:register_device{ProductKey = PK, DeviceName = "lost_0001"})
      assert.are.equal("lost_0001", r.Data.DeviceName)
      assert.is_string(r.Data.DeviceSecret)
      assert.are.equal(1, emu:state().products[PK].devices)
    end)

    it("corrects a skewed clock from the server's Date header once", function()
      local c = client_for(emu, {max_retries = 3})
      c.clock_offset = -2 * 3600 -- as if the host clock ran two hours late
      assert(c:query_device{ProductKey = PK})
      local reqs = emu:requests()
      assert.are.equal(2, #reqs)
      assert.are.equal("InvalidTimeStamp.Expired", reqs[1].code)
      assert.is_true(math.abs(c.clock_offset) < 60)
      assert(c:query_device{ProductKey = PK})
      assert.are.equal(3, #emu:requests())
    end)

    it("resolves a named RegisterDevice whose answer was lost in call_many too", function()
      emu:fault{kind = "reset_after", count = 1, action = "RegisterDevice"}
      local c = client_for(emu, {max_retries = 2})
      local results, errs = c:call_many("RegisterDevice", {
        {ProductKey = PK, DeviceName = "many_0001"}, {ProductKey = PK, DeviceName = "many_0002"}})
      for i = 1, 2 do
        assert.is_nil(errs[i])
        assert.is_string(results[i].Data.DeviceSecret)
      end
      assert.are.equal(2, emu:state().products[PK].devices)
    end)

    it("gives up after max_retries", function()
      emu:fault{kind = "503", probability = 1}
      local c = client_for(emu, {max_retries = 2})
      local r, err = c:query_device{ProductKey = PK}
      emu:clear_faults()
      assert.is_nil(r)
      assert.are.equal(503, err.http_status)
      assert.are.equal(3, #emu:requests())
    end)
  end)

  describe("transport limits", function()
    it("times out on a server that accepts and never answers", function()
      local socket = require "socket"
      local server = assert(socket.bind("127.0.0.1", 0))
      local _, port = server:getsockname()
      local c = assert(iot.new{access_key_id = "a", access_key_secret = "b", qps = false,
                               endpoint = ("http://127.0.0.1:%d/"):format(port),
                               timeout = 0.5, max_retries = 0})
      local t0 = socket.gettime()
      local r, err = c:query_device{ProductKey = PK}
      local elapsed = socket.gettime() - t0
      server:close()
      assert.is_nil(r)
      assert.are.equal("Timeout", err.code)
      assert.is_true(elapsed < 5)
    end)

    it("fails to connect to a closed port without retrying forever", function()
      local socket = require "socket"
      local s = assert(socket.bind("127.0.0.1", 0))
      local _, port = s:getsockname()
      s:close()
      local c = assert(iot.new{access_key_id = "a", access_key_secret = "b", qps = false,
                               endpoint = ("http://127.0.0.1:%d/"):format(port), max_retries = 1})
      local r, err = c:query_device{ProductKey = PK}
      assert.is_nil(r)
      assert.are.equal("ConnectFailed", err.code)
      assert.is_true(err.retryable)
    end)

    it("caps the response size", function()
      assert(client:batch_register_device{ProductKey = PK, Count = 50})
      local c = client_for(emu, {max_response_size = 1024})
      local r, err = c:query_device{ProductKey = PK, PageSize = 50}
      assert.is_nil(r)
      assert.are.equal("ResponseTooLarge", err.code)
    end)

    it("keeps DeviceSecrets out of a truncated body's error", function()
      local r = assert(client:batch_register_device{ProductKey = PK, Count = 5})
      local page = assert(client:query_page_by_apply_id{ApplyId = r.Data.ApplyId})
      -- a real response, cut short after it arrived (a body that ends early while its
      -- length matched: what a broken proxy can deliver)
      local c = client_for(emu, {transport = function(req)
        local res, terr = iot.transports.curl(req)
        if res then res.body = res.body:sub(1, math.floor(#res.body * 0.9)) end
        return res, terr
      end})
      local _, err = c:query_page_by_apply_id{ApplyId = r.Data.ApplyId}
      assert.are.equal("InvalidResponse", err.code)
      assert.matches("DeviceSecret", err.message, 1, true)
      for _, d in ipairs(page.ApplyDeviceList.ApplyDeviceInfo) do
        assert.is_nil(tostring(err):find(d.DeviceSecret, 1, true))
        assert.is_nil(err.message:find(d.DeviceSecret, 1, true))
      end
    end)
  end)

  describe("TLS", function()
    local tls
    setup(function() tls = emulator.start{tls = true, async_delay = 0} end)
    teardown(function() tls:stop() end)

    it("rejects a self-signed server by default, without retrying", function()
      local c = client_for(tls, {max_retries = 3})
      local r, err = c:query_device{ProductKey = PK}
      assert.is_nil(r)
      assert.are.equal("TLSError", err.code)
      assert.is_false(err.retryable)
      assert.are.equal(0, c:stats().retries)
    end)

    it("accepts it with ca_file", function()
      local c = client_for(tls, {ca_file = tls.ca_file})
      assert(c:query_device{ProductKey = PK})
    end)

    it("names a missing ca_file", function()
      local c = client_for(tls, {ca_file = "/nonexistent/ca.pem"})
      local _, err = c:query_device{ProductKey = PK}
      assert.are.equal("TLSError", err.code)
      assert.matches("/nonexistent/ca.pem", err.message, 1, true)
    end)
  end)

  describe("call_many", function()
    it("fans out and keeps order", function()
      local ids = {}
      for i = 1, 4 do
        ids[i] = assert(client:batch_register_device{ProductKey = PK, Count = i}).Data.ApplyId
      end
      local params = {}
      for i = 1, 4 do params[i] = {ApplyId = ids[i]} end
      local results, errs = client:call_many("QueryPageByApplyId", params)
      for i = 1, 4 do
        assert.is_nil(errs[i])
        assert.are.equal(i, results[i].Total)
      end
    end)
  end)
  -- issue 11 §2: call, call_many and the batch helpers run one attempt engine.
  describe("one engine", function()
    it("call_many corrects a server clock an hour ahead as call does", function()
      local c = client_for(emu, {max_retries = 3})
      c.clock_offset = -3600 -- as if the server's clock ran an hour ahead of ours
      local results, errs = c:call_many("QueryDevice", {{ProductKey = PK}, {ProductKey = PK},
                                                        {ProductKey = PK}})
      for i = 1, 3 do
        assert.is_nil(errs[i], tostring(errs[i]))
        assert.is_true(results[i].Success)
      end
      assert.is_true(math.abs(c.clock_offset) < 60)
    end)

    it("call_many whose credentials cannot be refreshed fails every index, sends nothing", function()
      local calls = 0
      local c = assert(iot.new{endpoint = emu.endpoint, qps = false, max_retries = 0,
        credentials = function()
          calls = calls + 1
          if calls > 1 then return nil, "sts endpoint down" end
          -- expired by the time call_many runs: every use asks for a refresh
          return {access_key_id = "testid", access_key_secret = SECRET,
                  expiration = os.time() + 1}
        end})
      assert(c:query_device{ProductKey = PK})
      require("aliyun.iot.core").sleep(2.1)
      local results, errs = c:call_many("QueryDevice", {{ProductKey = PK}, {ProductKey = PK},
                                                        {ProductKey = PK}})
      for i = 1, 3 do
        assert.is_nil(results[i])
        assert.are.equal("InvalidCredentials", errs[i].code)
      end
      assert.are.equal(1, c:stats().requests)
      assert.are.equal(1, #emu:requests())
    end)

    it("max_retries = 0 repeats nothing, in call and in call_many", function()
      emu:fault{kind = "503", probability = 1}
      local c = client_for(emu, {max_retries = 0})
      local r, err = c:query_device{ProductKey = PK}
      assert.is_nil(r)
      assert.are.equal(503, err.http_status)
      assert.are.equal(1, #emu:requests())
      local results, errs = c:call_many("QueryDevice", {{ProductKey = PK}, {ProductKey = PK}})
      assert.is_nil(results[1])
      assert.are.equal(503, errs[1].http_status)
      assert.are.equal(503, errs[2].http_status)
      assert.are.equal(3, #emu:requests())
      assert.are.equal(0, c:stats().retries)
      local d = assert(iot.new{access_key_id = "testid", access_key_secret = SECRET,
                               endpoint = emu.endpoint, qps = false})
      local _, errs2 = d:call_many("QueryDevice", {{ProductKey = PK}, {ProductKey = PK}},
                                   {max_retries = 0})
      emu:clear_faults()
      assert.are.equal(503, errs2[1].http_status)
      assert.are.equal(5, #emu:requests())
    end)

    it("a named RegisterDevice whose answer was lost is not resolved with max_retries = 0",
       function()
      emu:fault{kind = "reset_after", count = 1, action = "RegisterDevice"}
      local c = client_for(emu, {max_retries = 0})
      local results, errs = c:call_many("RegisterDevice", {{ProductKey = PK, DeviceName = "zero_0001"},
                                                           {ProductKey = PK, DeviceName = "zero_0002"}})
      assert.is_nil(results[1])
      assert.is_true(errs[1].ambiguous)
      assert.is_string(results[2].Data.DeviceSecret)
      assert.are.equal(2, #emu:requests())
    end)

    it("invoke and invoke_many take hooks and a deadline", function()
      local c = client_for(emu, {max_retries = 2})
      local sent = 0
      local r = assert(c:invoke("QueryDevice", {ProductKey = PK},
        {on_send = function() sent = sent + 1; return true end}))
      assert.is_true(r.Success)
      assert.are.equal(1, sent)
      -- a refused attempt: on_retry hears of it before the repeat
      emu:fault{kind = "throttle", count = 1}
      local heard
      assert(c:invoke("QueryDevice", {ProductKey = PK},
        {on_retry = function(e) heard = e.code; return true end}))
      assert.are.equal("Throttling.User", heard)
      -- on_send refusing abandons the call unsent
      local n = #emu:requests()
      local _, err = c:invoke("QueryDevice", {ProductKey = PK},
        {on_send = function() return nil, iot.errors.new{code = "Stop", message = "no"} end})
      assert.are.equal("Stop", err.code)
      assert.are.equal(n, #emu:requests())
      -- a deadline already passed: nothing is sent
      _, err = c:invoke("QueryDevice", {ProductKey = PK}, {deadline = c:clock() - 1})
      assert.are.equal("DeadlineExceeded", err.code)
      local results, errs = c:invoke_many("QueryDevice", {{ProductKey = PK}, {ProductKey = PK}},
                                          {deadline = c:clock() - 1})
      assert.is_nil(results[1])
      assert.are.equal("DeadlineExceeded", errs[1].code)
      assert.are.equal("DeadlineExceeded", errs[2].code)
      assert.are.equal(n, #emu:requests())
      -- a deadline cuts repeats short: a 503 forever ends at the deadline
      emu:fault{kind = "503", probability = 1}
      c = client_for(emu, {max_retries = 100})
      _, err = c:invoke("QueryDevice", {ProductKey = PK}, {deadline = c:clock() + 0.5})
      emu:clear_faults()
      assert.are.equal("DeadlineExceeded", err.code)
      assert.are.equal("ServiceUnavailable", err.cause.code)
      assert.has_error(function() c:invoke("QueryDevice", {ProductKey = PK}, {dedline = 1}) end)
      assert.is_number(c:clock())
      c:pause(0)
    end)

    it("paces by the AccessKeyId in use, wherever it came from", function()
      local c = assert(iot.new{endpoint = emu.endpoint, qps = {QueryDevice = 1000},
        credentials = function()
          return {access_key_id = "testid", access_key_secret = SECRET}
        end})
      assert(c:query_device{ProductKey = PK})
      assert.is_number(c.pacer.slots["testid\0QueryDevice"])
      assert.is_nil(c.pacer.slots["default\0QueryDevice"])
    end)

    it("lets a signal raised in a credentials function stop the call (not a failed fetch)", function()
      for _, e in ipairs{"stdin:1: interrupted!", "terminated!"} do
        local c = assert(iot.new{endpoint = emu.endpoint, qps = false,
          credentials = function() error(e, 0) end})
        local ok, r = pcall(c.query_device, c, {ProductKey = PK})
        assert.is_false(ok)
        assert.are.equal(e, r)
      end
      -- any other error is the provider's failure: nil, err
      local c = assert(iot.new{endpoint = emu.endpoint, qps = false,
        credentials = function() error("no vault today", 0) end})
      local res, err = c:query_device{ProductKey = PK}
      assert.is_nil(res)
      assert.truthy(tostring(err):find("no vault today", 1, true))
    end)

    it("draws backoff jitter from OpenSSL, not from math.random", function()
      local retry = require "aliyun.iot.retry"
      math.randomseed(7)
      local a = {retry.backoff(5, false), retry.backoff(5, false)}
      math.randomseed(7)
      local b = {retry.backoff(5, false), retry.backoff(5, false)}
      assert.are_not.same(a, b)
      for _, v in ipairs(a) do assert.is_true(v >= 0 and v <= 6.4) end
    end)

    it("starts no attempt whose pacing slot lies past the deadline", function()
      local c = client_for(emu, {qps = {QueryDevice = 1}})
      assert(c:invoke("QueryDevice", {ProductKey = PK}))
      local ok, r, err = pcall(c.invoke, c, "QueryDevice", {ProductKey = PK},
                               {deadline = c:clock() + 0.3})
      assert.is_true(ok, tostring(r))
      assert.are.equal("DeadlineExceeded", err.code)
      local results, errs = c:invoke_many("QueryDevice", {{ProductKey = PK}, {ProductKey = PK}},
                                          {deadline = c:clock() + 0.3})
      assert.is_nil(results[1])
      assert.are.equal("DeadlineExceeded", errs[2].code)
      assert.are.equal(1, #emu:requests())
    end)

    -- issue 17: timeouts are cut when a request is built; one queued in libcurl's multi
    -- behind others started later, past them and past the deadline (concurrency 1: 18
    -- requests in 26 s for a 1.5 s deadline).
    for _, conc in ipairs{1, 4, 20} do
      for _, retries in ipairs{0, 3} do
        it(("starts no request after an invoke_many deadline (concurrency %d, max_retries %d)")
           :format(conc, retries), function()
          local DELAY, LEFT = 2, 1
          emu:fault{kind = "slow", delay = DELAY, probability = 1, action = "QueryDevice"}
          local c = client_for(emu, {max_retries = retries})
          local items = {}
          for i = 1, 20 do items[i] = {ProductKey = PK, CurrentPage = i} end
          local t0 = c:clock()
          local results, errs = c:invoke_many("QueryDevice", items, {deadline = t0 + LEFT}, conc)
          -- The emulator logs a request once its slow answer is done: wait for every one
          -- started before the deadline (nothing here is timed, only counted).
          c:pause(t0 + LEFT + DELAY + 0.5 - c:clock())
          emu:clear_faults()
          for i = 1, 20 do
            assert.is_true(results[i] ~= nil or (errs[i] ~= nil and errs[i].code == "DeadlineExceeded"),
              ("index %d: %s"):format(i, tostring(errs[i])))
          end
          -- Every request started before the deadline is still unanswered at it (answers
          -- take DELAY > LEFT), so at most `conc` ever start before it; any more started after.
          local n = #emu:requests()
          assert.is_true(n >= 1, "no request was sent")
          assert.is_true(n <= conc, ("%d requests for concurrency %d: %d started after the deadline")
            :format(n, conc, n - conc))
        end)
      end
    end

    it("takes no pacing slot for a request its deadline kept from starting", function()
      -- 1,000 paced calls cut off by a 1 s deadline used to reserve all 1,000 slots (20 s at
      -- 50 QPS), holding back every later call of the account in this process
      local c = client_for(emu, {qps = true})
      local items = {}
      for i = 1, 1000 do items[i] = {ProductKey = PK, PageSize = 10, CurrentPage = 1} end
      c:invoke_many("QueryDevice", items, {deadline = c:clock() + 1}, 1)
      local other = client_for(emu, {qps = true})
      local now = other.pacer.now()
      local slot = other.pacer:schedule("QueryDevice", 1, "testid")[1]
      -- the next free slot is at most one interval (1.02/50 s) past the deadline
      assert.is_true(slot - now < 0.1, ("next slot %.2f s ahead"):format(slot - now))
    end)

    it("refuses a credentials function given with a key pair", function()
      local c, err = iot.new{access_key_id = "testid", access_key_secret = SECRET,
                             endpoint = emu.endpoint, credentials = function() end}
      assert.is_nil(c)
      assert.are.equal("InvalidCredentials", err.code)
    end)
  end)

  -- issue 17: answers from hostile or broken servers and gateways.
  describe("hostile answers", function()
    -- A client whose transport sends for real, then replaces the answer as `edit` says.
    local function tampered(edit, opts)
      local o = {transport = function(req)
        local res, terr = iot.transports.curl(req)
        if res then edit(res, req) end
        return res, terr
      end}
      for k, v in pairs(opts or {}) do o[k] = v end
      return client_for(emu, o)
    end

    local GATEWAY_PAGES = {
      {502, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        .. "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
        .. "</body>\r\n</html>\r\n"},
      {500, "<html><body><h1>500 Internal Server Error</h1></body></html>"},
      {504, "<html><head><title>504 Gateway Time-out</title></head></html>"},
      {502, "Bad Gateway"},
      {503, "Service Unavailable"},
      {200, ""},
    }

    it("never calls an undecodable answer 'not acted on' (no repeat of a batch)", function()
      for _, page in ipairs(GATEWAY_PAGES) do
        emu:reset()
        local c = tampered(function(res) res.status, res.body = page[1], page[2] end,
                           {max_retries = 3})
        local r, err = c:batch_register_device{ProductKey = PK, Count = 2}
        assert.is_nil(r)
        assert.are.equal("InvalidResponse", err.code)
        assert.is_true(err.ambiguous, page[2])
        assert.is_false(err.retryable)
        assert.are.equal(1, #emu:requests(), page[2])
      end
    end)

    -- The service acted, then answered an error that proves nothing: the job must not
    -- journal it as refused (resume would send it again and create the devices twice).
    local UNPROVEN = {
      {200, '{"RequestId":"x","Success":false,"Code":"iot.system.SystemException",' ..
            '"ErrorMessage":"A system exception occurred."}'},
      {200, '{"RequestId":"x","Success":false,"Code":"InternalError"}'},
      {200, '{"RequestId":"x","Success":false,"Code":"UnknownError"}'},
      {200, '{"RequestId":"x","Success":false,"Code":"iot.device.ApplyManyDevicesFailed"}'},
      {200, '{"RequestId":"x","Success":false}'},
      {200, '{"RequestId":"x","Code":"InternalError"}'},
      {200, '<BatchRegisterDeviceResponse><RequestId>x</RequestId><Success>false</Success>' ..
            '</BatchRegisterDeviceResponse>'},
      {500, '{"RequestId":"x","Code":"ServiceUnavailable","Message":"m"}'},
      {500, '{"RequestId":"x","Code":"Throttling.User","Message":"m"}'},
    }

    it("never takes an unproven business error for a refusal (no repeat, even on resume)", function()
      for _, a in ipairs(UNPROVEN) do
        emu:reset()
        local first = true
        local c = tampered(function(res, req)
          if first and (req.body or req.url):find("BatchRegisterDevice", 1, true) then
            first = false
            res.status, res.body = a[1], a[2]
          end
        end, {max_retries = 3})
        local path = os.tmpname()
        os.remove(path) -- a journal is a new file
        local r, err = c:register_devices{ProductKey = PK, Count = 5, journal = path}
        assert.is_nil(r, a[2])
        assert.is_true(err.ambiguous, a[2] .. " " .. tostring(err))
        local r2, err2 = c:resume{journal = path}
        assert.is_nil(r2, a[2])
        assert.is_true(err2.ambiguous, tostring(err2))
        local sent = 0
        for _, q in ipairs(emu:requests()) do
          if q.action == "BatchRegisterDevice" then sent = sent + 1 end
        end
        assert.are.equal(1, sent, a[2])
        os.remove(path)
      end
    end)

    it("still takes a business error that proves a refusal as final, not ambiguous", function()
      local c = client_for(emu, {max_retries = 3})
      local r, err = c:batch_register_device{ProductKey = "a1NoSuchPK", Count = 1}
      assert.is_nil(r)
      assert.are.equal("iot.prod.NotExistedProduct", err.code)
      assert.is_falsy(err.ambiguous)
      assert.is_false(err.retryable)
    end)

    it("repeats throttling and decoded ServiceUnavailable, which prove a refusal", function()
      emu:fault{kind = "503", count = 1}
      emu:fault{kind = "throttle", count = 1}
      local c = client_for(emu, {max_retries = 3})
      assert(c:batch_register_device{ProductKey = PK, Count = 1})
      assert.are.equal(3, #emu:requests())
    end)

    it("answers gateway errors in XML with errors, not Lua errors", function()
      for _, kind in ipairs{"throttle", "503"} do
        emu:fault{kind = kind, count = 1}
        local c = client_for(emu, {format = "XML"})
        local ok, r, err = pcall(c.query_device, c, {ProductKey = PK})
        assert.is_true(ok, tostring(r))
        assert.is_nil(r)
        assert.is_string(err.code)
        assert.is_true(err.retryable)
      end
      local c = assert(iot.new{access_key_id = "testid", access_key_secret = "wrongsecret",
                               endpoint = emu.endpoint, qps = false, format = "XML"})
      local ok, r, err = pcall(c.query_device, c, {ProductKey = PK})
      assert.is_true(ok, tostring(r))
      assert.are.equal("SignatureDoesNotMatch", err.code)
    end)

    it("turns fields of the wrong type into InvalidResponse", function()
      local bodies = {
        '{"Code":["Throttling.User"],"Message":"x","RequestId":"r"}',
        '{"Code":"Throttling.User","Message":{"a":1},"RequestId":"r"}',
        '{"Code":"x","Message":"m","RequestId":12}',
        '{"Success":true,"RequestId":{"x":1}}',
        '<Error><Code><A>1</A></Code><Message>m</Message></Error>',
        '<Error><RequestId>r</RequestId><HostId><X>1</X></HostId><Code>c</Code></Error>',
      }
      for _, body in ipairs(bodies) do
        for _, status in ipairs{200, 400, 503} do
          local c = tampered(function(res) res.status, res.body = status, body end)
          local ok, r, err = pcall(c.query_device, c, {ProductKey = PK})
          assert.is_true(ok, tostring(r))
          assert.is_nil(r)
          assert.are.equal("InvalidResponse", err.code, body)
          assert.is_true(err.ambiguous)
        end
      end
    end)

    it("counts only Success true as success", function()
      for _, v in ipairs{'"false"', '"true"', "0", "1", '"yes"', "{}"} do
        local c = tampered(function(res)
          res.body = '{"RequestId":"r","Success":' .. v .. ',"Data":{}}'
        end)
        local r, err = c:query_device{ProductKey = PK}
        assert.is_nil(r, v)
        assert.are.equal("InvalidResponse", err.code, v)
      end
      local c = tampered(function(res) res.body = '{"RequestId":"r","Success":false}' end)
      local r, err = c:query_device{ProductKey = PK}
      assert.is_nil(r)
      assert.is_table(err.response)
      c = tampered(function(res)
        res.body = "<QueryDeviceResponse><Success>false</Success></QueryDeviceResponse>"
      end, {format = "XML"})
      r = c:query_device{ProductKey = PK}
      assert.is_nil(r)
    end)

    it("ignores a Date header beyond a day away and never raises on one", function()
      local dates = {"Fri, 01 Jan 3000 00:00:00 GMT", "Sun, 06 Nov 1994 08:49:37 GMT",
                     "Fri, 32 Jan 2026 00:00:00 GMT", "Fri, 01 Foo 2026 25:61:61 GMT",
                     "Tue, 01 Jan 99999999999 00:00:00 GMT", "garbage", string.rep("9", 1000),
                     "Fri, 01 Jan -5 00:00:00 GMT"}
      for _, date in ipairs(dates) do
        local c = tampered(function(res) res.headers.date = date end, {max_retries = 3})
        c.clock_offset = -7200 -- our clock two hours late: the server answers Expired
        local ok, r, err = pcall(c.query_device, c, {ProductKey = PK})
        assert.is_true(ok, tostring(r))
        assert.is_nil(r)
        assert.are.equal("InvalidTimeStamp.Expired", err.code)
        assert.are.equal(-7200, c.clock_offset, date)
      end
      -- the obsolete forms within a day are understood
      for _, form in ipairs{"!%A, %d-%b-%y %H:%M:%S GMT", "!%a %b %e %H:%M:%S %Y"} do
        local c = tampered(function(res) res.headers.date = os.date(form) end,
                           {max_retries = 3})
        c.clock_offset = -7200
        assert(c:query_device{ProductKey = PK})
        assert.is_true(math.abs(c.clock_offset) < 60)
      end
    end)

    it("reads an answer that starts with a UTF-8 byte order mark", function()
      for _, format in ipairs{"JSON", "XML"} do
        local c = tampered(function(res) res.body = "\239\187\191" .. res.body end,
                           {format = format})
        local r = assert(c:query_device{ProductKey = PK})
        assert.is_true(r.Success)
      end
    end)

    it("quotes bodies redacted and printable", function()
      local c = tampered(function(res)
        res.status = 502
        res.body = "\27[2J\27[Hall 2500 devices registered OK\r\n" .. SECRET .. string.rep("x", 600)
      end)
      local _, err = c:query_device{ProductKey = PK}
      assert.are.equal("InvalidResponse", err.code)
      assert.is_nil(err.message:find("\27", 1, true))
      assert.is_nil(err.message:find(SECRET, 1, true))
      assert.is_true(#err.message < 700)
    end)
  end)
end)
