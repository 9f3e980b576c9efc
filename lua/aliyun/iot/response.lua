--- Response decoding and classification: a transport result becomes the decoded answer
-- or an error value saying whether a repeat is safe.
--
-- `retryable`: the request certainly did not act (nothing reached the server, or a decoded
-- answer proves the service refused it: throttling, a decoded 503 ServiceUnavailable).
-- `ambiguous`: it may have acted (the answer was lost, cut, or could not be decoded, an
-- internal error); only idempotent actions are repeated then. Neither: a decoded refusal
-- that a repeat would meet again (a signature, parameter or business error).
-- @module aliyun.iot.response

local core = require "aliyun.iot.core"
local errors = require "aliyun.iot.errors"
local shape = require "aliyun.iot.shape"

local M = {}

local RETRYABLE_CODES = {
  Throttling = true, ["Throttling.User"] = true, ["Throttling.Api"] = true,
  ServiceUnavailable = true,
}
local AMBIGUOUS_CODES = {InternalError = true, UnknownError = true, SignatureNonceUsed = true}

-- IoT business errors (HTTP 200, Success false) that prove the service refused the
-- request before acting: malformed or missing parameters, things that do not exist, limits,
-- permissions (docs/wire.md §5.2). Any other business answer (iot.system.SystemException,
-- a "...Failed" or "...ActionError", an unknown code, none at all) may come after the
-- service acted, so it is ambiguous: a BatchRegisterDevice that met one is never re-sent.
local REFUSALS = {
  "^iot%.prod%.", "^iot%.check%.InvalidFormattedParameter$",
  "^iot%.device%.AlreadyExistedDeviceName$", "^iot%.device%.DeviceApplyIsNotFound$",
  "^iot%.device%.DeviceCountExceeded$", "^iot%.device%.InvalidFormatted%w+$",
  "^iot%.device%.IncorrentDeviceApplyInfo$", "^iot%.device%.InvalidIoTId$",
  "^iot%.device%.NoneDeviceNameElement$", "^iot%.device%.NotExistedDevice$",
  "^iot%.device%.Null%w+$", "^iot%.device%.RegionNotSupportX509$",
  "^iot%.device%.CreateDeviceTaskIsRunning$",
  "^iot%.common%.InvalidPageParams$", "^iot%.common%.InvalidTenant$",
  "^iot%.common%.%w*PermissionDeny$", "^iot%.common%.InvalidFormattedParameter$",
  "^iot%.system%.InstanceNotFound$", "^iot%.system%.UidNotFound$",
  "^iot%.system%.IllegalRequest$", "^iot%.Sre%.IotInstanceNotFound$",
}

local function proves_refusal(code)
  if type(code) ~= "string" then return false end
  for _, pattern in ipairs(REFUSALS) do
    if code:find(pattern) then return true end
  end
  return false
end

-- A gateway's refusal to be repeated later: throttling (a 4xx, or 503) or a 503
-- ServiceUnavailable. The same codes under another status (a 500 that says
-- ServiceUnavailable) prove nothing.
local function retryable(code, status)
  if code == "ServiceUnavailable" then return status == 503 end
  return RETRYABLE_CODES[code] == true and ((status >= 400 and status < 500) or status == 503)
end
-- (DeadlineExceeded: the fan-out found the deadline passed before it sent the request;
-- the retry policy then ends it as the deadline's doing.)
local REPEATABLE_TRANSPORT = {ConnectFailed = true, Timeout = true, ConnectionReset = true,
                              TransportError = true, DeadlineExceeded = true}

-- Fields the classifier reads, and the Lua type each must have when present.
local FIELD_TYPES = {Code = "string", Message = "string", ErrorMessage = "string",
                     RequestId = "string", HostId = "string", Recommend = "string",
                     Success = "boolean"}

-- Reads the parameter list of a canonical query ("a=1&b=2") into name -> value.
local function query_pairs(q)
  local t = {}
  for pair in (q or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    t[k] = v
  end
  return t
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local SAME = "the server's string to sign equals ours: the AccessKeySecret is probably wrong"

-- Says how the server's echoed StringToSign differs from ours, naming parameters only
-- (values may be secrets). Same strings mean the AccessKeySecret itself is wrong.
function M.signature_diff(ours, message)
  if not ours or not message then return nil end
  local hash = message:match("StringToSign is %[ACS3%-HMAC%-SHA256%s+(%x+)%]")
  if hash then
    -- ACS3 echoes only the hash of its canonical request: it says whether the two
    -- requests agree, not where they part.
    if ours == "ACS3-HMAC-SHA256\n" .. hash then return SAME end
    return "the server hashed another canonical request than ours (headers, query or body differ)"
  end
  local theirs = message:match("server string to sign is:%s*(.-)%s*$")
  if not theirs or ours:sub(1, 4) == "ACS3" then return nil end
  if theirs == ours then return SAME end
  local m1, q1 = ours:match("^([^&]*)&%%2F&(.*)$")
  local m2, q2 = theirs:match("^([^&]*)&%%2F&(.*)$")
  if not m1 or not m2 then return "the server's string to sign has another shape than ours" end
  local parts = {}
  if m1 ~= m2 then parts[#parts + 1] = ("method %s (ours) vs %s (server)"):format(m1, m2) end
  local a, b = query_pairs(unescape(q1)), query_pairs(unescape(q2))
  local names = {}
  for k in pairs(a) do if a[k] ~= b[k] then names[#names + 1] = unescape(k) end end
  for k in pairs(b) do if a[k] == nil then names[#names + 1] = unescape(k) end end
  table.sort(names)
  if #names > 0 then parts[#parts + 1] = "parameters " .. table.concat(names, ", ") end
  if #parts == 0 then return "the encoding of the string to sign differs" end
  return "differs from ours in: " .. table.concat(parts, "; ")
end

--- Decodes a body (JSON, or XML when it starts with `<`) and gives it the types the
-- action's row names (`shape.xml`, and `shape.json` where it exists).
-- @tparam string body
-- @tparam table row the action's row
-- @treturn ?table the decoded answer
-- @treturn ?string why it could not be decoded
function M.decode(body, row)
  -- a UTF-8 byte order mark says nothing the decoders need
  if body:byte(1) == 239 and body:sub(1, 3) == "\239\187\191" then body = body:sub(4) end
  local decoded, err
  -- (find, not match: no string made for the first character of every answer)
  if body:find("^%s*<") then
    local root, tree = core.xml_decode(body)
    if not root then return nil, tree end
    -- the API answers <Error> or <ActionResponse>; an HTML error page is no answer
    if root ~= "Error" and not root:find("Response$") then
      return nil, "an XML document that is not an API answer"
    end
    decoded = shape.xml(tree, row, root)
  else
    decoded, err = core.json_decode(body)
    if type(decoded) == "table" and shape.json then decoded = shape.json(decoded, row) end
  end
  if type(decoded) ~= "table" then return nil, err or "not an object" end
  return decoded
end

-- in a fixed order (the first wrong one is named), with their types beside them
local FIELD_NAMES, FIELD_TYPE_OF = {}, {}
for k in pairs(FIELD_TYPES) do FIELD_NAMES[#FIELD_NAMES + 1] = k end
table.sort(FIELD_NAMES)
for i, k in ipairs(FIELD_NAMES) do FIELD_TYPE_OF[i] = FIELD_TYPES[k] end
local N_FIELDS = #FIELD_NAMES

local function field_problem(decoded)
  -- an answer has a few top-level fields: look at those, and name the first wrong one in
  -- the fixed order only when there is one
  local wrong = false
  for k, v in pairs(decoded) do
    local t = FIELD_TYPES[k]
    if t and type(v) ~= t then wrong = true; break end
  end
  if not wrong then return nil end
  for i = 1, N_FIELDS do
    local k = FIELD_NAMES[i]
    local v, t = decoded[k], FIELD_TYPE_OF[i]
    if v ~= nil and type(v) ~= t then
      return ("%s is a %s, not a %s"):format(k, type(v), t)
    end
  end
end

local function invalid_response(status, why, body, redact)
  return errors.new{
    code = "InvalidResponse", http_status = status,
    -- an answer we cannot read says nothing about whether the service acted
    ambiguous = true,
    message = ("cannot read the response (%s); body starts: %s")
      :format(redact(tostring(why)), errors.snippet(body, redact, 512)),
  }
end

local function transport_error(terr, redact)
  local e = errors.new{code = terr.code or "TransportError",
                       message = redact(terr.message or "transport failed")}
  if terr.sent then
    e.ambiguous = true
  elseif REPEATABLE_TRANSPORT[e.code] then
    -- nothing reached the server; a certificate or an option that fails will fail again
    e.retryable = true
  end
  return e
end

local function answer_error(decoded, status, sts, redact)
  -- a 2xx is an error only by its Success false: the message says so when the answer
  -- says nothing more ("HTTP status 200" alone reads like a success)
  local message = decoded.Message or decoded.ErrorMessage or
    (status >= 200 and status < 300 and ("the answer says Success false, with no Code " ..
      "nor Message (HTTP status %d)"):format(status) or ("HTTP status " .. status))
  if decoded.Code == "SignatureDoesNotMatch" then
    -- compared before redaction, which would make a sent SecurityToken look different
    -- the v1 path makes its string to sign only now
    local diff = M.signature_diff(type(sts) == "function" and sts() or sts, message)
    if diff then message = message .. " (" .. diff .. ")" end
  end
  return errors.new{
    code = decoded.Code or ("HTTP" .. tostring(status)),
    message = redact(message),
    request_id = decoded.RequestId, http_status = status,
    host_id = decoded.HostId, recommend = decoded.Recommend,
  }
end

--- Turns a transport result into the decoded answer or an error.
-- @tparam table row the action's row
-- @tparam ?table res the transport's response
-- @tparam ?table terr the transport's error
-- @tparam ?string|function sts our string to sign, or a function that makes it
-- @tparam function redact the client's redactor
-- @treturn ?table the answer
-- @treturn ?table err with `retryable`/`ambiguous`, and `date` (the server's Date header)
function M.classify(row, res, terr, sts, redact)
  if not res then return nil, transport_error(terr, redact) end
  local status = res.status
  local body = res.body or ""
  local decoded, why = M.decode(body, row)
  if not decoded then return nil, invalid_response(status, why, body, redact) end
  why = field_problem(decoded)
  if why then return nil, invalid_response(status, why, body, redact) end
  local ok_status = status >= 200 and status < 300
  -- In an answer that carries Success, only true is success (STS answers carry none).
  if ok_status and (decoded.Success == true or (decoded.Success == nil and decoded.Code == nil)) then
    return decoded
  end
  local e = answer_error(decoded, status, sts, redact)
  if ok_status then
    -- An IoT business error: HTTP 200 with Success false. Its body may hold lists
    -- callers need (invalid names); it is passed through the redactor like any text
    -- from a server, so no secret can ride along in an unexpected field.
    e.response = errors.redact_tree(decoded, redact)
    e.ambiguous = not proves_refusal(decoded.Code) or nil
    return nil, e
  end
  if retryable(decoded.Code, status) then
    e.retryable = true
  elseif decoded.Code == nil or AMBIGUOUS_CODES[e.code] or status >= 500 then
    -- a refusal is proven only by a decoded error code that says so
    e.ambiguous = true
  end
  local after = M.retry_after(res.headers)
  if after then
    -- The current SDKs' throttling signal: wait at least that long. It proves a refusal
    -- (a call that is never re-sent on doubt may be repeated) only when the decoded
    -- answer already does (a 4xx with a code that is not an ambiguous one); after a 5xx,
    -- or an answer without a code, the service may have acted: only calls safe to repeat
    -- are repeated, after the wait it asks for.
    e.throttled, e.retry_after = true, after
    if not e.ambiguous then e.retryable = true end
  end
  local date = res.headers and res.headers.date
  e.date = type(date) == "string" and date or nil
  return nil, e
end

-- The longest wait an x-acs-retry-after may ask for [s]; a larger value is still obeyed up
-- to this, so that a broken gateway cannot park a job for days.
M.MAX_RETRY_AFTER = 600

--- The wait an `x-acs-retry-after` header asks for (milliseconds on the wire, docs/wire.md
-- §8 "Around credentials"), in seconds, at most `MAX_RETRY_AFTER`; nil when absent or not
-- a whole number.
-- @tparam ?table headers lower-case names
-- @treturn ?number seconds
function M.retry_after(headers)
  local v = headers and headers["x-acs-retry-after"]
  if type(v) ~= "string" or not v:find("^%s*%d+%s*$") or #v > 20 then return nil end
  return math.min(tonumber(v) / 1000, M.MAX_RETRY_AFTER)
end

return M
