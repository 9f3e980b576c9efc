--- JSON and XML rendering of emulator responses (runs inside nginx under LuaJIT).
-- Rendered here rather than with cjson because ApplyIds are int64 and must come out as exact
-- integer literals (docs/wire.md §4 "ApplyId is Long/int64", §6 "a JSON number (int64)"),
-- beyond what a double holds, and because XML needs the same tree anyway.
-- Trees are Lua tables: objects are maps, lists are `array{...}`, exact integers `raw"123"`.
-- @module aliyun.iot.emulator.render
local M = {}

local ARRAY = {}
local RAW = {}

--- Marks a table as a list (so an empty list renders as `[]`).
function M.array(t) return setmetatable(t or {}, ARRAY) end

--- An integer literal given as a decimal string (rendered verbatim).
function M.raw(s) return setmetatable({ s }, RAW) end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    return keys
end

local JSON_ESC = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

local function json_string(s)
    return '"' .. s:gsub('[%c"\\]', function(c)
        return JSON_ESC[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
end

local function number(v)
    if v == math.floor(v) and v > -2^53 and v < 2^53 then return string.format("%d", v) end
    return string.format("%.17g", v)
end

local function json(v, out)
    local t = type(v)
    if t == "string" then
        out[#out + 1] = json_string(v)
    elseif t == "number" then
        out[#out + 1] = number(v)
    elseif t == "boolean" then
        out[#out + 1] = tostring(v)
    elseif getmetatable(v) == RAW then
        out[#out + 1] = v[1]
    elseif getmetatable(v) == ARRAY then
        out[#out + 1] = "["
        for i, x in ipairs(v) do
            if i > 1 then out[#out + 1] = "," end
            json(x, out)
        end
        out[#out + 1] = "]"
    else
        out[#out + 1] = "{"
        for i, k in ipairs(sorted_keys(v)) do
            if i > 1 then out[#out + 1] = "," end
            out[#out + 1] = json_string(k)
            out[#out + 1] = ":"
            json(v[k], out)
        end
        out[#out + 1] = "}"
    end
end

--- Renders a tree as JSON text.
function M.json(tree)
    local out = {}
    json(tree, out)
    return table.concat(out)
end

local XML_ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }

local function xml_text(v)
    local t = type(v)
    if t == "string" then return (v:gsub('[&<>"]', XML_ESC)) end
    if t == "number" then return number(v) end
    if t == "boolean" then return tostring(v) end
    return v[1] -- raw integer
end

-- A list under key `k` is the repeated element `<k>`; its wrapper is the enclosing object
-- (`<ValidList><Name>a</Name><Name>b</Name></ValidList>`, docs/wire.md §6).
local function xml(name, v, out)
    if type(v) == "table" and getmetatable(v) == ARRAY then
        for _, x in ipairs(v) do xml(name, x, out) end
        return
    end
    out[#out + 1] = "<" .. name .. ">"
    if type(v) == "table" and getmetatable(v) ~= RAW then
        for _, k in ipairs(sorted_keys(v)) do xml(k, v[k], out) end
    else
        out[#out + 1] = xml_text(v)
    end
    out[#out + 1] = "</" .. name .. ">"
end

--- Renders a tree as an XML document with the given root element (`<ActionResponse>`).
function M.xml(root, tree)
    local out = { "<?xml version='1.0' encoding='UTF-8'?>" }
    xml(root, tree, out)
    return table.concat(out)
end

--- A POP gateway error body, in the element order of a real server's XML
-- (`RequestId, HostId, Code, Message, Recommend`, docs/wire.md §5.1).
-- @param format "json" | "xml"
-- @param e {RequestId=, HostId=, Code=, Message=}
function M.gateway_error(format, e)
    local recommend = "https://error-center.aliyun.com/status/search?Keyword=" .. e.Code
        .. "&source=PopGw"
    if format == "json" then
        return M.json { RequestId = e.RequestId, HostId = e.HostId, Code = e.Code,
                        Message = e.Message, Recommend = recommend }
    end
    return "<?xml version='1.0' encoding='UTF-8'?><Error><RequestId>" .. xml_text(e.RequestId)
        .. "</RequestId><HostId>" .. xml_text(e.HostId) .. "</HostId><Code>"
        .. xml_text(e.Code) .. "</Code><Message>" .. xml_text(e.Message)
        .. "</Message><Recommend><![CDATA[" .. recommend .. "]]></Recommend></Error>"
end

return M
