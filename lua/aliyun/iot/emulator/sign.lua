--- The emulator's own signature verification (runs inside nginx under LuaJIT).
-- Deliberately independent of the client: its own form decoding, canonicalisation and
-- percent-encoding, HMAC-SHA1 from ngx_lua, SHA-256/HMAC-SHA256 (and the device side's
-- HMAC-MD5/SHA1/SHA256) from libcrypto through the FFI. A signing bug in any client therefore shows up as a rejected request.
-- @module aliyun.iot.emulator.sign
local ffi = require "ffi"

local M = {}

--- Percent-encoding of the POP signature (docs/wire.md §2 step 2): keep `A-Z a-z 0-9 - _ . ~`,
-- every other byte becomes `%XY` with upper-case hex. `ngx.escape_uri` keeps `* ! ' ( )`
-- and so cannot be used.
function M.percent_encode(s)
    return (s:gsub("[^A-Za-z0-9_.~-]", function(c)
        return string.format("%%%02X", c:byte())
    end))
end

local function unescape(s)
    s = s:gsub("%+", " ")
    return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- Decodes an `application/x-www-form-urlencoded` string (also used for the query string):
-- `+` is a space, since Tea and Go write bodies with `url.Values.Encode` (docs/wire.md §2,
-- "Form-body subtlety"). Empty values are kept (`SignatureType=`, docs/wire.md §1).
-- @return map {name = value} (the last of repeated names wins), array of {name, value}
function M.parse_form(s)
    local map, pairs_ = {}, {}
    if not s or s == "" then return map, pairs_ end
    for item in s:gmatch("[^&]+") do
        local k, v = item:match("^([^=]*)=(.*)$")
        if not k then k, v = item, "" end
        k, v = unescape(k), unescape(v)
        map[k] = v
        pairs_[#pairs_ + 1] = { k, v }
    end
    return map, pairs_
end

local function canonical(pairs_)
    local enc = {}
    for i, p in ipairs(pairs_) do enc[i] = { M.percent_encode(p[1]), M.percent_encode(p[2]) } end
    table.sort(enc, function(a, b)
        if a[1] ~= b[1] then return a[1] < b[1] end
        return a[2] < b[2]
    end)
    for i, p in ipairs(enc) do enc[i] = p[1] .. "=" .. p[2] end
    return table.concat(enc, "&")
end

--- V1 (HMAC-SHA1, SignatureVersion 1.0) string to sign, docs/wire.md §2 steps 1-5: every
-- parameter from query and body except `Signature`, sorted by name in byte order.
-- @param method "GET" | "POST"
-- @param params map of decoded parameters
function M.v1_string_to_sign(method, params)
    local list = {}
    for k, v in pairs(params) do
        if k ~= "Signature" then list[#list + 1] = { k, v } end
    end
    return method .. "&" .. M.percent_encode("/") .. "&" .. M.percent_encode(canonical(list))
end

--- V1 signature: Base64(HMAC-SHA1(secret .. "&", string_to_sign)), docs/wire.md §2 step 6.
function M.v1_signature(secret, string_to_sign)
    return ngx.encode_base64(ngx.hmac_sha1(secret .. "&", string_to_sign))
end

ffi.cdef [[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
const EVP_MD *EVP_sha1(void);
const EVP_MD *EVP_md5(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md,
                    unsigned int *md_len);
unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);
]]

-- nginx is linked against libcrypto, so its symbols are normally in the global namespace.
local crypto
do
    local ok = pcall(function() return ffi.C.EVP_sha256 end)
    if ok then
        crypto = ffi.C
    else
        local loaded
        for _, name in ipairs { "libcrypto.so.3", "libcrypto.so.1.1", "crypto" } do
            loaded, crypto = pcall(ffi.load, name)
            if loaded then break end
        end
        assert(loaded, "emulator: cannot find libcrypto for SHA-256")
    end
end

local md = ffi.new("unsigned char[32]")
local mdlen = ffi.new("unsigned int[1]")

local function hex(bin)
    return (bin:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

--- Lower-case hex SHA-256 of a string.
function M.sha256_hex(data)
    crypto.SHA256(data, #data, md)
    return hex(ffi.string(md, 32))
end

--- Lower-case hex HMAC-SHA256.
function M.hmac_sha256_hex(key, data)
    crypto.HMAC(crypto.EVP_sha256(), key, #key, data, #data, md, mdlen)
    return hex(ffi.string(md, mdlen[0]))
end

local DIGESTS = { hmacsha256 = "EVP_sha256", hmacsha1 = "EVP_sha1", hmacmd5 = "EVP_md5" }

--- Lower-case hex HMAC by a device-side method name ("hmacsha256", "hmacsha1", "hmacmd5",
-- docs/wire.md §11); nil for any other name.
function M.device_hmac_hex(method, key, data)
    local digest = DIGESTS[method]
    if not digest then return nil end
    crypto.HMAC(crypto[digest](), key, #key, data, #data, md, mdlen)
    return hex(ffi.string(md, mdlen[0]))
end

-- Leading and trailing spaces and tabs cut, in linear time (the pattern `^%s*(.-)%s*$` is
-- quadratic in a long run of inner spaces).
local function trim(s)
    local i = s:find("[^ \t]")
    if not i then return "" end
    local j = #s
    while true do
        local b = s:byte(j)
        if b ~= 32 and b ~= 9 then break end
        j = j - 1
    end
    return s:sub(i, j)
end

local ACS3 = "ACS3-HMAC-SHA256"

--- Parses `Authorization: ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=<a;b>,Signature=<hex>`
-- (docs/wire.md §3), in one pass over the value: fields split at `,`, each at its first `=`.
-- @return {credential=, signed_headers=, signature=} or nil
function M.parse_acs3_authorization(value)
    value = trim(value)
    if value:sub(1, #ACS3) ~= ACS3 then return nil end
    local rest = value:sub(#ACS3 + 1)
    if not rest:find("^[ \t]") then return nil end
    local fields, pos = {}, 1
    while pos <= #rest + 1 do
        local comma = rest:find(",", pos, true) or #rest + 1
        local item = trim(rest:sub(pos, comma - 1))
        local eq = item:find("=", 1, true)
        if eq then fields[item:sub(1, eq - 1)] = item:sub(eq + 1) end
        pos = comma + 1
    end
    if not (fields.Credential and fields.SignedHeaders and fields.Signature) then return nil end
    return { credential = fields.Credential, signed_headers = fields.SignedHeaders,
             signature = fields.Signature }
end

--- ACS3-HMAC-SHA256 string to sign (docs/wire.md §3): CanonicalURI `/`, canonical query from the
-- query parameters only, canonical headers from the names the client listed in
-- SignedHeaders (lower-cased, values trimmed, repeated values sorted and joined with `,`),
-- payload hash computed here from the body bytes.
-- @param method HTTP method
-- @param path request path as sent (before `?`)
-- @param query_pairs array of decoded {name, value} from the query string
-- @param headers ngx.req.get_headers() result (lower-case access)
-- @param signed_headers the SignedHeaders value
-- @param body raw body ("" when none)
-- @return string_to_sign, canonical_request
function M.acs3_string_to_sign(method, path, query_pairs, headers, signed_headers, body)
    local names = {}
    for name in signed_headers:gmatch("[^;]+") do names[#names + 1] = name:lower() end
    table.sort(names)
    local lines = {}
    for i, name in ipairs(names) do
        local v = headers[name]
        if type(v) == "table" then
            local vs = {}
            for j, x in ipairs(v) do vs[j] = trim(x) end
            table.sort(vs)
            v = table.concat(vs, ",")
        else
            v = trim(v or "")
        end
        lines[i] = name .. ":" .. v .. "\n"
    end
    local request = table.concat({
        method,
        path ~= "" and path or "/",
        canonical(query_pairs),
        table.concat(lines),
        table.concat(names, ";"),
        M.sha256_hex(body),
    }, "\n")
    return "ACS3-HMAC-SHA256\n" .. M.sha256_hex(request), request
end

return M
