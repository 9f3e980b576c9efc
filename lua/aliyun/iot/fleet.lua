--- Fleet helpers: a product's devices described in one manifest (`aliyun.iot.fleet.manifest`),
-- and what it would take to make the product match it. Installed on the client class:
--
--     local plan, err = client:plan{ProductKey = pk, manifest = "fleet.csv"}
--     -- plan.Totals.create, plan.Devices[i].action == "create" | "update" | "nothing", ...
--
--     local res, err = client:apply{ProductKey = pk, manifest = "fleet.csv", journal = "f.state"}
--     local res, err = client:retire{ProductKey = pk, Devices = {"old_01"}, undo = "old.csv"}
--
-- `plan` only reads: the product's devices (`client:product_devices`, QueryDevice with
-- NextToken), nicknames (BatchQueryDeviceDetail where the listing lacks them), tags
-- (QueryDeviceProp), groups (QueryDeviceGroupList, QueryDeviceListByDeviceGroup), each paced
-- to its QPS by the client; the comparison itself is `aliyun.iot.fleet.diff`.
--
-- Arguments follow the batch helpers' rule: a wrong Lua type or an unknown option raises;
-- a bad value returns `nil, err` (`InvalidParameter`) before any request is sent, a
-- manifest breaking a documented limit included (its message names the line).
-- @module aliyun.iot.fleet

local manifest_m = require "aliyun.iot.fleet.manifest"
local state_m = require "aliyun.iot.fleet.state"
local diff = require "aliyun.iot.fleet.diff"
local apply_m = require "aliyun.iot.fleet.apply"
local retire_m = require "aliyun.iot.fleet.retire"
local apply_journal = require "aliyun.iot.fleet.apply_journal"
local journal = require "aliyun.iot.journal"
local port_m = require "aliyun.iot.batch.port"
local validate = require "aliyun.iot.validate"
local errors = require "aliyun.iot.errors"

local M = {}

local PLAN_ARGS = {ProductKey = "string", manifest = true, prune_tags = "boolean",
                   retire_unlisted = "boolean", deadline = "number"}
local RETIRE_ARGS = {ProductKey = "string", Devices = "table", undo = "string", wait = "number",
                     force = "boolean", dry_run = "boolean", deadline = "number",
                     on_report = "function", on_wait = "function", journal = "string",
                     report = true, on_step = "function"}
local APPLY_ARGS = {ProductKey = "string", manifest = true, prune_tags = "boolean",
                    journal = "string", deadline = "number", on_report = "function",
                    retire_unlisted = "boolean", undo = "string", wait = "number",
                    force = "boolean", report = true, on_batch = "function",
                    on_wait = "function", allow_empty = "boolean", on_plan = "function",
                    reported = "function"}
--- The longest wait for devices to go offline (`wait` of retire and apply) [s]: a day.
M.MAX_WAIT = 86400

local function bad(parameter, message)
  return errors.new{code = "InvalidParameter", parameter = parameter, message = message}
end

-- The argument rule: misuse raises at the caller's level, bad values return an error.
local function check_args(args, level, what, allowed)
  what, allowed = what or "plan", allowed or PLAN_ARGS
  if type(args) ~= "table" then error(what .. " expects a table of arguments", level) end
  for k, v in pairs(args) do
    local want = allowed[k]
    if not want then error(("%s: unknown argument %s"):format(what, tostring(k)), level) end
    if want ~= true and type(v) ~= want then
      error(("%s: %s must be a %s, got %s"):format(what, k, want, type(v)), level)
    end
  end
  if args.journal == "" then return bad("journal", "journal must be a path") end
  local why = args.ProductKey == nil and "is required" or validate.product_key_problem(args.ProductKey)
  if why then return bad("ProductKey", "ProductKey " .. why) end
  if allowed.manifest and args.manifest == nil then return bad("manifest", "manifest is required") end
  if args.deadline ~= nil and not (args.deadline > 0 and args.deadline < math.huge) then
    return bad("deadline", "deadline must be a positive number of seconds")
  end
  -- NaN fails both comparisons: refused like a negative or endless wait
  if args.wait ~= nil and not (args.wait >= 0 and args.wait <= M.MAX_WAIT) then
    return bad("wait", ("wait must be a number of seconds from 0 to %d"):format(M.MAX_WAIT))
  end
end

-- A device's tags once the plan's are set next to those it keeps (the manifest does not
-- list them, no prune_tags) must be within SaveDeviceProp's limits for the device, or
-- every apply would be refused there: the InvalidParameter, or nil.
local function kept_tags_problem(p, state)
  for _, d in ipairs(p.Devices) do
    if d.tags and d.tags.set and d.tags.kept then
      local all, n = {}, 0
      for k, v in pairs(state.devices[d.DeviceName].tags or {}) do all[k], n = v, n + 1 end
      for k, v in pairs(d.tags.set) do
        if all[k] == nil then n = n + 1 end
        all[k] = v
      end
      local size = #manifest_m.tag_json(all)
      if n > manifest_m.MAX_TAGS or size > manifest_m.MAX_TAG_BYTES then
        return bad("manifest", ("device %s would hold %d tags, %d bytes of JSON (at most %d " ..
          "and %d a device), %d of them kept though the manifest does not list them: " ..
          "prune them (prune_tags, --prune-tags)"):format(d.DeviceName, n, size,
          manifest_m.MAX_TAGS, manifest_m.MAX_TAG_BYTES, #d.tags.kept))
      end
    end
  end
end

-- The plan of a loaded manifest (args as for plan).
local function plan_of(self, manifest, args)
  local port = port_m.new(self)
  local t_end = args.deadline and port:clock() + args.deadline
  local state, err = state_m.read(port, {ProductKey = args.ProductKey, manifest = manifest,
    deadline = t_end,
    devices = self:product_devices{ProductKey = args.ProductKey, deadline = args.deadline}})
  if not state then return nil, err end
  local p = diff.plan(manifest, state, {prune_tags = args.prune_tags,
                                        retire_unlisted = args.retire_unlisted})
  err = kept_tags_problem(p, state)
  if err then return nil, err end
  p.ProductKey, p.GroupIds = args.ProductKey, state.groups
  return p
end

--- The plan of a product against a manifest: what `apply` would do, device by device,
-- sending no write.
-- @tparam table args `ProductKey` (string), `manifest` (a path to a CSV or JSON lines
--   file, or a Lua array of `{DeviceName=, Nickname=, tags = {k = v} | "k=v;k=v",
--   groups = {names} | "a;b"}`), `prune_tags` (boolean: plan removing tag keys the
--   manifest does not list), `retire_unlisted` (boolean: plan retiring the devices it does
--   not list), `deadline` [s from now: no request starts after it]
-- @treturn ?table plan (`aliyun.iot.fleet.diff.plan`) with `ProductKey`: `Devices`,
--   `Unlisted`, `Retire`, `CreateGroups`, `Totals`, `changes` (0: nothing to do),
--   `Disabled` (the manifest's devices listed `DISABLE`: no change, apply leaves them so), and
--   `GroupIds` (`{[GroupName] = GroupId}`, the account's groups, read when a manifest
--   device lists groups)
-- @treturn ?table err `InvalidParameter` (a bad argument, a manifest breaking a rule,
--   nothing sent), `InvalidResponse`, `DeadlineExceeded` or any read's error
-- @raise on misuse: args not a table, an unknown argument, a wrong Lua type (a manifest
--   record's too)
local function plan(self, args)
  local bad_arg = check_args(args, 3)
  if bad_arg then return nil, bad_arg end
  local manifest, err = manifest_m.load(args.manifest, 2)
  if not manifest then return nil, err end
  return plan_of(self, manifest, args)
end

-- apply's retire_unlisted: the plan's Retire list retired (`aliyun.iot.fleet.retire`),
-- its records added to the apply's report. With the apply's journal, the retire keeps its
-- own beside it (`JOURNAL.retire`, `aliyun.iot.fleet.retire_journal`), so that a killed
-- apply run again repeats no answered DisableThing or DeleteDevice; the plan of that run
-- no longer lists the devices deleted before, hence `journal_subset`. It is kept, as the
-- undo export is: a later apply retiring other devices needs a new journal path.
local function retire_unlisted(port, args, p, res, t_end)
  local n = #res.Report
  local r, err = retire_m.run(port, {ProductKey = args.ProductKey, names = p.Retire,
    undo = args.undo, wait = args.wait or 600, force = args.force, t_end = t_end,
    journal = args.journal and args.journal .. ".retire", journal_subset = true,
    on_wait = args.on_wait,
    on_report = args.on_report and function(rec, pos) args.on_report(rec, n + pos) end})
  for _, rec in ipairs(r.Report) do res.Report[#res.Report + 1] = rec end
  res.Online = r.Online
  if err and err.parameter == "journal" then
    err.message = err.message .. " (apply's retire journal is FILE.retire of --state FILE)"
  end
  return err
end

-- The caller's report (`apply_journal.report_of`).
local function report_of(args) return apply_journal.report_of(args.report, "apply") end

-- A killed apply's creation finished from its journal (`records`, checked by
-- `apply_journal.inspect`), after this run's report is recorded in it: nil, or
-- `{Devices=, result=}` when this run finished it (its outcomes are this run's to
-- report), or nil and the error.
local function resume_creation(self, path, records, args, seconds)
  local report = report_of(args)
  local err = apply_journal.check_report(path, records, report)
    or apply_journal.note_report(path, records, report)
  if err then return nil, err end
  local devices = records[1].Devices or {}
  if #devices == 0 then return nil end -- it planned no creation
  local res, rerr = self:resume{journal = path, deadline = seconds}
  if rerr then return nil, rerr end
  if not journal.finished(records) then return {Devices = devices, result = res} end
end

-- What is at the apply's journal path (`apply_journal.inspect`: "none", "empty" or
-- "journal", the last one's creation finished first, see resume_creation), the report
-- checked against it; nil and the error when it cannot be this apply's.
local function open_journal(self, args, digest, seconds)
  local found, records, err = apply_journal.inspect(args.journal, args.ProductKey)
  if not found then return nil, nil, err end
  err = found == "journal" and (apply_journal.check_manifest(args.journal, records, digest)
    or apply_journal.check_options(args.journal, records, args))
  if err then return nil, nil, err end
  if found ~= "journal" then
    if type(args.report) == "table" then
      err = apply_journal.check_report(args.journal, nil, args.report)
      if err then return nil, nil, err end
    end
    return found
  end
  local resumed
  resumed, err = resume_creation(self, args.journal, records, args, seconds)
  if err then return nil, nil, err end
  return found, resumed, nil, records
end

-- The apply's journal created before its first write (`aliyun.iot.fleet.apply_journal`).
local function start_journal(port, p, args, digest, reuse_empty)
  local report = report_of(args)
  local err = apply_journal.check_report(args.journal, nil, report)
  if err then return err end
  return apply_journal.start(port, args.journal, {ProductKey = args.ProductKey,
    Devices = apply_m.creations(p), report = report, reuse_empty = reuse_empty,
    manifest = type(args.manifest) == "string" and args.manifest or nil, digest = digest,
    prune_tags = args.prune_tags, retire_unlisted = args.retire_unlisted})
end

--- Makes a product match a manifest: the plan (`client:plan`) read, then its changes sent
-- (`aliyun.iot.fleet.apply`): creations through the named path with `existing = "adopt"`
-- (BatchCheckDeviceNames, BatchRegisterDeviceWithApplyId; D-69482, D-69514), then
-- CreateDeviceGroup, BatchUpdateDeviceNickname, SaveDeviceProp, DeleteDeviceProp (only
-- with `prune_tags`), BatchAddDeviceGroupRelations and BatchDeleteDeviceGroupRelations
-- (docs/wire.md §10), each paced to its QPS by the client. Applying twice sends no write
-- the second time: its plan is empty.
--
-- Resuming: `journal` is the path of the apply's journal (`aliyun.iot.fleet.apply_journal`:
-- the creation step's batch journal, the one step whose lost answer a re-read cannot
-- settle, marked as an apply's), created after the plan is read and before the first
-- write, whether or not the plan creates a device. A killed apply is resumed by calling
-- apply again with the same `journal`, manifest, `prune_tags` and `retire_unlisted` (the
-- journal records them; others are refused before any request): the unfinished creation is finished from it first
-- (`client:resume`, its outcomes reported), then the state is read again and only what is
-- still missing is sent, so no write is repeated (every other write is visible in the
-- state read back). An empty regular file at `journal` (a run killed before the journal's
-- first line) is taken as "no creation started". The journal is removed when the apply
-- that created it ends without error.
-- @tparam table args `ProductKey`, `manifest` (as for `plan`), `prune_tags` (boolean),
--   `journal` (path, optional), `deadline` [s from now], `on_report(record, position)`
--   (each change's outcome as it is decided), `on_batch()` (called after each batch of
--   writes is settled and its records given to on_report, before the next batch is sent:
--   where a caller makes them durable), `report` (`{path=, id=, size=, new=}`: the file
--   the caller writes the records into, its "device:inode" identity and size now, `new`
--   when this run created it; recorded in the journal so that a run after a kill may
--   continue it: one not `new` is refused unless the journal's last record of a report
--   is that file; or a function returning it, called once right before the journal
--   records it, so that a file it creates then is recorded at once), `retire_unlisted`
--   (boolean: retire the devices the manifest does not list, after the other changes, as
--   `retire` does, with `undo` (required then), `wait` [s, 0 to `MAX_WAIT`], `force` and
--   `on_wait`; a manifest listing no device is refused then, unless `allow_empty`),
--   `on_plan(plan)` (called once the plan is read, before its first write: where a caller
--   shows what is about to be done; a killed apply's creation finished from its journal
--   comes before it), `reported(change) -> boolean` (with `journal`: whether the caller's
--   report holds a `done` line for `{DeviceName=, change=, target=}` already; see below)
--
-- Each batch of writes but the creation's is journaled before it is sent and once its
-- records were given to `on_report` and `on_batch` returned: a run after a kill reports
-- the changes of a batch left in flight that landed (the plan read again no longer holds
-- them) as `done` with `settled = "state"`, before its own, skipping those `reported`
-- says the report has (a kill after on_batch, before the journal's record of it).
-- @treturn ?table `{ProductKey=, Plan = plan, Report = {{DeviceName=, change=, target=,
--   outcome=, code=, message=, RequestId=}, ...}, Groups = {{GroupName=, outcome=}},
--   ApplyIds=, Devices=}` (`aliyun.iot.fleet.apply`; Devices with secrets, the created
--   and adopted ones)
-- @treturn ?table err `InvalidParameter` (nothing sent: a bad value, a journal of another
--   job or product or of another manifest (`apply_journal.check_manifest`) or other
--   options (`apply_journal.check_options`: `parameter` the option), a report that
--   cannot be continued, an empty manifest with `retire_unlisted`), `JournalError`, a read's error
--   (nothing written), or the first write's failure with `Report` and `Plan`
-- @raise on misuse, as `plan` (and `on_report` or `on_batch` not a function, `journal`
--   not a string, `report` neither a table nor a function)
local function apply(self, args)
  local bad_arg = check_args(args, 3, "apply", APPLY_ARGS)
  if args.report ~= nil and type(args.report) ~= "table" and type(args.report) ~= "function" then
    error("apply: report must be a table or a function, got " .. type(args.report), 2)
  end
  if not bad_arg and args.retire_unlisted and args.undo == nil then
    bad_arg = bad("undo", "retire_unlisted needs undo (the path of the undo export)")
  elseif not bad_arg and args.journal and (args.journal == args.undo
      or args.retire_unlisted and args.journal .. ".retire" == args.undo) then
    -- refused now, not when the retire starts after the other writes
    bad_arg = bad("undo", "the undo export must be another file than the journal and the " ..
      "retire's journal beside it (JOURNAL.retire)")
  end
  if not bad_arg and args.retire_unlisted then
    -- the retire comes after every other write: its files are checked before the first
    bad_arg = retire_m.files_problem{undo = args.undo,
                                     journal = args.journal and args.journal .. ".retire"}
  end
  if bad_arg then return nil, bad_arg end
  local manifest, err = manifest_m.load(args.manifest, 2)
  if not manifest then return nil, err end
  if args.retire_unlisted and #manifest.devices == 0 and not args.allow_empty then
    -- a header-only file would retire every device of the product
    return nil, bad("manifest", "the manifest lists no device: retire_unlisted would retire " ..
      "every device of the product; if that is meant, say so (allow_empty, " ..
      "--allow-empty-manifest)")
  end
  local digest = manifest_m.digest(manifest)
  local port = port_m.new(self)
  local t_end = args.deadline and port:clock() + args.deadline
  local function left() return t_end and math.max(t_end - port:clock(), 1e-3) or nil end
  local path = args.journal
  local found, resumed, records = "none", nil, nil
  if path then
    found, resumed, err, records = open_journal(self, args, digest, left())
    if not found then return nil, err end
  end
  local p
  p, err = plan_of(self, manifest, {ProductKey = args.ProductKey, prune_tags = args.prune_tags,
                                    retire_unlisted = args.retire_unlisted, deadline = left()})
  if not p then return nil, err end
  if #p.Retire > 0 then
    -- an undo file left by another retire would refuse this one after all other writes
    err = retire_m.files_problem{undo = args.undo, holds = p.Retire}
    if err then return nil, err end
  end
  if args.on_plan then args.on_plan(p) end
  local new_journal = path and found ~= "journal"
  if new_journal then
    err = start_journal(port, p, args, digest, found == "empty")
    if err then return nil, err end
  end
  local res, werr = apply_m.run(self, port, p, {ProductKey = args.ProductKey,
    journal = new_journal and path or nil, t_end = t_end, on_report = args.on_report,
    on_batch = args.on_batch, resumed = resumed, reported = args.reported,
    ledger = path and apply_journal.ledger(path, records)})
  res.ProductKey, res.Plan = args.ProductKey, p
  if not werr and #p.Retire > 0 then werr = retire_unlisted(port, args, p, res, t_end) end
  if werr then
    werr.Report, werr.Plan = res.Report, p
    return nil, werr
  end
  if new_journal then journal.discard(path) end
  return res
end

-- Retire's names: strings or {DeviceName=} records (misuse raises), checked by the
-- DeviceName rule and for duplicates; nil and the error for a bad one.
local function retire_names(list)
  local out, seen = {}, {}
  local n, hole = validate.list_length(list)
  if not n then
    error(hole and ("retire: Devices[%d] is missing: a list must have no hole"):format(hole)
      or "retire: Devices must be a list (keys 1..n)", 4)
  end
  for i = 1, n do
    local v = list[i]
    local name = type(v) == "table" and v.DeviceName or v
    if type(name) ~= "string" then
      error(("retire: Devices[%d] must be a DeviceName or {DeviceName=}"):format(i), 4)
    end
    local why = validate.device_name_problem(name) or (seen[name] and "is given twice")
    if why then return nil, bad("Devices", ("device %s %s"):format(errors.printable(name), why)) end
    seen[name], out[i] = true, name
  end
  if #out == 0 then return nil, bad("Devices", "Devices lists no device") end
  return out
end

--- Retires devices: the undo export written first (the devices with their secrets, mode
-- 0600, a new file), then DisableThing, a wait until BatchGetDeviceState shows none of
-- them `ONLINE`, then DeleteDevice, each paced to its QPS (docs/wire.md §4, §10; see
-- `aliyun.iot.fleet.retire`). Run again with the same `undo` (and `journal`), it goes on
-- where it stopped; with `journal` (`aliyun.iot.fleet.retire_journal`) it repeats no
-- DisableThing or DeleteDevice that was answered and settles one in flight by a read first.
-- @tparam table args `ProductKey`, `Devices` (names, or `{DeviceName=}` records), `undo`
--   (path of the undo export; required unless `dry_run`), `wait` [s, default 600, at most
--   `MAX_WAIT`: how long to wait for the devices to go offline], `force` (delete those still online when
--   the wait ends), `dry_run` (read only: what would be retired), `deadline` [s],
--   `on_report(record, position)`, `on_wait{Online = {names}, total =, waited = s, wait = s}`
--   (called before each pause of the wait, while some are still ONLINE), `on_step(info)`
--   (`{step = "undo", undo = path}` once the undo export is written or found holding the
--   devices, `{step = "disable", Disable = {names}, AlreadyDisabled = {names}}` before
--   DisableThing is sent: what a caller tells before a wait), `journal` (path:
--   a new file, or the journal of the same retire stopped before; not with `dry_run`),
--   `report` (with `journal`: `{path=, id=, size=, new=}`, the file the caller writes the
--   records into, or a function returning it, called once right before the journal
--   records it; as `apply`'s: one not `new` is refused unless the journal's last record
--   of a report is that file)
-- @treturn ?table `{Report = {{DeviceName=, change = "retire", outcome = "deleted" |
--   "absent" | "planned", RequestId=, online = true (deleted by `force` while ONLINE)}},
--   Retire = {names found}, Absent = {names}, Online = {names online when the wait ended},
--   AlreadyDisabled = {names shown DISABLE when read: no DisableThing sent}, undo = path}`
-- @treturn ?table err `InvalidParameter` (nothing sent, or the undo file exists without
--   the devices, or the journal is another retire's or a finished one), `JournalError`,
--   `TargetMismatch`, `UndoError`, `DevicesOnline` (with `Online`; nothing deleted), a call's
--   error; each with `Report`
-- @raise on misuse (not a table, an unknown argument, a wrong Lua type, `report` neither
--   a table nor a function, Devices not a list or with a hole)
local function retire(self, args)
  local bad_arg = check_args(args, 3, "retire", RETIRE_ARGS)
  if args.report ~= nil and type(args.report) ~= "table" and type(args.report) ~= "function" then
    error("retire: report must be a table or a function, got " .. type(args.report), 2)
  end
  if not bad_arg and args.undo == nil and not args.dry_run then
    bad_arg = bad("undo", "undo (the path of the undo export) is required")
  end
  if not bad_arg and args.journal and args.dry_run then
    bad_arg = bad("journal", "a dry run keeps no journal")
  elseif not bad_arg and args.journal and args.journal == args.undo then
    bad_arg = bad("undo", "the undo export and the journal must be two files")
  end
  if bad_arg then return nil, bad_arg end
  local names, err = retire_names(args.Devices)
  if not names then return nil, err end
  local port = port_m.new(self)
  local res
  res, err = retire_m.run(port, {ProductKey = args.ProductKey, names = names, undo = args.undo,
    journal = args.journal, wait = args.wait or 600, force = args.force, dry_run = args.dry_run,
    t_end = args.deadline and port:clock() + args.deadline, on_report = args.on_report,
    on_wait = args.on_wait, report = args.report, on_step = args.on_step})
  if err then
    err.Report = res.Report
    return nil, err
  end
  return res
end

--- Adds the fleet helpers to the client class (called once by `aliyun.iot`).
-- @tparam table Client the client metatable
function M.install(Client)
  Client.plan = plan
  Client.apply = apply
  Client.retire = retire
end

return M
