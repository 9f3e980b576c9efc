--- The ECS RAM role through instance metadata (docs/wire.md §8 "ECS RAM role"): an IMDSv2
-- token first, then the role (named, or the first the instance lists) and its
-- credentials; without a token, the older unauthenticated requests unless
-- `ALIBABA_CLOUD_IMDSV1_DISABLED=true`. Never through a proxy; short timeouts.
-- @module aliyun.iot.credentials.ecs

local files = require "aliyun.iot.credentials.files"
local fetch = require "aliyun.iot.credentials.fetch"

local M = {}

--- The metadata service's address (ours to change: `metadata_endpoint`,
-- `ALIBABA_CLOUD_ECS_METADATA_ENDPOINT`, the test and proxy hook).
M.DEFAULT_ENDPOINT = "http://100.100.100.200"

-- The SDKs' 1 s; the token lives 6 hours (it is asked for at every fetch anyway).
local TIMEOUT, TOKEN_TTL = 1, "21600"
local ROLES = "/latest/meta-data/ram/security-credentials/"

--- The words that begin a failure before any role was found (nothing answers, or the
-- instance lists no role): on a host that is not an ECS instance with a role, the
-- default chain takes that as "not here" and moves on.
M.ABSENT = "no ECS RAM role here: "

--- The metadata base URL for these options.
-- @tparam table o `metadata_endpoint`
-- @treturn string without a trailing "/"
function M.endpoint(o)
  local url = o.metadata_endpoint or files.env("ALIBABA_CLOUD_ECS_METADATA_ENDPOINT")
    or M.DEFAULT_ENDPOINT
  return (url:gsub("/*$", ""))
end

local function get(base, path, method, headers)
  return fetch.request{method = method or "GET", url = base .. path, headers = headers,
                       timeout = TIMEOUT, connect_timeout = TIMEOUT, proxy = ""}
end

-- The IMDSv2 token, or nil, why, and true when nothing answered at all (no instance
-- metadata here: the v1 requests would time out the same way).
local function token(base)
  local res, err = get(base, "/latest/api/token", "PUT",
    {["x-aliyun-ecs-metadata-token-ttl-seconds"] = TOKEN_TTL})
  if not res then return nil, err, true end
  local t = res.body
  if res.status ~= 200 or not files.nonempty(t) or #t > 1024 or files.unsendable(t) then
    return nil, ("HTTP %d"):format(res.status)
  end
  return t
end

local function role_name(base, headers)
  local res, err = get(base, ROLES, "GET", headers)
  if not res then return nil, "instance metadata unreachable (" .. err .. ")" end
  local name = res.status == 200 and (res.body or ""):match("^%s*([%w%.@_%-]+)")
  if not name or #name > 64 then
    return nil, ("instance metadata lists no RAM role (HTTP %d)"):format(res.status)
  end
  return name
end

--- A fetch for the ECS RAM role.
-- @tparam table o `role_name` (else `ALIBABA_CLOUD_ECS_METADATA`, else discovered),
--   `metadata_endpoint`, `disable_imds_v1` (else `ALIBABA_CLOUD_IMDSV1_DISABLED=true`)
-- @treturn function `fetch() -> creds, expires_at | nil, reason`
function M.fetcher(o)
  local base = M.endpoint(o)
  local v1_disabled = o.disable_imds_v1 == true
    or os.getenv("ALIBABA_CLOUD_IMDSV1_DISABLED") == "true"
  return function()
    local t, why, unreachable = token(base)
    if unreachable then return nil, M.ABSENT .. "instance metadata unreachable (" .. why .. ")" end
    if not t and v1_disabled then
      return nil, M.ABSENT .. "no IMDSv2 token (" .. why .. ") and IMDSv1 is disabled"
    end
    local headers = t and {["x-aliyun-ecs-metadata-token"] = t} or nil
    local role = o.role_name or files.env("ALIBABA_CLOUD_ECS_METADATA")
    if not role then
      local err
      role, err = role_name(base, headers)
      if not role then return nil, M.ABSENT .. err end
    end
    local res, err = get(base, ROLES .. role, "GET", headers)
    if not res then return nil, "instance metadata unreachable (" .. err .. ")" end
    local body, jerr = fetch.json(res)
    if res.status ~= 200 or (body and body.Code ~= "Success") then
      return nil, ("instance metadata refused role %s: HTTP %d, Code %s"):format(role,
        res.status, fetch.short(body and body.Code) or "missing")
    end
    if not body then return nil, "instance metadata answered " .. jerr end
    local creds, exp = fetch.credentials(body)
    if not creds then return nil, "instance metadata answered: " .. exp end
    return creds, exp
  end
end

return M
