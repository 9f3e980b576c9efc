--- Options: one table per kind of options (name, Lua type, default, allowed values) and
-- one checker. `iot.new` checks client options with `CLIENT`, every call its call options
-- with `CALL`, the engine's callers (the batch helpers) with `INVOKE`; the batch helpers
-- check their arguments with schemas of the same shape (`aliyun.iot.batch.args`).
--
-- A schema maps a name to `{type = "number"|"string"|"number|string"|..., default = v,
-- required = true, min =, max =, above = (exclusive minimum), integer = true,
-- one_of = {...} (a value matches as given or upper-cased), pattern = "lua pattern",
-- nonempty = true (a string or a table), line = true (no NUL, CR or LF), list = true (a
-- table with keys 1..n and no hole, else misuse), map = "number" (a table whose keys are
-- strings and whose values have that Lua type, else misuse), problem = function(v) -> ?reason (a
-- further rule, its reason put after the name), why = "the message for any bad or
-- missing value"}`.
--
-- The rule: a wrong Lua type, an unknown name or a list with a hole is misuse and raises;
-- a value of the right type that is bad, or a required one missing, is `nil,
-- InvalidParameter` naming it.
-- @module aliyun.iot.options

local errors = require "aliyun.iot.errors"
local validate = require "aliyun.iot.validate"

local M = {}

local DAY = 86400
local SECONDS = {type = "number", above = 0, max = DAY}

-- A qps table's values: the pacer spaces starts 1/qps apart, so each must be a finite
-- rate from one call a minute (a slower one would park a call, and every later call of the
-- account, for longer than a request may wait) to 10,000 a second; the first bad one (in
-- sorted order) is named.
local MIN_QPS, MAX_QPS = 1 / 60, 10000

local function qps_problem(t)
  if type(t) ~= "table" then return nil end
  local actions = {}
  for k in pairs(t) do actions[#actions + 1] = k end
  table.sort(actions)
  for _, action in ipairs(actions) do
    local v = t[action]
    if not (v >= MIN_QPS and v <= MAX_QPS) then
      return ("for %s must be from 1/60 (one call a minute) to 10000 calls per second, got %s")
        :format(action, tostring(v))
    end
  end
end

local function seconds(default)
  return {type = "number", above = 0, max = DAY, default = default}
end

--- Client options (`iot.new`).
M.CLIENT = {
  access_key_id = {type = "string"}, access_key_secret = {type = "string"},
  security_token = {type = "string", line = true},
  credentials = {type = "function|table"},
  profile = {type = "string", nonempty = true, line = true},
  sts_endpoint = {type = "string", pattern = "^https?://[^%s]+$",
                  why = "sts_endpoint must be an http:// or https:// URL"},
  metadata_endpoint = {type = "string", pattern = "^https?://[^%s]+$",
                       why = "metadata_endpoint must be an http:// or https:// URL"},
  -- no default: credentials.region picks it (environment, CLI profile, cn-shanghai)
  region_id = {type = "string", pattern = "^[%w%-]+$",
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
  qps = {type = "boolean|table", default = true, map = "number", problem = qps_problem},
  transport = {type = "function"}, logger = {type = "function"},
  qps_shared_dict = {type = "string", nonempty = true},
  credentials_shared_dict = {type = "string", nonempty = true},
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
      if v == allowed or u == allowed then return nil end
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
  local why
  if v == nil then
    why = o.required and (name .. " is required")
  elseif type(v) == "number" then
    why = number_problem(name, v, o)
  elseif type(v) == "string" then
    why = string_problem(name, v, o)
  elseif type(v) == "table" and o.nonempty and next(v) == nil then
    why = name .. " must not be empty"
  end
  if not why and v ~= nil and o.problem then
    local reason = o.problem(v)
    why = reason and (name .. " " .. reason)
  end
  return why and (o.why or why)
end

-- Raises when a given option is unknown, of the wrong Lua type, or a list with a hole.
local function check_types(schema, given, what, level, hints)
  for k, v in pairs(given) do
    local o = schema[k]
    if not o then
      local hint = hints and hints[k] and (" (" .. hints[k] .. ")") or ""
      error(("unknown %s option '%s'%s"):format(what, tostring(k), hint), level)
    end
    if not has_type(v, o.type) then
      error(("%s option '%s' must be a %s, got %s"):format(what, k, o.type:gsub("|", " or "),
        type(v)), level)
    end
    if o.list and type(v) == "table" and not validate.list_length(v) then
      error(("%s option '%s' must be a list (keys 1..n, no hole)"):format(what, k), level)
    end
    if o.map and type(v) == "table" then
      for key, x in pairs(v) do
        if type(key) ~= "string" or type(x) ~= o.map then
          error(("%s option '%s' must map names (strings) to %ss, got a %s key %s with a %s")
            :format(what, k, o.map, type(key), tostring(key), type(x)), level)
        end
      end
    end
  end
end

-- schema -> its names in sorted order (the order problems are reported in), with
-- `required` the first required name: made once per schema, not on every call. Schemas
-- are not changed after they are made (the batch helpers' are module constants).
local plans = setmetatable({}, {__mode = "k"})

local function plan_of(schema)
  local plan = plans[schema]
  if plan then return plan end
  plan = {}
  for k in pairs(schema) do plan[#plan + 1] = k end
  table.sort(plan)
  for _, k in ipairs(plan) do
    if schema[k].required then plan.required = k; break end
  end
  plans[schema] = plan
  return plan
end

--- Checks options against a schema.
-- @tparam table schema name -> entry
-- @param given the options (nil is an empty table)
-- @tparam string what how they are named in messages ("client", "call", a helper's name)
-- @tparam integer level error level for misuse (as for `error`)
-- @tparam[opt] table hints name -> why a name this schema lacks is not taken (said when
--   it is given)
-- @treturn table `given` (or a new empty table)
-- @return or nil, err `InvalidParameter` naming the first option (in sorted order) with a
--   bad value or missing
-- @raise when given is not a table, a name is unknown, a value has the wrong type or a
--   list option has a hole
function M.check(schema, given, what, level, hints)
  level = (level or 1) + 1
  if given == nil then given = {} end
  if type(given) ~= "table" then
    error(("%s must be a table, got %s"):format(what, type(given)), level)
  end
  local plan = plan_of(schema)
  if next(given) == nil then
    -- every call without options: only a required option can be wrong
    local k = plan.required
    if k then return nil, M.invalid(k, M.problem(k, nil, schema[k])) end
    return given
  end
  check_types(schema, given, what, level + 1, hints)
  for _, k in ipairs(plan) do
    local why = M.problem(k, given[k], schema[k])
    if why then return nil, M.invalid(k, why) end
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

--- True when t is a list: keys exactly 1..n, no hole (`validate.list_length`).
-- @tparam table t
-- @treturn boolean
function M.is_list(t)
  return validate.list_length(t) ~= nil
end

return M
