--- Request building: checking an action's parameters (action table, validation,
-- flattening) and turning one attempt into a signed transport request, with a fresh
-- SignatureNonce and Timestamp every time (RPC v1 HMAC-SHA1 or ACS3-HMAC-SHA256).
-- @module aliyun.iot.request

local core = require "aliyun.iot.core"
local actions = require "aliyun.iot.actions"
local validate = require "aliyun.iot.validate"
local options = require "aliyun.iot.options"

local M = {}

M.API_VERSION = "2018-01-20"

-- The API's action names are short CamelCase words; anything else (CR/LF, NUL, a
-- megabyte) would end up in a header or a signed query.
local MAX_ACTION = 64

local invalid = options.invalid

local math_type = math.type -- nil before Lua 5.3

-- The first flattened value that is not an integer the API can take, or nil. A Lua
-- integer always is one (most calls carry only those and strings).
local function integer_problem(flat)
  for k, v in pairs(flat) do
    if type(v) == "number" and not (math_type and math_type(v) == "integer") then
      local why = select(2, validate.integer_string(v))
      if why then return k, k .. " " .. why end
    end
  end
end

-- The request object of an RPC v1 (HMAC-SHA1) call: the parameters flattened, sorted and
-- encoded once in C for every attempt (`core.rpc_request`), or nil and the error.
local function rpc_request(params)
  local rpc, msg, pname, kind = core.rpc_request(params)
  if rpc then return rpc end
  if kind == "number" then return nil, invalid(pname, pname .. " " .. msg) end
  return nil, invalid(pname, pname .. ": " .. msg)
end

--- Checks an action and its parameters, validates them against the action's row and
-- flattens them (`Name.N`, `Name.N.Field`): for an HMAC-SHA1 client into a
-- `core.rpc_request` object (no flat Lua table: the call signs each attempt from it), for
-- ACS3 into a flat table.
-- @tparam table client for the limits validation reads (`max_batch_size`) and its
--   `signature_algorithm`
-- @tparam string action
-- @tparam table params
-- @tparam integer level error level for misuse
-- @treturn ?table the action's row
-- @treturn ?table the flat parameters (ACS3; nil with an RPC object), or the
--   `InvalidParameter` error
-- @treturn ?userdata the RPC request object (HMAC-SHA1); the caller closes it once the
--   call is over
-- @raise when action is not a string or params not a table
function M.prepare(client, action, params, level)
  level = level + 1
  if type(action) ~= "string" then
    error("action must be a string, got " .. type(action), level)
  end
  if type(params) ~= "table" then
    error("params must be a table, got " .. type(params), level)
  end
  -- a known action's name is well formed: only other names need the look
  local row = actions.rows[action]
  if not row and (#action > MAX_ACTION or not action:find("^[A-Za-z][A-Za-z0-9]*$")) then
    return nil, invalid("Action", ("Action must be a name of letters and digits "
      .. "(at most %d), as the API's are"):format(MAX_ACTION))
  end
  row = row or actions.get(action)
  local name, why = validate.check(row, params, client)
  if name then return nil, invalid(name, why) end
  if client.signature_algorithm == "HMAC-SHA1" then
    local rpc, err = rpc_request(params)
    if not rpc then return nil, err end
    return row, nil, rpc
  end
  local flat, msg, pname = core.flatten(params)
  if not flat then return nil, invalid(pname, pname .. ": " .. msg) end
  name, why = integer_problem(flat)
  if name then return nil, invalid(name, why) end
  return row, flat
end

-- The key's and the signature's common parameters of signature V1, set into p.
local function v1_common(p, creds, nonce, timestamp)
  p.AccessKeyId, p.SecurityToken = creds.access_key_id, creds.security_token
  p.SignatureMethod, p.SignatureVersion = "HMAC-SHA1", "1.0"
  p.SignatureNonce, p.Timestamp = nonce, timestamp
  return p
end

--- Signs RPC parameters with signature V1 (docs/wire.md §2): adds the key's common
-- parameters (AccessKeyId, SecurityToken, SignatureMethod, SignatureVersion,
-- SignatureNonce, Timestamp) to `p` and signs everything in it (`core.sign_rpc`): STS
-- AssumeRole's signer (`aliyun.iot.credentials.sts`). IoT calls sign from their
-- `core.rpc_request` object with the same common parameters (`build`).
-- @tparam string method "GET" or "POST"
-- @tparam table p the parameters (Action, Version, Format... already set); changed in place
-- @tparam table creds `{access_key_id=, access_key_secret=, security_token=}`
-- @tparam string nonce
-- @tparam string timestamp `YYYY-MM-DDThh:mm:ssZ`
-- @treturn string the signed query (or form body), Signature last
-- @treturn string the string to sign
function M.sign_v1_params(method, p, creds, nonce, timestamp)
  v1_common(p, creds, nonce, timestamp)
  local sig, sts, canonical = core.sign_rpc(method, p, creds.access_key_secret)
  return canonical .. "&Signature=" .. core.percent_encode(sig), sts
end

-- RPC v1 from the call's request object: the common parameters go in beside the
-- request's own (which they replace, as sign_v1_params's assignments do; IotInstanceId
-- only when the call has none). libcurl sends the body from the object (`body_object`),
-- other transports get a string. The string to sign is made only if asked for.
local function sign_v1(c, req, a)
  local creds, rpc = a.creds, a.rpc
  local common = v1_common({Action = a.action, Version = M.API_VERSION, Format = a.format,
                            RegionId = c.region_id}, creds, a.nonce, a.timestamp)
  if c.iot_instance_id and a.params.IotInstanceId == nil then
    common.IotInstanceId = c.iot_instance_id
  end
  rpc:sign(a.method, common, creds.access_key_secret)
  if a.method == "GET" then
    req.url = c.url .. "?" .. rpc:body()
  else
    req.url = c.url
    req.body = a.body_object and rpc or rpc:body()
    req.headers["content-type"] = "application/x-www-form-urlencoded"
  end
  return function() return rpc:string_to_sign() end
end

-- ACS3 (docs: "V3 request body and signature"): action and version travel in headers;
-- RPC parameters in the form body (POST) or the query (GET). Format only when XML is
-- wanted.
local function sign_acs3(c, req, p, a)
  if a.format == "XML" then p.Format = "XML" end
  local h = req.headers
  h.host = c.host
  h["x-acs-action"], h["x-acs-version"] = a.action, M.API_VERSION
  h["x-acs-date"], h["x-acs-signature-nonce"] = a.timestamp, a.nonce
  h["x-acs-security-token"] = a.creds.security_token
  h.accept = a.format == "XML" and "application/xml" or "application/json"
  local query, body = {}, ""
  if a.method == "GET" then
    query = p
  else
    body = core.canonical_query(p)
    h["content-type"] = "application/x-www-form-urlencoded"
  end
  local auth, _, hashed, sha = core.sign_acs3{
    method = a.method, path = "/", query = query, headers = h, body = body,
    access_key_id = a.creds.access_key_id, access_key_secret = a.creds.access_key_secret,
  }
  h["x-acs-content-sha256"], h.authorization = sha, auth
  local qs = a.method == "GET" and core.canonical_query(query) or ""
  req.url = qs ~= "" and (c.url .. "?" .. qs) or c.url
  if a.method ~= "GET" then req.body = body end
  return "ACS3-HMAC-SHA256\n" .. hashed
end

--- Builds one signed attempt.
-- @tparam table c the client (`region_id`, `url`, `host`, `iot_instance_id`,
--   `signature_algorithm`, `clock_offset`, transport options)
-- @tparam table a the attempt: `row`, `action`, `params`, `flat` (ACS3) or `rpc` (RPC v1,
--   from `prepare`), `method`, `format`, `creds`, `timeout`, `connect_timeout` [s],
--   `body_object` (true when the transport is the C core's libcurl session, which sends
--   an RPC body from its object)
-- @treturn table the transport request
-- @treturn string|function our string to sign, or a function that makes it (to explain a
--   SignatureDoesNotMatch; valid until the next attempt of the call is built)
function M.build(c, a)
  a.nonce = core.nonce()
  a.timestamp = core.timestamp(core.time() + c.clock_offset)
  local req = {
    method = a.method, headers = {}, timeout = a.timeout, connect_timeout = a.connect_timeout,
    max_response_size = c.max_response_size, ca_file = c.ca_file, proxy = c.proxy_url,
    -- libcurl re-sends a request on its own when a reused connection turns out dead, even
    -- after the server acted; calls that must never be repeated get a fresh connection.
    fresh_connect = a.row.retry ~= "idempotent",
  }
  local string_to_sign
  if a.rpc then
    string_to_sign = sign_v1(c, req, a)
  else
    -- the request's own flat table (made for it by `prepare`), signed in place: every
    -- attempt sets all the common parameters again, so no copy per attempt is needed
    local p = a.flat
    if c.iot_instance_id and p.IotInstanceId == nil then p.IotInstanceId = c.iot_instance_id end
    string_to_sign = sign_acs3(c, req, p, a)
  end
  req.headers["user-agent"] = c.user_agent
  return req, string_to_sign
end

return M
