--- A named job's result per requested device (`Report`): one record for each entry of
-- `Devices`, in order, `{DeviceName=, outcome=, ApplyId=, code=, message=, RequestId=}`.
--
-- Outcomes: `created` (an apply of this job created it: its ApplyId and the RequestId of
-- the page that listed it), `existing` (the service had it already, confirmed by
-- BatchQueryDeviceDetail: its RequestId), `invalid` (refused by the local rules, as a
-- duplicate, or by the service's check and not found existing), `failed` (certainly not
-- created: its apply ended CREATE_FAILED, or the job stopped before the name's
-- registration could start), `unknown` (the job stopped after the name's registration may
-- have been sent, or, under existing = "skip" or "adopt", before a name the service
-- refused was looked up: a resume settles it). No record holds a secret.
--
-- Outcomes decided while the job runs go to the job's `on_report(record, position)` at
-- once (created devices page by page, existing ones as they are confirmed); the others
-- when the job ends. Each position is reported once.
-- @module aliyun.iot.batch.outcomes

local M = {}

-- The record for position `pos` to the job's on_report, once.
local function emit(job, pos, rec)
  if not job.on_report then return end
  job.reported = job.reported or {}
  if job.reported[pos] then return end
  job.reported[pos] = true
  job.on_report(rec, pos)
end

--- Records the outcome of a name the job decided (`created` or `existing`) and reports it
-- at its first position in `Devices`. The record is the one the report holds for that
-- position: one table per name, shared by on_report and `Report`.
-- @tparam table job a named job (`first_pos` from the local checks)
-- @tparam string name
-- @tparam table rec `{outcome=, ApplyId=, RequestId=, code=, message=}`
function M.decide(job, name, rec)
  rec.DeviceName = name
  job.outcome = job.outcome or {}
  job.outcome[name] = rec
  local pos = job.first_pos and job.first_pos[name]
  if pos then emit(job, pos, rec) end
end

-- Where each name stands in the job's state, indexed once, when a name without a decided
-- outcome first needs it: the apply that passed its check holding it (its registration
-- may have been sent), the apply and entry of a creation that failed for it, its invalid
-- entry.
local function index(job)
  local ix = {checked = {}, failed = {}, invalid = {}}
  for _, a in ipairs(job.applies) do
    if not a.check_failed and a.check_status ~= nil and a.check_status ~= "CHECK" then
      for _, n in ipairs(a.Names or {}) do ix.checked[n] = ix.checked[n] or a end
    end
    for _, f in ipairs(a.create_failed or {}) do
      ix.failed[f.DeviceName] = ix.failed[f.DeviceName] or {a, f}
    end
  end
  for _, b in ipairs(job.invalid) do ix.invalid[b.DeviceName] = ix.invalid[b.DeviceName] or b end
  return ix
end

-- Under existing = "skip" or "adopt" a name the service refused is settled only once
-- BatchQueryDeviceDetail has answered for it (found: existing; not found: invalid or
-- failed). A job stopped before that cannot tell: the name is `unknown`, and a resume,
-- which looks it up, settles it.
local function unsettled(job, name, cause)
  return cause ~= nil and (job.existing == "skip" or job.existing == "adopt")
    and not (job.confirmed and job.confirmed[name])
end

local function not_looked_up(what, msg)
  return ("%s; the job stopped before it was looked up with BatchQueryDeviceDetail (%s); " ..
    "resuming the job settles it"):format(what, msg)
end

-- The outcome of a name that passed the local checks and has no decided outcome, from the
-- job's state; `cause` is the error that stopped the job, if one did.
local function derive(job, ix, name, cause)
  if job.have[name] then
    return {outcome = "created", ApplyId = job.device_apply and job.device_apply[name]}
  end
  local why = cause and cause.code or "NotRegistered"
  local msg = cause and tostring(cause.message) or "the job ended before this name was registered"
  local cf = ix.failed[name]
  if cf and unsettled(job, name, cause) then
    return {outcome = "unknown", ApplyId = cf[1].key, code = why, RequestId = cf[1].create_rid,
            message = not_looked_up("its creation failed (" .. tostring(cf[2].ErrorMsg) .. ")", msg)}
  elseif cf then
    return {outcome = "failed", ApplyId = cf[1].key, code = "CreateFailed",
            message = cf[2].ErrorMsg, RequestId = cf[1].create_rid}
  end
  local by = job.rejected and job.rejected[name]
  local bad = job.invalid_seen[name] and ix.invalid[name]
  if bad and by and unsettled(job, name, cause) then
    return {outcome = "unknown", ApplyId = by.ApplyId, RequestId = by.RequestId, code = why,
            message = not_looked_up("the service refused it (" .. tostring(bad.ErrorMsg) .. ")", msg)}
  elseif bad then
    return {outcome = "invalid", message = bad.ErrorMsg, ApplyId = by and by.ApplyId,
            RequestId = by and by.RequestId}
  end
  local a = ix.checked[name]
  if a then
    return {outcome = "unknown", ApplyId = a.key, code = why, message = "its registration may " ..
      "have been sent before the job stopped (" .. msg .. "); resuming the job settles it"}
  end
  return {outcome = "failed", code = why, message = "not registered: " .. msg}
end

-- The error that stopped the job as each record repeats it: its message cut to its first
-- MAX_CAUSE bytes (at a character's start), since a record per name repeating a message
-- that lists every invalid name would grow as names x invalid names.
local MAX_CAUSE = 200

local function brief(cause)
  if not cause then return nil end
  local msg = tostring(cause.message or "")
  if #msg > MAX_CAUSE then
    local cut = MAX_CAUSE
    while cut > 1 and msg:byte(cut + 1) and msg:byte(cut + 1) >= 0x80 and msg:byte(cut + 1) < 0xC0 do
      cut = cut - 1
    end
    msg = msg:sub(1, cut) .. "..."
  end
  return {code = cause.code, message = msg}
end

--- The job's report, every position in `Devices` order; the positions not reported yet go
-- to `on_report` now. A decided outcome's record is the one `on_report` was given.
-- @tparam table job a named job
-- @tparam[opt] table cause the error that stopped the job (its `code` and `message`)
-- @treturn table `{{DeviceName=, outcome=, ...}, ...}`
function M.report(job, cause)
  local out, decided, local_bad, ix = {}, job.outcome or {}, job.local_bad or {}, nil
  cause = brief(cause)
  for pos, r in ipairs(job.names or {}) do
    local name, why = r.DeviceName, local_bad[pos]
    local rec
    if why then
      rec = {DeviceName = name, outcome = "invalid", message = why}
    else
      rec = decided[name]
      if not rec then
        ix = ix or index(job)
        rec = derive(job, ix, name, cause)
        rec.DeviceName = name
      end
    end
    out[pos] = rec
    if job.on_report then emit(job, pos, rec) end
  end
  return out
end

-- in_order's general case: a stable sort by position (those without one last).
local function sorted_by_position(pos, devices)
  local out = {}
  for i, d in ipairs(devices) do out[i] = {d, pos[d.DeviceName] or math.huge, i} end
  table.sort(out, function(x, y)
    if x[2] ~= y[2] then return x[2] < y[2] end
    return x[3] < y[3]
  end)
  for i, t in ipairs(out) do out[i] = t[1] end
  return out
end

-- True when every device has a position and they rise strictly: the list is in order
-- already (the service lists an apply's devices in the order they were asked).
local function rising(pos, devices)
  local last = -math.huge
  for i = 1, #devices do
    local p = pos[devices[i].DeviceName]
    if p == nil or not (p > last) then return false end
    last = p
  end
  return true
end

--- A named job's devices in the order their names were asked for (a stable sort: what
-- the service listed is one run's order, the names are the caller's).
-- @tparam table job
-- @tparam table devices records with `DeviceName`
-- @treturn table a new list, or `devices` itself when it is in that order already
function M.in_order(job, devices)
  local pos = job.first_pos or {}
  if rising(pos, devices) then return devices end
  -- Positions are places in `Devices` (1..n, one per name): each device goes to its slot
  -- in one pass, where a comparison sort of 10,000 records made a fifth of a job's Lua
  -- work. Devices without a position, or sharing one, keep their order.
  local at, later, rest, hi = {}, {}, {}, 0
  for _, d in ipairs(devices) do
    local p = pos[d.DeviceName]
    if p == nil then rest[#rest + 1] = d
    elseif at[p] == nil then
      at[p] = d
      if p > hi then hi = p end
    else later[#later + 1] = d end
  end
  if #later > 0 then return sorted_by_position(pos, devices) end
  local out = {}
  for p = 1, hi do
    if at[p] ~= nil then out[#out + 1] = at[p] end
  end
  -- a position that is not a whole number from 1 on was not placed: the sort places it
  if #out + #rest ~= #devices then return sorted_by_position(pos, devices) end
  for _, d in ipairs(rest) do out[#out + 1] = d end
  return out
end

return M
