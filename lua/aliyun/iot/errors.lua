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

--- Escapes what a terminal would act on: C0 control characters and DEL as `\n`, `\r`,
-- `\t` or `\xHH`, and the UTF-8 forms of the C1 controls (U+0080..U+009F, which some
-- terminals read as escape sequences) as `\u{HH}`. Text from servers passes through it
-- before it is printed, so a Code or Message cannot rewrite the screen.
-- @tparam string s
-- @treturn string the same text with every control character escaped
function M.printable(s)
  s = tostring(s)
  s = s:gsub("[%z\1-\31\127]", function(c)
    return ESCAPES[c] or ("\\x%02X"):format(c:byte())
  end)
  return (s:gsub("\194([\128-\159])", function(c) return ("\\u{%02X}"):format(c:byte()) end))
end

--- A short, printable excerpt of a body for an error message: redacted whole first
-- (cutting first could leave half a secret that the redactor no longer recognises),
-- then cut to at most `max` bytes on a UTF-8 character boundary, then made printable.
-- @tparam string text
-- @tparam function redact the client's redactor (text -> text)
-- @tparam[opt=512] integer max bytes kept before escaping
-- @treturn string
function M.snippet(text, redact, max)
  max = max or 512
  text = redact(tostring(text))
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
  if e.http_status then extra[#extra + 1] = "HTTP " .. tostring(e.http_status) end
  if e.request_id then extra[#extra + 1] = "RequestId " .. tostring(e.request_id) end
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


--- Makes a redactor for a set of secret strings.
-- The redactor replaces each secret in its raw, percent-encoded (once and twice, as a
-- SignatureDoesNotMatch echo holds it) and form-encoded forms with `***`, and blanks
-- every DeviceSecret field of a JSON or XML body, known or not.
-- @tparam {string,...} secrets values to hide (nil and short values are skipped)
-- @treturn function redact(text) -> text
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
  return function(text)
    if type(text) ~= "string" then return text end
    for _, n in ipairs(needles) do text = replace_plain(text, n, "***") end
    text = text:gsub('("DeviceSecret"%s*:%s*")[^"]*', "%1***")
    text = text:gsub("(<DeviceSecret>)[^<]*", "%1***")
    text = text:gsub("(DeviceSecret%%?2?5?3D)[^&%%]*", "%1***")
    text = text:gsub("(DeviceSecret=)[^&]*", "%1***")
    return text
  end
end

return M
