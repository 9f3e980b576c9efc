--- Fleet helpers: a product's devices described in one manifest (`aliyun.iot.fleet.manifest`),
-- and what it would take to make the product match it. Installed on the client class:
--
--     local plan, err = client:plan{ProductKey = pk, manifest = "fleet.csv"}
--     -- plan.Totals.create, plan.Devices[i].action == "create" | "update" | "nothing", ...
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
local port_m = require "aliyun.iot.batch.port"
local validate = require "aliyun.iot.validate"
local errors = require "aliyun.iot.errors"

local M = {}

local PLAN_ARGS = {ProductKey = "string", manifest = true, prune_tags = "boolean",
                   retire_unlisted = "boolean", deadline = "number"}

local function bad(parameter, message)
  return errors.new{code = "InvalidParameter", parameter = parameter, message = message}
end

-- The argument rule: misuse raises at the caller's level, bad values return an error.
local function check_args(args, level)
  if type(args) ~= "table" then error("plan expects a table of arguments", level) end
  for k, v in pairs(args) do
    local want = PLAN_ARGS[k]
    if not want then error(("plan: unknown argument %s"):format(tostring(k)), level) end
    if want ~= true and type(v) ~= want then
      error(("plan: %s must be a %s, got %s"):format(k, want, type(v)), level)
    end
  end
  local why = args.ProductKey == nil and "is required" or validate.product_key_problem(args.ProductKey)
  if why then return bad("ProductKey", "ProductKey " .. why) end
  if args.manifest == nil then return bad("manifest", "manifest is required") end
  if args.deadline ~= nil and not (args.deadline > 0 and args.deadline < math.huge) then
    return bad("deadline", "deadline must be a positive number of seconds")
  end
end

--- The plan of a product against a manifest: what `apply` would do, device by device,
-- sending no write.
-- @tparam table args `ProductKey` (string), `manifest` (a path to a CSV or JSON lines
--   file, or a Lua array of `{DeviceName=, Nickname=, tags = {k = v} | "k=v;k=v",
--   groups = {names} | "a;b"}`), `prune_tags` (boolean: plan removing tag keys the
--   manifest does not list), `retire_unlisted` (boolean: plan retiring the devices it does
--   not list), `deadline` [s from now: no request starts after it]
-- @treturn ?table plan (`aliyun.iot.fleet.diff.plan`) with `ProductKey`: `Devices`,
--   `Unlisted`, `Retire`, `CreateGroups`, `Totals`, `changes` (0: nothing to do), and
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
  local port = port_m.new(self)
  local t_end = args.deadline and port:clock() + args.deadline
  local state
  state, err = state_m.read(port, {ProductKey = args.ProductKey, manifest = manifest,
    deadline = t_end,
    devices = self:product_devices{ProductKey = args.ProductKey, deadline = args.deadline}})
  if not state then return nil, err end
  local p = diff.plan(manifest, state, {prune_tags = args.prune_tags,
                                        retire_unlisted = args.retire_unlisted})
  p.ProductKey, p.GroupIds = args.ProductKey, state.groups
  return p
end

--- Adds the fleet helpers to the client class (called once by `aliyun.iot`).
-- @tparam table Client the client metatable
function M.install(Client)
  Client.plan = plan
end

return M
