--- Providers by the official credential type names (`access_key`, `sts`, `ram_role_arn`,
-- `ecs_ram_role`, `oidc_role_arn`, `credentials_uri`): the `iot.new{credentials = {type
-- = ...}}` form, and what the CLI profile modes and INI types turn into.
-- @module aliyun.iot.credentials.types

local files = require "aliyun.iot.credentials.files"
local cached = require "aliyun.iot.credentials.cached"
local sts = require "aliyun.iot.credentials.sts"
local ecs = require "aliyun.iot.credentials.ecs"
local uri = require "aliyun.iot.credentials.uri"
local shared = require "aliyun.iot.credentials.shared"

local M = {}

local nonempty, unsendable = files.nonempty, files.unsendable

-- The fields each type takes (anything else is misuse); `source` is a provider
-- (ram_role_arn with other source credentials: a chained profile).
local FIELDS = {
  access_key = {"access_key_id", "access_key_secret"},
  sts = {"access_key_id", "access_key_secret", "security_token"},
  ram_role_arn = {"access_key_id", "access_key_secret", "security_token", "role_arn",
                  "role_session_name", "duration_seconds", "policy", "external_id",
                  "sts_endpoint", "sts_region", "enable_vpc", "source"},
  ecs_ram_role = {"role_name", "metadata_endpoint", "disable_imds_v1"},
  oidc_role_arn = {"role_arn", "oidc_provider_arn", "oidc_token_file_path",
                   "role_session_name", "duration_seconds", "policy", "sts_endpoint",
                   "sts_region", "enable_vpc"},
  credentials_uri = {"credentials_uri"},
}

-- The Lua type of each field that is not a string.
local KINDS = {duration_seconds = "number", enable_vpc = "boolean", disable_imds_v1 = "boolean",
               source = "table"}

--- The type names taken.
M.NAMES = {}
for k in pairs(FIELDS) do M.NAMES[#M.NAMES + 1] = k end
table.sort(M.NAMES)

local function key_pair(c, where)
  if not (nonempty(c.access_key_id) and nonempty(c.access_key_secret)) then
    return nil, where .. " lacks access_key_id or access_key_secret"
  end
  if unsendable(c.access_key_id) or unsendable(c.security_token) then
    return nil, where .. " has an access_key_id or security token holding NUL, CR or LF", true
  end
  return files.static(where, c.access_key_id, c.access_key_secret,
    nonempty(c.security_token) and c.security_token or nil)
end

local BUILD = {}

function BUILD.access_key(c, where) return key_pair({access_key_id = c.access_key_id,
  access_key_secret = c.access_key_secret}, where) end

function BUILD.sts(c, where)
  if not nonempty(c.security_token) then return nil, where .. " lacks security_token" end
  return key_pair(c, where)
end

local function sts_options(c, ctx)
  return {role_arn = c.role_arn, role_session_name = c.role_session_name,
          duration_seconds = c.duration_seconds, policy = c.policy,
          external_id = c.external_id, oidc_provider_arn = c.oidc_provider_arn,
          oidc_token_file_path = c.oidc_token_file_path,
          sts_endpoint = c.sts_endpoint or ctx.sts_endpoint, sts_region = c.sts_region,
          enable_vpc = c.enable_vpc, proxy = ctx.proxy}
end

-- ALIBABA_CLOUD_ROLE_ARN and ALIBABA_CLOUD_ROLE_SESSION_NAME fill what a RAM role
-- configuration leaves out, as in the official SDKs.
local function with_role_env(c)
  if nonempty(c.role_arn) and c.role_session_name then return c end
  local t = {}
  for k, v in pairs(c) do t[k] = v end
  t.role_arn = nonempty(c.role_arn) and c.role_arn or files.env("ALIBABA_CLOUD_ROLE_ARN")
  t.role_session_name = c.role_session_name or files.env("ALIBABA_CLOUD_ROLE_SESSION_NAME")
  return t
end

function BUILD.ram_role_arn(c, where, ctx)
  c = with_role_env(c)
  local why = sts.problem(sts_options(c, ctx))
  if why then return nil, where .. ": " .. why end
  local source = c.source
  if not source then
    local err
    local unusable
    source, err, unusable = key_pair(c, where)
    if not source then return nil, err, unusable end
  end
  return sts.assume_role(sts_options(c, ctx), source)
end

function BUILD.oidc_role_arn(c, where, ctx)
  local why = sts.problem(sts_options(c, ctx))
  if why then return nil, where .. ": " .. why end
  if not (nonempty(c.oidc_provider_arn) and nonempty(c.oidc_token_file_path)) then
    return nil, where .. " lacks oidc_provider_arn or oidc_token_file_path"
  end
  return sts.assume_role_with_oidc(sts_options(c, ctx))
end

function BUILD.ecs_ram_role(c, where, ctx)
  if c.role_name ~= nil and not (nonempty(c.role_name) and c.role_name:find("^[%w%.@_%-]+$")) then
    return nil, where .. ": role_name must be letters, digits and . @ _ -"
  end
  return ecs.fetcher{role_name = c.role_name, disable_imds_v1 = c.disable_imds_v1,
                     metadata_endpoint = c.metadata_endpoint or ctx.metadata_endpoint}
end

function BUILD.credentials_uri(c, where, ctx)
  local why = uri.problem(c.credentials_uri)
  if why then return nil, where .. ": " .. why end
  return uri.fetcher(c.credentials_uri, ctx.proxy)
end

-- What identifies these credentials across workers: every field that changes what is
-- fetched (a narrower Policy, another ExternalId or endpoint, the source profile of a
-- chained role), never a secret; each length-prefixed so that no two differ only by
-- where a separator falls.
local function pack(...) return {n = select("#", ...), ...} end -- LuaJIT lacks table.pack

local function shared_key(c, ctx)
  local fields = pack(c.type, c.access_key_id,
    type(c.source) == "table" and c.source.source, c.role_arn, c.role_session_name,
    c.duration_seconds, c.policy, c.external_id, c.oidc_provider_arn, c.oidc_token_file_path,
    c.role_name, c.metadata_endpoint or ctx.metadata_endpoint, c.credentials_uri,
    c.sts_endpoint or ctx.sts_endpoint, c.sts_region, c.enable_vpc)
  local parts = {}
  for i = 1, fields.n do -- not ipairs: most fields are nil
    local v = fields[i] and tostring(fields[i]) or ""
    parts[i] = #v .. ":" .. v
  end
  return table.concat(parts, "|")
end

--- Raises when a credentials table is misused: not a table, an unknown type or field.
-- @param c
-- @tparam integer level
function M.check(c, level)
  if type(c) ~= "table" then error("credentials must be a function or a table", level + 1) end
  local fields = FIELDS[c.type]
  if not fields then
    error(("credentials type must be one of %s, got %s"):format(table.concat(M.NAMES, ", "),
      tostring(c.type)), level + 1)
  end
  local known = {type = true}
  for _, f in ipairs(fields) do known[f] = true end
  for k, v in pairs(c) do
    if not known[k] then
      error(("credentials of type %s take no field %s"):format(c.type, tostring(k)), level + 1)
    end
    local want = KINDS[k] or "string"
    if k ~= "type" and not want:find(type(v), 1, true) then
      error(("credentials field %s must be a %s, got %s"):format(k, want:gsub("|", " or "),
        type(v)), level + 1)
    end
  end
end

--- A provider for one credentials table.
-- @tparam table c `{type = name, ...fields}` (see `NAMES`)
-- @tparam string where how to name it in messages (no secret)
-- @tparam table ctx `logger`, `new_error`, `sts_endpoint`, `metadata_endpoint`, `proxy`,
--   `shared_dict` (OpenResty: a `lua_shared_dict` name; the workers share what is fetched,
--   `aliyun.iot.credentials.shared`)
-- @treturn ?table provider (`fetched = true` for those that fetch over the network)
-- @treturn ?string what is wrong with `c`
-- @treturn ?boolean true when `c` holds an unsendable key or token (not to be skipped)
function M.build(c, where, ctx)
  local p, why, unusable = BUILD[c.type](c, where, ctx)
  if type(p) ~= "function" then return p, why, unusable end
  if ctx.shared_dict then
    p = shared.wrap(shared.dict(ctx.shared_dict), shared_key(c, ctx), p, cached.margin)
  end
  return cached.new{source = where, fetch = p, code = "CredentialsError",
                    new_error = ctx.new_error, logger = ctx.logger}
end

return M
