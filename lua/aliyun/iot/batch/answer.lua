--- Checks of what the service answers the batch helpers. Nothing a server sends is
-- trusted: every field the helpers use is type-checked here, and every value that could
-- end up in a file (a DeviceName, DeviceSecret or IotId written to a journal or a CSV)
-- must look like what the API produces. A failed check returns a reason; the caller turns
-- it into `InvalidResponse` (`errors.invalid_response` below), never a Lua error.
-- @module aliyun.iot.batch.answer

local errors = require "aliyun.iot.errors"
local validate = require "aliyun.iot.validate"
local journal = require "aliyun.iot.journal"

local M = {}

--- The most devices one apply holds (`aliyun.iot.journal`'s limit, D-69473, D-69482).
M.MAX_APPLY = journal.MAX_APPLY

local STATUSES = {CHECK = true, CHECK_SUCCESS = true, CHECK_FAILED = true, CREATE = true,
                  CREATE_SUCCESS = true, CREATE_FAILED = true}

--- An `InvalidResponse` error.
-- @tparam string message (server text in it is escaped when printed)
-- @tparam[opt] table fields more fields (`apply_id`, `action`, ...)
function M.invalid_response(message, fields)
  local e = {code = "InvalidResponse", message = message}
  for k, v in pairs(fields or {}) do e[k] = v end
  return errors.new(e)
end

--- The decimal string of an ApplyId (Lua integer, number up to 2^53 or digit string):
-- the journal and the job's tables key applies by it, exact over int64 everywhere.
function M.id_key(id)
  return (validate.integer_string(id))
end

--- The ApplyId of a decimal key as the client passes it on: a Lua integer (5.3+), a
-- number below 2^53, or the string itself beyond.
M.id_value = validate.integer_value

local function what(v)
  if type(v) == "string" then return ("%q"):format(v:sub(1, 40)) end
  if type(v) == "number" then return tostring(v) end
  return type(v)
end

--- The RequestId of an answer (or of an error's `request_id`) when it looks like one
-- (letters, digits and `-`, at most 128 characters): it goes into reports and journals.
-- @param v the value the answer holds
-- @treturn ?string
function M.request_id(v)
  if type(v) == "string" and #v <= 128 and v:find("^[%w%-]+$") then return v end
  return nil
end

--- A count field (Page, PageSize, PageCount, Total): a whole Lua number from 0 to 2^31.
-- @treturn ?integer
function M.count(v)
  if not validate.whole(v, 0, 2^31) then return nil end
  return math.tointeger and math.tointeger(v) or v
end

--- The ApplyId in an answer's `Data`.
-- @tparam any res the decoded answer
-- @treturn ?any ApplyId as the answer holds it
-- @treturn ?string its decimal key, or the reason it is unusable
function M.apply_id(res)
  local data = type(res) == "table" and res.Data
  if type(data) ~= "table" then return nil, "the answer holds no Data object" end
  local id = data.ApplyId
  local why = "is missing or not a number"
  if type(id) == "number" or type(id) == "string" then why = validate.apply_id_problem(id) end
  if why then return nil, ("its ApplyId %s (got %s)"):format(why, what(id)) end
  return id, M.id_key(id)
end

-- A wrapped list `container[key]` (`{"Name": [...]}`): nil or a list whose items pass
-- `each` (when given); returns the list ({} when absent) or nil and a reason.
local function wrapped(container, key, label, each)
  if container == nil then return {} end
  if type(container) ~= "table" then return nil, label .. " is not an object" end
  local list = container[key]
  if list == nil then return {} end
  if not validate.list_length(list) then return nil, label .. " is not a list" end
  if not each then return list end
  for i, v in ipairs(list) do
    local why = each(v)
    if why then return nil, ("%s[%d] %s"):format(label, i, why) end
  end
  return list
end

local function name_item(v)
  local why = validate.device_name_problem(v)
  if why then return "breaks the DeviceName rule: " .. why .. " (got " .. what(v) .. ")" end
end

local function detail_item(v)
  if type(v) ~= "table" then return "is not an object" end
  local why = name_item(v.DeviceName)
  if why then return "DeviceName " .. why end
  for _, k in ipairs{"ErrorMsg", "NickName"} do
    if v[k] ~= nil and type(v[k]) ~= "string" then return k .. " is not a string" end
  end
end

--- Checks a QueryBatchRegisterDeviceStatus answer (D-69483).
-- @treturn ?table `Data`, its lists checked
-- @treturn ?string reason
function M.status(res)
  local data = type(res) == "table" and res.Data
  if type(data) ~= "table" then return nil, "the status answer holds no Data object" end
  if not STATUSES[data.Status] then
    return nil, ("unknown Status %s"):format(what(data.Status))
  end
  local _, why = wrapped(data.ValidList, "Name", "ValidList.Name", name_item)
  if why then return nil, why end
  _, why = wrapped(data.InvalidList, "Name", "InvalidList.Name", name_item)
  if why then return nil, why end
  _, why = wrapped(data.InvalidDetailList, "invalidDetailList",
                   "InvalidDetailList.invalidDetailList", detail_item)
  if why then return nil, why end
  return data
end

--- The names a checked status answer lists as failed, as `{{DeviceName=, ErrorMsg=},
-- ...}`: the detail list first, then the bare names (with `default_msg`), each once.
-- @tparam table data a `Data` that passed `M.status`
-- @tparam string default_msg
function M.failures(data, default_msg)
  local out, listed = {}, {}
  local details = wrapped(data.InvalidDetailList, "invalidDetailList", "", detail_item)
  for _, d in ipairs(details) do
    if not listed[d.DeviceName] then
      listed[d.DeviceName] = true
      out[#out + 1] = {DeviceName = d.DeviceName, ErrorMsg = d.ErrorMsg or default_msg}
    end
  end
  for _, name in ipairs(wrapped(data.InvalidList, "Name", "", name_item)) do
    if not listed[name] then
      listed[name] = true
      out[#out + 1] = {DeviceName = name, ErrorMsg = default_msg}
    end
  end
  return out
end

-- Why record d cannot be a device (see M.device), or nil. A DeviceName found in `known`
-- (a set of names the job checked against the DeviceName rule itself: those it asked
-- for) is such a string already, so the rule is not run on it again; any other value is.
local function device_problem(d, known)
  if type(d) ~= "table" then return "a device record is " .. type(d) .. ", not an object" end
  local name = d.DeviceName
  local why = not (known and known[name]) and validate.device_name_problem(name)
  if why then
    return ("a DeviceName breaks the DeviceName rule: %s (got %s)"):format(why, what(name))
  end
  why = validate.token_problem(d.DeviceSecret)
  if why then return ("device %s: DeviceSecret %s"):format(name, why) end
  why = validate.token_problem(d.IotId)
  if why then return ("device %s: IotId %s"):format(name, why) end
end

--- Checks one device record of a QueryPageByApplyId page (D-69518).
-- @treturn ?table `{DeviceName=, DeviceSecret=, IotId=}`
-- @treturn ?string reason (never holds the secret)
function M.device(d)
  local why = device_problem(d)
  if why then return nil, why end
  return {DeviceName = d.DeviceName, DeviceSecret = d.DeviceSecret, IotId = d.IotId}
end

-- The counts of a page: Page, PageSize, PageCount and Total, each a count, consistent
-- with what was asked (page p of size `size`) and with the first page's Total.
local function page_counts(res, p, size, total)
  local c = {}
  for _, k in ipairs{"Page", "PageSize", "PageCount", "Total"} do
    c[k] = M.count(res[k])
    if not c[k] then return nil, ("%s is %s, not a count"):format(k, what(res[k])) end
  end
  if c.Total > M.MAX_APPLY then
    return nil, ("Total %d is beyond the %d devices an apply holds"):format(c.Total, M.MAX_APPLY)
  end
  if total and c.Total ~= total then
    return nil, ("Total changed from %d to %d between pages"):format(total, c.Total)
  end
  if c.Page ~= p or c.PageSize ~= size then
    return nil, ("page %d of size %d was asked, page %d of size %d came"):format(p, size,
      c.Page, c.PageSize)
  end
  if c.PageCount ~= math.ceil(c.Total / size) then
    return nil, ("PageCount %d does not match Total %d"):format(c.PageCount, c.Total)
  end
  return c
end

--- Checks a QueryPageByApplyId answer for page `p` of `size`. The device records are
-- checked where they are (no copy): `devices` is the answer's own list, each record a
-- table whose DeviceName, DeviceSecret and IotId passed `M.device`'s checks (other fields
-- it may hold are not checked and not to be read).
-- @tparam any res the decoded answer
-- @tparam integer p the page asked for
-- @tparam integer size the page size asked for
-- @tparam[opt] integer total the first page's Total (later pages must agree)
-- @tparam[opt] table known a set of names the caller checked against the DeviceName rule
--   (those it asked for): their rule is not run again
-- @treturn ?table `{Total=, devices = {{DeviceName=, DeviceSecret=, IotId=}, ...}}`
-- @treturn ?string reason
function M.page(res, p, size, total, known)
  if type(res) ~= "table" then return nil, "the page is not an object" end
  local c, why = page_counts(res, p, size, total)
  if not c then return nil, why end
  local label = "ApplyDeviceList.ApplyDeviceInfo"
  local list
  list, why = wrapped(res.ApplyDeviceList, "ApplyDeviceInfo", label)
  if not list then return nil, why end
  local want = math.max(0, math.min(size, c.Total - (p - 1) * size))
  if #list ~= want then
    return nil, ("page %d holds %d devices, Total %d says %d"):format(p, #list, c.Total, want)
  end
  for i = 1, want do
    why = device_problem(list[i], known)
    if why then return nil, ("%s[%d]: %s"):format(label, i, why) end
  end
  return {Total = c.Total, devices = list, RequestId = M.request_id(res.RequestId)}
end

return M
