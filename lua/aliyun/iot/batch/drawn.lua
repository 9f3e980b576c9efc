--- Client-drawn names: a random-named job that cannot end ambiguous. The client draws
-- Count names (`core.random_name`: OpenSSL's RAND, 20 characters of [A-Za-z0-9], each
-- equally likely, like the service's own random names), journals them before the first
-- request that uses them, and registers them as a named job does (`batch.named`:
-- BatchCheckDeviceNames -> wait -> BatchRegisterDeviceWithApplyId -> wait -> pages). A
-- lost answer is never a mystery here: every name is known, and every ApplyId that could
-- create a device is journaled before its registration is sent.
--
-- A name the check reports as taken is first looked for among the job's own applies and
-- devices (a device of ours is no conflict); only a name that is not ours is replaced by
-- a fresh one, journaled (`names` with `Replaces`) before it is checked.
-- @module aliyun.iot.batch.drawn

local core = require "aliyun.iot.core"
local errors = require "aliyun.iot.errors"
local named = require "aliyun.iot.batch.named"

local M = {}

--- The length of a drawn name (the service's random names have 20 characters).
M.NAME_LENGTH = 20

--- The most names one job replaces beyond its Count's tenth (at least 100): past it the
-- service is reporting free names as taken, and drawing more would never end.
M.MIN_REPLACEMENTS = 100

-- The most retries of an idempotent call of a client-named job: `retry_deadline` bounds
-- them, so a run of 503s, throttling or resets does not end the job.
local MAX_RETRIES = 100

-- Draws `n` names no earlier draw of the job produced.
local function draw(job, n)
  local out = {}
  while #out < n do
    local name = core.random_name(M.NAME_LENGTH)
    if not job.drawn[name] then
      job.drawn[name] = true
      out[#out + 1] = name
    end
  end
  return out
end

-- Journals `list` (in events of at most max_batch_size names, one durable write) and
-- adds the names to the job's names; `replaces` goes with the first event.
local function add_names(job, list, replaces)
  local size, events = job.port:option("max_batch_size"), {}
  for first = 1, #list, size do
    local chunk = {}
    for i = first, math.min(first + size - 1, #list) do chunk[#chunk + 1] = list[i] end
    events[#events + 1] = {event = "names", Names = chunk, Replaces = first == 1 and replaces or nil}
  end
  if job.journal then
    local ok, err = job.journal:append_list(events)
    if not ok then return err end
  end
  for _, name in ipairs(list) do
    job.names[#job.names + 1] = {DeviceName = name}
    if job.valid then
      job.valid[#job.valid + 1] = {DeviceName = name}
      job.valid_set[name] = true
      job.total = job.total + 1
    end
  end
end

-- The names the job has made its own: those of applies that may have registered (a
-- registration journaled, or an apply past its check) and of devices fetched. An apply
-- that ended CHECK_FAILED creates nothing, even if a registration was sent for it (a
-- check that first said CHECK_SUCCESS): its names are not the job's through it.
local function own_names(job)
  local own = {}
  for name in pairs(job.have) do own[name] = true end
  for _, a in ipairs(job.applies) do
    local st = a.check_status
    if a.Names and not a.check_failed and (a.registered or (st and st:find("^CREATE"))) then
      for _, n in ipairs(a.Names) do own[n] = true end
    end
  end
  return own
end

--- A resumed job's replaced names (the journal's `Replaces`) are in no apply that passed
-- its check: the job replaces only names of applies that ended CHECK_FAILED, which the
-- journal does not record, so it is held to it once the checks are settled. A journal
-- changed otherwise would have the job create a replaced name and its replacement.
-- @treturn ?table err `JournalError`
function M.check_replaced(job)
  for _, a in ipairs(job.applies) do
    if a.check_status and not a.check_failed then
      for _, n in ipairs(a.Names or {}) do
        if job.dropped and job.dropped[n] then
          return errors.new{code = "JournalError", message = ("the journal replaced the " ..
            "name %s, but apply %s, which holds it, passed its check: the journal was " ..
            "changed or damaged"):format(n, a.key)}
        end
      end
    end
  end
end

--- The named path's hook after each round of checks: the names the check rejected leave
-- `job.invalid`; ours stay the job's, the others are replaced by fresh names, journaled.
-- @treturn ?table err (the journal's, or `InvalidResponse` past the replacements' bound)
function M.replace_taken(job)
  local err = M.check_replaced(job)
  if err then return err end
  if #job.invalid == 0 then return nil end
  local own, replaces = own_names(job), {}
  for _, b in ipairs(job.invalid) do
    if own[b.DeviceName] then
      job.valid_set[b.DeviceName] = true
      job.total = job.total + 1
    else
      replaces[#replaces + 1] = b.DeviceName
    end
  end
  job.invalid = {}
  job.replaced = (job.replaced or 0) + #replaces
  if job.replaced > math.max(M.MIN_REPLACEMENTS, math.floor(job.Count / 10)) then
    return errors.new{code = "InvalidResponse", message = ("the name check rejected %d " ..
      "freshly drawn names (last: %s): names this random cannot be taken"):format(
      job.replaced, errors.printable(tostring(replaces[#replaces])))}
  end
  if #replaces > 0 then return add_names(job, draw(job, #replaces), replaces) end
end

--- Makes a new job's names (journaled before anything is sent) and its named state.
-- @treturn ?table err the journal's error
function M.start(job)
  job.drawn, job.names = {}, {}
  local err = add_names(job, draw(job, job.Count))
  if err then return err end
  M.prepare(job)
end

--- Rebuilds a resumed job's names from its journal's `names` events (the `Replaces`
-- names dropped) and its named state.
-- @tparam table job
-- @tparam table records the journal's events
function M.rebuild(job, records)
  job.drawn, job.names = {}, {}
  local dropped = {}
  for i = 2, #records do
    local r = records[i]
    if r.event == "names" then
      for _, n in ipairs(r.Names) do
        job.drawn[n] = true
        job.names[#job.names + 1] = {DeviceName = n}
      end
      for _, n in ipairs(r.Replaces or {}) do dropped[n] = true end
    end
  end
  local live = {}
  for _, r in ipairs(job.names) do
    if not dropped[r.DeviceName] then live[#live + 1] = r end
  end
  job.names, job.dropped = live, dropped
  M.prepare(job)
  for n in pairs(dropped) do job.invalid_seen[n] = true end
end

--- The named state of a client-named job: every name valid, taken ones replaced.
function M.prepare(job)
  job.skip_invalid, job.replace_taken, job.max_retries = true, M.replace_taken, MAX_RETRIES
  named.validate_names(job)
  job.invalid = {}
end

--- Runs (or continues) a client-named job to its result: names drawn up to Count if a
-- journal holds fewer (a replacement cut short), then the named path.
-- @treturn ?table result `{ApplyIds=, Devices=}`
-- @treturn ?table err
function M.run(job)
  if #job.valid < job.Count then
    local err = add_names(job, draw(job, job.Count - #job.valid))
    if err then return job:conclude(err) end
  end
  return named.run(job)
end

return M
