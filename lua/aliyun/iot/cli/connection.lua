--- The CLI's connection columns (`--mqtt`): the options (`--signmethod`, `--securemode`,
-- `--instance-style`, `--password-case`, `--mqtt-timestamp`, `--mqtt-port`) checked and
-- turned into `iot.device_credentials` options, and each device's columns computed.
-- @module aliyun.iot.cli.connection

local args = require "aliyun.iot.cli.args"

local usage_error = args.usage_error

local M = {}

-- A ProductKey and a device that satisfy every rule: the options are tried on it before
-- any request, so a bad one is a usage error rather than a job whose output fails.
local PROBE = {ProductKey = "a1AAAAAAAAA", DeviceName = "probe", DeviceSecret = "probe"}

local function device_credentials(...)
  return require("aliyun.iot").device_credentials(...)
end

local function choice(opts, key, flag, allowed, default)
  local v = opts[key]
  if v == nil then opts[key] = default return default end
  if not allowed[v] then
    local names = {}
    for k in pairs(allowed) do names[#names + 1] = k end
    table.sort(names)
    usage_error("--%s must be %s, got '%s'", flag, table.concat(names, " or "), v)
  end
  return v
end

local function number_option(opts, key, flag, pattern, what)
  local v = opts[key]
  if v == nil then return end
  if not v:find(pattern) then usage_error("--%s must be %s, got '%s'", flag, what, v) end
  opts[key] = tonumber(v)
end

--- The `iot.device_credentials` options of a run, from checked options.
-- @tparam table opts after `check`
-- @treturn table
function M.options(opts)
  return {
    region_id = opts.region,
    iot_instance_id = opts.instance_style == "instance" and opts.iot_instance_id or nil,
    timestamp = opts.mqtt_timestamp,
    securemode = opts.securemode,
    signmethod = opts.signmethod,
    port = opts.mqtt_port,
    upper = opts.password_case == "upper",
  }
end

--- Checks and converts the connection options, with their defaults: hmacsha256,
-- securemode 2, instance style `instance` with `--iot-instance-id` (else `old`), lower-case
-- passwords, and one timestamp for the whole run (now, in milliseconds).
-- @raise a usage error
function M.check(opts)
  choice(opts, "signmethod", "signmethod",
         {hmacsha256 = true, hmacsha1 = true, hmacmd5 = true}, "hmacsha256")
  number_option(opts, "securemode", "securemode", "^[23]$", "2 (TLS) or 3 (TCP)")
  opts.securemode = opts.securemode or 2
  choice(opts, "instance_style", "instance-style", {old = true, instance = true},
         opts.iot_instance_id and "instance" or "old")
  if opts.instance_style == "instance" and not opts.iot_instance_id then
    usage_error("--instance-style instance needs --iot-instance-id (the host is " ..
      "<IotInstanceId>.mqtt.iothub.aliyuncs.com)")
  end
  choice(opts, "password_case", "password-case", {lower = true, upper = true}, "lower")
  number_option(opts, "mqtt_port", "mqtt-port", "^%d%d?%d?%d?%d?$", "a port number")
  if opts.mqtt_timestamp ~= nil and not opts.mqtt_timestamp:find("^%d+$") then
    usage_error("--mqtt-timestamp must be milliseconds since 1970 (digits), got '%s'",
      opts.mqtt_timestamp)
  end
  opts.mqtt_timestamp = opts.mqtt_timestamp or
    ("%.0f"):format(math.floor(require("aliyun.iot.core").time() * 1000))
  local _, err = device_credentials(PROBE, M.options(opts))
  if err then
    local flag = ({region_id = "--region", iot_instance_id = "--iot-instance-id",
                   timestamp = "--mqtt-timestamp", port = "--mqtt-port"})[err.parameter]
    usage_error("%s: %s", flag or tostring(err.parameter), tostring(err.message))
  end
end

--- A device's record with the connection columns added (a copy).
-- @tparam table dev a device record (ProductKey, DeviceName, DeviceSecret, ...)
-- @tparam table cred_opts from `options`
-- @treturn ?table the record with MqttHost, MqttPort, MqttClientId, MqttUsername, MqttPassword
-- @treturn ?string why the device has none (no secret in it)
function M.add(dev, cred_opts)
  local c, err = device_credentials(dev, cred_opts)
  if not c then
    return nil, ("device %s: %s"):format(tostring(dev.DeviceName), tostring(err.message))
  end
  local r = {}
  for k, v in pairs(dev) do r[k] = v end
  r.MqttHost, r.MqttPort, r.MqttClientId = c.host, c.port, c.client_id
  r.MqttUsername, r.MqttPassword = c.username, c.password
  return r
end

return M
