--- The CLI profile mode External (docs/wire.md §8): `process_command` is run through the
-- shell, at most 60 s (with `timeout` where the system has it), with an empty standard
-- input and its standard error discarded, and its standard output is
-- JSON `{"mode": "AK" | "StsToken", "access_key_id", "access_key_secret", "sts_token",
-- "expiration"}`. The command comes from the user's own config file; its output is never
-- quoted in a message (it holds the secret).
-- @module aliyun.iot.credentials.process

local cjson = require("cjson.safe").new()
local dates = require "aliyun.iot.dates"
local files = require "aliyun.iot.credentials.files"

local M = {}

-- The official limit, and the most output read (a credentials object is a few hundred bytes).
local LIMIT, MAX_OUTPUT = 60, 65536

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Why a failed command's standard error is not in the message.
local HIDDEN = " (its standard error is not shown: it may hold secrets)"

-- The command's output, or nil and why. Its standard input is empty: ours may be the
-- names file (`--names-file -`), which it must not eat, or a terminal it would wait on.
-- Its standard error is discarded: a failing helper may print the keys it holds there.
local function run(command)
  local p = io.popen(("exec </dev/null 2>/dev/null; if command -v timeout >/dev/null; then "
    .. "exec timeout %d sh -c %s; else exec sh -c %s; fi"):format(LIMIT, quote(command),
    quote(command)))
  if not p then return nil, "could not be started" end
  local out = p:read(MAX_OUTPUT + 1) or ""
  local ok, how, code = p:close()
  -- before the status: closing the pipe on a flood kills the command with SIGPIPE
  if #out > MAX_OUTPUT then return nil, "printed more than 64 KiB" end
  -- Lua 5.1 and LuaJIT report no status: the output decides
  if ok == nil and how == "exit" then
    return nil, ("exited with status %d%s"):format(code, code == 124 and
      (" (timed out after %d s?)"):format(LIMIT) or HIDDEN)
  end
  if ok == nil and how == "signal" then return nil, ("was killed by signal %d"):format(code) end
  return out
end

--- A fetch running the command.
-- @tparam string command
-- @treturn function `fetch() -> creds, expires_at | nil, reason`
function M.fetcher(command)
  return function()
    local out, why = run(command)
    if not out then return nil, "process_command " .. why end
    local t = cjson.decode(out)
    if type(t) ~= "table" then return nil, "process_command did not print a JSON object" end
    if t.mode ~= "AK" and t.mode ~= "StsToken" then
      return nil, "process_command printed no mode AK or StsToken"
    end
    local id, secret, token = t.access_key_id, t.access_key_secret, t.sts_token
    if not (files.nonempty(id) and files.nonempty(secret))
        or (t.mode == "StsToken" and not files.nonempty(token)) then
      return nil, "process_command printed no access_key_id, access_key_secret (or sts_token)"
    end
    if files.unsendable(id) or files.unsendable(token) then
      return nil, "process_command printed an access_key_id or sts_token holding NUL, CR or LF"
    end
    local exp
    if t.expiration ~= nil then
      exp = type(t.expiration) == "number" and t.expiration or dates.iso8601(t.expiration)
      if not exp then return nil, "process_command printed an expiration that is not a date" end
    end
    return {access_key_id = id, access_key_secret = secret,
            security_token = t.mode == "StsToken" and token or nil}, exp
  end
end

return M
