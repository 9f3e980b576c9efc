--- Batch provisioning helpers: "give me N devices (or these named devices) under this
-- product, and their secrets", in one call, never losing track of what was created.
-- Installed on the client class, so they are client methods:
--
--     local res, err = client:register_devices{ProductKey = pk, Count = 2500}
--     -- res = {ApplyIds = {...}, Devices = {{ProductKey=, DeviceName=, DeviceSecret=, IotId=}, ...}}
--
-- Each helper is a composition of the client's calls (doc pages D-69473 BatchRegisterDevice,
-- D-69482 BatchCheckDeviceNames, D-69514 BatchRegisterDeviceWithApplyId, D-69483
-- QueryBatchRegisterDeviceStatus, D-69518 QueryPageByApplyId): submit in chunks of at most
-- `client.max_batch_size`, poll each apply to its end state, then read its devices page by
-- page (PageSize 50, pages fetched concurrently through `client:call_many`, paced within
-- QueryPageByApplyId's QPS). With `journal = PATH` every step is recorded in an append-only
-- file (`aliyun.iot.journal`) and `client:resume{journal = PATH}` finishes the job.
--
-- Errors keep the client's fields (`code`, `message`, `request_id`, `http_status`, ...) and
-- add, where they apply: `apply_ids` (every ApplyId the job created), `devices` (every
-- device fetched so far), `invalid` (`{{DeviceName=, ErrorMsg=}, ...}`), `apply_id` and
-- `status` (the apply a wait gave up on), and `ambiguous = true` only when an apply may
-- exist whose ApplyId never arrived (a BatchRegisterDevice whose answer was lost).
--
-- `on_progress(event)` receives `{phase = "validate"|"check"|"register"|"create"|"fetch",
-- apply_id=, done=, total=, status=}`: validate (names that passed the local rule of all
-- names), check (names checked so far of all names sent for checking, once per finished
-- check), register (devices submitted of the job's total), create (devices whose apply
-- finished creating; also once per poll with the apply's `status` while it runs), fetch
-- (devices fetched of the job's total, once per page batch).
-- @module aliyun.iot.batch

local errors = require "aliyun.iot.errors"
local validate = require "aliyun.iot.validate"
local journal = require "aliyun.iot.journal"

local M = {}

local PAGE_SIZE = 50          -- QueryPageByApplyId's largest page (D-69518)
local POLL_FIRST = 0.5        -- [s] first pause between status polls
local POLL_FACTOR = 1.5
local POLL_CAP = 5            -- [s] longest pause between status polls
local FETCH_CONCURRENCY = 16  -- pages in flight at once; the pacer keeps them within QPS
-- The most devices one random-named job registers. 10,000,000 is already 1,000 applies at
-- the service's 10,000 per call (10,000 at the default 1,000), 200,000 page reads (over an
-- hour at QueryPageByApplyId's 50 QPS) and a result table of every record in memory
-- (gigabytes); a larger Count is far likelier a slipped digit than a fleet, and a larger
-- fleet is several jobs, each with its own journal.
local MAX_COUNT = 10000000

-- ---------------------------------------------------------------------------------------
-- Argument checks: misuse raises (not a table, unknown option, wrong type); a bad value
-- returns nil, err (InvalidParameter), as everywhere in the client.

local function check_args(args, allowed, what)
  if type(args) ~= "table" then
    error(("%s expects a table, got %s"):format(what, type(args)), 3)
  end
  for k, v in pairs(args) do
    local want = allowed[k]
    if not want then
      error(("%s: unknown option '%s'"):format(what, tostring(k)), 3)
    end
    if want ~= "any" and type(v) ~= want then
      error(("%s: option '%s' must be a %s, got %s"):format(what, k, want, type(v)), 3)
    end
  end
end

local function invalid_param(parameter, message)
  return errors.new{code = "InvalidParameter", parameter = parameter, message = message}
end

local KEY_RULE = {params = {ProductKey = {kind = "key", required = true}}}

local function check_product_key(client, pk)
  local name, why = validate.check(KEY_RULE, {ProductKey = pk}, client)
  if name then return invalid_param(name, why) end
end

local function check_deadline(deadline)
  if deadline ~= nil and not (deadline > 0) then
    return invalid_param("deadline", "deadline must be a positive number of seconds")
  end
end

-- ---------------------------------------------------------------------------------------
-- Deadlines. A job's deadline `t_end` is an absolute client:_now() value (nil: none). It
-- bounds requests in flight too: each attempt's timeouts are cut to the time left, and no
-- attempt starts once it has passed.

local function timeout_error(message)
  return errors.new{code = "ApplyTimeout", message = message or "the job's deadline passed"}
end

-- Options for client:_call_internal: the deadline's cut, then `before_send` (if given)
-- right before an attempt goes out, after the QPS wait (it returns true or nil, err).
local function call_opts(client, t_end, before_send, on_retry)
  return {on_send = function(o)
    if t_end then
      local left = t_end - client:_now()
      if left <= 0 then return nil, timeout_error() end
      o.timeout = math.min(client.timeout, left)
      o.connect_timeout = math.min(client.connect_timeout, left)
    end
    if before_send then return before_send() end
    return true
  end, on_retry = on_retry}
end

-- A call that failed once the deadline had passed (its timeout had been cut to the time
-- left, so a Timeout is the deadline's doing) ends the job as ApplyTimeout, cause kept.
local function deadline_cause(client, t_end, err)
  if t_end and err.code ~= "ApplyTimeout" and client:_now() >= t_end then
    return timeout_error(("the job's deadline passed (last call: %s)"):format(tostring(err)))
  end
  return err
end

-- ApplyIds travel as Lua integers (5.3+), numbers (5.1/LuaJIT, up to 2^53) or decimal
-- strings (beyond); the journal and the tables here key them by their decimal string.
local function id_key(id)
  return (validate.integer_string(id))
end

local function id_value(s)
  local n = tonumber(s)
  if math.tointeger then
    return math.tointeger(n) or s
  end
  if n and n < 2^53 then return n end
  return s
end

-- ---------------------------------------------------------------------------------------
-- Waiting for an apply.

-- Statuses that end each phase (D-69483). A check ends at anything past CHECK (an apply
-- found already registering, after a resume, has passed its check); a creation ends at
-- CREATE_SUCCESS / CREATE_FAILED, or at CHECK_FAILED, which never proceeds to creating.
local END_STATES = {
  check = {CHECK_SUCCESS = true, CHECK_FAILED = true, CREATE = true,
           CREATE_SUCCESS = true, CREATE_FAILED = true},
  create = {CREATE_SUCCESS = true, CREATE_FAILED = true, CHECK_FAILED = true},
}

-- Polls QueryBatchRegisterDeviceStatus until the phase ends or the clock passes t_end
-- (an absolute client:_now() value, or nil). Pauses start at POLL_FIRST and grow to
-- POLL_CAP. Returns the status call's Data, or nil, err (ApplyTimeout, or the status
-- call's error) with apply_id and the last status.
local function poll(client, pk, id, phase, t_end, on_status)
  local pause, status = POLL_FIRST, nil
  local function timed_out(cause)
    local msg = status and ("apply %s is still %s at the deadline"):format(id_key(id), status)
      or ("apply %s: the deadline passed before its status was read"):format(id_key(id) or id)
    if cause and cause.code ~= "ApplyTimeout" then msg = msg .. " (" .. tostring(cause) .. ")" end
    return errors.new{code = "ApplyTimeout", apply_id = id, status = status, message = msg}
  end
  while true do
    local res, err = client:_call_internal("QueryBatchRegisterDeviceStatus",
      {ProductKey = pk, ApplyId = id}, call_opts(client, t_end))
    if not res then
      if t_end and client:_now() >= t_end then return nil, timed_out(err) end
      err.apply_id, err.status = id, status
      return nil, err
    end
    local data = res.Data or {}
    status = data.Status
    if END_STATES[phase][status] then return data end
    if status ~= "CHECK" and status ~= "CREATE" and status ~= "CHECK_SUCCESS" then
      return nil, errors.new{code = "InvalidResponse", apply_id = id, status = status,
        message = ("apply %s: unknown status %s"):format(id_key(id), tostring(status))}
    end
    if on_status then on_status(status) end
    local now = client:_now()
    if t_end and now >= t_end then return nil, timed_out() end
    client:_sleep(t_end and math.min(pause, t_end - now) or pause)
    pause = math.min(pause * POLL_FACTOR, POLL_CAP)
  end
end

--- Waits until an apply's phase ends, polling QueryBatchRegisterDeviceStatus (D-69483)
-- with pauses from 0.5 s growing to 5 s.
-- @tparam table args `ProductKey` (string), `ApplyId` (integer or digit string),
--   `phase` ("check" or "create", default "create"), `deadline` [s from now, optional;
--   it bounds the status calls in flight too],
--   `on_progress` (optional, receives `{phase=, apply_id=, status=}` after each poll
--   that found the phase still running)
-- @treturn ?table the status call's `Data` at the phase's end state (`Status` one of
--   CHECK_SUCCESS, CHECK_FAILED (which also ends "create"), or, for "check", any state
--   past CHECK; for "create", CREATE_SUCCESS or CREATE_FAILED), with `ValidList`,
--   `InvalidList`, `InvalidDetailList` as the service sends them
-- @treturn ?table err `ApplyTimeout` (with `apply_id` and the last `status`), or the
--   status call's error (with `apply_id`)
-- @raise when args is not a table or holds an unknown or wrong-typed option
local function wait_apply(self, args)
  check_args(args, {ProductKey = "any", ApplyId = "any", phase = "string",
                    deadline = "number", on_progress = "function"}, "wait_apply")
  local phase = args.phase or "create"
  if not END_STATES[phase] then
    return nil, invalid_param("phase", 'phase must be "check" or "create"')
  end
  local bad = check_product_key(self, args.ProductKey) or check_deadline(args.deadline)
  if bad then return nil, bad end
  local t_end = args.deadline and self:_now() + args.deadline
  local on_progress = args.on_progress
  return poll(self, args.ProductKey, args.ApplyId, phase, t_end, on_progress and function(status)
    on_progress{phase = phase, apply_id = args.ApplyId, status = status}
  end)
end

-- ---------------------------------------------------------------------------------------
-- Reading an apply's devices.

local function records_of(pk, page)
  local out = {}
  local list = page.ApplyDeviceList and page.ApplyDeviceList.ApplyDeviceInfo or {}
  for i, d in ipairs(list) do
    out[i] = {ProductKey = pk, DeviceName = d.DeviceName, DeviceSecret = d.DeviceSecret,
              IotId = d.IotId}
  end
  return out
end

--- Iterates over an apply's devices, one page at a time (QueryPageByApplyId, D-69518),
-- so memory stays flat however large the apply.
--
--     for dev, err in client:apply_devices{ProductKey = pk, ApplyId = id} do
--       if not dev then error(tostring(err)) end
--       print(dev.DeviceName)
--     end
-- @tparam table args `ProductKey` (string; QueryPageByApplyId carries none, the records
--   do), `ApplyId`, `page_size` (1..50, default 50)
-- @treturn function iterator yielding device records `{ProductKey=, DeviceName=,
--   DeviceSecret=, IotId=}`; on a failure it yields `false, err` once (err with
--   `apply_id`), then ends
-- @raise when args is not a table or holds an unknown or wrong-typed option
local function apply_devices(self, args)
  check_args(args, {ProductKey = "any", ApplyId = "any", page_size = "number"}, "apply_devices")
  local pk, id, size = args.ProductKey, args.ApplyId, args.page_size or PAGE_SIZE
  local failure = check_product_key(self, pk)
  local page, pages, buf, i, finished = 0, nil, {}, 0, false
  return function()
    if finished then return nil end
    if failure then
      finished = true
      return false, failure
    end
    i = i + 1
    if i > #buf then
      if pages and page >= pages then
        finished = true
        return nil
      end
      page = page + 1
      local res, err = self:query_page_by_apply_id{ApplyId = id, PageSize = size, CurrentPage = page}
      if not res then
        finished = true
        err.apply_id = id
        return false, err
      end
      pages, buf, i = res.PageCount or 0, records_of(pk, res), 1
      if #buf == 0 then
        finished = true
        return nil
      end
    end
    return buf[i]
  end
end

-- ---------------------------------------------------------------------------------------
-- A job: the state shared by the helpers and resume. It is rebuilt from the journal by
-- resume, so every decision below reads this state (and the service's answers), never
-- how the job got here.

local Job = {}
Job.__index = Job

local function new_job(client, fields)
  local job = setmetatable({
    client = client, applies = {}, by_id = {}, devices = {}, have = {}, invalid = {},
    invalid_seen = {}, seq = 0,
  }, Job)
  for k, v in pairs(fields) do job[k] = v end
  return job
end

function Job:emit(event)
  if self.on_progress then self.on_progress(event) end
end

function Job:record(...)
  if not self.journal then return true end
  return self.journal:append(...)
end

function Job:add_apply(a)
  a.key = id_key(a.ApplyId)
  a.got = a.got or 0
  self.applies[#self.applies + 1] = a
  self.by_id[a.key] = a
  return a
end

function Job:apply_ids()
  local ids = {}
  for i, a in ipairs(self.applies) do ids[i] = a.ApplyId end
  return ids
end

function Job:add_invalid(name, message)
  if self.invalid_seen[name] then return end
  self.invalid_seen[name] = true
  if self.valid_set and self.valid_set[name] then
    -- the service rejected a name that passed the local rule: one device fewer to expect
    self.valid_set[name] = nil
    self.total = self.total - 1
  end
  self.invalid[#self.invalid + 1] = {DeviceName = name, ErrorMsg = message}
end

-- Takes fetched pages' devices of apply `a`: records not seen before are journaled (one
-- durable write) and kept. Returns true or nil, err (journal failure).
function Job:take(a, pages)
  local new, events = {}, {}
  for _, page in ipairs(pages) do
    for _, rec in ipairs(records_of(self.ProductKey, page)) do
      if rec.DeviceName and not self.have[rec.DeviceName] then
        self.have[rec.DeviceName] = true
        new[#new + 1] = rec
        events[#events + 1] = {event = "device", ApplyId = a.key, ProductKey = rec.ProductKey,
          DeviceName = rec.DeviceName, DeviceSecret = rec.DeviceSecret, IotId = rec.IotId}
      end
    end
  end
  if self.journal then
    local ok, err = self.journal:append_list(events)
    if not ok then return nil, err end
  end
  for _, rec in ipairs(new) do self.devices[#self.devices + 1] = rec end
  a.got = a.got + #new
  self:emit{phase = "fetch", apply_id = a.ApplyId, done = #self.devices, total = self.total}
  return true
end

-- The job-level error: the cause's fields, plus what the job created and fetched, and a
-- message that says plainly which ApplyIds exist and how to finish.
function Job:fail(cause, fields)
  local e = {}
  for _, k in ipairs{"code", "message", "request_id", "http_status", "host_id", "recommend",
                     "response", "action", "parameter", "apply_id", "status"} do
    e[k] = cause[k]
  end
  for k, v in pairs(fields or {}) do e[k] = v end
  e.apply_ids, e.devices = self:apply_ids(), self.devices
  e.ambiguous = e.ambiguous or false
  if e.invalid == nil and #self.invalid > 0 then e.invalid = self.invalid end
  local keys = {}
  for i, a in ipairs(self.applies) do keys[i] = a.key end
  local notes = {}
  if #keys > 0 then
    notes[1] = ("ApplyIds created: %s; %d devices fetched"):format(table.concat(keys, ", "),
      #self.devices)
    if self.journal then
      notes[2] = ("the journal %s records them; client:resume{journal = ...} finishes the job")
        :format(self.journal.path)
    else
      notes[2] = "client:apply_devices{ProductKey = ..., ApplyId = ...} reads each apply's devices"
    end
  end
  if #notes > 0 then e.message = tostring(e.message) .. " [" .. table.concat(notes, "; ") .. "]" end
  return errors.new(e)
end

function Job:past_deadline()
  return self.t_end and self.client:_now() >= self.t_end
end

-- The names a CREATE_FAILED status answer (D-69483) says were not created, as
-- `{{DeviceName=, ErrorMsg=}, ...}`: the detail list first, then the bare names.
local function failed_names_of(d)
  local out, listed = {}, {}
  local details = d.InvalidDetailList and d.InvalidDetailList.invalidDetailList or {}
  for _, det in ipairs(details) do
    out[#out + 1] = {DeviceName = det.DeviceName, ErrorMsg = det.ErrorMsg}
    listed[det.DeviceName or ""] = true
  end
  for _, name in ipairs(d.InvalidList and d.InvalidList.Name or {}) do
    if not listed[name] then
      out[#out + 1] = {DeviceName = name, ErrorMsg = "creation failed"}
    end
  end
  return out
end

-- Waits for the creation of apply `a` to end and fetches its devices. Returns nil on
-- success or a CREATE_FAILED apply (its failed names kept in a.create_failed), or an error.
function Job:finish_apply(a)
  if a.fetched then return nil end
  local client = self.client
  local data, err = poll(client, self.ProductKey, a.ApplyId, "create", self.t_end, function(status)
    self:emit{phase = "create", apply_id = a.ApplyId, status = status, done = self.created,
              total = self.total}
  end)
  if not data then return err end
  if data.Status == "CHECK_FAILED" then
    return errors.new{code = "CheckFailed", apply_id = a.ApplyId, status = data.Status,
      message = ("apply %s failed its name check and cannot create devices"):format(a.key)}
  end
  if data.Status == "CREATE_FAILED" then
    a.create_failed = failed_names_of(data)
  end
  local first
  first, err = client:_call_internal("QueryPageByApplyId",
    {ApplyId = a.ApplyId, PageSize = PAGE_SIZE, CurrentPage = 1}, call_opts(client, self.t_end))
  if not first then
    err = deadline_cause(client, self.t_end, err)
    err.apply_id = a.ApplyId
    return err
  end
  local total, pages = first.Total or 0, first.PageCount or 0
  self.created = (self.created or 0) + total
  self:emit{phase = "create", apply_id = a.ApplyId, status = data.Status, done = self.created,
            total = self.total}
  local ok, jerr = self:take(a, {first})
  if not ok then return jerr end
  if pages > 1 then
    local list = {}
    for p = 2, pages do
      list[#list + 1] = {ApplyId = a.ApplyId, PageSize = PAGE_SIZE, CurrentPage = p}
    end
    local many_opts
    if self.t_end then
      -- call_many takes only the public call options: the fan-out's requests get the time
      -- left as their timeout and no retries of their own. call_many still repeats a
      -- failed page once, so a job can end one page timeout past its deadline here.
      local left = self.t_end - client:_now()
      if left <= 0 then return timeout_error() end
      many_opts = {timeout = math.min(client.timeout, left), max_retries = 0,
                   connect_timeout = math.min(client.connect_timeout, left)}
    end
    local results, errs = client:call_many("QueryPageByApplyId", list, many_opts,
                                           FETCH_CONCURRENCY)
    local got = {}
    for i = 1, #list do got[#got + 1] = results[i] end
    ok, jerr = self:take(a, got)
    if not ok then return jerr end
    for i = 1, #list do
      if errs[i] then
        local e = deadline_cause(client, self.t_end, errs[i])
        e.apply_id = a.ApplyId
        return e
      end
    end
  end
  -- a.got counts this apply's devices, those a resumed journal held included.
  if a.got < total then
    return errors.new{code = "InvalidResponse", apply_id = a.ApplyId,
      message = ("apply %s reported %d devices but its pages held %d"):format(a.key, total, a.got)}
  end
  a.fetched = true
  -- The end state goes with it: a resumed job must end as this one would (CreateFailed).
  ok, jerr = self:record{event = "fetched", ApplyId = a.key, Total = total, Status = data.Status,
                         Failed = a.create_failed}
  if not ok then return jerr end
  return nil
end

-- Finishes every known apply in order; a CREATE_FAILED one does not stop the others.
-- Returns the first error that stopped it, or nil.
function Job:finish_all()
  for _, a in ipairs(self.applies) do
    if not a.check_failed then
      if self:past_deadline() and not a.fetched then return timeout_error() end
      local err = self:finish_apply(a)
      if err then return err end
    end
  end
end

-- The result, or the error when some apply failed to create or a submission was uncertain.
function Job:conclude(cause)
  if self.uncertain then
    return nil, self:fail({code = "Ambiguous", message = self.uncertain.message,
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
        :format(table.concat(failed_ids, ", "), #failed_names)}, {invalid = failed_names})
  end
  -- A named job's invalid names go with `done`: the service's verdicts are in no other line.
  local ok, err = self:record{event = "done", Devices = #self.devices,
                              Invalid = self.kind == "named" and self.invalid or nil}
  if not ok then return nil, self:fail(err) end
  local res = {ApplyIds = self:apply_ids(), Devices = self.devices}
  if self.kind == "named" then res.Invalid = self.invalid end
  return res
end

-- ---------------------------------------------------------------------------------------
-- Random names: BatchRegisterDevice in chunks, then wait and fetch each apply.

function Job:run_random()
  local client, cause = self.client, nil
  local covered = 0
  for _, a in ipairs(self.applies) do covered = covered + (a.Count or 0) end
  local remaining = self.Count - covered
  local submitted = covered
  while remaining > 0 and not self.uncertain do
    if self:past_deadline() then
      cause = timeout_error()
      break
    end
    local n = math.min(remaining, client.max_batch_size)
    self.seq = self.seq + 1
    -- `submit` is journaled after the QPS wait, right before the request goes out: a
    -- process killed while it waits for its slot leaves nothing uncertain behind.
    -- An attempt whose answer says it did not act (throttled, 503, no connection) is
    -- journaled `failed` before the client waits to send it again: a process killed during
    -- that wait leaves nothing uncertain behind.
    local pending = false
    local res, err = client:_call_internal("BatchRegisterDevice",
      {ProductKey = self.ProductKey, Count = n}, call_opts(client, self.t_end, function()
        local ok, jerr = self:record{event = "submit", seq = self.seq,
                                     action = "BatchRegisterDevice", Count = n}
        pending = ok == true and self.journal ~= nil
        return ok, jerr
      end, function(e)
        if not (pending and e.retryable) then return true end
        pending = false
        return self:record{event = "failed", seq = self.seq, action = "BatchRegisterDevice"}
      end))
    local id = res and res.Data and res.Data.ApplyId
    if id then
      local a = self:add_apply{ApplyId = id, phase = "create", Count = n}
      local ok, jerr = self:record{event = "apply", seq = self.seq, ApplyId = a.key,
                             ProductKey = self.ProductKey, phase = "create", Count = n}
      if not ok then
        cause = jerr
        break
      end
      remaining, submitted = remaining - n, submitted + n
      self:emit{phase = "register", apply_id = id, done = submitted, total = self.total}
    elseif not res and not err.ambiguous then
      if pending then
        self:record{event = "failed", seq = self.seq, action = "BatchRegisterDevice"}
      end
      cause = deadline_cause(client, self.t_end, err)
      break
    else
      err = err or errors.new{code = "InvalidResponse", message = "the answer held no ApplyId"}
      self.uncertain = {message = ("BatchRegisterDevice (Count = %d) got no " ..
        "usable answer after the request was sent (%s): the service may have created an " ..
        "apply whose ApplyId never arrived. It was not sent again, so that no devices are " ..
        "created twice; look for devices beyond the listed ApplyIds with QueryDevice or in " ..
        "the console"):format(n, tostring(err))}
      self:record{event = "uncertain", seq = self.seq, action = "BatchRegisterDevice", Count = n,
                  message = self.uncertain.message}
    end
  end
  -- Whatever happened, finish the applies that exist, so the error carries their devices.
  local ferr = self:finish_all()
  return self:conclude(cause or ferr)
end

-- ---------------------------------------------------------------------------------------
-- Named devices: BatchCheckDeviceNames -> wait -> BatchRegisterDeviceWithApplyId -> wait
-- -> pages.

-- Normalises the Devices argument to records {DeviceName=, DeviceNickname=}; raises on a
-- wrong-typed entry (misuse), keeps bad values for the local check.
local function normalise_names(list)
  local out = {}
  for i, v in ipairs(list) do
    if type(v) == "string" then
      out[i] = {DeviceName = v}
    elseif type(v) == "table" then
      for k in pairs(v) do
        if k ~= "DeviceName" and k ~= "DeviceNickname" then
          error(("register_named_devices: Devices[%d] has an unknown field '%s'")
            :format(i, tostring(k)), 3)
        end
      end
      out[i] = {DeviceName = v.DeviceName, DeviceNickname = v.DeviceNickname}
    else
      error(("register_named_devices: Devices[%d] must be a name or {DeviceName=, " ..
        "DeviceNickname=}, got %s"):format(i, type(v)), 3)
    end
  end
  return out
end

-- The local rule (D-69470), NUL/CR/LF in nicknames, and duplicates (the later copies are
-- the invalid ones). Returns the valid records and the invalid entries.
local function check_names_locally(records)
  local valid, bad, seen = {}, {}, {}
  for i, r in ipairs(records) do
    local name = r.DeviceName
    local why = validate.device_name_problem(name)
    if why then
      why = "DeviceName " .. why
    elseif r.DeviceNickname ~= nil and (type(r.DeviceNickname) ~= "string"
        or r.DeviceNickname:find("[%z\r\n]")) then
      why = "DeviceNickname must be a string without NUL, CR or LF"
    elseif seen[name] then
      why = ("duplicate DeviceName (first at position %d)"):format(seen[name])
    end
    if why then
      bad[#bad + 1] = {DeviceName = name, ErrorMsg = why, duplicate = seen[name] ~= nil}
    else
      seen[name] = i
      valid[#valid + 1] = r
    end
  end
  return valid, bad
end

-- Invalid names a BatchCheckDeviceNames business error lists in its Data (the
-- synchronous style): the detail list first, then the bare name lists.
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
    if name and in_chunk[name] and not seen[name] then
      seen[name] = true
      out[#out + 1] = {DeviceName = name, ErrorMsg = msg}
    end
  end
  local function list(t, k) return type(t) == "table" and type(t[k]) == "table" and t[k] or {} end
  for _, d in ipairs(list(data.InvalidDetailList, "InvalidDetailList")) do
    add(d.DeviceName, d.ErrorMsg or err.message)
  end
  for _, n in ipairs(list(data.InvalidDeviceNameList, "InvalidDeviceName")) do
    add(n, "invalid device name")
  end
  for _, n in ipairs(list(data.RepeatedDeviceNameList, "RepeatDevieNameList")) do
    add(n, "The device name is repeated.")
  end
  for _, nick in ipairs(list(data.InvalidDeviceNicknameList, "InvalidDeviceNickname")) do
    add(by_nick[nick], "The nick name is illegal.")
  end
  return out
end

-- Invalid names of a CHECK_FAILED status answer (the asynchronous style).
local function async_invalid(data, names)
  local in_apply, out, seen = {}, {}, {}
  for _, n in ipairs(names) do in_apply[n] = true end
  local function add(name, msg)
    if name and in_apply[name] and not seen[name] then
      seen[name] = true
      out[#out + 1] = {DeviceName = name, ErrorMsg = msg}
    end
  end
  local details = data.InvalidDetailList and data.InvalidDetailList.invalidDetailList or {}
  for _, d in ipairs(details) do add(d.DeviceName, d.ErrorMsg) end
  for _, n in ipairs(data.InvalidList and data.InvalidList.Name or {}) do
    add(n, "rejected by the name check")
  end
  return out
end

-- Names of the job not yet covered by an apply that may still register them, in order.
function Job:pending_names()
  local covered = {}
  for _, a in ipairs(self.applies) do
    if not a.check_failed then
      for _, n in ipairs(a.Names) do covered[n] = true end
    end
  end
  local out = {}
  for _, r in ipairs(self.valid) do
    if not covered[r.DeviceName] and not self.invalid_seen[r.DeviceName] then
      out[#out + 1] = r
    end
  end
  return out
end

-- Waits for the check of every apply whose outcome is not known yet.
function Job:settle_checks()
  for _, a in ipairs(self.applies) do
    if a.check_status == nil then
      local data, err = poll(self.client, self.ProductKey, a.ApplyId, "check", self.t_end)
      if not data then return err end
      a.check_status = data.Status
      self.checked = (self.checked or 0) + #a.Names
      if data.Status == "CHECK_FAILED" then
        a.check_failed = true
        local bad = async_invalid(data, a.Names)
        if #bad == 0 then
          return errors.new{code = "CheckFailed", apply_id = a.ApplyId, status = data.Status,
            message = ("apply %s failed its name check without naming an invalid name")
              :format(a.key)}
        end
        for _, b in ipairs(bad) do self:add_invalid(b.DeviceName, b.ErrorMsg) end
      end
      self:emit{phase = "check", apply_id = a.ApplyId, status = data.Status,
                done = self.checked, total = #self.valid}
    end
  end
end

-- Sends BatchCheckDeviceNames for each chunk of names; records each ApplyId.
function Job:check_chunks(pending)
  local client, size = self.client, self.client.max_batch_size
  for first = 1, #pending, size do
    if self:past_deadline() then return timeout_error() end
    local chunk, names, nicks = {}, {}, false
    for i = first, math.min(first + size - 1, #pending) do
      chunk[#chunk + 1] = pending[i]
      names[#names + 1] = pending[i].DeviceName
      nicks = nicks or pending[i].DeviceNickname ~= nil
    end
    local params = {ProductKey = self.ProductKey}
    if nicks then params.DeviceNameList = chunk else params.DeviceName = names end
    local res, err = client:_call_internal("BatchCheckDeviceNames", params,
                                           call_opts(client, self.t_end))
    local id = res and res.Data and res.Data.ApplyId
    if id then
      local a = self:add_apply{ApplyId = id, phase = "check", Names = names}
      local ok, jerr = self:record{event = "apply", ApplyId = a.key, ProductKey = self.ProductKey,
                                   phase = "check", Names = names}
      if not ok then return jerr end
    elseif res then
      return errors.new{code = "InvalidResponse", message = "BatchCheckDeviceNames answered no ApplyId"}
    else
      local bad = sync_invalid(err, chunk)
      if #bad == 0 then return deadline_cause(client, self.t_end, err) end
      for _, b in ipairs(bad) do self:add_invalid(b.DeviceName, b.ErrorMsg) end
    end
  end
end

function Job:run_named()
  local client = self.client
  -- Check until every valid name is covered by an apply that passed its check (with
  -- skip_invalid, the valid rest of a rejected chunk is checked again).
  while true do
    local err = self:settle_checks()
    if err then return self:conclude(err) end
    if #self.invalid > 0 and not self.skip_invalid then break end
    local pending = self:pending_names()
    if #pending == 0 then break end
    local before_applies, before_invalid = #self.applies, #self.invalid
    err = self:check_chunks(pending)
    if err then return self:conclude(err) end
    if #self.applies == before_applies and #self.invalid == before_invalid then
      return self:conclude(errors.new{code = "CheckFailed",
        message = "BatchCheckDeviceNames made no progress on the remaining names"})
    end
  end
  if #self.invalid > 0 and not self.skip_invalid then
    -- Nothing was registered: every check ends before any registration starts.
    return nil, self:fail({code = "InvalidDeviceName",
      message = ("%d device names are invalid (nothing was registered): %s"):format(
        #self.invalid, self:invalid_summary())}, {invalid = self.invalid})
  end
  for _, a in ipairs(self.applies) do
    if a.check_status == "CHECK_SUCCESS" then
      if self:past_deadline() then return self:conclude(timeout_error()) end
      local _, err = client:_call_internal("BatchRegisterDeviceWithApplyId",
        {ProductKey = self.ProductKey, ApplyId = a.ApplyId}, call_opts(client, self.t_end))
      -- A repeat that found the first copy already creating is what we want.
      if err and err.code ~= "iot.device.CreateDeviceTaskIsRunning" then
        err = deadline_cause(client, self.t_end, err)
        err.apply_id = a.ApplyId
        return self:conclude(err)
      end
      a.check_status = "CREATE"
      self.submitted = (self.submitted or 0) + #a.Names
      self:emit{phase = "register", apply_id = a.ApplyId, done = self.submitted, total = self.total}
    end
  end
  return self:conclude(self:finish_all())
end

function Job:invalid_summary()
  local parts = {}
  for i, b in ipairs(self.invalid) do
    if i > 5 then
      parts[#parts + 1] = ("and %d more (see err.invalid)"):format(#self.invalid - 5)
      break
    end
    parts[#parts + 1] = ("%s (%s)"):format(tostring(b.DeviceName), tostring(b.ErrorMsg))
  end
  return table.concat(parts, ", ")
end

-- Local checks of a named job (both for a new job and a resumed one): fills job.valid and
-- job.invalid. Returns an error when invalid names end the job before anything is sent.
function Job:validate_names()
  local valid, bad = check_names_locally(self.names)
  self.valid = valid
  for _, b in ipairs(bad) do
    if b.duplicate then
      -- The name itself is fine (its first copy goes ahead); only this copy is left out.
      self.invalid[#self.invalid + 1] = {DeviceName = b.DeviceName, ErrorMsg = b.ErrorMsg}
    else
      self:add_invalid(b.DeviceName, b.ErrorMsg)
    end
  end
  self.total = #valid
  self.valid_set = {}
  for _, r in ipairs(valid) do self.valid_set[r.DeviceName] = true end
  self:emit{phase = "validate", done = #valid, total = #self.names}
  if #bad > 0 and not self.skip_invalid then
    return self:fail({code = "InvalidDeviceName",
      message = ("%d device names are invalid (nothing was sent): %s"):format(#bad,
        self:invalid_summary())}, {invalid = self.invalid})
  end
end

-- ---------------------------------------------------------------------------------------
-- Entry points.

-- Ends a job: releases its journal's lock and passes the job's results through.
local function finish(job, ...)
  if job.journal then job.journal:close() end
  return ...
end

local function start_journal(job, path, record)
  if not path then return nil end
  local j, err = journal.create(path, record)
  if not j then
    err.code, err.parameter = "InvalidParameter", "journal"
    return err
  end
  job.journal = j
end

--- Registers Count devices with random names (BatchRegisterDevice, D-69473), split into
-- chunks of at most `client.max_batch_size`; waits for each apply and reads its devices.
-- @tparam table args `ProductKey` (string), `Count` (integer or digit string, 1 to
--   10,000,000 per job), `on_progress` (function, see module), `journal` (path of a new
--   journal file), `deadline` [s from now: the whole job, requests in flight included:
--   each request's timeouts are cut to the time left and none starts after it]
-- @treturn ?table `{ApplyIds = {...}, Devices = {{ProductKey=, DeviceName=, DeviceSecret=,
--   IotId=}, ...}}`
-- @treturn ?table err: `InvalidParameter`; `CreateFailed` (an apply ended CREATE_FAILED;
--   the created ones in `err.devices`); `ApplyTimeout` (`apply_id`, `status`); any call's
--   error; each with `apply_ids` and `devices`; `ambiguous = true` when a
--   BatchRegisterDevice's answer was lost after it was sent (never re-sent)
-- @raise when args is not a table or holds an unknown or wrong-typed option
local function register_devices(self, args)
  check_args(args, {ProductKey = "any", Count = "any", on_progress = "function",
                    journal = "string", deadline = "number"}, "register_devices")
  local bad = check_product_key(self, args.ProductKey) or check_deadline(args.deadline)
  if bad then return nil, bad end
  -- An exact integer (no "1e3", nothing beyond int64); at most 8 digits fit the cap.
  local digits = validate.integer_string(args.Count)
  local count = digits and #digits <= 8 and tonumber(digits)
  if not count or count < 1 or count > MAX_COUNT then
    return nil, invalid_param("Count", ("Count must be an integer from 1 to %d (a larger " ..
      "fleet is several jobs)"):format(MAX_COUNT))
  end
  local job = new_job(self, {kind = "random", ProductKey = args.ProductKey, Count = count,
    total = count, on_progress = args.on_progress,
    t_end = args.deadline and self:_now() + args.deadline})
  local err = start_journal(job, args.journal, {kind = "random", ProductKey = args.ProductKey,
                                                Count = count})
  if err then return nil, err end
  return finish(job, job:run_random())
end

--- Registers devices with the given names: BatchCheckDeviceNames (D-69482) -> wait ->
-- BatchRegisterDeviceWithApplyId (D-69514) -> wait -> QueryPageByApplyId, in chunks of at
-- most `client.max_batch_size`. Invalid names are found locally (the DeviceName rule,
-- duplicates) and by the service, whether it answers them synchronously (a business
-- error listing them) or as CHECK_FAILED.
-- @tparam table args `ProductKey`, `Devices` (`{"name", ...}` or `{{DeviceName=,
--   DeviceNickname=}, ...}`), `skip_invalid` (boolean: leave invalid names out instead of
--   failing), `on_progress`, `journal`, `deadline` [s] as for `register_devices`
-- @treturn ?table `{ApplyIds = {...}, Devices = {...}, Invalid = {{DeviceName=,
--   ErrorMsg=}, ...}}` (ApplyIds: every apply the job created, including rejected checks)
-- @treturn ?table err: `InvalidDeviceName` with `invalid` (without skip_invalid; nothing
--   registered, and for locally invalid names nothing sent); the others as for
--   `register_devices`
-- @raise when args is not a table, holds an unknown or wrong-typed option, or a Devices
--   entry is neither a string nor a table with DeviceName/DeviceNickname
local function register_named_devices(self, args)
  check_args(args, {ProductKey = "any", Devices = "table", skip_invalid = "boolean",
                    on_progress = "function", journal = "string", deadline = "number"},
             "register_named_devices")
  local bad = check_product_key(self, args.ProductKey) or check_deadline(args.deadline)
  if bad then return nil, bad end
  local keys, top = 0, 0
  for k in pairs(args.Devices or {}) do
    if type(k) ~= "number" or k < 1 or k ~= math.floor(k) then top = -1 break end
    keys, top = keys + 1, math.max(top, k)
  end
  if top ~= keys then
    -- ipairs would stop at the hole and leave the names after it out, silently
    error("register_named_devices: Devices must be a list (keys 1..n, no hole)", 2)
  end
  if args.Devices == nil or keys == 0 then
    return nil, invalid_param("Devices", "Devices must be a non-empty list of names")
  end
  local names = normalise_names(args.Devices)
  local job = new_job(self, {kind = "named", ProductKey = args.ProductKey, names = names,
    skip_invalid = args.skip_invalid == true, on_progress = args.on_progress,
    t_end = args.deadline and self:_now() + args.deadline})
  local err = job:validate_names()
  if err then return nil, err end
  err = start_journal(job, args.journal, {kind = "named", ProductKey = args.ProductKey,
    skip_invalid = job.skip_invalid, Devices = names})
  if err then return nil, err end
  return finish(job, job:run_named())
end

--- Finishes a job from its journal without creating anything twice: re-polls the
-- recorded ApplyIds, fetches the devices not yet recorded, and submits only what was
-- never submitted (named: the names no recorded apply covers; random: Count minus what
-- the recorded applies cover). A recorded uncertain BatchRegisterDevice (or one in flight
-- when the process ended) is never followed by new submissions: the known applies are
-- finished and the job ends in the `ambiguous` error. A finished journal returns its
-- result without a request.
-- @tparam table args `journal` (path), `on_progress`, `deadline` [s]
-- @treturn ?table the result the original call would have returned (all devices, the
--   ones read from the journal included)
-- @treturn ?table err as for the original call; `JournalError` for an unreadable journal
-- @raise when args is not a table or holds an unknown or wrong-typed option
local function resume(self, args)
  check_args(args, {journal = "string", on_progress = "function", deadline = "number"}, "resume")
  if not args.journal then return nil, invalid_param("journal", "journal is required") end
  local bad = check_deadline(args.deadline)
  if bad then return nil, bad end
  local j, records, err = journal.open(args.journal)
  if not j then return nil, err end
  local spec = records[1]
  local job = new_job(self, {kind = spec.kind, ProductKey = spec.ProductKey,
    on_progress = args.on_progress, t_end = args.deadline and self:_now() + args.deadline})
  if spec.kind == "random" then
    job.Count, job.total = spec.Count, spec.Count
  elseif spec.kind == "named" then
    job.names, job.skip_invalid = spec.Devices or {}, spec.skip_invalid == true
    err = job:validate_names()
    if err then
      j:close()
      return nil, err
    end
  else
    j:close()
    return nil, errors.new{code = "JournalError", message = "unknown job kind " .. tostring(spec.kind)}
  end
  local in_flight, done = {}, false
  for i = 2, #records do
    local r = records[i]
    if r.event == "submit" then
      in_flight[r.seq] = r
      job.seq = math.max(job.seq, r.seq or 0)
    elseif r.event == "apply" then
      in_flight[r.seq or -1] = nil
      job:add_apply{ApplyId = id_value(r.ApplyId), phase = r.phase, Count = r.Count, Names = r.Names}
    elseif r.event == "failed" then
      in_flight[r.seq] = nil
    elseif r.event == "uncertain" then
      in_flight[r.seq] = nil
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
      done = true
      if type(r.Invalid) == "table" then job.invalid = r.Invalid end
    end
  end
  for _, r in pairs(in_flight) do
    job.uncertain = job.uncertain or {message = ("BatchRegisterDevice (Count = %s) was in " ..
      "flight when the journaled process ended: the service may have created an apply whose " ..
      "ApplyId never arrived. It is not sent again, so that no devices are created twice; " ..
      "look for devices beyond the listed ApplyIds with QueryDevice or in the console")
      :format(tostring(r.Count))}
  end
  job.journal = j
  if done then
    local res = {ApplyIds = job:apply_ids(), Devices = job.devices}
    if job.kind == "named" then res.Invalid = job.invalid end
    return finish(job, res)
  end
  if job.kind == "random" then return finish(job, job:run_random()) end
  return finish(job, job:run_named())
end

--- Adds the helpers to the client class (called once by `aliyun.iot`).
-- @tparam table Client the client metatable
function M.install(Client)
  Client.register_devices = register_devices
  Client.register_named_devices = register_named_devices
  Client.wait_apply = wait_apply
  Client.apply_devices = apply_devices
  Client.resume = resume
end

return M
