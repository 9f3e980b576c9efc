--- Retire's journal (`retire --state FILE`, `client:retire{journal=}`): an append-only file
-- of JSON lines that records a retire as it runs, so that a retire killed at any moment,
-- run again with the same journal, repeats no DeleteDevice that was answered and settles
-- one whose answer was lost by reading the devices (BatchQueryDeviceDetail) before any
-- write.
--
-- The file layer is the batch journal's (`core.journal_open`): a new regular file, mode
-- 0600, never through a symlink, locked for as long as the retire runs (two processes
-- never run one retire), each append written and fsync'ed before the call returns. A last
-- line cut short by a crash is cut off on open; any other bad line is refused as
-- `JournalError` "PATH:LINE: what is wrong", every field checked as user input is.
--
-- Events, in the order a retire writes them:
--
--   {"event":"retire","version":1,"ProductKey":..,"Names":[..],"undo":PATH,<target>}
--     (the target as `aliyun.iot.batch.target` writes it: endpoint, RegionId, ...; PATH
--     absolute, so that a run again from another folder finds it the same file)
--   {"event":"send","action":"DisableThing"|"DeleteDevice","Names":[..]}  (right before
--     the calls for these devices are sent)
--   {"event":"answered","action":..,"Names":[..]}  (the devices whose call was answered
--     with success, or `iot.device.NotExistedDevice`, or whose deletion a read settled)
--   {"event":"report","path":..,"id":"DEV:INODE","size":BYTES}  (the `--report` file a run
--     writes, right after the first line or the run's open: a run after a kill appends
--     only to the file the last such event names, as apply's journal has it,
--     `aliyun.iot.fleet.apply_journal.report_problem`)
--   {"event":"done"}  (the retire ended without error)
-- @module aliyun.iot.fleet.retire_journal

local core = require "aliyun.iot.core"
local validate = require "aliyun.iot.validate"
local errors = require "aliyun.iot.errors"
local cjson = require("cjson").new()

local M = {}

M.MAX_BYTES = 1073741824      -- the largest retire journal read
M.MAX_NAMES = 1000000         -- the most devices one retire journal holds

local function journal_error(message)
  return errors.new{code = "JournalError", message = message}
end

-- A file that is no retire's journal at all (another command's journal, any other file):
-- a wrong path, refused before any request like a bad value, not a damaged journal.
local function not_retire_journal(message)
  return errors.new{code = "InvalidParameter", parameter = "journal", message = message ..
    ": give the path of a new file, or the one of the stopped retire"}
end

local ACTIONS = {DisableThing = true, DeleteDevice = true}

-- Why `names` is not a list of DeviceNames (of the job's when `job` is given), or nil.
local function names_problem(names, job)
  local n = validate.list_length(names)
  if not n or n < 1 or n > M.MAX_NAMES then return "Names must be a list of 1 to 1000000 names" end
  for i = 1, n do
    local name = names[i]
    if type(name) ~= "string" or validate.device_name_problem(name) then
      return ("Names[%d] is not a DeviceName"):format(i)
    end
    if job and not job[name] then return ("Names[%d] is not one of the retire's devices"):format(i) end
  end
end

local function text(v) return type(v) == "string" and v ~= "" and not v:find("[%z\r\n]") end

-- Why the line's event is bad (`job`: the retire's names as a set, nil on line 1).
local function event_problem(rec, job)
  if type(rec) ~= "table" then return "is not a JSON object" end
  if not job then
    if rec.event ~= "retire" or rec.version ~= 1 then
      return "is not a retire journal's first line ({\"event\":\"retire\",\"version\":1,...})"
    end
    if validate.product_key_problem(rec.ProductKey) then return "has no valid ProductKey" end
    if not text(rec.undo) then return "has no undo path" end
    return names_problem(rec.Names)
  end
  if rec.event == "done" then return nil end
  if rec.event == "report" then
    if not text(rec.path) or type(rec.id) ~= "string" or not rec.id:find("^%d+:%d+$") or
       type(rec.size) ~= "number" or not (rec.size >= 0 and rec.size <= 2^53) or rec.size % 1 ~= 0 then
      return "is not a report event ({\"event\":\"report\",\"path\":..,\"id\":..,\"size\":..})"
    end
    return nil
  end
  if rec.event ~= "send" and rec.event ~= "answered" then
    return ("has an unknown event %s"):format(errors.printable(tostring(rec.event)))
  end
  if not ACTIONS[rec.action] then return "has no action DisableThing or DeleteDevice" end
  return names_problem(rec.Names, job)
end

-- The events of a journal's text, and whether the last line was torn.
local function parse(path, body)
  local records, n, job, torn = {}, 0, nil, false
  for line, nl in body:gmatch("([^\n]*)(\n?)") do
    if line == "" and nl == "" then break end
    n = n + 1
    local ok, rec = pcall(core.json_decode, line)
    if not ok then error(rec, 0) end -- an interrupt or memory, not a verdict on the line
    local why = event_problem(rec, job)
    if why then
      if nl == "\n" or type(rec) == "table" then
        local wrong = not job and (type(rec) ~= "table" or rec.event ~= "retire")
        return nil, (wrong and not_retire_journal or journal_error)(("%s:%d: %s"):format(path, n, why))
      end
      torn = true
    else
      if not job then
        job = {}
        for _, name in ipairs(rec.Names) do job[name] = true end
      end
      records[#records + 1] = rec
    end
  end
  if not records[1] then
    return nil, not_retire_journal(path .. " is not a retire journal (no retire event first)")
  end
  return records, torn
end

local Journal = {}
Journal.__index = Journal

--- Appends events, written and fsync'ed before it returns.
-- @treturn ?boolean true
-- @treturn ?table err `JournalError`
function Journal:append(...)
  local lines = {}
  for i = 1, select("#", ...) do lines[i] = cjson.encode((select(i, ...))) end
  lines[#lines + 1] = ""
  local ok, why = self.file:append(table.concat(lines, "\n"))
  if not ok then return nil, journal_error(("%s: %s"):format(self.path, tostring(why))) end
  return true
end

--- Releases the lock. Idempotent.
function Journal:close()
  if self.file then self.file:close() self.file = nil end
end

--- Starts a retire's journal: a new file (nothing may be at `path`), locked, with the
-- `retire` line written.
-- @tparam string path
-- @tparam table job `ProductKey`, `Names`, `undo`, and the target's fields
-- @treturn ?table journal
-- @treturn ?table err `JournalError`
function M.create(path, job)
  local file, why = core.journal_open(path, "create")
  if not file then
    return nil, journal_error(("cannot create the retire journal %s: %s"):format(path, tostring(why)))
  end
  local self = setmetatable({path = path, file = file}, Journal)
  local rec = {event = "retire", version = 1}
  for k, v in pairs(job) do rec[k] = v end
  local ok, err = self:append(rec)
  if not ok then
    self:close()
    return nil, err
  end
  return self
end

--- Opens an existing retire journal, locked, and reads its events (a torn last line cut
-- off so that appends start on a line of their own).
-- @tparam string path
-- @treturn ?table journal
-- @treturn ?table records the events in order (the first is the `retire` line)
-- @treturn ?table err `JournalError` (not a regular file, locked by another process,
--   unreadable, a bad line)
function M.open(path)
  local file, why = core.journal_open(path, "existing")
  if not file then
    why = tostring(why)
    return nil, nil, journal_error(why:find("is locked$") and ("retire journal %s is in use " ..
      "by another process"):format(path) or ("cannot open the retire journal %s: %s"):format(path, why))
  end
  local self = setmetatable({path = path, file = file}, Journal)
  local body, rerr = file:read(M.MAX_BYTES)
  local records, torn
  if body then records, torn = parse(path, body) else torn = journal_error(tostring(rerr)) end
  if records and body:sub(-1) ~= "\n" then
    local ok, werr
    if torn then ok, werr = file:truncate(#body - #body:match("[^\n]*$"))
    else ok, werr = file:append("\n") end
    if not ok then records, torn = nil, journal_error(("%s: %s"):format(path, tostring(werr))) end
  end
  if not records then
    self:close()
    return nil, nil, torn
  end
  return self, records
end

--- Reads a retire journal's events without opening it (no lock, no change: a torn last
-- line is left out), for a look before the run that opens it.
-- @tparam string path
-- @treturn ?table records the events in order
-- @treturn ?table err `JournalError` (unreadable, not a retire journal, a bad line)
function M.read(path)
  local body, why = core.read_file(path, M.MAX_BYTES)
  if not body then
    return nil, journal_error(("cannot read the retire journal %s: %s"):format(path, tostring(why)))
  end
  local records, err = parse(path, body)
  if not records then return nil, err end
  return records
end

--- What a journal's events say: `{done = bool, answered = {action = {[name] = true}},
-- sent = {action = {[name] = true}}}`.
-- @tparam table records from `open`
-- @treturn table
function M.summary(records)
  local s = {done = false, answered = {}, sent = {}}
  for a in pairs(ACTIONS) do s.answered[a], s.sent[a] = {}, {} end
  for i = 2, #records do
    local r = records[i]
    if r.event == "done" then s.done = true
    elseif r.event ~= "report" then
      local into = r.event == "send" and s.sent or s.answered
      for _, n in ipairs(r.Names) do into[r.action][n] = true end
    end
  end
  return s
end

return M
