--- A job's target: the endpoint, RegionId, IotInstanceId and ProductKey its journal
-- records (with the API version and, for information, the AccessKeyId), so that a resume
-- goes back to where the job lives and nowhere else. A resume sent elsewhere would
-- register the rest of the job in another account, region or instance, and a later
-- resume against the right one would take devices that belong to another job.
--
-- Compared on resume: endpoint (the effective URL, scheme and host without regard to
-- case), RegionId, IotInstanceId (absent = none) and, when the caller names one,
-- ProductKey. Never compared: AccessKeyId (temporary credentials change it on every
-- refresh) and ApiVersion (recorded to say which API wrote the job).
-- A journal written before targets were recorded (no `endpoint` in its job line) is
-- resumed against the client's settings, as it always was; its ProductKey is still held
-- to the caller's.
-- @module aliyun.iot.batch.target

local errors = require "aliyun.iot.errors"

local M = {}

--- The job line's target fields for a new job, from the client behind `port`.
-- @tparam table port `aliyun.iot.batch.port`
-- @treturn table `{endpoint=, RegionId=, IotInstanceId=, ApiVersion=, AccessKeyId=}` (the
--   nil ones absent)
function M.record(port)
  local t = port:target(true)
  return {endpoint = t.endpoint, RegionId = t.RegionId, IotInstanceId = t.IotInstanceId,
          ApiVersion = t.ApiVersion, AccessKeyId = t.AccessKeyId}
end

-- "endpoint http://a/, RegionId cn-shanghai, no IotInstanceId, ProductKey pk" (values from
-- a file or the caller: escaped).
local function describe(t, with_product)
  local p = errors.printable
  local parts = {"endpoint " .. p(t.endpoint), "RegionId " .. p(t.RegionId),
                 t.IotInstanceId and ("IotInstanceId " .. p(t.IotInstanceId)) or "no IotInstanceId"}
  if with_product then parts[#parts + 1] = "ProductKey " .. p(with_product) end
  return table.concat(parts, ", ")
end

local function same_endpoint(a, b)
  return type(a) == "string" and type(b) == "string" and a:lower() == b:lower()
end

--- Checks a journal's job line against the client's target before anything is sent.
-- @tparam table job the journal's `job` record
-- @tparam table port `aliyun.iot.batch.port`
-- @tparam[opt] string product_key the ProductKey the caller expects
-- @tparam string path the journal's path (for the message)
-- @treturn ?table err `TargetMismatch` (fields `journal_target` and `client_target`,
--   each `{endpoint=, RegionId=, IotInstanceId=, ProductKey=}`), the message naming both;
--   nil when the job may be resumed with this client
function M.check(job, port, product_key, path)
  local mine = port:target()
  local recorded = job.endpoint ~= nil
  local differs = product_key ~= nil and product_key ~= job.ProductKey
  if recorded and not differs then
    differs = not same_endpoint(job.endpoint, mine.endpoint) or job.RegionId ~= mine.RegionId
      or job.IotInstanceId ~= mine.IotInstanceId
  end
  if not differs then return nil end
  local theirs = recorded and job or mine
  local err = errors.new{code = "TargetMismatch", message = ("the journal %s records a job " ..
    "at %s; this resume is set for %s: a resume goes back to the journal's target, never " ..
    "elsewhere (nothing was sent)"):format(errors.printable(path),
      describe(theirs, job.ProductKey), describe(mine, product_key or job.ProductKey))}
  err.journal_target = {endpoint = theirs.endpoint, RegionId = theirs.RegionId,
                        IotInstanceId = theirs.IotInstanceId, ProductKey = job.ProductKey}
  err.client_target = {endpoint = mine.endpoint, RegionId = mine.RegionId,
                       IotInstanceId = mine.IotInstanceId,
                       ProductKey = product_key or job.ProductKey}
  return err
end

return M
