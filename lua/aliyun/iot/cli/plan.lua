--- `aliyun-iot plan`: what `apply` would do to make a product match a manifest, printed
-- device by device and in totals; it reads and never writes (`client:plan`).
-- @module aliyun.iot.cli.plan

local commands = require "aliyun.iot.cli.commands"
local report = require "aliyun.iot.cli.report"
local printable = require("aliyun.iot.errors").printable
local quoted = require("aliyun.iot.errors").quoted

local M = {}

--- Exit status of a plan with changes under `--detailed-exitcode` (0 without changes).
M.EXIT_CHANGES = 2

--- The exit status of a usage error: 2, or 1 for a `plan --detailed-exitcode`, whose 2
-- means "changes" (a script must not read a mistyped command line as a plan to apply).
-- Any other command is not plan's: `apply --detailed-exitcode` is a usage error like any
-- other (2). The command line failed to parse, so "plan" anywhere in it counts: a plan
-- must never give 2 (the word as an option's value only makes a usage error 1).
-- @tparam {string,...} words the command line
function M.usage_status(words)
  local detailed, plan = false, false
  for _, w in ipairs(words) do
    if w == "--detailed-exitcode" then detailed = true end
    if w == "plan" then plan = true end
  end
  return detailed and plan and report.EXIT_FAILURE or report.EXIT_USAGE
end

local function list(t)
  local out = {}
  for i, v in ipairs(t) do out[i] = printable(v) end
  return table.concat(out, ", ")
end

local function tag_list(set)
  local keys, out = {}, {}
  for k in pairs(set) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, k in ipairs(keys) do out[i] = printable(k .. "=" .. set[k]) end
  return table.concat(out, ", ")
end

local MARK = {create = "+", update = "~", nothing = "="}

-- One device's lines: a mark, the name and the action, then one line per kind of change.
local function device_lines(d, w)
  w(("%s %s  %s\n"):format(MARK[d.action], d.DeviceName, d.action))
  if d.rename then
    -- quoted once (escaped, made printable), never cut: the plan shows the whole value
    w(("    nickname: %s -> %s\n"):format(quoted(d.rename.from, false), quoted(d.rename.to, false)))
  end
  local t = d.tags
  if t and t.set then w("    tags set: " .. tag_list(t.set) .. "\n") end
  if t and t.remove then w("    tags removed: " .. list(t.remove) .. "\n") end
  if t and t.kept then w("    tags kept (not in the manifest; --prune-tags removes them): " ..
    list(t.kept) .. "\n") end
  if d.join then w("    groups joined: " .. list(d.join) .. "\n") end
  if d.leave then w("    groups left: " .. list(d.leave) .. "\n") end
end

local function totals_line(t)
  return ("Plan: %d to create, %d to update, %d unchanged; %d nicknames, %d tags set, " ..
    "%d tags removed, %d group joins, %d group leaves, %d groups to create; %d unlisted, " ..
    "%d to retire%s.\n"):format(t.create, t.update, t.nothing, t.rename, t.tag_set, t.tag_remove,
    t.join, t.leave, t.create_group, t.unlisted, t.retire,
    t.retire > 0 and (" (%d ONLINE now)"):format(t.retire_online or 0) or "")
end

--- Prints a plan: every device with a change (unchanged ones only counted), the groups to
-- create, the unlisted devices (to retire, or left alone), then the totals, and a note of
-- the listed devices that are disabled (no change of the plan: apply does not enable them).
-- @tparam table p the plan (`client:plan`)
-- @tparam function w writes a string
function M.print_plan(p, w)
  for _, g in ipairs(p.CreateGroups) do w(("+ group %s  create\n"):format(printable(g))) end
  for _, d in ipairs(p.Devices) do
    if d.action ~= "nothing" then device_lines(d, w) end
  end
  local retire = #p.Retire > 0
  local online = {}
  for _, name in ipairs(p.RetireOnline or {}) do online[name] = true end
  for _, name in ipairs(p.Unlisted) do
    -- as retire --dry-run: the retire waits for the ONLINE ones to go offline
    w(retire and ("- %s  retire%s\n"):format(name, online[name] and " (ONLINE now)" or "")
      or ("? %s  unlisted (left alone; --retire-unlisted retires it)\n"):format(name))
  end
  w(totals_line(p.Totals))
  local off = p.Disabled or {}
  if #off > 0 then
    local shown = {}
    for i = 1, math.min(#off, 20) do shown[i] = printable(off[i]) end
    w(("Note: %d listed device(s) disabled (DISABLE), which apply leaves so: %s%s; enable one " ..
      "with: aliyun-iot call EnableThing ProductKey=%s DeviceName=NAME\n"):format(#off,
      table.concat(shown, ", "), #off > 20 and ", ..." or "", printable(p.ProductKey or "PK")))
  end
  if p.changes == 0 then w("No changes: the product matches the manifest.\n") end
end

--- Checks `--manifest` whole before anything is announced, read or created (plan and
-- apply): a manifest breaking a rule is the first thing the user hears of.
-- @tparam table opts the checked options
-- @treturn ?table the error (`InvalidParameter` naming the line), or nil when it is good
function M.check_manifest(opts)
  local m, err = require("aliyun.iot.fleet.manifest").load(opts.manifest)
  if not m then return err end
end

--- plan: the product's state read, the plan printed; exit 0, or 2 on changes with
-- `--detailed-exitcode`.
-- @treturn integer exit status
function M.run(opts, streams, ui, ctx)
  local out, client, err = commands.start(opts, streams, ui, ctx, {gate = M.check_manifest})
  local p
  if client then
    ui.note("reading the state of product " .. printable(opts.product_key))
    p, err = client:plan{ProductKey = opts.product_key, manifest = opts.manifest,
      prune_tags = opts.prune_tags or nil, retire_unlisted = opts.retire_unlisted or nil,
      deadline = opts.deadline}
  end
  if not p then
    local code = commands.failed(out, streams, err)
    return opts.detailed_exitcode and report.EXIT_FAILURE or code
  end
  M.print_plan(p, function(s) out.fh:write(s) end)
  local code = commands.finished(out, streams)
  if code == report.EXIT_OK and opts.detailed_exitcode and p.changes > 0 then
    return M.EXIT_CHANGES
  end
  return code
end

return M
