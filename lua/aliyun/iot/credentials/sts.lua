--- STS, Version 2015-04-01 (docs/wire.md §8 "RAM role ARN", "OIDC", "STS endpoint"):
-- `AssumeRole`, an ordinary V1-signed RPC call made with the source credentials through
-- the V1 signer (`request.sign_v1_params`, `core.sign_rpc`; same bytes as IoT calls'
-- `core.rpc_request`), and
-- `AssumeRoleWithOIDC`, unsigned, with the OIDC token file read again at every fetch.
-- Each returns a fetch function for `aliyun.iot.credentials.cached`.
-- @module aliyun.iot.credentials.sts

local core = require "aliyun.iot.core"
local request = require "aliyun.iot.request"
local files = require "aliyun.iot.credentials.files"
local fetch = require "aliyun.iot.credentials.fetch"

local M = {}

M.VERSION = "2015-04-01"

-- Official figures: 5 s to connect, 10 s to read (the OIDC provider's).
local CONNECT_TIMEOUT, TIMEOUT = 5, 10

--- The STS endpoint URL: `sts_endpoint` (option) or `ALIBABA_CLOUD_STS_ENDPOINT` (ours: a
-- full URL, the test and proxy hook), else `sts-vpc.<region>.aliyuncs.com` with
-- `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED=true`, `sts.<region>.aliyuncs.com` with a region
-- (`sts_region`, `ALIBABA_CLOUD_STS_REGION`), else `sts.aliyuncs.com`.
-- @tparam table o `sts_endpoint`, `sts_region`, `enable_vpc`
-- @treturn string URL ending in "/"
function M.endpoint(o)
  local url = o.sts_endpoint or files.env("ALIBABA_CLOUD_STS_ENDPOINT")
  if url then return (url:gsub("/*$", "/")) end
  local region = o.sts_region or files.env("ALIBABA_CLOUD_STS_REGION")
  local vpc = o.enable_vpc == true or o.enable_vpc == "true"
    or os.getenv("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED") == "true"
  if region then
    return ("https://sts%s.%s.aliyuncs.com/"):format(vpc and "-vpc" or "", region)
  end
  return "https://sts.aliyuncs.com/"
end

--- A default RoleSessionName, as the SDKs make one up: a prefix and the time.
-- @treturn string
function M.session_name()
  return "aliyun-iot-" .. os.time()
end

--- The problem with AssumeRole parameters, or nil: RoleArn a non-empty line,
-- RoleSessionName 2-32 of `[A-Za-z0-9.@_-]`, DurationSeconds a whole number from 900 to
-- 43200, Policy at most 1,024 characters, the STS region (when no endpoint is given) a
-- region id.
-- @tparam table o `role_arn`, `role_session_name`, `duration_seconds`, `policy`,
--   `sts_region`, `sts_endpoint`
-- @treturn ?string
function M.problem(o)
  if not files.nonempty(o.role_arn) or files.unsendable(o.role_arn) then
    return "role_arn must be a non-empty line"
  end
  local name = o.role_session_name
  if name ~= nil and not (type(name) == "string" and #name >= 2 and #name <= 32
      and name:find("^[A-Za-z0-9.@_-]+$")) then
    return "role_session_name must be 2 to 32 of letters, digits and . @ _ -"
  end
  local d = tonumber(o.duration_seconds)
  if o.duration_seconds ~= nil and not (d and d == math.floor(d) and d >= 900 and d <= 43200) then
    return "duration_seconds must be a whole number from 900 to 43200"
  end
  if o.policy ~= nil and not (type(o.policy) == "string" and #o.policy <= 1024) then
    return "policy must be a string of at most 1024 characters"
  end
  -- the region becomes the STS host name: "evil.example/x?" would send the call elsewhere
  local region = o.sts_region or files.env("ALIBABA_CLOUD_STS_REGION")
  if region ~= nil and not (o.sts_endpoint or files.env("ALIBABA_CLOUD_STS_ENDPOINT"))
      and not (type(region) == "string" and region:find("^%w[%w%-]*$")) then
    return "sts_region (or ALIBABA_CLOUD_STS_REGION) must be a region id: letters, digits and -"
  end
end

-- The answer of either action: credentials and expiry, or why not (STS's Code and
-- RequestId, never the body).
local function answer(res, err)
  if not res then return nil, "STS unreachable (" .. err .. ")" end
  local t, why = fetch.json(res)
  if not t then return nil, "STS answered " .. why end
  if res.status ~= 200 then
    return nil, ("STS refused: HTTP %d %s (RequestId %s)"):format(res.status,
      fetch.short(t.Code) or "without a Code", fetch.short(t.RequestId) or "none")
  end
  local creds, exp = fetch.credentials(t.Credentials)
  if not creds then return nil, "STS answered: " .. exp end
  return creds, exp
end

local function common(action, o)
  return {Action = action, Version = M.VERSION, Format = "JSON",
          RoleArn = o.role_arn, RoleSessionName = o.role_session_name or M.session_name(),
          DurationSeconds = tostring(o.duration_seconds or 3600), Policy = o.policy}
end

local function post(o, body)
  return fetch.request{method = "POST", url = M.endpoint(o), body = body,
    headers = {["content-type"] = "application/x-www-form-urlencoded"},
    timeout = TIMEOUT, connect_timeout = CONNECT_TIMEOUT, proxy = o.proxy}
end

--- A fetch for AssumeRole with the source provider's credentials.
-- @tparam table o `role_arn`, `role_session_name`, `duration_seconds`, `policy`,
--   `external_id`, endpoint fields (`endpoint`), `proxy`
-- @tparam table source a provider (`get() -> creds | nil, err`)
-- @treturn function `fetch() -> creds, expires_at | nil, reason`
function M.assume_role(o, source)
  return function()
    local creds, err = source.get()
    if not creds then return nil, "source credentials: " .. tostring(err and err.message or err) end
    local p = common("AssumeRole", o)
    p.ExternalId = o.external_id
    local body = request.sign_v1_params("POST", p, creds, core.nonce(), core.timestamp())
    return answer(post(o, body))
  end
end

--- A fetch for AssumeRoleWithOIDC: the token file is read at every call (the platform
-- rotates it).
-- @tparam table o `role_arn`, `oidc_provider_arn`, `oidc_token_file_path`,
--   `role_session_name`, `duration_seconds`, `policy`, endpoint fields, `proxy`
-- @treturn function `fetch() -> creds, expires_at | nil, reason`
function M.assume_role_with_oidc(o)
  return function()
    local token, why = files.read(o.oidc_token_file_path)
    if not token then
      return nil, ("OIDC token file %s: %s"):format(o.oidc_token_file_path, tostring(why))
    end
    token = token:match("^%s*(.-)%s*$")
    if token == "" then return nil, "OIDC token file " .. o.oidc_token_file_path .. " is empty" end
    local p = common("AssumeRoleWithOIDC", o)
    p.OIDCProviderArn, p.OIDCToken = o.oidc_provider_arn, token
    p.Timestamp = core.timestamp()
    return answer(post(o, core.canonical_query(p)))
  end
end

return M
