--- A scripted product behind a custom `transport` (the client option), for
-- `client:product_devices`: QueryDevice lists its devices newest first, pages by number or,
-- from a NextToken (a cursor, as the emulator's), after the token's place; and
-- BatchQueryDeviceDetail gives the named devices (unknown names left out). A case's
-- `tamper(action, params, answer, svc)` may change any answer (a table is JSON-encoded, a
-- string sent as the raw body), so that specs can hand the iterator any answer at all.
--
--     local svc = fake.new{count = 120, secrets = false, tamper = function(a, p, out) ... end}
--     local c = iot.new{..., transport = svc.transport, qps = false}
-- svc.requests lists {action=, params=}; svc.count(action) counts them.
local parse = require("spec.support.fake_iot").parse
local cjson = require("cjson").new()

local M = {}

--- Device i of the product: a name, a secret and an IotId like the API's.
function M.device(i)
  return {DeviceName = ("unit_%06d"):format(i), DeviceSecret = ("S%031d"):format(i),
          IotId = ("I%dx%d"):format(i, i)}
end

local function listed(svc, i)
  local d = M.device(i)
  return {DeviceName = d.DeviceName, DeviceSecret = svc.secrets and d.DeviceSecret or nil,
          IotId = d.IotId, ProductKey = svc.product_key, DeviceStatus = "UNACTIVE", DeviceId = "x"}
end

local function query(svc, p)
  local n, size, page = svc.total, tonumber(p.PageSize) or 10, tonumber(p.CurrentPage) or 1
  local first = p.NextToken and tonumber(p.NextToken:match("^T(%d+)$")) or n - (page - 1) * size
  local list = {}
  for i = first, math.max(first - size + 1, 1), -1 do list[#list + 1] = listed(svc, i) end
  local res = {RequestId = "r", Success = true, Page = page, PageSize = size,
               PageCount = math.ceil(n / size), Total = n, Data = {DeviceInfo = list}}
  if first - size >= 1 then res.NextToken = "T" .. (first - size) end
  return res
end

local function detail(svc, p)
  local out = {}
  for k = 1, 1000 do
    local name = p["DeviceName." .. k]
    if not name then break end
    local i = tonumber(name:match("^unit_(%d+)$"))
    if i and i >= 1 and i <= svc.total then
      local d = M.device(i)
      d.ProductKey, d.Nickname = svc.product_key, ""
      out[#out + 1] = d
    end
  end
  return {RequestId = "r", Success = true, Data = {Data = out}}
end

--- A new product.
-- @tparam table opts `count` (devices), `product_key` (default a1TestPK001), `secrets`
--   (false: QueryDevice leaves DeviceSecret out), `tamper` (see above)
function M.new(opts)
  local svc = {requests = {}, total = opts.count, product_key = opts.product_key or "a1TestPK001",
               secrets = opts.secrets ~= false}
  function svc.transport(req)
    local p = parse(req.body or (req.url:match("%?(.*)$") or ""))
    local action = p.Action or req.headers["x-acs-action"]
    svc.requests[#svc.requests + 1] = {action = action, params = p}
    local out = action == "QueryDevice" and query(svc, p) or detail(svc, p)
    if opts.tamper then out = opts.tamper(action, p, out, svc) end
    if type(out) ~= "string" then out = cjson.encode(out) end
    return {status = 200, headers = {["content-type"] = "application/json"}, body = out}
  end
  function svc.count(action)
    local n = 0
    for _, r in ipairs(svc.requests) do if r.action == action then n = n + 1 end end
    return n
  end
  return svc
end

return M
