--- The environment steps of the default chain: an AccessKey pair
-- (`ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET`, optional
-- `ALIBABA_CLOUD_SECURITY_TOKEN`), then OIDC / RRSA (`ALIBABA_CLOUD_ROLE_ARN`,
-- `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`, `ALIBABA_CLOUD_OIDC_TOKEN_FILE`, optional
-- `ALIBABA_CLOUD_ROLE_SESSION_NAME`). Each step returns a provider, or nil, a note on what
-- it saw, and true when the configuration is unusable (the chain stops there).
-- @module aliyun.iot.credentials.env

local files = require "aliyun.iot.credentials.files"
local types = require "aliyun.iot.credentials.types"

local M = {}

local env, nonempty = files.env, files.nonempty

--- The AccessKey pair in the environment.
-- @treturn ?table provider
-- @treturn ?string note
-- @treturn ?boolean unusable (half a pair, or a key or token with NUL, CR or LF)
function M.access_key()
  local id, secret = env("ALIBABA_CLOUD_ACCESS_KEY_ID"), env("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
  local where = "environment ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET"
  if id and secret then
    local token = env("ALIBABA_CLOUD_SECURITY_TOKEN")
    if files.unsendable(id) or files.unsendable(token) then
      return nil, where .. " (ALIBABA_CLOUD_ACCESS_KEY_ID or ALIBABA_CLOUD_SECURITY_TOKEN "
        .. "holds NUL, CR or LF)", true
    end
    return files.static("environment", id, secret, token)
  elseif nonempty(id) then
    return nil, where .. " (ALIBABA_CLOUD_ACCESS_KEY_SECRET not set)", true
  elseif nonempty(secret) then
    return nil, where .. " (ALIBABA_CLOUD_ACCESS_KEY_ID not set)", true
  end
  return nil, where .. " (not set)"
end

--- OIDC / RRSA from the environment.
-- @tparam table ctx as for `aliyun.iot.credentials.types.build`
-- @treturn ?table provider
-- @treturn ?string note
-- @treturn ?boolean unusable
function M.oidc(ctx)
  local where = "OIDC environment ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN, "
    .. "ALIBABA_CLOUD_OIDC_TOKEN_FILE"
  local arn, provider = env("ALIBABA_CLOUD_ROLE_ARN"), env("ALIBABA_CLOUD_OIDC_PROVIDER_ARN")
  local file = env("ALIBABA_CLOUD_OIDC_TOKEN_FILE")
  if not (arn and provider and file) then
    return nil, where .. ((arn or provider or file) and " (not all set)" or " (not set)")
  end
  local p, why = types.build({type = "oidc_role_arn", role_arn = arn, oidc_provider_arn = provider,
    oidc_token_file_path = file, role_session_name = env("ALIBABA_CLOUD_ROLE_SESSION_NAME")},
    "OIDC role " .. arn, ctx)
  if not p then return nil, where .. " (" .. why .. ")", true end
  return p
end

return M
