--- `aliyun-iot retire`: deletes the devices of a names file (`client:retire`): the undo
-- export first (`--undo FILE`, default `STATE.undo.csv`, or `NAMES-FILE.undo.csv` without
-- `--state`: their secrets, mode 0600, a new file), then DisableThing, a wait until none is
-- ONLINE (`--wait S`, default 600, a note on stderr at each pause; `--force` deletes those
-- still online when it ends, with a warning on stderr that --quiet does not silence), then
-- DeleteDevice. `--dry-run` lists what it would do, sending reads only. `--state FILE` keeps
-- the retire's journal (`aliyun.iot.fleet.retire_journal`). Run again with the same
-- `--state` and undo file, it goes on where it stopped, repeating no answered write, and
-- continues the `--report` the journal recorded (as apply does: `outcomes.open_apply`);
-- without `--state`, `--report` takes only the path of a new file.
-- @module aliyun.iot.cli.retire

local commands = require "aliyun.iot.cli.commands"
local names_m = require "aliyun.iot.cli.names"
local outcomes = require "aliyun.iot.cli.outcomes"
local report = require "aliyun.iot.cli.report"
local printable = require("aliyun.iot.errors").printable

local M = {}

--- The undo export's path: `--undo`, or beside the journal (`--state`), or beside the
-- names file.
-- @tparam table opts the checked options
-- @treturn ?string nil for a dry run of stdin's names
function M.undo_path(opts)
  if opts.undo then return opts.undo end
  if opts.state then return opts.state .. ".undo.csv" end
  if opts.names_file == "-" then
    if opts.dry_run then return nil end
    require("aliyun.iot.cli.args").usage_error("--names-file - needs --undo FILE (the undo " ..
      "export) or --state FILE")
  end
  return opts.names_file .. ".undo.csv"
end

local function count(rep, outcome)
  local n = 0
  for _, r in ipairs(rep or {}) do if r.outcome == outcome then n = n + 1 end end
  return n
end

-- The first names of a list, for a line on stderr.
local function first_names(names, max)
  local shown = {}
  for i = 1, math.min(#names, max) do shown[i] = printable(names[i]) end
  return table.concat(shown, ", ") .. (#names > max and ", ..." or "")
end

--- The wait's progress (client:retire's and client:apply's on_wait): a note before each
-- pause.
-- @tparam table ui the command's ui (`note`)
-- @treturn function
function M.wait_note(ui)
  return function(w)
    ui.note(("waiting for %d of %d devices to go offline (ONLINE: %s), %.0f s of up to " ..
      "--wait %g s"):format(#w.Online, w.total, first_names(w.Online, 5), w.waited, w.wait))
  end
end

-- client:retire's on_step: the undo export named once it is written, the devices
-- disabled already before the wait (what is said after it comes too late to explain it).
local function step_note(ui)
  return function(s)
    if s.step == "undo" then
      ui.note("undo export (the devices' secrets): " .. printable(s.undo))
    elseif s.step == "disable" and #s.AlreadyDisabled > 0 then
      ui.note(("%d device(s) disabled already (DisableThing not sent again): %s")
        :format(#s.AlreadyDisabled, first_names(s.AlreadyDisabled, 5)))
    end
  end
end

--- The warning after `--force` deleted devices still ONLINE (retire, apply
-- --retire-unlisted): deleting online devices is what retire is there to avoid, so it is
-- said even with --quiet.
-- @tparam table streams
-- @tparam ?{string,...} online the result's `Online`
-- @tparam ?number wait the --wait given [s]
function M.warn_forced(streams, online, wait)
  if not online or #online == 0 then return end
  streams.stderr:write(("aliyun-iot: warning: --force deleted %d device(s) still ONLINE " ..
    "after --wait %g s: %s\n"):format(#online, wait or 600, first_names(online, 20)))
end

-- Failures that come before any write: nothing to say about what exists.
local BEFORE_WRITES = {InvalidParameter = true, JournalError = true, TargetMismatch = true,
                       UndoError = true}

-- What a retire that stopped leaves, and the way on: a line on stderr. Nothing is said
-- when no write was sent (bad input, the undo export not written, the read failed).
local function stopped(streams, rep, err, undo, opts)
  if BEFORE_WRITES[err.code] or #rep == 0 then return end
  streams.stderr:write(("aliyun-iot: retire stopped: %d deleted, %d absent, %d failed, " ..
    "%d not deleted yet; undo export %s"):format(count(rep, "deleted"), count(rep, "absent"),
      count(rep, "failed"), count(rep, "skipped"), printable(undo or "none")),
    report.finish_note(opts))
end

-- The --report: without --state a new file (or a device); with it, checked now against
-- the retire's journal and opened (created or continued) when the journal is about to
-- record it: the `report` argument of `client:retire`.
local function report_arg(opts, ctx)
  if not opts.state then
    if require("aliyun.iot.core").file_kind(opts.report) == "file" then
      require("aliyun.iot.cli.args").local_error("--report %s exists: give the path of a new " ..
        "file, or give --state FILE to make a retire resumable with its report (the same " ..
        "command run again then continues the report its journal recorded)", opts.report)
    end
    ctx.report = outcomes.open(opts.report)
    return nil
  end
  local records
  if require("aliyun.iot.core").file_kind(opts.state) == "file" then
    -- a journal that cannot be read records no report: the library refuses it anyway
    records = require("aliyun.iot.fleet.retire_journal").read(opts.state)
  end
  outcomes.check_apply(opts, records, "retire")
  return function()
    local w, rep = outcomes.open_apply(opts, records, "retire")
    ctx.report = w
    return rep
  end
end

--- retire: exit 0, 1 on a failure (devices still online without --force included: they
-- are listed), 2 on bad input (nothing sent).
-- @treturn integer exit status
function M.run(opts, streams, ui, ctx)
  local devices = names_m.read(opts, streams)
  local undo = M.undo_path(opts)
  -- the undo export is the one copy of the deleted devices' secrets: no output may take it
  local out, client, err = commands.start(opts, streams, ui, ctx,
    {keeps = undo and not opts.dry_run and {{"the undo export", undo}} or nil})
  if not client then return commands.failed(out, streams, err) end
  local report_of = opts.report and report_arg(opts, ctx)
  local res
  res, err = client:retire{ProductKey = opts.product_key, Devices = devices, undo = undo,
    journal = opts.state, report = report_of or nil,
    wait = opts.wait, force = opts.force or nil, dry_run = opts.dry_run or nil,
    deadline = opts.deadline, on_wait = M.wait_note(ui), on_step = step_note(ui),
    on_report = opts.report and function(rec, pos) ctx.report.add(rec, pos) end}
  ui.done()
  local rep = (res or err).Report
  local written = true
  if ctx.report then
    local ok, rerr = ctx.report.finish(rep)
    ctx.report, written = nil, ok
    if not ok then streams.stderr:write("aliyun-iot: ", printable(rerr), "\n") end
  end
  if not res then
    out:abort()
    report.print_error(streams, err)
    stopped(streams, rep, err, undo, opts)
    return report.failure_code(err)
  end
  M.warn_forced(streams, res.Online, opts.wait)
  for _, r in ipairs(rep) do
    out.fh:write(("%s %s  %s%s\n"):format(r.outcome == "absent" and "?" or "-",
      printable(r.DeviceName), r.outcome, not r.online and "" or opts.dry_run and
      " (ONLINE now)" or " (while ONLINE, --force)"))
  end
  local n_online = 0
  for _, r in ipairs(rep) do if r.online then n_online = n_online + 1 end end
  local forced = #res.Online > 0 and (" (%d while ONLINE)"):format(#res.Online) or ""
  out.fh:write(opts.dry_run and ("Retire: %d to delete (%d ONLINE now), %d absent (dry run: " ..
    "nothing sent but reads).\n"):format(count(rep, "planned"), n_online, count(rep, "absent"))
    or ("Retire: %d deleted%s, %d absent.\n"):format(count(rep, "deleted"), forced,
      count(rep, "absent")))
  local code = commands.finished(out, streams)
  if not written then return report.EXIT_FAILURE end
  return code
end

return M
