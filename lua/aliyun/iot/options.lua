--- Options: one table per kind of options (name, Lua type, default, allowed values) and
-- one checker. `iot.new` checks client options with `CLIENT`, every call its call options
-- with `CALL`, the engine's callers (the batch helpers) with `INVOKE`; other modules may
-- check their own arguments with a schema of the same shape.
--
-- A schema maps a name to `{type = "number"|"string"|..., default = v, min =, max =,
-- above = (exclusive minimum), integer = true, one_of = {...} (compared upper-cased),
-- pattern = "lua pattern", nonempty = true, line = true (no NUL, CR or LF)}`.
-- @module aliyun.iot.options

local errors = require "aliyun.iot.errors"

local M = {}

local DAY = 86400
local SECONDS = {type = "number", above = 0, max = DAY}

local function seconds(default)
  return {type = "number", above = 0, max = DAY, default = default}
end

--- Client options (`iot.new`).
M.CLIENT = {
  access_key_id = {type = "string"}, access_key_secret = {type = "string"},
  security_token = {type = "string", line = true},
  credentials = {type = "function"},
  region_id = {type = "string", default = "cn-shanghai", pattern = "^[%w%-]+$",
               why = "region_id must be non-empty and hold only letters, digits and -"},
  endpoint = {type = "string"},
  iot_instance_id = {type = "string", nonempty = true, line = true},
  timeout = seconds(30), connect_timeout = seconds(5),
  ca_file = {type = "string", nonempty = true, line = true},
  proxy = {type = "string", line = true},
  format = {type = "string", default = "JSON", one_of = {"JSON", "XML"}},
  signature_algorithm = {type = "string", default = "HMAC-SHA1",
                         one_of = {"HMAC-SHA1", "ACS3-HMAC-SHA256"}},
  max_retries = {type = "number", default = 3, integer = true, min = 0, max = 100},
  retry_deadline = seconds(60),
  max_response_size = {type = "number", default = 16 * 1024 * 1024, integer = true, min = 1,
                       max = 1024 * 1024 * 1024},
  -- The limit BatchRegisterDevice's seed page states; current docs allow 10,000.
  max_batch_size = {type = "number", default = 1000, integer = true, min = 1, max = 10000},
  qps = {type = "boolean|table", default = true},
  transport = {type = "function"}, logger = {type = "function"},
  qps_shared_dict = {type = "string", nonempty = true},
  user_agent = {type = "string", line = true},
}

--- Call options (`client:call`, the per-action methods, `call_many`).
M.CALL = {
  timeout = SECONDS, connect_timeout = SECONDS,
  max_retries = M.CLIENT.max_retries,
  format = M.CLIENT.format,
  method = {type = "string", one_of = {"GET", "POST"}},
}

--- Engine options (`client:invoke`, `client:invoke_many`): the call options plus hooks and
-- an absolute deadline.
M.INVOKE = {
  on_send = {type = "function"}, on_retry = {type = "function"},
  deadline = {type = "number"},
}
for k, v in pairs(M.CALL) do M.INVOKE[k] = v end

local function has_type(v, want)
  for t in want:gmatch("[^|]+") do
    if type(v) == t then return true end
  end
  return false
end

local function number_problem(name, v, o)
  if v ~= v or v == math.huge or v == -math.huge then
    return name .. " must be a finite number"
  end
  if o.integer and v ~= math.floor(v) then return name .. " must be a whole number" end
  if (o.above and not (v > o.above)) or (o.min and v < o.min) or (o.max and v > o.max) then
    if o.above then
      return ("%s must be above %s and at most %s"):format(name, o.above, o.max)
    end
    return ("%s must be from %s to %s"):format(name, o.min, o.max)
  end
end

local function string_problem(name, v, o)
  if (o.nonempty or o.pattern) and v == "" then return name .. " must not be empty" end
  if o.line and v:find("[%z\r\n]") then return name .. " must not contain NUL, CR or LF" end
  if o.pattern and not v:find(o.pattern) then return o.why or (name .. " is malformed") end
  if o.one_of then
    local u = v:upper()
    for _, allowed in ipairs(o.one_of) do
      if u == allowed then return nil end
    end
    return name .. " must be " .. table.concat(o.one_of, " or ")
  end
end

--- An `InvalidParameter` error naming the parameter or option.
-- @tparam string parameter
-- @tparam string message
-- @treturn table err
function M.invalid(parameter, message)
  return errors.new{code = "InvalidParameter", parameter = parameter, message = message}
end

--- The problem with one value of a known type, or nil.
-- @tparam string name
-- @param v the value
-- @tparam table o its schema entry
-- @treturn ?string what is wrong
function M.problem(name, v, o)
  if type(v) == "number" then return number_problem(name, v, o) end
  if type(v) == "string" then return string_problem(name, v, o) end
end

--- Checks options against a schema.
-- @tparam table schema name -> entry
-- @param given the options (nil is an empty table)
-- @tparam string what how they are named in messages ("client", "call")
-- @tparam integer level error level for misuse (as for `error`)
-- @treturn table `given` (or a new empty table)
-- @return or nil, err `InvalidParameter` naming the first option with a bad value
-- @raise when given is not a table, a name is unknown or a value has the wrong type
function M.check(schema, given, what, level)
  level = (level or 1) + 1
  if given == nil then return {} end
  if type(given) ~= "table" then
    error(("%s must be a table, got %s"):format(what, type(given)), level)
  end
  for k, v in pairs(given) do
    local o = schema[k]
    if not o then error(("unknown %s option '%s'"):format(what, tostring(k)), level) end
    if not has_type(v, o.type) then
      error(("%s option '%s' must be a %s, got %s"):format(what, k, o.type, type(v)), level)
    end
  end
  local names = {}
  for k in pairs(given) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local why = M.problem(k, given[k], schema[k])
    if why then
      return nil, M.invalid(k, why)
    end
  end
  return given
end

--- The defaults of a schema, as a new table.
-- @tparam table schema
-- @treturn table name -> default
function M.defaults(schema)
  local t = {}
  for k, o in pairs(schema) do t[k] = o.default end
  return t
end

--- True when t is a list: keys exactly 1..n, no hole.
-- @tparam table t
-- @treturn boolean
function M.is_list(t)
  local keys, top = 0, 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k ~= math.floor(k) then return false end
    keys = keys + 1
    if k > top then top = k end
  end
  return top == keys
end

return M
