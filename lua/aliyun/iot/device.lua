--- The device side (docs/wire.md §11): what a device needs to connect over MQTT with its
-- DeviceSecret, and the dynamic registration a device makes with its product's secret.
-- Neither calls the IoT API: `device_credentials` computes, `dynamic_register` makes the
-- one HTTPS call a device would.
--
-- The argument rule is the library's: a wrong Lua type or an unknown option raises; a bad
-- value returns `nil, err` with `code = "InvalidParameter"` and `err.parameter` naming it.
-- No DeviceSecret or ProductSecret reaches an error.
-- @module aliyun.iot.device

local core = require "aliyun.iot.core"
local errors = require "aliyun.iot.errors"
local validate = require "aliyun.iot.validate"

local M = {}

local SIGN_METHODS = {hmacsha256 = true, hmacsha1 = true, hmacmd5 = true}
local MODE_PORTS = {[2] = 8883, [3] = 1883}
local DEFAULT_REGION = "cn-shanghai"

local function invalid(parameter, why)
  return nil, errors.new{code = "InvalidParameter", message = parameter .. " " .. why,
                         parameter = parameter}
end

-- Raises unless every key of t is in `known` and has the type it names ("string",
-- "number", "boolean", "function" or "string|number").
local function check_types(t, known, what)
  for k, v in pairs(t) do
    local want = known[k]
    if not want then error(("%s: unknown field %s"):format(what, tostring(k)), 3) end
    if not want:find(type(v), 1, true) then
      error(("%s: %s must be a %s, not a %s"):format(what, k, want, type(v)), 3)
    end
  end
end

local function whole(v)
  return type(v) == "number" and v == math.floor(v) and v >= 0 and v < 2 ^ 53
end

-- A timestamp in milliseconds as the signed text: digits as given, or a whole number.
local function timestamp_text(v)
  if v == nil then return ("%.0f"):format(math.floor(core.time() * 1000)) end
  if type(v) == "number" then
    if not whole(v) then return nil end
    return ("%.0f"):format(v)
  end
  if v:find("^%d+$") and #v <= 20 then return v end
end

-- Only the three fields used are looked at: a record may carry any others (IotId, a CSV
-- row's other columns).
local function device_problem(device)
  for _, k in ipairs{"ProductKey", "DeviceName", "DeviceSecret"} do
    local v = device[k]
    if v ~= nil and type(v) ~= "string" then
      error(("device_credentials: device.%s must be a string, not a %s"):format(k, type(v)), 3)
    end
  end
  local why = validate.product_key_problem(device.ProductKey)
  if why then return "ProductKey", why end
  why = validate.device_name_problem(device.DeviceName)
  if why then return "DeviceName", why end
  local secret = device.DeviceSecret
  if type(secret) ~= "string" or secret == "" or secret:find("[%z%c]") then
    return "DeviceSecret", "must be a non-empty string without control characters"
  end
end

-- The checked options of device_credentials, or nil, parameter, why.
local function credential_options(o)
  local mode = o.securemode == nil and 2 or o.securemode
  if not MODE_PORTS[mode] then return nil, "securemode", "must be 2 (TLS) or 3 (TCP)" end
  local method = o.signmethod or "hmacsha256"
  if not SIGN_METHODS[method] then
    return nil, "signmethod", "must be hmacsha256, hmacsha1 or hmacmd5"
  end
  local region = o.region_id or DEFAULT_REGION
  if not region:find("^[a-z0-9%-]+$") then return nil, "region_id", "must be like cn-shanghai" end
  if o.iot_instance_id ~= nil and not o.iot_instance_id:find("^[A-Za-z0-9_%-]+$") then
    return nil, "iot_instance_id", "may only contain letters, digits, - and _"
  end
  local ts = timestamp_text(o.timestamp)
  if not ts then return nil, "timestamp", "must be milliseconds: a string of digits or a whole number" end
  local port = o.port or MODE_PORTS[mode]
  if not (whole(port) and port >= 1 and port <= 65535) then
    return nil, "port", "must be an integer within 1..65535"
  end
  return {mode = mode, method = method, region = region, timestamp = ts, port = port}
end

--- The MQTT connection parameters of a device that holds its DeviceSecret ("one device,
-- one secret", docs/wire.md §11). Deterministic given its inputs: the same device, options
-- and timestamp give the same answer.
-- @tparam table device `{ProductKey=, DeviceName=, DeviceSecret=}` (a register result
--   record; other fields, such as IotId, are ignored)
-- @tparam[opt] table opts every field optional:
--   `region_id` ("cn-shanghai"), `iot_instance_id` (when given, the host is
--   `<iot_instance_id>.mqtt.iothub.aliyuncs.com`, as for Enterprise Edition instances and
--   public ones activated from 2021-07-30; else `<ProductKey>.iot-as-mqtt.<region_id>.aliyuncs.com`),
--   `client_id` (`ProductKey.DeviceName`; up to 64 characters, no `|`, `,` or control
--   characters), `timestamp` [ms] (a string of digits or a whole number, used verbatim;
--   default now), `securemode` (2: TLS, the default; 3: TCP), `signmethod` ("hmacsha256",
--   "hmacsha1" or "hmacmd5"), `port` (8883 for securemode 2, 1883 for 3; 443 as Link SDK 4
--   uses), `upper` (true: upper-case hex password, as iotkit-embedded sends)
-- @treturn ?table `{host=, port=, client_id=, username=, password=}`: client_id is the MQTT
--   client identifier `<client_id>|securemode=<n>,signmethod=<m>,timestamp=<ms>|`, username
--   `<DeviceName>&<ProductKey>`, password the hex HMAC of `core.mqtt_sign`
-- @treturn ?table err `InvalidParameter` (`err.parameter` names the field) for a missing
--   field, a DeviceName breaking the name rule, a ProductKey that is not letters and
--   digits when it names the host, an unknown signmethod, a securemode other
--   than 2 or 3, a timestamp that is not milliseconds
-- @raise when device or opts is not a table, an option is unknown, or a field or option
--   has the wrong type
function M.device_credentials(device, opts)
  if type(device) ~= "table" then error("device_credentials: device must be a table", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("device_credentials: opts must be a table", 2) end
  opts = opts or {}
  check_types(opts, {region_id = "string", iot_instance_id = "string", client_id = "string",
                     timestamp = "string|number", securemode = "number", signmethod = "string",
                     port = "number", upper = "boolean"}, "device_credentials")
  local param, why = device_problem(device)
  if param then return invalid(param, why) end
  local o, p, w = credential_options(opts)
  if not o then return invalid(p, w) end
  local pk, dn = device.ProductKey, device.DeviceName
  local id = opts.client_id or (pk .. "." .. dn)
  if id == "" or #id > 64 or id:find("[|,%c]") then
    return invalid("client_id", "must be 1 to 64 characters without |, comma or control characters")
  end
  -- the old-style host is made of the ProductKey: anything but a host label (the service's
  -- keys are letters and digits) would send the device elsewhere
  if not opts.iot_instance_id and not pk:find("^%w+$") then
    return invalid("ProductKey", "must be letters and digits to name the MQTT host " ..
      "<ProductKey>.iot-as-mqtt.<region_id>.aliyuncs.com")
  end
  local host = opts.iot_instance_id and (opts.iot_instance_id .. ".mqtt.iothub.aliyuncs.com")
    or (pk .. ".iot-as-mqtt." .. o.region .. ".aliyuncs.com")
  local password = core.mqtt_sign{method = o.method, secret = device.DeviceSecret,
                                  ProductKey = pk, DeviceName = dn, client_id = id,
                                  timestamp = o.timestamp, upper = opts.upper}
  return {
    host = host, port = o.port,
    client_id = ("%s|securemode=%d,signmethod=%s,timestamp=%s|"):format(id, o.mode, o.method,
                                                                        o.timestamp),
    username = dn .. "&" .. pk,
    password = password,
  }
end

-- 16 hex digits from OpenSSL's generator (a nonce without its fixed version and variant
-- digits).
local function random_hex()
  local n = core.nonce():gsub("%-", "")
  return n:sub(1, 12) .. n:sub(14, 16) .. n:sub(18, 18)
end

local REGISTER_FIELDS = {ProductKey = "string", ProductSecret = "string", DeviceName = "string",
                         region_id = "string", endpoint = "string", signmethod = "string",
                         random = "string", transport = "function", ca_file = "string",
                         timeout = "number"}

-- The checked arguments of dynamic_register: the URL and the form, or nil, parameter, why.
local function register_request(args)
  local why = validate.product_key_problem(args.ProductKey)
  if why then return nil, "ProductKey", why end
  why = validate.device_name_problem(args.DeviceName)
  if why then return nil, "DeviceName", why end
  local secret = args.ProductSecret
  if secret == nil or secret == "" or secret:find("[%z%c]") then
    return nil, "ProductSecret", "must be a non-empty string without control characters"
  end
  local method = args.signmethod or "hmacsha256"
  if not SIGN_METHODS[method] then return nil, "signmethod", "must be hmacsha256, hmacsha1 or hmacmd5" end
  local region = args.region_id or DEFAULT_REGION
  if not region:find("^[a-z0-9%-]+$") then return nil, "region_id", "must be like cn-shanghai" end
  local base = args.endpoint or ("https://iot-auth." .. region .. ".aliyuncs.com")
  if not base:find("^https?://[^/%s?#]+/?$") then
    return nil, "endpoint", "must be a scheme and a host (https://iot-auth.cn-shanghai.aliyuncs.com)"
  end
  local random = args.random or random_hex()
  if not random:find("^[A-Za-z0-9]+$") or #random > 64 then
    return nil, "random", "must be 1 to 64 letters and digits"
  end
  if args.timeout ~= nil and not (args.timeout > 0 and args.timeout <= 86400) then
    return nil, "timeout", "must be seconds within (0, 86400]"
  end
  local sign = core.register_sign{method = method, secret = secret, ProductKey = args.ProductKey,
                                  DeviceName = args.DeviceName, random = random}
  return {
    method = "POST", url = base:gsub("/$", "") .. "/auth/register/device",
    headers = {["Content-Type"] = "application/x-www-form-urlencoded", Accept = "application/json"},
    body = core.canonical_query{productKey = args.ProductKey, deviceName = args.DeviceName,
                                random = random, sign = sign, signMethod = method},
    timeout = args.timeout or 30, ca_file = args.ca_file, max_response_size = 65536,
  }
end

local function bad_answer(res, why)
  return nil, errors.new{code = "InvalidResponse", http_status = res.status,
                         message = "the registration answer " .. why}
end

-- The answer checked field by field: the record, or nil, err.
local function register_answer(res, args, redact)
  local body = type(res.body) == "string" and core.json_decode(res.body) or nil
  local code = type(body) == "table" and body.code
  if type(code) ~= "number" or code ~= math.floor(code) or math.abs(code) >= 2 ^ 53 then
    return bad_answer(res, "is not a JSON object with a whole numeric code")
  end
  if body.code ~= 200 then
    local message = type(body.message) == "string" and body.message or "(no message)"
    return nil, errors.new{code = ("%.0f"):format(body.code), http_status = res.status,
                           refused = true,
                           message = "dynamic registration refused: " .. errors.snippet(message, redact, 256)}
  end
  local data = body.data
  if type(data) ~= "table" then return bad_answer(res, "has no data object") end
  if data.productKey ~= args.ProductKey or data.deviceName ~= args.DeviceName then
    return bad_answer(res, "is for another device than the one asked")
  end
  local secret = data.deviceSecret
  if type(secret) ~= "string" or secret == "" or #secret > 256 or secret:find("[%z%c%s]") then
    return bad_answer(res, "has no usable deviceSecret")
  end
  return {ProductKey = args.ProductKey, DeviceName = args.DeviceName, DeviceSecret = secret}
end

--- Dynamic registration ("one product, one secret", docs/wire.md §11): the HTTPS call a
-- device makes with its product's secret to get its DeviceSecret, for test benches and
-- gateways. `POST <endpoint>/auth/register/device` with the form `productKey, deviceName,
-- random, sign, signMethod`. The product must have dynamic registration on, the device
-- must exist and not be active. Never retried: each registration of an inactive device
-- gives it a new secret, and only the latest one is valid.
-- @tparam table args `ProductKey`, `ProductSecret`, `DeviceName` (required); optional:
--   `region_id` ("cn-shanghai"), `endpoint` ("https://iot-auth.<region_id>.aliyuncs.com"),
--   `signmethod` ("hmacsha256", "hmacsha1" or "hmacmd5"), `random` (16 random hex digits;
--   letters and digits, up to 64), `transport` (a function `(req) -> res | nil, err`, as
--   for `iot.new`; libcurl by default), `ca_file`, `timeout` [s, 30]
-- @treturn ?table `{ProductKey=, DeviceName=, DeviceSecret=}`
-- @treturn ?table err `InvalidParameter` for a bad argument (nothing sent); a transport
--   error (`ConnectFailed`, `Timeout`, ...); `InvalidResponse` for an answer that is not
--   what the platform documents; a refusal: `code` the service's numeric code as a
--   string, `refused = true`, the service's message (printable, redacted)
-- @raise when args is not a table, or a field is unknown or of the wrong type
function M.dynamic_register(args)
  if type(args) ~= "table" then error("dynamic_register: args must be a table", 2) end
  check_types(args, REGISTER_FIELDS, "dynamic_register")
  local req, param, why = register_request(args)
  if not req then return invalid(param, why) end
  local send = args.transport or require("aliyun.iot.transport.curl").request
  local redact = errors.redactor{args.ProductSecret}
  local res, terr = send(req)
  if not res then
    terr = type(terr) == "table" and terr or {message = tostring(terr)}
    return nil, errors.new{code = type(terr.code) == "string" and terr.code or "TransportError",
                           message = errors.snippet(tostring(terr.message), redact, 512),
                           sent = terr.sent ~= false}
  end
  if type(res) ~= "table" then
    return nil, errors.new{code = "InvalidResponse", message = "the transport returned no response table"}
  end
  return register_answer(res, args, redact)
end

return M
