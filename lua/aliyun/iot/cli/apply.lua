--- `aliyun-iot apply`: makes a product match a manifest (`client:apply`), printing the
-- plan it carried out and a line of totals; `--report FILE` gets one JSON line per change.
-- `--state FILE` is the creation step's journal: after a killed apply, the same command
-- line finishes it (the creation from the journal, the rest from the state read again),
-- repeating no write.
-- @module aliyun.iot.cli.apply

local commands = require "aliyun.iot.cli.commands"
local output = require "aliyun.iot.cli.output"
local outcomes = require "aliyun.iot.cli.outcomes"
local plan_cli = require "aliyun.iot.cli.plan"
local report = require "aliyun.iot.cli.report"
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

--- apply: the plan read and carried out; exit 0, 1 on a failure (the changes after it
-- are reported skipped; the same command line continues), 2 on bad input (nothing sent).
-- @treturn integer exit status
function M.run(opts, streams, ui, ctx)
  output.check_out(opts)
  local out = output.open(opts.out, streams.stdout)
  ctx.out = out
  local client, err = commands.new_client(opts, ui)
  if not client then return commands.failed(out, streams, err) end
  if opts.report then
    ctx.report = outcomes.open(opts.report)
  end
  if opts.state then
    ui.note(("journal %s%s; if apply stops, run the same command again to finish it")
      :format(opts.state, opts.retire_unlisted and (" (the retire's: %s.retire)"):format(opts.state) or ""))
  end
  ui.note("applying " .. printable(opts.manifest) .. " to product " .. printable(opts.product_key))
  local res
  -- the undo export's default: beside the journal (issue 15), else beside the manifest
  local undo = opts.retire_unlisted and (opts.undo or (opts.state or opts.manifest) .. ".undo.csv")
    or nil
  res, err = client:apply{ProductKey = opts.product_key, manifest = opts.manifest,
    prune_tags = opts.prune_tags or nil, journal = opts.state, deadline = opts.deadline,
    on_report = ctx.report and ctx.report.add, retire_unlisted = opts.retire_unlisted or nil,
    undo = undo, wait = opts.wait, force = opts.force or nil}
  ui.done()
  if not res and not err.Plan then
    if ctx.report then ctx.report.abort() ctx.report = nil end
    return commands.failed(out, streams, err)
  end
  local result = res or err
  plan_cli.print_plan(result.Plan, function(s) out.fh:write(s) end)
  local written = outcomes.close(ctx, result.Report, streams)
  if not res then
    out:finish()
    report.print_error(streams, err)
    streams.stderr:write(("aliyun-iot: apply stopped (changes: %s); run the same command " ..
      "again to finish\n"):format(totals(err.Report)))
    return report.EXIT_FAILURE
  end
  out.fh:write(("Apply: %s.\n"):format(totals(res.Report)))
  local code = commands.finished(out, streams)
  if not written then return report.EXIT_FAILURE end
  return code
end

return M
