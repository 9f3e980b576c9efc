--- Gives an XML response the shape and types its JSON twin has.
-- XML text carries no types: a DeviceName `12345678` is a string, and a one-element
-- `<ValidList><Name>a</Name></ValidList>` is still a list. `core.xml_decode` returns every
-- child as an array of occurrences; the action's row says which paths are lists,
-- integers and booleans, and this module collapses and converts accordingly, so that
-- JSON and XML results of the same call are deep-equal.
-- @module aliyun.iot.shape

local M = {}

-- Every response has these, whatever the action (reference §4, common response fields).
local COMMON_BOOLEANS = {"Success"}

local function set(list, into)
  into = into or {}
  for _, p in ipairs(list) do into[p] = true end
  return into
end

local cache = setmetatable({}, {__mode = "k"})

local function schema_of(row)
  local s = cache[row]
  if s then return s end
  s = {
    lists = set(row.lists or {}),
    integers = set(row.integers or {}),
    booleans = set(row.booleans or {}, set(COMMON_BOOLEANS)),
    children_lists = {},
  }
  -- A container path holds declared lists; an empty container element still yields
  -- those lists, empty, as the JSON rendering `{"Name": []}` does.
  for p in pairs(s.lists) do
    local parent, last = p:match("^(.*)%.([^.]+)$")
    if not parent then parent, last = "", p end
    s.children_lists[parent] = s.children_lists[parent] or {}
    table.insert(s.children_lists[parent], last)
  end
  cache[row] = s
  return s
end

--- Converts a decimal string to the integer the JSON decoder would give: a Lua integer on
-- 5.3/5.4; on 5.1/5.2/LuaJIT a number up to 2^53 and the decimal string beyond.
-- @tparam string s
-- @return integer, number or string (s itself when it is not a decimal integer)
function M.integer(s)
  if not s:find("^%-?%d+$") then return s end
  local n = tonumber(s)
  if math.type then
    return math.tointeger(n) or s
  end
  if math.abs(n) <= 2^53 then return n end
  return s
end

local shape_table

local function shape_value(v, path, s)
  if type(v) == "table" then
    return shape_table(v, path, s)
  end
  if v == "" and s.children_lists[path] then
    return shape_table({}, path, s)
  end
  if s.integers[path] then return M.integer(v) end
  if s.booleans[path] then return v == "true" end
  return v
end

shape_table = function(t, path, s)
  local out = {}
  for k, occurrences in pairs(t) do
    local p = path == "" and k or path .. "." .. k
    if s.lists[p] then
      local list = {}
      for i, v in ipairs(occurrences) do list[i] = shape_value(v, p, s) end
      out[k] = list
    else
      out[k] = shape_value(occurrences[#occurrences], p, s)
    end
  end
  for _, k in ipairs(s.children_lists[path] or {}) do
    if out[k] == nil then out[k] = {} end
  end
  return out
end

--- Shapes a decoded XML tree.
-- @tparam table|string tree the root element's value from `core.xml_decode`
-- @tparam table row the action's row (`aliyun.iot.actions`)
-- @treturn table the response as JSON would give it
function M.xml(tree, row)
  if type(tree) ~= "table" then return {} end
  return shape_table(tree, "", schema_of(row))
end

return M
