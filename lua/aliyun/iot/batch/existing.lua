--- Names that exist already, for named jobs run again (`existing = "skip"` or `"adopt"`).
-- A name the service refuses -- in a check's invalid list (CHECK_FAILED or the synchronous
-- business error), as a creation that failed (CREATE_FAILED), or as
-- `iot.device.AlreadyExistedDeviceName` at registration -- is looked up with
-- BatchQueryDeviceDetail (its API page, docs/wire.md §10: at most 100 names a call, 5 calls a
-- second, paced by the client's pacer; unknown names are left out silently), never judged by
-- the text of its message. Found, it is `existing`: with "adopt" its record (DeviceSecret,
-- IotId) is returned with the created devices, so the same names run twice give the same
-- devices and create nothing the second time; with "skip" it is left out, reported as
-- existing, and is no error. Either way it is journaled (`existing` event). Not found, it
-- stays invalid.
-- @module aliyun.iot.batch.existing

local validate = require "aliyun.iot.validate"
local answer = require "aliyun.iot.batch.answer"
local outcomes = require "aliyun.iot.batch.outcomes"

local M = {}

--- What a named job does with names that exist already.
M.MODES = {"fail", "skip", "adopt"}

--- BatchQueryDeviceDetail's most names a call (docs/wire.md §10).
M.MAX_NAMES = 100

local function on(job)
  return job.existing == "skip" or job.existing == "adopt"
end

-- Checks one BatchQueryDeviceDetail answer for the names `asked` (a set): the devices
-- found, each `{DeviceName=, DeviceSecret=, IotId=}` once (a repeat of the same record is
-- dropped, a repeat that differs refused), or nil and the reason.
local function found_in(res, asked, product_key)
  local data = type(res) == "table" and res.Data
  if type(data) ~= "table" then return nil, "the answer holds no Data object" end
  local list = data.Data
  if list == nil then return {} end
  if not validate.list_length(list) then return nil, "Data.Data is not a list" end
  local out, seen = {}, {}
  for i, d in ipairs(list) do
    local dev, why = answer.device(d)
    if not dev then return nil, ("Data.Data[%d]: %s"):format(i, why) end
    if d.ProductKey ~= nil and d.ProductKey ~= product_key then
      return nil, ("Data.Data[%d]: device %s is not of product %s"):format(i, dev.DeviceName,
        product_key)
    end
    if not asked[dev.DeviceName] then
      return nil, ("Data.Data[%d]: device %s was not asked for"):format(i, dev.DeviceName)
    end
    local before = seen[dev.DeviceName]
    if not before then
      seen[dev.DeviceName] = dev
      out[#out + 1] = dev
    elseif before.DeviceSecret ~= dev.DeviceSecret or before.IotId ~= dev.IotId then
      -- one name, two identities: which one the device has cannot be told
      return nil, ("Data.Data[%d]: device %s is listed twice, with another DeviceSecret " ..
        "or IotId"):format(i, dev.DeviceName)
    end
  end
  return out
end

-- Looks `names` up, at most MAX_NAMES a call; returns the devices found (each with the
-- RequestId of its call) or nil and the error.
local function look_up(job, names)
  local found = {}
  for first = 1, #names, M.MAX_NAMES do
    local chunk, asked = {}, {}
    for i = first, math.min(first + M.MAX_NAMES - 1, #names) do
      chunk[#chunk + 1], asked[names[i]] = names[i], true
    end
    local res, err = job.port:invoke("BatchQueryDeviceDetail",
      {ProductKey = job.ProductKey, DeviceName = chunk}, job:call_opts())
    if not res then return nil, job:call_error(err) end
    local devs, why = found_in(res, asked, job.ProductKey)
    if not devs then
      return nil, answer.invalid_response("BatchQueryDeviceDetail answered, but " .. why,
                                          {action = "BatchQueryDeviceDetail"})
    end
    local rid = answer.request_id(res.RequestId)
    for _, d in ipairs(devs) do
      d.RequestId = rid
      found[#found + 1] = d
    end
  end
  return found
end

-- Takes the devices found: journaled first (so that a resumed job, even a finished one
-- read again, knows them), then counted as the job's; each name's outcome is `existing`.
local function take(job, found)
  local events = {}
  for _, d in ipairs(found) do
    events[#events + 1] = {event = "existing", ProductKey = job.ProductKey,
      DeviceName = d.DeviceName, DeviceSecret = d.DeviceSecret, IotId = d.IotId,
      RequestId = d.RequestId}
  end
  if job.journal then
    local ok, err = job.journal:append_list(events)
    if not ok then return err end
  end
  for _, d in ipairs(found) do M.note(job, d) end
end

--- Counts a device found existing as the job's (from a look-up or a journal's `existing`
-- event): adopted into the devices, or only reported (skip).
-- @tparam table job
-- @tparam table d `{DeviceName=, DeviceSecret=, IotId=, RequestId=}`
function M.note(job, d)
  local name = d.DeviceName
  job.existing_names = job.existing_names or {}
  if job.existing_seen and job.existing_seen[name] then return end
  job.existing_seen = job.existing_seen or {}
  job.existing_seen[name] = true
  job.existing_names[#job.existing_names + 1] = name
  if job.existing == "adopt" and not job.have[name] then
    job.have[name] = true
    job.devices[#job.devices + 1] = {ProductKey = job.ProductKey, DeviceName = name,
                                     DeviceSecret = d.DeviceSecret, IotId = d.IotId}
  end
  job.invalid_seen[name] = true -- never checked or registered again
  outcomes.decide(job, name, {outcome = "existing", RequestId = d.RequestId})
end

-- The names of `list` (`{{DeviceName=}, ...}`) to look up: not had, not confirmed before.
local function unconfirmed(job, list)
  job.confirmed = job.confirmed or {}
  local names, seen = {}, {}
  for _, b in ipairs(list) do
    local n = b.DeviceName
    if not seen[n] and not job.confirmed[n] and not (job.existing_seen or {})[n] then
      seen[n] = true
      names[#names + 1] = n
    end
  end
  return names
end

local function found_set(job, names, found)
  local set = {}
  for _, d in ipairs(found) do set[d.DeviceName] = true end
  for _, n in ipairs(names) do job.confirmed[n] = true end
  return set
end

-- True when invalid entry `b` is the service's verdict (not a local one, such as a
-- duplicate copy of a name).
local function refused_entry(job, b)
  local by = job.rejected and job.rejected[b.DeviceName]
  return by ~= nil and by.entry == b
end

--- Confirms the names the service refused at its check: the existing ones leave the
-- invalid list (and count again among the job's devices); the others stay invalid.
-- Does nothing unless the job's `existing` is "skip" or "adopt".
-- @tparam table job a named job
-- @treturn ?table err (the look-up's error, `InvalidResponse`, the journal's error)
function M.settle_checked(job)
  if not on(job) then return nil end
  local rejected = {}
  for _, b in ipairs(job.invalid) do
    if refused_entry(job, b) then rejected[#rejected + 1] = b end
  end
  local names = unconfirmed(job, rejected)
  if #names == 0 then return nil end
  local found, err = look_up(job, names)
  if not found then return err end
  local set = found_set(job, names, found)
  local keep = {}
  for _, b in ipairs(job.invalid) do
    if set[b.DeviceName] and refused_entry(job, b) then
      job.total = job.total + 1
    else
      keep[#keep + 1] = b
    end
  end
  job.invalid = keep
  return take(job, found)
end

--- Confirms the names of applies that ended CREATE_FAILED: the existing ones leave the
-- apply's failed list (an apply left without failures no longer fails the job).
-- @tparam table job a named job
-- @treturn ?table err
function M.settle_created(job)
  if not on(job) then return nil end
  local failed = {}
  for _, a in ipairs(job.applies) do
    for _, f in ipairs(a.create_failed or {}) do
      if not job.have[f.DeviceName] then failed[#failed + 1] = f end
    end
  end
  local names = unconfirmed(job, failed)
  local found = {}
  if #names > 0 then
    local lerr
    found, lerr = look_up(job, names)
    if not found then return lerr end
  end
  local set = found_set(job, names, found)
  local err = take(job, found)
  if err then return err end
  for _, a in ipairs(job.applies) do
    if a.create_failed then
      local keep = {}
      for _, f in ipairs(a.create_failed) do
        local gone = set[f.DeviceName] or job.have[f.DeviceName]
          or (job.existing_seen or {})[f.DeviceName]
        if not gone then keep[#keep + 1] = f end
      end
      a.create_failed = #keep > 0 and keep or nil
    end
  end
end

--- Settles a BatchRegisterDeviceWithApplyId that the service refused with
-- `iot.device.AlreadyExistedDeviceName` (a name was taken after the check): the apply's
-- names are looked up, the existing ones taken, and the apply set aside so that the
-- others are checked again.
-- @tparam table job a named job
-- @tparam table a the apply
-- @tparam table err the registration's error
-- @treturn ?table err the error to end the job with (the refusal itself when the job
--   does not take existing names), or nil to check again
function M.refused(job, a, err)
  if not on(job) or err.code ~= "iot.device.AlreadyExistedDeviceName" then return err end
  local found, lerr = look_up(job, a.Names)
  if not found then return lerr end
  if #found == 0 then return err end -- none of its names exists: nothing to settle
  a.check_failed, a.check_status = true, "CHECK_FAILED"
  return take(job, found)
end

return M
