--- The batch helpers' journal: an append-only file of JSON lines, one event per line,
-- that records a provisioning job as it runs, so that a process killed at any moment
-- loses nothing and `client:resume{journal = PATH}` can finish the job.
--
-- Every append is written and fsync'ed (`core.append_sync`) before the call returns: an
-- ApplyId is on disk before it is polled, and a BatchRegisterDevice is recorded as
-- submitted right before it is sent (after its QPS wait, so a process killed while it
-- waits leaves no uncertain submission behind). The file is created with mode 0600: it holds DeviceSecrets
-- (it is the user's state file). ApplyIds are written as decimal strings, exact over int64
-- on every Lua version.
--
-- Events (field `event`), in the order a job writes them:
--
--   {"event":"job","version":1,"kind":"random","ProductKey":..,"Count":2500}
--   {"event":"job","version":1,"kind":"named","ProductKey":..,"skip_invalid":true,
--    "Devices":[{"DeviceName":..,"DeviceNickname":..},..]}
--   {"event":"submit","seq":1,"action":"BatchRegisterDevice","Count":1000}  (right before
--    sending; once per attempt, all with the same seq)
--   {"event":"apply","seq":1,"ApplyId":"4415","ProductKey":..,"phase":"create",
--    "Count":1000}  (BatchRegisterDevice answered)
--   {"event":"apply","ApplyId":"4416","ProductKey":..,"phase":"check","Names":[..]}
--    (BatchCheckDeviceNames answered; the apply then goes through check and create)
--   {"event":"failed","seq":2,"action":"BatchRegisterDevice"}  (certainly not created)
--   {"event":"uncertain","seq":3,"action":"BatchRegisterDevice","Count":500,"message":..}
--   {"event":"device","ApplyId":"4415","ProductKey":..,"DeviceName":..,"DeviceSecret":..,
--    "IotId":..}
--   {"event":"fetched","ApplyId":"4415","Total":1000,"Status":"CREATE_SUCCESS"}  (every
--    device of the apply recorded; a CREATE_FAILED apply adds
--    "Failed":[{"DeviceName":..,"ErrorMsg":..},..], the names not created)
--   {"event":"done","Devices":2523}  (a named job adds "Invalid":[{"DeviceName":..,
--    "ErrorMsg":..},..], the names left out, the service's verdicts included)
--
-- A `submit` without its `apply`, `failed` or `uncertain` line means the process ended
-- while the call was in flight: it reads as `uncertain`. A `failed` line is also written
-- for each attempt whose answer says it did not act (throttled, 503, no connection)
-- before the client waits and sends it again, so a process killed during that wait
-- leaves nothing uncertain behind.
--
-- A job holds an exclusive lock on its journal (`core.lock_file`) from start or resume to
-- its end (`Journal:close`), so that two processes never resume the same job at once.
-- @module aliyun.iot.journal

local core = require "aliyun.iot.core"
local cjson = require("cjson").new()

local M = {}

local Journal = {}
Journal.__index = Journal
Journal.__name = "aliyun.iot.Journal"

local function journal_error(message)
  return require("aliyun.iot.errors").new{code = "JournalError", message = message}
end

--- Starts a journal for a new job. The file must not exist yet (or be empty): a journal
-- holds one job, and an existing one is finished with `client:resume`.
-- @tparam string path
-- @tparam table job the `job` event's fields (without `event`)
-- @treturn ?table journal
-- @treturn ?table err `JournalError` (the file exists, or cannot be written)
function M.create(path, job)
  local f = io.open(path, "rb")
  if f then
    local size = f:seek("end")
    f:close()
    -- A folder opens for reading too; only opening it for writing tells (EISDIR).
    local w, _, code = io.open(path, "ab")
    if w then w:close() end
    if code == 21 then
      return nil, journal_error(("journal %s is a directory: give the path of a new " ..
        "file"):format(path))
    end
    if size and size > 0 then
      return nil, journal_error(("journal %s already exists: finish that job with " ..
        "client:resume{journal = ...}, or choose a new path"):format(path))
    end
  end
  local self = setmetatable({path = path}, Journal)
  local record = {event = "job", version = 1}
  for k, v in pairs(job) do record[k] = v end
  local ok, err = self:append(record)
  if not ok then return nil, err end
  ok, err = self:_lock()
  if not ok then return nil, err end
  return self
end

function Journal:_lock()
  local lock, why = core.lock_file(self.path)
  if not lock then
    if why:find("is locked$") then
      why = ("journal %s is in use by another process: one job runs once at a time")
        :format(self.path)
    end
    return nil, journal_error(why)
  end
  self.lock = lock
  return true
end

--- Releases the journal's lock (the job is over). Idempotent.
function Journal:close()
  if self.lock then self.lock:unlock() end
end

--- Opens an existing journal to finish its job, and locks it until `Journal:close`.
-- @tparam string path
-- @treturn ?table journal (appends go to the same file)
-- @treturn ?table records every event, in order; a last line cut short by a crash is
--   left out, and cut off the file, so that appends start on a line of their own
-- @treturn ?table err `JournalError` (missing, unreadable, not a journal, or locked by
--   another job: "journal PATH is in use by another process")
function M.open(path)
  local f, why = io.open(path, "rb")
  if not f then return nil, nil, journal_error("cannot read the journal: " .. tostring(why)) end
  f:close()
  local self = setmetatable({path = path}, Journal)
  local ok, lerr = self:_lock()
  if not ok then return nil, nil, lerr end
  local records, err = self:_read()
  if not records then
    self:close()
    return nil, nil, err
  end
  return self, records
end

-- Reads and parses the journal at path: the events in order, and whether the last line
-- was torn (a write cut short by a crash), or nil and a JournalError.
local function load(path)
  local f, why = io.open(path, "rb")
  if not f then return nil, journal_error("cannot read the journal: " .. tostring(why)) end
  local text, rerr = f:read("*a")
  f:close()
  if not text then
    return nil, journal_error(("cannot read the journal %s: %s"):format(path, tostring(rerr)))
  end
  local records, n, torn = {}, 0, false
  for line, nl in text:gmatch("([^\n]*)(\n?)") do
    n = n + 1
    if line ~= "" then
      local rec = core.json_decode(line)
      if type(rec) ~= "table" or type(rec.event) ~= "string" then
        -- Only the very last line may be cut short (a write interrupted by a crash).
        if nl == "\n" then
          return nil, journal_error(("%s:%d is not a journal event"):format(path, n))
        end
        torn = true
      else
        records[#records + 1] = rec
      end
    end
  end
  if not records[1] or records[1].event ~= "job" then
    return nil, journal_error(path .. " is not an aliyun-iot journal (no job event first)")
  end
  if records[1].version ~= 1 then
    return nil, journal_error(path .. ": unknown journal version " .. tostring(records[1].version))
  end
  return records, torn, text
end

--- Reads a journal's events without locking or changing it (to report on a job, even one
-- this process runs).
-- @tparam string path
-- @treturn ?table records every event, in order (a torn last line left out)
-- @treturn ?table err `JournalError`
function M.read(path)
  local records, err = load(path)
  if not records then return nil, err end
  return records
end

function Journal:_read()
  local path = self.path
  local records, torn, text = load(path)
  if not records then return nil, torn end
  if text:sub(-1) ~= "\n" and text ~= "" then
    -- The last write was cut by a crash: appending after it would glue the next event to
    -- it and lose both. A whole event lacking only its newline gets it; a torn one is cut
    -- off (the lines before it are whole).
    local ok, werr
    if torn then
      ok, werr = core.truncate(path, #text - #text:match("[^\n]*$"))
    else
      ok, werr = core.append_sync(path, "\n")
    end
    if not ok then return nil, journal_error(werr) end
  end
  return records
end

--- Appends events and makes them durable (write + fsync) before returning.
-- @tparam table ... event tables (each with an `event` field)
-- @treturn ?boolean true
-- @treturn ?table err `JournalError`
function Journal:append(...)
  local lines = {}
  for i = 1, select("#", ...) do
    lines[i] = cjson.encode((select(i, ...)))
  end
  return self:_write(lines)
end

--- Appends a list of events in one durable write.
-- @tparam {table,...} events
function Journal:append_list(events)
  if #events == 0 then return true end
  local lines = {}
  for i, ev in ipairs(events) do lines[i] = cjson.encode(ev) end
  return self:_write(lines)
end

function Journal:_write(lines)
  lines[#lines + 1] = ""
  local ok, why = core.append_sync(self.path, table.concat(lines, "\n"))
  if not ok then return nil, journal_error(why) end
  return true
end

return M
