--- Rebuilding a job from its journal's events (`aliyun.iot.journal`), so that resume
-- continues it without creating anything twice.
-- @module aliyun.iot.batch.resume

local errors = require "aliyun.iot.errors"
local answer = require "aliyun.iot.batch.answer"
local named = require "aliyun.iot.batch.named"

local M = {}

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
