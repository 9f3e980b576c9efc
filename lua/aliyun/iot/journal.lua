--- The batch helpers' journal: an append-only file of JSON lines, one event per line,
-- that records a provisioning job as it runs, so that a process killed at any moment
-- loses nothing and `client:resume{journal = PATH}` can finish the job.
--
-- Every append is written and fsync'ed (`file:append`) before the call returns: an
-- ApplyId is on disk before it is polled, and a BatchRegisterDevice is recorded as
-- submitted right before it is sent (after its QPS wait, so a process killed while it
-- waits leaves no uncertain submission behind). The file is created with mode 0600: it holds DeviceSecrets
-- (it is the user's state file). ApplyIds are written as decimal strings, exact over int64
-- on every Lua version.
--
-- Events (field `event`), in the order a job writes them:
--
--   {"event":"job","version":1,"kind":"random","ProductKey":..,"Count":2500,<target>}
--   {"event":"job","version":1,"kind":"named","ProductKey":..,"skip_invalid":true,
--    "existing":"adopt","Devices":[{"DeviceName":..,"DeviceNickname":..},..],<target>}
--    where <target> is where the job lives (`aliyun.iot.batch.target`):
--    "endpoint":"https://iot.cn-shanghai.aliyuncs.com/" (the effective URL),
--    "RegionId":"cn-shanghai", "IotInstanceId":.. (only when the client has one),
--    "ApiVersion":"2018-01-20", "AccessKeyId":.. (for information only: never a secret,
--    never compared). A resume is refused unless its client has the same endpoint,
--    RegionId and IotInstanceId. Journals written before these fields existed have none
--    of them and resume with the client's settings.
--   {"event":"job","version":1,"kind":"client","ProductKey":..,"Count":2500,<target>}  (names
--    drawn by the client, then registered as a named job's)
--   {"event":"names","Names":[..],"Replaces":[..]}  (a client-named job's drawn names,
--    one event per chunk, all written before the first request that uses them;
--    Replaces: names the check found taken by devices not the job's)
--   {"event":"register","ApplyId":"4416"}  (right before BatchRegisterDeviceWithApplyId:
--    a resume settles it with QueryBatchRegisterDeviceStatus before anything else)
--   {"event":"submit","seq":1,"action":"BatchRegisterDevice","Count":1000}  (right before
--    sending; once per attempt, all with the same seq)
--   {"event":"apply","seq":1,"ApplyId":"4415","ProductKey":..,"phase":"create",
--    "Count":1000}  (BatchRegisterDevice answered)
--   (resume{adopt_apply_ids}: the same line, with "adopted":true, for an apply taken in
--    after the submission `seq` lost its answer)
--   {"event":"apply","ApplyId":"4416","ProductKey":..,"phase":"check","Names":[..]}
--    (BatchCheckDeviceNames answered; the apply then goes through check and create)
--   {"event":"failed","seq":2,"action":"BatchRegisterDevice"}  (certainly not created)
--   {"event":"uncertain","seq":3,"action":"BatchRegisterDevice","Count":500,"message":..}
--   {"event":"accepted","seq":3,"Count":500,"message":..}  (resume{accept_ambiguous}: the
--    uncertain submission 3 is given up on; the job finishes without it)
--   {"event":"device","ApplyId":"4415","ProductKey":..,"DeviceName":..,"DeviceSecret":..,
--    "IotId":..}
--   {"event":"existing","ProductKey":..,"DeviceName":..,"DeviceSecret":..,"IotId":..,
--    "RequestId":..}  (a named job with "existing":"adopt" or "skip" found the name
--    existing, by BatchQueryDeviceDetail: adopted, the device is the job's without an apply)
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
-- A journal is a file the job creates: `create` makes a new regular file exclusively (mode
-- 0600, never through a symlink) and locks it on the same descriptor before writing the
-- `job` line, so a process that loses a race for the path touches nothing. `open` (resume)
-- takes only an existing regular file, locked the same way. Appends go through that
-- locked descriptor (`core.journal_open`), never by reopening the path. A job holds the
-- lock from start or resume to its end (`Journal:close`), so that two processes never run
-- the same job at once.
--
-- Reading validates every event as strictly as user input (event names, field types and
-- ranges: a job's Count an integer 1..10,000,000, an apply's 1..10,000, seq 1..2^31,
-- ApplyId a positive 64-bit digit string, DeviceName by the name rule, DeviceSecret and
-- IotId letters and digits...): a bad line is refused as `JournalError` "PATH:LINE: what
-- is wrong". These are the only limits; resume relies on them.
-- @module aliyun.iot.journal

local core = require "aliyun.iot.core"
local validate = require "aliyun.iot.validate"
local cjson = require("cjson").new()

local M = {}

--- The largest journal read, in bytes (about ten million devices' lines).
M.MAX_BYTES = 1073741824 * 4

local Journal = {}
Journal.__index = Journal
Journal.__name = "aliyun.iot.Journal"

-- Files this process created, path -> identity ("device:inode"), for `M.discard`.
local created = {}

local function journal_error(message)
  return require("aliyun.iot.errors").new{code = "JournalError", message = message}
end

-- A path for the C functions, which refuse a NUL byte (it would cut the name silently).
local function check_path(path)
  if type(path) ~= "string" or path == "" or path:find("%z") then
    return nil, journal_error("a journal path must be a non-empty string without NUL bytes")
  end
  return path
end

-- Event validation --------------------------------------------------------------------
--
-- The one set of limits a journal is held to; resume (`aliyun.iot.batch.resume`) relies
-- on them and checks only what needs the job's state (counts of devices per apply).

--- The most devices one job registers (a random job's Count; `done`'s Devices).
M.MAX_COUNT = 10000000
--- The most devices one apply holds: BatchRegisterDevice's and BatchCheckDeviceNames'
-- per-call limit (D-69473, D-69482: 10,000), so a submission's and an apply's Count, a
-- check apply's Names and a `fetched` Total.
M.MAX_APPLY = 10000
--- The largest submission number (`seq`).
M.MAX_SEQ = 2 ^ 31

local is_int = validate.whole

local function text(v)
  return type(v) == "string" and v ~= "" and not v:find("[%z\r\n]")
end

local function range(lo, hi)
  return function(v)
    if not is_int(v, lo, hi) then return ("must be an integer from %d to %d"):format(lo, hi) end
  end
end

local function optional(check)
  return function(v) if v ~= nil then return check(v) end end
end

local function one_of(...)
  local set, words = {}, table.concat({...}, " or ")
  for _, w in ipairs{...} do set[w] = true end
  return function(v) if not set[v] then return "must be " .. words end end
end

-- Field checks: each returns nil when the value is fine, else what is wrong with it.
local F = {}
F.count = range(1, M.MAX_COUNT)
F.devices = range(0, M.MAX_COUNT)
F.apply_count = range(1, M.MAX_APPLY)
F.apply_count_opt = optional(F.apply_count)
F.total = range(0, M.MAX_APPLY)
F.seq = range(1, M.MAX_SEQ)
F.seq_opt = optional(F.seq)
function F.apply_id(v)
  if type(v) ~= "string" or validate.apply_id_problem(v) then
    return "must be a string of digits (a positive 64-bit integer)"
  end
end
function F.text(v) if not text(v) then return "must be a non-empty string without NUL, CR or LF" end end
F.product_key = validate.product_key_problem
F.token = validate.token_problem
function F.string_opt(v) if v ~= nil and type(v) ~= "string" then return "must be a string" end end
function F.device_name(v) return validate.device_name_problem(v) end
F.action = one_of("BatchRegisterDevice")
function F.bool_opt(v) if v ~= nil and type(v) ~= "boolean" then return "must be true or false" end end
F.phase = one_of("create", "check")
F.status = one_of("CREATE_SUCCESS", "CREATE_FAILED")
F.existing_opt = optional(one_of("fail", "skip", "adopt"))
function F.request_id_opt(v)
  if v ~= nil and (type(v) ~= "string" or #v > 128 or not v:find("^[%w%-]+$")) then
    return "must be letters, digits and - (at most 128)"
  end
end

-- A list (keys 1..n, at most `max` items) whose items pass `item`; nil allowed when
-- `optional`.
local function list_of(item, opt, max)
  return function(v)
    if v == nil and opt then return nil end
    if type(v) ~= "table" then return "must be a list" end
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    if max and n > max then return ("must hold at most %d items"):format(max) end
    for i = 1, n do
      local why = item(v[i])
      if why then return ("item %d %s"):format(i, why) end
    end
  end
end

-- {DeviceName=, ErrorMsg=} entries (the names may be invalid ones: they are the verdicts).
local function verdict(v)
  if type(v) ~= "table" then return "must be {DeviceName=, ErrorMsg=}" end
  if type(v.DeviceName) ~= "string" then return "has no DeviceName string" end
  return F.string_opt(v.ErrorMsg)
end

-- A named job's {DeviceName=, DeviceNickname=} (a name may break the rule: with
-- skip_invalid it is one of the job's verdicts).
local function named_device(v)
  if type(v) ~= "table" then return "must be {DeviceName=, DeviceNickname=}" end
  if type(v.DeviceName) ~= "string" then return "has no DeviceName string" end
  return F.string_opt(v.DeviceNickname)
end

--- The most changes one `sending` event lists: an apply's batch (64 calls of at most 200
-- devices, `aliyun.iot.fleet.apply`), with room.
M.MAX_BATCH_CHANGES = 20000

local CHANGE = one_of("create_group", "rename", "tag_set", "tag_remove", "join", "leave")
-- One change of an apply's batch: {DeviceName=, change=, target=} (DeviceName absent for
-- create_group; target a string, "" for a nickname removed).
local function change(v)
  if type(v) ~= "table" then return "must be {DeviceName=, change=, target=}" end
  local why = CHANGE(v.change)
  if why then return "change " .. why end
  if v.DeviceName ~= nil or v.change ~= "create_group" then
    why = F.device_name(v.DeviceName)
    if why then return "DeviceName " .. why end
  end
  if type(v.target) ~= "string" then return "has no target string" end
end

-- Event name -> {field = check}. Fields not listed are ignored (written by a later version
-- of the job they would be new facts, not changes to these).
local EVENTS = {
  submit = {seq = F.seq, action = F.action, Count = F.apply_count},
  apply = {seq = F.seq_opt, ApplyId = F.apply_id, ProductKey = F.product_key, phase = F.phase,
           Count = F.apply_count_opt, Names = list_of(F.device_name, true, M.MAX_APPLY)},
  failed = {seq = F.seq, action = F.action},
  -- resume{accept_ambiguous}: an uncertain submission given up on (its devices unseen)
  accepted = {seq = F.seq, Count = F.apply_count_opt,
              message = function(v) if type(v) ~= "string" then return "must be a string" end end},
  uncertain = {seq = F.seq, action = F.action, Count = F.apply_count_opt,
               message = function(v) if type(v) ~= "string" then return "must be a string" end end},
  device = {ApplyId = F.apply_id, ProductKey = F.product_key, DeviceName = F.device_name,
            DeviceSecret = F.token, IotId = F.token},
  existing = {ProductKey = F.product_key, DeviceName = F.device_name, DeviceSecret = F.token,
              IotId = F.token, RequestId = F.request_id_opt},
  fetched = {ApplyId = F.apply_id, Total = F.total, Status = F.status,
             Failed = list_of(verdict, true, M.MAX_APPLY)},
  done = {Devices = F.devices, Invalid = list_of(verdict, true)},
  -- a client-named job's drawn names, before any request uses them; `Replaces`: names
  -- the check found taken by devices that are not the job's, dropped for these
  names = {Names = list_of(F.device_name, false, M.MAX_APPLY),
           Replaces = list_of(F.device_name, true, M.MAX_APPLY)},
  -- BatchRegisterDeviceWithApplyId about to be sent: a resume settles it first
  register = {ApplyId = F.apply_id},
  -- an apply's report file (`aliyun.iot.fleet.apply_journal`): its path, identity
  -- ("device:inode") and size when the run that writes it started; resume ignores it
  report = {path = F.text, id = F.text, size = range(0, 2^53)},
  -- an apply's batch of writes about to be sent, its changes (the report's fields, no
  -- secret), and the same batch settled (its outcomes reported); resume ignores both
  sending = {seq = F.seq, Changes = list_of(change, false, M.MAX_BATCH_CHANGES)},
  settled = {seq = F.seq},
}

-- What each phase of an apply needs: a create apply its Count, a check apply its Names.
local PHASE_NEEDS = {create = "Count", check = "Names"}

-- A named job that is an apply's creation step (`aliyun.iot.fleet.apply_journal`):
-- `{"manifest": PATH, "digest": D}`, the manifest's path when it was a file and its
-- digest (`aliyun.iot.fleet.manifest.digest`; absent from journals written before).
local function apply_note(v)
  if v == nil then return nil end
  if type(v) ~= "table" then return "must be an object" end
  if v.manifest ~= nil and not text(v.manifest) then
    return "manifest must be a non-empty string without NUL, CR or LF"
  end
  if v.digest ~= nil and not text(v.digest) then
    return "digest must be a non-empty string without NUL, CR or LF"
  end
end

local JOB = {
  random = {ProductKey = F.product_key, Count = F.count},
  named = {ProductKey = F.product_key, skip_invalid = F.bool_opt, existing = F.existing_opt,
           Devices = list_of(named_device), apply = apply_note},
  client = {ProductKey = F.product_key, Count = F.count},
}

-- The job's target (`aliyun.iot.batch.target`), on every kind of job line; absent from
-- journals written before targets were recorded (those resume with the client's settings).
local function text_opt(v)
  if v ~= nil and not text(v) then return "must be a non-empty string without NUL, CR or LF" end
end
local TARGET = {
  endpoint = function(v)
    if v ~= nil and not (text(v) and v:find("^https?://[%w%.%-%[%]:]+/$")) then
      return "must be an http:// or https:// URL with no path"
    end
  end,
  RegionId = function(v)
    if v ~= nil and not (type(v) == "string" and v:find("^[%w%-]+$")) then
      return "must hold only letters, digits and -"
    end
  end,
  IotInstanceId = text_opt, ApiVersion = text_opt, AccessKeyId = text_opt,
}

local function check_fields(rec, fields)
  local keys = {}
  for k in pairs(fields) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local why = fields[k](rec[k])
    if why then return ("%s event: %s %s"):format(rec.event, k, why) end
  end
end

-- What is wrong with the event on line `n` (1: the job line), or nil.
local function event_problem(rec, n)
  if type(rec) ~= "table" or type(rec.event) ~= "string" then return "is not a journal event" end
  if n == 1 then
    if rec.event ~= "job" then return "is not an aliyun-iot journal (no job event first)" end
    if rec.version ~= 1 then return "unknown journal version " .. tostring(rec.version) end
    local fields = JOB[rec.kind]
    if not fields then return "job event: unknown kind " .. tostring(rec.kind) end
    local why = check_fields(rec, fields) or check_fields(rec, TARGET)
    if why or rec.endpoint == nil then return why end
    -- a target is whole: the endpoint is compared with its RegionId on resume
    if rec.RegionId == nil then return "job event: an endpoint needs its RegionId" end
    return nil
  end
  local fields = EVENTS[rec.event]
  if not fields then return ("unknown event '%s'"):format(rec.event) end
  local why = check_fields(rec, fields)
  if why or rec.event ~= "apply" then return why end
  local need = PHASE_NEEDS[rec.phase]
  if rec[need] == nil then return ("apply event: a %s apply needs %s"):format(rec.phase, need) end
end

-- Parses a journal's text: the events in order and whether the last line was torn (a
-- write cut short by a crash), or nil and a JournalError naming PATH:LINE.
local function parse(path, body)
  local records, n, torn = {}, 0, false
  for line, nl in body:gmatch("([^\n]*)(\n?)") do
    if line == "" and nl == "" then break end
    n = n + 1
    local ok, rec = pcall(core.json_decode, line)
    -- json_decode returns nil for bad text: what it raises is no verdict on the line (an
    -- interrupt, SIGINT or SIGTERM, raised from a hook; memory) and goes on up
    if not ok then error(rec, 0) end
    local why = line == "" and "is an empty line" or event_problem(rec, #records + 1)
    if why then
      -- Only the very last line may be cut short (a write interrupted by a crash).
      if nl == "\n" or type(rec) == "table" then
        return nil, journal_error(("%s:%d: %s"):format(path, n, why))
      end
      torn = true
    else
      records[#records + 1] = rec
    end
  end
  if not records[1] then
    return nil, journal_error(path .. " is not an aliyun-iot journal (no job event first)")
  end
  return records, torn
end

--- Whether a journal's events hold a finished job (a `done` event).
-- @tparam table records from `read` or `open`
-- @treturn boolean
function M.finished(records)
  for i = #records, 2, -1 do
    if records[i].event == "done" then return true end
  end
  return false
end
local finished = M.finished

-- Opening and writing --------------------------------------------------------------------

-- Why `create` cannot use `path` that exists already: a plain sentence for each case.
local function exists_error(path)
  local kind = core.file_kind(path)
  if kind == "folder" then
    return journal_error(("journal %s is a directory: give the path of a new file"):format(path))
  elseif kind ~= "file" then
    return journal_error(("journal %s exists and is not a regular file: a journal is a " ..
      "new file the job creates"):format(path))
  end
  local body = core.read_file(path, M.MAX_BYTES)
  local records = body and body ~= "" and parse(path, body)
  if records and finished(records) then
    return journal_error(("journal %s holds a finished job (its devices are in it); " ..
      "choose a new path for a new job"):format(path))
  elseif records then
    return journal_error(("journal %s holds an unfinished job: finish it with " ..
      "client:resume{journal = ...}, or choose a new path"):format(path))
  end
  return journal_error(("journal %s already exists: a journal is a new file the job " ..
    "creates; choose a new path"):format(path))
end

-- An empty regular file at path, opened and locked (`create`'s reuse_empty), or nil.
local function open_empty(path)
  local file = core.journal_open(path, "existing")
  if not file then return nil end
  local body = file:read(1)
  if body == "" then return file end
  file:close()
end

--- Starts a journal for a new job: creates the file (it must not exist: not even empty,
-- nor as a symlink, device or FIFO), locks it, and writes the `job` line.
-- @tparam string path
-- @tparam table job the `job` event's fields (without `event`)
-- @tparam[opt] boolean reuse_empty take an empty regular file at path as a new journal
--   (the one a job killed before its first line left behind: it records nothing, so no
--   job started); anything else there is still refused
-- @treturn ?table journal (`j.path`; locked until `j:close()`)
-- @treturn ?table err `JournalError` (something is at path already -- a finished job's
--   journal says so --, or the file cannot be created or written)
function M.create(path, job, reuse_empty)
  local p, perr = check_path(path)
  if not p then return nil, perr end
  local file, why = core.journal_open(path, "create")
  if not file and reuse_empty and core.file_kind(path) == "file" then file = open_empty(path) end
  if not file then
    if core.file_kind(path) ~= "none" then return nil, exists_error(path) end
    return nil, journal_error(why)
  end
  local self = setmetatable({path = path, file = file}, Journal)
  created[path] = file:id()
  local record = {event = "job", version = 1}
  for k, v in pairs(job) do record[k] = v end
  local ok, err = self:append(record)
  if not ok then
    -- Nothing was sent: the empty file this run made is removed, not left to be refused.
    self:close()
    M.discard(path)
    return nil, err
  end
  return self
end

--- `path` made absolute against the working folder (`core.cwd`), for a path recorded or
-- printed for a later run that may start in another folder; "-" (stdin, stdout) and
-- absolute paths are kept, and so is `path` when the working folder cannot be read.
-- @tparam string path
-- @treturn string
function M.absolute(path)
  if path == "-" or path:sub(1, 1) == "/" then return path end
  local cwd = core.cwd()
  if not cwd then return path end
  return (cwd:gsub("/$", "")) .. "/" .. path:gsub("^%./", "")
end

--- Whether another process holds the regular file at path locked (as a running job holds
-- its journal): asked before a job reads or sends anything, so that the second of two
-- runs on one journal stops at once. The lock is taken and dropped at once; a file that
-- cannot be opened is not "in use" (its own check says what is wrong with it).
-- @tparam string path
-- @treturn boolean
function M.in_use(path)
  local lock, why = core.lock_file(path)
  if lock then
    lock:unlock()
    return false
  end
  return tostring(why):find("is locked$") ~= nil
end

--- Why `path` cannot take a file a job creates or continues (a journal, an undo export),
-- asked before anything is sent so that a bad path never fails a job midway: nil when it
-- is a regular file (not a symlink), or names nothing yet in an existing folder; else a
-- sentence ("is a folder", "is a symlink", ...). Nothing is opened: a FIFO is never
-- waited on, a device never touched.
-- @tparam string path
-- @treturn ?string reason
function M.path_problem(path)
  if type(path) ~= "string" or path == "" or path:find("%z") then
    return "is not a path (a non-empty string without NUL bytes)"
  end
  local kind, why = core.file_kind(path)
  if not kind then return "cannot be looked at: " .. tostring(why) end
  if kind == "file" then return nil end
  if kind == "folder" then return "is a folder" end
  if kind == "link" then return "is a symlink (a job's file is never reached through one)" end
  if kind ~= "none" then return "is not a regular file (a device, FIFO or socket)" end
  local dir = path:match("^(.*)/[^/]*$")
  if dir == "" then dir = "/" end
  if dir and core.file_kind(dir, true) ~= "folder" then
    return ("cannot be created: there is no folder %s"):format(dir)
  end
end

--- Removes the journal at `path` if this process created it and the path still names
-- that same file (never a file another process put there since). Idempotent.
-- @tparam string path
-- @treturn boolean whether it was removed
function M.discard(path)
  local id = created[path]
  if not id then return false end
  local kind, now = core.file_kind(path)
  if kind ~= "file" or now ~= id then return false end
  created[path] = nil
  return os.remove(path) ~= nil
end

--- Releases the journal's lock (the job is over). Idempotent.
function Journal:close()
  if self.file then self.file:close() end
end

-- The lock error in a sentence, or a JournalError for another failure.
local function open_error(path, why)
  if why:find("is locked$") then
    return journal_error(("journal %s is in use by another process: one job runs once " ..
      "at a time"):format(path))
  end
  if why:find("No such file") then
    return journal_error(("cannot read the journal %s: no such file"):format(path))
  end
  return journal_error(("cannot open the journal: %s"):format(why))
end

--- Opens an existing journal to finish its job, and locks it until `Journal:close`.
-- @tparam string path
-- @treturn ?table journal (appends go to the same file, through the locked descriptor)
-- @treturn ?table records every event, in order; a last line cut short by a crash is
--   left out, and cut off the file, so that appends start on a line of their own
-- @treturn ?table err `JournalError` (missing, not a regular file, unreadable, not a
--   journal or a bad event ("PATH:LINE: what is wrong"), or locked by another job:
--   "journal PATH is in use by another process")
function M.open(path)
  local p, perr = check_path(path)
  if not p then return nil, nil, perr end
  local file, why = core.journal_open(path, "existing")
  if not file then return nil, nil, open_error(path, why) end
  local self = setmetatable({path = path, file = file}, Journal)
  local records, err = self:_read()
  if not records then
    self:close()
    return nil, nil, err
  end
  return self, records
end

--- Reads and validates a journal's events without locking or changing it (to report on a
-- job, even one this process runs, or to check a file before a job starts).
-- @tparam string path
-- @treturn ?table records every event, in order (a torn last line left out)
-- @treturn ?table err `JournalError`
function M.read(path)
  local p, perr = check_path(path)
  if not p then return nil, perr end
  local kind = core.file_kind(path)
  if kind ~= "file" and kind ~= "none" then
    return nil, journal_error(("%s is not a regular file"):format(path))
  end
  local body, why = core.read_file(path, M.MAX_BYTES)
  if not body then return nil, open_error(path, why) end
  local records, err = parse(path, body)
  if not records then return nil, err end
  return records
end

function Journal:_read()
  local body, why = self.file:read(M.MAX_BYTES)
  if not body then return nil, journal_error(("%s: %s"):format(self.path, why)) end
  local records, torn = parse(self.path, body)
  if not records then return nil, torn end
  if body:sub(-1) ~= "\n" then
    -- The last write was cut by a crash: appending after it would glue the next event to
    -- it and lose both. A whole event lacking only its newline gets it; a torn one is cut
    -- off (the lines before it are whole).
    local ok, werr
    if torn then
      ok, werr = self.file:truncate(#body - #body:match("[^\n]*$"))
    else
      ok, werr = self.file:append("\n")
    end
    if not ok then return nil, journal_error(("%s: %s"):format(self.path, werr)) end
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
-- @treturn ?boolean true
-- @treturn ?table err `JournalError`
function Journal:append_list(events)
  if #events == 0 then return true end
  local lines = {}
  for i, ev in ipairs(events) do lines[i] = cjson.encode(ev) end
  return self:_write(lines)
end

function Journal:_write(lines)
  lines[#lines + 1] = ""
  local ok, why, errno = self.file:append(table.concat(lines, "\n"))
  if not ok then
    -- a write that failed (a full disk, a file-size limit): `errno` tells it from a journal
    -- refused for what it holds; the lines before it are whole, so the job can be resumed
    local e = journal_error(("%s: %s"):format(self.path, why))
    e.errno = errno
    return nil, e
  end
  return true
end

return M
