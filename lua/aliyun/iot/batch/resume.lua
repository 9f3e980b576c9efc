--- Rebuilding a job from its journal's events (`aliyun.iot.journal`), so that resume
-- continues it without creating anything twice.
-- @module aliyun.iot.batch.resume

local errors = require "aliyun.iot.errors"
local validate = require "aliyun.iot.validate"
local answer = require "aliyun.iot.batch.answer"
local named = require "aliyun.iot.batch.named"

local M = {}

--- The most devices one random-named job registers (`aliyun.iot.batch.args`).
M.MAX_COUNT = require("aliyun.iot.batch.args").MAX_COUNT

-- A journal is read as strictly as user input: a hand-edited or corrupted one is refused
-- (JournalError naming the event), never a Lua error nor requests built from odd values.
local int = validate.whole

local function list_of(v, each)
  if validate.list_length(v) == nil then return false end
  for _, x in ipairs(v) do if not each(x) then return false end end
  return true
end

local function name_msg(x)
  return type(x) == "table" and type(x.DeviceName) == "string"
    and (x.ErrorMsg == nil or type(x.ErrorMsg) == "string")
end

local function record(x)
  return type(x) == "table" and type(x.DeviceName) == "string"
    and (x.DeviceNickname == nil or type(x.DeviceNickname) == "string")
end

local function id(v)
  return type(v) == "string" and validate.apply_id_problem(v) == nil
end

-- Per event: nil when its fields are usable, else the field at fault.
local CHECK = {
  job = function(r)
    if validate.product_key_problem(r.ProductKey) then return "ProductKey" end
    if r.kind == "random" and not int(r.Count, 1, M.MAX_COUNT) then return "Count" end
    if r.kind == "named" and not list_of(r.Devices, record) then return "Devices" end
  end,
  submit = function(r) if not int(r.seq, 1, 2^31) then return "seq" end end,
  failed = function(r) if not int(r.seq, 1, 2^31) then return "seq" end end,
  uncertain = function(r)
    if not int(r.seq, 1, 2^31) then return "seq" end
    if type(r.message) ~= "string" then return "message" end
  end,
  apply = function(r)
    if not id(r.ApplyId) then return "ApplyId" end
    if r.seq ~= nil and not int(r.seq, 1, 2^31) then return "seq" end
    if r.phase == "create" and not int(r.Count, 1, answer.MAX_APPLY) then return "Count" end
    if r.phase == "check" and not list_of(r.Names, function(x) return type(x) == "string" end)
    then return "Names" end
    if r.phase ~= "create" and r.phase ~= "check" then return "phase" end
  end,
  device = function(r)
    if not id(r.ApplyId) then return "ApplyId" end
    local _, why = answer.device(r)
    if why then return "device (" .. why .. ")" end
  end,
  fetched = function(r)
    if not id(r.ApplyId) then return "ApplyId" end
    if r.Status ~= "CREATE_SUCCESS" and r.Status ~= "CREATE_FAILED" then return "Status" end
    if r.Failed ~= nil and not list_of(r.Failed, name_msg) then return "Failed" end
  end,
  done = function(r)
    if r.Invalid ~= nil and not list_of(r.Invalid, name_msg) then return "Invalid" end
  end,
}

local function check_records(records)
  for i, r in ipairs(records) do
    local check = CHECK[r.event]
    local field = check and check(r)
    if field then
      return errors.new{code = "JournalError", message = ("event %d (%s) of the journal " ..
        "has an unusable %s: it was changed or damaged; the job cannot be resumed from it")
        :format(i, r.event, field)}
    end
  end
end

local IN_FLIGHT = "BatchRegisterDevice (Count = %s) was in flight when the journaled " ..
  "process ended: the service may have created an apply whose ApplyId never arrived. It " ..
  "is not sent again, so that no devices are created twice; look for devices beyond the " ..
  "listed ApplyIds with QueryDevice or in the console"

-- Applies one event to the job; `st` holds the submissions in flight and `done`.
local function replay(job, r, st)
  if r.event == "submit" then
    st.in_flight[r.seq] = r
    job.seq = math.max(job.seq, tonumber(r.seq) or 0)
  elseif r.event == "apply" then
    st.in_flight[r.seq or -1] = nil
    job:add_apply{ApplyId = answer.id_value(r.ApplyId), phase = r.phase, Count = r.Count,
                  Names = r.Names}
  elseif r.event == "failed" then
    st.in_flight[r.seq] = nil
  elseif r.event == "uncertain" then
    st.in_flight[r.seq] = nil
    job.uncertain = {message = r.message}
  elseif r.event == "device" then
    if not job.have[r.DeviceName] then
      job.have[r.DeviceName] = true
      job.devices[#job.devices + 1] = {ProductKey = r.ProductKey, DeviceName = r.DeviceName,
                                       DeviceSecret = r.DeviceSecret, IotId = r.IotId}
      local a = job.by_id[r.ApplyId]
      if a then a.got = a.got + 1 end
    end
  elseif r.event == "fetched" then
    local a = job.by_id[r.ApplyId]
    if a then
      a.fetched, a.check_status = true, r.Status or "CREATE_SUCCESS"
      if r.Status == "CREATE_FAILED" then a.create_failed = r.Failed or {} end
    end
  elseif r.event == "done" then
    st.done = true
    if type(r.Invalid) == "table" then job.invalid = r.Invalid end
  end
end

--- Fills a new job (made with the journal's `job` event: kind, ProductKey) from the
-- journal's records.
-- @treturn ?boolean true when the journal records a finished job
-- @treturn ?table err (`JournalError`, or the named job's InvalidDeviceName)
function M.rebuild(job, records)
  local bad = check_records(records)
  if bad then return nil, bad end
  local spec = records[1]
  if spec.kind == "random" then
    job.Count, job.total = spec.Count, spec.Count
  elseif spec.kind == "named" then
    job.names, job.skip_invalid = spec.Devices or {}, spec.skip_invalid == true
    local err = named.validate_names(job)
    if err then return nil, err end
  else
    return nil, errors.new{code = "JournalError",
                           message = "unknown job kind " .. tostring(spec.kind)}
  end
  local st = {in_flight = {}, done = false}
  for i = 2, #records do replay(job, records[i], st) end
  for _, r in pairs(st.in_flight) do
    job.uncertain = job.uncertain or {message = IN_FLIGHT:format(tostring(r.Count))}
  end
  return st.done
end

return M
