--- Fleet manifests: the devices a product should have, each with its nickname, tags and
-- groups, read from a CSV file, a JSON lines file or a Lua array, and checked against the
-- documented limits before anything is sent (docs/wire.md §10, "What a manifest may hold").
--
-- CSV: a header row names the columns, in any order: `DeviceName` (required), `Nickname`,
-- `tags` (`key=value;key=value`), `groups` (`name;name`); fields may be quoted (`"a,b"`,
-- `""` for a quote). JSON lines: one object a line with the same fields; `tags` may be an
-- object of strings and `groups` an array of strings. A Lua array: the same records.
-- In every form blank lines and lines starting with `#` are skipped, and a leading UTF-8
-- byte order mark is dropped.
--
-- What a field's absence means: a column (or field) left out is not managed (the plan
-- leaves that side of the device as it is); given, it is the whole truth: an empty Nickname
-- means "no nickname", empty tags "no tags" (keys are removed only with `prune_tags`), empty
-- groups "in no group".
-- @module aliyun.iot.fleet.manifest

local validate = require "aliyun.iot.validate"
local errors = require "aliyun.iot.errors"
local core = require "aliyun.iot.core"
local cjson = require("cjson").new()
local quoted = errors.quoted -- a value named in a message, cut after 64 bytes

local M = {}

--- At most this many tags a device (SaveDeviceProp's page).
M.MAX_TAGS = 100
--- At most this many bytes of tag JSON a device (SaveDeviceProp's page: Props up to 5 KB).
M.MAX_TAG_BYTES = 5 * 1024
--- At most this many groups a device (BatchAddDeviceGroupRelations' page).
M.MAX_GROUPS = 10
--- The largest manifest file read [bytes]: 128 MiB, room for a product's million devices
-- (QueryDevice lists fewer than 1,000,000 a product) with tags and groups. Loaded, a
-- manifest takes about 30 times its size in memory (measured: 13 MB, 200,000 devices with
-- 3 tags and 2 groups each, 380 MB resident), so the largest takes some 4 GB.
M.MAX_BYTES = 134217728
--- A tag key the service keeps for itself and filters out of every answer (SaveDeviceProp's
-- page): a manifest holding it could never be met.
M.RESERVED_TAG = "abc"

local COLUMNS = {devicename = "DeviceName", nickname = "Nickname", tags = "tags", groups = "groups"}

-- A manifest problem: InvalidParameter naming where it is.
local function problem(where, fmt, ...)
  return errors.new{code = "InvalidParameter", parameter = "manifest",
                    message = where .. ": " .. fmt:format(...)}
end

local function trim(s) return (s:match("^%s*(.-)%s*$")) end

local function has_control(s) return s:find("[%z\1-\31\127]") ~= nil end

--- The tag JSON SaveDeviceProp would carry for these tags: an object, keys sorted.
-- @tparam table tags `{key = value}`
-- @treturn string
function M.tag_json(tags)
  local keys, parts = {}, {}
  for k in pairs(tags) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, k in ipairs(keys) do parts[i] = cjson.encode(k) .. ":" .. cjson.encode(tags[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- `key=value;key=value` -> {key = value}; nil and a reason.
local function parse_tags(s)
  local tags = {}
  for part in (s .. ";"):gmatch("([^;]*);") do
    part = trim(part)
    if part ~= "" then
      local k, v = part:match("^([^=]*)=(.*)$")
      if not k then return nil, ("tag %s is not key=value"):format(quoted(part)) end
      k, v = trim(k), trim(v)
      if tags[k] then return nil, ("tag key %s given twice"):format(quoted(k)) end
      tags[k] = v
    end
  end
  return tags
end

-- `name;name` -> {name, ...} (duplicates kept for the check to name).
local function parse_groups(s)
  local out = {}
  for part in (s .. ";"):gmatch("([^;]*);") do
    part = trim(part)
    if part ~= "" then out[#out + 1] = part end
  end
  return out
end

-- The tags checked by SaveDeviceProp's rules (`validate.tag_key_problem`, the keys in
-- order so that the same manifest always names the same one); nil or a reason.
local function check_tags(tags)
  local n, keys = 0, {}
  for k in pairs(tags) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = tags[k]
    n = n + 1
    if k == "" then return "a tag key is empty" end
    if has_control(k) or has_control(v) then return ("tag %s holds a control character"):format(quoted(k)) end
    if k == M.RESERVED_TAG then
      return ("tag key %s is reserved by the service (it never shows in its answers)"):format(quoted(k))
    end
    local why = validate.tag_key_problem(k)
    if why then return ("tag key %s %s (SaveDeviceProp's rule)"):format(quoted(k), why) end
    why = validate.tag_value_problem(v)
    if why then return ("tag %s: its value %s (SaveDeviceProp's rule)"):format(quoted(k), why) end
  end
  if n > M.MAX_TAGS then return ("has %d tags, at most %d a device"):format(n, M.MAX_TAGS) end
  local size = #M.tag_json(tags)
  if size > M.MAX_TAG_BYTES then
    return ("its tags are %d bytes of JSON, at most %d a device"):format(size, M.MAX_TAG_BYTES)
  end
end

-- The groups checked and sorted; nil and a reason.
local function check_groups(list)
  if #list > M.MAX_GROUPS then
    return nil, ("is in %d groups, at most %d a device"):format(#list, M.MAX_GROUPS)
  end
  local seen, out = {}, {}
  for i, g in ipairs(list) do
    local why = validate.group_name_problem(g)
    if why then return nil, ("group %s %s"):format(quoted(g), why) end
    if seen[g] then return nil, ("group %s given twice"):format(quoted(g)) end
    seen[g], out[i] = true, g
  end
  table.sort(out)
  return out
end

-- Checks one record {DeviceName=, Nickname=, tags=, groups=} in place; nil or a reason.
local function check_record(rec)
  local why = validate.device_name_problem(rec.DeviceName)
  if why then return ("DeviceName %s %s"):format(quoted(rec.DeviceName), why) end
  if rec.Nickname ~= nil and rec.Nickname ~= "" then
    why = validate.nickname_problem(rec.Nickname, false)
    if why then return ("Nickname %s %s"):format(quoted(rec.Nickname), why) end
  end
  -- a problem of the tags or groups names its device as well as its line
  if rec.tags then
    why = check_tags(rec.tags)
    if why then return ("device %s: %s"):format(rec.DeviceName, why) end
  end
  if rec.groups then
    rec.groups, why = check_groups(rec.groups)
    if why then return ("device %s: %s"):format(rec.DeviceName, why) end
  end
end

-- Adds the checked records to a manifest, refusing a name given twice.
local function build(records)
  local m, lines = {devices = {}, by_name = {}}, {}
  for _, r in ipairs(records) do
    local why = check_record(r.rec)
    if why then return nil, problem(r.where, "%s", why) end
    local name = r.rec.DeviceName
    if m.by_name[name] then
      return nil, problem(r.where, "DeviceName %s is listed twice (first at %s)", quoted(name), lines[name])
    end
    m.by_name[name], lines[name] = r.rec, r.where
    m.devices[#m.devices + 1] = r.rec
  end
  return m
end

-- The meaningful lines of a text: {n = line number, text = line}, BOM dropped, any line end.
local function lines_of(text)
  text = text:gsub("^\239\187\191", ""):gsub("\r\n?", "\n")
  local out, n = {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if trim(line) ~= "" and not line:find("^%s*#") then out[#out + 1] = {n = n, text = line} end
  end
  return out
end

-- One CSV line -> its fields (RFC 4180 quoting within the line); nil and a reason.
local function csv_fields(line)
  local out, pos = {}, 1
  while true do
    pos = pos + #line:match("^[ \t]*", pos)
    if line:sub(pos, pos) == '"' then
      local buf, j = {}, pos + 1
      while true do
        local q = line:find('"', j, true)
        if not q then return nil, "a quoted field has no closing quote" end
        buf[#buf + 1] = line:sub(j, q - 1)
        if line:sub(q + 1, q + 1) ~= '"' then pos = q + 1 break end
        buf[#buf + 1], j = '"', q + 2
      end
      out[#out + 1] = table.concat(buf)
      pos = pos + #line:match("^[ \t]*", pos)
      local c = line:sub(pos, pos)
      if c == "" then return out end
      if c ~= "," then return nil, "text after a quoted field" end
      pos = pos + 1
    else
      local e = line:find(",", pos, true)
      local raw = line:sub(pos, (e or #line + 1) - 1)
      if raw:find('"', 1, true) then return nil, "a quote inside an unquoted field" end
      out[#out + 1] = trim(raw)
      if not e then return out end
      pos = e + 1
    end
  end
end

-- The header's columns: {index -> field name}; nil and a reason.
local function csv_header(fields)
  local cols, seen = {}, {}
  for i, f in ipairs(fields) do
    local name = COLUMNS[f:lower()]
    if not name then
      return nil, ("unknown column %s (the columns are DeviceName, Nickname, tags, groups)"):format(quoted(f))
    end
    if seen[name] then return nil, ("column %s given twice"):format(name) end
    cols[i], seen[name] = name, true
  end
  if not seen.DeviceName then return nil, "the header row has no DeviceName column" end
  return cols
end

-- A CSV row's record; nil and a reason.
local function csv_record(fields, cols)
  if #fields ~= #cols then
    return nil, ("has %d fields, the header %d"):format(#fields, #cols)
  end
  local rec = {}
  for i, name in ipairs(cols) do
    local v = fields[i]
    if name == "tags" then
      local tags, why = parse_tags(v)
      if not tags then return nil, why end
      rec.tags = tags
    elseif name == "groups" then
      rec.groups = parse_groups(v)
    else
      rec[name] = v
    end
  end
  return rec
end

local function parse_csv(lines, source)
  if #lines == 0 then return nil, problem(source, "no header row") end
  local fields, why = csv_fields(lines[1].text)
  local cols
  if fields then cols, why = csv_header(fields) end
  if not cols then return nil, problem(source .. ":" .. lines[1].n, "%s", why) end
  local records = {}
  for i = 2, #lines do
    local where = source .. ":" .. lines[i].n
    local rec
    fields, why = csv_fields(lines[i].text)
    if fields then rec, why = csv_record(fields, cols) end
    if not rec then return nil, problem(where, "%s", why) end
    records[#records + 1] = {rec = rec, where = where}
  end
  return build(records)
end

-- A JSON value's field as a record's: tags as an object of strings or `k=v;k=v`, groups as
-- an array of strings or `a;b`; nil and a reason.
local function json_field(name, v)
  if name == "DeviceName" or name == "Nickname" then
    if type(v) ~= "string" then return nil, name .. " must be a string" end
    return v
  elseif name == "tags" then
    if type(v) == "string" then return parse_tags(v) end
    if type(v) ~= "table" then return nil, "tags is not an object" end
    for k, tv in pairs(v) do
      if type(k) ~= "string" or type(tv) ~= "string" then
        return nil, "tags must be an object of strings"
      end
    end
    return v
  elseif name == "groups" then
    if type(v) == "string" then return parse_groups(v) end
    local n = validate.list_length(v)
    if not n then return nil, "groups is not an array" end
    for i = 1, n do
      if type(v[i]) ~= "string" then return nil, "groups must be an array of strings" end
    end
    return v
  end
  return nil, ("unknown field %s (the fields are DeviceName, Nickname, tags, groups)"):format(
    quoted(name))
end

local function json_record(obj)
  if type(obj) ~= "table" then return nil, "is not a JSON object" end
  local rec = {}
  for k, v in pairs(obj) do
    local why
    rec[k], why = json_field(k, v)
    if why then return nil, why end
  end
  if rec.DeviceName == nil then return nil, "has no DeviceName" end
  return rec
end

local function parse_json_lines(lines, source)
  local records = {}
  for _, l in ipairs(lines) do
    local where = source .. ":" .. l.n
    -- numbers of any size come back as numbers: refused below as not strings, never
    -- taken as their digits
    local ok, obj, jerr = pcall(core.json_decode, l.text, true)
    if not ok or obj == nil then
      return nil, problem(where, "not JSON: %s", tostring(jerr or obj))
    end
    local rec, why = json_record(obj)
    if not rec then return nil, problem(where, "%s", why) end
    records[#records + 1] = {rec = rec, where = where}
  end
  return build(records)
end

--- Parses a manifest's text: JSON lines when its first meaningful line starts with `{`,
-- CSV with a header row otherwise.
-- @tparam string text
-- @tparam[opt] string source the name errors give (a path; default "manifest")
-- @treturn ?table manifest `{devices = {{DeviceName=, Nickname=, tags=, groups=}, ...},
--   by_name = {[DeviceName] = record}}`; Nickname, tags (`{key = value}`) and groups (a
--   sorted list) are nil where the manifest leaves them out
-- @treturn ?table err `InvalidParameter` (`parameter = "manifest"`), its message
--   `SOURCE:LINE: problem`
function M.parse(text, source)
  source = source or "manifest"
  local lines = lines_of(text)
  if lines[1] and lines[1].text:find("^%s*{") then return parse_json_lines(lines, source) end
  if lines[1] and lines[1].text:find("^%s*%[") then
    -- a JSON array would meet the CSV reader and be refused for a quote, which says nothing
    return nil, problem(source .. ":" .. lines[1].n, "is neither CSV with a header row nor " ..
      "JSON lines (one JSON object a line): a JSON array is not read; write each object " ..
      "on a line of its own")
  end
  return parse_csv(lines, source)
end

-- Digest's key: any fixed text (HMAC-SHA1 is the hash core has; a key changes nothing).
local DIGEST_KEY = "aliyun-iot manifest"

--- A loaded manifest's digest: what tells a run again of an apply that its manifest is the
-- killed run's (`aliyun.iot.fleet.apply_journal`). It covers the normalised records
-- (name, nickname, tags sorted by key, groups sorted; a field left out differs from an
-- empty one), in the manifest's order, so the same devices written as CSV, JSON lines or
-- a Lua array, or with other spacing, quoting or comments, have one digest.
-- @tparam table manifest from `load` or `parse`
-- @treturn string Base64 of HMAC-SHA1 over that text
function M.digest(manifest)
  local rows = {}
  for i, d in ipairs(manifest.devices) do
    rows[i] = cjson.encode({d.DeviceName, d.Nickname or false,
      d.tags and M.tag_json(d.tags) or false, d.groups or false})
  end
  return core.hmac_sha1(DIGEST_KEY, table.concat(rows, "\n"))
end

-- A Lua array's entry as a record; a wrong Lua type raises (misuse).
local function lua_record(entry, i, level)
  if type(entry) ~= "table" then
    error(("manifest[%d] must be a table {DeviceName=, Nickname=, tags=, groups=}"):format(i), level)
  end
  local rec, why = json_record(entry)
  if not rec then error(("manifest[%d] %s"):format(i, why), level) end
  return rec
end

--- Reads a manifest: a path (a regular file, at most `MAX_BYTES`) or a Lua array of
-- records.
-- @tparam string|table source
-- @tparam[opt] integer level the error level for misuse, as `error` counts from the
--   caller (default 1: the caller of `load`)
-- @treturn ?table manifest as `parse` gives it
-- @treturn ?table err `InvalidParameter` (`parameter = "manifest"`): a file that cannot be
--   read, or a record breaking a rule (`PATH:LINE: ...` or `manifest[N]: ...`)
-- @raise when source is neither, or a Lua record has a field of the wrong type
function M.load(source, level)
  level = (level or 1) + 1
  if type(source) == "string" then
    local text, why = core.read_file(source, M.MAX_BYTES)
    if not text then return nil, problem(source, "cannot read the manifest: %s", tostring(why)) end
    return M.parse(text, source)
  end
  if type(source) ~= "table" then error("manifest must be a path or a list of records", level) end
  local n, hole = validate.list_length(source)
  if not n then
    error(hole and ("manifest[%d] is missing: a list must have no hole"):format(hole)
      or "manifest must be a list (keys 1..n)", level)
  end
  local records = {}
  for i = 1, n do
    records[i] = {rec = lua_record(source[i], i, level + 1), where = ("manifest[%d]"):format(i)}
  end
  return build(records)
end

return M
