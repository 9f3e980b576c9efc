--- Rebuilding a job from its journal's events (`aliyun.iot.journal`), so that resume
-- continues it without creating anything twice.
-- @module aliyun.iot.batch.resume

local errors = require "aliyun.iot.errors"
local answer = require "aliyun.iot.batch.answer"
local named = require "aliyun.iot.batch.named"
local existing = require "aliyun.iot.batch.existing"
local drawn = require "aliyun.iot.batch.drawn"

local M = {}

-- The journal's reader (`aliyun.iot.journal`) has checked every field of every event
-- against the one set of limits; what is left here needs the job's state: every event's
-- ProductKey is the job's, device lines belong to an apply the journal recorded and stay
-- within what it asked, each apply's devices add up to its `fetched` Total (and all of
-- them to `done`'s Devices), and a random job's applies ask for at most its Count (for
-- exactly it once `done`, unless an apply ended CREATE_FAILED). Each apply is recorded
-- once and is of the job's kind (create applies in a BatchRegisterDevice job, check
-- applies in the others), a check apply's devices are names it asked for, a device has
-- one DeviceSecret and IotId, and a client-named job's names are drawn as the job draws
-- them (check_drawn). A journal that contradicts itself is refused rather than resumed.

local function journal_error(job, line, fmt, ...)
  local path = job.journal and job.journal.path or "journal"
  return errors.new{code = "JournalError", message = ("%s:%d: " .. fmt .. "; the journal " ..
    "was changed or damaged and the job cannot be resumed from it"):format(path, line, ...)}
end

local IN_FLIGHT = "BatchRegisterDevice (Count = %s) was in flight when the journaled " ..
  "process ended: the service may have created an apply whose ApplyId never arrived. It " ..
  "is not sent again, so that no devices are created twice; look for devices beyond the " ..
  "listed ApplyIds with QueryDevice or in the console"

-- The events only a BatchRegisterDevice job writes; the phase of the applies each kind
-- of job makes. An apply of the other phase, or a submission in a named job, is
-- another job's: taken in, its devices would end this job "complete".
local RANDOM_ONLY = {submit = true, failed = true, uncertain = true, accepted = true}
local PHASE_OF = {random = "create", named = "check", client = "check"}

local function foreign(job, r)
  if RANDOM_ONLY[r.event] and job.kind ~= "random" then
    return ("%s event: a %s job sends no BatchRegisterDevice"):format(r.event, job.kind)
  elseif r.event == "apply" and r.phase ~= PHASE_OF[job.kind] then
    return ("apply event: a %s apply in a %s job, whose applies are %s applies"):format(
      r.phase, job.kind, PHASE_OF[job.kind])
  end
end

-- What is wrong with device line `r` of apply `a`: a name its check apply did not ask
-- for, or a name recorded before with another DeviceSecret or IotId (which one is the
-- device's would be a guess).
local function device_problem(job, a, r)
  if a.Names then
    if not a.name_set then
      a.name_set = {}
      for _, n in ipairs(a.Names) do a.name_set[n] = true end
    end
    if not a.name_set[r.DeviceName] then
      return ("device %s: its apply %s did not ask for it"):format(r.DeviceName, a.key)
    end
  end
  local seen = job.have[r.DeviceName]
  if seen and seen ~= true and (seen.DeviceSecret ~= r.DeviceSecret or seen.IotId ~= r.IotId) then
    return ("device %s is recorded twice, with different secrets or IotIds"):format(
      r.DeviceName)
  end
end

-- Applies event `r` (on line `i`) to the job; `st` holds the submissions in flight, the
-- last `done` and each apply's `fetched` line. Returns an error for a device line of an
-- apply the journal never recorded.
local function replay(job, r, i, st)
  if r.ProductKey ~= nil and r.ProductKey ~= job.ProductKey then
    return journal_error(job, i, "%s event: ProductKey %s is not the job's %s", r.event,
      r.ProductKey, job.ProductKey)
  end
  local why = foreign(job, r)
  if why then return journal_error(job, i, "%s", why) end
  if r.event == "submit" then
    st.in_flight[r.seq] = r
    job.seq = math.max(job.seq, tonumber(r.seq) or 0)
  elseif r.event == "apply" then
    if job.by_id[r.ApplyId] then
      return journal_error(job, i, "apply %s is recorded twice", r.ApplyId)
    end
    st.in_flight[r.seq or -1] = nil
    st.unsettled[r.seq or -1] = nil -- an uncertain submission's apply, adopted
    if job.kind == "random" and r.Count then
      st.asked = st.asked + r.Count
      if st.asked > job.Count then
        return journal_error(job, i, "the applies ask for %d devices, more than the job's " ..
          "Count %d", st.asked, job.Count)
      end
    end
    job:add_apply{ApplyId = answer.id_value(r.ApplyId), phase = r.phase, Count = r.Count,
                  Names = r.Names}
  elseif r.event == "register" then
    local a = job.by_id[r.ApplyId]
    if not a or a.phase ~= "check" then
      return journal_error(job, i, "register event: apply %s is not a check apply the " ..
        "journal recorded", r.ApplyId)
    end
    a.registered = true
  elseif r.event == "failed" then
    st.in_flight[r.seq] = nil
  elseif r.event == "uncertain" then
    st.in_flight[r.seq] = nil
    st.unsettled[r.seq] = {seq = r.seq, Count = r.Count, message = r.message}
  elseif r.event == "accepted" then
    st.unsettled[r.seq] = nil
    st.accepted = st.accepted + (r.Count or 0)
    job.accepted[#job.accepted + 1] = {seq = r.seq, Count = r.Count, message = r.message}
  elseif r.event == "device" then
    local a = job.by_id[r.ApplyId]
    if not a then
      return journal_error(job, i, "device %s belongs to apply %s, which the journal never " ..
        "recorded", r.DeviceName, r.ApplyId)
    end
    local why_not = device_problem(job, a, r)
    if why_not then return journal_error(job, i, "%s", why_not) end
    if not job.have[r.DeviceName] then
      local rec = {ProductKey = r.ProductKey, DeviceName = r.DeviceName,
                   DeviceSecret = r.DeviceSecret, IotId = r.IotId}
      job.have[r.DeviceName] = rec
      job.devices[#job.devices + 1] = rec
      a.got = a.got + 1
      a.last_line = i
    end
    job.device_apply = job.device_apply or {}
    job.device_apply[r.DeviceName] = r.ApplyId
  elseif r.event == "existing" then
    if job.kind ~= "named" or job.existing == "fail" then
      return journal_error(job, i, "an existing event in a job that does not look for " ..
        "existing devices")
    end
    existing.note(job, r)
  elseif r.event == "fetched" then
    local a = job.by_id[r.ApplyId]
    if a and a.Count and (r.Total > a.Count or (r.Status == "CREATE_SUCCESS" and r.Total ~= a.Count)) then
      return journal_error(job, i, "apply %s: fetched %s with %d devices, %d asked", a.key,
        r.Status, r.Total, a.Count)
    end
    if a then
      a.fetched, a.check_status = true, r.Status or "CREATE_SUCCESS"
      a.fetched_total, a.fetched_line = r.Total, i
      if r.Status == "CREATE_FAILED" then a.create_failed = r.Failed or {} end
    end
  elseif r.event == "done" then
    st.done, st.done_line = r, i
    if type(r.Invalid) == "table" then job.invalid = r.Invalid end
  end
end

-- A client-named job's `names` lines as only the job writes them: an apply checks only
-- names drawn by an earlier line, a name replaced was drawn by an earlier line and is
-- not the job's own (a device of it, or a name of an apply whose devices were fetched),
-- no name is drawn twice, and the live names never number more than Count. A journal
-- edited otherwise would have a resume register more than Count devices, or drop one it
-- made. (A name of an apply registered but not fetched may have been replaced: that
-- apply ended CHECK_FAILED, which no line records; batch/drawn.lua holds the run to it.)
local function check_drawn(job, records)
  local own, state, live = {}, {}, 0
  for name in pairs(job.have) do own[name] = true end
  for _, a in ipairs(job.applies) do
    if a.fetched then
      for _, n in ipairs(a.Names or {}) do own[n] = true end
    end
  end
  for i = 2, #records do
    local r = records[i]
    if r.event == "apply" then
      for _, n in ipairs(r.Names) do
        if not state[n] then
          return journal_error(job, i, "apply event: it checks %s, which no earlier line " ..
            "drew", n)
        end
      end
    elseif r.event == "names" then
      for _, n in ipairs(r.Replaces or {}) do
        if state[n] ~= "live" then
          return journal_error(job, i, "names event: it replaces %s, which no earlier line " ..
            "drew (or one replaced already)", n)
        elseif own[n] then
          return journal_error(job, i, "names event: it replaces %s, a name the job " ..
            "registered", n)
        end
        state[n], live = "replaced", live - 1
      end
      for _, n in ipairs(r.Names) do
        if state[n] then return journal_error(job, i, "names event: %s is drawn twice", n) end
        state[n], live = "live", live + 1
      end
      if live > job.Count then
        return journal_error(job, i, "names event: the job holds %d names, more than the " ..
          "job's Count %d", live, job.Count)
      end
    end
  end
end

local function any_create_failed(job)
  for _, a in ipairs(job.applies) do
    if a.create_failed then return true end
  end
  return false
end

-- Holds each fetched apply to its Total: fewer devices than it is read again (its pages
-- fetched, the missing devices journaled), more is a damaged journal. Returns whether
-- the `done` line can be trusted, or nil and the JournalError.
local function check_counts(job, st)
  local trusted = st.done ~= nil
  for _, a in ipairs(job.applies) do
    if a.fetched and a.got > a.fetched_total then
      return nil, journal_error(job, a.last_line, "apply %s holds %d devices, more than the " ..
        "Total %d its fetched line (line %d) records", a.key, a.got, a.fetched_total,
        a.fetched_line)
    elseif a.got > (a.Count or #a.Names) then
      return nil, journal_error(job, a.last_line, "apply %s holds %d devices, more than the " ..
        "%d it asked for", a.key, a.got, a.Count or #a.Names)
    elseif a.fetched and a.got < a.fetched_total then
      a.fetched, trusted = false, false
    end
  end
  local expected = job.Count and job.Count - st.accepted
  if st.done and job.kind == "random" and not any_create_failed(job)
     and (st.done.Devices ~= expected or st.asked ~= expected) then
    return nil, journal_error(job, st.done_line, "the job's done line records %d devices " ..
      "from applies asking for %d, but the job's Count is %d (%d accepted as unsettled)",
      st.done.Devices, st.asked, job.Count, st.accepted)
  end
  if st.done and #job.devices > st.done.Devices then
    return nil, journal_error(job, st.done_line, "the job's done line records %d devices, " ..
      "but the journal holds %d", st.done.Devices, #job.devices)
  elseif st.done and #job.devices < st.done.Devices then
    -- a device line lost with its apply's fetched line too: read every apply again
    for _, a in ipairs(job.applies) do a.fetched = false end
    trusted = false
  end
  return trusted
end

--- Fills a new job (made with the journal's `job` event: kind, ProductKey) from the
-- journal's records.
-- @treturn ?boolean true when the journal records a finished job
-- @treturn ?table err (`JournalError`, or the named job's InvalidDeviceName)
function M.rebuild(job, records)
  local spec = records[1]
  if spec.kind == "random" then
    job.Count, job.total = spec.Count, spec.Count
  elseif spec.kind == "client" then
    job.Count = spec.Count
    drawn.rebuild(job, records)
  else
    job.names, job.skip_invalid = spec.Devices or {}, spec.skip_invalid == true
    job.existing = spec.existing or "fail"
    local err = named.validate_names(job)
    if err then return nil, err end
  end
  local st = {in_flight = {}, unsettled = {}, asked = 0, accepted = 0}
  job.accepted = {}
  for i = 2, #records do
    local err = replay(job, records[i], i, st)
    if err then return nil, err end
  end
  if spec.kind == "client" then
    local err = check_drawn(job, records)
    if err then return nil, err end
  end
  for seq, r in pairs(st.in_flight) do
    st.unsettled[seq] = {seq = seq, Count = r.Count, message = IN_FLIGHT:format(tostring(r.Count))}
  end
  -- the submissions no apply settles, in order: the first one's words end the job
  job.unsettled = {}
  for _, u in pairs(st.unsettled) do job.unsettled[#job.unsettled + 1] = u end
  table.sort(job.unsettled, function(x, y) return x.seq < y.seq end)
  if job.unsettled[1] then job.uncertain = {message = job.unsettled[1].message} end
  return check_counts(job, st)
end

return M
