--- The batch helpers' arguments, checked by one rule:
--
-- * a wrong Lua type is misuse and raises: `args` not a table, an unknown option, an
--   option whose Lua type is not the documented one (`ProductKey = 123`, `Devices = "x"`,
--   `deadline = "5"`), a `Devices` entry that is neither a name nor a record;
-- * a value of the right type that is bad, or a required one missing, returns
--   `nil, err` with `code = "InvalidParameter"` and `err.parameter`, before any request
--   (`Count = 0`, `ProductKey = ""`, `deadline = -1`, `Devices = {}`).
--
-- Documented conveniences: `Count` and `ApplyId` may be integers or digit strings.
-- @module aliyun.iot.batch.args

local errors = require "aliyun.iot.errors"
local validate = require "aliyun.iot.validate"

local M = {}

-- The most a deadline or an apply_timeout may be [s]: 30 days; beyond (or infinity) is
-- far likelier a slip than a wish.
local MAX_SECONDS = 30 * 86400

-- Options only some helpers take, and why the others do not: said in the error.
local ONLY = {
  journal = "only register_devices, register_named_devices and resume keep a journal " ..
    "(they create devices)",
  apply_timeout = "only the helpers that wait for applies take it",
  on_progress = "apply_devices is an iterator: the caller's loop sees its progress",
}

--- Raises unless `args` is a table of known options of the right Lua types.
-- @tparam any args
-- @tparam table allowed option name -> Lua type ("string", "number|string", ...)
-- @tparam string what the helper's name
-- @tparam integer level error level of the helper's caller, seen from here
function M.check(args, allowed, what, level)
  if type(args) ~= "table" then
    error(("%s expects a table, got %s"):format(what, type(args)), level)
  end
  for k, v in pairs(args) do
    local want = allowed[k]
    if not want then
      local why = ONLY[k] and (" (" .. ONLY[k] .. ")") or ""
      error(("%s: unknown option '%s'%s"):format(what, tostring(k), why), level)
    end
    local ok = false
    for t in want:gmatch("[^|]+") do ok = ok or type(v) == t end
    if not ok then
      error(("%s: option '%s' must be a %s, got %s"):format(what, k, want:gsub("|", " or "),
        type(v)), level)
    end
  end
end

--- An InvalidParameter error.
function M.invalid(parameter, message)
  return errors.new{code = "InvalidParameter", parameter = parameter, message = message}
end

--- Checks ProductKey's value (validate.product_key_problem; required).
-- @treturn ?table err
function M.product_key(pk)
  if pk == nil then return M.invalid("ProductKey", "ProductKey is required") end
  local why = validate.product_key_problem(pk)
  if why then return M.invalid("ProductKey", "ProductKey " .. why) end
end

local function seconds(name, v)
  if v ~= nil and not (v > 0 and v <= MAX_SECONDS) then
    return M.invalid(name, ("%s must be a number of seconds above 0 and at most %d (30 days)")
      :format(name, MAX_SECONDS))
  end
end

--- Checks `deadline` and `apply_timeout` (each optional, seconds).
-- @treturn ?table err
function M.times(args)
  return seconds("deadline", args.deadline) or seconds("apply_timeout", args.apply_timeout)
end

--- Checks an ApplyId's value (required).
-- @treturn ?table err
function M.apply_id(id)
  if id == nil then return M.invalid("ApplyId", "ApplyId is required") end
  local why = validate.apply_id_problem(id)
  if why then return M.invalid("ApplyId", "ApplyId " .. why) end
end

--- Checks a list argument's shape: raises on a hole or non-list keys (ipairs would stop
-- at the hole and leave the entries after it out silently).
-- @treturn integer its length
function M.list(v, name, what, level)
  local n = validate.list_length(v)
  if not n then error(("%s: %s must be a list (keys 1..n, no hole)"):format(what, name), level) end
  return n
end

return M
