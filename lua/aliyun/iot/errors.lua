--- Error values and secret redaction.
-- Every failure the library returns is a table made by `errors.new`: fields `code`,
-- `message`, `request_id`, `http_status`, `host_id`, `recommend`, `retryable`,
-- `ambiguous` where known, and a readable `__tostring` such as
-- `Throttling.User: Request was denied due to user flow control. (HTTP 400, RequestId X)`.
-- Text that came from a server or a body passes through a redactor first, so no
-- AccessKeySecret, SecurityToken or DeviceSecret reaches an error, a log or stderr.
-- @module aliyun.iot.errors

local percent_encode = require("aliyun.iot.core").percent_encode

local M = {}

local Error = {__name = "aliyun.iot.Error"}
Error.__index = Error

local ESCAPES = {["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t"}

-- The bidirectional controls a terminal obeys (marks, embeddings, overrides, isolates).
local BIDI = {[0x200E] = true, [0x200F] = true, [0x202A] = true, [0x202B] = true,
              [0x202C] = true, [0x202D] = true, [0x202E] = true, [0x2066] = true,
              [0x2067] = true, [0x2068] = true, [0x2069] = true}

--- Escapes what a terminal would act on: C0 control characters and DEL as `\n`, `\r`,
-- `\t` or `\xHH`, and the UTF-8 forms of the C1 controls (U+0080..U+009F, which some
-- terminals read as escape sequences) as `\u{HH}`, and the Unicode bidirectional
-- controls (U+200E, U+200F, U+202A..U+202E, U+2066..U+2069, which reorder what a terminal
-- shows) as `\u{HHHH}`. Text from servers passes through it before it is printed, so a
-- Code or Message cannot rewrite the screen nor disguise what it says.
-- @tparam string s
-- @treturn string the same text with every control character escaped
function M.printable(s)
  s = tostring(s)
  s = s:gsub("[%z\1-\31\127]", function(c)
    return ESCAPES[c] or ("\\x%02X"):format(c:byte())
  end)
  s = s:gsub("\194([\128-\159])", function(c) return ("\\u{%02X}"):format(c:byte()) end)
  return (s:gsub("\226([\128\129])([\128-\191])", function(b2, b3)
    local cp = 0x2000 + (b2:byte() - 0x80) * 0x40 + (b3:byte() - 0x80)
    if BIDI[cp] then return ("\\u{%04X}"):format(cp) end
  end))
end

--- The most bytes of a value `quoted` keeps: a message names a value, it does not echo it.
M.QUOTED_MAX = 64

--- A value as a message quotes it: in double quotes, `\` and `"` escaped (so that the
-- `\xHH` escapes of `printable` cannot be confused with the value's own text), made
-- printable, and cut after its first `max` bytes (on a UTF-8 character boundary) with
-- `... (N bytes)` after it: a manifest's 5 MB nickname is not echoed whole to stderr.
-- @param v any value (tostring'ed)
-- @tparam[opt=QUOTED_MAX] ?integer|boolean max bytes kept; false keeps it whole
-- @treturn string
function M.quoted(v, max)
  local s = tostring(v)
  max = max == nil and M.QUOTED_MAX or max
  local tail = ""
  if max and #s > max then
    local cut = max
    while cut > 0 and s:byte(cut + 1) >= 0x80 and s:byte(cut + 1) < 0xC0 do cut = cut - 1 end
    s, tail = s:sub(1, cut), ("... (%d bytes)"):format(#s)
  end
  return '"' .. M.printable((s:gsub('[\\"]', "\\%0"))) .. '"' .. tail
end

-- How much of a body past the cut `errors.snippet` redacts with it: more than any secret
-- in any of its forms, so that one starting before the cut is recognised whole, while a
-- 16 MiB body is not redacted in full for 512 bytes of it.
local SNIPPET_LOOKAHEAD = 65536

--- A short, printable excerpt of a body for an error message: redacted first (cutting
-- first could leave half a secret that the redactor no longer recognises; the redactor
-- sees the excerpt with 64 KiB after it, and blanks a secret field that runs past what it
-- sees to its end), then cut to at most `max` bytes on a UTF-8 character boundary, then
-- made printable.
-- @tparam string text
-- @tparam function redact the client's redactor (text -> text)
-- @tparam[opt=512] integer max bytes kept before escaping
-- @treturn string
function M.snippet(text, redact, max)
  max = max or 512
  text = tostring(text)
  text = redact(text:sub(1, max + SNIPPET_LOOKAHEAD))
  if #text > max then
    local cut = max
    -- step back over UTF-8 continuation bytes so no character is split
    while cut > 0 and text:byte(cut + 1) and text:byte(cut + 1) >= 0x80
        and text:byte(cut + 1) < 0xC0 do
      cut = cut - 1
    end
    text = text:sub(1, cut) .. "..."
  end
  return M.printable(text)
end

function Error.__tostring(e)
  local s = M.printable(e.code) .. ": " .. M.printable(e.message)
  local extra = {}
  if e.http_status then extra[#extra + 1] = "HTTP " .. M.printable(e.http_status) end
  if e.request_id then extra[#extra + 1] = "RequestId " .. M.printable(e.request_id) end
  if #extra > 0 then s = s .. " (" .. table.concat(extra, ", ") .. ")" end
  return s
end

--- Makes an error value.
-- @tparam table fields at least `code` and `message`
-- @treturn table the same table, with the error metatable
function M.new(fields)
  fields.retryable = fields.retryable or false
  return setmetatable(fields, Error)
end

--- True when v is an error made by `errors.new`.
function M.is(v)
  return getmetatable(v) == Error
end

--- The signal a raised error stands for: Lua's stand-alone interpreters turn SIGINT into
-- an error (lua.c and luajit.c: a hook raises "interrupted!" when the Lua code runs next),
-- and `core.catch_term` does the same for SIGTERM ("terminated!"). Code that catches
-- errors from other code (a user's credentials function, a provider) raises these again,
-- so that a signal always stops the job.
-- @param e what pcall caught
-- @treturn ?string "SIGINT", "SIGTERM", or nil for any other error
function M.signal(e)
  if type(e) ~= "string" then return nil end
  if e:find("interrupted!$") then return "SIGINT" end
  if e:find("terminated!$") then return "SIGTERM" end
end

local function replace_plain(text, needle, repl)
  if needle == "" then return text end
  local out, pos = {}, 1
  while true do
    local i, j = text:find(needle, pos, true)
    if not i then break end
    out[#out + 1] = text:sub(pos, i - 1)
    out[#out + 1] = repl
    pos = j + 1
  end
  if pos == 1 then return text end
  out[#out + 1] = text:sub(pos)
  return table.concat(out)
end


-- The field names whose values are secrets, lower-cased: the redactor and redact_tree
-- blank them in any spelling a decoder would read as one of them (JSON \u escapes) and in
-- any letter case.
local SECRET_FIELDS = {devicesecret = true, securitytoken = true, accesskeysecret = true}
local SECRET_NAMES = {"DeviceSecret", "SecurityToken", "AccessKeySecret"}

-- How far one redaction looks into strings inside strings (escaped JSON inside a JSON
-- value, as an echoed body is): each level is decoded and redacted whole.
local MAX_NESTING = 4

-- Any letter case of a name, as a Lua pattern.
local function anycase(name)
  return (name:gsub("%a", function(c) return "[" .. c:upper() .. c:lower() .. "]" end))
end

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40) end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40,
                       0x80 + cp % 0x40)
  end
  return string.char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
                     0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local JSON_ESCAPES = {['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n",
                      r = "\r", t = "\t"}

-- The text a JSON decoder reads from a string literal's body; an escape it would refuse
-- is kept as written.
local function json_unescape(s)
  if not s:find("\\", 1, true) then return s end
  local out, pos = {}, 1
  while true do
    local k = s:find("\\", pos, true)
    if not k then
      out[#out + 1] = s:sub(pos)
      break
    end
    out[#out + 1] = s:sub(pos, k - 1)
    local c = s:sub(k + 1, k + 1)
    if c == "u" and s:find("^%x%x%x%x", k + 2) then
      local cp = tonumber(s:sub(k + 2, k + 5), 16)
      pos = k + 6
      if cp >= 0xD800 and cp < 0xDC00 and s:find("^\\u[dD][c-fC-F]%x%x", pos) then
        cp = 0x10000 + (cp - 0xD800) * 0x400 + tonumber(s:sub(pos + 2, pos + 5), 16) - 0xDC00
        pos = pos + 6
      end
      out[#out + 1] = utf8_char(cp)
    else
      out[#out + 1] = JSON_ESCAPES[c] or ("\\" .. c)
      pos = k + 2
    end
  end
  return table.concat(out)
end

local function json_escape(s)
  return (s:gsub('[%c"\\]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    return ("\\u%04x"):format(c:byte())
  end))
end

-- The index of the quote that closes the JSON string opened at i, or nil when the text
-- ends first (a cut snippet).
local function string_end(text, i)
  local j = i + 1
  while true do
    local k = text:find('["\\]', j)
    if not k then return nil end
    if text:byte(k) == 34 then return k end
    j = k + 2
  end
end

-- The index just past the JSON value that starts at p (a string, an object or array
-- with all it holds, or a bare token); the text's end when it is cut short.
local function value_end(text, p)
  local c = text:sub(p, p)
  if c == '"' then return (string_end(text, p) or #text) + 1 end
  if c ~= "{" and c ~= "[" then return text:find("[,}%]%s]", p) or #text + 1 end
  local depth, i = 0, p
  while true do
    local k = text:find('[%[%]{}"]', i)
    if not k then return #text + 1 end
    local b = text:sub(k, k)
    if b == '"' then
      k = string_end(text, k) or #text
    elseif b == "{" or b == "[" then
      depth = depth + 1
    else
      depth = depth - 1
      if depth == 0 then return k + 1 end
    end
    i = k + 1
  end
end

-- The pieces kept and redacted so far (`out`) and the rest of `text` from `pos` on; `text`
-- itself when nothing was cut (`pos` 1).
local function joined(out, text, pos)
  if pos == 1 then return text end
  out[#out + 1] = text:sub(pos)
  return table.concat(out)
end

-- Redacts `text` once per secret field name: `cut(text, name, out)` appends to `out` what
-- it keeps and redacts, and returns where the rest starts.
local function per_secret(text, cut)
  for _, name in ipairs(SECRET_NAMES) do
    local out = {}
    text = joined(out, text, cut(text, name, out))
  end
  return text
end

-- JSON: every member whose decoded name is a secret field gets "***" for its value,
-- however the name is escaped and whatever the value holds (escaped quotes included);
-- every other string literal with escapes is decoded, redacted whole (it may hold an
-- escaped document) and written back when that changed it.
local function redact_json(text, run, level)
  if not text:find('"', 1, true) then return text end
  local out, pos, i = {}, 1, 1
  while true do
    local q = text:find('"', i, true)
    if not q then break end
    local e = string_end(text, q)
    local body = text:sub(q + 1, (e or #text + 1) - 1)
    local decoded = json_unescape(body)
    local after = e and text:match("^%s*:%s*()", e + 1)
    i = (e or #text) + 1
    if after and SECRET_FIELDS[decoded:lower()] then
      out[#out + 1] = text:sub(pos, after - 1) .. '"***"'
      pos = value_end(text, after)
      i = pos
    elseif level < MAX_NESTING and decoded ~= body then
      local redacted = run(decoded, level + 1)
      if redacted ~= decoded then
        out[#out + 1] = text:sub(pos, q) .. json_escape(redacted) .. (e and '"' or "")
        pos = i
      end
    end
  end
  return joined(out, text, pos)
end

-- JSON again, without relying on where strings start (text before may have an unpaired
-- quote): every `"Name":` of a secret field, also as the escaped `\"Name\":` of a document
-- inside a string, gets its value blanked up to the quote that closes it at that level.
local function redact_json_loose(input)
  if not input:find('"', 1, true) then return input end
  return per_secret(input, function(text, name, out)
    local pattern = anycase(name) .. '(\\*)"%s*:%s*()'
    local pos, i = 1, 1
    while true do
      local k, _, slashes, p = text:find(pattern, i)
      if not k then break end
      local m = #slashes
      local stop
      if m > 0 and text:sub(p, p + m) == slashes .. '"' then
        local close = slashes .. '"'
        local j = p + m + 1
        repeat
          stop = text:find(close, j, true)
          j = stop and stop + 1
        until not stop or text:sub(stop - 1, stop - 1) ~= "\\"
        stop = stop and stop or #text + 1
      else
        stop = value_end(text, p)
        m = 0
      end
      out[#out + 1] = text:sub(pos, p - 1) .. slashes .. '"***' .. slashes .. '"'
      if stop <= #text and m > 0 then stop = stop + m + 1 end
      pos, i = stop, stop
    end
    return pos
  end)
end

-- Where the closing tag of element `low` (lower-cased) starts, from `i` on in the
-- lower-cased text: a "</name" inside CDATA or a comment is text, not a tag. Nil when
-- the text ends first.
local function closing_tag(lower, i, low)
  while true do
    local k = lower:find("<", i, true)
    if not k then return nil end
    local skip_to
    if lower:sub(k, k + 8) == "<![cdata[" then
      skip_to = "]]>"
    elseif lower:sub(k, k + 3) == "<!--" then
      skip_to = "-->"
    elseif lower:find("^</[%w_.-]*:?" .. low .. "%f[^%w_.-]", k) then
      return k
    end
    if skip_to then
      local _, e = lower:find(skip_to, k + 4, true)
      if not e then return nil end
      k = e
    end
    i = k + 1
  end
end

-- XML: the content of every element named as a secret field (any case, any namespace
-- prefix, any attributes), CDATA, comments and child elements included, up to its
-- closing tag or the end of the text.
local function redact_xml(input)
  if not input:find("<", 1, true) then return input end
  return per_secret(input, function(text, name, out)
    local lower, low = text:lower(), name:lower()
    local pos, i = 1, 1
    while true do
      local k = lower:find(low, i, true)
      if not k then break end
      local stop = k + #low
      i = stop
      local before = lower:sub(math.max(1, k - 64), k - 1)
      if (before:find("<$") or before:find("<[%w_.-]+:$"))
          and lower:find("^[%s/>]", stop) then
        local gt = lower:find(">", stop, true) or #text
        if lower:sub(gt - 1, gt) ~= "/>" then
          local close = closing_tag(lower, gt + 1, low) or #text + 1
          out[#out + 1] = text:sub(pos, gt) .. "***"
          pos, i = close, close
        end
      end
    end
    return pos
  end)
end

local XML_ENTITIES = {amp = "&", lt = "<", gt = ">", quot = '"', apos = "'"}

local function xml_unescape(s)
  return (s:gsub("&(#?)([xX]?)(%w+);", function(hash, x, v)
    if hash == "" then return XML_ENTITIES[v] end
    local cp = tonumber(v, x == "" and 10 or 16)
    if cp and cp < 0x110000 then return utf8_char(cp) end
  end))
end

-- XML text with entities or character references: decoded, redacted, written back
-- escaped when that changed it, so a secret spelled with &amp; or &#83; is found.
local function redact_xml_text(text, run, level)
  if level >= MAX_NESTING or not text:find("&", 1, true) then return text end
  return (text:gsub(">([^<]*&[^<]*)<", function(s)
    local decoded = xml_unescape(s)
    local redacted = run(decoded, level + 1)
    if redacted == decoded then return nil end
    return ">" .. redacted:gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;") .. "<"
  end))
end

local FORM_PATTERNS = {}
for _, name in ipairs(SECRET_NAMES) do
  local n = anycase(name)
  -- name=value in a query or form, also percent-encoded once or twice (%3D, %253D)
  FORM_PATTERNS[#FORM_PATTERNS + 1] = "(" .. n .. "%%25[3][dD])[^&%%]*"
  FORM_PATTERNS[#FORM_PATTERNS + 1] = "(" .. n .. "%%[3][dD])[^&%%]*"
  FORM_PATTERNS[#FORM_PATTERNS + 1] = "(" .. n .. "=)[^&\"'<%s]*"
end

--- Makes a redactor for a set of secret strings.
-- The redactor replaces each secret in its raw, percent-encoded (once and twice, as a
-- SignatureDoesNotMatch echo holds it) and form-encoded forms with `***`, also where a
-- JSON string spells it with escapes (`\/`, `\u0053`) or XML with entities; and it blanks
-- the value of every field named DeviceSecret, SecurityToken or AccessKeySecret (any
-- letter case) in whatever text it is given: a JSON member however its name is escaped
-- (`"Device\u0053ecret"`) and whatever its value holds (escaped quotes, nested
-- documents), an XML element with its CDATA and children, a `name=value` form field.
-- Escaped documents inside JSON strings are redacted too, four levels deep.
-- @tparam {string,...} secrets values to hide (nil and short values are skipped)
-- @treturn function redact(text) -> text (non-strings are returned unchanged)
function M.redactor(secrets)
  local needles = {}
  for _, s in pairs(secrets) do
    if type(s) == "string" and #s >= 4 then
      local once = percent_encode(s)
      for _, form in ipairs{s, once, percent_encode(once), (s:gsub(" ", "+"))} do
        needles[#needles + 1] = form
      end
    end
  end
  -- Longer first, so a secret that contains another is hidden whole.
  table.sort(needles, function(a, b) return #a > #b end)
  local function run(text, level)
    for _, n in ipairs(needles) do text = replace_plain(text, n, "***") end
    text = redact_json(text, run, level)
    text = redact_json_loose(text)
    text = redact_xml_text(text, run, level)
    text = redact_xml(text)
    for _, p in ipairs(FORM_PATTERNS) do text = text:gsub(p, "%1***") end
    return text
  end
  return function(text)
    if type(text) ~= "string" then return text end
    return run(text, 0)
  end
end

local function redact_copy(v, redact, seen)
  if type(v) == "string" then return redact(v) end
  if type(v) ~= "table" then return v end
  if seen[v] then return seen[v] end
  local out = {}
  seen[v] = out
  for k, x in pairs(v) do
    if type(k) == "string" and SECRET_FIELDS[k:lower()] then
      out[redact(k)] = "***"
    else
      out[redact_copy(k, redact, seen)] = redact_copy(x, redact, seen)
    end
  end
  return out
end

--- A redacted copy of a decoded answer, for errors that carry one (`err.response`): every
-- field named DeviceSecret, SecurityToken or AccessKeySecret (any letter case, at any
-- depth, whatever its value) becomes `"***"`, and every other string, keys included,
-- passes through `redact`. Numbers, booleans and the shape are kept; the tree given is
-- not changed.
-- @tparam any tree a decoded (and shaped) answer; a string is redacted, others returned
-- @tparam function redact the client's redactor (text -> text)
-- @return the copy
function M.redact_tree(tree, redact)
  return redact_copy(tree, redact, {})
end

return M
