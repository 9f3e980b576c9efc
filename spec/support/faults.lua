--- Randomised fault jobs for spec/faults_spec.lua and `make soak` (tools/soak.lua): one
-- batch job (random names or named devices) against an emulator that injects a seeded mix
-- of faults, then an audit of the outcome against the emulator's own state.
--
-- The rule audited (issue "Hardening", section "Faults"): a job ends either complete with
-- exactly the expected devices, or with an error listing every ApplyId the service created
-- for it and only devices the service holds; no retry ever creates a second apply (the
-- service never creates more devices than asked); the one exception to "every ApplyId" is
-- a BatchRegisterDevice whose answer was lost after the service acted, which must end in
-- the ambiguous error (err.ambiguous, a message that says so).
local core = require "aliyun.iot.core"

local M = {}

M.PK = "a1TestPK001"

-- Where a fault may strike, per kind of job (the actions that job sends).
local ACTIONS = {
  random = {"BatchRegisterDevice", "QueryBatchRegisterDeviceStatus", "QueryPageByApplyId"},
  named = {"BatchCheckDeviceNames", "QueryBatchRegisterDeviceStatus",
           "BatchRegisterDeviceWithApplyId", "QueryPageByApplyId"},
}
-- client-drawn random names go the named way
ACTIONS.client = ACTIONS.named
M.KINDS = {"503", "throttle", "reset", "reset_after", "slow", "truncate", "malformed"}

--- Draws the job's faults: each action of the job meets, with probability `p`, one fault
-- of a random kind on one or two of its requests (count faults, so a seed replays a job).
-- @return list of emulator fault tables
function M.draw_faults(rng, kind, p)
  local faults = {}
  for _, action in ipairs(ACTIONS[kind]) do
    if rng() < p then
      local f = {kind = M.KINDS[rng(#M.KINDS)], action = action, count = rng(2)}
      if f.kind == "slow" then f.delay = 1 end -- beyond the client's 0.5 s timeout
      faults[#faults + 1] = f
    end
  end
  return faults
end

local function set(list)
  local s = {}
  for _, v in ipairs(list or {}) do s[tostring(v)] = true end
  return s
end

--- Runs one job and audits it.
-- @param emu a started emulator (reset here)
-- @param client an aliyun.iot client for it
-- @param rng function like math.random, seeded by the caller
-- @param p fault probability per action
-- @param[opt] kind "random", "named" or "client" (client-drawn random names); drawn
--   between the first two when nil
-- @return outcome {kind=, faults=, status = "complete"|"error"|"ambiguous", lost = n,
--   duplicates = n, problems = {text...}, err = err or nil}
function M.run_job(emu, client, rng, p, kind)
  emu:reset()
  kind = kind or (rng() < 0.5 and "random" or "named")
  local faults = M.draw_faults(rng, kind, p)
  for _, f in ipairs(faults) do emu:fault(f) end
  local want, res, err = {}, nil, nil -- luacheck: ignore 311
  if kind == "random" or kind == "client" then
    want.count = rng(120)
    res, err = client:register_devices{ProductKey = M.PK, Count = want.count,
                                       names = kind == "client" and "client" or nil}
  else
    local names, n = {}, rng(60)
    for i = 1, n do names[i] = ("job_%05d_%03d"):format(rng(99999), i) end
    want.names = set(names)
    want.count = 0
    for _ in pairs(want.names) do want.count = want.count + 1 end
    local list = {}
    for name in pairs(want.names) do list[#list + 1] = name end
    res, err = client:register_named_devices{ProductKey = M.PK, Devices = list}
  end
  emu:clear_faults()
  -- A slow request the client gave up on still acts when its delay ends: wait for it, so
  -- that it counts for this job (and not for the next one, after a reset).
  for _, f in ipairs(faults) do
    if f.kind == "slow" then core.sleep(f.delay + 0.3); break end
  end

  local out = {kind = kind, faults = faults, lost = 0, duplicates = 0, problems = {}, err = err}
  local function problem(fmt, ...) out.problems[#out.problems + 1] = fmt:format(...) end
  local state = emu:state()
  -- What the service holds: its applies and the devices each created.
  local created, by_apply = {}, {}
  for _, a in ipairs(state.applies) do
    by_apply[tostring(a.ApplyId)] = a
    for _, name in ipairs(a.Devices or {}) do
      if created[name] then out.duplicates = out.duplicates + 1 end
      created[name] = true
    end
  end
  local ncreated = 0
  for _ in pairs(created) do ncreated = ncreated + 1 end
  if ncreated > want.count then
    out.duplicates = out.duplicates + (ncreated - want.count)
    problem("the service created %d devices for a job of %d", ncreated, want.count)
  end
  if want.names then
    for name in pairs(created) do
      if not want.names[name] then problem("device %s was never asked for", name) end
    end
  end

  local reported = set(res and res.ApplyIds or err and err.ApplyIds)
  local devices = res and res.Devices or err and err.Devices or {}
  local seen = {}
  for _, d in ipairs(devices) do
    if not created[d.DeviceName] then problem("device %s is not on the service", d.DeviceName) end
    if seen[d.DeviceName] then problem("device %s listed twice", d.DeviceName) end
    seen[d.DeviceName] = true
    if type(d.DeviceSecret) ~= "string" or d.DeviceSecret == "" then
      problem("device %s has no DeviceSecret", d.DeviceName)
    end
  end

  -- Devices the user cannot find: created under an apply the outcome does not name.
  local unreported = {}
  for id, a in pairs(by_apply) do
    if not reported[id] and #(a.Devices or {}) > 0 then unreported[#unreported + 1] = id end
  end

  if res then
    out.status = "complete"
    if #devices ~= want.count then problem("complete with %d devices, want %d", #devices, want.count) end
    for name in pairs(created) do
      if not seen[name] then out.lost = out.lost + 1; problem("device %s missing from the result", name) end
    end
    for _, id in ipairs(unreported) do problem("apply %s not in ApplyIds", id) end
  else
    out.status = err.ambiguous and "ambiguous" or "error"
    if type(err.ApplyIds) ~= "table" or type(err.Devices) ~= "table" then
      problem("error without ApplyIds/Devices: %s", tostring(err))
    end
    if err.apply_ids ~= err.ApplyIds or err.devices ~= err.Devices then
      problem("error whose apply_ids/devices aliases differ: %s", tostring(err))
    end
    for id in pairs(reported) do
      if not by_apply[id] then problem("reported ApplyId %s does not exist", id) end
    end
    if #unreported > 0 then
      local msg = tostring(err.message)
      if err.ambiguous and #unreported == 1 and kind == "random" and msg:find("may have", 1, true) then
        out.unknown_apply = unreported[1] -- the lost answer: said so, counted apart
      else
        for _, id in ipairs(unreported) do
          out.lost = out.lost + #by_apply[id].Devices
          problem("apply %s with %d devices is in no ApplyId list (%s)", id,
                  #by_apply[id].Devices, tostring(err))
        end
      end
    end
    if err.ambiguous and not tostring(err.message):find("may have", 1, true) then
      problem("an ambiguous error that does not say so: %s", tostring(err))
    end
  end
  return out
end

return M
