--- The emulated IoT device-registration actions and their state (runs inside nginx under
-- LuaJIT). Wire facts come from docs/wire.md (cited as §n).
--
-- Every product, apply and device belongs to an account (the one owning the ProductKey, or
-- the one whose key made the apply); an action sees only its caller's account, and what
-- it cannot see gets the answer the cloud gives for something that does not exist.
--
-- State lives in the Lua memory of the single nginx worker (the emulator runs with
-- `worker_processes 1`): each action runs to completion without yielding, so every
-- multi-record update (an apply and its thousands of devices) is atomic without locks.
-- Asynchronous work is modelled lazily: an apply records when its phase ends and
-- `settle` finishes every due phase before any request is served or inspected.
-- @module aliyun.iot.emulator.actions
local ffi = require "ffi"
local render = require "aliyun.iot.emulator.render"

local array, raw = render.array, render.raw

ffi.cdef [[ long long strtoll(const char *s, char **end, int base); ]]

local M = {}

-- A fresh list marked for rendering (state lists must not carry the array marker around).
local function copy(t)
    local out = {}
    for i = 1, #t do out[i] = t[i] end
    return array(out)
end

--- Per action: required parameters (missing → gateway `Missing{Param}`, §5.1) and the
-- documented QPS per account (§4).
M.ACTIONS = {
    RegisterDevice = { required = { "ProductKey" }, qps = 30 },
    BatchRegisterDevice = { required = { "ProductKey", "Count" }, qps = 10 },
    BatchCheckDeviceNames = { required = { "ProductKey" }, qps = 10 },
    BatchRegisterDeviceWithApplyId = { required = { "ApplyId", "ProductKey" }, qps = 500 },
    QueryBatchRegisterDeviceStatus = { required = { "ApplyId", "ProductKey" }, qps = 30 },
    QueryPageByApplyId = { required = { "ApplyId" }, qps = 50 },
    QueryDeviceDetail = { required = {}, qps = 50 },
    QueryDevice = { required = { "ProductKey" }, qps = 50 },
    DeleteDevice = { required = {}, qps = 50 },
    BatchGetDeviceState = { required = {}, qps = 50 },
}

local conf -- the running configuration (server.lua owns it; `set` changes it in place)
local S    -- the state

local function new_state()
    local s = { products = {}, by_iotid = {}, applies = {}, apply_order = {}, pending = {},
                serial = 0 }
    for name, a in pairs(conf.accounts) do
        for _, pk in ipairs(a.products) do s.products[pk] = { names = {}, list = {}, live = 0, account = name } end
    end
    return s
end

--- Installs the configuration and empties the state (devices, applies).
function M.configure(c)
    conf = c
    conf.apply_id_base_c = ffi.C.strtoll(tostring(c.apply_id_base), nil, 10)
    S = new_state()
end

--- Empties devices and applies, keeping the configuration.
function M.reset() S = new_state() end

-- Business errors are HTTP 200 with Success=false, Code and ErrorMessage (§5.2); codes from
-- the D-87387 list, messages ours (the exact texts are unverified, §9.1).
local function fail(code, message, data)
    return { business = true, Code = code, ErrorMessage = message, Data = data }
end

local ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

--- n random letters and digits (device names and secrets, the server's temporary
-- credentials): a test double's values, not secrets worth a strong generator.
function M.random_string(n)
    local t = {}
    for i = 1, n do
        local k = math.random(#ALNUM)
        t[i] = ALNUM:sub(k, k)
    end
    return table.concat(t)
end
local random_string = M.random_string

-- DeviceName: 4-32 of letters, digits, - _ @ . : (§4 Name rules).
local function valid_device_name(s)
    return #s >= 4 and #s <= 32 and s:find("^[A-Za-z0-9_.:@-]+$") ~= nil
end

-- Nickname: 4-64 of Chinese, letters, digits, `_` (Japanese too for BatchCheckDeviceNames);
-- a Chinese/Japanese character counts as 2 (§4 Name rules).
local function valid_nickname(s, japanese)
    local width, i, n = 0, 1, #s
    while i <= n do
        local c = s:byte(i)
        if c < 0x80 then
            if not string.char(c):find("[A-Za-z0-9_]") then return false end
            width, i = width + 1, i + 1
        elseif c >= 0xE0 and c < 0xF0 and i + 2 <= n then
            local c2, c3 = s:byte(i + 1), s:byte(i + 2)
            if c2 < 0x80 or c2 > 0xBF or c3 < 0x80 or c3 > 0xBF then return false end
            local cp = (c - 0xE0) * 4096 + (c2 - 0x80) * 64 + (c3 - 0x80)
            local cjk = cp >= 0x4E00 and cp <= 0x9FFF
            local kana = cp >= 0x3040 and cp <= 0x30FF
            if not (cjk or (japanese and kana)) then return false end
            width, i = width + 2, i + 3
        else
            return false
        end
    end
    return width >= 4 and width <= 64
end

local function utc(t) return os.date("!%Y-%m-%dT%H:%M:%S", math.floor(t)) .. ".000Z" end
local function gmt(t) return os.date("!%Y-%m-%d %H:%M:%S", math.floor(t)) end

local function new_iotid()
    local id
    repeat id = random_string(28) until not S.by_iotid[id]
    return id
end

local function add_device(pk, name, nickname, now)
    local p = S.products[pk]
    local dev = { ProductKey = pk, DeviceName = name, Nickname = nickname or "",
                  DeviceSecret = random_string(32), IotId = new_iotid(), created = now }
    dev.DeviceId = dev.IotId:sub(1, 20)
    p.names[name] = dev
    p.list[#p.list + 1] = dev
    p.live = p.live + 1
    S.by_iotid[dev.IotId] = dev
    return dev
end

local function remove_device(dev)
    local p = S.products[dev.ProductKey]
    p.names[dev.DeviceName] = nil
    p.live = p.live - 1
    S.by_iotid[dev.IotId] = nil
    dev.deleted = true
    for i = #p.list, 1, -1 do
        if p.list[i] == dev then table.remove(p.list, i); break end
    end
end

-- ApplyIds are int64 (§4); LuaJIT numbers are doubles, so they are kept as decimal strings
-- and made with int64 arithmetic.
local function next_apply_id()
    local id = tostring(conf.apply_id_base_c + S.serial):gsub("LL$", "")
    S.serial = S.serial + 1
    return id
end

-- Only a plain decimal integer within int64 is an ApplyId: `4415.0`, `-1`, `abc` are
-- rejected with iot.device.InvalidFormattedApplyId (§4 Types, §5.2 code list, issue 4).
local function parse_apply_id(s)
    if not s:find("^%d+$") then return nil end
    s = s:gsub("^0+(%d)", "%1")
    if #s > 19 or (#s == 19 and s > "9223372036854775807") then return nil end
    return s
end

local function new_apply(kind, pk, status, now, account)
    local a = { ApplyId = next_apply_id(), ProductKey = pk, kind = kind, Status = status, account = account,
                created = now, due = now + conf.async_delay, valid = {}, invalid = {},
                details = {}, devices = {}, nicknames = {} }
    S.applies[a.ApplyId] = a
    S.apply_order[#S.apply_order + 1] = a
    S.pending[#S.pending + 1] = a
    return a
end

-- The end of an asynchronous phase (§4 QueryBatchRegisterDeviceStatus statuses):
-- CHECK → CHECK_SUCCESS | CHECK_FAILED; CREATE → CREATE_SUCCESS | CREATE_FAILED. Names that
-- came into existence between the check and the creation fail the creation.
local function finish(a)
    if a.Status == "CHECK" then
        a.Status = #a.invalid > 0 and "CHECK_FAILED" or "CHECK_SUCCESS"
        return
    end
    local p = S.products[a.ProductKey]
    if a.kind == "count" then
        for _ = 1, a.count do
            local name
            repeat name = random_string(20) until not p.names[name]
            a.devices[#a.devices + 1] = add_device(a.ProductKey, name, nil, a.due)
        end
        a.Status = "CREATE_SUCCESS"
        return
    end
    local created, failed, details = {}, {}, {}
    for _, name in ipairs(a.valid) do
        if p.names[name] then
            failed[#failed + 1] = name
            details[#details + 1] = { DeviceName = name, NickName = a.nicknames[name] or "",
                                      ErrorMsg = "The device name already exists." }
        else
            a.devices[#a.devices + 1] = add_device(a.ProductKey, name, a.nicknames[name], a.due)
            created[#created + 1] = name
        end
    end
    a.created_names, a.failed_names, a.failed_details = created, failed, details
    a.Status = #failed > 0 and "CREATE_FAILED" or "CREATE_SUCCESS"
end

--- Finishes every asynchronous phase that is due at `now` (seconds).
function M.settle(now)
    local keep = {}
    for _, a in ipairs(S.pending) do
        if now >= a.due then finish(a) else keep[#keep + 1] = a end
    end
    S.pending = keep
end

local function product(params, account)
    local pk = params.ProductKey
    if not pk or pk == "" then return nil, fail("iot.prod.NullProductKey", "The productKey is null.") end
    local p = S.products[pk]
    if not p or p.account ~= account then
        return nil, fail("iot.prod.NotExistedProduct", "The product does not exist.")
    end
    return p, pk
end

local function apply_of(params, account)
    local id = parse_apply_id(params.ApplyId)
    if not id then
        return nil, fail("iot.device.InvalidFormattedApplyId", "The applyId is invalid.")
    end
    local a = S.applies[id]
    if not a or a.account ~= account then
        return nil, fail("iot.device.DeviceApplyIsNotFound", "The apply is not found.")
    end
    return a
end

-- A device by IotId, when the account can see it.
local function visible(iotid, account)
    local dev = S.by_iotid[iotid]
    if dev and S.products[dev.ProductKey].account == account then return dev end
end

local function positive_int(s, default)
    if s == nil or s == "" then return default end
    if not s:find("^%d+$") then return nil end
    return tonumber(s)
end

-- Collects `Prefix.N` or `Prefix.N.Field` parameters in N order (§1 flattening, 1-based).
local function indexed(params, prefix, field)
    local pat = "^" .. prefix:gsub("%.", "%%.") .. "%.(%d+)" .. (field and ("%." .. field) or "") .. "$"
    local items = {}
    for k, v in pairs(params) do
        local n = k:match(pat)
        if n then items[#items + 1] = { tonumber(n), v } end
    end
    table.sort(items, function(a, b) return a[1] < b[1] end)
    return items
end

local function device_of(params, account)
    if params.IotId and params.IotId ~= "" then -- IotId wins (§4 DeleteDevice)
        local dev = visible(params.IotId, account)
        if not dev then return nil, fail("iot.device.NotExistedDevice", "The device does not exist.") end
        return dev
    end
    local p, err = product(params, account)
    if not p then return nil, err end
    if not params.DeviceName or params.DeviceName == "" then
        return nil, fail("iot.device.NullDeviceName", "The deviceName is null.")
    end
    local dev = p.names[params.DeviceName]
    if not dev then return nil, fail("iot.device.NotExistedDevice", "The device does not exist.") end
    return dev
end

local function page_params(params)
    local size = positive_int(params.PageSize, 10)
    local page = positive_int(params.CurrentPage, 1)
    if not size or not page or size < 1 or size > 50 or page < 1 then
        return nil, nil, fail("iot.common.InvalidPageParams", "The page params are invalid.")
    end
    return size, page
end

-- A device is UNACTIVE until `set_active` marks it (as its first connection would); an
-- active device shows ONLINE.
local function status(dev) return dev.active and "ONLINE" or "UNACTIVE" end

--- The device named, or nil (dynamic registration: no account, the ProductKey says whose).
function M.device(pk, name)
    local p = S.products[pk]
    return p and p.names[name] or nil
end

--- True when the ProductKey is one of the emulator's products.
function M.has_product(pk) return S.products[pk] ~= nil end

--- A new DeviceSecret for a device (a dynamic registration of an inactive device: only the
-- latest secret is valid, docs/wire.md §11).
function M.rotate_secret(dev)
    dev.DeviceSecret = random_string(32)
    return dev.DeviceSecret
end

--- Marks a device active or not; false when there is no such device.
function M.set_active(pk, name, active)
    local dev = M.device(pk, name)
    if not dev then return false end
    dev.active = active or nil
    return true
end

local H = {}

-- RegisterDevice (§4): synchronous; DeviceName random when absent.
function H.RegisterDevice(params, now, account)
    local p, pk = product(params, account)
    if not p then return pk end
    local name = params.DeviceName
    if name == nil or name == "" then
        repeat name = random_string(20) until not p.names[name]
    elseif not valid_device_name(name) then
        return fail("iot.device.InvalidFormattedDeviceName", "The device name is invalid.")
    elseif p.names[name] then
        return fail("iot.device.AlreadyExistedDeviceName", "The device name already exists.")
    end
    local nick = params.Nickname
    if nick and nick ~= "" and not valid_nickname(nick, false) then
        return fail("iot.common.InvalidFormattedParameter", "The nick name is illegal.")
    end
    local dev = add_device(pk, name, nick, now)
    return { Data = { IotId = dev.IotId, DeviceName = dev.DeviceName, DeviceSecret = dev.DeviceSecret,
                      ProductKey = pk, Nickname = dev.Nickname } }
end

-- BatchRegisterDevice (§4): Count random names, asynchronous CREATE.
function H.BatchRegisterDevice(params, now, account)
    local p, pk = product(params, account)
    if not p then return pk end
    local count = positive_int(params.Count)
    if not count or count < 1 then
        return fail("iot.common.InvalidFormattedParameter", "The count is invalid.")
    end
    if count > conf.max_count then
        return fail("iot.device.DeviceCountExceeded", "The count exceeds " .. conf.max_count .. ".")
    end
    local a = new_apply("count", pk, "CREATE", now, account)
    a.count = count
    return { Data = { ApplyId = raw(a.ApplyId) } }
end

-- BatchCheckDeviceNames (§4): `DeviceNameList.N.DeviceName` (+ `.DeviceNickname`) wins over
-- `DeviceName.N`; names beyond max_count are silently discarded. An already-existing name
-- is an invalid name ("The device name already exists."), a name sent twice is repeated.
-- invalid_names = "async": the apply goes CHECK → CHECK_FAILED with the lists in the status
-- call; "sync": HTTP 200 Success=false iot.device.InvalidFormattedDeviceName with Data lists
-- (`RepeatedDeviceNameList.RepeatDevieNameList` sic, `InvalidDetailList.InvalidDetailList`).
function H.BatchCheckDeviceNames(params, now, account)
    local p, pk = product(params, account)
    if not p then return pk end
    local entries = {}
    local list = indexed(params, "DeviceNameList", "DeviceName")
    if #list > 0 then
        local nicks = {}
        for _, it in ipairs(indexed(params, "DeviceNameList", "DeviceNickname")) do nicks[it[1]] = it[2] end
        for i, it in ipairs(list) do entries[i] = { it[2], nicks[it[1]] } end
    else
        for i, it in ipairs(indexed(params, "DeviceName")) do entries[i] = { it[2] } end
    end
    if #entries == 0 then
        return fail("iot.device.NoneDeviceNameElement", "The device name list is empty.")
    end
    for i = #entries, conf.max_count + 1, -1 do entries[i] = nil end

    local count = {}
    for _, e in ipairs(entries) do count[e[1]] = (count[e[1]] or 0) + 1 end
    local valid, invalid, bad_names, bad_nicks, repeated, details = {}, {}, {}, {}, {}, {}
    local reported, nicknames = {}, {}
    for _, e in ipairs(entries) do
        local name, nick = e[1], e[2]
        local msgs = {}
        if count[name] > 1 then
            msgs[#msgs + 1] = "The device name is repeated."
            if not reported[name] then repeated[#repeated + 1] = name end
        end
        if not valid_device_name(name) then
            msgs[#msgs + 1] = "The device name is illegal."
            if not reported[name] then bad_names[#bad_names + 1] = name end
        elseif p.names[name] then
            msgs[#msgs + 1] = "The device name already exists."
            if not reported[name] then bad_names[#bad_names + 1] = name end
        end
        if nick and nick ~= "" and not valid_nickname(nick, true) then
            msgs[#msgs + 1] = "The nick name is illegal."
            bad_nicks[#bad_nicks + 1] = nick
        end
        if #msgs > 0 then
            if not reported[name] then
                invalid[#invalid + 1] = name
                -- several reasons are joined with `|` (§4 QueryBatchRegisterDeviceStatus)
                details[#details + 1] = { DeviceName = name, NickName = nick or "",
                                          ErrorMsg = table.concat(msgs, "|") }
            end
            reported[name] = true
        else
            valid[#valid + 1] = name
            nicknames[name] = nick
        end
    end

    if conf.invalid_names == "sync" and #invalid > 0 then
        return fail("iot.device.InvalidFormattedDeviceName", "The device name list has invalid names.", {
            InvalidDeviceNameList = { InvalidDeviceName = array(bad_names) },
            InvalidDeviceNicknameList = { InvalidDeviceNickname = array(bad_nicks) },
            RepeatedDeviceNameList = { RepeatDevieNameList = array(repeated) },
            InvalidDetailList = { InvalidDetailList = array(details) },
        })
    end
    local a = new_apply("check", pk, "CHECK", now, account)
    a.valid, a.invalid, a.details, a.nicknames = valid, invalid, details, nicknames
    return { Data = { ApplyId = raw(a.ApplyId) } }
end

-- BatchRegisterDeviceWithApplyId (§4). Only a CHECK_SUCCESS apply starts creating. While a
-- phase runs: iot.device.CreateDeviceTaskIsRunning; after CHECK_FAILED:
-- iot.device.IncorrentDeviceApplyInfo (sic, §5.2); once created, a repeat is accepted and
-- creates nothing (the tolerant choice: a client that lost the first answer may resend).
function H.BatchRegisterDeviceWithApplyId(params, now, account)
    local a, err = apply_of(params, account)
    if not a then return err end
    if a.ProductKey ~= params.ProductKey or a.kind ~= "check" then
        return fail("iot.device.IncorrentDeviceApplyInfo", "The apply does not match the product.")
    end
    if a.Status == "CHECK" or a.Status == "CREATE" then
        return fail("iot.device.CreateDeviceTaskIsRunning", "A task of this apply is running.")
    elseif a.Status == "CHECK_FAILED" then
        return fail("iot.device.IncorrentDeviceApplyInfo", "The apply did not pass the check.")
    elseif a.Status == "CHECK_SUCCESS" then
        a.Status, a.due = "CREATE", now + conf.async_delay
        S.pending[#S.pending + 1] = a
    end
    return { Data = { ApplyId = raw(a.ApplyId) } }
end

-- QueryBatchRegisterDeviceStatus (§4): lists only on *_FAILED; inner detail key is the
-- lower-case `invalidDetailList`.
function H.QueryBatchRegisterDeviceStatus(params, _, account)
    local a, err = apply_of(params, account)
    if not a then return err end
    if a.ProductKey ~= params.ProductKey then
        return fail("iot.device.DeviceApplyIsNotFound", "The apply is not found.")
    end
    local valid, invalid, details = {}, {}, {}
    if a.Status == "CHECK_FAILED" then
        valid, invalid, details = a.valid, a.invalid, a.details
    elseif a.Status == "CREATE_FAILED" then
        valid, invalid, details = a.created_names, a.failed_names, a.failed_details
    end
    return { Data = { Status = a.Status, ValidList = { Name = copy(valid) },
                      InvalidList = { Name = copy(invalid) },
                      InvalidDetailList = { invalidDetailList = copy(details) } } }
end

-- One page of `list` (oldest first, or newest first): the paging fields and the items
-- `item(dev)` makes of its devices; nil and the error for bad paging parameters.
local function page_of(list, params, newest_first, item)
    local size, page, perr = page_params(params)
    if not size then return nil, perr end
    local n, items = #list, {}
    for k = (page - 1) * size + 1, math.min(page * size, n) do
        items[#items + 1] = item(list[newest_first and n + 1 - k or k])
    end
    return { Page = page, PageSize = size, PageCount = math.ceil(n / size), Total = n }, items
end

-- QueryPageByApplyId (§4): paging fields at top level, not in Data.
function H.QueryPageByApplyId(params, _, account)
    local a, err = apply_of(params, account)
    if not a then return err end
    local res, items = page_of(a.devices, params, false, function(dev)
        return { DeviceId = dev.DeviceId, DeviceName = dev.DeviceName,
                 DeviceSecret = dev.DeviceSecret, IotId = dev.IotId }
    end)
    if not res then return items end
    res.ApplyDeviceList = { ApplyDeviceInfo = array(items) }
    return res
end

-- QueryDeviceDetail (§4 Cheap extras).
function H.QueryDeviceDetail(params, _, account)
    local dev, err = device_of(params, account)
    if not dev then return err end
    return { Data = { IotId = dev.IotId, ProductKey = dev.ProductKey, ProductName = dev.ProductKey,
                      DeviceName = dev.DeviceName, DeviceSecret = dev.DeviceSecret,
                      FirmwareVersion = "", GmtCreate = gmt(dev.created), UtcCreate = utc(dev.created),
                      IpAddress = "", NodeType = 0, Owner = true, Region = "cn-shanghai",
                      Status = status(dev), Nickname = dev.Nickname } }
end

-- QueryDevice (§4 Cheap extras): newest first; NextToken is not emulated.
function H.QueryDevice(params, _, account)
    local p, pk = product(params, account)
    if not p then return pk end
    local res, items = page_of(p.list, params, true, function(dev)
        return { DeviceId = dev.DeviceId, DeviceName = dev.DeviceName, ProductKey = pk,
                 DeviceSecret = dev.DeviceSecret, DeviceType = "",
                 GmtCreate = gmt(dev.created), GmtModified = gmt(dev.created),
                 UtcCreate = utc(dev.created), UtcModified = utc(dev.created),
                 IotId = dev.IotId, DeviceStatus = status(dev), Nickname = dev.Nickname }
    end)
    if not res then return items end
    res.Data = { DeviceInfo = array(items) }
    return res
end

-- DeleteDevice (§4 Cheap extras): base fields only.
function H.DeleteDevice(params, _, account)
    local dev, err = device_of(params, account)
    if not dev then return err end
    remove_device(dev)
    return {}
end

-- BatchGetDeviceState (§4 Cheap extras): `IotId.N` wins over ProductKey + `DeviceName.N`;
-- at most 50; unknown devices are left out.
function H.BatchGetDeviceState(params, _, account)
    local devs = {}
    local ids = indexed(params, "IotId")
    if #ids > 0 then
        for _, it in ipairs(ids) do devs[#devs + 1] = visible(it[2], account) or false end
    else
        local p, pk = product(params, account)
        if not p then return pk end
        for _, it in ipairs(indexed(params, "DeviceName")) do devs[#devs + 1] = p.names[it[2]] or false end
    end
    if #devs == 0 or #devs > 50 then
        return fail("iot.common.InvalidFormattedParameter", "Between 1 and 50 devices are allowed.")
    end
    local out = {}
    for _, dev in ipairs(devs) do
        if dev then
            out[#out + 1] = { IotId = dev.IotId, DeviceName = dev.DeviceName, DeviceId = dev.DeviceId,
                              Status = status(dev), AsAddress = "", LastOnlineTime = "",
                              Timestamp = math.floor(dev.created * 1000) }
        end
    end
    return { DeviceStatusList = { DeviceStatus = array(out) } }
end

--- Runs an action. Call `settle` first.
-- @param action a key of ACTIONS
-- @param params decoded parameters
-- @param now seconds (ngx.now())
-- @param account the name of the caller's account (what it may see)
-- @return a response tree (fields beside RequestId/Success), or a business error
--   `{business = true, Code =, ErrorMessage =, Data =}`
function M.run(action, params, now, account)
    return H[action](params, now, account)
end

--- A snapshot for `emu:state()`: products with their device names (sorted) and applies in
-- creation order, each with its account; ApplyIds as decimal strings (the launcher
-- converts them). Lists are marked for JSON rendering.
function M.snapshot()
    local out = { products = {}, applies = array() }
    for pk, p in pairs(S.products) do
        local names = array()
        for _, dev in ipairs(p.list) do names[#names + 1] = dev.DeviceName end
        table.sort(names)
        out.products[pk] = { devices = p.live, names = names, account = p.account }
    end
    for i, a in ipairs(S.apply_order) do
        local names = array()
        for j, dev in ipairs(a.devices) do names[j] = dev.DeviceName end
        out.applies[i] = { ApplyId = a.ApplyId, ProductKey = a.ProductKey, Status = a.Status,
                           Kind = a.kind, Count = a.count, Valid = copy(a.valid), Invalid = copy(a.invalid),
                           Devices = names, account = a.account }
    end
    return out
end

return M
