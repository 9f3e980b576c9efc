-- A tiny request signer for the emulator's own specs (lua5.4 + lua-luaossl + LuaSocket).
-- Independent of the client under construction, so the emulator is not proven by it.
-- Rules: docs/wire.md §2 (V1) and §3 (ACS3).
local hmac = require "openssl.hmac"
local digest = require "openssl.digest"
local http = require "socket.http"
local ltn12 = require "ltn12"

local M = {}

function M.pct(s)
    return (tostring(s):gsub("[^A-Za-z0-9_.~-]", function(c) return string.format("%%%02X", c:byte()) end))
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function M.base64(bin)
    return ((bin:gsub(".", function(c)
        local b, r = c:byte(), ""
        for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
        return r
    end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
        if #x < 6 then return "" end
        local c = 0
        for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
        return B64:sub(c + 1, c + 1)
    end) .. ({ "", "==", "=" })[#bin % 3 + 1])
end

local function hex(bin) return (bin:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end

function M.timestamp(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", t or os.time()) end

local serial = 0
function M.nonce()
    serial = serial + 1
    return string.format("%d-%d-%d", os.time(), math.random(1, 1e9), serial)
end

function M.canonical(params)
    local keys = {}
    for k in pairs(params) do if k ~= "Signature" then keys[#keys + 1] = k end end
    table.sort(keys)
    for i, k in ipairs(keys) do keys[i] = M.pct(k) .. "=" .. M.pct(params[k]) end
    return table.concat(keys, "&")
end

function M.v1_sign(method, params, secret)
    local sts = method .. "&%2F&" .. M.pct(M.canonical(params))
    return M.base64(hmac.new(secret .. "&", "sha1"):final(sts)), sts
end

--- Common V1 parameters for an action, plus the given ones.
function M.params(action, extra, akid)
    local p = { Action = action, Version = "2018-01-20", Format = "JSON", AccessKeyId = akid or "testid",
                SignatureMethod = "HMAC-SHA1", SignatureVersion = "1.0", SignatureNonce = M.nonce(),
                Timestamp = M.timestamp(), RegionId = "cn-shanghai" }
    for k, v in pairs(extra or {}) do p[k] = v end
    return p
end

--- Raw HTTP: returns status, body, headers (or nil, error).
function M.http(url, method, headers, body, ca_file)
    local out = {}
    local req = { url = url, method = method, headers = headers or {}, sink = ltn12.sink.table(out) }
    if body then
        req.source = ltn12.source.string(body)
        req.headers["content-length"] = #body
    end
    local _, code, h
    if url:find("^https:") then
        req.cafile, req.verify, req.protocol = ca_file, { "peer", "fail_if_no_peer_cert" }, "any"
        req.options = "all"
        _, code, h = require("ssl.https").request(req)
    else
        _, code, h = http.request(req)
    end
    if type(code) ~= "number" then return nil, code end
    return code, table.concat(out), h
end

--- Sends a V1-signed request: GET with everything in the query, or POST with everything in
-- a form body (pop-core's two styles). `opts.tamper` alters the signature.
function M.v1(emu, method, params, opts)
    opts = opts or {}
    local sig = M.v1_sign(method, params, opts.secret or "testsecret")
    if opts.tamper then sig = (sig:sub(1, 1) == "A" and "B" or "A") .. sig:sub(2) end
    local all = {}
    for k, v in pairs(params) do all[k] = v end
    all.Signature = sig
    local keys = {}
    for k in pairs(all) do keys[#keys + 1] = k end
    table.sort(keys)
    for i, k in ipairs(keys) do keys[i] = M.pct(k) .. "=" .. M.pct(all[k]) end
    local enc = table.concat(keys, "&")
    if method == "GET" then return M.http(emu.endpoint .. "?" .. enc, "GET", nil, nil, emu.ca_file) end
    return M.http(emu.endpoint, "POST", { ["content-type"] = "application/x-www-form-urlencoded" }, enc, emu.ca_file)
end

--- Sends an ACS3-HMAC-SHA256 request: `query` in the URL, `form` in the body.
function M.acs3(emu, action, query, form, opts)
    opts = opts or {}
    local host = emu.endpoint:match("^https?://([^/]+)")
    local body = form and M.canonical(form) or ""
    local h = { host = host, ["x-acs-action"] = action, ["x-acs-version"] = "2018-01-20",
                ["x-acs-date"] = M.timestamp(), ["x-acs-signature-nonce"] = M.nonce(),
                ["x-acs-content-sha256"] = hex(digest.new("sha256"):final(body)) }
    if form then h["content-type"] = "application/x-www-form-urlencoded" end
    for k, v in pairs(opts.headers or {}) do h[k] = v end
    local names = {}
    for k in pairs(h) do names[#names + 1] = k end
    table.sort(names)
    local lines = {}
    for i, k in ipairs(names) do lines[i] = k .. ":" .. h[k] .. "\n" end
    local cq = M.canonical(query or {})
    local request = table.concat({ "POST", "/", cq, table.concat(lines), table.concat(names, ";"),
                                   h["x-acs-content-sha256"] }, "\n")
    local sts = "ACS3-HMAC-SHA256\n" .. hex(digest.new("sha256"):final(request))
    local sig = hex(hmac.new(opts.secret or "testsecret", "sha256"):final(sts))
    if opts.tamper then sig = (sig:sub(1, 1) == "0" and "1" or "0") .. sig:sub(2) end
    h.authorization = "ACS3-HMAC-SHA256 Credential=" .. (opts.akid or "testid") .. ",SignedHeaders="
        .. table.concat(names, ";") .. ",Signature=" .. sig
    return M.http(emu.endpoint .. (cq ~= "" and "?" .. cq or ""), "POST", h, body, emu.ca_file)
end

return M
