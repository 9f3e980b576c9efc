--- The `--report FILE` of a named job: one JSON line per requested name, written as the
-- job decides each one (`on_report`), the rest when it ends (the `Report` of its result
-- or error). Keys in a fixed order; no secret is ever written (the records hold none).
-- @module aliyun.iot.cli.outcomes

local output = require "aliyun.iot.cli.output"
local json = require "aliyun.iot.cli.json"

local M = {}

-- change and target: apply's records (cli/apply.lua), absent from register's; online:
-- retire's, a device deleted by --force while still ONLINE
local KEYS = {"DeviceName", "change", "target", "outcome", "online", "ApplyId", "code", "message",
              "RequestId"}
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
-- already) and returns a writer: `add(rec, pos)` (each position once), `finish(report)`
-- (the positions not written yet, then the close; true or nil and the reason), `abort()`.
-- @tparam string path
function M.open(path)
  local out = output.open_new("--report", path)
  local w, written, pending = {}, {}, {}
  local function drain()
    if #pending > 0 then out.fh:write(table.concat(pending)) end
    pending = {}
  end
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
