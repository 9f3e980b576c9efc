--- A provisioning job: the state shared by the helpers and resume, and the steps every
-- kind of job ends with (waiting for each apply, reading its devices, the result or the
-- job's error). Resume rebuilds this state from the journal, so every decision here reads
-- the state (and the service's checked answers), never how the job got here.
-- @module aliyun.iot.batch.job

local errors = require "aliyun.iot.errors"
local answer = require "aliyun.iot.batch.answer"
local wait = require "aliyun.iot.batch.wait"
local pages = require "aliyun.iot.batch.pages"
local outcomes = require "aliyun.iot.batch.outcomes"

local M = {}

local Job = {}
Job.__index = Job

--- Makes a job. `have[DeviceName]` is the job's record of each device it fetched (one a
-- journal recorded included), or true for one it adopted without reading its pages.
-- @tparam table port `aliyun.iot.batch.port`
-- @tparam table fields `kind` ("random"|"named"), `ProductKey`, `on_progress`, `t_end`
--   (absolute clock value or nil), `apply_timeout` [s], and the kind's own fields
function M.new(port, fields)
  local job = setmetatable({
    port = port, applies = {}, by_id = {}, devices = {}, have = {}, invalid = {},
    invalid_seen = {}, seq = 0, apply_timeout = wait.APPLY_TIMEOUT,
  }, Job)
  for k, v in pairs(fields) do job[k] = v end
  return job
end

--- The ApplyTimeout error of a job whose deadline passed.
function M.timeout_error(message)
  return errors.new{code = "ApplyTimeout", message = message or "the job's deadline passed"}
end

function Job:emit(event)
  if self.on_progress then self.on_progress(event) end
end

function Job:record(...)
  if not self.journal then return true end
  return self.journal:append(...)
end

function Job:add_apply(a)
  a.key = answer.id_key(a.ApplyId)
  a.got = a.got or 0
  self.applies[#self.applies + 1] = a
  self.by_id[a.key] = a
  return a
end

--- The ApplyId of an answer that makes an apply (BatchRegisterDevice,
-- BatchCheckDeviceNames), as `answer.apply_id` checks it; one the job holds already is
-- refused too: such an answer names no new apply, and the apply the service made (if
-- any) is unknown. Taking it would register or read one apply twice.
-- @treturn ?(number|string) id
-- @treturn string its key, or why the answer holds no usable ApplyId
function Job:new_apply_id(res)
  local id, key_or_why = answer.apply_id(res)
  if id and self.by_id[key_or_why] then
    return nil, ("its ApplyId %s is that of an earlier apply of the job"):format(key_or_why)
  end
  return id, key_or_why
end

function Job:apply_ids()
  local ids = {}
  for i, a in ipairs(self.applies) do ids[i] = a.ApplyId end
  return ids
end

--- Marks a name invalid (once). `by` (`{ApplyId=, RequestId=}`) says the service refused
-- it: such names are the ones `batch.existing` may find existing.
function Job:add_invalid(name, message, by)
  if self.invalid_seen[name] then return end
  self.invalid_seen[name] = true

  if self.valid_set and self.valid_set[name] then
    -- the service rejected a name that passed the local rule: one device fewer to expect
    self.valid_set[name] = nil
    self.total = self.total - 1
  end
  local entry = {DeviceName = name, ErrorMsg = message}
  self.invalid[#self.invalid + 1] = entry
  if by then
    self.rejected = self.rejected or {}
    self.rejected[name] = {ApplyId = by.ApplyId, RequestId = by.RequestId, entry = entry}
  end
end

--- Options for the port's calls: the job's deadline, and its `max_retries` when it sets
-- one (a client-named job: `retry_deadline` bounds its idempotent calls' retries).
function Job:call_opts(extra)
  local o = {deadline = self.t_end, max_retries = self.max_retries}
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

function Job:past_deadline()
  return self.t_end ~= nil and self.port:clock() >= self.t_end
end

--- A call's error as the job reports it: a call cut by the job's deadline (refused
-- before it started, or timed out once its timeout had been cut to the time left) ends
-- the job as ApplyTimeout, the cause kept in the message; `apply_id` set when given.
function Job:call_error(err, a)
  if err.code == "DeadlineExceeded" then
    err = M.timeout_error()
  elseif err.code ~= "ApplyTimeout" and self:past_deadline() then
    err = M.timeout_error(("the job's deadline passed (last call: %s)"):format(tostring(err)))
  end
  if a then err.apply_id = a.ApplyId end
  return err
end

--- Waits for apply `a`'s phase to end (bounded by the deadline and apply_timeout).
function Job:wait(a, phase, on_status)
  return wait.poll(self.port, {ProductKey = self.ProductKey, id = a.ApplyId, phase = phase,
    t_end = self.t_end, apply_timeout = self.apply_timeout, on_status = on_status,
    max_retries = self.max_retries})
end

-- An InvalidResponse about apply `a`.
local function bad_apply(a, fmt, ...)
  return answer.invalid_response(("apply %s: " .. fmt):format(a.key, ...), {apply_id = a.ApplyId})
end

-- The set of names apply `a` asked for (nil for a random-named apply), made once per
-- apply: its pages come in rounds, each taken on its own.
local function asked_set(a)
  if not a.Names then return nil end
  if a.asked_set_of ~= a.Names then
    local set = {}
    for _, n in ipairs(a.Names) do set[n] = true end
    a.asked_set, a.asked_set_of = set, a.Names
  end
  return a.asked_set
end

--- Takes checked pages' devices of apply `a`: records not seen before are journaled (one
-- durable write) and kept; a device the apply did not ask for, or one listed again with
-- another DeviceSecret or IotId, ends the job.
-- @treturn ?boolean true
-- @treturn ?table err `InvalidResponse` or the journal's error
function Job:take(a, list)
  local asked, have, pk, key = asked_set(a), self.have, self.ProductKey, a.key
  local named, new, events = self.kind == "named", {}, self.journal and {}
  for _, page in ipairs(list) do
    local rid = page.RequestId
    for _, d in ipairs(page.devices) do
      local name = d.DeviceName
      if asked and not asked[name] then
        return nil, bad_apply(a, "the service listed device %s, which it was not asked for", name)
      end
      local known = have[name]
      if not known then
        local rec = {ProductKey = pk, DeviceName = name, DeviceSecret = d.DeviceSecret,
                     IotId = d.IotId}
        have[name] = rec
        new[#new + 1] = rec
        if named then
          outcomes.decide(self, name, {outcome = "created", ApplyId = key, RequestId = rid})
        end
        if events then -- only a journaled job writes them
          events[#events + 1] = {event = "device", ApplyId = key, ProductKey = pk,
            DeviceName = name, DeviceSecret = rec.DeviceSecret, IotId = rec.IotId}
        end
      elseif known ~= true and (known.DeviceSecret ~= d.DeviceSecret or known.IotId ~= d.IotId) then
        -- which record is the device's would be a guess: a wrong secret is a lost one
        return nil, bad_apply(a, "the service listed device %s again, with another " ..
                              "DeviceSecret or IotId", name)
      end
    end
  end
  if events then
    local ok, err = self.journal:append_list(events)
    if not ok then return nil, err end
  end
  local devices = self.devices
  for i = 1, #new do devices[#devices + 1] = new[i] end
  a.got = a.got + #new
  self:emit{phase = "fetch", apply_id = a.ApplyId, done = #devices, total = self.total}
  return true
end

-- What apply `a` asked for: its Count, or its names; an apply of unknown size (a journal
-- without them) is bounded by the most one apply holds.
local function asked_of(a)
  if a.Names then return #a.Names end
  return tonumber(a.Count) or answer.MAX_APPLY
end

--- Reads apply `a`'s devices after its creation ended in `status`, bounded by what it
-- asked for; a finished apply must hold what was asked (all of it for CREATE_SUCCESS).
-- @treturn ?table err (nil on success)
function Job:fetch_apply(a, status)
  local port, size = self.port, pages.SIZE
  -- the names the apply asked for were checked by the job: a page's are not checked again
  local known = asked_set(a)
  local first, err = pages.fetch(port, a.ApplyId, 1, size, nil, self:call_opts(), known)
  if not first then return self:call_error(err, a) end
  local total, asked = first.Total, asked_of(a)
  if total > asked or (status == "CREATE_SUCCESS" and total ~= asked) then
    return bad_apply(a, "%s with %d devices, %d asked", status, total, asked)
  end
  self.created = (self.created or 0) + total
  self:emit{phase = "create", apply_id = a.ApplyId, status = status, done = self.created,
            total = self.total}
  local ok, jerr = self:take(a, {first})
  if not ok then return jerr end
  local n = pages.count(total, size)
  if n > 1 then
    local got, perr = pages.fetch_many(port, a.ApplyId, 2, n, size, total, self:call_opts(),
                                       known)
    ok, jerr = self:take(a, got)
    if not ok then return jerr end
    if perr then return self:call_error(perr, a) end
  end
  -- a.got counts this apply's devices, those a resumed journal held included.
  if a.got ~= total then
    return bad_apply(a, "reported %d devices but its pages held %d different ones", total, a.got)
  end
  return nil
end

--- Waits for the creation of apply `a` to end and reads its devices. Returns nil on
-- success or a CREATE_FAILED apply (its failed names kept in a.create_failed), or an error.
function Job:finish_apply(a)
  if a.fetched then return nil end
  local data, err, rid = self:wait(a, "create", function(status)
    self:emit{phase = "create", apply_id = a.ApplyId, status = status, done = self.created,
              total = self.total}
  end)
  if not data then return self:call_error(err, a) end
  a.create_rid = rid
  if data.Status == "CHECK_FAILED" then
    return errors.new{code = "CheckFailed", apply_id = a.ApplyId, status = data.Status,
      message = ("apply %s failed its name check and cannot create devices"):format(a.key)}
  end
  if data.Status == "CREATE_FAILED" then
    a.create_failed = answer.failures(data, "creation failed")
  end
  err = self:fetch_apply(a, data.Status)
  if err then return err end
  a.fetched = true
  -- The end state goes with it: a resumed job must end as this one would (CreateFailed).
  local ok, jerr = self:record{event = "fetched", ApplyId = a.key, Total = a.got,
                               Status = data.Status, Failed = a.create_failed}
  if not ok then return jerr end
  return nil
end

--- Finishes every known apply in order; a CREATE_FAILED one does not stop the others.
-- Returns the first error that stopped it, or nil.
function Job:finish_all()
  for _, a in ipairs(self.applies) do
    if not a.check_failed and not a.fetched then
      if self:past_deadline() then return M.timeout_error() end
      local err = self:finish_apply(a)
      if err then return err end
    end
  end
end

local function note_of(job)
  local keys = {}
  for i, a in ipairs(job.applies) do keys[i] = a.key end
  if #keys == 0 then return nil end
  local how = job.journal and ("the journal %s records them; client:resume{journal = ...} " ..
    "finishes the job"):format(job.journal.path)
    or "client:apply_devices{ProductKey = ..., ApplyId = ...} reads each apply's devices"
  if job.uncertain and job.journal then
    -- a plain resume would end the same way: the two ways out instead
    how = ("the journal %s records them"):format(job.journal.path)
  end
  return ("ApplyIds created: %s; %d devices fetched; %s"):format(table.concat(keys, ", "),
    #job.devices, how)
end

--- The job-level error: the cause's fields, plus what the job created and fetched under
-- the result's names (`ApplyIds`, `Devices`, `Invalid`; snake_case aliases `apply_ids`,
-- `devices`, `invalid`), and a message that says which ApplyIds exist and how to finish.
-- @tparam table cause an error
-- @tparam[opt] table fields more fields (`ambiguous`, `Invalid`)
function Job:fail(cause, fields)
  local e = {}
  for _, k in ipairs{"code", "message", "request_id", "http_status", "host_id", "recommend",
                     "response", "action", "parameter", "apply_id", "status", "errno"} do
    e[k] = cause[k]
  end
  for k, v in pairs(fields or {}) do e[k] = v end
  e.ApplyIds, e.Devices = self:apply_ids(), self.devices
  e.ambiguous = e.ambiguous or false
  if e.Invalid == nil and #self.invalid > 0 then e.Invalid = self.invalid end
  e.apply_ids, e.devices, e.invalid = e.ApplyIds, e.Devices, e.Invalid
  if self.kind == "named" then e.Report = outcomes.report(self, cause) end
  local note = note_of(self)
  if note then e.message = tostring(e.message) .. " [" .. note .. "]" end
  return errors.new(e)
end

--- The result, or the error when some apply failed to create or a submission was
-- uncertain, or `cause` (an error that stopped the job).
function Job:conclude(cause)
  if self.uncertain then
    local ways = self.journal and (" (a plain resume ends the same way). Two ways out: " ..
      "find the apply (QueryDevice or the console list its devices) and resume with " ..
      "client:resume{journal = ..., adopt_apply_ids = {ApplyId}}, which checks that it is " ..
      "a BatchRegisterDevice apply of this product before taking it in; or resume with " ..
      "client:resume{journal = ..., accept_ambiguous = true}, which finishes the rest of " ..
      "the job without it and reports the devices that may exist unseen") or ""
    return nil, self:fail({code = "Ambiguous", message = self.uncertain.message .. ways,
                           action = "BatchRegisterDevice"}, {ambiguous = true})
  end
  if cause then return nil, self:fail(cause) end
  local failed_names, failed_ids = {}, {}
  for _, a in ipairs(self.applies) do
    if a.create_failed then
      failed_ids[#failed_ids + 1] = a.key
      for _, f in ipairs(a.create_failed) do failed_names[#failed_names + 1] = f end
    end
  end
  if #failed_ids > 0 then
    return nil, self:fail({code = "CreateFailed", status = "CREATE_FAILED",
      message = ("apply %s ended CREATE_FAILED: %d devices were not created")
        :format(table.concat(failed_ids, ", "), #failed_names)}, {Invalid = failed_names})
  end
  -- A named job's invalid names go with `done`: the service's verdicts are in no other line.
  local ok, err = self:record{event = "done", Devices = #self.devices,
                              Invalid = self.kind == "named" and self.invalid or nil}
  if not ok then return nil, self:fail(err) end
  return self:result()
end

--- The job's result table.
function Job:result()
  local res = {ApplyIds = self:apply_ids(), Devices = self.devices}
  if self.accepted and #self.accepted > 0 then res.Unsettled = self.accepted end
  if self.kind == "named" then
    -- in the order asked: a names file run twice gives the same output
    res.Devices = outcomes.in_order(self, self.devices)
    res.Invalid = self.invalid
    res.Existing = self.existing_names or {}
    res.Report = outcomes.report(self)
  end
  return res
end

return M
