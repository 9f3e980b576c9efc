--- A scripted IoT service behind a custom `transport` (the client option): it answers the
-- batch helpers' five actions as the service would, and a case's `tamper(action, params,
-- answer, svc)` may change any answer (return a table to be JSON-encoded, or a string to be
-- sent as the raw body), so that specs can hand the helpers any answer at all.
--
--     local svc = fake.new{tamper = function(action, params, a) ... return a end}
--     local c = iot.new{..., transport = svc.transport, qps = false}
-- svc.requests lists {action=, params=}; svc.applies the applies it made.
local cjson = require("cjson").new()

local M = {}

local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function parse(form)
  local t = {}
  for k, v in form:gmatch("([^&=]+)=([^&]*)") do t[unescape(k)] = unescape(v) end
  return t
end

local function names_of(p)
  local out = {}
  for i = 1, 10000 do
    local n = p["DeviceName." .. i] or p["DeviceNameList." .. i .. ".DeviceName"]
    if not n then break end
    out[i] = n
  end
  return out
end

--- A device record of apply `id` as the service lists it.
function M.device(id, i, name)
  return {DeviceName = name or ("dev%d_%05d"):format(id, i), DeviceSecret = ("S%031d"):format(i),
          IotId = ("I%dx%d"):format(id, i), DeviceId = "x"}
end

local function answer(svc, action, p)
  if action == "BatchRegisterDevice" or action == "BatchCheckDeviceNames" then
    local id = 4415 + #svc.applies
    local a = {ApplyId = id, names = action == "BatchCheckDeviceNames" and names_of(p) or nil,
               count = tonumber(p.Count)}
    svc.applies[#svc.applies + 1] = a
    svc.by_id[tostring(id)] = a
    return {RequestId = "r", Success = true, Data = {ApplyId = id}}
  end
  local a = svc.by_id[p.ApplyId]
  if action == "BatchRegisterDeviceWithApplyId" then
    a.registered = true
    return {RequestId = "r", Success = true, Data = {ApplyId = a.ApplyId}}
  elseif action == "QueryBatchRegisterDeviceStatus" then
    local status = (a.names and not a.registered) and "CHECK_SUCCESS" or "CREATE_SUCCESS"
    return {RequestId = "r", Success = true, Data = {Status = status,
      ValidList = {Name = {}}, InvalidList = {Name = {}},
      InvalidDetailList = {invalidDetailList = {}}}}
  end
  -- QueryPageByApplyId
  local total = a.names and #a.names or a.count
  local page, size = tonumber(p.CurrentPage), tonumber(p.PageSize)
  local list = {}
  for i = (page - 1) * size + 1, math.min(page * size, total) do
    list[#list + 1] = M.device(a.ApplyId, i, a.names and a.names[i])
  end
  return {RequestId = "r", Page = page, PageSize = size, PageCount = math.ceil(total / size),
          Total = total, ApplyDeviceList = {ApplyDeviceInfo = list}}
end

--- A form body or query string as a table of parameters (spec/support/fake_product.lua too).
M.parse = parse

--- A new service.
-- @tparam[opt] table opts `tamper` (function, see above), `delay` [s] before each answer
function M.new(opts)
  opts = opts or {}
  local svc = {requests = {}, applies = {}, by_id = {}}
  function svc.transport(req)
    local p = parse(req.body or (req.url:match("%?(.*)$") or ""))
    local action = p.Action or req.headers["x-acs-action"]
    svc.requests[#svc.requests + 1] = {action = action, params = p}
    if opts.delay then require("aliyun.iot.core").sleep(opts.delay) end
    local out = answer(svc, action, p)
    if opts.tamper then out = opts.tamper(action, p, out, svc) end
    if type(out) ~= "string" then out = cjson.encode(out) end
    return {status = 200, headers = {["content-type"] = "application/json"}, body = out}
  end
  --- How many requests of `action` it answered.
  function svc.count(action)
    local n = 0
    for _, r in ipairs(svc.requests) do if r.action == action then n = n + 1 end end
    return n
  end
  return svc
end

return M
