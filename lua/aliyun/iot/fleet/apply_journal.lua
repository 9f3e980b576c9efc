--- An apply's journal (`client:apply{journal=}`, `aliyun-iot apply --state FILE`): the
-- batch journal (`aliyun.iot.journal`) of its creation step, a named job with
-- `existing = "adopt"`, whose job line is marked `"apply": {"manifest": PATH}` so that no
-- other command takes it for a register's (`aliyun-iot resume` refuses it). It is created
-- before the apply's first write, whether or not the plan creates a device, so that it
-- also records the apply's report file: a `report` event `{path, id, size}` (the file's
-- "device:inode" identity and its size when the run writing it started), appended once
-- per run that writes a report. A run started again after a kill may append to a report
-- only when the journal's last `report` event names that very file (`report_problem`).
-- Each batch of the apply's other writes is journaled before it is sent (`sending`: its
-- changes, no secret) and once its outcomes reached the report (`settled`): a run after a
-- kill reports the changes of a batch left unsettled that landed (`ledger`).
-- @module aliyun.iot.fleet.apply_journal

local journal = require "aliyun.iot.journal"
local core = require "aliyun.iot.core"
local errors = require "aliyun.iot.errors"
local target_m = require "aliyun.iot.batch.target"

local M = {}

local function bad(message)
  return errors.new{code = "InvalidParameter", parameter = "journal", message = message}
end

--- What is at an apply's journal path, read and checked without locking it (a lock
-- taken and dropped at once tells a journal another process holds: refused).
-- @tparam string path
-- @tparam string pk the ProductKey the apply is for
-- @treturn ?string "none" (no file), "empty" (an empty regular file: a journal whose
--   first line was never written, no creation started) or "journal"
-- @treturn ?table the journal's events for "journal"
-- @treturn ?table err `InvalidParameter` (`parameter = "journal"`: another product's or
--   another job's journal, not a regular file, unreadable, a bad line)
function M.inspect(path, pk)
  local kind = core.file_kind(path)
  local why = kind == "none" and journal.path_problem(path)
  if why then
    -- a journal that cannot be made would fail the apply after its reads
    return nil, nil, bad(("journal %s %s: give the path of a new file in an existing " ..
      "folder, or the one of the killed apply"):format(path, why))
  end
  if kind == "none" then return "none" end
  if kind ~= "file" then
    return nil, nil, bad(("journal %s is not a regular file (%s): give the path of a new " ..
      "file, or the one of the killed apply"):format(path, kind == "link" and "a symlink" or kind))
  end
  if journal.in_use(path) then
    -- another apply runs with it: said before this one reads the product's whole state
    return nil, nil, bad(("journal %s is in use by another process (an apply or retire " ..
      "running with it): wait for it to end, or give another journal path"):format(path))
  end
  if core.read_file(path, 1) == "" then return "empty" end
  local records, err = journal.read(path)
  if not records then
    -- a file that is no journal: refused before anything is sent, like a bad value
    err.code, err.parameter = "InvalidParameter", "journal"
    return nil, nil, err
  end
  local job = records[1]
  if job.kind ~= "named" or job.ProductKey ~= pk then
    return nil, nil, bad(("journal %s is not an apply's journal for product %s (it holds a " ..
      "%s job of product %s): give the path of a new file, or the one of the killed apply")
      :format(path, pk, tostring(job.kind), errors.printable(tostring(job.ProductKey))))
  end
  return "journal", records
end

--- Refuses a run again with another manifest than the one the journal's apply started
-- with (the job line's `apply.digest`, `aliyun.iot.fleet.manifest.digest`): finishing a
-- killed apply with another manifest would create the devices the first one planned.
-- A journal written before digests were recorded is taken as it is.
-- @tparam string path the journal's path
-- @tparam table records from `inspect`
-- @tparam string digest this run's manifest's
-- @treturn ?table err `InvalidParameter` (`parameter = "journal"`)
function M.check_manifest(path, records, digest)
  local note = records[1].apply
  local was = type(note) == "table" and note.digest
  if not was or was == digest then return nil end
  return bad(("journal %s is an apply of another manifest%s than this one (the devices, " ..
    "nicknames, tags or groups differ): run it again with that manifest unchanged to finish " ..
    "it; to apply this one, finish or abandon that apply first, then give a new journal " ..
    "path (--state FILE)"):format(path, note.manifest and
    (" (%s as it was then)"):format(errors.printable(note.manifest)) or ""))
end

--- The apply options that change what the job does, as its journal records them
-- (`start`): finishing a killed apply with others would do another job (remove the tags
-- it kept, retire the devices it left, or the reverse).
M.OPTIONS = {"prune_tags", "retire_unlisted"}

--- Refuses a run again with other `OPTIONS` than the ones the journal's apply started
-- with (the job line's `apply.options`). A journal written before options were recorded
-- is taken as it is.
-- @tparam string path the journal's path
-- @tparam table records from `inspect`
-- @tparam table args this run's (`prune_tags`, `retire_unlisted`: true or nil/false)
-- @treturn ?table err `InvalidParameter`, `parameter` the option's name; its message
--   writes the values as `` `prune_tags = true` `` (the CLI puts its flags in their place)
function M.check_options(path, records, args)
  local note = records[1].apply
  local was = type(note) == "table" and type(note.options) == "table" and note.options
  if not was then return nil end
  for _, name in ipairs(M.OPTIONS) do
    local then_, now = was[name] == true, args[name] == true
    if then_ ~= now then
      return errors.new{code = "InvalidParameter", parameter = name, message = ("journal %s " ..
        "is an apply started with `%s = %s`, this run has `%s = %s`: run it again with " ..
        "`%s = %s` to finish it; to apply with other options, finish or abandon that apply " ..
        "first, then give a new journal path"):format(path, name, tostring(then_), name,
        tostring(now), name, tostring(then_))}
    end
  end
end

--- The report a journal last recorded (`{path=, id=, size=}`), or nil.
-- @tparam table records from `inspect`
function M.last_report(records)
  for i = #records, 2, -1 do
    if records[i].event == "report" then return records[i] end
  end
end

--- Why a run may not append to the existing file `report` (`{path=, id=, size=}`, its
-- identity and size now), given the journal's events (nil: no journal), or nil when the
-- file is provably the one this job created: the journal's last `report` event has its
-- identity, and it has not shrunk since. A retire's journal records its report with the
-- same events (`aliyun.iot.fleet.retire_journal`), checked by the same functions.
-- @tparam ?table records
-- @tparam table report
-- @tparam[opt="apply"] string job whose journal it is, for the reason ("retire")
-- @treturn ?string reason
function M.report_problem(records, report, job)
  job = job or "apply"
  local last = records and M.last_report(records)
  if not last then return ("no %s journal records it"):format(job) end
  if last.id ~= report.id then
    return ("it is not the report the %s journal recorded (%s)"):format(job,
      errors.printable(last.path))
  end
  if report.size < last.size then
    return ("it holds %d bytes, fewer than the %d the journal recorded"):format(report.size, last.size)
  end
end

--- Checks the report a caller writes the apply's records into (`client:apply{report=}`):
-- a new file (`new = true`) is taken as it is; an existing one continued must be the one
-- the journal's last `report` event names (`report_problem`).
-- @tparam ?string path the journal's path (nil: no journal)
-- @tparam ?table records the journal's events (nil: none yet)
-- @tparam ?table report `{path=, id=, size=, new=}`
-- @tparam[opt="apply"] string job whose journal it is ("retire": `client:retire{report=}`)
-- @treturn ?table err `InvalidParameter` (`parameter = "report"`)
function M.check_report(path, records, report, job)
  if not report then return nil end
  if type(report.path) ~= "string" or type(report.id) ~= "string" or
     type(report.size) ~= "number" or report.size < 0 then
    return errors.new{code = "InvalidParameter", parameter = "report",
      message = "report must be {path = string, id = string, size = bytes, new = boolean}"}
  end
  if not path or report.new then return nil end
  local why = M.report_problem(records, report, job)
  if why then
    return errors.new{code = "InvalidParameter", parameter = "report", message = ("report %s " ..
      "cannot be continued: %s (journal %s)"):format(errors.printable(report.path), why, path)}
  end
end

--- Appends the `report` event to an open journal (an apply's, or a retire's: any with
-- `j:append(event) -> ok, err`) unless it is the journal's last already.
-- @tparam table j the open journal
-- @tparam ?table records its events (nil: none but the first yet)
-- @tparam ?table report `{path=, id=, size=}` (nil: nothing to record)
-- @treturn ?table err the append's
function M.append_report(j, records, report)
  local last = records and M.last_report(records)
  if report and not (last and last.id == report.id and last.size == report.size) then
    -- the path only informs (the identity decides): escaped, it is one line of text
    local ok, err = j:append{event = "report", path = errors.printable(report.path),
                             id = report.id, size = report.size}
    if not ok then return err end
  end
end

--- The caller's report argument (`report`: a table, or a function giving it, called
-- once, at the last moment before the journal records it: a file it creates then is in
-- the journal right after, whatever moment a kill comes at before).
-- @tparam ?table|function report
-- @tparam string what the function's name, for the error ("apply", "retire")
-- @treturn ?table
-- @raise when the function returns neither a table nor nil
function M.report_of(report, what)
  if type(report) ~= "function" then return report end
  local r = report()
  if r ~= nil and type(r) ~= "table" then error(what .. ": report() must return a table or nil", 0) end
  return r
end

-- Appends the report event unless it is the journal's last already; closes the journal.
local function note_report(j, records, report)
  local err = M.append_report(j, records, report)
  j:close()
  return err
end

--- The batches of writes journaled as sent (`sending {seq, Changes}`) and never settled
-- (`settled {seq}`), in the journal's order: those a killed run had in flight. A journal
-- written before batches were journaled has none.
-- @tparam table records the journal's events
-- @treturn table `{{seq=, Changes = {{DeviceName=, change=, target=}}}, ...}`
function M.unsettled(records)
  local open, order = {}, {}
  for i = 2, #records do
    local r = records[i]
    if r.event == "sending" then
      open[r.seq], order[#order + 1] = r, r
    elseif r.event == "settled" then
      open[r.seq] = nil
    end
  end
  local out = {}
  for _, r in ipairs(order) do
    if open[r.seq] == r then out[#out + 1] = r end
  end
  return out
end

--- The record of an apply's batches of writes in its journal (`aliyun.iot.fleet.apply`'s
-- `ledger`): `sending(changes) -> seq | nil, err` before a batch is sent (its changes
-- `{DeviceName=, change=, target=}`, never a secret), `settled({seq, ...}) -> ?err`
-- once its outcomes reached the report, `close()`, and `unsettled` (see `unsettled`).
-- The journal is opened (and locked) at the first append, not before: the creation step
-- (`client:resume`) opens it on its own before that.
-- @tparam string path the journal's path
-- @tparam ?table records its events (nil: a journal this run just created)
-- @treturn table
function M.ledger(path, records)
  records = records or {}
  local L, j, next_seq = {unsettled = M.unsettled(records)}, nil, 1
  for i = 2, #records do
    local r = records[i]
    if r.event == "sending" and r.seq >= next_seq then next_seq = r.seq + 1 end
  end
  local function append(events)
    if not j then
      local jj, _, err = journal.open(path)
      if not jj then return err end
      j = jj
    end
    local ok, err = j:append_list(events)
    if not ok then return err end
  end
  function L.sending(changes)
    local seq = next_seq
    local err = append{{event = "sending", seq = seq, Changes = changes}}
    if err then return nil, err end
    next_seq = seq + 1
    return seq
  end
  function L.settled(seqs)
    local events = {}
    for i, seq in ipairs(seqs) do events[i] = {event = "settled", seq = seq} end
    return append(events)
  end
  function L.close()
    if j then j:close() end
    j = nil
  end
  return L
end

--- Starts an apply's journal before its first write: the creations the plan makes, the
-- apply mark, the target, and the report.
-- @tparam table port `aliyun.iot.batch.port`
-- @tparam string path
-- @tparam table args `ProductKey`, `Devices` (`{{DeviceName=, DeviceNickname=}}`, the
--   plan's creations, perhaps none), `manifest` (its path, or nil), `digest` (its
--   `aliyun.iot.fleet.manifest.digest`), `report`
--   (`{path=, id=, size=}` or nil), `reuse_empty` (an empty regular file at path is taken),
--   `prune_tags` and `retire_unlisted` (the apply's `OPTIONS`, recorded)
-- @treturn ?table err `InvalidParameter` (`parameter = "journal"`) or `JournalError`
function M.start(port, path, args)
  local record = {kind = "named", ProductKey = args.ProductKey, skip_invalid = false,
    existing = "adopt", Devices = args.Devices,
    apply = {manifest = args.manifest, digest = args.digest, options = {}}}
  for _, name in ipairs(M.OPTIONS) do record.apply.options[name] = args[name] == true end
  for k, v in pairs(target_m.record(port)) do record[k] = v end
  local j, err = journal.create(path, record, args.reuse_empty)
  if not j then
    err.code, err.parameter = "InvalidParameter", "journal"
    return err
  end
  err = note_report(j, nil, args.report)
  if err then journal.discard(path) end
  return err
end

--- Records a run's report in an existing apply journal (locked for the append).
-- @tparam string path
-- @tparam table records from `inspect`
-- @tparam ?table report `{path=, id=, size=}`
-- @treturn ?table err `JournalError`
function M.note_report(path, records, report)
  if not report then return nil end
  local j, _, err = journal.open(path)
  if not j then return err end
  return note_report(j, records, report)
end

return M
