-- make fuzz, target "sign": arbitrary parameter names and values (any bytes, lists,
-- records, deep nesting, odd numbers) through core.percent_encode, core.flatten and
-- core.sign_rpc, each checked against a plain Lua statement of the rule (docs/wire.md §1-2).
local core = require "aliyun.iot.core"

local function fail(fmt, ...) error("PROPERTY: " .. fmt:format(...), 0) end

local function hex_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- RFC 3986: unreserved kept, every other byte %XY with upper-case hex.
local function check_encoding(s)
  local e = core.percent_encode(s)
  if e:find("[^%w%-_%.~%%]") then fail("percent_encode(%q) left a reserved byte: %q", s, e) end
  if e:find("%%%x?[^%u%d]") or e:find("%%.?$") then fail("bad escape in %q", e) end
  if hex_decode(e) ~= s then fail("percent_encode(%q) does not decode back", s) end
  local plain = e:gsub("%%%x%x", "")
  if plain:find("[^%w%-_%.~]") then fail("stray byte in %q", e) end
  for c in s:gmatch("[%w%-_%.~]") do
    if not e:find(c, 1, true) then fail("unreserved %q was escaped in %q", c, e) end
  end
  return e
end

local function reader(data)
  local pos = 1
  local r = {}
  function r.byte() local b = data:byte(pos); pos = pos + 1; return b or 0 end
  function r.chunk()
    local n = r.byte() % 48
    local s = data:sub(pos, pos + n - 1)
    pos = pos + n
    return s
  end
  function r.unpack(fmt)
    local size = string.packsize(fmt)
    local s = data:sub(pos, pos + size - 1)
    pos = pos + size
    if #s < size then s = s .. ("\0"):rep(size - #s) end
    return (string.unpack(fmt, s))
  end
  function r.done() return pos > #data end
  return r
end

-- The string form the API gets for a scalar, or nil when it cannot be signed.
local function wire(v)
  if type(v) == "string" then return v end
  if type(v) == "boolean" then return tostring(v) end
  if math.type(v) == "integer" then return string.format("%d", v) end
  if v ~= v or v == math.huge or v == -math.huge or v ~= math.floor(v) or math.abs(v) >= 1e300 then
    return nil
  end
  local s = string.format("%.0f", v)
  if #s >= 32 then return nil end
  return s
end

local function scalar(r)
  local kind = r.byte() % 4
  if kind == 0 then
    return r.chunk()
  elseif kind == 1 then
    return r.unpack("<i8")
  elseif kind == 2 then
    return r.unpack("<d")
  end
  return r.byte() % 2 == 0
end

return function(data)
  local r = reader(data)
  local method = ({"GET", "POST", "PUT", "DELETE"})[r.byte() % 4 + 1]
  local secret = r.chunk()
  local strings = {secret}
  local params, expected, bad, ambiguous = {}, {}, false, false
  local function expect(name, value)
    if #name >= 256 then bad = true; return end
    if expected[name] ~= nil then ambiguous = true end
    expected[name] = value
  end
  local n = 0
  while not r.done() and n < 24 do
    n = n + 1
    local name = r.chunk()
    strings[#strings + 1] = name
    if params[name] ~= nil then ambiguous = true end
    local kind = r.byte() % 4
    if kind == 0 then
      local v = scalar(r)
      if type(v) == "string" then strings[#strings + 1] = v end
      params[name] = v
      expect(name, v)
    elseif kind == 1 then                       -- Name.N
      local list = {}
      for i = 1, r.byte() % 6 do
        list[i] = r.chunk(); strings[#strings + 1] = list[i]
        expect(name .. "." .. i, list[i])
      end
      params[name] = list
    elseif kind == 2 then                       -- Name.N.Field
      local list = {}
      for i = 1, r.byte() % 4 do
        local rec = {}
        for _ = 1, r.byte() % 3 do
          local f, v = r.chunk(), r.chunk()
          if f == "" or rec[f] then ambiguous = true end
          rec[f] = v
        end
        list[i] = rec
        for f, v in pairs(rec) do expect(name .. "." .. i .. "." .. f, v) end
      end
      params[name] = list
    else                                        -- nesting: at most 8 levels of tables
      local depth, v = r.byte() % 12 + 1, r.chunk()
      local t = v
      for _ = 1, depth do t = {t} end
      params[name] = t
      if depth > 8 then bad = true else expect(name .. (".1"):rep(depth), v) end
    end
  end
  for _, s in ipairs(strings) do check_encoding(s) end

  local flat, msg, pname = core.flatten(params)
  if flat == nil then
    if not bad and not ambiguous then fail("flatten refused valid params: %s (%s)", msg, pname) end
    if type(msg) ~= "string" or type(pname) ~= "string" then fail("flatten error without message/name") end
    return
  end
  if bad and not ambiguous then fail("flatten accepted a name >= 256 bytes or nesting deeper than 8") end
  if not ambiguous then
    for k, v in pairs(expected) do
      local got = flat[k]
      if not (got == v or (v ~= v and got ~= got)) then
        fail("flat[%q] = %s, want %s", k, tostring(got), tostring(v))
      end
    end
    for k in pairs(flat) do if expected[k] == nil then fail("flatten invented %q", k) end end
  end

  local signable = true
  for _, v in pairs(flat) do if wire(v) == nil then signable = false end end
  local ok, sig, sts, cq = pcall(core.sign_rpc, method, flat, secret)
  if not ok then
    if signable then fail("sign_rpc raised on signable params: %s", sig) end
    return
  end
  if not signable then fail("sign_rpc signed a value that has no integral form") end
  -- canonical query: encoded k=v pairs of every flat parameter, sorted by raw name bytes
  local seen, prev = {}, nil
  for pair in (cq .. "&"):gmatch("([^&]*)&") do
    if cq == "" then break end
    local k, v = pair:match("^([^=]*)=([^=]*)$")
    if not k then fail("malformed pair %q in %q", pair, cq) end
    k, v = hex_decode(k), hex_decode(v)
    if prev ~= nil and not (prev < k) then fail("canonical query not in byte order: %q then %q", prev, k) end
    prev = k
    if flat[k] == nil or wire(flat[k]) ~= v then fail("pair %q=%q does not match flat", k, v) end
    seen[k] = true
  end
  for k in pairs(flat) do if not seen[k] then fail("parameter %q missing from the canonical query", k) end end
  if sts ~= method .. "&%2F&" .. core.percent_encode(cq) then fail("string to sign differs: %q", sts) end
  if sig ~= core.hmac_sha1(secret .. "&", sts) then fail("signature is not HMAC-SHA1(secret&, sts)") end
end
