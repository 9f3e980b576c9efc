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
local cjson = require("cjson.safe").new()
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
    -- §10 (fleet operations); "not given" QPS: the emulator's own figure, 50.
    BatchQueryDeviceDetail = { required = { "ProductKey" }, qps = 5 },
    QueryDeviceProp = { required = {}, qps = 50 },
    SaveDeviceProp = { required = { "Props" }, qps = 50 },
    DeleteDeviceProp = { required = { "PropKey" }, qps = 50 },
    CreateDeviceGroup = { required = { "GroupName" }, qps = 50 },
    QueryDeviceGroupList = { required = {}, qps = 50 },
    BatchAddDeviceGroupRelations = { required = { "GroupId" }, qps = 500 },
    BatchDeleteDeviceGroupRelations = { required = { "GroupId" }, qps = 500 },
    QueryDeviceListByDeviceGroup = { required = { "GroupId" }, qps = 50 },
    BatchUpdateDeviceNickname = { required = {}, qps = 50 },
    DisableThing = { required = {}, qps = 50 },
    EnableThing = { required = {}, qps = 50 },
}

local conf -- the running configuration (server.lua owns it; `set` changes it in place)
local S    -- the state

local function new_state()
    local s = { products = {}, by_iotid = {}, applies = {}, apply_order = {}, pending = {},
                serial = 0, seq = 0, groups = {}, group_order = {} }
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
                  DeviceSecret = random_string(32), IotId = new_iotid(), created = now,
                  props = {}, groups = {}, ngroups = 0 }
    S.seq = S.seq + 1
    dev.seq = S.seq -- creation order: NextToken marks a place in it (QueryDevice)
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
    for _, g in pairs(dev.groups) do g.members[dev.IotId], g.count = nil, g.count - 1 end
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

-- A device is UNACTIVE until `set_active` or `set_online` marks it (as its first connection
-- would); an active device shows ONLINE unless `set_online` took it OFFLINE. DisableThing
-- takes an ONLINE device offline, as the platform disconnects a disabled device, so it
-- shows DISABLE at once; only a device `set_online` marked `stay_online` (a test of a
-- device that does not go away: retire's wait and --force) stays ONLINE until a test
-- takes it offline, then shows DISABLE.
local function status(dev)
    if dev.online then return "ONLINE" end
    if dev.disabled then return "DISABLE" end
    if dev.online == false then return "OFFLINE" end
    return dev.active and "ONLINE" or "UNACTIVE"
end

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

--- Marks a device online (it connected) or offline (it went away); either makes it active.
-- `stay_online` (with online): DisableThing leaves it ONLINE (see `status`); any other
-- call clears it. False when there is no such device.
function M.set_online(pk, name, online, stay_online)
    local dev = M.device(pk, name)
    if not dev then return false end
    dev.active, dev.online = true, online and true or false
    dev.stay_online = online and stay_online or nil
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
-- iot.device.IncorrentDeviceApplyInfo (sic, §5.2); once created (CREATE_SUCCESS or
-- CREATE_FAILED), a repeat is refused with iot.device.IncorrentDeviceApplyInfo too, as the
-- service refuses an apply that has moved on (§4): a client that lost the first answer
-- settles it with QueryBatchRegisterDeviceStatus.
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
    elseif a.Status ~= "CHECK_SUCCESS" then
        return fail("iot.device.IncorrentDeviceApplyInfo", "The apply has already been registered.")
    end
    a.Status, a.due = "CREATE", now + conf.async_delay
    S.pending[#S.pending + 1] = a
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

-- The NextToken of a place in a product's list (newest first): the creation order of the
-- last device shown, so devices created or deleted meanwhile do not shift the pages.
local function next_token(pk, dev) return ("NT%x_%s"):format(dev.seq, pk) end

-- The index in `list` (oldest first) of the newest device older than the token's place;
-- nil for a token that is not one of ours for this product.
local function token_start(list, pk, token)
    local hex, tpk = token:match("^NT(%x+)_(.+)$")
    if not hex or tpk ~= pk or #hex > 12 then return nil end
    local seq, lo, hi = tonumber(hex, 16), 0, #list
    while lo < hi do -- the last index whose seq is below the token's
        local mid = math.ceil((lo + hi) / 2)
        if list[mid].seq < seq then lo = mid else hi = mid - 1 end
    end
    return lo
end

local MAX_PLAIN_PAGING = 10000 -- past this, QueryDevice needs NextToken (§10)

-- QueryDevice (§4 Cheap extras, §10): newest first. Pages by CurrentPage until CurrentPage x
-- PageSize passes 10,000, then only with the NextToken of the previous answer (given while
-- devices remain after the page). With `query_device_secrets = false` the records carry no
-- DeviceSecret (a listing that leaves secrets to BatchQueryDeviceDetail).
function H.QueryDevice(params, _, account)
    local p, pk = product(params, account)
    if not p then return pk end
    local size, page, perr = page_params(params)
    if not size then return perr end
    local list, n, first = p.list, #p.list
    local token = params.NextToken
    if token and token ~= "" then
        first = token_start(list, pk, token)
        if not first then return fail("iot.common.InvalidFormattedParameter", "The NextToken is invalid.") end
    elseif page * size > MAX_PLAIN_PAGING then
        return fail("iot.common.InvalidPageParams",
            "NextToken is required once CurrentPage x PageSize exceeds 10000.")
    else
        first = n - (page - 1) * size
    end
    local items, last = {}, nil
    for k = first, math.max(first - size + 1, 1), -1 do
        last = list[k]
        items[#items + 1] = { DeviceId = last.DeviceId, DeviceName = last.DeviceName, ProductKey = pk,
                 DeviceSecret = conf.query_device_secrets and last.DeviceSecret or nil, DeviceType = "",
                 GmtCreate = gmt(last.created), GmtModified = gmt(last.created),
                 UtcCreate = utc(last.created), UtcModified = utc(last.created),
                 IotId = last.IotId, DeviceStatus = status(last), Nickname = last.Nickname }
    end
    local res = { Page = page, PageSize = size, PageCount = math.ceil(n / size), Total = n,
                  Data = { DeviceInfo = array(items) } }
    if last and first - size >= 1 then res.NextToken = next_token(pk, last) end
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

-- Fleet operations (§10). Limits the pages give: BatchQueryDeviceDetail 100 names a call;
-- Props 100 keys and 5 KB a device; group relations 200 devices a call and 10 groups a
-- device. Where a page gives no figure, the emulator's own is marked so in §10.
local MAX_DETAIL_NAMES, MAX_PROPS, MAX_PROPS_BYTES = 100, 100, 5 * 1024
local MAX_RELATIONS, MAX_GROUPS_A_DEVICE, MAX_NICKNAMES = 200, 10, 50

local function bad_param(message) return fail("iot.common.InvalidFormattedParameter", message) end

-- A device's fields as the detail actions give them (QueryDeviceDetail, BatchQueryDeviceDetail).
local function detail(dev)
    return { IotId = dev.IotId, ProductKey = dev.ProductKey, ProductName = dev.ProductKey,
             DeviceName = dev.DeviceName, DeviceSecret = dev.DeviceSecret, FirmwareVersion = "",
             GmtCreate = gmt(dev.created), UtcCreate = utc(dev.created), NodeType = 0,
             Region = "cn-shanghai", Status = status(dev), Nickname = dev.Nickname }
end

-- BatchQueryDeviceDetail (§10): ProductKey and `DeviceName.N`, 1 to 100; names that do not
-- exist are left out silently; answers `Data.Data[]`.
function H.BatchQueryDeviceDetail(params, _, account)
    local p, pk = product(params, account)
    if not p then return pk end
    local names = indexed(params, "DeviceName")
    if #names == 0 then return fail("iot.device.NullDeviceName", "The deviceName is null.") end
    if #names > MAX_DETAIL_NAMES then return bad_param("At most 100 device names are allowed.") end
    local out = {}
    for _, it in ipairs(names) do
        local dev = p.names[it[2]]
        if dev then out[#out + 1] = detail(dev) end
    end
    return { Data = { Data = array(out) } }
end

-- The props as the JSON object text the service stores, keys sorted (a stable answer).
local function props_json(props)
    local keys = {}
    for k in pairs(props) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = cjson.encode(k) .. ":" .. cjson.encode(props[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
end

-- QueryDeviceProp (§10): `Data` is the props as a JSON object in a string.
function H.QueryDeviceProp(params, _, account)
    local dev, err = device_of(params, account)
    if not dev then return err end
    return { Data = props_json(dev.props) }
end

-- A tag's key and value, as SaveDeviceProp's page (doc 69618, "Props") has them: a key of 2
-- to 32 English letters, digits and dots; a value not empty, at most 128 characters with a
-- character past ASCII counted as two. (The emulator's own reading, not the client's code.)
local function valid_prop(k, v)
    if type(k) ~= "string" or not k:find("^[A-Za-z0-9.]+$") or #k < 2 or #k > 32 then return false end
    if type(v) ~= "string" or v == "" then return false end
    local width = 0
    for c in v:gmatch("[%z\1-\127\192-\255][\128-\191]*") do width = width + (#c > 1 and 2 or 1) end
    return width <= 128
end

-- SaveDeviceProp (§10): `Props` a JSON object of string values (`valid_prop`), merged into
-- the device's; at most 100 keys and 5 KB of JSON after the merge, else nothing changes.
function H.SaveDeviceProp(params, _, account)
    local dev, err = device_of(params, account)
    if not dev then return err end
    local new = cjson.decode(params.Props or "")
    if type(new) ~= "table" or new[1] ~= nil or params.Props:sub(1, 1) ~= "{" then
        return bad_param("Props must be a JSON object.")
    end
    local merged = {}
    for k, v in pairs(dev.props) do merged[k] = v end
    local n = 0
    for k, v in pairs(new) do
        if not valid_prop(k, v) then
            return bad_param("A prop must be a key of 2 to 32 letters, digits and dots with a " ..
                "value of 1 to 128 characters.")
        end
        merged[k] = v
    end
    for _ in pairs(merged) do n = n + 1 end
    if n > MAX_PROPS then return bad_param("A device has at most 100 props.") end
    if #props_json(merged) > MAX_PROPS_BYTES then return bad_param("A device's props are at most 5 KB.") end
    dev.props = merged
    return {}
end

-- DeleteDeviceProp (§10): one `PropKey`; a key the device lacks is no error.
function H.DeleteDeviceProp(params, _, account)
    local dev, err = device_of(params, account)
    if not dev then return err end
    dev.props[params.PropKey] = nil
    return {}
end

-- Group names: 4 to 30 characters of letters, digits, `_` and Chinese (each counted as 2).
local function valid_group_name(s)
    if not valid_nickname(s, false) then return false end
    local width = 0
    for c in s:gmatch("[%z\1-\127\192-\255][\128-\191]*") do width = width + (#c > 1 and 2 or 1) end
    return width <= 30
end

local function group_of(params, account)
    local g = S.groups[params.GroupId or ""]
    if not g or g.account ~= account then
        return nil, fail("iot.group.NotExistedGroup", "The group does not exist.")
    end
    return g
end

local function group_info(g)
    return { GroupId = g.GroupId, GroupName = g.GroupName, GroupDesc = g.GroupDesc,
             UtcCreate = utc(g.created) }
end

-- CreateDeviceGroup (§10): GroupName unique among the account's groups; answers `Data`.
function H.CreateDeviceGroup(params, now, account)
    local name = params.GroupName
    if not valid_group_name(name) then return bad_param("The group name is invalid.") end
    for _, g in ipairs(S.group_order) do
        if g.account == account and g.GroupName == name then
            return fail("iot.group.GroupNameExisted", "The group name already exists.")
        end
    end
    local id
    repeat id = random_string(16) until not S.groups[id]
    local g = { GroupId = id, GroupName = name, GroupDesc = params.GroupDesc or "", account = account,
                created = now, members = {}, count = 0 }
    S.groups[id] = g
    S.group_order[#S.group_order + 1] = g
    return { Data = group_info(g) }
end

-- QueryDeviceGroupList (§10): the account's groups, oldest first, those whose name holds
-- GroupName when given; paging as QueryDevice's.
function H.QueryDeviceGroupList(params, _, account)
    local mine, want = {}, params.GroupName
    for _, g in ipairs(S.group_order) do
        if g.account == account and (not want or want == "" or g.GroupName:find(want, 1, true)) then
            mine[#mine + 1] = g
        end
    end
    local res, items = page_of(mine, params, false, group_info)
    if not res then return items end
    res.Data = { GroupInfo = array(items) }
    return res
end

-- `Device.N.ProductKey` / `Device.N.DeviceName` of the relation actions: 1 to 200; the
-- devices found (the account's) and how many entries were given.
local function relation_devices(params, account)
    local pks = {}
    for _, it in ipairs(indexed(params, "Device", "ProductKey")) do pks[it[1]] = it[2] end
    local names = indexed(params, "Device", "DeviceName")
    if #names == 0 then return nil, bad_param("The device list is empty.") end
    if #names > MAX_RELATIONS then return nil, bad_param("At most 200 devices are allowed.") end
    local devs, seen = {}, {}
    for _, it in ipairs(names) do
        local p = S.products[pks[it[1]] or ""]
        local dev = p and p.account == account and p.names[it[2]]
        if dev and not seen[dev] then devs[#devs + 1], seen[dev] = dev, true end
    end
    return devs
end

-- BatchAddDeviceGroupRelations (§10): the counts at the top level (not under Data);
-- a device already in 10 groups is not added (ExceedTenGroupDeviceCount).
function H.BatchAddDeviceGroupRelations(params, _, account)
    local g, err = group_of(params, account)
    if not g then return err end
    local devs, derr = relation_devices(params, account)
    if not devs then return derr end
    local added, already, exceed = 0, 0, 0
    for _, dev in ipairs(devs) do
        if g.members[dev.IotId] then
            already = already + 1
        elseif dev.ngroups >= MAX_GROUPS_A_DEVICE then
            exceed = exceed + 1
        else
            g.members[dev.IotId], g.count = dev, g.count + 1
            dev.groups[g.GroupId], dev.ngroups = g, dev.ngroups + 1
            added = added + 1
        end
    end
    return { ValidDeviceCount = #devs, SuccessAddedDeviceCount = added,
             AlreadyRelatedGroupDeviceCount = already, ExceedTenGroupDeviceCount = exceed }
end

-- BatchDeleteDeviceGroupRelations (§10): devices not in the group are no error.
function H.BatchDeleteDeviceGroupRelations(params, _, account)
    local g, err = group_of(params, account)
    if not g then return err end
    local devs, derr = relation_devices(params, account)
    if not devs then return derr end
    for _, dev in ipairs(devs) do
        if g.members[dev.IotId] then
            g.members[dev.IotId], g.count = nil, g.count - 1
            dev.groups[g.GroupId], dev.ngroups = nil, dev.ngroups - 1
        end
    end
    return {}
end

-- QueryDeviceListByDeviceGroup (§10): the group's devices in creation order, paged;
-- `Data.SimpleDeviceInfo[]`.
function H.QueryDeviceListByDeviceGroup(params, _, account)
    local g, err = group_of(params, account)
    if not g then return err end
    local devs = {}
    for _, dev in pairs(g.members) do devs[#devs + 1] = dev end
    table.sort(devs, function(a, b) return a.seq < b.seq end)
    local res, items = page_of(devs, params, false, function(dev)
        return { IotId = dev.IotId, ProductKey = dev.ProductKey, ProductName = dev.ProductKey,
                 DeviceName = dev.DeviceName, Nickname = dev.Nickname, Status = status(dev) }
    end)
    if not res then return items end
    res.Data = { SimpleDeviceInfo = array(items) }
    return res
end

-- BatchUpdateDeviceNickname (§10): `DeviceNicknameInfo.N.{ProductKey, DeviceName | IotId,
-- Nickname}`, at most 50 (the emulator's figure); an empty or absent Nickname removes it.
-- Every entry is checked before any changes (nickname rule as RegisterDevice's, §4).
function H.BatchUpdateDeviceNickname(params, _, account)
    local fields = {}
    for _, f in ipairs{ "ProductKey", "DeviceName", "IotId", "Nickname" } do
        for _, it in ipairs(indexed(params, "DeviceNicknameInfo", f)) do
            fields[it[1]] = fields[it[1]] or { n = it[1] }
            fields[it[1]][f] = it[2]
        end
    end
    local entries = {}
    for _, e in pairs(fields) do entries[#entries + 1] = e end
    table.sort(entries, function(a, b) return a.n < b.n end)
    if #entries == 0 then return bad_param("The nickname list is empty.") end
    if #entries > MAX_NICKNAMES then return bad_param("At most 50 devices are allowed.") end
    local todo = {}
    for i, e in ipairs(entries) do
        local dev, err = device_of(e, account)
        if not dev then return err end
        local nick = e.Nickname or ""
        if nick ~= "" and not valid_nickname(nick, false) then
            return fail("iot.common.InvalidFormattedParameter", "The nick name is illegal.")
        end
        todo[i] = { dev, nick }
    end
    for _, t in ipairs(todo) do t[1].Nickname = t[2] end
    return {}
end

-- DisableThing / EnableThing (§10): disabling disconnects an online device (unless a test
-- marked it `stay_online`, see `status`); enabling does not connect it again.
function H.DisableThing(params, _, account)
    local dev, err = device_of(params, account)
    if not dev then return err end
    if status(dev) == "ONLINE" and not dev.stay_online then dev.online = false end
    dev.disabled = true
    return {}
end

function H.EnableThing(params, _, account)
    local dev, err = device_of(params, account)
    if not dev then return err end
    dev.disabled = nil
    return {}
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

-- Per DeviceName, what the fleet actions set on a product's devices, for devices that have
-- any of it (a nickname, props, groups, disabled, a connection state): a small table even
-- for a big product. Group names sorted.
local function fleet_details(p)
    local out = {}
    for _, dev in ipairs(p.list) do
        if dev.Nickname ~= "" or next(dev.props) or dev.ngroups > 0 or dev.disabled or dev.online ~= nil then
            local groups = array()
            for _, g in pairs(dev.groups) do groups[#groups + 1] = g.GroupName end
            table.sort(groups)
            local props = {}
            for k, v in pairs(dev.props) do props[k] = v end
            out[dev.DeviceName] = { Nickname = dev.Nickname, props = props, groups = groups,
                                    disabled = dev.disabled or false, Status = status(dev) }
        end
    end
    return out
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
        out.products[pk] = { devices = p.live, names = names, account = p.account, details = fleet_details(p) }
    end
    out.groups = array()
    for i, g in ipairs(S.group_order) do
        local members = array()
        for _, dev in pairs(g.members) do members[#members + 1] = dev.ProductKey .. "/" .. dev.DeviceName end
        table.sort(members)
        out.groups[i] = { GroupId = g.GroupId, GroupName = g.GroupName, account = g.account, devices = members }
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
