--- The default credentials chain, in the official order (docs/wire.md §8): environment,
-- OIDC / RRSA, the CLI profile, the INI file, the ECS RAM role, a credentials URI. A
-- provider that fetches is kept only once it has answered. One error at the end names
-- every provider tried and why it was skipped or failed, with no secret in it:
-- `InvalidCredentials` for an unusable configuration (half a key pair in the
-- environment; it stops the chain), `CredentialsError` for a configured provider that
-- failed (STS refused, a URI answered garbage; the chain stops there too, rather than
-- carry on with other credentials), `NoCredentials` when nothing is configured anywhere.
-- Instance metadata that does not answer, or lists no role, means "not on ECS", a skip,
-- unless a role is named (`ALIBABA_CLOUD_ECS_METADATA`). A profile named by the `profile`
-- option (`--profile`) that neither the CLI config nor the INI file serves stops the
-- chain there (`InvalidCredentials`) rather than fall to the ECS role or a URI.
-- @module aliyun.iot.credentials.chain

local files = require "aliyun.iot.credentials.files"
local env = require "aliyun.iot.credentials.env"
local profile = require "aliyun.iot.credentials.profile"
local ini = require "aliyun.iot.credentials.ini"
local types = require "aliyun.iot.credentials.types"
local ecs_ = require "aliyun.iot.credentials.ecs"
local uri_ = require "aliyun.iot.credentials.uri"

local M = {}

local function ecs(ctx)
  if os.getenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED") == "true" then
    return nil, "ECS RAM role (disabled by ALIBABA_CLOUD_ECS_METADATA_DISABLED)"
  end
  local role = files.env("ALIBABA_CLOUD_ECS_METADATA")
  local p, why = types.build({type = "ecs_ram_role", role_name = role},
    "ECS RAM role" .. (role and (" " .. role) or "") .. " (instance metadata)", ctx)
  if not p then return nil, why, true end
  p.implicit = role == nil
  return p
end

local function uri(ctx)
  local url = files.env("ALIBABA_CLOUD_CREDENTIALS_URI")
  if not url then return nil, "credentials URI ALIBABA_CLOUD_CREDENTIALS_URI (not set)" end
  return types.build({type = "credentials_uri", credentials_uri = url},
    "credentials URI " .. uri_.public(url), ctx)
end

--- The steps, in order: `{name, step(ctx) -> provider | nil, note, unusable}`.
M.STEPS = {
  {"environment", env.access_key}, {"oidc", env.oidc}, {"cli_profile", profile.step},
  {"ini", ini.step}, {"ecs_ram_role", ecs}, {"credentials_uri", uri},
}

--- Walks the chain.
-- @tparam table ctx `home`, `profile`, `profile_option` (true when `profile` came from
--   the option), `logger`, `new_error`, `sts_endpoint`, `metadata_endpoint`, `proxy`
-- @tparam ?table tried notes already taken (the options, said first)
-- @treturn ?table the provider that answered (with `name`, the step's)
-- @treturn ?table err (`InvalidCredentials`, `CredentialsError`, `NoCredentials`)
-- @treturn table the notes on every provider tried
function M.walk(ctx, tried)
  tried = tried or {}
  for _, s in ipairs(M.STEPS) do
    local p, note, unusable = s[2](ctx)
    if unusable then
      return nil, ctx.new_error{code = "InvalidCredentials", message = "unusable " .. note
        .. "; looked at before: " .. table.concat(tried, "; ")}, tried
    end
    if p and p.fetched then
      local creds, err = p.get()
      if not creds then
        local why = err and err.message or tostring(err)
        if not (p.implicit and why:find(ecs_.ABSENT, 1, true)) then
          tried[#tried + 1] = why
          return nil, ctx.new_error{code = "CredentialsError", provider = s[1],
            message = ("credentials from %s failed: %s; looked at before: %s")
              :format(s[1], why, table.concat(tried, "; ", 1, #tried - 1))}, tried
        end
        p, note = nil, why
      end
    end
    if p then
      p.name = s[1]
      return p, nil, tried
    end
    tried[#tried + 1] = note
    if s[1] == "ini" and ctx.profile_option then
      -- a profile asked for by name that neither file serves (a typo, a broken entry):
      -- instance metadata or a URI would act as another identity, maybe another account
      return nil, ctx.new_error{code = "InvalidCredentials", message = ("profile '%s' (the "
        .. "profile option) is served by neither the CLI config nor the credentials file; "
        .. "looked at: %s"):format(ctx.profile, table.concat(tried, "; "))}, tried
    end
  end
  return nil, ctx.new_error{code = "NoCredentials",
    message = "no credentials found; looked at: " .. table.concat(tried, "; ")}, tried
end

return M
