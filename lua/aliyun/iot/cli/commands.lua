--- The CLI's commands (register, resume, devices, status, call) over the public Lua API.
-- @module aliyun.iot.cli.commands

local args = require "aliyun.iot.cli.args"
local names = require "aliyun.iot.cli.names"
local output = require "aliyun.iot.cli.output"
local report = require "aliyun.iot.cli.report"
local state_file = require "aliyun.iot.cli.state"
local progress = require "aliyun.iot.cli.progress"
local json = require "aliyun.iot.cli.json"
local outcomes = require "aliyun.iot.cli.outcomes"

local local_error = args.local_error
local print_error, failure_code = report.print_error, report.failure_code
local printable = require("aliyun.iot.errors").printable

local M = {}

local function new_client(opts, ui)
  local iot = require "aliyun.iot"
  local o = {
    endpoint = opts.endpoint, region_id = opts.region, iot_instance_id = opts.iot_instance_id,
    profile = opts.profile,
    ca_file = opts.ca_file, timeout = opts.timeout,
    -- a single call's retries end at --deadline; a job passes it to the helper instead
    retry_deadline = (opts.command ~= "register" and opts.command ~= "resume")
      and opts.deadline or nil,
    logger = function(level, message)
      if level ~= "debug" and level ~= "info" then ui.note(level .. ": " .. message) end
    end,
  }
  for k, v in pairs(opts.client_tuning or {}) do o[k] = v end
  return iot.new(o)
end

--- A command's output and client, in the order every command needs them: the files it
-- writes checked against each other (`output.check_out`), its output opened and handed to
-- `ctx` (so that an interrupt removes what it made), `how.gate(opts)` (a local check whose
-- error stops the command before a client is made: nothing is announced or sent), then the
-- client.
-- @tparam table opts the checked options
-- @tparam table streams
-- @tparam table ui
-- @tparam table ctx the interrupt context (receives `out`)
-- @tparam[opt] table how `devices` (true: the output is a devices file, `--format`, mode
--   0600), `gate` (function(opts) -> ?err), `keeps` (the job's other files, for
--   `output.check_out`)
-- @treturn table out
-- @treturn ?table the client, or nil and
-- @treturn ?table err
local function start(opts, streams, ui, ctx, how)
  how = how or {}
  output.check_out(opts, how.keeps, how.devices)
  local out = how.devices and output.open_devices(opts, streams.stdout)
    or output.open(opts.out, streams.stdout)
  ctx.out = out
  local err = how.gate and how.gate(opts)
  if err then return out, nil, err end
  local client, cerr = new_client(opts, ui)
  return out, client, cerr
end

-- The job's arguments and the journal path for register/resume; `own` is true for a
-- journal in TMPDIR (removed once the job is done).
local function job_args(opts, streams, ui)
  local job = {on_progress = ui.on_progress, deadline = opts.deadline,
               apply_timeout = opts.apply_timeout}
  if opts.command == "resume" then
    -- back to the journal's target unless told otherwise (and then refused if it differs)
    local rec = state_file.check_resume(opts.state)
    outcomes.check_resume(opts, rec)
    state_file.journal_target(opts, rec)
    opts.journal_kind = rec.kind
    job.journal, job.ProductKey = opts.state, opts.product_key
    job.adopt_apply_ids, job.accept_ambiguous = opts.adopt_apply_id, opts.accept_ambiguous
    return job, opts.state, false
  end
  job.ProductKey = opts.product_key
  if opts.count then
    job.Count = opts.count
    job.names = opts.service_names and "service" or "client"
  else
    job.Devices = names.read(opts, streams)
    job.skip_invalid = opts.skip_invalid or nil
    job.existing = opts.existing
  end
  local state, own, dir = opts.state, false, nil
  if state then
    state_file.check_new(state, opts)
  else
    -- Without --state the job still keeps a journal, so a failure can be finished with
    -- 'resume'; it is removed when the job completes.
    state, dir = state_file.temp()
    own = true
  end
  job.journal = state
  return job, state, own, dir
end

local function helper_name(opts, job)
  if opts.command == "resume" then return "resume" end
  return job.Count and "register_devices" or "register_named_devices"
end

local function run_helper(client, opts, job)
  return client[helper_name(opts, job)](client, job)
end

-- A job that failed: the known devices written when no command can fetch them, the
-- failure reported, and the journal removed only when this run created it and it is of
-- no use (nothing created, or nothing sent).
local function job_failed(err, opts, streams, out, state, own_state, dir)
  local journal = require "aliyun.iot.journal"
  if err.code == "JournalError" and not err.errno then
    -- a journal the library refuses is a local problem: running resume again cannot help
    -- (one that could not be written, `errno` set, is kept and resumed like any failure)
    out:abort()
    local msg = tostring(err.message or "")
    -- "event N (apply) of the journal ...": event N is line N of the file
    local n, rest = msg:match("^event (%d+) (%(%w+%) of the journal .*)$")
    if state and n then
      msg = ("%s:%s: event %s"):format(state, n, rest)
    elseif state and msg:sub(1, #state + 1) ~= state .. ":" then
      msg = state .. ": " .. msg
    end
    streams.stderr:write("aliyun-iot: JournalError: ", printable(msg), "\n")
    return report.EXIT_USAGE
  end
  if err.ambiguous and err.devices and #err.devices > 0 then
    -- No command can settle an uncertain BatchRegisterDevice (its error says so), so the
    -- devices of the applies known are written rather than held back; exit status stays 1.
    output.write_devices(opts, out, err.devices, opts.product_key)
    local ok, werr = out:finish()
    streams.stderr:write("aliyun-iot: ", ok and (("%d devices of the known applies written to %s")
      :format(#err.devices, opts.out or "stdout")) or werr, "\n")
  end
  out:abort()
  if err.parameter == "journal" and dir then
    -- the library could not create the journal in TMPDIR: no journal, no job
    local_error("cannot keep the job's journal in TMPDIR folder %s: %s; set TMPDIR to a " ..
      "writable folder or give --state FILE", dir, tostring(err.message))
  end
  local created = (err.apply_ids and #err.apply_ids > 0) or err.ambiguous
  local code = failure_code(err)
  -- a journal with an ApplyId in it is never dropped, whatever the error
  if not created and (code == report.EXIT_USAGE or own_state) then
    if journal.discard(state) or own_state then state = nil end
  end
  if state and (err.parameter == "journal" or not journal.read(state)) then
    state = nil -- not a journal of this job (refused, or unreadable): nothing to resume
  end
  return report.report_failure(err, opts, streams, state)
end

-- A call that failed before any output: the output dropped, the error printed.
local function failed(out, streams, err)
  out:abort()
  print_error(streams, err)
  return failure_code(err)
end

-- The output completed: exit 0, or 1 when a write, the flush or the close failed.
local function finished(out, streams)
  local ok, werr = out:finish()
  if ok then
    -- a re-run that replaced a bigger job's output must not do it silently
    if out.replaced then streams.stderr:write("aliyun-iot: ", printable(out.replaced), "\n") end
    return report.EXIT_OK
  end
  streams.stderr:write("aliyun-iot: ", werr, "\n")
  return report.EXIT_FAILURE
end

local count_of = progress.count_of

-- Who drew a random-named job's names (register --count, or the journal resumed), for
-- the closing note.
local function names_note(opts)
  local kind = opts.journal_kind
  if opts.count then kind = opts.service_names and "random" or "client" end
  if kind == "random" then return " (names drawn by the service: BatchRegisterDevice)" end
  if kind == "client" then return " (names drawn by this client, checked, then registered)" end
  return ""
end

-- The submissions --accept-ambiguous gave up on: what may exist unseen (exit 3).
local function report_unsettled(res, streams)
  if not (res.Unsettled and #res.Unsettled > 0) then return nil end
  local n = 0
  for _, u in ipairs(res.Unsettled) do n = n + (u.Count or 0) end
  streams.stderr:write(("aliyun-iot: finished without %s: up to %s may exist that this " ..
    "output does not hold (created by a BatchRegisterDevice whose answer was lost); look " ..
    "for them with QueryDevice or in the console\n"):format(
      count_of(#res.Unsettled, "uncertain submission", "uncertain submissions"),
      count_of(n, "device", "devices")))
  return report.EXIT_PARTIAL
end

-- The closing note of a job, and the names --skip-invalid left out (exit 3).
local function summary(res, n, client, ui, seconds, streams, opts)
  local stats = client:stats()
  local written = count_of(n, "device", "devices")
  if res.Existing and #res.Existing > 0 then
    local adopted = false
    for _, d in ipairs(res.Devices or {}) do adopted = adopted or d.DeviceName == res.Existing[1] end
    ui.note(("%s existed already (%s)"):format(count_of(#res.Existing, "device", "devices"),
      adopted and "adopted: written with the others" or "left out"))
    -- adopted devices are written, not created: a re-run must not read as a new batch
    if adopted then written = ("%s (%d created)"):format(written, n - #res.Existing) end
  end
  ui.note(("%s in %s, %.1f s, %s, %s, %d throttled%s")
    :format(written, count_of(#(res.ApplyIds or {}), "apply", "applies"),
      seconds, count_of(stats.requests or 0, "request", "requests"),
      count_of(stats.retries or 0, "retry", "retries"), stats.throttled or 0, names_note(opts)))
  local partial = report_unsettled(res, streams)
  if partial then return partial end
  if res.Invalid and #res.Invalid > 0 then
    streams.stderr:write(("aliyun-iot: %s left out:\n")
      :format(count_of(#res.Invalid, "invalid name", "invalid names")))
    for _, inv in ipairs(res.Invalid) do
      streams.stderr:write(("  %s: %s\n"):format(printable(inv.DeviceName), printable(inv.ErrorMsg)))
    end
    return report.EXIT_PARTIAL
  end
  return report.EXIT_OK
end

--- register and resume: the job, then all devices to the output at once.
-- `ctx` receives the output, the journal and whether this run chose it, for
-- `report.report_interrupt`.
-- @treturn integer exit status
function M.run_job(opts, streams, ui, now, ctx)
  local job, state, own_state, dir = job_args(opts, streams, ui)
  output.check_out(opts, nil, true)
  -- the library's own rules first: a job refused before sending anything keeps no journal
  -- and prints no journal note
  local _, aerr = require("aliyun.iot.batch").check_args(helper_name(opts, job), job)
  if aerr then print_error(streams, aerr) return failure_code(aerr) end
  local out = output.open_devices(opts, streams.stdout)
  ctx.out, ctx.state, ctx.own_state = out, state, own_state
  -- a resume of a journal made in TMPDIR by a run without --state removes it at the end
  local temp_id = opts.command == "resume" and state_file.temp_identity(state)
  local client, cerr = new_client(opts, ui)
  if not client then return failed(out, streams, cerr) end
  if opts.report then
    -- made once the job can start (a client is made, nothing sent yet), never left empty
    ctx.report = outcomes.open(opts.report)
    job.on_report = ctx.report.add
  end
  if own_state then
    -- the only way to find this journal if the process is killed (SIGTERM, SIGKILL)
    ui.note(("journal %s; if the job stops, finish it with: %s")
      :format(state, report.resume_command(opts, state)))
  end
  local t0 = now()
  local res, err = run_helper(client, opts, job)
  ui.done()
  if not res then
    outcomes.close(ctx, err.Report, streams)
    return job_failed(err, opts, streams, out, state, own_state, dir)
  end
  local n = output.write_devices(opts, out, res.Devices or {}, opts.product_key)
  if not outcomes.close(ctx, res.Report, streams) then
    out:abort()
    streams.stderr:write("aliyun-iot: the job is done and recorded in the journal ", state,
      "; to write its devices again, run:\n  ", report.resume_command(opts, state), "\n")
    return report.EXIT_FAILURE
  end
  if finished(out, streams) ~= report.EXIT_OK then
    -- the devices are safe in the journal only: it stays, named with the command
    streams.stderr:write("aliyun-iot: the devices are in the journal ", state,
      "; write them again with:\n  ", report.resume_command(opts, state), "\n")
    return report.EXIT_FAILURE
  end
  if own_state then require("aliyun.iot.journal").discard(state) end
  if temp_id then state_file.remove_temp(state, temp_id) end
  return summary(res, n, client, ui, now() - t0, streams, opts)
end

--- devices: an apply's devices, written as they are fetched.
-- @treturn integer exit status
function M.run_devices(opts, streams, ui, ctx)
  local out, client, cerr = start(opts, streams, ui, ctx, {devices = true})
  if not client then return failed(out, streams, cerr) end
  local w = output.device_writer(out, opts, opts.product_key)
  for dev, err in client:apply_devices{ProductKey = opts.product_key, ApplyId = opts.apply_id,
                                       deadline = opts.deadline} do
    if not dev then return failed(out, streams, err) end
    w.add(dev)
    if out.fh.err then break end -- the output failed: no more pages fetched for it
  end
  w.close()
  return finished(out, streams)
end

--- status and call: one action, its decoded result as JSON.
-- @treturn integer exit status
function M.run_call(opts, streams, ui, ctx)
  local action, params
  if opts.command == "status" then
    action = "QueryBatchRegisterDeviceStatus"
    params = {ProductKey = opts.product_key, ApplyId = opts.apply_id}
  else
    action = opts.args[1]
    local words = {}
    for i = 2, #opts.args do words[#words + 1] = opts.args[i] end
    params = args.build_params(words)
  end
  local out, client, err = start(opts, streams, ui, ctx)
  local res
  if client then
    -- --deadline bounds the whole command, each attempt's wait included
    res, err = client:invoke(action, params,
      opts.deadline and {deadline = client:clock() + opts.deadline} or nil)
  end
  if not res then return failed(out, streams, err) end
  local row = require("aliyun.iot.actions").get(action)
  out.fh:write(json.json(res, row and row.lists), "\n")
  return finished(out, streams)
end

-- Shared with the commands in modules of their own (cli/check.lua, export.lua, mqtt.lua,
-- plan.lua): a client from the options, a failure before output, the output's end (exit 0,
-- or 1 with the reason on stderr when a write, the flush or the close failed).
M.start, M.failed, M.finished = start, failed, finished

return M
