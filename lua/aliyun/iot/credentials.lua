--- Where a client's AccessKey comes from.
-- Explicit options win; then a user `credentials` function (refreshed before it expires, so
-- STS credentials outlive a long job); then the chain the official SDKs walk (reference
-- §8, GO `sdk/auth/credentials/default_credentials_provider.go`): environment, Alibaba Cloud
-- CLI config, credentials INI file. The ECS RAM role, OIDC and credentials-URI steps of
-- that chain are not implemented.
--
-- Secrets live only in closures of the provider and in the tables `get` returns; no error
-- or log line made here contains one (file contents are never quoted).
--
-- Blocking: resolving reads files with `io.open` and, for each credentials file it opens,
-- runs `stat` once per process through `io.popen` to check its permissions. That happens
-- when a client is created (under OpenResty preferably in `init_by_lua` or once per worker,
-- not per request); `provider:get` itself never touches the filesystem.
-- @module aliyun.iot.credentials

local cjson = require "cjson.safe"
local dates = require "aliyun.iot.dates"

local M = {}

--- Seconds before `expiration` at which a user function's credentials are fetched again
-- (the GO SDK refreshes ECS RAM role credentials 180 s ahead, docs/wire.md §8).
M.REFRESH_MARGIN = 180

local PlainError = {__name = "aliyun.iot.Error"}
function PlainError.__tostring(e) return tostring(e.code) .. ": " .. tostring(e.message) end

local function plain_error(fields) return setmetatable(fields, PlainError) end

local function nonempty(v) return type(v) == "string" and v ~= "" end

--- Parses an ISO-8601 date-time (`2026-11-29T20:00:00Z`, fractions and `±hh:mm` offsets
-- allowed; no offset is read as UTC) into epoch seconds (`aliyun.iot.dates.iso8601`).
-- @function parse_time
-- @tparam string s
-- @treturn number|nil epoch seconds, nil when `s` is not such a date-time
M.parse_time = dates.iso8601

-- What a header or query value cannot hold: an AccessKeyId or SecurityToken with these
-- would be sent as a broken (or injected) header, so it is refused instead.
local function unsendable(v) return type(v) == "string" and v:find("[%z\r\n]") ~= nil end

--- Reads an INI text: `[section]` headers, `key = value` lines, whole-line `#`/`;` comments;
-- whitespace around names and values is trimmed.
-- @tparam string text
-- @treturn table `{section = {key = value}}` (lines before any header are ignored)
function M.parse_ini(text)
  local sections, current = {}, nil
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line:match("^%s*(.-)%s*$")
    local name = line:match("^%[%s*(.-)%s*%]$")
    if name then
      current = sections[name] or {}
      sections[name] = current
    elseif current and line ~= "" and not line:match("^[#;]") then
      local k, v = line:match("^(.-)%s*=%s*(.-)$")
      -- a quoted value ("x" or 'x') means the text between the quotes
      v = v and (v:match('^"(.*)"$') or v:match("^'(.*)'$") or v)
      if k and k ~= "" then current[k] = v end
    end
  end
  return sections
end

-- The largest credentials or config file read: a real one is a few hundred bytes.
local MAX_FILE_BYTES = 1048576

-- The text of a regular file (symlinks followed), at most MAX_FILE_BYTES; nil and a
-- reason for anything else (missing, a device such as /dev/zero, a FIFO, too large), so
-- that a bad path never hangs the process or exhausts its memory.
local function read_file(path)
  return require("aliyun.iot.core").read_file(path, MAX_FILE_BYTES)
end

local checked_modes = {}

-- Warns once per file and process when group or others may read it. GNU stat first, then
-- BSD stat; when neither answers, nothing is said.
local function check_mode(path, logger)
  if not logger or checked_modes[path] then return end
  checked_modes[path] = true
  local q = "'" .. path:gsub("'", "'\\''") .. "'"
  local p = io.popen("stat -c %a " .. q .. " 2>/dev/null || stat -f %Lp " .. q .. " 2>/dev/null")
  if not p then return end
  local out = p:read("*a") or ""
  p:close()
  local mode = tonumber(out:match("^%s*([0-7]+)%s*$") or "", 8)
  if mode and mode % 64 ~= 0 then
    logger("warn", ("credentials file %s has mode %o: readable by group or others; "
      .. "restrict it with chmod 600"):format(path, mode))
  end
end

local function static_provider(source, id, secret, token)
  local creds = {access_key_id = id, access_key_secret = secret, security_token = token}
  return {source = source, get = function() return creds end}
end

-- Each step returns a provider, or nil and a note on what it saw (for NoCredentials).
local function from_env()
  local id = os.getenv("ALIBABA_CLOUD_ACCESS_KEY_ID")
  local secret = os.getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
  local where = "environment ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET"
  if nonempty(id) and nonempty(secret) then
    local token = os.getenv("ALIBABA_CLOUD_SECURITY_TOKEN")
    if unsendable(id) or unsendable(token) then
      return nil, where .. " (ALIBABA_CLOUD_ACCESS_KEY_ID or ALIBABA_CLOUD_SECURITY_TOKEN "
        .. "holds NUL, CR or LF)", true
    end
    return static_provider("environment", id, secret, nonempty(token) and token or nil)
  elseif nonempty(id) then
    return nil, where .. " (ALIBABA_CLOUD_ACCESS_KEY_SECRET not set)", true
  elseif nonempty(secret) then
    return nil, where .. " (ALIBABA_CLOUD_ACCESS_KEY_ID not set)", true
  end
  return nil, where .. " (not set)"
end

local function from_cli(home, profile_env, logger)
  if os.getenv("ALIBABA_CLOUD_CLI_PROFILE_DISABLED") == "true" then
    return nil, "Alibaba Cloud CLI config (disabled by ALIBABA_CLOUD_CLI_PROFILE_DISABLED)"
  end
  if not home then return nil, "Alibaba Cloud CLI config (HOME not set)" end
  local path = home .. "/.aliyun/config.json"
  local where = "Alibaba Cloud CLI config " .. path
  local text = read_file(path)
  if not text then return nil, where .. " (not found)" end
  check_mode(path, logger)
  local conf, why = cjson.decode(text)
  if conf == nil then
    -- cjson says where ("... at character N") and never quotes the text, so no secret
    return nil, ("%s (not valid JSON: %s)"):format(where, tostring(why))
  end
  if type(conf) ~= "table" or type(conf.profiles) ~= "table" then
    return nil, where .. " (not a CLI config: no profiles)"
  end
  local name = profile_env
    or (nonempty(conf.current) and conf.current) or "default"
  for _, p in ipairs(conf.profiles) do
    if type(p) == "table" and p.name == name then
      local what = ("%s (profile '%s'"):format(where, name)
      if p.mode ~= "AK" and p.mode ~= "StsToken" then
        return nil, ("%s has mode %s; only AK and StsToken are supported)")
          :format(what, tostring(p.mode))
      end
      if not (nonempty(p.access_key_id) and nonempty(p.access_key_secret)) then
        return nil, what .. " lacks access_key_id or access_key_secret)"
      end
      local token
      if p.mode == "StsToken" then
        if not nonempty(p.sts_token) then return nil, what .. " lacks sts_token)" end
        token = p.sts_token
      end
      if unsendable(p.access_key_id) or unsendable(token) then
        return nil, what .. " has an access_key_id or sts_token holding NUL, CR or LF)", true
      end
      return static_provider(what .. ")", p.access_key_id, p.access_key_secret, token)
    end
  end
  return nil, ("%s (no profile '%s')"):format(where, name)
end

local function from_ini(home, profile_env, logger)
  local path = os.getenv("ALIBABA_CLOUD_CREDENTIALS_FILE")
  if not nonempty(path) then
    if not home then return nil, "credentials file (HOME not set)" end
    path = home .. "/.alibabacloud/credentials"
  end
  local where = "credentials file " .. path
  local text = read_file(path)
  if not text then return nil, where .. " (not found)" end
  check_mode(path, logger)
  local name = profile_env or "default"
  local s = M.parse_ini(text)[name]
  if not s then return nil, ("%s (no section [%s])"):format(where, name) end
  local what = ("%s (section [%s]"):format(where, name)
  if s.type ~= "access_key" then
    return nil, ("%s has type %s; only access_key is supported)"):format(what, tostring(s.type))
  end
  if not (nonempty(s.access_key_id) and nonempty(s.access_key_secret)) then
    return nil, what .. " lacks access_key_id or access_key_secret)"
  end
  if unsendable(s.access_key_id) then
    return nil, what .. " has an access_key_id holding NUL, CR or LF)", true
  end
  return static_provider(what .. ")", s.access_key_id, s.access_key_secret)
end

-- A provider over the user's function, cached until REFRESH_MARGIN before expiration.
local function function_provider(fn, logger, new_error)
  local cached, expires_at

  local function fetch()
    local ok, c, msg = pcall(fn)
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

  return {source = "credentials function", get = function()
    local now = os.time()
    if cached and (not expires_at or now < expires_at - M.REFRESH_MARGIN) then return cached end
    local creds, exp_or_msg = fetch()
    if not creds then
      -- A refresher failing inside the margin should not end a job early: the credentials
      -- in hand still work until they expire.
      if cached and now < expires_at then
        if logger then
          logger("warn", exp_or_msg .. "; keeping the current credentials until they expire")
        end
        return cached
      end
      return nil, new_error{code = "InvalidCredentials", message = exp_or_msg}
    end
    cached, expires_at = creds, exp_or_msg
    return cached
  end}
end

--- Chooses where credentials come from.
-- @tparam table opts client options; reads `access_key_id`, `access_key_secret`,
--   `security_token` (strings) and `credentials` (a function returning
--   `{access_key_id=, access_key_secret=, security_token=, expiration=}`, `expiration` in
--   epoch seconds or an ISO-8601 string; called on the first `get` and again from
--   `REFRESH_MARGIN` seconds before `expiration`; without `expiration` the first result is
--   kept for the provider's life). Explicit keys and a function together are refused
--   (`InvalidCredentials`); without either,
--   the environment, CLI config and credentials file are tried in that order.
-- @tparam[opt] function logger `logger(level, message)`; gets a `"warn"` for a credentials
--   file readable by group or others, and for a failed refresh that keeps unexpired
--   credentials, and a `"debug"` line naming the source chosen
-- @tparam[opt] function new_error `new_error(fields) -> err` (`errors.new`); by default a
--   table `{code=, message=}` with a `__tostring`
-- @treturn table provider `{source = string, get = function}`:
--   `provider:get() -> {access_key_id=, access_key_secret=, security_token=|nil} | nil, err`
--   (`err.code = "InvalidCredentials"` when the function fails or returns no keys). The
--   returned table must not be modified.
-- @return or nil, err with `err.code` `"NoCredentials"` (the message lists every place
--   looked at and why it did not serve) or `"InvalidCredentials"` (explicit keys incomplete)
-- @raise when `opts` is not a table or an option has the wrong type
function M.resolve(opts, logger, new_error)
  assert(type(opts) == "table", "credentials.resolve: opts must be a table")
  for _, k in ipairs{"access_key_id", "access_key_secret", "security_token"} do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then
      error(("option %s must be a string, got %s"):format(k, type(opts[k])), 2)
    end
  end
  if opts.credentials ~= nil and type(opts.credentials) ~= "function" then
    error("option credentials must be a function, got " .. type(opts.credentials), 2)
  end
  new_error = new_error or plain_error

  local provider, note
  if opts.credentials and (opts.access_key_id ~= nil or opts.access_key_secret ~= nil
      or opts.security_token ~= nil) then
    -- which one would be used is a guess the caller should not have to make
    return nil, new_error{code = "InvalidCredentials",
      message = "give either a credentials function or access_key_id/access_key_secret, not both"}
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
    provider = static_provider("options", opts.access_key_id, opts.access_key_secret,
      nonempty(opts.security_token) and opts.security_token or nil)
  elseif opts.security_token ~= nil then
    return nil, new_error{code = "InvalidCredentials",
      message = "security_token needs access_key_id and access_key_secret"}
  elseif opts.credentials then
    provider = function_provider(opts.credentials, logger, new_error)
  else
    local home = os.getenv("HOME")
    if home == "" then home = nil end
    local profile = os.getenv("ALIBABA_CLOUD_PROFILE")
    if profile == "" then profile = nil end
    local notes = {"options access_key_id/access_key_secret/credentials (not given)"}
    for _, step in ipairs{from_env, from_cli, from_ini} do
      local incomplete
      provider, note, incomplete = step(home, profile, logger)
      if provider then break end
      if incomplete then
        -- half a key pair (or an unsendable one) in the environment is a mistake to
        -- report, as the official SDKs do, not a reason to use another account's keys
        return nil, new_error{code = "InvalidCredentials", message = "unusable " .. note}
      end
      notes[#notes + 1] = note
    end
    if not provider then
      return nil, new_error{code = "NoCredentials",
        message = "no credentials found; looked at: " .. table.concat(notes, "; ")}
    end
  end
  if logger then logger("debug", "credentials from " .. provider.source) end
  return provider
end

return M
