--- Asking the service which names it would take, registering nothing: the checks of a
-- named job (BatchCheckDeviceNames, D-69482, then QueryBatchRegisterDeviceStatus, D-69483,
-- until each check ends), with the names that exist already told apart from the other
-- invalid ones by BatchQueryDeviceDetail (`aliyun.iot.batch.existing`). A check creates no
-- device; an apply that passed its check is simply never registered.
-- @module aliyun.iot.batch.check

local named = require "aliyun.iot.batch.named"

local M = {}

--- Runs the checks of `job` (a named job with `skip_invalid` and `existing = "skip"`, so
-- that the valid rest of a refused chunk is checked again).
-- @treturn ?table `{Valid = {names}, Invalid = {{DeviceName=, ErrorMsg=}, ...}, Existing =
--   {names}, ApplyIds = {...}}`, names in the order asked
-- @treturn ?table err the job's error (with `ApplyIds`)
function M.run(job)
  local err = named.check_all(job)
  if err then return nil, job:fail(err) end
  local passed = {}
  for _, a in ipairs(job.applies) do
    if not a.check_failed then
      for _, n in ipairs(a.Names) do passed[n] = true end
    end
  end
  local valid = {}
  for _, r in ipairs(job.valid) do
    if passed[r.DeviceName] then valid[#valid + 1] = r.DeviceName end
  end
  return {Valid = valid, Invalid = job.invalid, Existing = job.existing_names or {},
          ApplyIds = job:apply_ids()}
end

return M
