--- The INI credentials file (docs/wire.md §8): `ALIBABA_CLOUD_CREDENTIALS_FILE`, else
-- `~/.alibabacloud/credentials`, else `~/.alibabacloud/credentials.ini`; section
-- `ALIBABA_CLOUD_PROFILE` or `default`, skipped when it says `enable = false`; types
-- access_key, ecs_ram_role, ram_role_arn and oidc_role_arn.
-- @module aliyun.iot.credentials.ini

local files = require "aliyun.iot.credentials.files"
local types = require "aliyun.iot.credentials.types"

local M = {}

-- The keys each INI type reads, as the credentials-table field they fill.
local KEYS = {
  access_key = {"access_key_id", "access_key_secret"},
  ecs_ram_role = {"role_name"},
  ram_role_arn = {"access_key_id", "access_key_secret", "role_arn", "role_session_name",
                  "policy"},
  oidc_role_arn = {"role_arn", "oidc_provider_arn", "oidc_token_file_path",
                   "role_session_name"},
}

local function path_of(ctx)
  local path = files.env("ALIBABA_CLOUD_CREDENTIALS_FILE")
  if path then return path, files.read(path) end
  if not ctx.home then return nil end
  local first = ctx.home .. "/.alibabacloud/credentials"
  local text = files.read(first)
  if text then return first, text end
  local second = first .. ".ini"
  text = files.read(second)
  if text then return second, text end
  return first
end

--- The INI step of the chain.
-- @tparam table ctx `home`, `profile`, `logger`, and `types.build`'s context
-- @treturn ?table provider
-- @treturn ?string note
-- @treturn ?boolean unusable
function M.step(ctx)
  local path, text = path_of(ctx)
  if not path then return nil, "credentials file (HOME not set)" end
  local where = "credentials file " .. path
  if not text then return nil, where .. " (not found)" end
  files.check_mode(path, ctx.logger)
  local name = ctx.profile or "default"
  local sect = files.parse_ini(text)[name]
  if not sect then return nil, ("%s (no section [%s])"):format(where, name) end
  local what = ("%s (section [%s]"):format(where, name)
  if sect.enable == "false" then return nil, what .. " has enable = false)" end
  local keys = KEYS[sect.type]
  if not keys then
    return nil, ("%s has type %s, which is not supported)"):format(what, tostring(sect.type))
  end
  local c = {type = sect.type}
  for _, k in ipairs(keys) do
    if files.nonempty(sect[k]) then c[k] = sect[k] end
  end
  if c.role_arn == nil and (c.type == "ram_role_arn" or c.type == "oidc_role_arn") then
    c.role_arn = ""
  end
  local p, why, bad = types.build(c, what, ctx)
  if not p then return nil, why .. ")", bad end
  p.source = what .. ")"
  return p
end

return M
