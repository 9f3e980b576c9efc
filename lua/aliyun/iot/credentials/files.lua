--- The credentials files: bounded reads of regular files, the once-per-file permission
-- warning, INI parsing and the checks every provider shares on the strings it hands on.
-- File contents are never quoted in a message (they hold secrets).
-- @module aliyun.iot.credentials.files

local M = {}

--- True for a non-empty string.
-- @param v
-- @treturn boolean
function M.nonempty(v) return type(v) == "string" and v ~= "" end

--- True when a value cannot travel in a header or a signed query (NUL, CR or LF): an
-- AccessKeyId or SecurityToken holding one is refused rather than sent broken or injected.
-- @param v
-- @treturn boolean
function M.unsendable(v) return type(v) == "string" and v:find("[%z\r\n]") ~= nil end

--- An environment variable, nil when unset or empty.
-- @tparam string name
-- @treturn ?string
function M.env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

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

-- The largest credentials, config or token file read: a real one is a few kilobytes.
local MAX_FILE_BYTES = 1048576

--- The text of a regular file (symlinks followed), at most 1 MiB; nil and a reason for
-- anything else (missing, a device such as /dev/zero, a FIFO, too large), so that a bad
-- path never hangs the process or exhausts its memory.
-- @tparam string path
-- @treturn ?string text
-- @treturn ?string why not
function M.read(path)
  return require("aliyun.iot.core").read_file(path, MAX_FILE_BYTES)
end

local checked_modes = {}

--- Warns once per file and process when group or others may read it (the file a symlink
-- points to, as it is read). GNU stat first, then BSD stat; when neither answers, nothing
-- is said.
-- @tparam string path
-- @tparam ?function logger `logger(level, message)`
function M.check_mode(path, logger)
  if not logger or checked_modes[path] then return end
  checked_modes[path] = true
  local q = "'" .. path:gsub("'", "'\\''") .. "'"
  -- -L: the mode of the file read (a dotfiles manager links it), not 777 of the link
  local p = io.popen("stat -L -c %a " .. q .. " 2>/dev/null || stat -L -f %Lp " .. q
    .. " 2>/dev/null")
  if not p then return end
  local out = p:read("*a") or ""
  p:close()
  local mode = tonumber(out:match("^%s*([0-7]+)%s*$") or "", 8)
  if mode and mode % 64 ~= 0 then
    logger("warn", ("credentials file %s has mode %o: readable by group or others; "
      .. "restrict it with chmod 600"):format(path, mode))
  end
end

--- A provider that always hands out the same credentials.
-- @tparam string source where they came from (no secret)
-- @tparam string id
-- @tparam string secret
-- @tparam ?string token
-- @treturn table provider `{source=, get=}`
function M.static(source, id, secret, token)
  local creds = {access_key_id = id, access_key_secret = secret, security_token = token}
  return {source = source, get = function() return creds end}
end

return M
