-- A killed `aliyun-iot apply` repeats no write, whatever moment it is killed at (issue 15,
-- "a killed apply resumes without repeating a write"): the CLI child is killed (SIGKILL)
-- at random moments, again and again, each time run again with the same command line and
-- --state, until a run finishes; then every unit of every write kind (CreateDeviceGroup,
-- BatchUpdateDeviceNickname, SaveDeviceProp, DeleteDeviceProp,
-- Batch{Add,Delete}DeviceGroupRelations, the creation's BatchCheckDeviceNames and
-- BatchRegisterDeviceWithApplyId) is counted in the emulator's request log: each at most once.
-- BatchCheckDeviceNames is the exception: a check whose answer was lost is sent again by
-- the creation's resume (batch/named: the journal records a check only once answered); it
-- registers nothing, and the spec holds it to once per run.
local fleet = require "spec.support.fleet"
local shell = require "spec.support.shell"

local PK = fleet.PK

local N_OLD, N_NEW = 40, 10

-- The state before: devices with nicknames, tags and groups the manifest changes.
local function before()
  local out = {}
  for i = 1, N_OLD do
    out[i] = {DeviceName = ("dev_%04d"):format(i), Nickname = "old_" .. i,
      tags = {site = "north", rev = "a", drop = "x"}, groups = {"g_old", "g_keep"}}
  end
  return out
end

-- The manifest applied: every old device renamed, retagged (one key changed, one dropped
-- with --prune-tags), moved out of g_old into two new groups; new devices created.
local function manifest_text()
  local lines = {"DeviceName,Nickname,tags,groups"}
  for i = 1, N_OLD + N_NEW do
    lines[#lines + 1] = ("dev_%04d,new_%d,site=south;rev=a,g_keep;g_new_%d;g_all")
      :format(i, i, i % 3)
  end
  return table.concat(lines, "\n") .. "\n"
end

-- The units a write request carries: "Action key device" strings (a device of a batch
-- call is one unit each, so a repeat inside a later batch of other devices is seen too).
local UNIT_KEY = {CreateDeviceGroup = "GroupName", SaveDeviceProp = "Props",
  DeleteDeviceProp = "PropKey", BatchAddDeviceGroupRelations = "GroupId",
  BatchDeleteDeviceGroupRelations = "GroupId", BatchUpdateDeviceNickname = "",
  BatchCheckDeviceNames = "", BatchRegisterDeviceWithApplyId = "ApplyId"}
local function units(r)
  local key = UNIT_KEY[r.action]
  if not key then return {} end
  local out, any = {}, false
  for k, v in pairs(r.params) do
    if k:find("DeviceName$") then
      out[#out + 1] = ("%s %s %s"):format(r.action, tostring(r.params[key] or ""), v)
      any = true
    end
  end
  if not any then out[1] = ("%s %s"):format(r.action, tostring(r.params[key] or "")) end
  return out
end

describe("fleet apply killed at random moments", function()
  local emu, c, dir

  setup(function()
    emu, dir = fleet.start()
    shell.write(dir .. "/fleet.csv", manifest_text())
  end)
  teardown(function() fleet.stop(emu, dir) end)

  it("run again after each kill, repeats no write of any kind and ends matching the manifest", function()
    c = fleet.client(emu)
    assert(c:apply{ProductKey = PK, manifest = before()})
    local from = #emu:requests() + 1
    local seed = tonumber(os.getenv("KILL_SEED") or "") or os.time()
    math.randomseed(seed)
    os.remove(dir .. "/apply.report")
    local cmd = ("apply --endpoint %s --product-key %s --manifest fleet.csv --prune-tags --state apply.state " ..
      "--report apply.report --quiet"):format(emu.endpoint, PK)
    -- each kind of write in the order apply sends them: its first call is held by the
    -- emulator (answered 1.5 s late), and the child is killed at a random moment (0 to 0.3 s)
    -- after a call of that kind is answered or while it waits for the held one (the log
    -- stands still), then run again for the next kind
    local order = {"BatchCheckDeviceNames", "BatchRegisterDeviceWithApplyId", "CreateDeviceGroup",
      "BatchUpdateDeviceNickname", "DeleteDeviceProp", "SaveDeviceProp",
      "BatchDeleteDeviceGroupRelations", "BatchAddDeviceGroupRelations"}
    local rank = {}
    for i, a in ipairs(order) do rank[a] = i end
    -- true once the log stands still for `seconds` or holds a request of kind `k` or a
    -- later one since `start`; false when done() first
    local function still_for(seconds, done, k, start)
      local n, t = #emu:requests(), 0
      while t < seconds do
        if done() then return false end
        os.execute("sleep 0.05")
        local log = emu:requests()
        for i = start, #log do
          if (rank[log[i].action] or 0) >= k then return true end
        end
        if #log == n then t = t + 0.05 else n, t = #log, 0 end
      end
      return true
    end
    local kills = 0
    for k, kind in ipairs(order) do
      emu:clear_faults()
      emu:fault{kind = "slow", action = kind, count = 1, delay = 1.5}
      local start = #emu:requests() + 1
      local pid = fleet.start_cli(dir, cmd, "run")
      local function done() return shell.read(dir .. "/run.code") ~= nil end
      if not still_for(0.2, done, k, start) then break end
      os.execute(("sleep %.3f"):format(math.random() * 0.3))
      if done() then break end
      os.execute("kill -9 " .. pid .. " 2>/dev/null")
      kills = kills + 1
      -- the held call is answered after the kill: wait until the log stands still
      fleet.settle(emu, 1.7)
    end
    emu:clear_faults()
    local code, _, err = fleet.run(dir, cmd)
    assert.are.equal(0, code, "seed " .. seed .. ": " .. tostring(err))
    local seen, kinds = {}, {}
    for i, r in ipairs(emu:requests()) do
      if i >= from then
        for _, u in ipairs(units(r)) do
          local n = (seen[u] or 0) + 1
          assert.is_true(n == 1 or r.action == "BatchCheckDeviceNames" and n <= kills + 1,
            ("seed %d, %d kills: sent %d times: %s"):format(seed, kills, n, u))
          seen[u], kinds[r.action] = n, true
        end
      end
    end
    for action in pairs(UNIT_KEY) do
      if action ~= "BatchRegisterDeviceWithApplyId" then
        assert.is_true(kinds[action] or false, "no " .. action .. " was sent")
      end
    end
    assert.are.equal(0, assert(c:plan{ProductKey = PK, manifest = dir .. "/fleet.csv", prune_tags = true}).changes)
    assert.are.equal(N_OLD + N_NEW, emu:state().products[PK].devices)
    -- one report across the runs, continued by each: whole lines, no change reported
    -- twice, every creation reported (a kill loses at most the batch in flight)
    local lines, creates = {}, 0
    for _, r in ipairs(fleet.records(dir .. "/apply.report")) do
      local key = ("%s %s %s"):format(tostring(r.DeviceName), r.change, tostring(r.target))
      assert.is_nil(lines[key], ("seed %d: reported twice: %s"):format(seed, key))
      assert.is_true(r.outcome == "done" or r.outcome == "created", key .. " " .. tostring(r.outcome))
      lines[key] = true
      if r.change == "create" then creates = creates + 1 end
    end
    assert.is_true(creates <= N_NEW, "seed " .. seed)
  end)
end)
