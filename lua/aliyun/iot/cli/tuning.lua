--- The command's flags for client options the library already has (issue 13):
-- `--signature-algorithm`, `--response-format json|xml`, `--max-batch-size N` and
-- `--qps Action=N[,Action=N...]`. Their form is checked here (a usage error, exit 2);
-- their values by the library (`InvalidParameter`, exit 2 too).
-- @module aliyun.iot.cli.tuning

local actions = require "aliyun.iot.actions"

local M = {}

--- The flags, as `cli/args.lua`'s OPTIONS entries.
M.OPTIONS = {
  ["signature-algorithm"] = {value = true}, ["response-format"] = {value = true},
  ["max-batch-size"] = {value = true}, qps = {value = true},
}

-- `A=1,B=2.5` -> {A = 1, B = 2.5}; raises a usage error through `fail`. The command only
-- sends actions of the action table, so a name outside it is a typo that would leave the
-- action it meant at its default rate (`call`'s own action excepted: it may be any).
local function qps_table(text, fail, called)
  local t = {}
  for item in (text .. ","):gmatch("([^,]*),") do
    local action, n = item:match("^%s*([A-Za-z][A-Za-z0-9]*)=([%d.]+)%s*$")
    if not action or not tonumber(n) then
      fail("--qps takes Action=N[,Action=N...], got '%s'", text)
    end
    if not actions.rows[action] and action ~= called then
      fail("--qps: %s is not an action this command sends (the names are the API's, "
        .. "e.g. BatchRegisterDeviceWithApplyId=2)", action)
    end
    t[action] = tonumber(n)
  end
  return t
end

--- The client options these flags ask for.
-- @tparam table opts parsed options (`signature_algorithm`, `response_format`,
--   `max_batch_size`, `qps` as strings)
-- @tparam function fail `fail(format, ...)` raises a usage error
-- @treturn table options for `iot.new` (only those given)
function M.client_options(opts, fail)
  local o = {signature_algorithm = opts.signature_algorithm}
  if opts.response_format then
    local f = opts.response_format:lower()
    if f ~= "json" and f ~= "xml" then
      fail("--response-format must be json or xml, got '%s'", opts.response_format)
    end
    o.format = f:upper()
  end
  if opts.max_batch_size then
    if not opts.max_batch_size:find("^%d+$") then
      fail("--max-batch-size must be a whole number, got '%s'", opts.max_batch_size)
    end
    o.max_batch_size = tonumber(opts.max_batch_size)
  end
  if opts.qps then
    o.qps = qps_table(opts.qps, fail, opts.command == "call" and opts.args and opts.args[1])
  end
  return o
end

return M
