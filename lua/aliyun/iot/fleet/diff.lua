--- The plan of a fleet: what would make a product's devices match a manifest, device by
-- device, as a pure function of the manifest (`aliyun.iot.fleet.manifest`) and the
-- product's state (`aliyun.iot.fleet.state`). `apply` carries out exactly these changes.
-- @module aliyun.iot.fleet.diff

local M = {}

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- Tags to set (manifest values the device lacks or holds otherwise), keys to remove (with
-- prune_tags) or kept (without); nil when nothing would change and nothing is kept.
local function tag_changes(want, have, prune)
  local set, n_set, extra = {}, 0, {}
  for k, v in pairs(want) do
    if have[k] ~= v then set[k], n_set = v, n_set + 1 end
  end
  for k in pairs(have) do
    if want[k] == nil then extra[#extra + 1] = k end
  end
  table.sort(extra)
  local t = {}
  if n_set > 0 then t.set = set end
  if #extra > 0 then
    if prune then t.remove = extra else t.kept = extra end
  end
  if next(t) then return t, n_set end
  return nil, 0
end

-- Groups to join and leave (sorted lists, nil when none).
local function group_changes(want, have)
  local join, leave, wanted = {}, {}, {}
  for _, g in ipairs(want) do
    wanted[g] = true
    if not have[g] then join[#join + 1] = g end
  end
  for _, g in ipairs(sorted_keys(have)) do
    if not wanted[g] then leave[#leave + 1] = g end
  end
  return #join > 0 and join or nil, #leave > 0 and leave or nil
end

-- One device's record and its counts into totals.
local function device_plan(rec, dev, opts, totals)
  local d = {DeviceName = rec.DeviceName}
  local now = dev or {Nickname = "", tags = {}, groups = {}}
  if rec.Nickname ~= nil and rec.Nickname ~= (now.Nickname or "") then
    -- a created device's nickname is set too (with its creation): counted like the others
    d.rename = {from = now.Nickname or "", to = rec.Nickname}
    totals.rename = totals.rename + 1
  end
  if rec.tags then
    local n_set
    d.tags, n_set = tag_changes(rec.tags, now.tags or {}, opts.prune_tags)
    totals.tag_set = totals.tag_set + n_set
    totals.tag_remove = totals.tag_remove + (d.tags and d.tags.remove and #d.tags.remove or 0)
  end
  if rec.groups then
    d.join, d.leave = group_changes(rec.groups, now.groups or {})
    totals.join = totals.join + (d.join and #d.join or 0)
    totals.leave = totals.leave + (d.leave and #d.leave or 0)
  end
  local changed = d.rename or (d.tags and (d.tags.set or d.tags.remove)) or d.join or d.leave
  d.action = not dev and "create" or changed and "update" or "nothing"
  totals[d.action] = totals[d.action] + 1
  return d
end

--- Compares a manifest with a product's state.
-- @tparam table manifest from `aliyun.iot.fleet.manifest` (`devices`, `by_name`)
-- @tparam table state from `aliyun.iot.fleet.state.read`: `devices = {[DeviceName] =
--   {Nickname=, tags=, groups = {[GroupName] = true}}}`, `groups = {[GroupName] = GroupId}`
-- @tparam[opt] table opts `prune_tags` (remove tag keys the manifest does not list),
--   `retire_unlisted` (retire the devices the manifest does not list)
-- @treturn table plan `{Devices = {...}, Unlisted = {names}, Retire = {names},
--   RetireOnline = {names}, CreateGroups = {names}, Totals = {...}, changes = n, Disabled =
--   {names}}` (Disabled: the manifest's devices the state shows `DISABLE`; no change, apply
--   leaves them so; RetireOnline: those of Retire the state shows `ONLINE`, as the
--   product's listing gave it: the retire waits for them). Each of `Devices` (manifest
--   order) is `{DeviceName=, action = "create"|"update"|"nothing", rename = {from=, to=},
--   tags = {set = {k = v}, remove = {keys}, kept = {keys}}, join = {groups}, leave =
--   {groups}}`, fields present only where they apply (a created device's nickname is its
--   `rename` from ""). `Totals`: `devices`, `create`, `update`, `nothing`, `rename`
--   (nicknames set or cleared, a created device's included), `tag_set` and `tag_remove`
--   (keys), `join` and `leave` (device-group pairs), `create_group`, `unlisted`, `retire`,
--   `retire_online` (of them, ONLINE now).
--   `changes`: create + update + create_group + retire, 0 when applying would change
--   nothing.
function M.plan(manifest, state, opts)
  opts = opts or {}
  local totals = {devices = #manifest.devices, create = 0, update = 0, nothing = 0, rename = 0,
                  tag_set = 0, tag_remove = 0, join = 0, leave = 0}
  local out, new_groups, disabled = {}, {}, {}
  for i, rec in ipairs(manifest.devices) do
    local dev = state.devices[rec.DeviceName]
    out[i] = device_plan(rec, dev, opts, totals)
    if dev and dev.Disabled then disabled[#disabled + 1] = rec.DeviceName end
    for _, g in ipairs(rec.groups or {}) do
      if not state.groups[g] then new_groups[g] = true end
    end
  end
  local unlisted = {}
  for name in pairs(state.devices) do
    if not manifest.by_name[name] then unlisted[#unlisted + 1] = name end
  end
  table.sort(unlisted)
  local create_groups = sorted_keys(new_groups)
  totals.create_group, totals.unlisted = #create_groups, #unlisted
  totals.retire = opts.retire_unlisted and #unlisted or 0
  local online = {}
  for _, name in ipairs(opts.retire_unlisted and unlisted or {}) do
    if state.devices[name].Online then online[#online + 1] = name end
  end
  totals.retire_online = #online
  return {Devices = out, Unlisted = unlisted, Retire = opts.retire_unlisted and unlisted or {},
          RetireOnline = online,
          CreateGroups = create_groups, Totals = totals, Disabled = disabled,
          changes = totals.create + totals.update + totals.create_group + totals.retire}
end

return M
