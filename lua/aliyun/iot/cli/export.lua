--- `aliyun-iot export --product-key PK`: every device of a product with its DeviceSecret
-- (`client:product_devices`), written as the pages come, to the same output as `register`
-- (stdout, or `--out FILE` replaced atomically with mode 0600 only once complete: a
-- failure leaves no partial file behind).
-- @module aliyun.iot.cli.export

local commands = require "aliyun.iot.cli.commands"
local output = require "aliyun.iot.cli.output"
local progress = require "aliyun.iot.cli.progress"

local M = {}

local PROGRESS_EVERY = 50 -- devices between progress events (a QueryDevice page)

--- Runs the command.
-- @tparam table opts the checked options (`product_key`, `format`, `out`, `deadline`, ...)
-- @tparam table streams `{stdout=, stderr=}`
-- @tparam table ui `aliyun.iot.cli.progress`
-- @tparam function now the monotonic clock [s]
-- @tparam table ctx receives the output (`out`), for Ctrl-C
-- @treturn integer exit status: 0 done, 1 a service or network failure or an output that
--   could not be written, 2 a local mistake (bad value, no credentials)
function M.run(opts, streams, ui, now, ctx)
  local out, client, cerr = commands.start(opts, streams, ui, ctx, {devices = true})
  if not client then return commands.failed(out, streams, cerr) end
  local w = output.device_writer(out, opts, opts.product_key)
  local t0 = now()
  for dev, err in client:product_devices{ProductKey = opts.product_key, deadline = opts.deadline} do
    if not dev then
      ui.done()
      return commands.failed(out, streams, err)
    end
    w.add(dev)
    -- a --quiet ui has no on_progress (the job helpers take it as optional too)
    if ui.on_progress and w.count % PROGRESS_EVERY == 0 then
      ui.on_progress{phase = "export", done = w.count}
    end
  end
  w.close()
  ui.done()
  local code = commands.finished(out, streams)
  if code == 0 then
    local stats = client:stats()
    ui.note(("%s of product %s in %.1f s, %s, %d throttled")
      :format(progress.count_of(w.count, "device", "devices"), opts.product_key, now() - t0,
        progress.count_of(stats.requests or 0, "request", "requests"), stats.throttled or 0))
  end
  return code
end

return M
