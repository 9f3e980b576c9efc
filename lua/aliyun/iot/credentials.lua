--- Where a client's AccessKey comes from.
-- Explicit options win; then a user `credentials` function (refreshed before it expires, so
-- STS credentials outlive a long job) or a credentials table by the official type names
-- (`aliyun.iot.credentials.types`); then the default chain the official SDKs walk
-- (`aliyun.iot.credentials.chain`, docs/wire.md §8): environment, OIDC / RRSA, the Alibaba
-- Cloud CLI profile, the INI credentials file, the ECS RAM role, a credentials URI.
--
-- Secrets live only in closures of the providers and in the tables `get` returns; no error
-- or log line made here contains one (file contents and answers are never quoted).
--
-- Blocking: resolving reads files with `io.open` and, for each credentials file it opens,
-- runs `stat` once per process through `io.popen` to check its permissions; the chain
-- fetches the first credentials of a provider that fetches (STS, instance metadata, a
-- URI) with libcurl. That happens when a client is created (under OpenResty preferably in
-- `init_by_lua` or once per worker, not per request); later refreshes happen once per
-- expiry, one at a time.
-- @module aliyun.iot.credentials

local dates = require "aliyun.iot.dates"
local errors = require "aliyun.iot.errors"
local files = require "aliyun.iot.credentials.files"
local cached = require "aliyun.iot.credentials.cached"
local types = require "aliyun.iot.credentials.types"
local chain = require "aliyun.iot.credentials.chain"
local profile = require "aliyun.iot.credentials.profile"

local M = {}

--- Seconds before `expiration` at which a user function's credentials are fetched again
-- (the GO SDK refreshes ECS RAM role credentials 180 s ahead, docs/wire.md §8).
M.REFRESH_MARGIN = 180

--- The region used when none is given anywhere.
M.DEFAULT_REGION = "cn-shanghai"

local PlainError = {__name = "aliyun.iot.Error"}
function PlainError.__tostring(e) return tostring(e.code) .. ": " .. tostring(e.message) end

local function plain_error(fields) return setmetatable(fields, PlainError) end

local nonempty, unsendable = files.nonempty, files.unsendable

--- Parses an ISO-8601 date-time (`2026-11-29T20:00:00Z`, fractions and `±hh:mm` offsets
-- allowed; no offset is read as UTC) into epoch seconds (`aliyun.iot.dates.iso8601`).
-- @function parse_time
-- @tparam string s
-- @treturn number|nil epoch seconds, nil when `s` is not such a date-time
M.parse_time = dates.iso8601

--- Reads an INI text (`aliyun.iot.credentials.files.parse_ini`).
-- @function parse_ini
-- @tparam string text
-- @treturn table `{section = {key = value}}`
M.parse_ini = files.parse_ini

-- The credentials a user function returned, checked; nil and why not.
local function function_fetch(fn)
  return function()
    local ok, c, msg = pcall(fn)
    if not ok and errors.signal(c) then error(c, 0) end -- a signal stops the job
    if not ok or c == nil then
      return nil, "the credentials function failed: " .. tostring(not ok and c or msg)
    end
    if type(c) ~= "table" or not (nonempty(c.access_key_id) and nonempty(c.access_key_secret)) then
      return nil, "the credentials function did not return access_key_id and access_key_secret"
    end
    if c.security_token ~= nil and not nonempty(c.security_token) then
      return nil, "the credentials function returned a security_token that is not a string"
    end
    if unsendable(c.access_key_id) or unsendable(c.security_token) then
      return nil, "the credentials function returned an access_key_id or security_token "
        .. "holding NUL, CR or LF"
    end
    local exp = c.expiration
    if type(exp) == "string" then exp = M.parse_time(exp) end
    if c.expiration ~= nil and type(exp) ~= "number" then
      return nil, "the credentials function returned an expiration that is neither epoch "
        .. "seconds nor an ISO-8601 date-time"
    end
    return {access_key_id = c.access_key_id, access_key_secret = c.access_key_secret,
            security_token = c.security_token}, exp
  end
end

-- What the providers need besides their own fields.
local function context(opts, logger, new_error)
  local home = files.env("HOME")
  return {home = home, profile = opts.profile or files.env("ALIBABA_CLOUD_PROFILE"),
          profile_option = opts.profile ~= nil,
          logger = logger, new_error = new_error, sts_endpoint = opts.sts_endpoint,
          metadata_endpoint = opts.metadata_endpoint, proxy = opts.proxy,
          shared_dict = opts.credentials_shared_dict}
end

local function check_types(opts, level)
  assert(type(opts) == "table", "credentials.resolve: opts must be a table")
  for _, k in ipairs{"access_key_id", "access_key_secret", "security_token", "profile",
                     "sts_endpoint", "metadata_endpoint", "credentials_shared_dict"} do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then
      error(("option %s must be a string, got %s"):format(k, type(opts[k])), level + 1)
    end
  end
  local c = opts.credentials
  if c ~= nil and type(c) ~= "function" then types.check(c, level + 1) end
end

-- Explicit keys, or nil when none are given.
local function explicit(opts, new_error)
  if opts.credentials and (opts.access_key_id ~= nil or opts.access_key_secret ~= nil
      or opts.security_token ~= nil) then
    -- which one would be used is a guess the caller should not have to make
    return nil, new_error{code = "InvalidCredentials",
      message = "give either credentials or access_key_id/access_key_secret, not both"}
  end
  if opts.access_key_id ~= nil or opts.access_key_secret ~= nil then
    if unsendable(opts.access_key_id) or unsendable(opts.security_token) then
      return nil, new_error{code = "InvalidCredentials",
        message = "access_key_id and security_token must not hold NUL, CR or LF"}
    end
    if not (nonempty(opts.access_key_id) and nonempty(opts.access_key_secret)) then
      return nil, new_error{code = "InvalidCredentials",
        message = "access_key_id and access_key_secret must be given together, non-empty"}
    end
    return files.static("options", opts.access_key_id, opts.access_key_secret,
      nonempty(opts.security_token) and opts.security_token or nil)
  elseif opts.security_token ~= nil then
    return nil, new_error{code = "InvalidCredentials",
      message = "security_token needs access_key_id and access_key_secret"}
  end
end

-- The provider of the `credentials` option, function or table.
local function from_option(c, ctx)
  if type(c) == "function" then
    return cached.new{source = "credentials function", fetch = function_fetch(c),
      code = "InvalidCredentials", new_error = ctx.new_error, logger = ctx.logger,
      margin = function() return M.REFRESH_MARGIN end}
  end
  local p, why = types.build(c, ("credentials option (type %s)"):format(c.type), ctx)
  if not p then return nil, ctx.new_error{code = "InvalidCredentials", message = why} end
  return p
end

--- Chooses where credentials come from.
-- @tparam table opts client options; reads `access_key_id`, `access_key_secret`,
--   `security_token` (strings), `credentials`, `profile` (the CLI or INI profile, else
--   `ALIBABA_CLOUD_PROFILE`), `sts_endpoint`, `metadata_endpoint`, `proxy` and
--   `credentials_shared_dict` (OpenResty: the workers share fetched credentials).
--   `credentials` is a function returning `{access_key_id=, access_key_secret=,
--   security_token=, expiration=}` (`expiration` in epoch seconds or an ISO-8601 string;
--   called on the first `get` and again from `REFRESH_MARGIN` seconds before
--   `expiration`; without `expiration` the first result is kept for the provider's life),
--   or a table `{type = name, ...}` by the official type names: `access_key`
--   (`access_key_id`, `access_key_secret`), `sts` (those and `security_token`),
--   `ram_role_arn` (a key pair, `role_arn`, optional `role_session_name`,
--   `duration_seconds` [s, 900..43200, 3600], `policy`, `external_id`, `sts_region`,
--   `sts_endpoint`), `ecs_ram_role` (optional `role_name`, `metadata_endpoint`,
--   `disable_imds_v1`), `oidc_role_arn` (`role_arn`, `oidc_provider_arn`,
--   `oidc_token_file_path`, optional `role_session_name`, `duration_seconds`, `policy`),
--   `credentials_uri` (`credentials_uri`). Explicit keys and `credentials` together are
--   refused (`InvalidCredentials`); without either, the default chain is walked
--   (`aliyun.iot.credentials.chain`).
-- @tparam[opt] function logger `logger(level, message)`; gets a `"warn"` for a credentials
--   file readable by group or others, and for a failed refresh that keeps unexpired
--   credentials, and a `"debug"` line naming the source chosen
-- @tparam[opt] function new_error `new_error(fields) -> err` (`errors.new`); by default a
--   table `{code=, message=}` with a `__tostring`
-- @treturn table provider `{source = string, name = chain step or nil, get = function}`:
--   `provider:get() -> {access_key_id=, access_key_secret=, security_token=|nil} | nil, err`
--   (`err.code` `"InvalidCredentials"` when a function fails or returns no keys,
--   `"CredentialsError"` when STS, the metadata service or a URI fails). The returned
--   table must not be modified.
-- @return or nil, err with `err.code` `"NoCredentials"` (nothing configured; the message
--   lists every place looked at and why it did not serve), `"InvalidCredentials"`
--   (incomplete or unusable keys) or `"CredentialsError"` (a configured provider of the
--   chain failed; `err.provider` names it)
-- @raise when `opts` is not a table or an option has the wrong type
function M.resolve(opts, logger, new_error)
  check_types(opts, 2)
  new_error = new_error or plain_error
  local provider, err = explicit(opts, new_error)
  if err then return nil, err end
  local ctx = context(opts, logger, new_error)
  if not provider and opts.credentials then
    provider, err = from_option(opts.credentials, ctx)
    if not provider then return nil, err end
  elseif not provider then
    provider, err = chain.walk(ctx, {"options access_key_id/access_key_secret/credentials "
      .. "(not given)"})
    if not provider then return nil, err end
  end
  if logger then logger("debug", "credentials from " .. provider.source) end
  return provider
end

--- Which provider of the default chain answers, without a secret: the chain is walked as
-- `iot.new` walks it without credentials options.
-- @tparam[opt] table opts `profile`, `sts_endpoint`, `metadata_endpoint`, `proxy`
-- @treturn ?table `{provider = step name ("environment", "oidc", "cli_profile", "ini",
--   "ecs_ram_role", "credentials_uri"), source = where, tried = {notes on the providers
--   skipped before it}}`
-- @return or nil, err as `resolve`
function M.chain(opts)
  opts = opts or {}
  check_types(opts, 2)
  local p, err, tried = chain.walk(context(opts, nil, plain_error))
  if not p then return nil, err end
  return {provider = p.name, source = p.source, tried = tried}
end

--- The region: `region_id` option, else `ALIBABA_CLOUD_REGION_ID`, else the CLI profile's
-- `region_id`, else `DEFAULT_REGION`.
-- @tparam table opts `region_id`, `profile`
-- @treturn string
-- @treturn string where it came from (the option, the variable, the profile, the default),
--   so that an error about it names what to change
function M.region(opts)
  if opts.region_id then return opts.region_id, "the region_id option" end
  local env = files.env("ALIBABA_CLOUD_REGION_ID")
  if env then return env, "ALIBABA_CLOUD_REGION_ID" end
  local region, where = profile.region(context(opts))
  if region then return region, where end
  return M.DEFAULT_REGION, "the default"
end

return M
