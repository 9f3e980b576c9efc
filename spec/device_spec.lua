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
  end)
end)
