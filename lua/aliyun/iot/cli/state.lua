--- The journal path of `register` and `resume`: refused unless it is what the job needs,
-- before any request.
-- @module aliyun.iot.cli.state

local args = require "aliyun.iot.cli.args"

local local_error, shell_quote = args.local_error, args.shell_quote
local function core() return require "aliyun.iot.core" end

local M = {}

-- Refuses a --state path for 'register' unless nothing is there (exit 2, before any
-- request, the path untouched): a journal is a new file the job creates.
function M.check_new(state)
  local kind = core().file_kind(state)
  if kind == "none" then return end
  if kind == "folder" then local_error("state file %s is a folder, not a journal", state) end
  if kind ~= "file" then
    local_error("state file %s exists and is not a regular file (%s): --state takes the " ..
      "path of a new file", state, kind == "link" and "a symlink" or "a device, FIFO or socket")
  end
  local journal = require "aliyun.iot.journal"
  local records = journal.read(state)
  if records and journal.finished(records) then
    local_error("state file %s holds a finished job (its devices are in it: 'aliyun-iot " ..
      "resume --state %s' prints them); choose a new file for a new job", state, shell_quote(state))
  elseif records then
    local_error("state file %s exists: finish its job with 'aliyun-iot resume --state %s' " ..
      "or choose a new file", state, shell_quote(state))
  end
  local_error("state file %s exists: --state takes the path of a new file (it was left " ..
    "as it is)", state)
end

-- The journal of a register run without --state: a new file in TMPDIR. No journal, no job:
-- a TMPDIR that is not a folder is refused before anything is sent.
function M.temp()
  local dir = os.getenv("TMPDIR")
  if not dir or dir == "" then dir = "/tmp" end
  if core().file_kind(dir, true) ~= "folder" then
    local_error("cannot keep the job's journal: TMPDIR folder %s does not exist or is not " ..
      "a folder; set TMPDIR to a writable folder or give --state FILE", dir)
  end
  local tag = require("aliyun.iot.cli.output").random_tag()
  return ("%s/aliyun-iot-%s.state"):format(dir:gsub("/+$", ""), tag), dir
end

-- Checks the --state of 'resume' before any request (exit 2 with the reason).
function M.check_resume(state)
  local kind = core().file_kind(state)
  if kind == "none" then local_error("cannot read state file %s: no such file", state) end
  if kind == "folder" then local_error("state file %s is a folder, not a journal", state) end
  if kind ~= "file" then
    local_error("state file %s is not a regular file: resume reads a journal", state)
  end
  -- read, not opened: opening locks the journal, and the job opens it again
  local records, jerr = require("aliyun.iot.journal").read(state)
  if not records then
    local_error("state file %s is not a journal to resume: %s", state,
      tostring(jerr and jerr.message or jerr))
  end
end


return M
