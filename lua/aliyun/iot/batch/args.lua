--- The batch helpers' arguments, declared as data (`SCHEMAS`, one per helper, in the shape
-- of `aliyun.iot.options`) and checked by `options.check`, so one rule holds everywhere:
--
-- * a wrong Lua type is misuse and raises: `args` not a table, an unknown option, an
--   option whose Lua type is not the documented one (`ProductKey = 123`, `Devices = "x"`,
--   `deadline = "5"`), a `Devices` list with a hole (and, in `batch.named`, an entry that
--   is neither a name nor a record);
-- * a value of the right type that is bad, or a required one missing, returns
--   `nil, err` with `code = "InvalidParameter"` and `err.parameter`, before any request
--   (`Count = 0`, `ProductKey = ""`, `deadline = -1`, `Devices = {}`).
--
-- Documented conveniences: `Count` and `ApplyId` may be integers or digit strings.
-- @module aliyun.iot.batch.args

local options = require "aliyun.iot.options"
local validate = require "aliyun.iot.validate"

local M = {}

--- The most a deadline or an apply_timeout may be [s]: 30 days; beyond (or infinity) is
-- far likelier a slip than a wish.
M.MAX_SECONDS = 30 * 86400

--- The most devices one random-named job registers (register_devices; resume holds a
-- journal to it too). 10,000,000 is already 1,000 applies at the service's 10,000 per
-- call (10,000 at the default 1,000), 200,000 page reads (over an hour at
-- QueryPageByApplyId's 50 QPS) and a result table of every record in memory
-- (gigabytes); a larger Count is far likelier a slipped digit than a fleet, and a larger
-- fleet is several jobs, each with its own journal. The journal holds the number (the
-- limit its reader keeps).
M.MAX_COUNT = require("aliyun.iot.journal").MAX_COUNT

--- The most devices one page of `apply_devices` asks for (QueryPageByApplyId's limit).
M.MAX_PAGE_SIZE = require("aliyun.iot.batch.pages").SIZE

-- Options only some helpers take, and why the others do not: said in the error.
local ONLY = {
  journal = "only register_devices, register_named_devices and resume keep a journal " ..
    "(they create devices)",
  apply_timeout = "only the helpers that wait for applies take it",
  on_progress = "apply_devices and product_devices are iterators: the caller's loop sees " ..
    "their progress",
  on_report = "only named jobs (register_named_devices, resume) report per device",
  existing = "only register_named_devices takes it (resume keeps the journal's choice)",
}

--- `Count` as a number: an exact integer from 1 to `MAX_COUNT` (no "1e3", nothing
-- beyond int64), given as an integer or a digit string; nil for anything else.
-- @param v
-- @treturn ?number
function M.count(v)
  local digits = validate.integer_string(v)
  local n = digits and #digits <= 8 and tonumber(digits)
  if n and n >= 1 and n <= M.MAX_COUNT then return n end
  return nil
end

local function seconds(name)
  return {type = "number", above = 0, max = M.MAX_SECONDS,
          why = ("%s must be a number of seconds above 0 and at most %d (30 days)")
            :format(name, M.MAX_SECONDS)}
end

local PRODUCT_KEY = {type = "string", required = true, problem = validate.product_key_problem}
local APPLY_ID = {type = "number|string", required = true, problem = validate.apply_id_problem}
local DEADLINE, APPLY_TIMEOUT = seconds("deadline"), seconds("apply_timeout")
local ON_PROGRESS, JOURNAL = {type = "function"}, {type = "string"}
local ON_REPORT = {type = "function"}
local PAGE_SIZE = {type = "number", integer = true, min = 1, max = M.MAX_PAGE_SIZE,
                   why = ("page_size must be a whole number from 1 to %d"):format(M.MAX_PAGE_SIZE)}

--- Each helper's arguments: name -> `aliyun.iot.options` schema entry.
M.SCHEMAS = {
  wait_apply = {
    ProductKey = PRODUCT_KEY, ApplyId = APPLY_ID,
    phase = {type = "string", one_of = {"check", "create"},
             why = 'phase must be "check" or "create"'},
    deadline = DEADLINE, apply_timeout = APPLY_TIMEOUT, on_progress = ON_PROGRESS,
  },
  apply_devices = {
    ProductKey = PRODUCT_KEY, ApplyId = APPLY_ID, deadline = DEADLINE, page_size = PAGE_SIZE,
  },
  -- QueryDevice's largest page is QueryPageByApplyId's, 50 (docs/wire.md §4)
  product_devices = {ProductKey = PRODUCT_KEY, deadline = DEADLINE, page_size = PAGE_SIZE},
  register_devices = {
    ProductKey = PRODUCT_KEY,
    Count = {type = "number|string", required = true,
             problem = function(v) if not M.count(v) then return "is out of range" end end,
             why = ("Count must be an integer from 1 to %d (a larger fleet is several jobs)")
               :format(M.MAX_COUNT)},
    on_progress = ON_PROGRESS, journal = JOURNAL, deadline = DEADLINE,
    apply_timeout = APPLY_TIMEOUT,
    names = {type = "string", one_of = {"service", "client"},
             why = 'names must be "service" or "client"'},
  },
  register_named_devices = {
    ProductKey = PRODUCT_KEY,
    Devices = {type = "table", required = true, list = true, nonempty = true,
               why = "Devices must be a non-empty list of names"},
    skip_invalid = {type = "boolean"},
    existing = {type = "string", one_of = {"fail", "skip", "adopt"},
                why = 'existing must be "fail", "skip" or "adopt"'},
    on_progress = ON_PROGRESS, on_report = ON_REPORT, journal = JOURNAL, deadline = DEADLINE,
    apply_timeout = APPLY_TIMEOUT,
  },
  check_device_names = {
    ProductKey = PRODUCT_KEY,
    Devices = {type = "table", required = true, list = true, nonempty = true,
               why = "Devices must be a non-empty list of names"},
    on_progress = ON_PROGRESS, deadline = DEADLINE, apply_timeout = APPLY_TIMEOUT,
  },
  resume = {
    journal = {type = "string", required = true},
    ProductKey = {type = "string", problem = validate.product_key_problem},
    adopt_apply_ids = {type = "table", list = true},
    accept_ambiguous = {type = "boolean"},
    on_progress = ON_PROGRESS, on_report = ON_REPORT, deadline = DEADLINE,
    apply_timeout = APPLY_TIMEOUT,
  },
}

--- Checks a helper's arguments against its schema.
-- @tparam any args
-- @tparam string what the helper's name (a key of `SCHEMAS`)
-- @tparam integer level error level of the helper's caller, seen from here
-- @treturn ?table `args`
-- @treturn ?table err `InvalidParameter` for the first bad or missing value
-- @raise on misuse (see the module)
function M.check(args, what, level)
  if type(args) ~= "table" then
    error(("%s expects a table, got %s"):format(what, type(args)), level)
  end
  return options.check(M.SCHEMAS[what], args, what, level, ONLY)
end

return M
