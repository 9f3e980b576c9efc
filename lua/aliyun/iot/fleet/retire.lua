--- Retiring devices: deleting is final (their credentials stop working), and deleting
-- devices that are online makes them reconnect in a storm that throttles the account
-- (docs/wire.md §10). So, in order: the devices read (BatchQueryDeviceDetail, 100 a call),
-- the undo export written (their secrets, mode 0600, a new file, never an existing one),
-- DisableThing for each, a wait until BatchGetDeviceState shows none `ONLINE` (any other
-- status counts as offline), then DeleteDevice for each, every action paced by the client.
--
-- Resuming: the undo file is written before the first write and kept. Retiring the same
-- names again with the same undo file finds the devices already deleted absent (they are
-- reported `absent`), checks that the undo file holds every device still to delete, and
-- goes on from there; DisableThing and DeleteDevice leave the same state when repeated.
-- @module aliyun.iot.fleet.retire

local answer = require "aliyun.iot.batch.answer"
local detail = require "aliyun.iot.batch.detail"
local errors = require "aliyun.iot.errors"
local validate = require "aliyun.iot.validate"
local core = require "aliyun.iot.core"

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
    local got, err = detail.fetch(port, pk, chunk, opts)
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

--- Writes the undo export (a new file, 0600, written and fsync'ed before any write is
-- sent), or, when the file exists (a retire run again), checks that it holds every device
-- still to delete, by IotId: a device made again under a deleted one's name since is not
-- the one the export holds, and deleting it would lose its secret.
-- @treturn ?table err `InvalidParameter` (the file exists without those devices) or
--   `JournalError`-like `UndoError` (it cannot be written)
function M.write_undo(path, pk, present, found)
  local file, why = core.journal_open(path, "create")
  if not file then
    if core.file_kind(path) ~= "file" then
      return errors.new{code = "UndoError", message = ("cannot create undo file %s: %s")
        :format(path, tostring(why))}
    end
    local held, err = undo_names(path)
    if not held then return err end
    for _, n in ipairs(present) do
      if not held[n] then
        return bad("undo", ("undo file %s exists and does not hold device %s: give the path " ..
          "of a new file (an undo export is never overwritten)"):format(path, n))
      elseif held[n] ~= found[n].IotId then
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
  local ok, werr = file:append(table.concat(lines, "\n") .. "\n")
  file:close()
  if not ok then
    return errors.new{code = "UndoError", message = ("cannot write undo file %s: %s")
      :format(path, tostring(werr))}
  end
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
    local res = results[i]
    if not res then return nil, errs[i] end
    local asked = {}
    for _, n in ipairs(params.DeviceName) do asked[n] = true end
    local sl = type(res.DeviceStatusList) == "table" and res.DeviceStatusList.DeviceStatus or {}
    local n = validate.list_length(sl)
    if not n or n > #params.DeviceName then
      return nil, answer.invalid_response("BatchGetDeviceState: DeviceStatus is not a list of " ..
        "at most the devices asked for", {action = "BatchGetDeviceState",
        request_id = answer.request_id(res.RequestId)})
    end
    for _, s in ipairs(sl) do
      if type(s) ~= "table" or not asked[s.DeviceName] or type(s.Status) ~= "string" then
        return nil, answer.invalid_response("BatchGetDeviceState: a status is not one of the " ..
          "devices asked for, or has no Status", {action = "BatchGetDeviceState",
          request_id = answer.request_id(res.RequestId)})
      end
      if s.Status == "ONLINE" then out[#out + 1] = s.DeviceName end
    end
  end
  return out
end

--- Waits until none of `names` is ONLINE, polling with pauses growing from 1 s to 5 s.
-- @treturn ?table the names still online when `wait` ran out ({} when none)
-- @treturn ?table err a call's error
function M.wait_offline(port, pk, names, wait, opts)
  local t_end, pause = port:clock() + wait, 1
  while true do
    local on, err = online(port, pk, names, opts)
    if not on then return nil, err end
    if #on == 0 or port:clock() >= t_end then return on end
    local left = t_end - port:clock()
    if opts.deadline then left = math.min(left, opts.deadline - port:clock()) end
    if left <= 0 then return on end
    port:pause(math.min(pause, left))
    pause = math.min(pause * 2, 5)
  end
end

-- Sends one action for each name (ProductKey + DeviceName), paced; calls on_each(name,
-- res, err) in order.
local function each_device(port, pk, action, names, opts, on_each)
  for first = 1, #names, 1000 do
    local list, part = {}, {}
    for i = first, math.min(first + 999, #names) do
      part[#part + 1], list[#list + 1] = names[i], {ProductKey = pk, DeviceName = names[i]}
    end
    local results, errs = port:invoke_many(action, list, opts, CONCURRENCY)
    for i, n in ipairs(part) do on_each(n, results[i], errs[i]) end
  end
end

-- A device already gone counts as deleted (a repeat of a delete whose answer was lost).
local function gone(err)
  return err and err.code == "iot.device.NotExistedDevice"
end

--- Retires devices (see the module).
-- @tparam table port `aliyun.iot.batch.port`
-- @tparam table a `ProductKey`, `names` (checked DeviceNames), `undo` (path), `wait` [s],
--   `force`, `dry_run`, `t_end` (absolute deadline or nil), `on_report(rec, position)`
-- @treturn table result `{Report = {{DeviceName=, change = "retire", outcome = "deleted" |
--   "absent" | "failed" | "skipped" | "planned", code=, message=, RequestId=}}, Retire =
--   {names found}, Absent = {names not found}, Online = {names online at the end of the
--   wait}, undo = path}`
-- @treturn ?table err the first failure (`DevicesOnline` with `Online` when devices stayed
--   online past `wait` without `force`; nothing deleted then)
function M.run(port, a)
  local opts = {deadline = a.t_end}
  local res = {Report = {}, Absent = {}, Online = {}, undo = a.undo}
  local function record(rec)
    rec.change = "retire"
    res.Report[#res.Report + 1] = rec
    if a.on_report then a.on_report(rec, #res.Report) end
  end
  local present, found = read_devices(port, a.ProductKey, a.names, opts)
  if not present then return res, found end
  res.Retire = present
  for _, n in ipairs(a.names) do
    if not found[n] then res.Absent[#res.Absent + 1] = n end
  end
  local function finish(outcome, err)
    for _, n in ipairs(a.names) do
      if not found[n] then record{DeviceName = n, outcome = "absent"}
      elseif outcome then record{DeviceName = n, outcome = outcome, code = err and err.code} end
    end
    return res, err
  end
  if a.dry_run or #present == 0 then return finish(a.dry_run and "planned" or nil) end
  local err = M.write_undo(a.undo, a.ProductKey, present, found)
  if err then return finish("skipped", err) end
  each_device(port, a.ProductKey, "DisableThing", present, opts, function(_, r, e)
    if not r and not gone(e) then err = err or e end
  end)
  if err then return finish("skipped", err) end
  local on
  on, err = M.wait_offline(port, a.ProductKey, present, a.wait, opts)
  if not on then return finish("skipped", err) end
  res.Online = on
  if #on > 0 and not a.force then
    local shown = table.concat(on, ", ", 1, math.min(#on, 20))
    return finish("skipped", errors.new{code = "DevicesOnline", Online = on, message = ("%d " ..
      "device(s) still online after %g s (disabled, not deleted): %s%s; wait longer, or " ..
      "force"):format(#on, a.wait, shown, #on > 20 and ", ..." or "")})
  end
  local done = {}
  each_device(port, a.ProductKey, "DeleteDevice", present, opts, function(n, r, e)
    local ok = r or gone(e)
    done[n] = {DeviceName = n, outcome = ok and "deleted" or "failed",
      code = not ok and e and e.code or nil, message = not ok and e and e.message or nil,
      RequestId = answer.request_id(r and r.RequestId or e and e.request_id)}
    if not ok then err = err or e end
  end)
  for _, n in ipairs(a.names) do record(done[n] or {DeviceName = n, outcome = "absent"}) end
  return res, err
end

return M
