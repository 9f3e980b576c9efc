--- JSON for the CLI: indented, sorted keys, exact integers, `[]` for the empty lists an
-- action names.
-- @module aliyun.iot.cli.json

local M = {}

local cjson_encode -- loaded on first use (cjson.encode of a string: JSON escaping)

local utf8_at = require("aliyun.iot.validate").utf8_at

-- What cjson leaves raw in an encoded string but must not reach a terminal or a JSON
-- reader as it is: a character errors.printable would escape (the C1 controls, the
-- bidirectional controls) becomes a \u escape, with the same meaning to JSON; a byte that
-- is no UTF-8 becomes \ufffd (JSON text is UTF-8, RFC 8259 §8.1). Server text (an
-- ErrorMsg) reaches `check`'s stdout and --report through here.
local function terminal_safe(enc)
  if not enc:find("[\128-\255]") then return enc end
  local printable = require("aliyun.iot.errors").printable
  local out, i = {}, 1
  while true do
    local j = enc:find("[\128-\255]", i)
    if not j then out[#out + 1] = enc:sub(i) break end
    out[#out + 1] = enc:sub(i, j - 1)
    local cp, len = utf8_at(enc, j)
    if not cp then
      out[#out + 1], i = "\\ufffd", j + 1
    else
      local ch = enc:sub(j, j + len - 1)
      out[#out + 1], i = printable(ch) == ch and ch or ("\\u%04x"):format(cp), j + len
    end
  end
  return table.concat(out)
end

function M.string(s)
  cjson_encode = cjson_encode or require("cjson").encode
  return terminal_safe(cjson_encode(s))
end

local function is_integer(v)
  if math.type then return math.type(v) == "integer" end
  return v == math.floor(v) and math.abs(v) < 2^53
end

-- Encodes a decoded response (strings, integers, numbers, booleans, tables) as indented
-- JSON with sorted keys; integers print as integers, however large. The decoder marks no
-- table as a list, so an empty table prints `[]` when its dotted `path` is in `lists`
-- (items of a list share the list's path, as in the action table), else `{}`.
local function json_value(v, indent, out, path, lists)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = M.string(v)
  elseif t == "number" then
    if is_integer(v) then
      out[#out + 1] = ("%d"):format(v)
    elseif v ~= v or v == math.huge or v == -math.huge then
      out[#out + 1] = "null"
    else
      local s = ("%.14g"):format(v)
      if tonumber(s) ~= v then s = ("%.17g"):format(v) end
      out[#out + 1] = s
    end
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif t == "table" then
    local n, keys = #v, {}
    for k in pairs(v) do keys[#keys + 1] = k end
    local inner = indent .. "  "
    if n > 0 and #keys == n then
      out[#out + 1] = "[\n"
      for i = 1, n do
        out[#out + 1] = inner
        json_value(v[i], inner, out, path, lists)
        out[#out + 1] = i < n and ",\n" or "\n"
      end
      out[#out + 1] = indent .. "]"
    elseif #keys == 0 then
      out[#out + 1] = lists[path] and "[]" or "{}"
    else
      for i, k in ipairs(keys) do keys[i] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{\n"
      for i, k in ipairs(keys) do
        out[#out + 1] = inner .. M.string(k) .. ": "
        json_value(v[k] == nil and v[tonumber(k)] or v[k], inner, out,
          path and path .. "." .. k or k, lists)
        out[#out + 1] = i < #keys and ",\n" or "\n"
      end
      out[#out + 1] = indent .. "}"
    end
  else
    out[#out + 1] = "null"
  end
end

--- Encodes a value as indented JSON (sorted keys, exact integers).
-- @param v a decoded response or part of one
-- @tparam[opt] {string,...} lists dotted paths of the fields that are lists (an action's
--   `lists` in `aliyun.iot.actions`): an empty table there prints `[]`, elsewhere `{}`
-- @treturn string
function M.json(v, lists)
  local out, set = {}, {}
  for _, p in ipairs(lists or {}) do set[p] = true end
  json_value(v, "", out, nil, set)
  return table.concat(out)
end

return M
