--- The journal path of `register` and `resume`: refused unless it is what the job needs,
-- before any request.
-- @module aliyun.iot.cli.state

local args = require "aliyun.iot.cli.args"

local local_error = args.local_error
local function core() return require "aliyun.iot.core" end

local M = {}

local HEAD_MAX = 65536 -- bytes of an existing --state read to say what it holds

-- The first line of the file at `path` when it is a journal's `job` record read whole
-- within HEAD_MAX bytes, decoded; nil otherwise (never more than HEAD_MAX bytes read).
local function job_record(path)
  local fh = io.open(path, "rb")
  if not fh then return nil end
  local head = fh:read(HEAD_MAX) or ""
  fh:close()
  local line = head:match("^([^\n]*)\n")
  local ok, rec = pcall(core().json_decode, line or "")
  if ok and type(rec) == "table" and rec.event == "job" then return rec end
  if not line and head:sub(1, 1) == "{" and head:find('"event":"job"', 1, true) then
    return {} -- a job record longer than we read (a named job's names): a journal
  end
  return nil
end

-- True when the journal's last line (read from at most HEAD_MAX bytes at its end) is the
-- `done` record a finished job ends with.
local function finished(path)
  local fh = io.open(path, "rb")
  if not fh then return false end
  local size = fh:seek("end") or 0
  fh:seek("set", size > HEAD_MAX and size - HEAD_MAX or 0)
  local tail = fh:read(HEAD_MAX) or ""
  fh:close()
  local last = tail:match("([^\n]*)\n?$") or ""
  return last:sub(1, 1) == "{" and last:find('"event":"done"', 1, true) ~= nil
end

-- Refuses a --state path for 'register' unless nothing is there (exit 2, before any
-- request, the path untouched): a journal is a new file the job creates. An existing file
-- is never read whole (it may be gigabytes): its kind is enough, and its first line, read
-- bounded, says whether it is a journal.
function M.check_new(state, opts)
  local kind = core().file_kind(state)
  if kind == "none" then return end
  if kind == "folder" then local_error("state file %s is a folder, not a journal", state) end
  if kind ~= "file" then
    local_error("state file %s exists and is not a regular file (%s): --state takes the " ..
      "path of a new file", state, kind == "link" and "a symlink" or "a device, FIFO or socket")
  end
  if job_record(state) then
    local resume = require("aliyun.iot.cli.report").resume_command(opts or {format = "csv"}, state)
    if finished(state) then
      local_error("state file %s holds a finished job (its devices are in it: '%s' prints " ..
        "them); choose a new file for a new job", state, resume)
    end
    local_error("state file %s exists: finish its job with '%s' or choose a new file",
      state, resume)
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

-- Checks the --state of 'resume' before any request (exit 2 with the reason); returns
-- the journal's `job` record.
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
  return records[1]
end


return M
