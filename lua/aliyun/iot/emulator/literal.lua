--- Lua-literal rendering of the emulator's inspection answers (`__emulator/state` and
-- `__emulator/requests` without `?format=json`), for people reading them with curl. Write
-- only: the emulator never loads text it receives as Lua (its control bodies are JSON).
-- @module aliyun.iot.emulator.literal
local M = {}

local function is_integer(v)
    if math.type then return math.type(v) == "integer" end
    return v == math.floor(v) and v > -2^53 and v < 2^53
end

local function encode(v, out)
    local t = type(v)
    if t == "string" then
        out[#out + 1] = string.format("%q", v)
    elseif t == "number" then
        if v ~= v or v == math.huge or v == -math.huge then
            error("literal: cannot encode " .. tostring(v), 3)
        end
        out[#out + 1] = is_integer(v) and string.format("%d", v) or string.format("%.17g", v)
    elseif t == "boolean" then
        out[#out + 1] = tostring(v)
    elseif t == "table" then
        out[#out + 1] = "{"
        local n = #v
        for i = 1, n do encode(v[i], out); out[#out + 1] = "," end
        local keys = {}
        for k in pairs(v) do
            if not (type(k) == "number" and k >= 1 and k <= n and k == math.floor(k)) then
                keys[#keys + 1] = k
            end
        end
        table.sort(keys, function(a, b)
            if type(a) == type(b) then return a < b end
            return type(a) == "number"
        end)
        for _, k in ipairs(keys) do
            out[#out + 1] = "["; encode(k, out); out[#out + 1] = "]="
            encode(v[k], out); out[#out + 1] = ","
        end
        out[#out + 1] = "}"
    else
        error("literal: cannot encode a " .. t, 3)
    end
end

--- Serialises a value (nil, boolean, number, string, or tables of them; no cycles).
-- @return string a Lua expression
function M.encode(v)
    if v == nil then return "nil" end
    local out = {}
    encode(v, out)
    return table.concat(out)
end

return M
