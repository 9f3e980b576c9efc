-- Writes the generated part of the API docs (make docs) into OUT_DIR: client_methods.lua,
-- an LDoc source file that adds to the Client class (aliyun.iot.Client) the methods made at
-- run time, which carry no doc comment of their own:
--   * the batch helpers, installed by aliyun.iot.batch.install, documented there on local
--     functions: their doc comments are copied and re-attached to Client methods;
--   * one method per row of aliyun.iot.actions (client:batch_register_device(params,
--     call_opts)), described from the row: the Action, its retry class, its parameters and
--     their rules, its QPS, and the doc page that the row's file or docs/wire.md names;
-- and batch.lua, the aliyun.iot.batch module's own doc comment alone (the argument rule,
-- the options by helper, the job error's fields), so that its helpers appear once, as
-- Client methods, and not also as local functions of that module (fleet.lua likewise);
-- and core.lua, the C core's functions (aliyun.iot.core) from the comment above each
-- exported C function in csrc/*.c ("core.name(...) -> ..." or "Session:name(...)").
-- Usage (from the repository root): lua5.4 tools/docs.lua OUT_DIR
local actions = require "aliyun.iot.actions"
local pacer = require "aliyun.iot.pacer"

local out_dir = assert(arg[1], "usage: lua5.4 tools/docs.lua OUT_DIR")

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function spit(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  assert(f:close())
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- The doc pages docs/wire.md §0 names ("69470 RegisterDevice, ..."), by Action.
local wire = slurp("docs/wire.md")
local pages = {}
for number, name in (wire:match("| D%-xxxxx |([^\n]*)") or ""):gmatch("(%d%d%d%d%d+) (%u%a+)") do
  pages[name] = number
end

-- Where docs/wire.md describes an action: its own "### Name" heading in §4, or a bullet
-- of §4's "Cheap extras".
local function wire_place(name)
  if wire:find("\n### " .. name .. "[:\n]") then return "docs/wire.md §4, " .. name end
  if wire:find("%* %*%*" .. name .. "%*%*") then return "docs/wire.md §4, Cheap extras" end
  return nil
end

local RETRY = {
  idempotent = "`idempotent`: a repeat is harmless, so an attempt that may have acted " ..
    "(a timeout, a lost or undecodable answer) is repeated too, within `max_retries` and " ..
    "`retry_deadline`",
  never = "`never`: a repeat could act twice, so only an attempt that certainly did not " ..
    "act (nothing reached the server, throttling, a decoded 503 ServiceUnavailable) is " ..
    "repeated; one that may have acted is returned with `ambiguous = true`",
  named = "`named`: with a `DeviceName`, an attempt that may have acted is repeated once " ..
    "and an `iot.device.AlreadyExistedDeviceName` answer is resolved by reading the " ..
    "device back (QueryDeviceDetail); without one, as `never`",
}

local function rule_text(rule)
  local kind, text = rule.kind, nil
  if kind == "key" then
    text = "string, not empty, no NUL, CR or LF"
  elseif kind == "text" then
    text = "string without NUL, CR or LF"
  elseif kind == "device_name" then
    text = "device name, `^[A-Za-z0-9_.:@-]{4,32}$`"
  elseif kind == "integer" then
    local max = rule.max == "max_batch_size" and "the client's `max_batch_size`" or rule.max
    text = "integer" .. (rule.min and (" from " .. rule.min) or "") ..
      (max and (" to " .. max) or "")
  elseif kind == "apply_id" then
    text = "positive integer (int64) or its digit string"
  elseif kind == "names" then
    text = "list of unique device names" .. (rule.max and
      (", at most " .. (rule.max == "max_batch_size" and "`max_batch_size`" or rule.max)) or "")
  elseif kind == "name_records" then
    text = "list of `{DeviceName=, DeviceNickname=}`, unique names" .. (rule.max and
      (", at most " .. (rule.max == "max_batch_size" and "`max_batch_size`" or rule.max)) or "")
  elseif kind == "keys" then
    text = "list of keys" .. (rule.max and (", at most " .. rule.max) or "")
  elseif kind == "records" then
    local fields = {}
    for name, field in pairs(rule.fields) do
      fields[#fields + 1] = name .. (field.required and " (required)" or "")
    end
    table.sort(fields)
    text = "list of `{" .. table.concat(fields, ", ") .. "}`" ..
      (rule.max and (", at most " .. rule.max) or "")
  else
    error("tools/docs.lua: no description for rule kind " .. tostring(kind))
  end
  return (rule.required and "required; " or "") .. text
end

-- Parameters with one rule in every action (aliyun.iot.validate's module comment).
local BY_NAME = {
  ProductKey = "string, not empty, no whitespace or control character, at most 64 bytes",
  Nickname = "4 to 64 characters of letters, digits, `_` and Chinese characters (each " ..
    "counting 2), or empty for none",
}

local function one_of_text(row)
  if not row.one_of then return nil end
  local alts = {}
  for _, set in ipairs(row.one_of) do
    alts[#alts + 1] = "`" .. table.concat(set, "` with `") .. "`"
  end
  return "one of " .. table.concat(alts, ", or ") .. " is required"
end

local function action_stub(name)
  local row = actions.rows[name]
  local lines = {}
  local function add(s) lines[#lines + 1] = s end
  local page = pages[name]
  local where = {}
  if page then
    where[#where + 1] = ("doc page D-%s (https://help.aliyun.com/document_detail/%s.html)")
      :format(page, page)
  end
  where[#where + 1] = wire_place(name)
  add(("--- Calls `%s` (HTTP %s): `client:call(%q, params, call_opts)`."):format(
    name, row.method, name))
  if #where > 0 then add("-- See " .. table.concat(where, "; ") .. ".") end
  add("--")
  add("-- Retry class " .. RETRY[row.retry] .. ".")
  local qps = pacer.DEFAULT_LIMITS[name]
  if qps then
    add(("-- Paced to %s requests per second per account by default (option `qps`)."):format(qps))
  end
  local rule = one_of_text(row)
  if rule then add("-- Parameters: " .. rule .. ".") end
  local names = sorted_keys(row.params)
  local parts = {}
  for _, p in ipairs(names) do
    parts[#parts + 1] = ("`%s` (%s)"):format(p, BY_NAME[p] and
      ((row.params[p].required and "required; " or "") .. BY_NAME[p]) or rule_text(row.params[p]))
  end
  add("-- @tparam table params the API's parameters" ..
    (#parts > 0 and (": " .. table.concat(parts, "; ")) or "") ..
    "; `IotInstanceId` (key) besides")
  add("-- @tparam[opt] table call_opts as for `call`")
  add("-- @treturn ?table the decoded response, with the API's field names")
  add("-- @treturn ?table err as for `call`: `InvalidParameter` (with `parameter`) before " ..
    "any request for an unknown parameter, a bad value or a missing required one")
  add("-- @raise as `call` (params not a table, call_opts malformed)")
  add(("function Client:%s(params, call_opts) end"):format(actions.method_name(name)))
  return table.concat(lines, "\n")
end

-- The batch helpers' doc comments in aliyun/iot/batch.lua: each "---" block right above
-- "local function NAME(self, args)" for a name that install() puts on the class.
local batch_src = slurp("lua/aliyun/iot/batch.lua")

local function helper_stubs(src, min)
  local installed = {}
  for name in src:gmatch("Client%.([%w_]+) = [%w_]+") do installed[#installed + 1] = name end
  local blocks = {}
  for _, name in ipairs(installed) do
    local pat = "\n(%-%-%-[^\n]*\n[^\n]*.-)local function " .. name .. "%(self, ([%w_]+)%)"
    local block, argname
    -- the last "---" opener before the function starts its block
    for b, a in src:gmatch(pat) do block, argname = b, a end
    assert(block, "tools/docs.lua: no doc comment above batch helper " .. name)
    block = block:match(".*\n(%-%-%-.*)$") or block
    assert(not block:find("\n[^%-]"), "tools/docs.lua: code inside the doc block of " .. name)
    blocks[#blocks + 1] = block .. ("function Client:%s(%s) end"):format(name, argname)
  end
  assert(#blocks >= min, "tools/docs.lua: found only " .. #blocks .. " helpers")
  return blocks
end

local parts = {
  "--- Generated by tools/docs.lua at `make docs` time from aliyun/iot/batch.lua, fleet.lua and the",
  "-- action table (aliyun/iot/actions.lua); not a module of the library.",
  "-- @submodule aliyun.iot.Client",
  "",
  "local Client = {}",
  "",
  "--- Batch helpers",
  "-- (installed by `aliyun.iot` from `aliyun.iot.batch`, whose page has the argument " ..
    "rule, the options each helper takes and the job error's fields)",
  "-- @section batch",
  "",
}
for _, b in ipairs(helper_stubs(batch_src, 5)) do parts[#parts + 1] = b .. "\n" end
parts[#parts + 1] = "--- Fleet helpers"
parts[#parts + 1] = "-- (installed by `aliyun.iot` from `aliyun.iot.fleet`, whose page has the argument rule)"
parts[#parts + 1] = "-- @section fleet"
parts[#parts + 1] = ""
for _, b in ipairs(helper_stubs(slurp("lua/aliyun/iot/fleet.lua"), 1)) do parts[#parts + 1] = b .. "\n" end
parts[#parts + 1] = "--- One method per action"
parts[#parts + 1] = "-- (a row of `aliyun.iot.actions`; the name is the Action in snake_case)"
parts[#parts + 1] = "-- @section actions"
parts[#parts + 1] = ""
for _, name in ipairs(sorted_keys(actions.rows)) do
  parts[#parts + 1] = action_stub(name) .. "\n"
end
parts[#parts + 1] = "return Client\n"

spit(out_dir .. "/client_methods.lua", table.concat(parts, "\n"))

local header = batch_src:match("^(.-\n%-%- @module aliyun%.iot%.batch\n)")
assert(header, "tools/docs.lua: aliyun/iot/batch.lua has no module doc comment")
spit(out_dir .. "/batch.lua", header .. "\nreturn {}\n")
local fleet_header = slurp("lua/aliyun/iot/fleet.lua"):match("^(.-\n%-%- @module aliyun%.iot%.fleet\n)")
assert(fleet_header, "tools/docs.lua: aliyun/iot/fleet.lua has no module doc comment")
spit(out_dir .. "/fleet.lua", fleet_header .. "\nreturn {}\n")

-- The C core: each comment in csrc/*.c that starts with "core.NAME" or "Session:NAME"
-- documents that function; its first line is the summary, the rest is kept as written.
local function c_comments()
  local files = {}
  local p = assert(io.popen("ls csrc/*.c"))
  for f in p:lines() do files[#files + 1] = f end
  p:close()
  local entries = {}
  for _, f in ipairs(files) do
    for body in slurp(f):gmatch("/%*(.-)%*/") do
      local lines = {}
      for line in (body .. "\n"):gmatch("([^\n]*)\n") do
        line = line:gsub("^%s*%*? ?", ""):gsub("%s+$", "")
        if line ~= "" or #lines > 0 then lines[#lines + 1] = line end
      end
      while lines[#lines] == "" do lines[#lines] = nil end
      local first = lines[1] or ""
      local name = first:match("^core%.([%w_]+)[%({]") or first:match("^(Session:[%w_]+)%(")
      if name then
        entries[#entries + 1] = {name = name, file = f, lines = lines}
      end
    end
  end
  table.sort(entries, function(a, b) return a.name < b.name end)
  return entries
end

local core_parts = {
  "--- The C core (`require \"aliyun.iot.core\"`): signing, the libcurl transport, decoding",
  "-- and files, used by the Lua modules; generated by tools/docs.lua from the comment above",
  "-- each exported C function in csrc/ (docs/ARCHITECTURE.md lists them by file).",
  "-- @module aliyun.iot.core",
  "",
}
for _, e in ipairs(c_comments()) do
  local out = {"--- `" .. e.lines[1] .. "` (" .. e.file .. ")"}
  if #e.lines > 1 then
    out[#out + 1] = "--"
    for i = 2, #e.lines do out[#out + 1] = "--     " .. e.lines[i] end
  end
  out[#out + 1] = "-- @function " .. e.name
  core_parts[#core_parts + 1] = table.concat(out, "\n") .. "\n"
end
core_parts[#core_parts + 1] = "return {}\n"
spit(out_dir .. "/core.lua", table.concat(core_parts, "\n"))
