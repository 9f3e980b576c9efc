--- Named devices: BatchCheckDeviceNames (D-69482) -> wait -> BatchRegisterDeviceWithApplyId
-- (D-69514) -> wait -> pages, in chunks of at most `max_batch_size`. Invalid names are
-- found locally (the DeviceName and nickname rules, duplicates) and by the service,
-- whether it answers them synchronously (a business error listing them) or as CHECK_FAILED.
-- @module aliyun.iot.batch.named

local errors = require "aliyun.iot.errors"
local validate = require "aliyun.iot.validate"
local answer = require "aliyun.iot.batch.answer"
local job_m = require "aliyun.iot.batch.job"
local existing = require "aliyun.iot.batch.existing"

local M = {}

--- Normalises the Devices argument (a list, checked by the caller) to records
-- `{DeviceName=, DeviceNickname=}`. A wrong Lua type is misuse and raises (an entry that
-- is neither a string nor a table, a record whose DeviceName is not a string or whose
-- DeviceNickname is neither nil nor a string, an unknown field); bad values are kept for
-- the local check.
-- @tparam table list
-- @tparam string what the helper's name, for messages
-- @tparam integer level error level
function M.normalise(list, what, level)
  local out = {}
  for i, v in ipairs(list) do
    if type(v) == "string" then
      out[i] = {DeviceName = v} -- the usual entry: one new record, nothing else to check
    elseif type(v) ~= "table" then
      error(("%s: Devices[%d] must be a name or {DeviceName=, DeviceNickname=}, got %s")
        :format(what, i, type(v)), level)
    else
      for k in pairs(v) do
        if k ~= "DeviceName" and k ~= "DeviceNickname" then
          error(("%s: Devices[%d] has an unknown field '%s'"):format(what, i, tostring(k)), level)
        end
      end
      if type(v.DeviceName) ~= "string" then
        error(("%s: Devices[%d].DeviceName must be a string, got %s")
          :format(what, i, type(v.DeviceName)), level)
      end
      if v.DeviceNickname ~= nil and type(v.DeviceNickname) ~= "string" then
        error(("%s: Devices[%d].DeviceNickname must be a string, got %s")
          :format(what, i, type(v.DeviceNickname)), level)
      end
      out[i] = {DeviceName = v.DeviceName, DeviceNickname = v.DeviceNickname}
    end
  end
  return out
end

-- The local rules (DeviceName, nickname) and duplicates (the later copies are the
-- invalid ones). Returns the valid records and the invalid entries.
local function check_locally(records)
  local valid, bad, seen = {}, {}, {}
  for i, r in ipairs(records) do
    local name = r.DeviceName
    local why = validate.device_name_problem(name)
    if why then
      why = "DeviceName " .. why
    elseif r.DeviceNickname ~= nil then
      why = validate.nickname_problem(r.DeviceNickname, true)
      why = why and "DeviceNickname " .. why
    end
    if not why and seen[name] then
      why = ("duplicate DeviceName (first at position %d)"):format(seen[name])
    end
    if why then
      bad[#bad + 1] = {DeviceName = name, ErrorMsg = why, duplicate = seen[name] ~= nil, pos = i}
    else
      seen[name] = i
      valid[#valid + 1] = r
    end
  end
  return valid, bad, seen
end

local function invalid_summary(job)
  local parts = {}
  for i, b in ipairs(job.invalid) do
    if i > 5 then
      parts[#parts + 1] = ("and %d more (see err.Invalid)"):format(#job.invalid - 5)
      break
    end
    parts[#parts + 1] = ("%s (%s)"):format(tostring(b.DeviceName), tostring(b.ErrorMsg))
  end
  return table.concat(parts, ", ")
end

local function invalid_names_error(job, what)
  local n = #job.invalid
  return job:fail({code = "InvalidDeviceName", message = ("%d device %s invalid " ..
    "(%s): %s"):format(n, n == 1 and "name is" or "names are", what, invalid_summary(job))},
    {Invalid = job.invalid})
end

--- Local checks of a named job (a new one or a resumed one): fills job.valid and
-- job.invalid. Returns the error when invalid names end the job before anything is sent.
function M.validate_names(job)
  local valid, bad, first_pos = check_locally(job.names)
  job.valid, job.first_pos, job.local_bad = valid, first_pos, {}
  for _, b in ipairs(bad) do
    job.local_bad[b.pos] = b.ErrorMsg
    if b.duplicate then
      -- The name itself is fine (its first copy goes ahead); only this copy is left out.
      job.invalid[#job.invalid + 1] = {DeviceName = b.DeviceName, ErrorMsg = b.ErrorMsg}
    else
      job:add_invalid(b.DeviceName, b.ErrorMsg)
    end
  end
  job.total = #valid
  job.valid_set = {}
  for _, r in ipairs(valid) do job.valid_set[r.DeviceName] = true end
  job:emit{phase = "validate", done = #valid, total = #job.names}
  if #bad > 0 and not job.skip_invalid then return invalid_names_error(job, "nothing was sent") end
end

-- Invalid names a BatchCheckDeviceNames business error lists in its Data (the
-- synchronous style): the detail list first, then the bare name lists; only names of the
-- chunk count, and only string messages.
local function sync_invalid(err, chunk)
  local data = err.response and err.response.Data
  if type(data) ~= "table" then return {} end
  local in_chunk, by_nick = {}, {}
  for _, r in ipairs(chunk) do
    in_chunk[r.DeviceName] = true
    if r.DeviceNickname then by_nick[r.DeviceNickname] = r.DeviceName end
  end
  local out, seen = {}, {}
  local function add(name, msg)
    if type(name) == "string" and in_chunk[name] and not seen[name] then
      seen[name] = true
      out[#out + 1] = {DeviceName = name, ErrorMsg = type(msg) == "string" and msg or err.message}
    end
  end
  local function list(t, k)
    local l = type(t) == "table" and t[k]
    return validate.list_length(l) and l or {}
  end
  for _, d in ipairs(list(data.InvalidDetailList, "InvalidDetailList")) do
    if type(d) == "table" then add(d.DeviceName, d.ErrorMsg) end
  end
  for _, n in ipairs(list(data.InvalidDeviceNameList, "InvalidDeviceName")) do
    add(n, "invalid device name")
  end
  for _, n in ipairs(list(data.RepeatedDeviceNameList, "RepeatDevieNameList")) do
    add(n, "The device name is repeated.")
  end
  for _, nick in ipairs(list(data.InvalidDeviceNicknameList, "InvalidDeviceNickname")) do
    if type(nick) == "string" then add(by_nick[nick], "The nick name is illegal.") end
  end
  return out
end

-- Names of the job not yet covered by an apply that may still register them, in order
-- (job.valid itself, not a copy, before the first apply and the first invalid name).
local function pending_names(job)
  if #job.applies == 0 and next(job.invalid_seen) == nil then return job.valid end
  local covered = {}
  for _, a in ipairs(job.applies) do
    if not a.check_failed then
      for _, n in ipairs(a.Names) do covered[n] = true end
    end
  end
  local out = {}
  for _, r in ipairs(job.valid) do
    if not covered[r.DeviceName] and not job.invalid_seen[r.DeviceName] then
      out[#out + 1] = r
    end
  end
  return out
end

-- The check of apply `a` ended CHECK_FAILED: its invalid names (only names it holds).
local function take_check_failure(job, a, data, rid)
  a.check_failed = true
  local in_apply, n = {}, 0
  for _, name in ipairs(a.Names) do in_apply[name] = true end
  for _, b in ipairs(answer.failures(data, "rejected by the name check")) do
    if in_apply[b.DeviceName] then
      job:add_invalid(b.DeviceName, b.ErrorMsg, {ApplyId = a.key, RequestId = rid})
      n = n + 1
    end
  end
  if n == 0 then
    return errors.new{code = "CheckFailed", apply_id = a.ApplyId, status = data.Status,
      message = ("apply %s failed its name check without naming an invalid name"):format(a.key)}
  end
end

-- Waits for the check of every apply whose outcome is not known yet.
local function settle_checks(job)
  for _, a in ipairs(job.applies) do
    if a.check_status == nil then
      local data, err, rid = job:wait(a, "check")
      if not data then return job:call_error(err, a) end
      a.check_status = data.Status
      job.checked = (job.checked or 0) + #a.Names
      if data.Status == "CHECK_FAILED" then
        err = take_check_failure(job, a, data, rid)
        if err then return err end
      end
      job:emit{phase = "check", apply_id = a.ApplyId, status = data.Status,
               done = job.checked, total = #job.valid}
    end
  end
end

-- Sends BatchCheckDeviceNames for one chunk; records its ApplyId. The chunk's names are
-- of job.valid (each passed the local rules once, or was drawn by `batch.drawn`; none
-- twice), so the lists sent are vouched for: the request does not check each name again.
local function check_chunk(job, chunk)
  local names, nicks = {}, false
  for i, r in ipairs(chunk) do
    names[i] = r.DeviceName
    nicks = nicks or r.DeviceNickname ~= nil
  end
  local params = {ProductKey = job.ProductKey}
  if nicks then
    params.DeviceNameList = validate.vouch(chunk)
  else
    params.DeviceName = validate.vouch(names)
  end
  local res, err = job.port:invoke("BatchCheckDeviceNames", params, job:call_opts())
  if res then
    local id, key_or_why = job:new_apply_id(res)
    if not id then
      return answer.invalid_response("BatchCheckDeviceNames answered, but " .. key_or_why,
                                     {action = "BatchCheckDeviceNames"})
    end
    local a = job:add_apply{ApplyId = id, phase = "check", Names = names}
    local ok, jerr = job:record{event = "apply", ApplyId = a.key, ProductKey = job.ProductKey,
                                phase = "check", Names = names}
    if not ok then return jerr end
    return nil
  end
  local bad = sync_invalid(err, chunk)
  if #bad == 0 then return job:call_error(err) end
  local by = {RequestId = answer.request_id(err.request_id)}
  for _, b in ipairs(bad) do job:add_invalid(b.DeviceName, b.ErrorMsg, by) end
end

-- Sends BatchCheckDeviceNames for each chunk of the pending names.
local function check_chunks(job, pending)
  local size = job.port:option("max_batch_size")
  for first = 1, #pending, size do
    if job:past_deadline() then return job_m.timeout_error() end
    local chunk = pending -- the whole of it when it is one chunk
    if #pending > size then
      chunk = {}
      for i = first, math.min(first + size - 1, #pending) do chunk[#chunk + 1] = pending[i] end
    end
    local err = check_chunk(job, chunk)
    if err then return err end
  end
end

-- Checks until every valid name is covered by an apply that passed its check (with
-- skip_invalid, the valid rest of a rejected chunk is checked again).
local function check_all(job)
  while true do
    local err = settle_checks(job) or existing.settle_checked(job)
    -- a client-named job replaces names the check found taken (batch/drawn.lua)
    if not err and job.replace_taken then err = job:replace_taken() end
    if err then return err end
    if #job.invalid > 0 and not job.skip_invalid then return nil end
    local pending = pending_names(job)
    if #pending == 0 then return nil end
    local before_applies, before_invalid = #job.applies, #job.invalid
    err = check_chunks(job, pending)
    if err then return err end
    if #job.applies == before_applies and #job.invalid == before_invalid then
      return errors.new{code = "CheckFailed",
        message = "BatchCheckDeviceNames made no progress on the remaining names"}
    end
  end
end

-- How many times one apply's registration is settled and sent again at most: each new
-- send follows a status that proved the last one did nothing.
local MAX_REGISTER_SENDS = 5

-- Refusals that say the apply may have moved on (wire.md §4 BatchRegisterDeviceWithApplyId):
-- after a send of ours whose answer was lost they are settled, not taken as failures.
local MOVED_ON = {["iot.device.CreateDeviceTaskIsRunning"] = true,
                  ["iot.device.IncorrentDeviceApplyInfo"] = true}

-- Settles apply `a` after a registration whose outcome is unknown (its answer lost, or a
-- journaled `register` with no answer): QueryBatchRegisterDeviceStatus says whether it
-- acted. Returns "send" (still CHECK_SUCCESS: it did nothing), "done" (moved on) or nil, err.
local function settle_register(job, a)
  local data, err = job:wait(a, "check")
  if not data then return nil, job:call_error(err, a) end
  if data.Status == "CHECK_SUCCESS" then return "send" end
  if data.Status == "CHECK_FAILED" then
    return nil, answer.invalid_response(("apply %s passed its check, then reported " ..
      "CHECK_FAILED"):format(a.key), {apply_id = a.ApplyId})
  end
  return "done"
end

-- Registers apply `a` (BatchRegisterDeviceWithApplyId, never re-sent blindly): each send
-- is journaled first; a lost answer, or a refusal after a send of ours, is settled with
-- the apply's status before anything is sent again. Returns nil once the apply is
-- registering, or the error.
local function register_one(job, a)
  for _ = 1, MAX_REGISTER_SENDS do
    if a.registered then
      local next_step, serr = settle_register(job, a)
      if not next_step then return serr end
      if next_step == "done" then return nil end
    end
    if job:past_deadline() then return job_m.timeout_error() end
    local ok, jerr = job:record{event = "register", ApplyId = a.key}
    if not ok then return jerr end
    a.registered = true
    local _, err = job.port:invoke("BatchRegisterDeviceWithApplyId",
      {ProductKey = job.ProductKey, ApplyId = a.ApplyId}, job:call_opts())
    if not err then return nil end
    if not (err.ambiguous or MOVED_ON[err.code]) then return job:call_error(err, a) end
  end
  return errors.new{code = "InvalidResponse", apply_id = a.ApplyId, message = ("apply %s " ..
    "stayed CHECK_SUCCESS after %d registrations"):format(a.key, MAX_REGISTER_SENDS)}
end

-- Registers every apply that passed its check and is not registering yet.
local function register_checked(job)
  for _, a in ipairs(job.applies) do
    if a.check_status == "CHECK_SUCCESS" then
      if job:past_deadline() then return job_m.timeout_error() end
      local err = register_one(job, a)
      if err then
        -- a registration refused for names that exist (existing = "skip" | "adopt")
        err = existing.refused(job, a, err)
        if err then return job:call_error(err, a) end
        job.check_again = true
      else
        a.check_status = "CREATE"
        job.submitted = (job.submitted or 0) + #a.Names
        job:emit{phase = "register", apply_id = a.ApplyId, done = job.submitted, total = job.total}
      end
    end
  end
end

--- Checks every valid name with the service (BatchCheckDeviceNames and its status),
-- registering nothing: the job's checks, as a job that registers them would make them.
-- @treturn ?table err
M.check_all = check_all

--- Runs (or continues) a named job to its result.
-- @treturn ?table result
-- @treturn ?table err
function M.run(job)
  local err = check_all(job)
  if err then return job:conclude(err) end
  if #job.invalid > 0 and not job.skip_invalid then
    -- Nothing was registered: every check ends before any registration starts.
    return nil, invalid_names_error(job, "nothing was registered")
  end
  err = register_checked(job)
  if err then return job:conclude(err) end
  if job.check_again then
    -- a registration refused for a name taken since its check: the rest is checked again
    job.check_again = nil
    return M.run(job)
  end
  return job:conclude(job:finish_all() or existing.settle_created(job))
end

return M
