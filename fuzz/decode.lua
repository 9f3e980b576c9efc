-- make fuzz, target "decode": arbitrary bytes (deep nesting, huge numbers, invalid UTF-8,
-- truncated documents) through core.json_decode and core.xml_decode. Neither may raise on
-- a string; a result must have the documented shape (no cjson.null, exact integers or,
-- beyond int64, their text, no infinity, the
-- "every child is a list" XML tree) and a failure must come with a message.
local core = require "aliyun.iot.core"

local function fail(fmt, ...) error("PROPERTY: " .. fmt:format(...), 0) end

local function check_json(v, depth)
  if depth > 1000 then fail("json value nested deeper than cjson's bound") end
  local t = type(v)
  if t == "number" and (v ~= v or v == math.huge or v == -math.huge) then
    fail("json_decode returned the non-finite number %s", tostring(v))
  end
  if t == "string" or t == "boolean" or t == "number" then return end
  if t ~= "table" then fail("json_decode returned a %s (a null?)", t) end
  local n = #v
  for k, x in pairs(v) do
    if type(k) == "number" then
      if math.type(k) ~= "integer" or k < 1 or k > n then
        fail("array key %s outside 1..%d", tostring(k), n)
      end
    elseif type(k) ~= "string" then
      fail("json key of type %s", type(k))
    end
    check_json(x, depth + 1)
  end
end

local function check_xml(v, depth)
  if depth > 1000 then fail("xml tree nested too deeply") end
  if type(v) == "string" then return end
  if type(v) ~= "table" then fail("xml node of type %s", type(v)) end
  for name, list in pairs(v) do
    if type(name) ~= "string" or name == "" then fail("xml child name %s", tostring(name)) end
    if type(list) ~= "table" or #list == 0 then fail("child %q is not a non-empty list", name) end
    for k, x in pairs(list) do
      if math.type(k) ~= "integer" or k < 1 or k > #list then
        fail("child %q list key %s", name, tostring(k))
      end
      check_xml(x, depth + 1)
    end
  end
end

return function(data)
  local ok, v, msg = pcall(core.json_decode, data)
  if not ok then fail("json_decode raised: %s", tostring(v)) end
  if v == nil then
    if type(msg) ~= "string" or msg == "" then fail("json_decode failed without a message") end
  else
    check_json(v, 0)
    -- an integer literal alone comes back exact
    local lit = data:match("^%s*(%-?[1-9]%d*)%s*$") or data:match("^%s*(%-?0)%s*$")
    if lit and type(v) == "string" then
      -- beyond int64: the literal's own text
      if v ~= lit or math.tointeger(tonumber(lit)) then fail("literal %s decoded as %q", lit, v) end
    elseif lit then
      if math.type(v) ~= "integer" then fail("integer literal %s decoded as %s", lit, math.type(v)) end
      if string.format("%d", v) ~= (lit == "-0" and "0" or lit) then
        fail("literal %s decoded as %d", lit, v)
      end
    end
  end

  local ok2, root, tree = pcall(core.xml_decode, data)
  if not ok2 then fail("xml_decode raised: %s", tostring(root)) end
  if root == nil then
    if type(tree) ~= "string" or tree == "" then fail("xml_decode failed without a message") end
  else
    if type(root) ~= "string" or root == "" then fail("xml root name %s", tostring(root)) end
    check_xml(tree, 0)
  end
end
