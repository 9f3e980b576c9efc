--- The Alibaba Cloud CLI's profiles (`~/.aliyun/config.json`, or `ALIBABA_CLOUD_CONFIG_FILE`;
-- docs/wire.md §8): the profile asked for, else `ALIBABA_CLOUD_PROFILE`, else the file's
-- `current`; modes AK, StsToken, RamRoleArn, EcsRamRole, OIDC, ChainableRamRoleArn
-- (`source_profile`, followed with a guard against loops), CredentialsURI, each turned
-- into an official credentials type (`aliyun.iot.credentials.types`), and External
-- (`process_command`, `aliyun.iot.credentials.process`). CloudSSO and OAuth are not
-- supported (the note says so).
-- @module aliyun.iot.credentials.profile

local cjson = require "cjson.safe"
local files = require "aliyun.iot.credentials.files"
local types = require "aliyun.iot.credentials.types"
local cached = require "aliyun.iot.credentials.cached"
local process = require "aliyun.iot.credentials.process"

local M = {}

local nonempty = files.nonempty

-- CLI configs write every field, empty ones as "" and 0: those mean "not set".
local function s(v) return nonempty(v) and v or nil end
local function n(v) return type(v) == "number" and v > 0 and v or nil end

-- A profile as a credentials table, nil and a note for a mode we do not take.
local MODES = {
  AK = function(p) return {type = "access_key", access_key_id = p.access_key_id,
    access_key_secret = p.access_key_secret} end,
  StsToken = function(p) return {type = "sts", access_key_id = p.access_key_id,
    access_key_secret = p.access_key_secret, security_token = p.sts_token or ""} end,
  RamRoleArn = function(p) return {type = "ram_role_arn", access_key_id = p.access_key_id,
    access_key_secret = p.access_key_secret, role_arn = s(p.ram_role_arn) or "",
    role_session_name = s(p.ram_session_name), duration_seconds = n(p.expired_seconds),
    policy = s(p.policy), external_id = s(p.external_id), sts_region = s(p.sts_region),
    enable_vpc = p.enable_vpc == true} end,
  EcsRamRole = function(p) return {type = "ecs_ram_role", role_name = s(p.ram_role_name)} end,
  OIDC = function(p) return {type = "oidc_role_arn", role_arn = s(p.ram_role_arn) or "",
    oidc_provider_arn = s(p.oidc_provider_arn), oidc_token_file_path = s(p.oidc_token_file),
    role_session_name = s(p.ram_session_name), duration_seconds = n(p.expired_seconds),
    sts_region = s(p.sts_region), enable_vpc = p.enable_vpc == true} end,
  ChainableRamRoleArn = function(p) return {type = "ram_role_arn",
    role_arn = s(p.ram_role_arn) or "", role_session_name = s(p.ram_session_name),
    duration_seconds = n(p.expired_seconds), policy = s(p.policy),
    external_id = s(p.external_id), sts_region = s(p.sts_region),
    enable_vpc = p.enable_vpc == true} end,
  CredentialsURI = function(p) return {type = "credentials_uri",
    credentials_uri = s(p.credentials_uri) or ""} end,
  External = true, -- provider below
}

--- The path of the CLI config, or nil and a note.
-- @tparam table ctx `home`
function M.path(ctx)
  local path = files.env("ALIBABA_CLOUD_CONFIG_FILE")
  if path then return path end
  if not ctx.home then return nil, "Alibaba Cloud CLI config (HOME not set)" end
  return ctx.home .. "/.aliyun/config.json"
end

--- Reads the CLI config.
-- @tparam table ctx `home`, `logger`
-- @treturn ?table the decoded config (with a `profiles` list)
-- @treturn string the path, or the note on why there is none
function M.load(ctx)
  local path, note = M.path(ctx)
  if not path then return nil, note end
  local where = "Alibaba Cloud CLI config " .. path
  local text = files.read(path)
  if not text then return nil, where .. " (not found)" end
  files.check_mode(path, ctx.logger)
  local conf, why = cjson.decode(text)
  if conf == nil then
    -- cjson says where ("... at character N") and never quotes the text, so no secret
    return nil, ("%s (not valid JSON: %s)"):format(where, tostring(why))
  end
  if type(conf) ~= "table" or type(conf.profiles) ~= "table" then
    return nil, where .. " (not a CLI config: no profiles)"
  end
  return conf, path
end

local function find(conf, name)
  for _, p in ipairs(conf.profiles) do
    if type(p) == "table" and p.name == name then return p end
  end
end

--- The name of the profile to use.
-- @tparam table conf
-- @tparam table ctx `profile` (explicit or `ALIBABA_CLOUD_PROFILE`)
-- @treturn string
function M.name(conf, ctx)
  return ctx.profile or (nonempty(conf.current) and conf.current) or "default"
end

-- A provider for profile `name`; `seen` guards ChainableRamRoleArn against loops.
local function provider(conf, path, name, ctx, seen)
  local where = ("Alibaba Cloud CLI config %s (profile '%s'"):format(path, name)
  local p = find(conf, name)
  if not p then return nil, ("Alibaba Cloud CLI config %s (no profile '%s')"):format(path, name) end
  local mode = MODES[p.mode]
  if not mode then
    return nil, ("%s has mode %s, which is not supported)"):format(where, tostring(p.mode))
  end
  if p.mode == "External" then
    if not nonempty(p.process_command) then return nil, where .. " lacks process_command)" end
    return cached.new{source = where .. ")", fetch = process.fetcher(p.process_command),
      code = "CredentialsError", new_error = ctx.new_error, logger = ctx.logger}
  end
  local c = mode(p)
  if p.mode == "ChainableRamRoleArn" then
    if seen[name] then return nil, where .. ": source_profile loops back to it)", true end
    seen[name] = true
    if not nonempty(p.source_profile) then return nil, where .. " lacks source_profile)" end
    local src, why, bad = provider(conf, path, p.source_profile, ctx, seen)
    if not src then return nil, why, bad end
    c.source = src
  end
  local built, why, bad = types.build(c, where, ctx)
  if not built then return nil, why .. ")", bad end
  built.source = where .. ")"
  return built
end

--- The CLI profile step of the chain.
-- @tparam table ctx `home`, `profile`, `logger`, and `types.build`'s context
-- @treturn ?table provider
-- @treturn ?string note
-- @treturn ?boolean unusable
function M.step(ctx)
  if os.getenv("ALIBABA_CLOUD_CLI_PROFILE_DISABLED") == "true" then
    return nil, "Alibaba Cloud CLI config (disabled by ALIBABA_CLOUD_CLI_PROFILE_DISABLED)"
  end
  local conf, path = M.load(ctx)
  if not conf then return nil, path end
  return provider(conf, path, M.name(conf, ctx), ctx, {})
end

--- The region of the profile in use (its `region_id`), for the region rule.
-- @tparam table ctx as for `step`
-- @treturn ?string
-- @treturn ?string where it was found ("profile 'NAME' of PATH"), for errors about it
function M.region(ctx)
  if os.getenv("ALIBABA_CLOUD_CLI_PROFILE_DISABLED") == "true" then return nil end
  local conf, path = M.load{home = ctx.home}
  if not conf then return nil end
  local name = M.name(conf, ctx)
  local p = find(conf, name)
  local region = p and s(p.region_id)
  if not region then return nil end
  return region, ("profile '%s' of %s"):format(name, path)
end

return M
