--- `aliyun-iot mqtt-credentials --in FILE`: the connection columns (`--mqtt`) for the
-- devices of a file written earlier (by register, resume, devices or export, in CSV, JSON
-- or NDJSON), in any output format. No request is sent: the parameters are computed
-- (`iot.device_credentials`). The whole file is read and every device's parameters are
-- computed before anything is written, so a bad row is an error (exit 2) with no output.
-- @module aliyun.iot.cli.mqtt

local connection = require "aliyun.iot.cli.connection"
local commands = require "aliyun.iot.cli.commands"
local devfile = require "aliyun.iot.cli.devfile"
local output = require "aliyun.iot.cli.output"

local local_error = require("aliyun.iot.cli.args").local_error
local printable = require("aliyun.iot.errors").printable

local M = {}

--- Runs the command.
-- @tparam table opts the checked options (`in`, `out`, `format`, the connection options)
-- @tparam table streams
-- @tparam table ctx receives the output (for an interrupt)
-- @treturn integer exit status: 0, 1 (the output could not be written) or 2 (a bad file)
function M.run(opts, streams, ctx)
  local devices, wheres = devfile.read(opts["in"])
  local cred_opts = connection.options(opts)
  for i, dev in ipairs(devices) do
    local ok, why = connection.add(dev, cred_opts)
    if not ok then local_error("%s: %s", wheres[i], printable(why)) end
  end
  output.check_out(opts, nil, true)
  local out = output.open_devices(opts, streams.stdout)
  ctx.out = out
  output.write_devices(opts, out, devices)
  return commands.finished(out, streams)
end

return M
