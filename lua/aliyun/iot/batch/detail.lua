--- Named devices' secrets through BatchQueryDeviceDetail (docs/wire.md §10): at most 100
-- names a call, paced by the client at the action's 5 QPS. The service leaves names that
-- do not exist out silently, so an answer may hold fewer records than names asked, never
-- more, never a name that was not asked, never one twice; each record must look like what
-- the API produces (`aliyun.iot.batch.answer.device`) before its secret is used.
-- @module aliyun.iot.batch.detail

local answer = require "aliyun.iot.batch.answer"
local validate = require "aliyun.iot.validate"

local M = {}

--- The most names one BatchQueryDeviceDetail call takes (§10).
M.MAX = 100

-- The reason a checked answer is unusable, or nil and the records by DeviceName.
local function records(res, product_key, asked, with_status)
  local data = type(res) == "table" and res.Data
  if data == nil then return {} end -- nothing found: the service may leave Data out
  if type(data) ~= "table" then return nil, "Data is not an object" end
  local list = data.Data
  if list == nil then return {} end
  local n = validate.list_length(list)
  if not n then return nil, "Data.Data is not a list" end
  if n > #asked then
    return nil, ("Data.Data holds %d records for %d names asked"):format(n, #asked)
  end
  local wanted, out = {}, {}
  for _, name in ipairs(asked) do wanted[name] = true end
  for i, r in ipairs(list) do
    local dev, why = answer.device(r)
    if not dev then return nil, ("Data.Data[%d]: %s"):format(i, why) end
    if not wanted[dev.DeviceName] then
      return nil, ("Data.Data[%d] is device %s, which was not asked for"):format(i, dev.DeviceName)
    end
    if out[dev.DeviceName] then
      return nil, ("Data.Data lists device %s twice"):format(dev.DeviceName)
    end
    if r.ProductKey ~= nil and r.ProductKey ~= product_key then
      return nil, ("Data.Data[%d] (device %s) is of another product"):format(i, dev.DeviceName)
    end
    if with_status and type(r.Status) == "string" then dev.Status = r.Status end
    out[dev.DeviceName] = dev
  end
  return out
end

--- Reads the details of up to `MAX` devices of a product.
-- @tparam table port `aliyun.iot.batch.port`
-- @tparam string product_key
-- @tparam {string,...} names 1 to `MAX` DeviceNames
-- @tparam[opt] table opts port options (`deadline`)
-- @tparam[opt] boolean with_status keep each record's `Status` (`ONLINE`, `DISABLE`, ...,
--   as the answer gives it when it is a string; absent otherwise)
-- @treturn ?table `{[DeviceName] = {DeviceName=, DeviceSecret=, IotId=}}` for the names
--   the service found (the others do not exist)
-- @treturn ?table err the call's error, or `InvalidResponse` (`action` set)
function M.fetch(port, product_key, names, opts, with_status)
  assert(#names >= 1 and #names <= M.MAX, "detail.fetch takes 1 to 100 names")
  local res, err = port:invoke("BatchQueryDeviceDetail",
    {ProductKey = product_key, DeviceName = names}, opts)
  if not res then return nil, err end
  local found, why = records(res, product_key, names, with_status)
  if not found then
    return nil, answer.invalid_response("BatchQueryDeviceDetail: " .. why,
      {action = "BatchQueryDeviceDetail",
       request_id = type(res.RequestId) == "string" and res.RequestId or nil})
  end
  return found
end

return M
