--- Reading a devices file this command wrote earlier (CSV with its header, a JSON array,
-- or NDJSON), strictly: known columns only, ProductKey, DeviceName and DeviceSecret in
-- every device, every row as wide as the header. Errors name `PATH:LINE` (or the JSON
-- array's item) and never a value (a secret may be in it).
-- @module aliyun.iot.cli.devfile

local args = require "aliyun.iot.cli.args"
local formats = require "aliyun.iot.cli.formats"
local validate = require "aliyun.iot.validate"

local local_error = args.local_error
local printable = require("aliyun.iot.errors").printable

local M = {}

--- The largest file read, in bytes.
M.MAX_BYTES = 1073741824

local KNOWN = {}
for _, c in ipairs(formats.DEVICE_FIELDS) do KNOWN[c] = true end
for _, c in ipairs(formats.MQTT_FIELDS) do KNOWN[c] = true end
local REQUIRED = {"ProductKey", "DeviceName", "DeviceSecret"}
-- The most fields a row can have: each known column once.
local MAX_FIELDS = #formats.DEVICE_FIELDS + #formats.MQTT_FIELDS

-- Splits CSV text (RFC 4180: quoted fields may hold commas, quotes and line ends; lines
-- end with CRLF or LF) into rows of fields, each row with the line it starts on. A row
-- wider than any this command writes stops the reading at once: a line of a billion
-- commas must not become a billion strings.
local function csv_rows(text, path)
  local rows, row, field = {}, {}, {}
  local i, n, line, row_line = 1, #text, 1, 1
  local function end_field()
    if #row >= MAX_FIELDS then
      local_error("%s:%d: more than %d fields (the most columns aliyun-iot writes)", path,
        row_line, MAX_FIELDS)
    end
    row[#row + 1] = table.concat(field)
    field = {}
  end
  while i <= n do
    local c = text:sub(i, i)
    if c == '"' and #field == 0 then
      local j, start = i + 1, line
      while true do
        local q = text:find('"', j, true)
        if not q then local_error("%s:%d: a quoted field is never closed", path, start) end
        local part = text:sub(j, q - 1)
        local _, breaks = part:gsub("\n", "")
        line = line + breaks
        field[#field + 1] = part
        if text:sub(q + 1, q + 1) == '"' then field[#field + 1] = '"' j = q + 2
        else i = q + 1 break end
      end
      local nx = text:sub(i, i)
      if nx ~= "," and nx ~= "\r" and nx ~= "\n" and nx ~= "" then
        local_error("%s:%d: text after a quoted field's closing quote", path, line)
      end
    elseif c == "," then end_field() i = i + 1
    elseif c == "\r" or c == "\n" then
      if c == "\r" and text:sub(i + 1, i + 1) ~= "\n" then
        local_error("%s:%d: a CR without LF", path, line)
      end
      end_field()
      rows[#rows + 1] = {line = row_line, fields = row}
      row = {}
      i = i + (c == "\r" and 2 or 1)
      line = line + 1
      row_line = line
    else
      local j = text:find('[,\r\n"]', i) or n + 1
      if text:sub(j, j) == '"' then
        local_error("%s:%d: a quote inside an unquoted field", path, line)
      end
      field[#field + 1] = text:sub(i, j - 1)
      i = j
    end
  end
  if #field > 0 or #row > 0 then end_field() rows[#rows + 1] = {line = row_line, fields = row} end
  return rows
end

-- The rule of each field that goes to a file as read: the ones the API produces (a name
-- rule, or letters and digits for DeviceSecret and IotId, as a journal holds them), so
-- that nothing else (`=HYPERLINK(...)`, an escape sequence, a NUL) is copied into the
-- output. The Mqtt* columns are computed again, never copied.
-- ProductKey has no published format (the library refuses only what cannot be one), but
-- read from a file it becomes the first cell of a CSV row and, for --instance-style old,
-- a label of MqttHost: it must start with a letter or digit and hold nothing a host name
-- could not (no `=cmd`, no `user@evil.example:1883?` redirecting a device).
local function product_key_problem(v)
  local why = validate.product_key_problem(v)
  if why then return why end
  if not v:find("^[A-Za-z0-9][A-Za-z0-9_-]*$") then
    return "may only contain letters, digits, - and _, starting with a letter or digit"
  end
end

local RULES = {
  ProductKey = product_key_problem,
  DeviceName = validate.device_name_problem,
  DeviceSecret = validate.token_problem,
  IotId = validate.token_problem,
}

-- Checks a device's fields: known names, required ones present and non-empty strings,
-- each value within its rule. The reasons never hold the value (a secret may be in it).
local function check_device(dev, where)
  for k, v in pairs(dev) do
    if type(k) ~= "string" or not KNOWN[k] then
      local_error("%s: unknown field %s", where, printable(tostring(k)))
    end
    if type(v) ~= "string" and not (k == "MqttPort" and type(v) == "number") then
      local_error("%s: %s is not a string", where, k)
    end
  end
  for _, k in ipairs(REQUIRED) do
    if dev[k] == nil or dev[k] == "" then
      local_error("%s: no %s%s", where, k, k == "DeviceSecret" and
        " (a file written with --no-secrets cannot give connection parameters)" or "")
    end
  end
  for k, rule in pairs(RULES) do
    -- an empty IotId is none (a file made from one without IotId writes "" in JSON)
    local why = dev[k] ~= nil and dev[k] ~= "" and rule(dev[k])
    if why then
      -- a DeviceName is no secret: it is named (escaped), as elsewhere
      local_error("%s: %s%s %s", where, k, k == "DeviceName" and
        (" " .. printable(dev.DeviceName)) or "", why)
    end
  end
  return dev
end

-- Refuses a device given twice (the same ProductKey and DeviceName): two devices flashed
-- with one identity disconnect each other, and which secret is right cannot be told.
local function check_unique(devices, wheres)
  local first = {}
  for i, d in ipairs(devices) do
    local key = d.ProductKey .. "\0" .. d.DeviceName
    if first[key] then
      local_error("%s: device %s given twice (first at %s)", wheres[i], printable(d.DeviceName),
        wheres[first[key]])
    end
    first[key] = i
  end
end

-- The header row: known columns, each once. A first row that names none of them is no
-- header at all (a file from elsewhere, or one that lost its first line): its cells are
-- values, perhaps a secret, so none is echoed.
local function check_header(header, path)
  local seen, known = {}, false
  for _, name in ipairs(header.fields) do known = known or KNOWN[name] ~= nil end
  if not known then
    local_error("%s:1: no header row: the first line names none of the columns of " ..
      "aliyun-iot's CSV output (%s)", path, table.concat(REQUIRED, ","))
  end
  for _, name in ipairs(header.fields) do
    if not KNOWN[name] then
      local_error("%s:1: unknown column %s (expected columns of aliyun-iot's CSV output: %s)",
        path, printable(name), table.concat(REQUIRED, ","))
    end
    if seen[name] then local_error("%s:1: column %s given twice", path, name) end
    seen[name] = true
  end
end

local function read_csv(text, path, wheres)
  local rows = csv_rows(text, path)
  local header = rows[1]
  if not header then local_error("%s holds no devices (no header)", path) end
  check_header(header, path)
  local devices = {}
  for r = 2, #rows do
    local row, where = rows[r], ("%s:%d"):format(path, rows[r].line)
    -- a blank line is no row (as Python's csv module and mfg_gen.py read it)
    if not (#row.fields == 1 and row.fields[1] == "") then
      if #row.fields ~= #header.fields then
        local_error("%s: %d fields, the header has %d", where, #row.fields, #header.fields)
      end
      local dev = {}
      for c, name in ipairs(header.fields) do
        if row.fields[c] ~= "" then dev[name] = row.fields[c] end
      end
      devices[#devices + 1], wheres[#devices + 1] = check_device(dev, where), where
    end
  end
  return devices
end

local function decode(text, where)
  local v = require("aliyun.iot.core").json_decode(text)
  if type(v) ~= "table" then local_error("%s: not JSON", where) end
  return v
end

local function read_json(text, path, wheres)
  local list = decode(text, path)
  if next(list) ~= nil and #list == 0 then local_error("%s: not a JSON array of devices", path) end
  local devices = {}
  for i, dev in ipairs(list) do
    local where = ("%s: device %d"):format(path, i)
    if type(dev) ~= "table" or (#dev > 0) then local_error("%s: not an object", where) end
    devices[i], wheres[i] = check_device(dev, where), where
  end
  return devices
end

local function read_ndjson(text, path, wheres)
  local devices, n = {}, 0
  for line in text:gmatch("([^\n]*)\n?") do
    n = n + 1
    if line:find("%S") then
      local where = ("%s:%d"):format(path, n)
      local dev = decode(line, where)
      if #dev > 0 then local_error("%s: not an object", where) end
      devices[#devices + 1], wheres[#devices + 1] = check_device(dev, where), where
    end
  end
  return devices
end

--- Reads the devices of `path` (a regular file, at most MAX_BYTES): CSV, a JSON array or
-- NDJSON, told apart by the first character that is not a space. Every field is checked
-- (the API's rules for ProductKey, DeviceName, DeviceSecret and IotId) and no device may
-- come twice.
-- @treturn {table,...} records with string fields (MqttPort may be a number)
-- @treturn {string,...} where each record stands (`PATH:LINE`, or `PATH: device N` in a
--   JSON array), for messages
-- @raise a local error (exit 2) naming the file and line, before anything is written
function M.read(path)
  local text, why = require("aliyun.iot.core").read_file(path, M.MAX_BYTES)
  if not text then local_error("cannot read --in: %s", tostring(why)) end
  text = text:gsub("^\239\187\191", "")
  local first = text:match("^%s*(.)")
  local reader = (first == "[" and read_json) or (first == "{" and read_ndjson) or read_csv
  local wheres = {}
  local devices = reader(text, path, wheres)
  if #devices == 0 then local_error("%s holds no devices", path) end
  check_unique(devices, wheres)
  return devices, wheres
end

return M
