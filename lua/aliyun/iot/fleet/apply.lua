--- Carrying out a fleet plan (`aliyun.iot.fleet.diff`): every change of the plan sent as
-- the API's write actions (docs/wire.md §10), each through the port so the client paces it
-- to its action's QPS, and one report record per change.
--
-- Order: devices created first (the named path, `register_named_devices` with
-- `existing = "adopt"`, nicknames included), then the groups that do not exist
-- (CreateDeviceGroup), nicknames of existing devices (BatchUpdateDeviceNickname, 50 a
-- call), tags (DeleteDeviceProp one key a call, then SaveDeviceProp one device a call), group
-- leaves (BatchDeleteDeviceGroupRelations, 200 devices a call) and joins
-- (BatchAddDeviceGroupRelations, 200 a call): leaves first, so that a device moved from
-- 10 groups to others never holds 11. The first failure stops the writes: the
-- changes after it are reported `skipped`, and re-running apply plans them again from the
-- state read back (every write but creation is idempotent, and CreateDeviceGroup is never
-- re-sent blindly: a re-run finds the group or not).
--
-- Report records: `{DeviceName=, change=, target=, outcome=, code=, message=, RequestId=}`;
-- `change` one of `create`, `create_group`, `rename`, `tag_set`, `tag_remove`, `join`,
-- `leave`, `retire`;
-- `target` the nickname, tag keys or group name it concerns; `outcome` `created`,
-- `existing`, `invalid`, `unknown` (creation, as `register --report`), `done`, `failed`
-- (the call that carried it failed: its `code` and `message`) or `skipped` (not sent: an
-- earlier failure stopped the apply; `message` names that call). A group's creation is a
-- record of its own: `change = "create_group"`, `target` its name, no DeviceName. No
-- secret is in a record. A change a killed run sent whose answer it never reported is
-- reported by the run again from the state it reads: `outcome = "done"`,
-- `settled = "state"`, no RequestId (see `run`'s `ledger`).
-- @module aliyun.iot.fleet.apply

local answer = require "aliyun.iot.batch.answer"
local manifest_m = require "aliyun.iot.fleet.manifest"

local M = {}

local NICKNAMES_A_CALL = 50   -- BatchUpdateDeviceNickname (§10: the emulator's figure)
local RELATIONS_A_CALL = 200  -- BatchAdd/DeleteDeviceGroupRelations (§10)
local CONCURRENCY = 16        -- calls in flight at once; the pacer keeps them within QPS
-- Calls sent as one batch: their outcomes are reported (on_report, on_batch) before the
-- next batch goes out, and with a journal the batch is journaled before it is sent, so
-- that a run after a kill reports the changes of it that landed (64 calls, about 1.3 s at
-- 50 QPS; at most 64 * 200 changes, within journal.MAX_BATCH_CHANGES); each batch's end
-- waits for its slowest call.
local CHUNK = 4 * CONCURRENCY

local function record(ctx, rec)
  ctx.report[#ctx.report + 1] = rec
  if ctx.on_report then ctx.on_report(rec, #ctx.report) end
end

-- The first failure stops the writes; `ctx.cause` says, in every record skipped after
-- it, which call it was.
local function stop(ctx, err, what)
  if ctx.err then return end
  ctx.err = err
  ctx.cause = ("not sent: %s failed first (%s)"):format(what, tostring(err.code))
end

-- A batch of writes settled and its records given to on_report: the caller makes them
-- durable (on_batch) before the next batch is sent; then the journal's `sending` event of
-- the batch (`seq`, nil when none was journaled) is closed by `settled`. In this order a
-- kill between the two leaves the batch unsettled with its lines in the report: the run
-- again finds them there (`reported`) and reports none twice; the other order would lose
-- them (settled, yet never reported).
local function batch_done(ctx, seqs)
  if ctx.on_batch then ctx.on_batch() end
  if seqs and #seqs > 0 then
    local err = ctx.ledger.settled(seqs)
    if err then stop(ctx, err, "the journal's record of a settled batch") end
  end
end

--- The key of a change (`DeviceName`, `change`, `target`): one per change of a plan, the
-- same in a report record and in the journal's record of a batch in flight.
-- @tparam table c `{DeviceName=, change=, target=}` (DeviceName nil for create_group)
-- @treturn string
function M.change_key(c)
  return table.concat({c.DeviceName or "", tostring(c.change), tostring(c.target or "")}, "\0")
end

-- The changes a batch of items carries, as the report's records name them (no secret).
local function changes_of(part)
  local out = {}
  for _, item in ipairs(part) do
    for _, name in ipairs(item.names) do
      out[#out + 1] = {DeviceName = name, change = item.change,
        target = item.targets and item.targets[name] or item.target}
    end
  end
  return out
end

-- Journals a batch's changes before it is sent (`ctx.ledger`, with a journal): its seq,
-- or nil; a failed append stops the writes, the batch unsent.
local function journal_sending(ctx, changes, what)
  if not ctx.ledger or #changes == 0 then return nil end
  local seq, err = ctx.ledger.sending(changes)
  if not seq then stop(ctx, err, "the journal's record of " .. what) end
  return seq
end

-- A change's record given its call's answer or error (neither: skipped, the cause named).
local function change_record(ctx, name, change, target, res, err)
  return {DeviceName = name, change = change, target = target,
    outcome = res and "done" or err and "failed" or "skipped",
    code = err and err.code, message = err and err.message or not res and ctx.cause or nil,
    RequestId = answer.request_id(res and res.RequestId or err and err.request_id)}
end

-- The outcome of one call for each change it carried.
local function settle(ctx, action, item, res, err)
  if err then stop(ctx, err, ("%s for %s"):format(action, item.target or item.names[1])) end
  for _, name in ipairs(item.names) do
    record(ctx, change_record(ctx, name, item.change,
      item.targets and item.targets[name] or item.target, res, err))
  end
end

-- Sends items (`{params=, names=, change=, target=, targets = {[name] = target} (one
-- a device, rename's), check = function(res) -> ?err}`) of one action, CHUNK at a time;
-- after a failure the rest are skipped.
local function send_all(ctx, action, items)
  for first = 1, #items, CHUNK do
    local part, params = {}, {}
    for i = first, math.min(first + CHUNK - 1, #items) do
      part[#part + 1], params[#params + 1] = items[i], items[i].params
    end
    local seq = not ctx.err and journal_sending(ctx, changes_of(part), action)
    if ctx.err then
      for _, item in ipairs(part) do settle(ctx, action, item) end
    else
      local results, errs = ctx.port:invoke_many(action, params, ctx.opts, CONCURRENCY)
      for i, item in ipairs(part) do
        local res, err = results[i], errs[i]
        if res and item.check then err = item.check(res) end
        if err then res = nil end
        if not res and not err then
          err = answer.invalid_response("the fan-out returned no answer", {action = action})
        end
        settle(ctx, action, item, res, err)
      end
      batch_done(ctx, {seq})
    end
  end
end

--- The devices a plan creates, with their nicknames, in the plan's order: the `Devices`
-- of the creation step (`register_named_devices`, or the apply's journal).
-- @tparam table plan
-- @treturn table `{{DeviceName=, DeviceNickname=}, ...}`
function M.creations(plan)
  local devices = {}
  for _, d in ipairs(plan.Devices) do
    if d.action == "create" then
      local nick = d.rename and d.rename.to ~= "" and d.rename.to or nil
      devices[#devices + 1] = {DeviceName = d.DeviceName, DeviceNickname = nick}
    end
  end
  return devices
end

-- Creations through the named path; their nicknames go with them. With a journal (made
-- by the apply before its first write, holding these devices) the creation is that
-- journal's job, run through `client:resume`.
local function create(ctx, plan)
  local devices = M.creations(plan)
  if #devices == 0 then return end
  local res, err
  if ctx.journal then
    res, err = ctx.client:resume{journal = ctx.journal, ProductKey = ctx.pk,
      deadline = ctx.seconds_left()}
  else
    res, err = ctx.client:register_named_devices{ProductKey = ctx.pk, Devices = devices,
      existing = "adopt", deadline = ctx.seconds_left()}
  end
  M.record_creations(ctx, devices, res or err, true)
  if err then stop(ctx, err, "the creation of devices") end
  batch_done(ctx)
end

-- The creation step's outcomes (`out`: its result or error, with Report aligned with
-- `devices`) reported; `planned`: the creations of this run's plan, whose later changes
-- depend on them (a creation a killed run started and this one finished is reported
-- only: the plan was read after it).
function M.record_creations(ctx, devices, out, planned)
  local rep = out.Report or {}
  for i, dev in ipairs(devices) do
    local r = rep[i] or {outcome = "unknown"}
    record(ctx, {DeviceName = dev.DeviceName, change = "create", target = dev.DeviceNickname,
      outcome = r.outcome, code = r.code, message = r.message, RequestId = r.RequestId})
    if planned and r.outcome ~= "created" and r.outcome ~= "existing" then
      ctx.lost[dev.DeviceName] = true
    end
    -- a device that appeared meanwhile was adopted with whatever nickname it has
    if planned and r.outcome == "existing" then ctx.adopted[dev.DeviceName] = true end
  end
  if out.Devices then
    ctx.result.Devices = ctx.result.Devices or {}
    for _, d in ipairs(out.Devices) do ctx.result.Devices[#ctx.result.Devices + 1] = d end
  end
  if out.ApplyIds then
    ctx.result.ApplyIds = ctx.result.ApplyIds or {}
    for _, a in ipairs(out.ApplyIds) do ctx.result.ApplyIds[#ctx.result.ApplyIds + 1] = a end
  end
end

local function group_id_check(res)
  local id = type(res.Data) == "table" and res.Data.GroupId
  if type(id) ~= "string" or id == "" or id:find("[%z\1-\32\127]") or #id > 128 then
    return answer.invalid_response("CreateDeviceGroup answered no usable Data.GroupId",
      {action = "CreateDeviceGroup", request_id = answer.request_id(res.RequestId)})
  end
end

-- The groups that do not exist yet; one call at a time (a repeat would make a second one).
-- Each is a change of the report too (`create_group`, no DeviceName): a failed one is
-- what the joins skipped after it name.
local function create_groups(ctx, plan)
  local changes = {}
  for i, name in ipairs(plan.CreateGroups) do changes[i] = {change = "create_group", target = name} end
  local seq = not ctx.err and journal_sending(ctx, changes, "CreateDeviceGroup")
  for _, name in ipairs(plan.CreateGroups) do
    local res, err
    if not ctx.err then
      res, err = ctx.port:invoke("CreateDeviceGroup", {GroupName = name}, ctx.opts)
      err = err or group_id_check(res)
      if err then
        res = nil
        stop(ctx, err, "CreateDeviceGroup for group " .. name)
      else
        ctx.group_ids[name] = res.Data.GroupId
      end
      ctx.result.Groups[#ctx.result.Groups + 1] = {GroupName = name,
        outcome = err and "failed" or "done", code = err and err.code,
        RequestId = answer.request_id(res and res.RequestId or err and err.request_id)}
    end
    record(ctx, change_record(ctx, nil, "create_group", name, res, err))
  end
  if #plan.CreateGroups > 0 then batch_done(ctx, {seq or nil}) end
end

local function live(ctx, d) return not ctx.lost[d.DeviceName] end

local function renames(ctx, plan)
  local items, cur = {}, nil
  for _, d in ipairs(plan.Devices) do
    if d.rename and (d.action == "update" or ctx.adopted[d.DeviceName]) then
      if not cur or #cur.names == NICKNAMES_A_CALL then
        cur = {params = {DeviceNicknameInfo = {}}, names = {}, change = "rename", targets = {}}
        items[#items + 1] = cur
      end
      -- an absent Nickname removes it (§10): "" is the manifest's "no nickname"
      local info = {ProductKey = ctx.pk, DeviceName = d.DeviceName}
      if d.rename.to ~= "" then info.Nickname = d.rename.to end
      table.insert(cur.params.DeviceNicknameInfo, info)
      table.insert(cur.names, d.DeviceName)
      cur.targets[d.DeviceName] = d.rename.to -- "" when the nickname is removed
    end
  end
  send_all(ctx, "BatchUpdateDeviceNickname", items)
end

-- A tag_set's target: the keys it sets, sorted, joined by ";".
local function tag_target(set)
  local keys = {}
  for k in pairs(set) do keys[#keys + 1] = k end
  table.sort(keys)
  return table.concat(keys, ";")
end

local function tags(ctx, plan)
  local sets, removes = {}, {}
  for _, d in ipairs(plan.Devices) do
    local t = d.tags
    if t and t.set and live(ctx, d) then
      sets[#sets + 1] = {params = {ProductKey = ctx.pk, DeviceName = d.DeviceName,
        Props = manifest_m.tag_json(t.set)}, names = {d.DeviceName}, change = "tag_set",
        target = tag_target(t.set)}
    end
    for _, k in ipairs(t and t.remove or {}) do
      removes[#removes + 1] = {params = {ProductKey = ctx.pk, DeviceName = d.DeviceName,
        PropKey = k}, names = {d.DeviceName}, change = "tag_remove", target = k}
    end
  end
  -- removes before sets: a device whose 100 keys the manifest replaces has room only then
  send_all(ctx, "DeleteDeviceProp", removes)
  send_all(ctx, "SaveDeviceProp", sets)
end

-- BatchAddDeviceGroupRelations answers its counts at the top level (§10): every device of
-- the call must be added or already in the group.
local function add_check(n)
  return function(res)
    local c = {}
    for _, k in ipairs{"ValidDeviceCount", "SuccessAddedDeviceCount",
                       "AlreadyRelatedGroupDeviceCount", "ExceedTenGroupDeviceCount"} do
      c[k] = answer.count(res[k] or 0)
      if not c[k] then
        return answer.invalid_response(k .. " is not a count",
          {action = "BatchAddDeviceGroupRelations", request_id = answer.request_id(res.RequestId)})
      end
    end
    if c.SuccessAddedDeviceCount + c.AlreadyRelatedGroupDeviceCount ~= n then
      return answer.invalid_response(("%d devices sent, %d added, %d already in the group, " ..
        "%d in 10 groups already, %d valid"):format(n, c.SuccessAddedDeviceCount,
        c.AlreadyRelatedGroupDeviceCount, c.ExceedTenGroupDeviceCount, c.ValidDeviceCount),
        {action = "BatchAddDeviceGroupRelations", request_id = answer.request_id(res.RequestId)})
    end
  end
end

-- Relations grouped by group, at most RELATIONS_A_CALL devices a call.
local function relations(ctx, plan, field, change, action)
  local by_group, order = {}, {}
  for _, d in ipairs(plan.Devices) do
    for _, g in ipairs(d[field] or {}) do
      if live(ctx, d) then
        if not by_group[g] then by_group[g], order[#order + 1] = {}, g end
        table.insert(by_group[g], d.DeviceName)
      end
    end
  end
  table.sort(order)
  local items = {}
  for _, g in ipairs(order) do
    local names = by_group[g]
    for first = 1, #names, RELATIONS_A_CALL do
      local item = {params = {GroupId = ctx.group_ids[g], Device = {}}, names = {},
                    change = change, target = g}
      for i = first, math.min(first + RELATIONS_A_CALL - 1, #names) do
        table.insert(item.params.Device, {ProductKey = ctx.pk, DeviceName = names[i]})
        table.insert(item.names, names[i])
      end
      if change == "join" then item.check = add_check(#item.names) end
      items[#items + 1] = item
    end
  end
  -- a group whose creation failed has no GroupId: its joins are skipped with the rest
  if not ctx.err then
    for _, item in ipairs(items) do
      if not item.params.GroupId then stop(ctx, answer.invalid_response(
        "no GroupId for group " .. item.target, {action = action}), action) end
    end
  end
  send_all(ctx, action, items)
end

--- The keys (`change_key`) of every change a plan holds but the creations.
-- @tparam table plan
-- @treturn table set of keys
function M.planned_changes(plan)
  local keys = {}
  local function add(name, change, target)
    keys[M.change_key{DeviceName = name, change = change, target = target}] = true
  end
  for _, g in ipairs(plan.CreateGroups) do add(nil, "create_group", g) end
  for _, d in ipairs(plan.Devices) do
    local n, t = d.DeviceName, d.tags or {}
    if d.rename then add(n, "rename", d.rename.to) end
    if t.set then add(n, "tag_set", tag_target(t.set)) end
    for _, k in ipairs(t.remove or {}) do add(n, "tag_remove", k) end
    for _, g in ipairs(d.leave or {}) do add(n, "leave", g) end
    for _, g in ipairs(d.join or {}) do add(n, "join", g) end
  end
  return keys
end

-- The batches a killed run journaled as sent and never settled (`ctx.ledger.unsettled`):
-- each change of them that this run's plan, read after the kill, no longer holds has
-- landed (the state shows it) and is reported `done` now, `settled = "state"`, unless the
-- report has its line already (`ctx.reported`: the kill came after the report was synced,
-- before the journal said so). A change still planned did not land: the plan carries it
-- out again and reports it then. The batches are then journaled settled.
local function settle_from_state(ctx, plan)
  local batches = ctx.ledger and ctx.ledger.unsettled or {}
  if #batches == 0 then return end
  local planned, seen, seqs = M.planned_changes(plan), {}, {}
  for i, b in ipairs(batches) do
    seqs[i] = b.seq
    for _, c in ipairs(b.Changes) do
      local key = M.change_key(c)
      if not planned[key] and not seen[key] and not (ctx.reported and ctx.reported(c)) then
        seen[key] = true
        record(ctx, {DeviceName = c.DeviceName, change = c.change, target = c.target,
          outcome = "done", settled = "state"})
      end
    end
  end
  batch_done(ctx, seqs)
end

--- Sends a plan's changes.
-- @tparam table client the client (`register_named_devices`)
-- @tparam table port `aliyun.iot.batch.port` of that client
-- @tparam table plan from `client:plan` (with `GroupIds`)
-- @tparam table opts `ProductKey`, `journal` (the path of the apply's journal, made
--   with `aliyun.iot.fleet.apply_journal.start` for these creations, or nil), `t_end`
--   (absolute `port:clock()` deadline, or nil), `on_report(rec, position)`, `on_batch()`
--   (after each batch of writes is settled and reported, before the next one is sent),
--   `resumed` (`{Devices=, result=}`: a killed apply's creation finished from its journal
--   this run, reported first), `ledger` (`aliyun.iot.fleet.apply_journal.ledger` of the
--   apply's journal, or nil: each batch of writes journaled before it is sent and once
--   settled; the batches a killed run left unsettled reported from the plan first),
--   `reported(change) -> boolean` (whether the caller's report holds that change's `done`
--   line already: a killed run's batch may have reached it)
-- @treturn table `{Report = {records}, Groups = {{GroupName=, outcome=, code=,
--   RequestId=}}, ApplyIds=, Devices=}` (Devices: the created and adopted devices, with
--   their secrets, as `register_named_devices` returns them)
-- @treturn ?table err the first failure (the changes after it skipped)
function M.run(client, port, plan, opts)
  local ctx = {client = client, port = port, pk = opts.ProductKey, journal = opts.journal,
    opts = {deadline = opts.t_end}, report = {}, on_report = opts.on_report,
    on_batch = opts.on_batch, lost = {}, adopted = {}, ledger = opts.ledger,
    reported = opts.reported,
    group_ids = {}, result = {Groups = {}}}
  for k, v in pairs(plan.GroupIds or {}) do ctx.group_ids[k] = v end
  function ctx.seconds_left()
    return opts.t_end and math.max(opts.t_end - port:clock(), 1e-3) or nil
  end
  if opts.resumed then
    -- the creation a killed apply started, finished from its journal before the plan
    M.record_creations(ctx, opts.resumed.Devices, opts.resumed.result, false)
    batch_done(ctx)
  end
  settle_from_state(ctx, plan)
  create(ctx, plan)
  create_groups(ctx, plan)
  renames(ctx, plan)
  tags(ctx, plan)
  -- leaves before joins: a device in 10 groups moved to others has room only then (a
  -- join first is refused with ExceedTenGroupDeviceCount, and so would every re-run be)
  relations(ctx, plan, "leave", "leave", "BatchDeleteDeviceGroupRelations")
  relations(ctx, plan, "join", "join", "BatchAddDeviceGroupRelations")
  if ctx.ledger then ctx.ledger.close() end
  ctx.result.Report = ctx.report
  return ctx.result, ctx.err
end

return M
