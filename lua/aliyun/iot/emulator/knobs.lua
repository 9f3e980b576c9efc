--- Checks of the emulator's run-time settings and fault scripts, shared by the launcher
-- (aliyun/iot/emulator.lua, any Lua 5.1-5.4/LuaJIT) and the server (LuaJIT inside nginx), so
-- that `emu:set{}` and a bare `curl -X POST .../__emulator/set` are held to the same rules.
-- Every check returns true, or nil and a message naming the field; nothing raises.
-- @module aliyun.iot.emulator.knobs
local M = {}

local function finite(v) return type(v) == "number" and v == v and v > -math.huge and v < math.huge end

local function is_int(v) return finite(v) and v == math.floor(v) and v > -2^53 and v < 2^53 end

--- True for an integer value (an integral float counts: JSON numbers decode as floats).
M.is_int = is_int

-- The settings `set` may change, each with its check (also applied by `start`).
local SETTABLE = {
    async_delay = function(v)
        return finite(v) and v >= 0 and v <= 86400, "async_delay must be a number of seconds within 0..86400"
    end,
    max_count = function(v)
        return is_int(v) and v >= 1 and v <= 10000000, "max_count must be an integer within 1..10000000"
    end,
    query_device_secrets = function(v)
        return type(v) == "boolean", "query_device_secrets must be a boolean"
    end,
    invalid_names = function(v)
        return v == "async" or v == "sync", 'invalid_names must be "async" or "sync"'
    end,
    -- credentials (emulator/sts.lua, emulator/imds.lua)
    credentials_ttl = function(v)
        return v == false or (is_int(v) and v >= 1 and v <= 43200),
            "credentials_ttl must be false or an integer number of seconds within 1..43200"
    end,
    credentials_fail = function(v) return type(v) == "boolean", "credentials_fail must be a boolean" end,
    imds = function(v)
        return v == "v2" or v == "v1" or v == "v2_only", 'imds must be "v2", "v1" or "v2_only"'
    end,
    oidc_token = function(v)
        return v == false or (type(v) == "string" and v ~= ""), "oidc_token must be false or a non-empty string"
    end,
    ecs_role = function(v)
        return type(v) == "string" and v:find("^[%w%.@_%-]+$") ~= nil and #v <= 64,
            "ecs_role must be a role name (letters, digits, . @ _ -)"
    end,
    qps_limits = function(v)
        if type(v) == "boolean" then return true end
        if type(v) ~= "table" then return false, "qps_limits must be a boolean or {Action = qps}" end
        for k, q in pairs(v) do
            if type(k) ~= "string" or not (finite(q) and q > 0) then
                return false, "qps_limits must map action names to numbers > 0"
            end
        end
        return true
    end,
}
M.SETTABLE = SETTABLE

--- Checks a table of settings for `set` (or the same fields of `start`): every field known,
-- every value valid.
-- @return true, or nil and a message
function M.check_settings(t)
    if type(t) ~= "table" then return nil, "settings must be an object" end
    for k, v in pairs(t) do
        local check = SETTABLE[k]
        if not check then return nil, "cannot set " .. tostring(k) end
        local ok, msg = check(v)
        if not ok then return nil, msg end
    end
    return true
end

--- The fault kinds `fault` injects.
M.FAULT_KINDS = { ["503"] = true, throttle = true, reset = true, slow = true, truncate = true,
                  malformed = true, reset_after = true, retry_after = true }
local FAULT_FIELDS = { kind = true, count = true, probability = true, action = true, delay = true }

--- Checks a fault script (see Emulator:fault).
-- @return true, or nil and a message
function M.check_fault(f)
    if type(f) ~= "table" or not M.FAULT_KINDS[f.kind] then
        return nil, "unknown fault kind " .. tostring(type(f) == "table" and f.kind or nil)
    end
    for k in pairs(f) do
        if not FAULT_FIELDS[k] then return nil, "unknown fault field " .. tostring(k) end
    end
    if (f.count == nil) == (f.probability == nil) then return nil, "give count or probability" end
    if f.count ~= nil and not (is_int(f.count) and f.count > 0) then
        return nil, "count must be a positive integer"
    end
    if f.probability ~= nil and not (finite(f.probability) and f.probability >= 0 and f.probability <= 1) then
        return nil, "probability must be within 0..1"
    end
    if f.delay ~= nil and not (finite(f.delay) and f.delay >= 0 and f.delay <= 600) then
        return nil, "delay must be seconds within 0..600"
    end
    if f.action ~= nil and type(f.action) ~= "string" then return nil, "action must be a string" end
    return true
end

return M
