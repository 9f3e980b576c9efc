--- Retiring devices: deleting is final (their credentials stop working), and deleting
-- devices that are online makes them reconnect in a storm that throttles the account
-- (docs/wire.md §10). So, in order: the devices read (BatchQueryDeviceDetail, 100 a call),
-- the undo export written (their secrets, mode 0600, a new file, never an existing one),
-- DisableThing for each (but those the read shows `DISABLE` already: a retire run again),
-- a wait until BatchGetDeviceState shows none `ONLINE` (any other status counts as
-- offline; `on_wait` hears of each poll that finds some), then DeleteDevice for each
-- (with `force`, those still online when the wait ended too, their records marked
-- `online`), every action paced by the client.
--
-- Resuming: the undo file is written before the first write and kept. Retiring the same
-- names again with the same undo file finds the devices already deleted absent (they are
-- reported `absent`), checks that the undo file holds every device still to delete, and
-- goes on from there; DisableThing and DeleteDevice leave the same state when repeated.
-- With a journal (`aliyun.iot.fleet.retire_journal`), the run again is held to the same
-- devices, undo file and target; it sends no DisableThing or DeleteDevice that was
-- answered, and a DeleteDevice whose answer was lost is settled by the first read (the
-- device gone: deleted, reported so; still there: sent again).
-- @module aliyun.iot.fleet.retire

local answer = require "aliyun.iot.batch.answer"
local detail = require "aliyun.iot.batch.detail"
local errors = require "aliyun.iot.errors"
local validate = require "aliyun.iot.validate"
local core = require "aliyun.iot.core"
local journal_m = require "aliyun.iot.journal"
local rjournal = require "aliyun.iot.fleet.retire_journal"
local apply_journal = require "aliyun.iot.fleet.apply_journal"
local target = require "aliyun.iot.batch.target"

local M = {}

--- The undo export's header: the columns of `register`'s CSV.
M.HEADER = "ProductKey,DeviceName,DeviceSecret,IotId"
local STATE_BATCH = 50        -- BatchGetDeviceState's devices a call (§4)
local CONCURRENCY = 16        -- calls in flight; the pacer keeps them within QPS
local MAX_UNDO_BYTES = 1073741824

local function bad(parameter, message)
  return errors.new{code = "InvalidParameter", parameter = parameter, message = message}
end

-- The devices that exist, read 100 a call: {names in order}, {[name] = detail}.
local function read_devices(port, pk, names, opts)
  local found, present = {}, {}
  for first = 1, #names, detail.MAX do
    local chunk = {}
    for i = first, math.min(first + detail.MAX - 1, #names) do chunk[#chunk + 1] = names[i] end
    local got, err = detail.fetch(port, pk, chunk, opts, true)
    if not got then return nil, nil, err end
    for _, n in ipairs(chunk) do
      if got[n] then found[n], present[#present + 1] = got[n], n end
    end
  end
  return present, found
end

-- The devices an undo file holds, {[DeviceName] = IotId} (its header checked), or nil and
-- the error.
local function undo_names(path)
  local text, why = core.read_file(path, MAX_UNDO_BYTES)
  if not text then return nil, bad("undo", ("cannot read undo file %s: %s"):format(path, tostring(why))) end
  local held, first = {}, true
  for line in text:gmatch("([^\n]*)\n") do
    if first then
      if line ~= M.HEADER then break end
      first = false
    else
      local name, iot_id = line:match("^[^,]*,([^,]*),[^,]*,([^,]*)$")
      if name then held[name] = iot_id end
    end
  end
  if first then
    return nil, bad("undo", ("%s exists and is not an undo export (its first line is not %s): " ..
      "give the path of a new file"):format(path, M.HEADER))
  end
  return held
end

-- The first of `names` the undo file's devices (`held`, from undo_names) lack, as the
-- InvalidParameter, or nil.
local function not_held(path, held, names)
  for _, n in ipairs(names) do
    if not held[n] then
      return bad("undo", ("undo file %s exists and does not hold device %s: give the path " ..
        "of a new file (an undo export is never overwritten)"):format(path, n))
    end
  end
end

--- Why the files of a retire cannot be used, asked before any request: the undo export
-- (unless `dry_run`) and the journal must each be a regular file or a new one in an
-- existing folder (`journal.path_problem`); an existing undo file must be an undo export,
-- holding each of `holds` when given (the devices an apply's plan retires).
-- @tparam table a `undo`, `journal`, `dry_run`, `holds` (optional: names)
-- @treturn ?table err `InvalidParameter` (`parameter` "undo" or "journal")
function M.files_problem(a)
  local path_problem = require("aliyun.iot.journal").path_problem
  local why = a.journal and path_problem(a.journal)
  if why then
    return bad("journal", ("retire journal %s %s: give the path of a new file, or the one " ..
      "of the retire stopped before"):format(errors.printable(a.journal), why))
  end
  if a.dry_run or a.undo == nil then return nil end
  why = path_problem(a.undo)
  if why then
    return bad("undo", ("undo file %s %s: give the path of a new file (--undo FILE) in a " ..
      "folder you can write"):format(errors.printable(a.undo), why))
  end
  if core.file_kind(a.undo) ~= "file" then return nil end
  local held, err = undo_names(a.undo)
  if not held then return err end
  if a.holds then return not_held(a.undo, held, a.holds) end
end

-- Removes the undo file this run created (`id`, its identity) when its writing failed:
-- a partial export would refuse every run again ("does not hold device ...").
local function remove_partial(path, id)
  local kind, now = core.file_kind(path)
  if kind == "file" and now == id then os.remove(path) end
end

--- Writes the undo export (a new file, 0600, written and fsync'ed before any write is
-- sent), or, when the file exists (a retire run again), checks that it holds every device
-- still to delete, by IotId: a device made again under a deleted one's name since is not
-- the one the export holds, and deleting it would lose its secret. A file this run
-- created and could not write whole is removed again.
-- @treturn ?table err `InvalidParameter` (the file exists without those devices) or
--   `JournalError`-like `UndoError` (it cannot be written)
function M.write_undo(path, pk, present, found)
  local file, why = core.journal_open(path, "create")
  if not file then
    if core.file_kind(path) ~= "file" then
      return errors.new{code = "UndoError", message = ("cannot create undo file %s: %s; " ..
        "give a path (--undo FILE) in a folder you can write"):format(path, tostring(why))}
    end
    local held, err = undo_names(path)
    if not held then return err end
    err = not_held(path, held, present)
    if err then return err end
    for _, n in ipairs(present) do
      if held[n] ~= found[n].IotId then
        return bad("undo", ("undo file %s holds another device named %s (IotId %s; the " ..
          "device now has IotId %s: made again since): give the path of a new file")
          :format(path, n, errors.printable(held[n]), errors.printable(tostring(found[n].IotId))))
      end
    end
    return nil
  end
  local lines = {M.HEADER}
  for _, n in ipairs(present) do
    local d = found[n]
    lines[#lines + 1] = table.concat({pk, d.DeviceName, d.DeviceSecret, d.IotId}, ",")
  end
  local id = file:id()
  local ok, werr = file:append(table.concat(lines, "\n") .. "\n")
  local closed, cerr = file:close()
  -- the undo record is what makes the deletes recoverable: a failed close fails it too
  if ok and not closed then ok, werr = false, cerr end
  if not ok then
    remove_partial(path, id)
    return errors.new{code = "UndoError", message = ("cannot write undo file %s: %s (the " ..
      "partial file removed; no write sent)"):format(path,
      (tostring(werr):gsub("^cannot write the journal: ", "")))}
  end
end

-- One BatchGetDeviceState answer's ONLINE names appended to `out`; nil and the error when
-- it is not one status for each device asked for: a device left out could be online, and
-- deleting it would start the reconnect storm the wait is there to avoid.
local function online_of(res, names, out)
  local asked = {}
  for _, n in ipairs(names) do asked[n] = true end
  local sl = type(res.DeviceStatusList) == "table" and res.DeviceStatusList.DeviceStatus or {}
  local n = validate.list_length(sl)
  local ok = n == #names
  for i = 1, ok and n or 0 do
    local s = sl[i]
    if type(s) ~= "table" or asked[s.DeviceName] ~= true or type(s.Status) ~= "string" then
      ok = false
      break
    end
    asked[s.DeviceName] = false
    if s.Status == "ONLINE" then out[#out + 1] = s.DeviceName end
  end
  if not ok then
    return nil, answer.invalid_response("BatchGetDeviceState: DeviceStatus is not one " ..
      "status for each device asked for", {action = "BatchGetDeviceState",
      request_id = answer.request_id(res.RequestId)})
  end
  return out
end

-- The names BatchGetDeviceState shows ONLINE, or nil and the error.
local function online(port, pk, names, opts)
  local list, out = {}, {}
  for first = 1, #names, STATE_BATCH do
    local chunk = {}
    for i = first, math.min(first + STATE_BATCH - 1, #names) do chunk[#chunk + 1] = names[i] end
    list[#list + 1] = {ProductKey = pk, DeviceName = chunk}
  end
  local results, errs = port:invoke_many("BatchGetDeviceState", list, opts, CONCURRENCY)
  for i, params in ipairs(list) do
    if not results[i] then return nil, errs[i] end
    local ok, err = online_of(results[i], params.DeviceName, out)
    if not ok then return nil, err end
  end
  return out
end

--- Waits until none of `names` is ONLINE, polling with pauses growing from 1 s to 5 s.
-- @tparam[opt] function on_wait called before each pause with `{Online = {names ONLINE},
--   total = #names, waited = s so far, wait = wait}`, so that a long wait is not silent
-- @treturn ?table the names still online when `wait` ran out ({} when none)
-- @treturn ?table err a call's error
function M.wait_offline(port, pk, names, wait, opts, on_wait)
  local t0, pause = port:clock(), 1
  local t_end = t0 + wait
  while true do
    local on, err = online(port, pk, names, opts)
    if not on then return nil, err end
    if #on == 0 or port:clock() >= t_end then return on end
    local left = t_end - port:clock()
    if opts.deadline then left = math.min(left, opts.deadline - port:clock()) end
    if left <= 0 then return on end
    if on_wait then on_wait{Online = on, total = #names, waited = port:clock() - t0, wait = wait} end
    port:pause(math.min(pause, left))
    pause = math.min(pause * 2, 5)
  end
end

-- A device already gone counts as deleted (a repeat of a delete whose answer was lost).
local function gone(err)
  return err and err.code == "iot.device.NotExistedDevice"
end

-- Sends one action for each name (ProductKey + DeviceName), paced; calls on_each(name,
-- res, err) in order. With a journal, each chunk is recorded `send` before it goes and
-- its answered devices `answered` after; returns the journal's error, if any.
local function each_device(port, pk, action, names, opts, on_each, j)
  for first = 1, #names, 1000 do
    local list, part = {}, {}
    for i = first, math.min(first + 999, #names) do
      part[#part + 1], list[#list + 1] = names[i], {ProductKey = pk, DeviceName = names[i]}
    end
    if j then
      local ok, jerr = j:append{event = "send", action = action, Names = part}
      if not ok then return jerr end
    end
    local results, errs = port:invoke_many(action, list, opts, CONCURRENCY)
    local answered = {}
    for i, n in ipairs(part) do
      if results[i] or gone(errs[i]) then answered[#answered + 1] = n end
      on_each(n, results[i], errs[i])
    end
    if j and #answered > 0 then
      local ok, jerr = j:append{event = "answered", action = action, Names = answered}
      if not ok then return jerr end
    end
  end
end

-- Whether the names of a journal's retire line fit `a.names`: the same set, or, with
-- `a.journal_subset` (apply's retire_unlisted: the devices an earlier run deleted have
-- left its plan), any part of it.
local function same_names(job, a)
  local held = {}
  for _, n in ipairs(job.Names) do held[n] = true end
  for _, n in ipairs(a.names) do
    if not held[n] then return false end
  end
  return a.journal_subset or #job.Names == #a.names
end

-- The caller's report (`a.report`) checked against the journal `j` (its events
-- `records`, nil when this run created it) and recorded in it, as an apply's journal
-- records its own (`aliyun.iot.fleet.apply_journal`): a run after a kill continues only
-- the report the journal's last `report` event names. The error, or nil.
local function note_report(j, records, a)
  local report = apply_journal.report_of(a.report, "retire")
  return apply_journal.check_report(a.journal, records, report, "retire")
    or apply_journal.append_report(j, records, report)
end

-- Whether the undo path a journal recorded (absolute, or as given before it was made so)
-- and this run's name one file: the same path, or the same file found at both.
local function same_file(recorded, given)
  if type(recorded) ~= "string" then return false end
  if recorded == given or recorded == journal_m.absolute(given) then return true end
  local kind, id = core.file_kind(recorded, true)
  local kind2, id2 = core.file_kind(given, true)
  return kind == "file" and kind2 == "file" and id == id2
end

-- The retire's journal (`a.journal`): created (nothing sent yet), or opened and held to
-- this retire's devices, undo file and target; the report recorded in it. Returns the
-- journal (nil without one) and what it holds (`retire_journal.summary`), or nil, nil and
-- the error.
local function open_journal(port, a)
  if not a.journal then return nil, rjournal.summary({}) end
  if core.file_kind(a.journal) == "none" then
    local job = target.record(port)
    -- absolute: a run again from another folder (the command apply and retire print)
    -- names the same file
    job.ProductKey, job.Names, job.undo = a.ProductKey, a.names, journal_m.absolute(a.undo)
    local j, err = rjournal.create(a.journal, job)
    if not j then return nil, nil, err end
    err = note_report(j, nil, a)
    if err then
      -- this run made it, and sent nothing: no journal is left for a retire not started
      j:close()
      os.remove(a.journal)
      return nil, nil, err
    end
    return j, rjournal.summary({})
  end
  local j, records, err = rjournal.open(a.journal)
  if not j then return nil, nil, err end
  local job, sum = records[1], rjournal.summary(records)
  err = target.check(job, port, a.ProductKey, a.journal)
  if not err and (not same_names(job, a) or not same_file(job.undo, a.undo)) then
    err = bad("journal", ("retire journal %s is the retire of %d other device(s) or of the " ..
      "undo file %s: run it again with the same names and undo file, or give a new path")
      :format(a.journal, #job.Names, errors.printable(job.undo)))
  elseif not err and sum.done then
    err = bad("journal", ("retire journal %s holds a finished retire; give a new path " ..
      "(--state FILE) for a new one"):format(a.journal))
  end
  err = err or note_report(j, records, a)
  if err then
    j:close()
    return nil, nil, err
  end
  return j, sum
end

-- DeleteDevice sent by an earlier run and not answered, the device now gone: settled as
-- deleted (recorded `answered`). Returns the names deleted by earlier runs as a set. Only
-- this run's names are settled (`names`): the others were not read.
local function settle(j, sum, found, names)
  local deleted, settled, ours = {}, {}, {}
  for _, n in ipairs(names) do ours[n] = true end
  for n in pairs(sum.answered.DeleteDevice) do deleted[n] = true end
  for n in pairs(sum.sent.DeleteDevice) do
    if ours[n] and not deleted[n] and not found[n] then deleted[n], settled[#settled + 1] = true, n end
  end
  if j and #settled > 0 then
    table.sort(settled)
    local ok, err = j:append{event = "answered", action = "DeleteDevice", Names = settled}
    if not ok then return nil, err end
  end
  return deleted
end

-- The names of `present` DisableThing is still to go to: not those the journal holds
-- answered, nor those the detail read shows DISABLE already (a retire run again without
-- a journal); the second list.
local function to_disable(present, found, sum)
  local out, already = {}, {}
  for _, n in ipairs(present) do
    if found[n].Status == "DISABLE" then already[#already + 1] = n
    elseif not sum.answered.DisableThing[n] then out[#out + 1] = n end
  end
  return out, already
end

-- The refusal of devices still online when the wait ended (how many, the first 20, the
-- way on, in the library's words: the CLI puts its flags in their place); nothing deleted,
-- but every device of the retire (`n`) is left disabled, which the user must hear with the
-- way back: the platform does not undo DisableThing by itself.
local function online_error(pk, on, n, wait)
  return errors.new{code = "DevicesOnline", Online = on, message = ("%d device(s) still " ..
    "ONLINE after a wait of %g s: %s%s; none deleted, and all %d device(s) of this retire " ..
    "are left disabled; run again with a longer `wait` for them to go offline, or with " ..
    "`force = true` to delete them while online; to keep them instead, enable each again: " ..
    "aliyun-iot call EnableThing ProductKey=%s DeviceName=NAME")
    :format(#on, wait, table.concat(on, ", ", 1, math.min(#on, 20)), #on > 20 and ", ..." or "",
      n, pk)}
end

-- DisableThing, the wait, DeleteDevice (see M.run); `done` gets the deletions' records.
local function disable_wait_delete(port, a, j, sum, present, found, done)
  local opts, err = {deadline = a.t_end}, nil
  local list, already = to_disable(present, found, sum)
  if a.on_step then a.on_step{step = "disable", Disable = list, AlreadyDisabled = already} end
  local jerr = each_device(port, a.ProductKey, "DisableThing", list, opts, function(_, r, e)
      if not r and not gone(e) then err = err or e end
    end, j)
  if jerr or err then return nil, already, jerr or err end
  local on
  on, err = M.wait_offline(port, a.ProductKey, present, a.wait, opts, a.on_wait)
  if not on then return nil, already, err end
  if #on > 0 and not a.force then
    return on, already, online_error(a.ProductKey, on, #present, a.wait)
  end
  local online_at_end = {}
  for _, n in ipairs(on) do online_at_end[n] = true end
  jerr = each_device(port, a.ProductKey, "DeleteDevice", present, opts, function(n, r, e)
    local ok = r or gone(e)
    done[n] = {DeviceName = n, outcome = ok and "deleted" or "failed",
      code = not ok and e and e.code or nil, message = not ok and e and e.message or nil,
      RequestId = answer.request_id(r and r.RequestId or e and e.request_id),
      online = online_at_end[n] or nil}
    if not ok then err = err or e end
  end, j)
  return on, already, jerr or err, true
end

-- The retire's steps after its journal is open (see M.run).
local function run_steps(port, a, j, sum)
  local opts = {deadline = a.t_end}
  local res = {Report = {}, Absent = {}, Online = {}, AlreadyDisabled = {}, undo = a.undo}
  local function record(rec)
    rec.change = "retire"
    res.Report[#res.Report + 1] = rec
    if a.on_report then a.on_report(rec, #res.Report) end
  end
  local present, found = read_devices(port, a.ProductKey, a.names, opts)
  if not present then return res, found end
  local deleted, serr = settle(j, sum, found, a.names)
  if not deleted then return res, serr end
  res.Retire = present
  for _, n in ipairs(a.names) do
    if not found[n] then res.Absent[#res.Absent + 1] = n end
  end
  -- a device deleted by an earlier run of this journal is reported deleted, not absent
  local function gone_record(n)
    return {DeviceName = n, outcome = deleted[n] and "deleted" or "absent"}
  end
  local function finish(outcome, err)
    for _, n in ipairs(a.names) do
      if not found[n] then record(gone_record(n))
      elseif outcome then
        -- a dry run tells which devices are online now: those the wait would be for
        record{DeviceName = n, outcome = outcome, code = err and err.code,
               online = outcome == "planned" and found[n].Status == "ONLINE" or nil}
      end
    end
    return res, err
  end
  if a.dry_run or #present == 0 then return finish(a.dry_run and "planned" or nil) end
  local err = M.write_undo(a.undo, a.ProductKey, present, found)
  if err then return finish("skipped", err) end
  if a.on_step then a.on_step{step = "undo", undo = a.undo} end
  local done = {}
  local on, already, derr, sent = disable_wait_delete(port, a, j, sum, present, found, done)
  err = derr
  res.Online, res.AlreadyDisabled = on or {}, already
  if not sent then return finish("skipped", err) end
  for _, n in ipairs(a.names) do record(done[n] or gone_record(n)) end
  return res, err
end

--- Retires devices (see the module).
-- @tparam table port `aliyun.iot.batch.port`
-- @tparam table a `ProductKey`, `names` (checked DeviceNames), `undo` (path), `wait` [s],
--   `force`, `dry_run`, `t_end` (absolute deadline or nil), `on_report(rec, position)`,
--   `on_wait(info)` (see `wait_offline`), `on_step(info)` (`{step = "undo", undo =
--   path}` once the undo export is written, or found holding the devices; `{step =
--   "disable", Disable = {names}, AlreadyDisabled = {names}}` before DisableThing is
--   sent), `journal` (path of the retire's journal, or nil;
--   not with `dry_run`), `journal_subset` (the journal may hold more devices than `names`:
--   apply's retire_unlisted, whose plan no longer lists those an earlier run deleted),
--   `report` (with `journal`: the file the caller writes the records into,
--   `{path=, id=, size=, new=}` or a function returning it, recorded in the journal as
--   `client:apply{report=}` is in an apply's)
-- @treturn table result `{Report = {{DeviceName=, change = "retire", outcome = "deleted" |
--   "absent" | "failed" | "skipped" | "planned", code=, message=, RequestId=, online = true
--   (deleted with `force` though still ONLINE when the wait ended; planned: ONLINE when
--   read)}}, Retire = {names
--   found}, Absent = {names not found}, Online = {names online at the end of the wait},
--   AlreadyDisabled = {names the read showed DISABLE: no DisableThing sent}, undo = path}`
-- @treturn ?table err the first failure (`DevicesOnline` with `Online` when devices stayed
--   online past `wait` without `force`; nothing deleted then; `JournalError`, or
--   `InvalidParameter` for a journal of another retire, before any request)
function M.run(port, a)
  local empty = {Report = {}, Absent = {}, Online = {}, AlreadyDisabled = {}, undo = a.undo}
  if a.journal and a.journal == a.undo then
    return empty, bad("undo", "the undo export and the journal must be two files")
  end
  local ferr = M.files_problem(a)
  if ferr then return empty, ferr end
  local j, sum, jerr = open_journal(port, a)
  if not sum then return empty, jerr end
  local res, err = run_steps(port, a, j, sum)
  if j then
    if not err then
      local ok, derr = j:append{event = "done"}
      if not ok then err = derr end
    end
    j:close()
  end
  return res, err
end

return M
