--- Client-side QPS pacing per action, shared by all work of one account.
-- The IoT Platform limits each action's calls per second per Alibaba Cloud account
-- (docs/wire.md §4, "All QPS figures: per Alibaba Cloud account"). The pacer hands out start
-- times ("slots") spaced `(1 + margin) / qps` apart per action, so every 1-second window
-- holds at most `qps` starts; nothing accumulates while idle (no bursts after a pause).
--
-- State is shared, keyed by `scope` (the client passes its AccessKeyId) and action:
-- in one process, by all pacers made with the same `now` function (times from different
-- clocks cannot be compared); under OpenResty with `shared_dict`, by all nginx workers
-- through `ngx.shared[shared_dict]`.
-- @module aliyun.iot.pacer

local M = {}

--- Documented per-account QPS of each action (docs/wire.md §4, doc pages D-xxxxx there).
M.DEFAULT_LIMITS = {
  RegisterDevice = 30,                  -- §4 RegisterDevice, D-69470
  BatchRegisterDevice = 10,             -- §4 BatchRegisterDevice, D-69473
  BatchCheckDeviceNames = 10,           -- §4 BatchCheckDeviceNames, D-69482
  BatchRegisterDeviceWithApplyId = 500, -- §4 BatchRegisterDeviceWithApplyId, D-69514
  QueryBatchRegisterDeviceStatus = 30,  -- §4 QueryBatchRegisterDeviceStatus, D-69483
  QueryPageByApplyId = 50,              -- §4 QueryPageByApplyId, D-69518
  BatchGetDeviceState = 50,             -- §4 Cheap extras (TEAIOT method comment)
  -- §4 Cheap extras (TEAIOT); the service drops it to 2 QPS once CurrentPage x PageSize
  -- reaches 100,000, which a per-action limit cannot express: deep pages may be throttled
  -- and are then retried.
  QueryDevice = 50,
  DeleteDevice = 50,                    -- §4 Cheap extras (TEAIOT method comment)
  QueryDeviceDetail = 50,               -- §4 Cheap extras (TEAIOT method comment)
  BatchQueryDeviceDetail = 5,           -- §10, its API page
  QueryDeviceProp = 50,                 -- §10, the props pages
  SaveDeviceProp = 50,                  -- §10
  DeleteDeviceProp = 50,                -- §10
  BatchAddDeviceGroupRelations = 500,   -- §10, the group relation pages
  BatchDeleteDeviceGroupRelations = 500, -- §10
  -- No QPS published for these (§10 "not given"): the emulator's figure, 50.
  CreateDeviceGroup = 50,
  QueryDeviceGroupList = 50,
  QueryDeviceListByDeviceGroup = 50,
  BatchUpdateDeviceNickname = 50,
  DisableThing = 50,
  EnableThing = 50,
}

--- Extra spacing over `1/qps`, as a fraction. k starts inside one 1 s window have slots
-- spanning `(k - 1)(1 + m)/qps < 1 + e`, where e is how much the gaps between starts may
-- shrink (ngx.sleep truncating to whole milliseconds, scheduling and network jitter); so
-- k <= qps whenever e <= m seconds: 2% absorbs 20 ms at any QPS.
M.MARGIN = 0.02

-- A worker killed between add and delete must not block the others for long.
local LOCK_TTL = 1
local LOCK_RETRY = 0.001

-- [now function] -> {[scope .. "\0" .. action] = next free time}
local local_slots = setmetatable({}, {__mode = "k"})

local Pacer = {}
Pacer.__index = Pacer

local function interval(qps, margin, what)
  if type(qps) ~= "number" or qps <= 0 or qps ~= qps then
    error(("pacer: QPS for %s must be a positive number, got %s"):format(what, tostring(qps)), 3)
  end
  return (1 + margin) / qps
end

--- Makes a pacer.
-- @tparam table opts
--   `limits`: `{Action = qps}`, `false` (never wait) or nil (`DEFAULT_LIMITS`); copied.
--   `default`: QPS for actions not in `limits` (nil: those are not paced).
--   `now`: `now() -> seconds`, a monotonic clock (`core.now`; under `shared_dict` defaults to
--   `ngx.update_time(); ngx.now()`, wall-clock, the one clock all workers share).
--   `sleep`: `sleep(seconds)` (`core.sleep`; under `shared_dict` defaults to `ngx.sleep`).
--   `scope`: string naming whose budget this is, default `"default"` (the client passes its
--   AccessKeyId: QPS is per account).
--   `shared_dict`: name of a `lua_shared_dict` (OpenResty) holding the slot state.
--   `margin`: extra spacing fraction, default `MARGIN`.
-- @treturn table pacer
-- @raise on a malformed option or an undefined shared dict
function M.new(opts)
  opts = opts or {}
  assert(type(opts) == "table", "pacer.new: opts must be a table")
  local limits = opts.limits
  if limits == nil then limits = M.DEFAULT_LIMITS end
  assert(limits == false or type(limits) == "table", "pacer.new: limits must be a table or false")
  local margin = opts.margin or M.MARGIN
  assert(type(margin) == "number" and margin >= 0, "pacer.new: margin must be a number >= 0")
  local self = setmetatable({limits = {}, intervals = {}, scope = opts.scope or "default",
                             now = opts.now, sleep = opts.sleep}, Pacer)
  assert(type(self.scope) == "string", "pacer.new: scope must be a string")
  if limits then
    for action, qps in pairs(limits) do
      self.intervals[action] = interval(qps, margin, action)
      self.limits[action] = qps
    end
    if opts.default ~= nil then
      self.default_interval = interval(opts.default, margin, "default")
      self.default_qps = opts.default
    end
  end
  if opts.shared_dict ~= nil and limits then
    local ngx = rawget(_G, "ngx")
    local dict = ngx and ngx.shared and ngx.shared[opts.shared_dict]
    if not dict then
      error(("pacer.new: lua_shared_dict %s is not defined"):format(tostring(opts.shared_dict)), 2)
    end
    self.dict, self.dict_name = dict, opts.shared_dict
    self.now = self.now or function() ngx.update_time(); return ngx.now() end
    self.sleep = self.sleep or ngx.sleep
  end
  assert(type(self.now) == "function", "pacer.new: now must be a function")
  assert(type(self.sleep) == "function", "pacer.new: sleep must be a function")
  if not self.dict then
    self.slots = local_slots[self.now] or {}
    local_slots[self.now] = self.slots
  end
  return self
end

--- The QPS a pacer applies to an action.
-- @tparam string action
-- @treturn number|nil QPS, nil when the action is not paced
function Pacer:qps(action)
  return self.limits[action] or self.default_qps
end

-- How many of n slots spaced d apart from `first` start before `before` (nil: all n).
local function fitting(n, first, d, before)
  if not before or d == 0 then return n end
  if first >= before then return 0 end
  return math.min(n, math.ceil((before - first) / d))
end

-- Reserves up to n consecutive slots, those that start before `before` (a `now()` value,
-- or nil: all n); returns the first slot's time, the spacing (0 when the action is not
-- paced), the time of the reservation and how many were reserved. A slot past a caller's
-- deadline is never taken: it would hold back every later request of the account.
local function reserve(self, action, n, scope, before)
  if type(action) ~= "string" then error("pacer: action must be a string", 3) end
  if scope ~= nil and type(scope) ~= "string" then error("pacer: scope must be a string", 3) end
  scope = scope or self.scope
  if type(n) ~= "number" or n < 0 or n % 1 ~= 0 then
    error("pacer: n must be a non-negative integer", 3)
  end
  local d = self.intervals[action] or self.default_interval
  if not d then
    local t = self.now()
    return t, 0, t, fitting(n, t, 0, before)
  end
  local dict = self.dict
  if not dict then
    -- No yield between reading and writing the slot: atomic among coroutines too.
    local key = scope .. "\0" .. action
    local t = self.now()
    local first = math.max(t, self.slots[key] or t)
    n = fitting(n, first, d, before)
    if n > 0 then self.slots[key] = first + n * d end
    return first, d, t, n
  end
  -- Workers run in parallel and a shared dict has no compare-and-set: a short lock made
  -- with add (atomic "set if absent") guards the read-modify-write.
  local key = "aliyun-iot:qps:" .. scope .. ":" .. action
  local lock = key .. ":lock"
  while true do
    local ok, err = dict:add(lock, true, LOCK_TTL)
    if ok then break end
    if err ~= "exists" then
      error(("pacer: lua_shared_dict %s: %s"):format(self.dict_name, tostring(err)), 3)
    end
    self.sleep(LOCK_RETRY)
  end
  local t = self.now()
  local first = math.max(t, dict:get(key) or t)
  n = fitting(n, first, d, before)
  local next_free = first + n * d
  -- The entry expires once its time has passed (+1 s): idle actions cost no memory.
  local ok, err = true, nil
  if n > 0 then ok, err = dict:set(key, next_free, next_free - t + 1) end
  dict:delete(lock)
  if not ok then
    error(("pacer: lua_shared_dict %s: %s"):format(self.dict_name, tostring(err)), 3)
  end
  return first, d, t, n
end

--- Reserves the next slot for an action and sleeps until it.
-- @tparam string action an API action name (e.g. `"QueryPageByApplyId"`)
-- @tparam[opt] string scope whose budget (the AccessKeyId in use); default the pacer's
-- @treturn number seconds waited (0 when the slot was free)
-- @raise when action is not a string
function Pacer:acquire(action, scope)
  local first, _, t = reserve(self, action, 1, scope)
  local wait = first - t
  if wait <= 0 then return 0 end
  self.sleep(wait)
  return wait
end

--- Reserves n slots at once without sleeping, for a fan-out whose requests start later.
-- @tparam string action
-- @tparam integer n number of requests (>= 0)
-- @tparam[opt] string scope whose budget (the AccessKeyId in use); default the pacer's
-- @tparam[opt] number before a `now()` value: only the slots that start before it are
--   reserved (a request that would start after its deadline takes no slot from others)
-- @treturn {number,...} the start times, values of `now()`, ascending (the core's
--   `perform_many` takes them as each request's `not_before`): n of them, or fewer with
--   `before`
-- @raise when action is not a string or n is not a non-negative integer
function Pacer:schedule(action, n, scope, before)
  local first, d, _, k = reserve(self, action, n, scope, before)
  local times = {}
  for i = 1, k do times[i] = first + (i - 1) * d end
  return times
end

return M
