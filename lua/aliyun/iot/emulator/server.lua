--- The emulator's request handler (runs inside nginx under LuaJIT, one worker).
-- Order of checks for an API request, each answered as the POP gateway would (reference
-- §5.1): Version, Action, AccessKeyId, SecurityToken, signature method, Timestamp, nonce
-- present, signature, nonce replay, QPS limit, required parameters. Only a request that
-- passed all of them meets an injected fault (so a fault always hits a request that would
-- otherwise have been served), then the IotInstanceId check and the action itself.
-- Every AccessKey belongs to an account; the action sees the account, never the key, so
-- what one account made is invisible to the others' keys, as in the cloud.
-- Control endpoints under /__emulator/ serve the launcher (aliyun/iot/emulator.lua): JSON
-- data in, JSON (or, for people with curl, a Lua table literal) out; never code.
-- @module aliyun.iot.emulator.server
local sign = require "aliyun.iot.emulator.sign"
local render = require "aliyun.iot.emulator.render"
local actions = require "aliyun.iot.emulator.actions"
local literal = require "aliyun.iot.emulator.literal"
local knobs = require "aliyun.iot.emulator.knobs"
local dynreg = require "aliyun.iot.emulator.dynreg"
local sts_api = require "aliyun.iot.emulator.sts"
local imds = require "aliyun.iot.emulator.imds"
local cjson = require("cjson.safe").new()
cjson.decode_invalid_numbers(false)
cjson.decode_max_depth(16)

local M = {}

local VERSION = "2018-01-20"
-- §1 / §3: requests older or newer than 15 minutes are rejected (the exact rule is
-- unverified, §9.3); nonces are remembered for twice that.
local TIME_WINDOW, NONCE_TTL = 15 * 60, 30 * 60
local NONCE_DICT = "aliyun_iot_emulator"

local conf
local log, faults, windows = {}, {}, {}
local LOG_LIMIT = 100000
-- Credentials issued by `issue_credentials`: AccessKeyId -> {secret=, token=, account=, expires=}
-- (kept across `reset`, as the cloud keeps credentials it issued).
local issued = {}

--- Loads the configuration written by the launcher (in init_by_lua, before the worker forks):
-- accounts, each with its AccessKeys and products.
function M.init(path)
    local f = assert(io.open(path, "rb"))
    conf = assert(cjson.decode(f:read("*a")))
    f:close()
    local tokens, keys = {}, {}
    for _, t in ipairs(conf.security_tokens) do tokens[t] = true end
    for name, a in pairs(conf.accounts) do
        for id, secret in pairs(a.access_keys) do keys[id] = { secret = secret, account = name } end
    end
    conf.token_set, conf.keys = tokens, keys
    actions.configure(conf)
end

--- Seeds the random names and secrets per worker start.
function M.init_worker()
    math.randomseed(math.floor(ngx.now() * 1000) % 2147483647 + ngx.worker.pid())
end

-- RequestId in the shape of the real ones (`E976E36B-6874-4FA4-8BC0-55F9BEC5E2EF`, §4).
local function request_id()
    local r = math.random
    return string.format("%04X%04X-%04X-4%03X-%04X-%06X%06X", r(0, 0xFFFF), r(0, 0xFFFF),
        r(0, 0xFFFF), r(0, 0xFFF), r(0x8000, 0xBFFF), r(0, 0xFFFFFF), r(0, 0xFFFFFF))
end

-- Days since 1970-01-01 of a civil date (proleptic Gregorian), so that Timestamp parsing
-- does not depend on the server's time zone.
local function days_from_civil(y, m, d)
    y = m <= 2 and y - 1 or y
    local era = math.floor(y / 400)
    local yoe = y - era * 400
    local doy = math.floor((153 * (m + (m > 2 and -3 or 9)) + 2) / 5) + d - 1
    local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
end

-- `YYYY-MM-DDThh:mm:ssZ` (§1; fractional seconds tolerated).
local function parse_timestamp(s)
    local y, mo, d, h, mi, sec = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)%.?%d*Z$")
    if not y then return nil end
    y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
    if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or sec > 60 then return nil end
    return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec
end

local function gateway(status, code, message)
    return { status = status, gateway = { Code = code, Message = message } }
end

local function qps_limit(action)
    local q = conf.qps_limits
    if q == true then return actions.ACTIONS[action].qps end
    if type(q) == "table" then return q[action] end
end

-- A sliding one-second window per account and action (the documented limits are per
-- account); throttled requests do not take a slot.
local function throttled(account, action, now)
    local limit = qps_limit(action)
    if not limit then return false end
    local key = account .. "\0" .. action
    local keep = {}
    for _, t in ipairs(windows[key] or {}) do if t > now - 1 then keep[#keep + 1] = t end end
    windows[key] = keep
    if #keep >= limit then return true end
    keep[#keep + 1] = now
    return false
end

local function take_fault(action)
    for i, f in ipairs(faults) do
        if f.action == nil or f.action == action then
            if f.count then
                f.count = f.count - 1
                if f.count <= 0 then table.remove(faults, i) end
                return f
            elseif math.random() < f.probability then
                return f
            end
        end
    end
end

-- Version and Action, the first checks of the gateway.
local function check_api(req)
    local v3 = req.acs3
    local version = v3 and req.headers["x-acs-version"] or req.params.Version
    if not version or version == "" then return gateway(400, "MissingVersion", "Version is mandatory for this action.") end
    if version ~= VERSION then return gateway(400, "InvalidVersion", "Specified parameter Version is not valid.") end
    if not req.action or req.action == "" then return gateway(400, "MissingAction", "Action is mandatory for this action.") end
    if not actions.ACTIONS[req.action] then
        return gateway(404, "InvalidApi.NotFound", "Specified api is not found,please check your url and method.")
    end
end

-- The AccessKey and its SecurityToken: returns nil, secret, account or the error response.
-- A long-term key takes any SecurityToken when `security_tokens` is empty, else only one of
-- them (a request without a token is accepted either way); a key issued by
-- `issue_credentials` takes only its own token, until it expires.
local function credential(req)
    local v3 = req.acs3
    local akid = v3 and v3.credential or req.params.AccessKeyId
    if not akid or akid == "" then return gateway(400, "MissingAccessKeyId", "AccessKeyId is mandatory for this action.") end
    local token = v3 and req.headers["x-acs-security-token"] or req.params.SecurityToken
    local temp = issued[akid]
    if temp then
        if token ~= temp.token then
            return gateway(400, "InvalidSecurityToken.MismatchWithAccessKey", "Specified SecurityToken mismatch with the AccessKey.")
        end
        if ngx.time() >= temp.expires then
            return gateway(400, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired.")
        end
        return nil, temp.secret, temp.account
    end
    local key = conf.keys[akid]
    if not key then return gateway(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.") end
    if token and next(conf.security_tokens) and not conf.token_set[token] then
        -- code [UNVERIFIED]: the reference lists no STS token error
        return gateway(400, "InvalidSecurityToken.Malformed", "Specified SecurityToken is malformed.")
    end
    return nil, key.secret, key.account
end

local function check_signature(req, secret)
    local p, h, v3 = req.params, req.headers, req.acs3
    if v3 then
        local sts = sign.acs3_string_to_sign(req.method, req.path, req.query_pairs, h, v3.signed_headers, req.body)
        if sign.hmac_sha256_hex(secret, sts) ~= v3.signature:lower() then
            -- §5.1 "(V3 mismatch)" message form
            return gateway(400, "SignatureDoesNotMatch",
                "Specified signature does not match our calculation. server StringToSign is [" .. sts .. "]")
        end
        return
    end
    if not p.Signature or p.Signature == "" then return gateway(400, "MissingSignature", "Signature is mandatory for this action.") end
    local sts = sign.v1_string_to_sign(req.method, p)
    if sign.v1_signature(secret, sts) ~= p.Signature then
        return gateway(400, "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation. server string to sign is:" .. sts)
    end
end

-- The gateway checks; returns the error response, or nil and the account of the key.
-- `api_check` is the first check (Version and Action: the IoT API's or STS's).
local function authenticate(req, api_check)
    local p, h, v3 = req.params, req.headers, req.acs3
    local err = (api_check or check_api)(req)
    if err then return err end
    local e, secret, account = credential(req)
    if e then return e end
    if not v3 then
        if p.SignatureMethod ~= "HMAC-SHA1" then
            return gateway(400, "InvalidSignatureMethod", "Specified signature method is not valid.")
        end
        if p.SignatureVersion ~= "1.0" then
            return gateway(400, "InvalidSignatureVersion", "Specified signature version is not valid.")
        end
    end
    local ts = v3 and h["x-acs-date"] or p.Timestamp
    if not ts or ts == "" then return gateway(400, "MissingTimestamp", "Timestamp is mandatory for this action.") end
    local t = parse_timestamp(ts)
    if not t then return gateway(400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.") end
    if math.abs(t - ngx.time()) > TIME_WINDOW then
        return gateway(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
    end
    local nonce = v3 and h["x-acs-signature-nonce"] or p.SignatureNonce
    if not nonce or nonce == "" then return gateway(400, "MissingSignatureNonce", "SignatureNonce is mandatory for this action.") end
    err = check_signature(req, secret)
    if err then return err end
    -- a nonce is spent only by a correctly signed request
    local akid = v3 and v3.credential or p.AccessKeyId
    local ok, aerr = ngx.shared[NONCE_DICT]:add("n:" .. akid .. ":" .. nonce, true, NONCE_TTL)
    if not ok and aerr == "exists" then
        return gateway(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
    end
    return nil, account
end

local FAULTS = {
    ["503"] = function() return gateway(503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server.") end,
    throttle = function() return gateway(400, "Throttling.User", "Request was denied due to user flow control.") end,
    -- the current gateways' signal: any code, the wait in x-acs-retry-after [ms] (ours: 429, TooManyRequests)
    retry_after = function(f)
        local r = gateway(429, "TooManyRequests", "Too many requests; retry later.")
        r.retry_after = tostring(math.floor((f.delay or 0.2) * 1000))
        return r
    end,
}

local function process(req)
    local err, account = authenticate(req)
    if err then return err end
    local now = ngx.now()
    if throttled(account, req.action, now) then
        return gateway(400, "Throttling.User", "Request was denied due to user flow control.")
    end
    for _, name in ipairs(actions.ACTIONS[req.action].required) do
        local v = req.params[name]
        if v == nil or v == "" then
            return gateway(400, "Missing" .. name, name .. " is mandatory for this action.")
        end
    end
    local fault = take_fault(req.action)
    if fault then
        req.fault = fault.kind
        if FAULTS[fault.kind] then return FAULTS[fault.kind](fault) end
        if fault.kind == "slow" then
            ngx.sleep(fault.delay or 1)
            ngx.update_time()
            now = ngx.now()
        elseif fault.kind ~= "reset_after" then
            return { fault = fault.kind }
        end
    end
    -- IotInstanceId: required when the emulator has one, and must be the one (§4 common);
    -- the error code is our pick from the §5.2 list.
    local inst = req.params.IotInstanceId
    if inst == "" then inst = nil end
    if inst ~= conf.iot_instance_id then
        return { status = 200, body = { Success = false, Code = "iot.system.InstanceNotFound",
                                        ErrorMessage = "The instance is not found." } }
    end
    actions.settle(now)
    local result = actions.run(req.action, req.params, now, account)
    if result.business then
        return { status = 200, body = { Success = false, Code = result.Code,
                                        ErrorMessage = result.ErrorMessage, Data = result.Data } }
    end
    result.Success = true
    return { status = 200, body = result, after = fault and fault.kind }
end

local process_sts -- below, beside the credentials it issues

local function log_request(entry)
    if #log < LOG_LIMIT then log[#log + 1] = entry end
end

local CONTENT_TYPE = { json = "application/json;charset=utf-8", xml = "text/xml;charset=utf-8" }

local function read_body()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body then
        local file = ngx.req.get_body_file()
        if file then
            local f = assert(io.open(file, "rb"))
            body = f:read("*a")
            f:close()
        end
    end
    return body or ""
end

-- A response promising more bytes than it sends, then a closed connection.
local function send_truncated(format, rid)
    local full = format == "json"
        and render.json { RequestId = rid, Success = true, Data = { Note = string.rep("x", 64) } }
        or render.xml("Response", { RequestId = rid, Success = true, Data = { Note = string.rep("x", 64) } })
    local sock = ngx.req.socket(true)
    sock:send("HTTP/1.1 200 OK\r\nContent-Type: " .. CONTENT_TYPE[format] .. "\r\nContent-Length: "
        .. #full .. "\r\nConnection: close\r\n\r\n" .. full:sub(1, math.floor(#full / 2)))
    return ngx.exit(444)
end

-- A header longer than this is refused before anything parses it (an ACS3 Authorization
-- is a few hundred bytes); nginx itself bounds them at 1 MiB (large_client_header_buffers).
local MAX_HEADER = 16 * 1024

local function oversized(headers)
    for _, v in pairs(headers) do
        if type(v) == "table" then
            for _, x in ipairs(v) do if #x > MAX_HEADER then return true end end
        elseif #v > MAX_HEADER then
            return true
        end
    end
    return false
end

-- What the cloud's front nginx answers to a header it will not hold.
local function header_too_large()
    ngx.status = 400
    ngx.header["Content-Type"] = "text/html"
    ngx.print("<html>\r\n<head><title>400 Request Header Or Cookie Too Large</title></head>\r\n<body>\r\n"
        .. "<center><h1>400 Bad Request</h1></center>\r\n"
        .. "<center>Request Header Or Cookie Too Large</center>\r\n</body>\r\n</html>\r\n")
    log_request({ action = nil, method = ngx.req.get_method(), params = {}, signature = "none", status = 400,
                  code = "RequestHeaderTooLarge" })
end

-- What `requests()` keeps: the parameters without Signature, with credentials (a
-- SecurityToken, or a secret a broken client put into the parameters) as "<redacted>".
local REDACTED = { SecurityToken = true, AccessKeySecret = true, DeviceSecret = true, OIDCToken = true }

local function recorded_params(params)
    local out = {}
    for k, v in pairs(params) do
        if REDACTED[k] then out[k] = "<redacted>" elseif k ~= "Signature" then out[k] = v end
    end
    return out
end

local function api()
    ngx.update_time()
    local headers = ngx.req.get_headers(200)
    if oversized(headers) then return header_too_large() end
    local body = read_body()
    local query = ngx.var.args or ""
    local params, query_pairs = sign.parse_form(query)
    local ctype = (ngx.var.content_type or ""):lower()
    if body ~= "" and ctype:find("application/x-www-form-urlencoded", 1, true) then
        for k, v in pairs((sign.parse_form(body))) do params[k] = v end
    end
    local auth = headers["authorization"]
    local acs3 = type(auth) == "string" and sign.parse_acs3_authorization(auth) or nil
    local req = {
        method = ngx.req.get_method(), path = ngx.var.request_uri:match("^[^?]*"), params = params,
        query_pairs = query_pairs, headers = headers, body = body, acs3 = acs3,
        action = acs3 and headers["x-acs-action"] or params.Action,
    }
    -- Format is case-insensitive and defaults to XML (§1); ACS3 answers default to JSON
    -- (Tea asks for BodyType json and sends no Format) [inference].
    local format = (params.Format or (acs3 and "json") or "xml"):lower() == "json" and "json" or "xml"
    local rid = request_id()
    local is_sts = sts_api.handles(params)
    if is_sts then format = "json" end
    local res = is_sts and process_sts(req) or process(req)

    log_request { action = req.action, method = req.method, params = recorded_params(params),
                  signature = acs3 and "ACS3" or "V1", status = res.status or 0,
                  user_agent = type(headers["user-agent"]) == "string" and headers["user-agent"] or nil,
                  code = res.gateway and res.gateway.Code or res.body and res.body.Code,
                  fault = req.fault }

    if res.fault == "reset" or res.after == "reset_after" then return ngx.exit(444) end
    if res.fault == "truncate" then return send_truncated(format, rid) end
    ngx.header["Content-Type"] = CONTENT_TYPE[format]
    ngx.header["x-acs-request-id"] = rid
    if res.retry_after then ngx.header["x-acs-retry-after"] = res.retry_after end
    local text
    if res.fault == "malformed" then
        ngx.status = 200
        text = "upstream answered garbage {\"RequestId\": <"
    elseif res.gateway then
        ngx.status = res.status
        res.gateway.RequestId = rid
        res.gateway.HostId = ngx.var.host or "iot.cn-shanghai.aliyuncs.com"
        text = render.gateway_error(format, res.gateway)
    else
        ngx.status = res.status
        res.body.RequestId = rid
        text = format == "json" and render.json(res.body) or render.xml(req.action .. "Response", res.body)
    end
    ngx.header["Content-Length"] = #text
    ngx.print(text)
end

-- Dynamic registration (emulator/dynreg.lua): a device's call, no AccessKey; recorded in
-- `requests()` with its form fields but neither the sign nor the secret it hands out.
local function device_register()
    ngx.update_time()
    actions.settle(ngx.now())
    local method = ngx.req.get_method()
    local res, recorded = dynreg.answer(method, (ngx.var.content_type or ""):lower(), read_body(),
                                        conf.product_secrets or {})
    log_request { action = dynreg.PATH, method = method, params = recorded, signature = "device",
                  status = 200, code = res.code ~= 200 and tostring(res.code) or nil }
    local text = render.json(res)
    ngx.status = 200
    ngx.header["Content-Type"] = "application/json;charset=utf-8"
    ngx.header["Content-Length"] = #text
    ngx.print(text)
end

-- Control endpoints: state-changing ones take POST with a JSON object (data only, each
-- field checked by aliyun.iot.emulator.knobs; nothing changes unless all of it is valid),
-- inspection ones GET. Answers are JSON when asked (`Accept: application/json` or
-- `?format=json`; the launcher always asks), else a Lua table literal for people with curl.
local MAX_CONTROL_BODY = 1024 * 1024

local CONTROL = { GET = {}, POST = {} }

function CONTROL.GET.ping() return true end

function CONTROL.GET.state()
    ngx.update_time()
    actions.settle(ngx.now())
    return actions.snapshot()
end

function CONTROL.GET.requests() return render.array(log) end

function CONTROL.POST.fault(f)
    local ok, err = knobs.check_fault(f)
    if not ok then return nil, err end
    if f.action ~= nil and not actions.ACTIONS[f.action] then return nil, "unknown action " .. f.action end
    faults[#faults + 1] = { kind = f.kind, count = f.count, probability = f.probability,
                            action = f.action, delay = f.delay }
    return true
end

-- Marks a device active (as its first connection would), or not with `active = false`.
function CONTROL.POST.set_active(t)
    for k in pairs(t) do
        if k ~= "ProductKey" and k ~= "DeviceName" and k ~= "active" then return nil, "unknown field " .. tostring(k) end
    end
    if type(t.ProductKey) ~= "string" or type(t.DeviceName) ~= "string" then
        return nil, "set_active needs ProductKey and DeviceName"
    end
    if t.active ~= nil and type(t.active) ~= "boolean" then return nil, "active must be a boolean" end
    if not actions.set_active(t.ProductKey, t.DeviceName, t.active ~= false) then return nil, "no such device" end
    return true
end

-- Marks devices online (connected) or offline: {ProductKey =, DeviceName = name or {names},
-- online = true (default) | false, stay_online = true (still ONLINE after DisableThing)}.
-- Nothing changes unless every device exists.
function CONTROL.POST.set_online(t)
    for k in pairs(t) do
        if k ~= "ProductKey" and k ~= "DeviceName" and k ~= "online" and k ~= "stay_online" then
            return nil, "unknown field " .. tostring(k)
        end
    end
    local names = type(t.DeviceName) == "table" and t.DeviceName or { t.DeviceName }
    if type(t.ProductKey) ~= "string" or #names == 0 then return nil, "set_online needs ProductKey and DeviceName" end
    if t.online ~= nil and type(t.online) ~= "boolean" then return nil, "online must be a boolean" end
    if t.stay_online ~= nil and type(t.stay_online) ~= "boolean" then return nil, "stay_online must be a boolean" end
    if t.stay_online and t.online == false then return nil, "stay_online goes with online = true" end
    for _, name in ipairs(names) do
        if type(name) ~= "string" or not actions.device(t.ProductKey, name) then
            return nil, "no such device " .. tostring(name)
        end
    end
    for _, name in ipairs(names) do
        actions.set_online(t.ProductKey, name, t.online ~= false, t.stay_online or nil)
    end
    return true
end

function CONTROL.POST.clear_faults() faults = {}; return true end

function CONTROL.POST.reset()
    actions.reset()
    log, faults, windows = {}, {}, {}
    ngx.shared[NONCE_DICT]:flush_all()
    return true
end

function CONTROL.POST.set(t)
    local ok, err = knobs.check_settings(t)
    if not ok then return nil, err end
    if type(t.qps_limits) == "table" then
        for action in pairs(t.qps_limits) do
            if not actions.ACTIONS[action] then return nil, "qps_limits: unknown action " .. action end
        end
    end
    for k, v in pairs(t) do conf[k] = v end
    windows = {}
    return true
end

local random_string = actions.random_string

-- Temporary credentials of an account, as STS issues them: they act for that account only,
-- with their own SecurityToken, until they expire (`ttl` seconds from now).
local function issue(account, ttl)
    ngx.update_time()
    local id, expires = "STS." .. random_string(24), ngx.time() + ttl
    issued[id] = { secret = random_string(32), token = "CAIS" .. random_string(120), account = account,
                   expires = expires }
    return { AccessKeyId = id, AccessKeySecret = issued[id].secret, SecurityToken = issued[id].token,
             Expiration = os.date("!%Y-%m-%dT%H:%M:%SZ", expires) }
end

-- STS: AssumeRole through the gateway checks (signature of the source credentials),
-- AssumeRoleWithOIDC without them.
function process_sts(req)
    if req.params.Action == "AssumeRoleWithOIDC" then
        local err = sts_api.check_api(req)
        if err then return err end
        return sts_api.assume_role_with_oidc(req, conf, issue)
    end
    local err, account = authenticate(req, sts_api.check_api)
    if err then return err end
    return sts_api.assume_role(req, account, conf, issue)
end

function CONTROL.POST.issue_credentials(t)
    for k in pairs(t) do
        if k ~= "account" and k ~= "expires_in" then return nil, "unknown field " .. tostring(k) end
    end
    if type(t.account) ~= "string" or not conf.accounts[t.account] then return nil, "unknown account" end
    local ttl = t.expires_in == nil and 3600 or t.expires_in
    if not (knobs.is_int(ttl) and ttl >= 1 and ttl <= 43200) then
        return nil, "expires_in must be an integer number of seconds within 1..43200"
    end
    return issue(t.account, ttl)
end

local function wants_json()
    local accept = ngx.var.http_accept or ""
    return ngx.var.arg_format == "json" or accept:find("application/json", 1, true) ~= nil
end

local function answer(status, value, json)
    ngx.status = status
    ngx.header["Content-Type"] = json and "application/json" or "text/plain"
    local text = json and render.json(value) or literal.encode(value)
    ngx.header["Content-Length"] = #text
    ngx.print(text)
end

local function control_arg(json)
    local body = read_body()
    if #body > MAX_CONTROL_BODY then return nil, answer(413, { error = "the body is over 1 MiB" }, json) end
    if body == "" then return {} end
    local arg = cjson.decode(body)
    if type(arg) ~= "table" then return nil, answer(400, { error = "the body must be a JSON object" }, json) end
    return arg
end

local function control(name)
    local json = wants_json()
    local method = ngx.req.get_method()
    local fn = CONTROL[method] and CONTROL[method][name]
    if not fn then
        local other = CONTROL.GET[name] and "GET" or CONTROL.POST[name] and "POST"
        if not other then return answer(404, { error = "no such control URL" }, json) end
        ngx.header["Allow"] = other
        return answer(405, { error = name .. " needs " .. other }, json)
    end
    local arg = {}
    if method == "POST" then
        arg = control_arg(json)
        if not arg then return end
    end
    local out, err = fn(arg)
    if out == nil then return answer(400, { error = err }, json) end
    answer(200, out, json)
end

--- The content handler of every location.
-- Instance metadata and the credentials URI (emulator/imds.lua), recorded in `requests()`.
local function metadata()
    ngx.update_time()
    local res, record = imds.answer(conf, issue, render.json)
    record.status = res.status
    log_request(record)
    ngx.status = res.status
    ngx.header["Content-Type"] = res.ctype
    ngx.header["Content-Length"] = #res.body
    ngx.print(res.body)
end

--- The content handler of every location.
function M.handle()
    local uri = ngx.var.uri
    if uri:sub(1, 12) == "/__emulator/" then return control(uri:sub(13)) end
    if uri == dynreg.PATH then return device_register() end
    if uri:sub(1, 8) == "/latest/" or uri == imds.URI then return metadata() end
    return api()
end

return M
