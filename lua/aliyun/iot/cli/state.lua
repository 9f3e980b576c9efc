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
  if not ok then error(rec, 0) end -- not a verdict on the file: an interrupt, memory
  if type(rec) == "table" and rec.event == "job" then return rec end
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

-- The folder TMPDIR names (/tmp without it).
local function tmpdir()
  local dir = os.getenv("TMPDIR")
  if not dir or dir == "" then dir = "/tmp" end
  return dir
end

-- The journal of a register run without --state: a new file in TMPDIR. No journal, no job:
-- a TMPDIR that is not a folder is refused before anything is sent.
function M.temp()
  local dir = tmpdir()
  if core().file_kind(dir, true) ~= "folder" then
    local_error("cannot keep the job's journal: TMPDIR folder %s does not exist or is not " ..
      "a folder; set TMPDIR to a writable folder or give --state FILE", dir)
  end
  local tag = require("aliyun.iot.cli.output").random_tag()
  return ("%s/aliyun-iot-%s.state"):format(dir:gsub("/+$", ""), tag), dir
end

-- A retire's journal given to 'resume' (which finishes register and resume jobs only):
-- refused (exit 2) with the command that finishes it. Nothing when it is not one.
local function retire_journal(state)
  local records = require("aliyun.iot.fleet.retire_journal").read(state)
  if not records then return end
  local q, p = args.shell_quote, require("aliyun.iot.errors").printable
  local report
  for i = #records, 2, -1 do
    if records[i].event == "report" then report = records[i].path break end
  end
  local_error("%s is a retire's journal: run the same '%s' again to finish it%s", state,
    ("aliyun-iot retire --product-key %s --names-file NAMES-FILE%s --state %s")
    :format(q(p(records[1].ProductKey)), report and " --report " .. q(p(report)) or "", q(state)),
    -- apply --retire-unlisted keeps its retire's journal at FILE.retire
    state:find("%.retire$") and " (or, if it is the FILE.retire of an 'apply " ..
      "--retire-unlisted --state FILE', that apply again)" or "")
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
    retire_journal(state)
    local_error("state file %s is not a journal to resume: %s", state,
      tostring(jerr and jerr.message or jerr))
  end
  local job = records[1]
  if type(job.apply) == "table" then
    -- resume would finish its creation step only and say done: the apply's nicknames,
    -- tags and groups are apply's to finish (it resumes the creation itself)
    local q, p = args.shell_quote, require("aliyun.iot.errors").printable
    local_error("state file %s is the journal of an apply, which resume cannot finish: run " ..
      "the apply again, '%s'", state, ("aliyun-iot apply --product-key %s --manifest %s --state %s")
      :format(q(p(job.ProductKey)), job.apply.manifest and q(p(job.apply.manifest)) or "MANIFEST",
              q(state)))
  end
  return job
end

-- The options 'resume' takes from the journal's job record where the user gave none:
-- the endpoint, region and instance the job lives at, each on its own (journals written
-- before targets were recorded give none: the user's options and the defaults apply). An
-- option the user gave is kept, and the library refuses it if it is not the journal's
-- (TargetMismatch, exit 2, nothing sent).
function M.journal_target(opts, job)
  if job.endpoint == nil then return end
  opts.endpoint = opts.endpoint or job.endpoint
  opts.region = opts.region or job.RegionId
  opts.iot_instance_id = opts.iot_instance_id or job.IotInstanceId
end

-- The name `temp` gives a journal: aliyun-iot-<32 hex digits>.state.
local TEMP_NAME = "^aliyun%-iot%-" .. ("%x"):rep(32) .. "%.state$"

-- The identity of the file at `state` when it is a journal a register run made in TMPDIR
-- because it was given no --state (named as `temp` names them, in TMPDIR): removed once
-- a resume completes its job, as the run itself would have. nil for any other path.
function M.temp_identity(state)
  local dir, base = state:match("^(.*)/([^/]*)$")
  if not dir then dir, base = ".", state end
  if not base:find(TEMP_NAME) then return nil end
  -- the same folder as TMPDIR, however each is spelled (compared by device and inode)
  local kind, here = core().file_kind(dir == "" and "/" or dir, true)
  local tkind, there = core().file_kind(tmpdir(), true)
  if kind ~= "folder" or tkind ~= "folder" or here ~= there then return nil end
  local file, id = core().file_kind(state)
  return file == "file" and id or nil
end

-- Removes the journal `temp_identity` named, if the path still holds that same file.
function M.remove_temp(state, id)
  local kind, now = core().file_kind(state)
  if id and kind == "file" and now == id then os.remove(state) end
end


return M
