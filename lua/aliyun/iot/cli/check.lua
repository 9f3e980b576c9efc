--- `aliyun-iot check --product-key PK --names-file F`: asks the service which names it
-- would register (`client:check_device_names`: BatchCheckDeviceNames and its status,
-- existing names looked up with BatchQueryDeviceDetail), registering nothing, and prints
-- `{"Valid": [...], "Invalid": [{"DeviceName":..,"ErrorMsg":..}], "Existing": [...],
-- "ApplyIds": [...]}` as JSON. Exit status 0 when every name is valid, 3 when some are
-- not (invalid or existing), 1 or 2 for a failure as elsewhere.
-- @module aliyun.iot.cli.check

local names = require "aliyun.iot.cli.names"
local report = require "aliyun.iot.cli.report"
local json = require "aliyun.iot.cli.json"

local M = {}

--- Runs the check.
-- @tparam table opts the checked options
-- @tparam table streams
-- @tparam table ui the progress UI (`on_progress`, `done`)
-- @tparam table ctx the interrupt context (`out`)
-- @treturn integer exit status
function M.run(opts, streams, ui, ctx)
  local devices = names.read(opts, streams)
  local out, client, err = require("aliyun.iot.cli.commands").start(opts, streams, ui, ctx)
  local res
  if client then
    res, err = client:check_device_names{ProductKey = opts.product_key, Devices = devices,
      deadline = opts.deadline, on_progress = ui.on_progress}
  end
  ui.done()
  if not res then
    out:abort()
    report.print_error(streams, err)
    return report.failure_code(err)
  end
  local ids = {}
  for i, id in ipairs(res.ApplyIds) do ids[i] = tostring(id) end
  out.fh:write(json.json({Valid = res.Valid, Invalid = res.Invalid, Existing = res.Existing,
    ApplyIds = ids}, {"Valid", "Invalid", "Existing", "ApplyIds"}), "\n")
  local ok, werr = out:finish()
  if not ok then streams.stderr:write("aliyun-iot: ", werr, "\n") return report.EXIT_FAILURE end
  ui.note(("%d valid, %d invalid, %d existing; nothing was registered")
    :format(#res.Valid, #res.Invalid, #res.Existing))
  if #res.Invalid + #res.Existing > 0 then return report.EXIT_PARTIAL end
  return report.EXIT_OK
end

return M
