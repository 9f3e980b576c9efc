--- Gives a decoded response the shape and types the client reads.
-- XML text carries no types: a DeviceName `12345678` is a string, and a one-element
-- `<ValidList><Name>a</Name></ValidList>` is still a list. `core.xml_decode` returns every
-- child as an array of occurrences; the action's row says which paths are lists,
-- integers and booleans, and `shape.xml` collapses and converts accordingly, so that
-- JSON and XML results of the same call are deep-equal. JSON has types, but a server may
-- write an integer as `4415.0`: `shape.json` applies the same integer paths.
--
-- Neither touches the common fields (`Code`, `Message`, `RequestId`, ...) beyond that: a
-- table or number where text belongs is kept as the server sent it, so that the
-- classifier refuses the answer as InvalidResponse (dropping a table-valued Code would
-- make an error look like a success). The client type-checks every field it uses.
-- @module aliyun.iot.shape

local validate = require "aliyun.iot.validate"

local M = {}

-- Every response has these, whatever the action (docs/wire.md §4, common response fields).
local COMMON_BOOLEANS = {"Success"}

-- A gateway's `<Error>` answer belongs to no action: none of the row's paths apply.
local ERROR_ROW = {}

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
    integer_walks = {},
  }
  -- A container path holds declared lists; an empty container element still yields
  -- those lists, empty, as the JSON rendering `{"Name": []}` does.
  for p in pairs(s.lists) do
    local parent, last = p:match("^(.*)%.([^.]+)$")
    if not parent then parent, last = "", p end
    s.children_lists[parent] = s.children_lists[parent] or {}
    table.insert(s.children_lists[parent], last)
  end
  -- Each integer path as its steps, each step marked when the path so far is a list.
  for p in pairs(s.integers) do
    local steps, prefix = {}, nil
    for name in p:gmatch("[^.]+") do
      prefix = prefix and prefix .. "." .. name or name
      steps[#steps + 1] = {name = name, list = s.lists[prefix] or false}
    end
    s.integer_walks[#s.integer_walks + 1] = steps
  end
  cache[row] = s
  return s
end

--- Converts a decimal string to the integer the JSON decoder would give: a Lua integer on
-- 5.3/5.4; on 5.1/5.2/LuaJIT a number up to 2^53 and the decimal string beyond.
-- @tparam string s
-- @return integer, number or string (s itself when it is not a decimal integer)
M.integer = validate.integer_value

local shape_table

local function shape_value(v, path, s)
  if type(v) == "table" then
    return shape_table(v, path, s)
  end
  if v == "" and s.children_lists[path] then
    return shape_table({}, path, s)
  end
  if s.integers[path] then return M.integer(v) end
  if s.booleans[path] then
    -- Only the texts "true" and "false" are booleans; any other text stays text, for the
    -- client to refuse (a "yes" must not read as a refusal, nor as success).
    if v == "true" then return true elseif v == "false" then return false end
  end
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
-- @tparam[opt] string root the root element's name from `core.xml_decode`; for `"Error"`
-- (a gateway's error: Throttling.User, SignatureDoesNotMatch, ...) the row does not
-- apply and the answer is shaped as plain fields
-- @treturn table the response as JSON would give it; `{}` when the root holds only text
function M.xml(tree, row, root)
  if type(tree) ~= "table" then return {} end
  if root == "Error" then row = ERROR_ROW end
  return shape_table(tree, "", schema_of(row))
end

-- An integral float where the API has an integer becomes that integer (Lua 5.3/5.4; on
-- the others, numbers have no subtype and 4415.0 already is 4415).
local function to_integer(v)
  if math.type and math.type(v) == "float" then return math.tointeger(v) or v end
  return v
end

local function apply_integers(node, steps, i)
  if type(node) ~= "table" then return end
  local step = steps[i]
  local v = node[step.name]
  if i == #steps then
    if step.list and type(v) == "table" then
      for j, x in ipairs(v) do v[j] = to_integer(x) end
    elseif type(v) == "number" then
      node[step.name] = to_integer(v)
    end
  elseif step.list and type(v) == "table" then
    for _, x in ipairs(v) do apply_integers(x, steps, i + 1) end
  else
    apply_integers(v, steps, i + 1)
  end
end

--- Types a decoded JSON answer by its action's row, in place: at the row's integer paths
-- (the ones XML typing uses), an integral float such as `4415.0` becomes the integer
-- 4415; any other value there is left as it is (a string, a fraction, a table) for the
-- client's type checks. The common fields become strings or absent.
-- @tparam table|any tree the value from `core.json_decode`
-- @tparam table row the action's row (`aliyun.iot.actions`)
-- @return the same tree (a non-table is returned unchanged)
function M.json(tree, row)
  if type(tree) ~= "table" then return tree end
  for _, steps in ipairs(schema_of(row).integer_walks) do apply_integers(tree, steps, 1) end
  return tree
end

return M
