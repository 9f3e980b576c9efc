-- The device side (docs/wire.md §11): core.mqtt_sign and core.register_sign,
-- iot.device_credentials, and iot.dynamic_register against the emulator.
local core = require "aliyun.iot.core"
local iot = require "aliyun.iot"

-- HMAC computed by another implementation: the openssl command, on the same string.
local function openssl_hmac(alg, key, data)
  local dir = assert(io.popen("mktemp -d"):read("*l"))
  local path = dir .. "/data"
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  local p = assert(io.popen(("openssl dgst -%s -hmac '%s' < '%s'"):format(alg, key, path)))
  local out = p:read("*a")
  p:close()
  os.execute("rm -rf '" .. dir .. "'")
  return assert(out:match("(%x+)%s*$"), out)
end

local DEVICE = {ProductKey = "a14Xib5kdYd", DeviceName = "light1983432",
                DeviceSecret = "oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq"}

describe("core.mqtt_sign", function()
  -- Published vectors, docs/wire.md §11 (source DEV: the device-side documentation,
  -- doc 73742, and its example device; recomputed with an independent HMAC).
  it("matches the published vectors", function()
    assert.are.equal("fafd82a3d602b37fb0fa8b7892f24a477f851a14", core.mqtt_sign{
      method = "hmacsha1", secret = "secret", client_id = "12345", DeviceName = "device",
      ProductKey = "pk", timestamp = "789"})
    assert.are.equal("b2488041f64f425016b467ee1c94959ebd592ad1", core.mqtt_sign{
      method = "hmacsha1", secret = DEVICE.DeviceSecret, client_id = "SN1928339",
      DeviceName = DEVICE.DeviceName, ProductKey = DEVICE.ProductKey,
      timestamp = "1539421321846"})
  end)

  it("agrees with openssl for every method, with and without the optional fields", function()
    for method, alg in pairs{hmacsha256 = "sha256", hmacsha1 = "sha1", hmacmd5 = "md5"} do
      local full = "clientIdSN1928339deviceNamelight1983432productKeya14Xib5kdYdtimestamp1539421321846"
      assert.are.equal(openssl_hmac(alg, DEVICE.DeviceSecret, full), core.mqtt_sign{
        method = method, secret = DEVICE.DeviceSecret, client_id = "SN1928339",
        DeviceName = DEVICE.DeviceName, ProductKey = DEVICE.ProductKey,
        timestamp = "1539421321846"}, method)
      assert.are.equal(openssl_hmac(alg, DEVICE.DeviceSecret,
                                    "deviceNamelight1983432productKeya14Xib5kdYd"),
        core.mqtt_sign{method = method, secret = DEVICE.DeviceSecret,
                       DeviceName = DEVICE.DeviceName, ProductKey = DEVICE.ProductKey}, method)
      assert.are.equal(openssl_hmac(alg, "productsecret", "deviceNamedev1productKeypk1random0a1b"),
        core.register_sign{method = method, secret = "productsecret", DeviceName = "dev1",
                           ProductKey = "pk1", random = "0a1b"}, method)
    end
  end)

  it("writes lower-case hex by default, upper case on request", function()
    local t = {method = "hmacsha256", secret = "s3cr3t", DeviceName = "dev1", ProductKey = "pk1",
               timestamp = "1"}
    local lower = core.mqtt_sign(t)
    assert.is_truthy(lower:find("^[0-9a-f]+$"))
    assert.are.equal(64, #lower)
    t.upper = true
    assert.are.equal(lower:upper(), core.mqtt_sign(t))
  end)

  it("raises on misuse", function()
    local ok = {method = "hmacsha1", secret = "s", DeviceName = "dev1", ProductKey = "pk"}
    local function with(k, v)
      local t = {}
      for a, b in pairs(ok) do t[a] = b end
      t[k] = v
      return function() core.mqtt_sign(t) end
    end
    assert.has_no.errors(with("method", "hmacsha1"))
    assert.has_error(function() core.mqtt_sign("x") end)
    assert.has_error(with("method", "sha1"))
    assert.has_error(with("secret", nil))
    assert.has_error(with("secret", "a\0b"))
    assert.has_error(with("DeviceName", "dev\0ice"))
    assert.has_error(with("ProductKey", 12))
    assert.has_error(with("timestamp", "12a"))
    assert.has_error(with("timestamp", ""))
    assert.has_error(with("upper", "yes"))
    assert.has_error(function()
      core.register_sign{method = "hmacsha1", secret = "s", DeviceName = "d", ProductKey = "p"}
    end)
  end)
end)

describe("iot.device_credentials", function()
  it("gives the host, port, client id, user name and password of the old host style", function()
    local c = assert(iot.device_credentials(DEVICE, {client_id = "SN1928339", signmethod = "hmacsha1",
                                                     timestamp = "1539421321846"}))
    assert.are.same({
      host = "a14Xib5kdYd.iot-as-mqtt.cn-shanghai.aliyuncs.com", port = 8883,
      client_id = "SN1928339|securemode=2,signmethod=hmacsha1,timestamp=1539421321846|",
      username = "light1983432&a14Xib5kdYd",
      password = "b2488041f64f425016b467ee1c94959ebd592ad1",
    }, c)
    c = assert(iot.device_credentials(DEVICE, {region_id = "ap-southeast-1", timestamp = "1"}))
    assert.are.equal("a14Xib5kdYd.iot-as-mqtt.ap-southeast-1.aliyuncs.com", c.host)
  end)

  it("uses the instance host when an IotInstanceId is given", function()
    local c = assert(iot.device_credentials(DEVICE, {iot_instance_id = "iot-06z00ax1o4qq7gt",
                                                     region_id = "cn-beijing", timestamp = "1"}))
    assert.are.equal("iot-06z00ax1o4qq7gt.mqtt.iothub.aliyuncs.com", c.host)
  end)

  it("picks the port by securemode, or the one asked", function()
    local function port(o) o.timestamp = "1"; return assert(iot.device_credentials(DEVICE, o)).port end
    assert.are.equal(8883, port{})
    assert.are.equal(8883, port{securemode = 2})
    assert.are.equal(1883, port{securemode = 3})
    assert.are.equal(443, port{port = 443})
    local c = assert(iot.device_credentials(DEVICE, {securemode = 3, timestamp = "5"}))
    assert.is_truthy(c.client_id:find("|securemode=3,", 1, true))
  end)

  it("defaults: client id PK.DN, hmacsha256, a timestamp of now in ms; a timestamp is used verbatim", function()
    local before = math.floor(os.time() * 1000) - 1000
    local c = assert(iot.device_credentials(DEVICE))
    local id, ts = c.client_id:match("^(.-)|securemode=2,signmethod=hmacsha256,timestamp=(%d+)|$")
    assert.are.equal("a14Xib5kdYd.light1983432", id)
    assert.is_true(tonumber(ts) >= before and tonumber(ts) < before + 3600 * 1000)
    assert.are.equal(openssl_hmac("sha256", DEVICE.DeviceSecret,
      "clientIda14Xib5kdYd.light1983432deviceNamelight1983432productKeya14Xib5kdYdtimestamp" .. ts),
      c.password)
    -- verbatim: leading zeros kept; a number gives its digits
    c = assert(iot.device_credentials(DEVICE, {timestamp = "0001539421321846"}))
    assert.is_truthy(c.client_id:find("timestamp=0001539421321846|", 1, true))
    local a = assert(iot.device_credentials(DEVICE, {timestamp = 1539421321846}))
    local b = assert(iot.device_credentials(DEVICE, {timestamp = "1539421321846"}))
    assert.are.same(a, b)
    assert.are.same(b, assert(iot.device_credentials(DEVICE, {timestamp = "1539421321846"})))
  end)

  it("gives upper-case passwords on request", function()
    local lower = assert(iot.device_credentials(DEVICE, {timestamp = "7"})).password
    local upper = assert(iot.device_credentials(DEVICE, {timestamp = "7", upper = true})).password
    assert.are.equal(lower:upper(), upper)
    assert.are_not.equal(lower, upper)
  end)

  it("returns InvalidParameter for bad values, with no secret in the error", function()
    local function bad(device, opts, parameter)
      local c, err = iot.device_credentials(device, opts)
      assert.is_nil(c)
      assert.are.equal("InvalidParameter", err.code)
      assert.are.equal(parameter, err.parameter)
      assert.is_falsy(tostring(err):find(DEVICE.DeviceSecret, 1, true))
    end
    bad({DeviceName = "light1983432", DeviceSecret = "x"}, nil, "ProductKey")
    bad({ProductKey = "pk", DeviceSecret = "x"}, nil, "DeviceName")
    bad({ProductKey = "pk", DeviceName = "light1983432"}, nil, "DeviceSecret")
    bad({ProductKey = "pk", DeviceName = "bad name!", DeviceSecret = "x"}, nil, "DeviceName")
    bad({ProductKey = "pk", DeviceName = "abc", DeviceSecret = "x"}, nil, "DeviceName")
    bad({ProductKey = "pk", DeviceName = "light1983432", DeviceSecret = "a\0b"}, nil, "DeviceSecret")
    bad(DEVICE, {signmethod = "hmacsha512"}, "signmethod")
    bad(DEVICE, {securemode = 1}, "securemode")
    bad(DEVICE, {securemode = -1}, "securemode")
    bad(DEVICE, {timestamp = "12:00"}, "timestamp")
    bad(DEVICE, {timestamp = ""}, "timestamp")
    bad(DEVICE, {timestamp = 1.5}, "timestamp")
    bad(DEVICE, {timestamp = -1}, "timestamp")
    bad(DEVICE, {port = 0}, "port")
    bad(DEVICE, {port = 70000}, "port")
    bad(DEVICE, {client_id = "a|b"}, "client_id")
    bad(DEVICE, {client_id = ""}, "client_id")
    bad(DEVICE, {region_id = "cn shanghai"}, "region_id")
    bad(DEVICE, {iot_instance_id = "iot/x"}, "iot_instance_id")
    -- the ProductKey names the old-style host: nothing that would lead elsewhere
    for _, pk in ipairs{"x@evil.example:1883?", "a.b", "a1-b", "=1+1"} do
      bad({ProductKey = pk, DeviceName = "light1983432", DeviceSecret = "x"}, nil, "ProductKey")
    end
  end)

  it("raises on misuse of types and unknown options", function()
    assert.has_error(function() iot.device_credentials(nil) end)
    assert.has_error(function() iot.device_credentials(DEVICE, "x") end)
    assert.has_error(function() iot.device_credentials(DEVICE, {securemode = "2"}) end)
    assert.has_error(function() iot.device_credentials(DEVICE, {timestamp = true}) end)
    assert.has_error(function() iot.device_credentials(DEVICE, {upper = 1}) end)
    assert.has_error(function() iot.device_credentials(DEVICE, {sign_method = "hmacsha1"}) end)
    assert.has_error(function()
      iot.device_credentials({ProductKey = 1, DeviceName = "light1983432", DeviceSecret = "x"})
    end)
    -- a record's other fields are not the function's business
    local rec = {IotId = "x", MqttHost = 1}
    for k, v in pairs(DEVICE) do rec[k] = v end
    assert.is_table(iot.device_credentials(rec, {timestamp = "1"}))
  end)
end)

describe("iot.dynamic_register against the emulator", function()
  local emulator = require "aliyun.iot.emulator"
  local PK, PK_OFF, SECRET = "a1DynReg001", "a1NoDynReg1", "pRoDuCtSeCrEt0123456789"
  local emu, client

  lazy_setup(function()
    emu = emulator.start{products = {PK, PK_OFF}, async_delay = 0,
                         product_secrets = {[PK] = SECRET}}
    client = assert(iot.new{endpoint = emu.endpoint, access_key_id = emu.access_key_id,
                            access_key_secret = emu.access_key_secret})
  end)
  lazy_teardown(function()
    if client then client:close() end
    if emu then emu:stop() end
  end)
  before_each(function() emu:reset() end)

  local function register(name, extra)
    local args = {ProductKey = PK, ProductSecret = SECRET, DeviceName = name, endpoint = emu.endpoint}
    for k, v in pairs(extra or {}) do args[k] = v end
    return iot.dynamic_register(args)
  end

  local function api_secret(name, pk)
    local res = assert(client:query_device_detail{ProductKey = pk or PK, DeviceName = name})
    return res.Data.DeviceSecret
  end

  local function no_secret_in(err, ...)
    local text = tostring(err) .. " " .. tostring(err.message)
    assert.is_falsy(text:find(SECRET, 1, true), text)
    for _, s in ipairs{...} do assert.is_falsy(text:find(s, 1, true), text) end
  end

  it("gives an existing, inactive device its DeviceSecret, the one the API then shows", function()
    assert(client:register_device{ProductKey = PK, DeviceName = "sensor-0001"})
    local old = api_secret("sensor-0001")
    for _, method in ipairs{"hmacsha256", "hmacsha1", "hmacmd5"} do
      local rec, err = register("sensor-0001", {signmethod = method})
      assert.is_nil(err)
      assert.are.equal(PK, rec.ProductKey)
      assert.are.equal("sensor-0001", rec.DeviceName)
      assert.are.equal(api_secret("sensor-0001"), rec.DeviceSecret)
      -- a second registration of an inactive device rotates its secret
      assert.are_not.equal(old, rec.DeviceSecret)
      old = rec.DeviceSecret
    end
    -- the form as the platform documents it, and no secret in the emulator's record
    local reqs = emu:requests()
    local last = reqs[#reqs - 1]
    assert.are.equal("/auth/register/device", last.action)
    assert.are.equal("POST", last.method)
    assert.are.equal(PK, last.params.productKey)
    assert.are.equal("hmacmd5", last.params.signMethod)
    assert.is_truthy(last.params.random:find("^%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x$"))
  end)

  it("sends the random it is given, signed over it", function()
    assert(client:register_device{ProductKey = PK, DeviceName = "sensor-0002"})
    assert(register("sensor-0002", {random = "abc123"}))
    local reqs = emu:requests()
    assert.are.equal("abc123", reqs[#reqs].params.random)
  end)

  it("refuses a device that does not exist, with the service's code and message", function()
    local rec, err = register("sensor-none")
    assert.is_nil(rec)
    assert.are.equal("6205", err.code) -- the emulator's code (lua/aliyun/iot/emulator/dynreg.lua)
    assert.is_true(err.refused)
    assert.is_truthy(tostring(err):find("device not found", 1, true))
    no_secret_in(err)
  end)

  it("refuses a wrong ProductSecret, and a product without dynamic registration", function()
    assert(client:register_device{ProductKey = PK, DeviceName = "sensor-0003"})
    local before = api_secret("sensor-0003")
    local rec, err = register("sensor-0003", {ProductSecret = "not-the-secret"})
    assert.is_nil(rec)
    assert.are.equal("6608", err.code)
    no_secret_in(err, "not-the-secret", before)
    assert.are.equal(before, api_secret("sensor-0003"))
    assert(client:register_device{ProductKey = PK_OFF, DeviceName = "sensor-0003"})
    rec, err = register("sensor-0003", {ProductKey = PK_OFF})
    assert.is_nil(rec)
    assert.are.equal("6251", err.code)
  end)

  it("refuses an active device and keeps its secret", function()
    assert(client:register_device{ProductKey = PK, DeviceName = "sensor-0004"})
    local first = assert(register("sensor-0004"))
    emu:set_active{ProductKey = PK, DeviceName = "sensor-0004"}
    local rec, err = register("sensor-0004")
    assert.is_nil(rec)
    assert.are.equal("6289", err.code)
    no_secret_in(err, first.DeviceSecret)
    assert.are.equal(first.DeviceSecret, api_secret("sensor-0004"))
    local detail = assert(client:query_device_detail{ProductKey = PK, DeviceName = "sensor-0004"})
    assert.are.equal("ONLINE", detail.Data.Status)
  end)

  it("returns InvalidParameter before sending anything", function()
    local function bad(extra, parameter)
      local rec, err = register("sensor-0005", extra)
      assert.is_nil(rec)
      assert.are.equal("InvalidParameter", err.code)
      assert.are.equal(parameter, err.parameter)
      no_secret_in(err)
    end
    local n = #emu:requests()
    bad({DeviceName = "a b"}, "DeviceName")
    bad({ProductSecret = ""}, "ProductSecret")
    bad({signmethod = "sha1"}, "signmethod")
    bad({random = "a-b"}, "random")
    bad({endpoint = "ftp://x/y"}, "endpoint")
    bad({region_id = "CN"}, "region_id")
    assert.are.equal(n, #emu:requests())
    assert.has_error(function() register("sensor-0005", {timeout = "5"}) end)
    assert.has_error(function() register("sensor-0005", {product_key = PK}) end)
    assert.has_error(function() iot.dynamic_register("x") end)
  end)

  it("turns an answer that is not the documented one into InvalidResponse, without its secret", function()
    local leaked = "LEAKEDdeviceSECRET0123456789abcd"
    local answers = {
      {status = 200, body = "not json"},
      {status = 200, body = '{"code":"200"}'},
      {status = 200, body = '{"code":6.5,"message":"x"}'},
      {status = 200, body = '{"code":200,"data":"x"}'},
      {status = 200, body = '{"code":200,"data":{"productKey":"other","deviceName":"sensor-0006",'
                            .. '"deviceSecret":"' .. leaked .. '"}}'},
      {status = 200, body = '{"code":200,"data":{"productKey":"' .. PK
                            .. '","deviceName":"sensor-0006","deviceSecret":7}}'},
      {status = 502, body = "<html>bad gateway</html>"},
    }
    for _, res in ipairs(answers) do
      local sent
      local rec, err = register("sensor-0006", {transport = function(req) sent = req; return res end})
      assert.is_nil(rec)
      assert.are.equal("InvalidResponse", err.code, res.body)
      no_secret_in(err, leaked)
      assert.are.equal("POST", sent.method)
      assert.are.equal(emu.endpoint .. "auth/register/device", sent.url)
      assert.is_falsy(sent.body:find(SECRET, 1, true))
    end
    -- a refusal's message is printable and redacted
    local _, err = register("sensor-0006", {transport = function()
      return {status = 200, body = '{"code":6666,"message":"bad \\u001b[2J ' .. SECRET .. '"}'}
    end})
    assert.are.equal("6666", err.code)
    assert.is_falsy(tostring(err):find("\27", 1, true))
    no_secret_in(err)
    -- a transport failure is returned as it came, once
    local calls = 0
    _, err = register("sensor-0006", {transport = function()
      calls = calls + 1
      return nil, {code = "ConnectFailed", message = "refused", sent = false}
    end})
    assert.are.equal("ConnectFailed", err.code)
    assert.are.equal(1, calls)
  end)
end)
