--- A product's current state, as far as a manifest needs it: its devices and nicknames
-- (the device iterator the caller gives, BatchQueryDeviceDetail for nicknames the iterator
-- did not carry), the tags of the manifest's devices (QueryDeviceProp) and the account's
-- groups with their members of this product (QueryDeviceGroupList,
-- QueryDeviceListByDeviceGroup). Reads only; every request goes through the port
-- (`aliyun.iot.batch.port`), so the client paces each action to its QPS.
--
-- Nothing the service answers is trusted: every field used is type-checked, pages are
-- bounded by the first page's Total, and anything unexpected is `InvalidResponse`.
-- @module aliyun.iot.fleet.state

local answer = require "aliyun.iot.batch.answer"
local validate = require "aliyun.iot.validate"
local core = require "aliyun.iot.core"

local M = {}

--- The most devices (or groups, or members of a group) read; past it the answer is not
-- believed (QueryDevice's NextToken serves products under 1,000,000 devices, §4).
M.MAX_ITEMS = 10000000

local PAGE = 50              -- the largest page of the group actions (§10)
local DETAIL_BATCH = 100     -- BatchQueryDeviceDetail's names a call (§10)
local CONCURRENCY = 16       -- requests in flight at once; the pacer keeps them within QPS
local CHUNK = 1000           -- requests prepared at once (flat memory for big fleets)

local function invalid(action, fmt, ...)
  return answer.invalid_response(fmt:format(...), {action = action})
end

local function printable_name(v)
  return type(v) == "string" and ("%q"):format(v:sub(1, 40)) or type(v)
end

local function printable_text(v)
  return type(v) == "string" and v ~= "" and not v:find("[%z\1-\31\127]")
end

-- Sends params_list through invoke_many in chunks; on_result(params, res) -> nil | err.
local function each_result(port, action, list, opts, on_result)
  for first = 1, #list, CHUNK do
    local part = {}
    for i = first, math.min(first + CHUNK - 1, #list) do part[#part + 1] = list[i] end
    local results, errs = port:invoke_many(action, part, opts, CONCURRENCY)
    for i, params in ipairs(part) do
      if not results[i] then
        return errs[i] or invalid(action, "the fan-out returned no answer")
      end
      local err = on_result(params, results[i])
      if err then return err end
    end
  end
end

-- The product's devices from the iterator: {[DeviceName] = {DeviceName=, Nickname=,
-- Disabled=, Online=}}.
local function list_devices(pk, iterate)
  local devices, n = {}, 0
  for dev, err in iterate do
    if not dev then return nil, err end
    if type(dev) ~= "table" or validate.device_name_problem(dev.DeviceName) then
      return nil, invalid("QueryDevice", "a device record has no valid DeviceName (got %s)",
        printable_name(type(dev) == "table" and dev.DeviceName or dev))
    end
    if dev.Nickname ~= nil and type(dev.Nickname) ~= "string" then
      return nil, invalid("QueryDevice", "device %s: Nickname is not a string", dev.DeviceName)
    end
    if (dev.ProductKey ~= nil and dev.ProductKey ~= pk) or devices[dev.DeviceName] then
      return nil, invalid("QueryDevice", "device %s came twice or from another product",
        dev.DeviceName)
    end
    n = n + 1
    if n > M.MAX_ITEMS then return nil, invalid("QueryDevice", "more than %d devices", M.MAX_ITEMS) end
    -- DISABLE (DisableThing, a refused retire's): the plan notes it, apply leaves it so
    -- ONLINE: a plan retiring it says so (the retire waits for it), as retire --dry-run
    devices[dev.DeviceName] = {DeviceName = dev.DeviceName, Nickname = dev.Nickname,
                               Disabled = dev.DeviceStatus == "DISABLE" or nil,
                               Online = dev.DeviceStatus == "ONLINE" or nil}
  end
  return devices
end

-- Nicknames the iterator did not carry, for the manifest's devices that manage one.
local function read_nicknames(port, pk, manifest, devices, opts)
  local names = {}
  for _, rec in ipairs(manifest.devices) do
    local dev = devices[rec.DeviceName]
    if dev and rec.Nickname ~= nil and dev.Nickname == nil then names[#names + 1] = rec.DeviceName end
  end
  local list = {}
  for i = 1, #names do
    local k = math.floor((i - 1) / DETAIL_BATCH) + 1
    list[k] = list[k] or {ProductKey = pk, DeviceName = {}}
    table.insert(list[k].DeviceName, names[i])
  end
  return each_result(port, "BatchQueryDeviceDetail", list, opts, function(params, res)
    local data = type(res.Data) == "table" and res.Data.Data
    if not validate.list_length(data or {}) then
      return invalid("BatchQueryDeviceDetail", "Data.Data is not a list")
    end
    local asked = {}
    for _, name in ipairs(params.DeviceName) do asked[name] = true end
    for _, d in ipairs(data or {}) do
      if type(d) ~= "table" or not asked[d.DeviceName] or
         (d.Nickname ~= nil and type(d.Nickname) ~= "string") then
        return invalid("BatchQueryDeviceDetail", "a record is not one of the devices asked for, " ..
          "or its Nickname is not a string")
      end
      devices[d.DeviceName].Nickname, asked[d.DeviceName] = d.Nickname or "", false
    end
    -- the service leaves out the names it does not know: deleted since they were listed
    for name, missing in pairs(asked) do
      if missing then devices[name] = nil end
    end
  end)
end

-- QueryDeviceProp's Data: the props as a JSON object of strings in a string.
local function props_of(res, name)
  local text = res.Data
  if text == nil or text == "" then return {} end
  local ok, props = false, nil
  if type(text) == "string" then ok, props = pcall(core.json_decode, text) end
  if not ok or type(props) ~= "table" then
    return nil, invalid("QueryDeviceProp", "device %s: Data is not a JSON object in a string", name)
  end
  for k, v in pairs(props) do
    if type(k) ~= "string" or type(v) ~= "string" then
      return nil, invalid("QueryDeviceProp", "device %s: a prop is not a string key with a " ..
        "string value", name)
    end
  end
  return props
end

-- One QueryDeviceProp a device: the API reads props one device a call (its page; no batch
-- read exists, and BatchQueryDeviceDetail's answer carries none). The list is bounded by
-- the manifest (its devices that exist and manage tags), sent CHUNK at a time with at
-- most CONCURRENCY in flight, the client pacing them to the action's 50 QPS: a plan of
-- 10,000 such devices costs 10,000 calls, about 200 s.
local function read_tags(port, pk, manifest, devices, opts)
  local list = {}
  for _, rec in ipairs(manifest.devices) do
    if rec.tags and devices[rec.DeviceName] then
      list[#list + 1] = {ProductKey = pk, DeviceName = rec.DeviceName}
    end
  end
  return each_result(port, "QueryDeviceProp", list, opts, function(params, res)
    local props, err = props_of(res, params.DeviceName)
    if not props then return err end
    devices[params.DeviceName].tags = props
  end)
end

-- A page's list at Data[key], checked against the first page's Total; nil and a reason.
local function page_items(res, key, p, total)
  local c = {}
  for _, k in ipairs{"Page", "PageSize", "Total"} do
    c[k] = answer.count(type(res) == "table" and res[k] or nil)
    if not c[k] then return nil, ("%s is not a count"):format(k) end
  end
  if c.Page ~= p or c.PageSize ~= PAGE then
    return nil, ("page %d of size %d was asked, page %d of size %d came"):format(p, PAGE, c.Page,
      c.PageSize)
  end
  if c.Total > M.MAX_ITEMS or (total and c.Total ~= total) then
    return nil, ("Total %d is beyond %d or changed between pages"):format(c.Total, M.MAX_ITEMS)
  end
  local list = type(res.Data) == "table" and res.Data[key] or {}
  local want = math.max(0, math.min(PAGE, c.Total - (p - 1) * PAGE))
  if validate.list_length(list) ~= want then
    return nil, ("page %d does not hold the %d items Total %d says"):format(p, want, c.Total)
  end
  for _, item in ipairs(list) do
    if type(item) ~= "table" then return nil, "an item is not an object" end
  end
  return list, c.Total
end

-- Every item of a paged group action, through each(item) -> nil | reason.
local function read_pages(port, action, params, key, opts, each)
  local function one(p, total, res)
    local items, t = page_items(res, key, p, total)
    if not items then return nil, invalid(action, "%s", t) end
    for _, item in ipairs(items) do
      local why = each(item)
      if why then return nil, invalid(action, "%s", why) end
    end
    return t
  end
  local first = {PageSize = PAGE, CurrentPage = 1}
  for k, v in pairs(params) do first[k] = v end
  local res, err = port:invoke(action, first, opts)
  if not res then return err end
  local total
  total, err = one(1, nil, res)
  if not total then return err end
  local list = {}
  for p = 2, math.ceil(total / PAGE) do
    local q = {PageSize = PAGE, CurrentPage = p}
    for k, v in pairs(params) do q[k] = v end
    list[#list + 1] = q
  end
  return each_result(port, action, list, opts, function(q, r)
    local _, perr = one(q.CurrentPage, total, r)
    return perr
  end)
end

-- The account's groups {[GroupName] = GroupId}, and the members of this product's devices.
local function read_groups(port, pk, devices, opts)
  local groups, ids = {}, {}
  local err = read_pages(port, "QueryDeviceGroupList", {}, "GroupInfo", opts, function(g)
    if not printable_text(g.GroupName) or not printable_text(g.GroupId) then
      return "a GroupName or GroupId is not a non-empty string of printable characters"
    end
    if groups[g.GroupName] or ids[g.GroupId] then
      return ("group %s or its GroupId came twice"):format(printable_name(g.GroupName))
    end
    groups[g.GroupName], ids[g.GroupId] = g.GroupId, g.GroupName
  end)
  if err then return nil, err end
  for _, dev in pairs(devices) do dev.groups = {} end
  for name, id in pairs(groups) do
    err = read_pages(port, "QueryDeviceListByDeviceGroup", {GroupId = id}, "SimpleDeviceInfo", opts,
      function(d)
        if type(d.DeviceName) ~= "string" or (d.ProductKey ~= nil and type(d.ProductKey) ~= "string") then
          return "a member's DeviceName or ProductKey is not a string"
        end
        local dev = (d.ProductKey == nil or d.ProductKey == pk) and devices[d.DeviceName]
        if dev then dev.groups[name] = true end
      end)
    if err then return nil, err end
  end
  return groups
end

--- Reads what a plan compares with the manifest.
-- @tparam table port `aliyun.iot.batch.port`
-- @tparam table args `ProductKey`, `manifest` (from `aliyun.iot.fleet.manifest`),
--   `devices` (an iterator over the product's devices yielding `{DeviceName=, Nickname=,
--   ...}` records, or `false, err` once), `deadline` (absolute `port:clock()` value,
--   optional)
-- @treturn ?table `{devices = {[DeviceName] = {DeviceName=, Nickname=, tags=, groups =
--   {[GroupName] = true}, Disabled=, Online=}}, groups = {[GroupName] = GroupId}}`
--   (Disabled, Online: true when the listing's DeviceStatus says so); tags only for the
--   manifest's devices that manage tags, groups only when a manifest device manages groups
-- @treturn ?table err the iterator's or a call's error, or `InvalidResponse`
function M.read(port, args)
  local opts = {deadline = args.deadline}
  local pk, manifest = args.ProductKey, args.manifest
  local devices, err = list_devices(pk, args.devices)
  if not devices then return nil, err end
  err = read_nicknames(port, pk, manifest, devices, opts)
    or read_tags(port, pk, manifest, devices, opts)
  if err then return nil, err end
  local groups = {}
  for _, rec in ipairs(manifest.devices) do
    if rec.groups then
      groups, err = read_groups(port, pk, devices, opts)
      if not groups then return nil, err end
      break
    end
  end
  return {devices = devices, groups = groups}
end

return M
