--- `register --names-file F --dry-run`: the names checked locally (name rules, nicknames,
-- duplicates) and the requests a run would send printed as JSON, sending nothing (no
-- journal either). Exit status as the run would end before registering: 2 for invalid
-- names, 3 with --skip-invalid, 0 when all are valid.
-- @module aliyun.iot.cli.dryrun

local names = require "aliyun.iot.cli.names"
local output = require "aliyun.iot.cli.output"
local report = require "aliyun.iot.cli.report"
local json = require "aliyun.iot.cli.json"

local printable = require("aliyun.iot.errors").printable
local usage_error = require("aliyun.iot.cli.args").usage_error

local M = {}

-- The BatchCheckDeviceNames parameters of one chunk, as the job sends them.
local function check_params(pk, chunk)
  local list, nicks = {}, false
  for i, r in ipairs(chunk) do
    list[i] = r.DeviceName
    nicks = nicks or r.DeviceNickname ~= nil
  end
  if nicks then return {ProductKey = pk, DeviceNameList = chunk} end
  return {ProductKey = pk, DeviceName = list}
end

-- The options of a real run that a dry run could only ignore: each is refused (exit 2)
-- rather than left to look as if it had done something (a --report never written, a
-- --format esp-idf --out FILE.csv that receives JSON).
local function refuse_unused(opts)
  for _, o in ipairs{{"report", "--report"}, {"state", "--state"}, {"mqtt", "--mqtt"},
                     {"no_secrets", "--no-secrets"}, {"apply_timeout", "--apply-timeout"}} do
    if opts[o[1]] ~= nil then usage_error("%s does not apply to --dry-run (it writes no " ..
      "devices, journal or report: the plan of requests, as JSON)", o[2]) end
  end
  if opts.format ~= "csv" then
    usage_error("--format does not apply to --dry-run (it prints its plan as JSON)")
  end
end

--- Runs the dry run.
-- @tparam table opts the checked options
-- @tparam table streams
-- @tparam table ctx the interrupt context (`out`)
-- @treturn integer exit status
function M.run(opts, streams, ctx)
  refuse_unused(opts)
  local devices = names.read(opts, streams)
  output.check_out(opts)
  -- no client: a dry run needs no credentials (the chunks are the default max_batch_size's)
  local plan = require("aliyun.iot.batch").check_names(devices)
  local requests = {}
  for i, chunk in ipairs(plan.chunks) do
    requests[i] = {Action = "BatchCheckDeviceNames", Names = #chunk,
                   Parameters = check_params(opts.product_key, chunk)}
  end
  -- a plan is no replacement for a file: --out must name a new one (a dry run aimed at
  -- the devices file of an earlier run must not replace its secrets with JSON)
  local out = opts.out and output.open_new("--out", opts.out) or output.open(nil, streams.stdout)
  ctx.out = out
  out.fh:write(json.json({ProductKey = opts.product_key, Requests = requests,
    Valid = #plan.Valid, Invalid = plan.Invalid,
    Then = "each check is polled (QueryBatchRegisterDeviceStatus), registered " ..
      "(BatchRegisterDeviceWithApplyId) and its devices read (QueryPageByApplyId)"},
    {"Requests", "Invalid", "Requests.Parameters.DeviceName"}), "\n")
  local ok, werr = out:finish()
  if not ok then streams.stderr:write("aliyun-iot: ", werr, "\n") return report.EXIT_FAILURE end
  streams.stderr:write(("aliyun-iot: dry run: %d names valid, %d invalid, %d " ..
    "BatchCheckDeviceNames calls; nothing was sent\n"):format(#plan.Valid, #plan.Invalid,
    #requests))
  if #plan.Invalid == 0 then return report.EXIT_OK end
  for _, inv in ipairs(plan.Invalid) do
    streams.stderr:write(("  %s: %s\n"):format(printable(inv.DeviceName), printable(inv.ErrorMsg)))
  end
  return opts.skip_invalid and report.EXIT_PARTIAL or report.EXIT_USAGE
end

return M
