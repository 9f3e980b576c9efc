--- The emulator's dynamic registration, "one product, one secret" (runs inside nginx under
-- LuaJIT): `POST /auth/register/device` with the form `productKey, deviceName, random,
-- sign, signMethod` (docs/wire.md §11), for the products the launcher gave a ProductSecret
-- (`product_secrets`). The sign is checked with the emulator's own HMAC (emulator/sign.lua),
-- never the client's. Only a device that exists and is not active registers; each
-- registration gives it a new DeviceSecret, which the API then shows.
-- @module aliyun.iot.emulator.dynreg
local sign = require "aliyun.iot.emulator.sign"
local actions = require "aliyun.iot.emulator.actions"

local M = {}

M.PATH = "/auth/register/device"

-- The refusals. The platform documents the success shape and 460 ("request parameter
-- error", for the sub-device registration); the other codes and every message are OURS,
-- picked to look like the platform's numeric codes [UNVERIFIED].
local REFUSALS = {
    param = { 460, "request parameter error" },
    no_product = { 6250, "product not found" },      -- ours
    disabled = { 6251, "dynamic register is not enabled for the product" }, -- ours
    sign = { 6608, "sign check failed" },             -- ours
    no_device = { 6205, "device not found" },         -- ours
    active = { 6289, "device is already active" },    -- ours
}

local function refuse(kind)
    local r = REFUSALS[kind]
    return { code = r[1], message = r[2] }
end

local REQUIRED = { "productKey", "deviceName", "random", "sign", "signMethod" }

--- Answers one registration.
-- @param method the HTTP method
-- @param content_type the request's Content-Type (lower-cased)
-- @param body the raw body
-- @param secrets the configured {ProductKey = ProductSecret}
-- @return the answer tree (`{code = 200, data = {...}, message = "success"}` or
--   `{code =, message =}`, always HTTP 200), and the form's fields to record (no sign)
function M.answer(method, content_type, body, secrets)
    local form = {}
    if method == "POST" and content_type:find("application/x-www-form-urlencoded", 1, true) then
        form = sign.parse_form(body)
    end
    local recorded = { productKey = form.productKey, deviceName = form.deviceName,
                       random = form.random, signMethod = form.signMethod }
    for _, k in ipairs(REQUIRED) do
        if type(form[k]) ~= "string" or form[k] == "" then return refuse("param"), recorded end
    end
    local pk, name = form.productKey, form.deviceName
    local secret = secrets[pk]
    if not secret then
        return refuse(actions.has_product(pk) and "disabled" or "no_product"), recorded
    end
    local want = sign.device_hmac_hex(form.signMethod, secret,
        "deviceName" .. name .. "productKey" .. pk .. "random" .. form.random)
    if not want then return refuse("param"), recorded end
    if form.sign:lower() ~= want then return refuse("sign"), recorded end
    local dev = actions.device(pk, name)
    if not dev then return refuse("no_device"), recorded end
    if dev.active then return refuse("active"), recorded end
    return { code = 200, message = "success",
             data = { productKey = pk, deviceName = name, deviceSecret = actions.rotate_secret(dev) } },
        recorded
end

return M
