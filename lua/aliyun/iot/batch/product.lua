--- `client:product_devices`' iterator: every device of a product with its DeviceSecret.
-- QueryDevice (docs/wire.md §4 Cheap extras, §10) lists the product newest first, PageSize
-- at most 50; from the second page on the walk follows the NextToken of the page before
-- (the service demands one once CurrentPage x PageSize passes 10,000, and a token marks a
-- place in the list, where page numbers shift as devices come and go). A page that carries
-- no token while Total says more remain is followed by its page number as long as the
-- service allows that (up to 10,000 devices): the pages do not say whether the service
-- always sends a token, so the more tolerant reading is taken. The devices a page lists
-- without a DeviceSecret or IotId get theirs from BatchQueryDeviceDetail
-- (`aliyun.iot.batch.detail`, up to 100 names a call, so two pages of 50 a call).
-- The client's pacer holds each action to its documented QPS (QueryDevice 50,
-- BatchQueryDeviceDetail 5); QueryDevice's drop to 2 QPS for deep pages or big products
-- (§4, §10 word it differently: either reading applies) is kept here, by pausing.
--
-- Memory stays flat but for one entry per device listed (its DeviceName, so that each
-- device is yielded once) and one per page (its NextToken, so that a loop is caught); at
-- most two pages of records are held at a time.
--
-- Nothing the service sends is trusted: every count and token is type-checked, a page
-- holds at most the PageSize asked, the pages read are bounded by the first page's Total
-- and the page size, a token seen before is a loop, the devices listed never exceed the
-- first Total, and a listing that ends with fewer devices than both the first and the
-- last Total, more than devices deleted while creations went on explain (`at_end`), is
-- cut short. Each is `InvalidResponse`, never a Lua error. Devices created during the
-- walk lie before the token's place and are not listed; a device deleted before its page,
-- or between its page and its details, is left out (the service leaves it out).
-- @module aliyun.iot.batch.product

local answer = require "aliyun.iot.batch.answer"
local detail = require "aliyun.iot.batch.detail"
local devices = require "aliyun.iot.batch.devices"
local validate = require "aliyun.iot.validate"

local M = {}

--- QueryDevice's largest page (§4 Cheap extras).
M.SIZE = 50

local PLAIN_PAGING = 10000 -- devices reachable by page number alone (§4, §10)
local SLOW_FROM, SLOW_GAP = 100000, 0.5 -- QueryDevice's 2 QPS from there on (§4, §10)
local TOKEN_MAX = 1024 -- the longest NextToken taken back (no page gives a length)

local COUNTS = {"Page", "PageSize", "PageCount", "Total"}

-- The next token: nil at the end, false for a value that cannot be one (not a string of
-- printable ASCII without spaces, or too long: it goes back into a request).
local function token_of(v)
  if v == nil or v == "" then return nil end
  if type(v) ~= "string" or #v > TOKEN_MAX or not v:find("^[\33-\126]+$") then return false end
  return v
end

-- A page's counts, each a count and consistent with what was asked.
local function counts(it, res)
  local c = {}
  for _, k in ipairs(COUNTS) do
    c[k] = answer.count(res[k])
    if not c[k] then return nil, ("%s is %s, not a count"):format(k, type(res[k])) end
  end
  if c.PageSize ~= it.size then
    return nil, ("a page of %d was asked, PageSize %d came"):format(it.size, c.PageSize)
  end
  if c.PageCount ~= math.ceil(c.Total / it.size) then
    return nil, ("PageCount %d does not match Total %d"):format(c.PageCount, c.Total)
  end
  if not it.total and c.Page ~= 1 then return nil, ("page 1 was asked, Page %d came"):format(c.Page) end
  return c
end

-- One record of a page: `{DeviceName=, DeviceSecret=, IotId=}`, or `{DeviceName=}` and true
-- when it lacks its secret or IotId (BatchQueryDeviceDetail then gives them).
local function listed(it, r)
  if type(r) ~= "table" then return nil, "is " .. type(r) .. ", not an object" end
  if r.ProductKey ~= nil and r.ProductKey ~= it.ProductKey then return nil, "is of another product" end
  if r.DeviceSecret == nil or r.DeviceSecret == "" or r.IotId == nil or r.IotId == "" then
    local why = validate.device_name_problem(r.DeviceName)
    if why then return nil, "has a DeviceName that " .. why end
    return {DeviceName = r.DeviceName}, nil, true
  end
  local dev, why = answer.device(r)
  if dev then dev.DeviceStatus = r.DeviceStatus end -- checked when yielded
  return dev, why
end

-- The page's list of devices, at most the page size.
local function list_of(it, res)
  local data = res.Data
  if data == nil then return {} end
  if type(data) ~= "table" then return nil, "Data is not an object" end
  local list = data.DeviceInfo
  if list == nil then return {} end
  local n = validate.list_length(list)
  if not n then return nil, "Data.DeviceInfo is not a list" end
  if n > it.size then return nil, ("%d devices came for a page of %d"):format(n, it.size) end
  return list
end

-- Where the walk goes after this page: its token, or nil (ended or by page number).
local function follow(it, token, n)
  if token == false then return "NextToken is not a token" end
  if token and n == 0 then return "a page without devices carries a NextToken" end
  if token and it.tokens[token] then return "NextToken repeats an earlier page's (a loop)" end
  it.token = token or nil
  if token then it.tokens[token] = true end
  -- the pages Total allows are the most ever read, whatever a token says; without a
  -- token, a short page is the last
  local by_number = not token and n == it.size and (it.page + 1) * it.size <= PLAIN_PAGING
  it.ended = it.page >= it.max_pages or not (token or by_number)
end

-- Takes one checked page into `it.buf`; returns the reason it is unusable, or nil.
local function take_page(it, res)
  if type(res) ~= "table" then return "the page is not an object" end
  local c, why = counts(it, res)
  if not c then return why end
  if not it.total then it.total, it.max_pages = c.Total, math.max(1, math.ceil(c.Total / it.size)) end
  it.last_total = c.Total
  local list
  list, why = list_of(it, res)
  if not list then return why end
  for i, r in ipairs(list) do
    local dev, bad, lacks = listed(it, r)
    if not dev then return ("Data.DeviceInfo[%d] %s"):format(i, bad) end
    if not it.seen[dev.DeviceName] then
      it.seen[dev.DeviceName], it.n = true, it.n + 1
      if it.n > it.total then return ("more devices came than the %d of Total"):format(it.total) end
      it.buf[#it.buf + 1] = dev
      if lacks then it.lacking[#it.lacking + 1] = dev.DeviceName end
    end
  end
  return follow(it, token_of(res.NextToken), #list)
end

-- QueryDevice's 2 QPS for deep pages of big products: a pause since the last such call.
local function slow_down(port, it, p)
  if p * it.size < SLOW_FROM and (it.total or 0) < SLOW_FROM then return end
  local now = port:clock()
  local wait = it.slow_at and it.slow_at + SLOW_GAP - now or 0
  if it.t_end then wait = math.min(wait, it.t_end - now) end
  if wait > 0 then port:pause(wait) end
  it.slow_at = port:clock()
end

local function fetch_page(port, it)
  local p = it.page + 1
  slow_down(port, it, p)
  local res, err = port:invoke("QueryDevice", {ProductKey = it.ProductKey, PageSize = it.size,
    CurrentPage = p, NextToken = it.token}, {deadline = it.t_end})
  if not res then return err end
  it.page = p
  local why = take_page(it, res)
  if why then
    return answer.invalid_response(("QueryDevice, product %s, page %d: %s"):format(it.ProductKey,
      p, why), {action = "QueryDevice",
      request_id = type(res.RequestId) == "string" and res.RequestId or nil})
  end
end

-- The secrets the pages in `it.buf` lacked; a device the service no longer finds is left
-- out (deleted since its page was read).
local function complete(port, it)
  local found, err = detail.fetch(port, it.ProductKey, it.lacking, {deadline = it.t_end})
  if not found then return err end
  local out = {}
  for _, d in ipairs(it.buf) do
    local full = d.DeviceSecret and d or found[d.DeviceName]
    if full then out[#out + 1] = full end
  end
  it.buf = out
end

-- Reads the next pages, as many as one BatchQueryDeviceDetail call can complete.
local function refill(port, it)
  it.buf, it.i, it.lacking = {}, 0, {}
  for _ = 1, math.max(1, math.floor(detail.MAX / it.size)) do
    if it.ended then break end
    local err = fetch_page(port, it)
    if err then return err end
  end
  if #it.lacking > 0 then return complete(port, it) end
end

-- A fresh first page: its Total, and how many devices at its head (newest first) were
-- created since the walk began (not seen), nil when a full page is all new; or nil and
-- the call's error or the reason the page is unusable.
local function head(port, it)
  local res, err = port:invoke("QueryDevice", {ProductKey = it.ProductKey, PageSize = it.size,
    CurrentPage = 1}, {deadline = it.t_end})
  if not res then return nil, err end
  if type(res) ~= "table" then return nil, "the first page is not an object" end
  local c, why = counts(it, res)
  if not c then return nil, why end
  local list
  list, why = list_of(it, res)
  if not list then return nil, why end
  for i, r in ipairs(list) do
    local dev, bad = listed(it, r)
    if not dev then return nil, ("Data.DeviceInfo[%d] %s"):format(i, bad) end
    if it.seen[dev.DeviceName] then return c.Total, i - 1 end
  end
  -- a short page is the whole list: every device of it is new
  return c.Total, #list < it.size and #list or nil
end

-- The listing ended. Fewer devices than both Totals means pages went missing, unless
-- devices created meanwhile explain it: the list gained them while it lost those deleted
-- before their page, so the walk must have seen at least the Total now less the devices
-- created since it began (counted on a fresh first page; a page of nothing but new
-- devices cannot bound them, and is taken as a busy product).
local function at_end(port, it)
  if it.n >= math.min(it.total, it.last_total) then return nil end
  local now, created = head(port, it)
  if now ~= nil and (created == nil or it.n >= now - created) then return nil end
  if type(created) == "table" then return false, created end
  return false, answer.invalid_response(("QueryDevice, product %s: %s"):format(it.ProductKey,
    now == nil and created or ("the listing ended after %d devices in %d pages, but Total " ..
      "said %d (%d at the end, %d now, %d of them created since it began)"):format(it.n,
      it.page, it.total, it.last_total, now, created)), {action = "QueryDevice"})
end

-- QueryDevice's DeviceStatus values (§4); any other is not passed on.
local STATUSES = {ONLINE = true, OFFLINE = true, UNACTIVE = true, DISABLE = true}

local function next_device(port, it)
  while true do
    it.i = it.i + 1
    local d = it.buf[it.i]
    if d then
      return {ProductKey = it.ProductKey, DeviceName = d.DeviceName,
              DeviceSecret = d.DeviceSecret, IotId = d.IotId,
              -- the page's, or BatchQueryDeviceDetail's Status for a completed one
              DeviceStatus = STATUSES[d.DeviceStatus or d.Status] and (d.DeviceStatus or d.Status) or nil}
    end
    if it.ended then return at_end(port, it) end
    local err = refill(port, it)
    if err then return false, err end
  end
end

--- The iterator.
-- @tparam table port `aliyun.iot.batch.port`
-- @tparam table it `{ProductKey=, size=, t_end=, failure = err or nil}`
-- @treturn function yielding records, or `false, err` once, then nil
function M.iterate(port, it)
  it.page, it.n, it.seen, it.tokens, it.buf, it.i = 0, 0, {}, {}, {}, 0
  return devices.iterator(function() return next_device(port, it) end, it.failure)
end

return M
