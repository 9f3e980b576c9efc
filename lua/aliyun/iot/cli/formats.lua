--- The device output formats (`--format csv|json|ndjson|esp-idf`), their columns (`--mqtt`
-- adds the connection columns, `--no-secrets` drops DeviceSecret and MqttPassword), and
-- the checks of these options before any request.
-- @module aliyun.iot.cli.formats

local args = require "aliyun.iot.cli.args"
local json = require "aliyun.iot.cli.json"

local usage_error = args.usage_error
local json_string = json.string

local M = {}

--- The columns, in their order: the device's record, then (with `--mqtt`) the connection
-- parameters of `iot.device_credentials`.
M.DEVICE_FIELDS = {"ProductKey", "DeviceName", "DeviceSecret", "IotId"}
M.MQTT_FIELDS = {"MqttHost", "MqttPort", "MqttClientId", "MqttUsername", "MqttPassword"}
--- The columns `--no-secrets` leaves out.
M.SECRET_FIELDS = {DeviceSecret = true, MqttPassword = true}

local FORMATS = {csv = true, json = true, ndjson = true, ["esp-idf"] = true}

--- The NVS namespace of the esp-idf config file when `--esp-namespace` is not given: the
-- one Espressif's esp-aliyun SDK reads its keys from (docs/wire.md §12).
M.ESP_NAMESPACE = "aliyun-key"

-- The esp-idf config file's rows: every column but IotId is an NVS key (IotId stays in
-- the values file as metadata, which mfg_gen.py skips; a device needs none of it to
-- connect). MqttPort is stored as a u16, the rest as strings.
local ESP_ENCODING = {MqttPort = "u16", IotId = false}

--- The columns a run writes.
-- @tparam table opts the checked options (`mqtt`, `no_secrets`)
-- @treturn {string,...}
function M.columns(opts)
  local cols = {}
  local function add(list)
    for _, c in ipairs(list) do
      if not (opts.no_secrets and M.SECRET_FIELDS[c]) then cols[#cols + 1] = c end
    end
  end
  add(M.DEVICE_FIELDS)
  if opts.mqtt then add(M.MQTT_FIELDS) end
  return cols
end

--- One CSV field, quoted as RFC 4180 asks when it holds a comma, a quote, CR or LF.
-- @tparam string s
-- @treturn string
function M.csv_field(s)
  s = tostring(s or "")
  if s:find('[,"\r\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

local function csv_row(cols, dev, eol)
  local f = {}
  for i, k in ipairs(cols) do f[i] = M.csv_field(dev[k]) end
  return table.concat(f, ",") .. eol
end

-- One device as a JSON object on one line: strings, MqttPort a number.
local function json_object(cols, dev)
  local f = {}
  for i, k in ipairs(cols) do
    local v = dev[k]
    f[i] = json_string(k) .. ": " ..
      ((type(v) == "number" and ("%d"):format(v)) or json_string(tostring(v or "")))
  end
  return "{" .. table.concat(f, ", ") .. "}"
end

--- The encoder of a format over `cols`: `head` (text before the first device), `row(dev,
-- i)` (device i's text, i from 1) and `tail(count)` (text after the last). Each device's
-- text depends on that device alone, so a writer streams them.
-- @tparam string format csv, json, ndjson or esp-idf
-- @tparam {string,...} cols from `columns`
-- @treturn table
function M.encoder(format, cols)
  if format == "json" then
    return {
      head = function() return "" end,
      row = function(dev, i) return (i == 1 and "[\n  " or ",\n  ") .. json_object(cols, dev) end,
      tail = function(n) return n == 0 and "[]\n" or "\n]\n" end,
    }
  elseif format == "ndjson" then
    return {
      head = function() return "" end,
      row = function(dev) return json_object(cols, dev) .. "\n" end,
      tail = function() return "" end,
    }
  end
  -- csv: CRLF as RFC 4180 writes it; esp-idf: LF, as ESP-IDF's own samples are written
  local eol = format == "esp-idf" and "\n" or "\r\n"
  return {
    head = function() return table.concat(cols, ",") .. eol end,
    row = function(dev) return csv_row(cols, dev, eol) end,
    tail = function() return "" end,
  }
end

--- The esp-idf config file (`mfg_gen.py generate CONFIG VALUES ...`): the namespace row,
-- then `key,data,encoding` for each NVS key, in the values file's column order.
-- @tparam {string,...} cols
-- @tparam string namespace
-- @treturn string
function M.esp_config(cols, namespace)
  local lines = {namespace .. ",namespace,"}
  for _, c in ipairs(cols) do
    local enc = ESP_ENCODING[c]
    if enc ~= false then lines[#lines + 1] = ("%s,data,%s"):format(c, enc or "string") end
  end
  return table.concat(lines, "\n") .. "\n"
end

--- The esp-idf config file's name beside the values file: `devices.csv` gives
-- `devices.config.csv`.
function M.esp_config_path(out)
  return (out:gsub("%.csv$", "")) .. ".config.csv"
end

local CONNECTION_OPTIONS = {"signmethod", "securemode", "instance-style", "password-case",
                            "mqtt-timestamp", "mqtt-port"}

local function check_format(opts)
  opts.format = opts.format or "csv"
  if not FORMATS[opts.format] then
    usage_error("--format must be csv, json, ndjson or esp-idf, got '%s'", opts.format)
  end
  if opts.format == "esp-idf" then
    -- mfg_gen.py refuses files without the .csv extension; the config file goes beside
    if not opts.out then
      usage_error("--format esp-idf writes two files: give the values file with --out FILE.csv " ..
        "(not stdout)")
    end
    if not opts.out:find("[^/]%.csv$") then
      usage_error("--format esp-idf needs --out ending in .csv (mfg_gen.py reads only .csv " ..
        "files), got '%s'", opts.out)
    end
    local ns = opts.esp_namespace or M.ESP_NAMESPACE
    if #ns > 15 or not ns:find("^[%w_%-]+$") then
      usage_error("--esp-namespace must be 1 to 15 letters, digits, - or _ (an NVS " ..
        "namespace), got '%s'", ns)
    end
    opts.esp_namespace = ns
  elseif opts.esp_namespace then
    usage_error("--esp-namespace applies to --format esp-idf only")
  end
end

--- Checks and converts `--format`, `--esp-namespace`, `--no-secrets`, `--mqtt` and the
-- connection options (`aliyun.iot.cli.connection`) before any request.
-- @tparam table opts from `args.parse`
-- @raise a usage error
function M.check(opts)
  check_format(opts)
  if opts.command == "mqtt-credentials" then
    opts.mqtt = true
    if not opts["in"] then usage_error("'mqtt-credentials' needs --in FILE") end
  end
  if not opts.mqtt then
    for _, name in ipairs(CONNECTION_OPTIONS) do
      if opts[(name:gsub("%-", "_"))] ~= nil then usage_error("--%s needs --mqtt", name) end
    end
    return
  end
  require("aliyun.iot.cli.connection").check(opts)
end

--- The flags that make a resumed run write what this one would (for the resume command).
-- @treturn {string,...}
function M.flags(opts)
  local f = {}
  if opts.mqtt and opts.command ~= "mqtt-credentials" then f[#f + 1] = "--mqtt" end
  for _, name in ipairs(CONNECTION_OPTIONS) do
    local v = opts[(name:gsub("%-", "_"))]
    if v ~= nil then f[#f + 1] = ("--%s %s"):format(name, args.shell_quote(tostring(v))) end
  end
  if opts.esp_namespace and opts.esp_namespace ~= M.ESP_NAMESPACE then
    f[#f + 1] = "--esp-namespace " .. args.shell_quote(opts.esp_namespace)
  end
  if opts.no_secrets then f[#f + 1] = "--no-secrets" end
  return f
end

return M
