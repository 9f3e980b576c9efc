--- `aliyun-iot apply`: makes a product match a manifest (`client:apply`), printing the
-- plan it is about to carry out once it is read (before the first write), then a line of
-- totals; `--report FILE` gets one JSON line per change.
-- `--state FILE` is the apply's journal (`aliyun.iot.fleet.apply_journal`): after a killed
-- apply, the same command line finishes it (the creation from the journal, the rest from
-- the state read again), repeating no write, and continues the `--report` the journal
-- recorded. Each batch of writes' outcomes reaches the report, durably, before the next
-- batch is sent; a batch in flight when apply is killed is journaled, and the run again
-- reports each of its changes that landed (`"settled":"state"`, no RequestId) before its
-- own lines, so the report ends with one outcome per change made.
-- @module aliyun.iot.cli.apply

local commands = require "aliyun.iot.cli.commands"
local outcomes = require "aliyun.iot.cli.outcomes"
local plan_cli = require "aliyun.iot.cli.plan"
local report = require "aliyun.iot.cli.report"
local retire_cli = require "aliyun.iot.cli.retire"
local apply_journal = require "aliyun.iot.fleet.apply_journal"
local apply_m = require "aliyun.iot.fleet.apply"
local printable = require("aliyun.iot.errors").printable

local M = {}

-- Totals of a report by outcome: "3 done, 1 created, ...".
local function totals(rep)
  local n, order = {}, {}
  for _, r in ipairs(rep or {}) do
    if not n[r.outcome] then n[r.outcome], order[#order + 1] = 0, r.outcome end
    n[r.outcome] = n[r.outcome] + 1
  end
  local parts = {}
  for i, o in ipairs(order) do parts[i] = ("%d %s"):format(n[o], o) end
  return #parts > 0 and table.concat(parts, ", ") or "nothing to do"
end

-- The report of a run that failed before its plan: closed, and removed when this run
-- created it and it is still that empty file (no journal records it: nothing was sent).
local function drop_report(ctx, rep)
  ctx.report.abort()
  ctx.report = nil
  if not (rep and rep.new) then return end
  local core = require "aliyun.iot.core"
  local kind, id = core.file_kind(rep.path)
  if kind == "file" and id == rep.id and core.read_file(rep.path, 1) == "" then
    os.remove(rep.path)
  end
end

--- apply: the plan read and carried out; exit 0, 1 on a failure (the changes after it
-- are reported skipped; the same command line continues), 2 on bad input (nothing sent).
-- @treturn integer exit status
function M.run(opts, streams, ui, ctx)
  local records, rep
  -- the manifest first, then the journal: what refuses the run is heard before anything
  -- is announced, read or created
  -- the undo export's default: beside the journal (issue 15), else beside the manifest
  local undo = opts.retire_unlisted and (opts.undo or (opts.state or opts.manifest) .. ".undo.csv")
    or nil
  local out, client, err = commands.start(opts, streams, ui, ctx, {gate = plan_cli.check_manifest,
    keeps = undo and {{"the undo export", undo},
                      opts.state and {"the retire's journal", opts.state .. ".retire"} or nil}})
  if client and opts.state then
    local found
    found, records, err = apply_journal.inspect(opts.state, opts.product_key)
    if found then err = nil end
  end
  if err then return commands.failed(out, streams, err) end
  local report_arg, done
  if opts.report and opts.state then
    -- checked now, opened (created or continued) when the journal is about to record it
    outcomes.check_apply(opts, records)
    report_arg = function()
      ctx.report, rep, done = outcomes.open_apply(opts, records)
      return rep
    end
  elseif opts.report then
    ctx.report = outcomes.open(opts.report)
  end
  if opts.state then
    ui.note(("journal %s%s; if apply stops, run the same command again to finish it")
      :format(opts.state, opts.retire_unlisted and (" (the retire's: %s.retire)"):format(opts.state) or ""))
  end
  ui.note("applying " .. printable(opts.manifest) .. " to product " .. printable(opts.product_key))
  local res
  res, err = client:apply{ProductKey = opts.product_key, manifest = opts.manifest,
    prune_tags = opts.prune_tags or nil, journal = opts.state, deadline = opts.deadline,
    on_report = opts.report and function(rec, pos) ctx.report.add(rec, pos) end,
    retire_unlisted = opts.retire_unlisted or nil,
    undo = undo, wait = opts.wait, force = opts.force or nil,
    on_wait = opts.retire_unlisted and retire_cli.wait_note(ui) or nil,
    allow_empty = opts.allow_empty_manifest or nil,
    -- what is about to be done, before the first write: a killed apply has said it
    on_plan = function(p)
      plan_cli.print_plan(p, function(s) out.fh:write(s) end)
      -- retire says where the deleted devices' secrets go; so does apply, once its checks
      -- passed (a refused undo path is never announced) and only when it deletes
      if #p.Retire > 0 then ui.note("undo export (the devices' secrets): " .. printable(undo)) end
      -- seen now on a terminal or pipe (an --out file shows it whole when complete); a
      -- failed flush surfaces at the output's finish, checked there
      if not opts.out then streams.stdout:flush() end
    end,
    -- each batch of writes' outcomes made durable before the next batch is sent
    on_batch = opts.report and function() if ctx.report then ctx.report.sync() end end,
    report = report_arg,
    -- the changes a killed run's last batch carried whose lines reached the report
    reported = report_arg and function(c)
      return done ~= nil and done[apply_m.change_key(c)] or false
    end}
  ui.done()
  if not res and not err.Plan then
    if ctx.report then drop_report(ctx, rep) end
    return commands.failed(out, streams, err)
  end
  local written = outcomes.close(ctx, (res or err).Report, streams)
  if not res then
    out:finish()
    report.print_error(streams, err)
    streams.stderr:write(("aliyun-iot: apply stopped (changes: %s)"):format(totals(err.Report)),
      report.finish_note(opts))
    return report.EXIT_FAILURE
  end
  retire_cli.warn_forced(streams, res.Online, opts.wait)
  out.fh:write(("Apply: %s.\n"):format(totals(res.Report)))
  local code = commands.finished(out, streams)
  if not written then return report.EXIT_FAILURE end
  return code
end

return M
