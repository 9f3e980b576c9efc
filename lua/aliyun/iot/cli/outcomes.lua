--- The `--report FILE` of a named job: one JSON line per requested name, written as the
-- job decides each one (`on_report`), the rest when it ends (the `Report` of its result
-- or error). Keys in a fixed order; no secret is ever written (the records hold none).
-- @module aliyun.iot.cli.outcomes

local output = require "aliyun.iot.cli.output"
local json = require "aliyun.iot.cli.json"

local function core() return require "aliyun.iot.core" end

local M = {}

-- change and target: apply's records (cli/apply.lua), absent from register's; online:
-- retire's, a device deleted by --force while still ONLINE
-- settled: apply's "state", a change a killed run sent, found landed by the run again
local KEYS = {"DeviceName", "change", "target", "outcome", "settled", "online", "ApplyId", "code",
              "message", "RequestId"}
local BATCH = 200 -- lines gathered before a durable write

--- One report line.
-- @tparam table rec `{DeviceName=, outcome=, ApplyId=, code=, message=, RequestId=}`
-- @treturn string a JSON object and a newline
function M.line(rec)
  local parts = {}
  for _, k in ipairs(KEYS) do
    local v = rec[k]
    if v ~= nil then parts[#parts + 1] = json.string(k) .. ":" .. json.string(tostring(v)) end
  end
  return "{" .. table.concat(parts, ",") .. "}\n"
end

--- Refuses (exit 2, before any request) `resume --report` for a journal whose job has no
-- requested names: only a named job (`kind = "named"`) has a Report; any other (random
-- names) could only give an empty file.
-- @tparam table opts the checked options (`report`, `state`)
-- @tparam table job the journal's `job` record
function M.check_resume(opts, job)
  if opts.report and type(job) == "table" and job.kind ~= "named" then
    require("aliyun.iot.cli.args").local_error("--report lists the names of a names file's " ..
      "job; the journal %s holds a job of random names (%s devices): no report to write",
      opts.state, tostring(job.Count))
  end
end

--- Opens the report (refused, exit 2, before any request, when the path names a file
-- already) and returns a writer: `add(rec, pos)` (each position once), `sync()` (the
-- lines added so far written, durably), `finish(report)` (the positions not written yet,
-- then the close; true or nil and the reason), `abort()`; `id` the new file's identity.
-- @tparam string path
-- @tparam[opt] table out an output to write into instead (`output.continue_file`)
function M.open(path, out)
  out = out or output.open_new("--report", path)
  local w, written, pending = {id = out.id}, {}, {}
  local function drain()
    if #pending > 0 then out.fh:write(table.concat(pending)) end
    pending = {}
  end
  w.sync = drain
  function w.add(rec, pos)
    if written[pos] then return end
    written[pos] = true
    pending[#pending + 1] = M.line(rec)
    if #pending >= BATCH then drain() end
  end
  function w.finish(report)
    for pos, rec in ipairs(report or {}) do w.add(rec, pos) end
    drain()
    return out:finish()
  end
  function w.abort()
    drain()
    out:finish()
  end
  return w
end

-- Why a report's text is not one this tool wrote (its whole lines: JSON objects with a
-- DeviceName, or apply's group creation, and an outcome), or nil; `done` gets the
-- `change_key` of each apply change reported done.
local function report_text_problem(body, done)
  local n = 0
  local key = require("aliyun.iot.fleet.apply").change_key
  for line in body:gmatch("([^\n]*)\n") do
    n = n + 1
    local ok, rec = pcall(core().json_decode, line)
    if not ok then error(rec, 0) end -- no verdict on the line: an interrupt, memory
    if type(rec) ~= "table" or type(rec.outcome) ~= "string" or type(rec.DeviceName) ~= "string"
       and rec.change ~= "create_group" then
      return ("line %d is not a report line"):format(n)
    end
    if rec.outcome == "done" and type(rec.change) == "string" then done[key(rec)] = true end
  end
end

local MAX_REPORT = 4294967296 -- the largest report continued [bytes]

--- Refuses (exit 2) apply's `--report` when it names an existing regular file that the
-- apply journal `records` did not record last (see `open_apply`): called before any
-- request, the file is only created or opened later. Retire's `--report` with `--state`
-- is checked against the retire's journal the same way (`job = "retire"`).
-- @tparam table opts the checked options (`report`)
-- @tparam ?table records the journal's events
-- @tparam[opt="apply"] string job the command whose journal it is
-- @treturn string the kind of what is at the path (`core.file_kind`), and its identity
function M.check_apply(opts, records, job)
  job = job or "apply"
  local path = opts.report
  local kind, id = core().file_kind(path)
  if kind ~= "file" then return kind, id end
  local why = require("aliyun.iot.fleet.apply_journal").report_problem(records,
    {path = path, id = id, size = math.huge}, job)
  if why then
    require("aliyun.iot.cli.args").local_error("--report %s exists and %s: give the path of " ..
      "a new file (a file this run did not create is never written to; with the --state of " ..
      "a killed %s, the report it recorded is continued)", path, why, job)
  end
  return kind, id
end

--- Opens apply's `--report` (exit 2 before any request when refused): a path naming
-- nothing yet becomes a new file; an existing regular file is continued only when the
-- apply journal `records` (`--state`, read by `aliyun.iot.fleet.apply_journal.inspect`)
-- recorded it last, with its identity and no more than its size now, and it holds only
-- report lines (a last line cut by a kill is cut off); any other file is refused, never
-- written to. Retire's, with its journal's events, likewise (`job = "retire"`).
-- @tparam table opts the checked options (`report`, `state`)
-- @tparam ?table records the journal's events (nil: no journal, or none yet)
-- @tparam[opt="apply"] string job the command whose journal it is
-- @treturn table the writer (as `open`)
-- @treturn ?table `{path=, id=, size=, new=}` for `client:apply{report=}` or
--   `client:retire{report=}` (nil for a device, FIFO or descriptor name, which is written
--   as it is)
-- @treturn table the `change_key` (`aliyun.iot.fleet.apply`) of each change the report
--   continued holds a `done` line for (for `client:apply{reported=}`)
function M.open_apply(opts, records, job)
  local path = opts.report
  local kind, id = M.check_apply(opts, records, job)
  if kind ~= "file" then
    -- nothing there (a new file), or a device, FIFO or descriptor name (written as it is);
    -- anything else is refused by `open`
    local w = M.open(path)
    return w, w.id and {path = path, id = w.id, size = 0, new = true}, {}
  end
  local problem = require("aliyun.iot.fleet.apply_journal").report_problem
  local done = {}
  local out, kept = output.continue_file("--report", path, id, MAX_REPORT, function(body)
    return problem(records, {path = path, id = id, size = #body}, job)
      or report_text_problem(body, done)
  end)
  return M.open(path, out), {path = path, id = id, size = kept, new = false}, done
end

--- Writes the rest of the command's --report (`ctx.report`, from `open`) with `records`
-- (the Report of the result or error) and closes it; false when it could not be written
-- (the reason on stderr: the job then never exits 0). True when there is no report.
-- @tparam table ctx the command's context
-- @tparam ?table records
-- @tparam table streams
-- @treturn boolean
function M.close(ctx, records, streams)
  if not ctx.report then return true end
  local ok, err = ctx.report.finish(records)
  ctx.report = nil
  if not ok then
    streams.stderr:write("aliyun-iot: ", require("aliyun.iot.errors").printable(err), "\n")
  end
  return ok and true or false
end

return M
