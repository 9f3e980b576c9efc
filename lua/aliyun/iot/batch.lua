--- Batch provisioning helpers: "give me N devices (or these named devices) under this
-- product, and their secrets", in one call, never losing track of what was created.
-- Installed on the client class, so they are client methods:
--
--     local res, err = client:register_devices{ProductKey = pk, Count = 2500}
--     -- res = {ApplyIds = {...}, Devices = {{ProductKey=, DeviceName=, DeviceSecret=, IotId=}, ...}}
--
-- Each helper is a composition of calls (doc pages D-69473 BatchRegisterDevice, D-69482
-- BatchCheckDeviceNames, D-69514 BatchRegisterDeviceWithApplyId, D-69483
-- QueryBatchRegisterDeviceStatus, D-69518 QueryPageByApplyId): submit in chunks of at most
-- `client.max_batch_size`, poll each apply to its end state, then read its devices page by
-- page (PageSize 50, pages fetched concurrently, paced within QueryPageByApplyId's QPS).
-- With `journal = PATH` every step is recorded in an append-only file
-- (`aliyun.iot.journal`) and `client:resume{journal = PATH}` finishes the job. The helpers
-- use the client only through `aliyun.iot.batch.port`.
--
-- Arguments, one rule for every helper: a wrong Lua type is misuse and raises (`args` not
-- a table, an unknown option, `ProductKey = 123`, `Devices = "x"`, a `Devices` entry that
-- is neither a name nor a `{DeviceName=, DeviceNickname=}` record with string fields); a
-- value of the right type that is bad, or a required one missing, returns `nil, err` with
-- `InvalidParameter` and `err.parameter` before any request (`Count = 0`,
-- `ProductKey = ""`, `deadline = -1`, `Devices = {}`). Conveniences: `Count` and
-- `ApplyId` may be integers or digit strings.
--
-- Options by helper (a helper raises on an option it does not take):
--
-- * `on_progress`: register_devices, register_named_devices, resume, wait_apply
--   (apply_devices and product_devices are iterators: the caller's loop sees their
--   progress);
-- * `journal`: register_devices, register_named_devices, resume (the helpers that create
--   devices; waiting and reading create nothing to record);
-- * `deadline` [s from now]: every helper; it bounds the requests in flight too (each
--   request's timeouts are cut to the time left, none starts after it);
-- * `apply_timeout` [s, default 3600]: register_devices, register_named_devices, resume,
--   wait_apply: the longest wait for one apply's phase, so that an apply that never
--   finishes is not polled for ever even without a deadline.
--
-- Nothing the service answers is trusted (`aliyun.iot.batch.answer`): every field used is
-- type-checked, pages are bounded by what the apply asked for and by Total / PageSize, a
-- finished apply must hold what was asked, and device names, secrets and ids must look
-- like what the API produces before they are journaled or returned. Anything else ends
-- the job in `InvalidResponse`, with the ApplyIds kept.
--
-- Errors keep the client's fields (`code`, `message`, `request_id`, `http_status`, ...).
-- A job's error adds the result's fields: `ApplyIds` (every ApplyId the job created),
-- `Devices` (every device fetched so far), `Invalid` (`{{DeviceName=, ErrorMsg=}, ...}`),
-- also under the aliases `apply_ids`, `devices` and `invalid`; `apply_id` and `status`
-- (the apply a wait gave up on), and `ambiguous = true` only when an apply may exist whose
-- ApplyId never arrived (a BatchRegisterDevice whose answer was lost). Codes:
-- `InvalidParameter`, `InvalidDeviceName`, `ApplyTimeout` (the deadline or
-- apply_timeout; the message says which), `CheckFailed`, `CreateFailed`, `Ambiguous`,
-- `InvalidResponse`, `JournalError`, `TargetMismatch` (resume), and any call's error.
--
-- `on_progress(event)` receives `{phase = "validate"|"check"|"register"|"create"|"fetch",
-- apply_id=, done=, total=, status=}`: validate (names that passed the local rules of all
-- names), check (names checked so far of all names sent for checking, once per finished
-- check), register (devices submitted of the job's total), create (devices whose apply
-- finished creating; also once per poll with the apply's `status` while it runs), fetch
-- (devices fetched of the job's total, once per page batch). An error it raises ends the
-- job and propagates; the journal is released all the same (resume it later).
-- @module aliyun.iot.batch

local journal = require "aliyun.iot.journal"
local args_m = require "aliyun.iot.batch.args"
local port_m = require "aliyun.iot.batch.port"
local job_m = require "aliyun.iot.batch.job"
local wait = require "aliyun.iot.batch.wait"
local random = require "aliyun.iot.batch.random"
local named = require "aliyun.iot.batch.named"
local drawn = require "aliyun.iot.batch.drawn"
local adopt = require "aliyun.iot.batch.adopt"
local resume_m = require "aliyun.iot.batch.resume"
local devices = require "aliyun.iot.batch.devices"
local check = require "aliyun.iot.batch.check"
local product = require "aliyun.iot.batch.product"
local target_m = require "aliyun.iot.batch.target"

local M = {}

-- Runs a job to its end; whatever ends it (a result, an error, an on_progress callback
-- that raised), its journal is released.
local function run(job, fn)
  local ok, res, err = pcall(fn, job)
  if job.journal then job.journal:close() end
  if not ok then error(res, 0) end
  return res, err
end

-- Creates the job's journal; its job line records the job's target too (batch/target.lua).
local function start_journal(job, path, record)
  if not path then return nil end
  for k, v in pairs(target_m.record(job.port)) do record[k] = v end
  local j, err = journal.create(path, record)
  if not j then
    err.code, err.parameter = "InvalidParameter", "journal"
    return err
  end
  job.journal = j
end

local function new_job(client, args, fields)
  local port = port_m.new(client)
  fields.on_progress, fields.on_report = args.on_progress, args.on_report
  fields.t_end = args.deadline and port:clock() + args.deadline
  fields.apply_timeout = args.apply_timeout
  return job_m.new(port, fields)
end

--- Waits until an apply's phase ends, polling QueryBatchRegisterDeviceStatus (D-69483)
-- with pauses from 0.5 s growing to 5 s.
-- @tparam table args `ProductKey` (string), `ApplyId` (integer or digit string),
--   `phase` ("check" or "create", default "create"), `deadline` [s from now, optional;
--   it bounds the status calls in flight too], `apply_timeout` [s, default 3600],
--   `on_progress` (optional, receives `{phase=, apply_id=, status=}` after each poll
--   that found the phase still running)
-- @treturn ?table the status call's `Data` at the phase's end state (`Status` one of
--   CHECK_SUCCESS, CHECK_FAILED (which also ends "create"), or, for "check", any state
--   past CHECK; for "create", CREATE_SUCCESS or CREATE_FAILED), with `ValidList`,
--   `InvalidList`, `InvalidDetailList` as the service sends them (type-checked)
-- @treturn ?table err `ApplyTimeout` (with `apply_id` and the last `status`; the message
--   says whether the deadline or apply_timeout ended it), `InvalidResponse`, or the
--   status call's error (with `apply_id`); `InvalidParameter` for a bad value
-- @raise on misuse (see the module: not a table, unknown option such as `journal`,
--   wrong Lua type)
local function wait_apply(self, args)
  local ok, bad = args_m.check(args, "wait_apply", 3)
  if not ok then return nil, bad end
  local phase = args.phase or "create"
  local port = port_m.new(self)
  local on_progress = args.on_progress
  return wait.poll(port, {ProductKey = args.ProductKey, id = args.ApplyId, phase = phase,
    t_end = args.deadline and port:clock() + args.deadline,
    apply_timeout = args.apply_timeout or wait.APPLY_TIMEOUT,
    on_status = on_progress and function(status)
      on_progress{phase = phase, apply_id = args.ApplyId, status = status}
    end})
end

--- Iterates over an apply's devices, one page at a time (QueryPageByApplyId, D-69518).
--
--     for dev, err in client:apply_devices{ProductKey = pk, ApplyId = id} do
--       if not dev then error(tostring(err)) end
--       print(dev.DeviceName)
--     end
-- @tparam table args `ProductKey` (string; QueryPageByApplyId carries none, the records
--   do), `ApplyId` (integer or digit string), `page_size` (1..50, default 50),
--   `deadline` [s from now, optional: no page request starts after it]
-- @treturn function iterator yielding device records `{ProductKey=, DeviceName=,
--   DeviceSecret=, IotId=}`, each device once, at most the first page's Total of them;
--   on a failure it yields `false, err` once (err with `apply_id`: the page call's
--   error, `InvalidResponse` for a page that fails its checks or pages that held fewer
--   different devices than Total, `ApplyTimeout` at the deadline, `InvalidParameter`
--   for a bad argument value), then ends
-- @raise on misuse (see the module)
local function apply_devices(self, args)
  local _, failure = args_m.check(args, "apply_devices", 3)
  local size = args.page_size or devices.SIZE
  local port = port_m.new(self)
  return devices.iterate(port, {ProductKey = args.ProductKey, id = args.ApplyId, size = size,
    t_end = args.deadline and port:clock() + args.deadline, failure = failure})
end

--- Iterates over every device of a product with its DeviceSecret: QueryDevice pages
-- (PageSize 50, NextToken followed from the second page on) and BatchQueryDeviceDetail
-- for the secrets a page lacks (docs/wire.md §4 Cheap extras, §10), each held to its
-- documented QPS by the client's pacer (QueryDevice 50, 2 for deep pages of big products;
-- BatchQueryDeviceDetail 5). Memory stays flat but for one DeviceName and one NextToken
-- remembered per device and page (each device is yielded once, a token loop is caught).
--
--     for dev, err in client:product_devices{ProductKey = pk} do
--       if not dev then error(tostring(err)) end
--       print(dev.DeviceName, dev.DeviceSecret)
--     end
-- @tparam table args `ProductKey` (string), `page_size` (1..50, default 50), `deadline`
--   [s from now, optional: no request starts after it, those in flight are cut to it]
-- @treturn function iterator yielding device records `{ProductKey=, DeviceName=,
--   DeviceSecret=, IotId=, DeviceStatus=}` (DeviceStatus as the page gave it, when it is
--   ONLINE, OFFLINE, UNACTIVE or DISABLE), newest first, each device once; devices created during the
--   walk are not listed, one deleted during it may be; on a failure it yields `false, err`
--   once, then ends: the call's error (`DeadlineExceeded` at the deadline),
--   `InvalidResponse` for a page or detail answer that fails its checks (a count or token
--   of the wrong type, more devices than the PageSize asked or than Total announced, more
--   pages than Total allows, a NextToken seen before, a listing cut short of Total),
--   `InvalidParameter` for a bad argument value
-- @raise on misuse (see the module)
local function product_devices(self, args)
  local _, failure = args_m.check(args, "product_devices", 3)
  local port = port_m.new(self)
  return product.iterate(port, {ProductKey = args.ProductKey, size = args.page_size or product.SIZE,
    t_end = args.deadline and port:clock() + args.deadline, failure = failure})
end

--- Registers Count devices with random names, split into chunks of at most
-- `client.max_batch_size`; waits for each apply and reads its devices. Who picks the names:
--
-- * `names = "service"` (the default, as the API page describes): BatchRegisterDevice
--   (D-69473). One request a chunk; but when its answer is lost after the service acted,
--   no client can learn the ApplyId: the job ends `Ambiguous` (see `resume`'s
--   `adopt_apply_ids` and `accept_ambiguous` for the ways out).
-- * `names = "client"`: the client draws the names (`aliyun.iot.batch.drawn`: OpenSSL's
--   RAND, 20 characters of [A-Za-z0-9]), journals them before the first request, and
--   registers them as `register_named_devices` does (BatchCheckDeviceNames,
--   BatchRegisterDeviceWithApplyId). Twice the requests, but a lost answer is settled
--   (a check is sent again, a registration read back with QueryBatchRegisterDeviceStatus),
--   so this job never ends ambiguous; a name found taken by a device not the job's is
--   replaced by a fresh one; idempotent calls keep retrying within `retry_deadline`.
-- @tparam table args `ProductKey` (string), `Count` (integer or digit string, 1 to
--   10,000,000 per job), `names` ("service" or "client", default "service"),
--   `on_progress` (function, see module), `journal` (path of a new
--   journal file), `deadline` [s from now: the whole job, requests in flight included],
--   `apply_timeout` [s, default 3600: the longest wait for one apply]
-- @treturn ?table `{ApplyIds = {...}, Devices = {{ProductKey=, DeviceName=, DeviceSecret=,
--   IotId=}, ...}}`
-- @treturn ?table err: `InvalidParameter`; `CreateFailed` (an apply ended CREATE_FAILED;
--   the created ones in `err.Devices`, the failed names in `err.Invalid`);
--   `ApplyTimeout` (`apply_id`, `status`); `InvalidResponse`; any call's error; each
--   with `ApplyIds` and `Devices`; `ambiguous = true` (code `Ambiguous`) when a
--   BatchRegisterDevice's answer was lost or unusable after it was sent (never re-sent)
-- @raise on misuse (see the module); an error raised by on_progress propagates
local function register_devices(self, args)
  local ok, bad = args_m.check(args, "register_devices", 3)
  if not ok then return nil, bad end
  local count = args_m.count(args.Count)
  local kind = args.names == "client" and "client" or "random"
  local job = new_job(self, args, {kind = kind, ProductKey = args.ProductKey,
                                   Count = count, total = count})
  local err = start_journal(job, args.journal, {kind = kind, ProductKey = args.ProductKey,
                                                Count = count})
  if err then return nil, err end
  if kind == "random" then return run(job, random.run) end
  return run(job, function()
    local derr = drawn.start(job)
    if derr then return job:conclude(derr) end
    return drawn.run(job)
  end)
end

--- Registers devices with the given names: BatchCheckDeviceNames (D-69482) -> wait ->
-- BatchRegisterDeviceWithApplyId (D-69514) -> wait -> QueryPageByApplyId, in chunks of at
-- most `client.max_batch_size`. Invalid names are found locally (the DeviceName rule, the
-- nickname rule of `aliyun.iot.validate`, duplicates) and by the service, whether it
-- answers them synchronously (a business error listing them) or as CHECK_FAILED.
-- @tparam table args `ProductKey`, `Devices` (`{"name", ...}` or `{{DeviceName=,
--   DeviceNickname=}, ...}`), `skip_invalid` (boolean: leave invalid names out instead of
--   failing), `existing` ("fail" (default: an existing name is invalid), "skip" or
--   "adopt": names the service refuses are looked up with BatchQueryDeviceDetail, see
--   `aliyun.iot.batch.existing`), `on_report` (function(record, position): each entry's
--   outcome once, as it is decided, see `aliyun.iot.batch.outcomes`), `on_progress`,
--   `journal`, `deadline` [s], `apply_timeout` [s] as for `register_devices`
-- @treturn ?table `{ApplyIds = {...}, Devices = {...}, Invalid = {{DeviceName=,
--   ErrorMsg=}, ...}, Existing = {names}, Report = {{DeviceName=, outcome=, ApplyId=,
--   code=, message=, RequestId=}, ...}}` (ApplyIds: every apply the job created, including
--   rejected checks; Devices in the order of `Devices`, the adopted ones included; Report
--   one record per entry of `Devices`)
-- @treturn ?table err: `InvalidDeviceName` with `Invalid` (without skip_invalid; nothing
--   registered, and for locally invalid names nothing sent); the others as for
--   `register_devices`; each with `Report`
-- @raise on misuse (see the module): Devices not a list (a hole included), an entry that
--   is neither a name nor a record with a string DeviceName (`Devices = {{}}`)
local function register_named_devices(self, args)
  local ok, bad = args_m.check(args, "register_named_devices", 3)
  if not ok then return nil, bad end
  local names = named.normalise(args.Devices, "register_named_devices", 3)
  local job = new_job(self, args, {kind = "named", ProductKey = args.ProductKey,
    names = names, skip_invalid = args.skip_invalid == true, existing = args.existing or "fail"})
  local err = named.validate_names(job)
  if err then return nil, err end
  err = start_journal(job, args.journal, {kind = "named", ProductKey = args.ProductKey,
    skip_invalid = job.skip_invalid, existing = job.existing, Devices = names})
  if err then return nil, err end
  return run(job, named.run)
end

--- Asks the service which of the given names it would register, registering nothing:
-- BatchCheckDeviceNames (D-69482) per chunk of `client.max_batch_size`, each check waited
-- for (QueryBatchRegisterDeviceStatus, D-69483); the valid rest of a refused chunk is
-- checked again, and the refused names are looked up with BatchQueryDeviceDetail (docs/wire.md §10,
-- at most 100 a call, 5 calls a second) to tell the existing ones apart.
-- @tparam table args `ProductKey`, `Devices` (as for `register_named_devices`),
--   `on_progress`, `deadline` [s], `apply_timeout` [s]
-- @treturn ?table `{Valid = {"name", ...}, Invalid = {{DeviceName=, ErrorMsg=}, ...},
--   Existing = {"name", ...}, ApplyIds = {...}}` (names in the order given; the locally
--   invalid ones in Invalid too, never sent)
-- @treturn ?table err `InvalidParameter`, `CheckFailed`, `ApplyTimeout`,
--   `InvalidResponse` or a call's error, with `ApplyIds`
-- @raise on misuse (see the module)
local function check_device_names(self, args)
  local ok, bad = args_m.check(args, "check_device_names", 3)
  if not ok then return nil, bad end
  local names = named.normalise(args.Devices, "check_device_names", 3)
  local job = new_job(self, args, {kind = "named", ProductKey = args.ProductKey,
    names = names, skip_invalid = true, existing = "skip"})
  named.validate_names(job)
  return check.run(job)
end

--- Finishes a job from its journal without creating anything twice: re-polls the
-- recorded ApplyIds, fetches the devices not yet recorded, and submits only what was
-- never submitted (named: the names no recorded apply covers; random: Count minus what
-- the recorded applies cover). A recorded uncertain BatchRegisterDevice (or one in flight
-- when the process ended) is never followed by new submissions: the known applies are
-- finished and the job ends in the `ambiguous` error. A finished journal returns its
-- result without a request.
--
-- The journal records where its job lives (`aliyun.iot.batch.target`): a client set for
-- another endpoint, RegionId or IotInstanceId, or a `ProductKey` other than the
-- journal's, is refused before any request (`TargetMismatch`). A journal written before
-- targets were recorded is resumed with the client's settings.
--
-- Two ways out of an ambiguous random-name job (an `Ambiguous` error): `adopt_apply_ids`
-- takes in applies the user found (each must be known to QueryBatchRegisterDeviceStatus
-- under the journal's ProductKey, past any name check, with devices bearing random names
-- and a Total matching an uncertain submission's Count), journaled; `accept_ambiguous`
-- gives up on the submissions still uncertain: the rest of the job is finished without
-- them, and the result's `Unsettled` lists them (`{{seq=, Count=, message=}, ...}`: up to
-- Count devices each that may exist unseen, to look for with QueryDevice).
-- @tparam table args `journal` (path), `ProductKey` (optional: the product the caller
--   expects the job to be in), `adopt_apply_ids` (list of ApplyIds, integers or digit
--   strings), `accept_ambiguous` (boolean), `on_progress`, `on_report` (a named job's, as
--   for `register_named_devices`; its `existing` is the journal's), `deadline` [s],
--   `apply_timeout` [s]
-- @treturn ?table the result the original call would have returned (all devices, the
--   ones read from the journal included), plus `Unsettled` after `accept_ambiguous`
-- @treturn ?table err as for the original call; `JournalError` for an unreadable journal
--   or one another process holds; `TargetMismatch` (nothing sent; `journal_target` and
--   `client_target`, the message naming both) for a client or ProductKey that is not the
--   journal's
-- @raise on misuse (see the module); an error raised by on_progress propagates (the
--   journal is released: resume again)
local function resume(self, args)
  local ok, bad = args_m.check(args, "resume", 3)
  if not ok then return nil, bad end
  local j, records, err = journal.open(args.journal)
  if not j then return nil, err end
  local job = new_job(self, args, {kind = records[1].kind, ProductKey = records[1].ProductKey})
  err = target_m.check(records[1], job.port, args.ProductKey, args.journal)
  if err then
    j:close()
    return nil, err
  end
  job.journal = j
  return run(job, function()
    local done, rerr = resume_m.rebuild(job, records)
    if rerr then return nil, rerr end
    if args.adopt_apply_ids or args.accept_ambiguous then
      rerr = adopt.settle(job, args)
      if rerr then return nil, rerr end
    end
    if done then return job:result() end
    if job.kind == "random" then return random.run(job) end
    if job.kind == "client" then return drawn.run(job) end
    return named.run(job)
  end)
end

--- Checks a helper's arguments by the helpers' one rule, sending nothing: what the helper
-- itself checks first (a command line can refuse a job before it makes a journal for it).
-- @tparam string helper "register_devices", "register_named_devices", "resume",
--   "wait_apply", "apply_devices" or "product_devices"
-- @tparam table args the arguments the helper would get
-- @treturn ?table args
-- @treturn ?table err `InvalidParameter` naming the bad or missing value
-- @raise as the helper would: a wrong type, an unknown option, an unknown helper
function M.check_args(helper, args)
  return args_m.check(args, helper, 3)
end

--- Checks names locally as `register_named_devices` does before it sends anything (the
-- DeviceName and nickname rules of `aliyun.iot.validate`, duplicates), and splits the valid
-- ones into the chunks its BatchCheckDeviceNames calls would carry. Sends nothing.
-- @tparam table list `Devices` as for `register_named_devices`
-- @tparam[opt] integer size the chunk size (`client.max_batch_size`; default its default)
-- @treturn table `{Valid = {{DeviceName=, DeviceNickname=}, ...}, Invalid = {{DeviceName=,
--   ErrorMsg=}, ...}, chunks = {{records...}, ...}}`
-- @raise on misuse, as `register_named_devices` (not a list, an entry of a wrong type)
function M.check_names(list, size)
  if type(list) ~= "table" then error("check_names expects a list of names", 2) end
  size = size or require("aliyun.iot.options").CLIENT.max_batch_size.default
  local job = job_m.new(nil, {kind = "named", names = named.normalise(list, "check_names", 3),
                              skip_invalid = true})
  named.validate_names(job)
  local chunks = {}
  for first = 1, #job.valid, size do
    local chunk = {}
    for i = first, math.min(first + size - 1, #job.valid) do chunk[#chunk + 1] = job.valid[i] end
    chunks[#chunks + 1] = chunk
  end
  return {Valid = job.valid, Invalid = job.invalid, chunks = chunks}
end

--- Adds the helpers to the client class (called once by `aliyun.iot`).
-- @tparam table Client the client metatable
function M.install(Client)
  Client.register_devices = register_devices
  Client.register_named_devices = register_named_devices
  Client.wait_apply = wait_apply
  Client.apply_devices = apply_devices
  Client.product_devices = product_devices
  Client.resume = resume
  Client.check_device_names = check_device_names
end

return M
