--- Parameter validation before any request is sent, driven by the action table.
-- Each problem with a value is reported, never raised: the caller gets
-- `nil, err` with `code = "InvalidParameter"` and `err.parameter` naming it.
--
-- Some parameters mean the same in every action and have one rule wherever they appear,
-- whatever kind the action's row gives them:
--
-- * `ProductKey`: no format is published (keys seen are 11 letters and digits), so only
--   what cannot be one is refused: not a string, empty, any whitespace or control
--   character, more than 64 bytes (`product_key_problem`).
-- * `Nickname` (RegisterDevice) and `DeviceNickname` (BatchCheckDeviceNames' records):
--   the documented rule (D-69470, D-69482): 4 to 64 characters counted with each Chinese
--   (CJK unified ideograph) character as 2, of letters, digits, `_` and Chinese
--   characters; BatchCheckDeviceNames also takes Japanese kana (also counted as 2)
--   (`nickname_problem`). RegisterDevice takes an empty Nickname as none.
-- @module aliyun.iot.validate

local M = {}

local math_type = math.type -- nil before Lua 5.3
-- string.find itself: the rules below run once per name and per device of a job (10,000
-- and more), where `s:find` would look the method up through the string metatable.
local find = string.find

local DEVICE_NAME = "^[A-Za-z0-9_.:@%-]+$"

--- Why a DeviceName breaks the documented rule (D-69470: 4-32 characters, letters,
-- digits and `- _ @ . :`), or nil when it is valid.
-- @tparam any name
-- @treturn ?string reason
function M.device_name_problem(name)
  if type(name) ~= "string" then
    return "must be a string"
  end
  if not find(name, DEVICE_NAME) then
    return "may only contain letters, digits and - _ @ . :"
  end
  if #name < 4 or #name > 32 then
    return "must be 4 to 32 characters long"
  end
  return nil
end

-- DeviceSecret and IotId as the API produces them: letters and digits (D-69470's
-- examples, every value observed). Anything else (`=HYPERLINK(...)`, a NUL, a quote)
-- is refused before it reaches a file: in an answer and in a journal alike.
local TOKEN, TOKEN_MAX = "^[A-Za-z0-9]+$", 64

--- Why a value cannot be a DeviceSecret or IotId (1 to 64 letters and digits), or nil.
-- @tparam any v
-- @treturn ?string reason (never holds the value)
function M.token_problem(v)
  if type(v) ~= "string" then return ("is %s, not a string"):format(type(v)) end
  if #v > TOKEN_MAX or not find(v, TOKEN) then
    return ("is not 1 to %d letters and digits"):format(TOKEN_MAX)
  end
end

local function has_control(s)
  return s:find("[%z\r\n]") ~= nil
end

--- Why a value cannot be a ProductKey (see the module), or nil.
-- @tparam any v
-- @treturn ?string reason
function M.product_key_problem(v)
  if type(v) ~= "string" then return "must be a string" end
  if v == "" then return "must not be empty" end
  if v:find("[%s%c\127]") then return "must not contain whitespace or control characters" end
  if #v > 64 then return "must be at most 64 bytes" end
end

-- The width of one nickname character starting at byte i of s (1 for ASCII letters,
-- digits and _, 2 for a Chinese or, with kana, Japanese character), and its length in
-- bytes; nil for any other character.
local function nickname_char(s, i, kana)
  local c = s:byte(i)
  if c < 0x80 then
    if s:sub(i, i):find("^[A-Za-z0-9_]$") then return 1, 1 end
    return nil
  end
  local c2, c3 = s:byte(i + 1, i + 2)
  if c < 0xE0 or c >= 0xF0 or not c3 or c2 < 0x80 or c2 > 0xBF or c3 < 0x80 or c3 > 0xBF then
    return nil
  end
  local cp = (c - 0xE0) * 4096 + (c2 - 0x80) * 64 + (c3 - 0x80)
  if (cp >= 0x4E00 and cp <= 0x9FFF) or (kana and cp >= 0x3040 and cp <= 0x30FF) then
    return 2, 3
  end
  return nil
end

-- Why v breaks the nickname-like rule of 4 to `max` characters (see nickname_char), or nil.
local function counted_problem(v, kana, max)
  if type(v) ~= "string" then return "must be a string" end
  local width, i = 0, 1
  while i <= #v do
    local w, n = nickname_char(v, i, kana)
    if not w then
      return "may only contain letters, digits, _ and Chinese" ..
        (kana and " or Japanese" or "") .. " characters"
    end
    width, i = width + w, i + n
  end
  if width < 4 or width > max then
    return ("must be 4 to %d characters long (a Chinese or Japanese character counts 2)"):format(max)
  end
end

--- Why a nickname breaks the documented rule (see the module), or nil.
-- @tparam any v
-- @tparam[opt] boolean kana true where Japanese kana are allowed (BatchCheckDeviceNames)
-- @treturn ?string reason
function M.nickname_problem(v, kana)
  return counted_problem(v, kana, 64)
end

--- Why a device group's name breaks the documented rule (CreateDeviceGroup's page,
-- docs/wire.md §10: 4 to 30 characters of letters, digits, `_` and Chinese characters,
-- each Chinese character counting 2), or nil.
-- @tparam any v
-- @treturn ?string reason
function M.group_name_problem(v)
  return counted_problem(v, false, 30)
end

--- The code point of the UTF-8 sequence at byte i of s and its length, or nil when the
-- bytes there are no well-formed UTF-8 (RFC 3629: no overlong form, no surrogate).
-- @tparam string s
-- @tparam integer i a byte position of s (its byte is 0x80 or more)
-- @treturn ?integer code point
-- @treturn ?integer length in bytes
function M.utf8_at(s, i)
  local c = s:byte(i)
  local n, min
  if c >= 0xC2 and c <= 0xDF then n, min = 1, 0x80
  elseif c >= 0xE0 and c <= 0xEF then n, min = 2, 0x800
  elseif c >= 0xF0 and c <= 0xF4 then n, min = 3, 0x10000
  else return nil end
  local cp = c - ({0xC0, 0xE0, 0xF0})[n]
  for k = 1, n do
    local b = s:byte(i + k)
    if not b or b < 0x80 or b > 0xBF then return nil end
    cp = cp * 64 + (b - 0x80)
  end
  if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return nil end
  return cp, n + 1
end

-- True when s is well-formed UTF-8 throughout.
local function is_utf8(s)
  local i = s:find("[\128-\255]")
  while i do
    local _, n = M.utf8_at(s, i)
    if not n then return false end
    i = s:find("[\128-\255]", i + n)
  end
  return true
end

-- Device tags (SaveDeviceProp's API page, help.aliyun.com doc 69618, "Props" table): a
-- key is 2 to 32 characters of English letters, digits and dots; a value may not be empty
-- and holds at most 128 characters, a Chinese character counting as two. The same page
-- lists the characters a value may hold (Chinese, letters, digits, - _ .), but its sibling
-- QueryDeviceProp's page answers a value with a colon in its own example, so only the
-- length is held to here: a value the service refuses is its answer to give.
local TAG_KEY, TAG_KEY_MIN, TAG_KEY_MAX, TAG_VALUE_MAX = "^[A-Za-z0-9.]+$", 2, 32, 128

--- Why a tag key breaks SaveDeviceProp's rule (2 to 32 letters, digits and dots), or nil.
-- @tparam any k
-- @treturn ?string reason
function M.tag_key_problem(k)
  if type(k) ~= "string" then return "must be a string" end
  if not k:find(TAG_KEY) then return "may only contain letters, digits and dots" end
  if #k < TAG_KEY_MIN or #k > TAG_KEY_MAX then
    return ("must be %d to %d characters long"):format(TAG_KEY_MIN, TAG_KEY_MAX)
  end
end

--- Why a tag value breaks SaveDeviceProp's rule (not empty, UTF-8, at most 128
-- characters, any character past ASCII counted as two), or nil.
-- @tparam any v
-- @treturn ?string reason
function M.tag_value_problem(v)
  if type(v) ~= "string" then return "must be a string" end
  if v == "" then return "must not be empty" end
  -- the value goes to the service as JSON text, and back to a terminal in plans
  if not is_utf8(v) then return "is not UTF-8 text" end
  -- characters: bytes that do not continue a UTF-8 sequence; past ASCII they count 2
  local ascii = #v:gsub("[\128-\255]", "")
  local wide = #v:gsub("[^\192-\255]", "")
  if ascii + 2 * wide > TAG_VALUE_MAX then
    return ("must be at most %d characters long (a Chinese character counts 2)"):format(TAG_VALUE_MAX)
  end
end

-- list_length's general case: any keys, in any order.
local function list_length_walk(t)
  local n, count = 0, 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k ~= math.floor(k) then return nil end
    count = count + 1
    if k > n then n = k end
  end
  if count == n then return n end
  for i = 1, n do
    if t[i] == nil then return nil, i end
  end
end

--- The length of a list: a table whose keys are exactly 1..n (no hole, nothing else).
-- Counts the keys rather than trust `#`, which may stop at either side of a hole
-- (LuaJIT and PUC Lua differ).
-- @tparam any t
-- @treturn ?integer n (0 for an empty table)
-- @treturn ?integer the first missing index of a list with a hole (nil when a key is
--   not a positive integer, or t is no table)
function M.list_length(t)
  if type(t) ~= "table" then return nil end
  -- One cheap pass for the usual case: a table whose traversal yields the keys 1, 2, ...
  -- in that order holds exactly 1..n (a list in its array part). Any other key or order
  -- takes the general walk (a 10,000-name list is checked several times per job).
  local seen = 0
  for k in pairs(t) do
    seen = seen + 1
    if k ~= seen then return list_length_walk(t) end
  end
  return seen
end

--- True when v is a whole Lua number from lo to hi (a field read from a journal or an
-- answer, where a digit string is not taken).
-- @param v
-- @tparam number lo
-- @tparam number hi
-- @treturn boolean
function M.whole(v, lo, hi)
  return type(v) == "number" and v == math.floor(v) and v >= lo and v <= hi
end

--- A decimal integer string as the JSON decoder would give it: a Lua integer on 5.3/5.4;
-- on 5.1/5.2/LuaJIT a number up to 2^53 and the string itself beyond (int64 ApplyIds).
-- @tparam string s
-- @return integer, number or string (s itself when it is not a decimal integer)
function M.integer_value(s)
  if not s:find("^%-?%d+$") then return s end
  local n = tonumber(s)
  if math.type then return math.tointeger(n) or s end
  if math.abs(n) <= 2^53 then return n end
  return s
end

--- Reads an integer parameter given as a Lua integer, an integral float or a string of
-- digits. Returns the value as the API's decimal string, or nil and a reason.
-- Digit strings may exceed 2^53 (int64 ApplyIds on Lua 5.1/LuaJIT arrive as strings).
-- @param v value
-- @treturn ?string decimal
-- @treturn ?string reason
function M.integer_string(v)
  if type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge or v ~= math.floor(v) then
      return nil, "must be an integer"
    end
    if math.type and math.type(v) == "integer" then
      return tostring(v)
    end
    if math.abs(v) >= 2^63 then
      return nil, "is out of range"
    end
    return ("%.0f"):format(v)
  elseif type(v) == "string" then
    if not v:find("^%-?%d+$") or #v > 20 then
      return nil, "must be an integer"
    end
    return (v:gsub("^(%-?)0+(%d)", "%1%2"))
  end
  return nil, "must be an integer"
end

-- Compares two decimal strings as integers (no sign handling beyond a leading "-").
local function cmp_decimal(a, b)
  local na, nb = a:sub(1, 1) == "-", b:sub(1, 1) == "-"
  if na ~= nb then return na and -1 or 1 end
  local sa, sb = na and a:sub(2) or a, nb and b:sub(2) or b
  local c
  if #sa ~= #sb then c = #sa < #sb and -1 or 1
  elseif sa == sb then c = 0
  else c = sa < sb and -1 or 1 end
  return na and -c or c
end

local function limit(v, ctx)
  if v == "max_batch_size" then return ctx.max_batch_size end
  return v
end

local checks = {}
local BY_NAME -- rules by parameter name (below), also applied to record fields

function checks.key(v)
  if type(v) ~= "string" then return "must be a string" end
  if v == "" then return "must not be empty" end
  if has_control(v) then return "must not contain NUL, CR or LF" end
end

function checks.text(v)
  if type(v) ~= "string" then return "must be a string" end
  if has_control(v) then return "must not contain NUL, CR or LF" end
end

function checks.device_name(v)
  return M.device_name_problem(v)
end

function checks.integer(v, rule, ctx)
  local min, max = limit(rule.min, ctx), limit(rule.max, ctx)
  if math_type and math_type(v) == "integer" then
    -- the usual case: compared as numbers, no decimal strings made
    if min and v < min then return ("must be at least %d"):format(min) end
    if max and v > max then return ("must be at most %d"):format(max) end
    return nil
  end
  local s, why = M.integer_string(v)
  if not s then return why end
  if min and cmp_decimal(s, tostring(min)) < 0 then
    return ("must be at least %d"):format(min)
  end
  if max and cmp_decimal(s, tostring(max)) > 0 then
    return ("must be at most %d"):format(max)
  end
end

--- Why a value is not an ApplyId (a positive int64, as a Lua number or a digit string),
-- or nil.
-- @tparam any v
-- @treturn ?string reason
function M.apply_id_problem(v)
  -- a Lua integer (the usual ApplyId) needs no decimal comparison
  if math_type and math_type(v) == "integer" then
    return v < 1 and "must be a positive 64-bit integer" or nil
  end
  local s, why = M.integer_string(v)
  if not s then return why end
  if cmp_decimal(s, "1") < 0 or cmp_decimal(s, "9223372036854775807") > 0 then
    return "must be a positive 64-bit integer"
  end
end
checks.apply_id = M.apply_id_problem

-- Lists the batch helpers made of entries they checked themselves (`M.vouch`), by list,
-- with the length each had then. Weak keys: a list is forgotten with it.
local vouched = setmetatable({}, {__mode = "k"})

--- Marks a list of names (or of `{DeviceName=, DeviceNickname=}` records) as checked by
-- the code that built it: every entry passed the rules the request's validation applies
-- (`device_name_problem`, `nickname_problem`), and no DeviceName is in it twice. A
-- request's validation then checks the list's shape and size, not each entry again (a
-- 10,000-name job would otherwise check every name twice). Only for a new list built by
-- the library from entries it checked, and never changed after; never for a caller's
-- table, which the caller could change before the request is sent.
-- @tparam table list
-- @treturn table list
function M.vouch(list)
  vouched[list] = #list
  return list
end

local function check_list(v, rule, ctx, each)
  if type(v) ~= "table" then return "must be a list", nil end
  local n, hole = M.list_length(v)
  if hole then return "is missing: a list must have no hole", hole end
  if not n then return "must be a list (keys 1..n)" end
  if n == 0 then return "must not be empty" end
  local max = limit(rule.max, ctx)
  if max and n > max then return ("has %d entries, at most %d allowed"):format(n, max) end
  if vouched[v] == n then return nil end
  local seen = {}
  for i = 1, n do
    local why, name = each(v[i])
    if why then return why, i end
    if name then
      if seen[name] then return ("duplicate DeviceName %q"):format(name), i end
      seen[name] = true
    end
  end
end

function checks.names(v, rule, ctx)
  return check_list(v, rule, ctx, function(name)
    return checks.device_name(name), name
  end)
end

function checks.keys(v, rule, ctx)
  return check_list(v, rule, ctx, function(key) return checks.key(key) end)
end

function checks.name_records(v, rule, ctx)
  return check_list(v, rule, ctx, function(rec)
    if type(rec) ~= "table" then return "must be a list of {DeviceName=, DeviceNickname=}" end
    for k in pairs(rec) do
      if k ~= "DeviceName" and k ~= "DeviceNickname" then
        return ("unknown field %s"):format(tostring(k))
      end
    end
    local why = checks.device_name(rec.DeviceName)
    if why then return "DeviceName " .. why end
    if rec.DeviceNickname ~= nil then
      why = M.nickname_problem(rec.DeviceNickname, true)
      if why then return "DeviceNickname " .. why end
    end
    return nil, rec.DeviceName
  end)
end

function checks.records(v, rule, ctx)
  return check_list(v, rule, ctx, function(rec)
    if type(rec) ~= "table" then return "must be a list of tables" end
    for k in pairs(rec) do
      if not rule.fields[k] then return ("unknown field %s"):format(tostring(k)) end
    end
    for k, field in pairs(rule.fields) do
      local fv = rec[k]
      if fv == nil then
        if field.required then return k .. " is required" end
      else
        local why = checks[field.kind](fv, field, ctx)
        if not why and BY_NAME[k] then why = BY_NAME[k](fv) end
        if why then return k .. " " .. why end
      end
    end
  end)
end

-- Parameters every action takes besides its own (docs/wire.md §4, common to all).
local COMMON = {IotInstanceId = {kind = "key"}}

-- Parameters with one rule in every action (see the module), checked after their kind.
BY_NAME = {
  ProductKey = M.product_key_problem,
  Nickname = function(v) if v ~= "" then return M.nickname_problem(v, false) end end,
}

-- row -> its validation plan, made once: `{name, rule, check, by_name}` per parameter
-- (the traversal of `row.params`, the rule's kind looked up, the name's own rule found),
-- so that a call walks an array instead of doing those lookups again.
local plans = setmetatable({}, {__mode = "k"})

local function plan_of(row)
  local plan = plans[row]
  if plan then return plan end
  plan = {}
  for name, rule in pairs(row.params) do
    plan[#plan + 1] = {name = name, rule = rule, check = checks[rule.kind],
                       by_name = BY_NAME[name], required = rule.required}
  end
  plans[row] = plan
  return plan
end

local function unknown_parameter(row, name)
  local known = {}
  for k in pairs(row.params) do known[#known + 1] = k end
  table.sort(known)
  return tostring(name), ("unknown parameter %s for %s (it takes %s)")
    :format(tostring(name), row.name, table.concat(known, ", "))
end

--- Checks params against an action row.
-- @tparam table row the action's row (`aliyun.iot.actions`; its parameter rules are read
--   once, on its first check)
-- @tparam table params the call's parameters (API names)
-- @tparam table ctx `{max_batch_size = n}`
-- @treturn ?string parameter name at fault (nil when all is well)
-- @treturn ?string message
function M.check(row, params, ctx)
  local known = row.params
  if not row.open then
    -- A misspelt name (DeviceNmae) would go out ignored and the call do something else.
    for name in pairs(params) do
      if known[name] == nil and COMMON[name] == nil then return unknown_parameter(row, name) end
    end
    local v = params.IotInstanceId
    if v ~= nil and checks.key(v) then return "IotInstanceId", "IotInstanceId " .. checks.key(v) end
  end
  local plan = plan_of(row)
  for i = 1, #plan do
    local p = plan[i]
    local name = p.name
    local v = params[name]
    if v == nil then
      if p.required then return name, name .. " is required" end
    else
      local why, index = p.check(v, p.rule, ctx)
      if not why and p.by_name then why = p.by_name(v) end
      if why then
        local at = index and ("%s.%d"):format(name, index) or name
        return at, ("%s %s"):format(at, why)
      end
    end
  end
  if row.one_of then
    local ok = false
    for _, group in ipairs(row.one_of) do
      local all = true
      for _, name in ipairs(group) do
        if params[name] == nil then all = false end
      end
      ok = ok or all
    end
    if not ok then
      local alts = {}
      for i, group in ipairs(row.one_of) do alts[i] = table.concat(group, " + ") end
      return row.one_of[1][1], "one of these is required: " .. table.concat(alts, ", or ")
    end
  end
  return nil
end

return M
