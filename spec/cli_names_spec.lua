-- The command's two random-name paths, as child processes against the emulator:
-- `register --count N` draws the names itself (and survives kill -9 at any moment, resumed
-- until done), `--service-names` uses BatchRegisterDevice, and an ambiguous
-- --service-names job ends either way out: `resume --adopt-apply-id` or
-- `resume --accept-ambiguous` (exit 3).
local shell = require "spec.support.shell"
local q, read, sh = shell.quote, shell.read, shell.capture

local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))
local BIN = os.getenv("PWD") .. "/bin/aliyun-iot"
local PK = "a1TestPK001"
local NAME = "^" .. ("[A-Za-z0-9]"):rep(20) .. "$"

local emu, tmp

local function env_prefix()
  return "cd " .. q(tmp) .. " && env -u LUA_PATH -u LUA_CPATH HOME=" .. q(tmp) .. " TMPDIR=" ..
    q(tmp) .. " ALIBABA_CLOUD_ACCESS_KEY_ID=testid ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret "
end

local function cmd(args)
  return env_prefix() .. LUA .. " " .. q(BIN) .. " --endpoint " .. emu.endpoint .. " " .. args
end

-- Runs the command; returns its exit code, stdout and stderr.
local function run(args)
  local code = sh(cmd(args) .. " < /dev/null > out.txt 2> err.txt; echo $?")
  return tonumber(code), read(tmp .. "/out.txt"), read(tmp .. "/err.txt")
end

local function csv_names(path)
  local names, seen = {}, {}
  for line in (read(path) or ""):gmatch("[^\n]+") do
    local name = line:match("^[^,]*,([^,]*),")
    if name and name ~= "DeviceName" then
      assert.is_nil(seen[name], "duplicate " .. name)
      seen[name] = true
      names[#names + 1] = name
    end
  end
  table.sort(names)
  return names
end

local function product() return emu:state().products[PK] or {devices = 0, names = {}} end

local function applies_of(kind)
  local out = {}
  for _, a in ipairs(emu:state().applies) do
    if a.Kind == kind then out[#out + 1] = a end
  end
  return out
end

describe("aliyun-iot register --count: the two random-name paths", function()
  setup(function()
    emu = require("aliyun.iot.emulator").start{async_delay = 0.05}
    tmp = require("spec.support.shell").temp_dir()
  end)
  teardown(function()
    if emu then emu:stop() end
    os.execute("rm -rf " .. q(tmp))
  end)
  before_each(function()
    emu:reset()
    emu:set{async_delay = 0.05}
  end)

  it("draws the names by default and says so; --service-names uses BatchRegisterDevice", function()
    local code, out, err = run("register --product-key " .. PK .. " --count 40")
    assert.are.equal(0, code, err)
    local names = {}
    for name in out:gmatch("\n" .. PK .. ",([^,]+),") do
      assert.truthy(name:find(NAME), name)
      names[#names + 1] = name
    end
    table.sort(names)
    assert.are.equal(40, #names)
    assert.are.same(product().names, names)
    assert.are.equal(0, #applies_of("count"))
    assert.truthy(err:find("names drawn by this client", 1, true), err)

    emu:reset()
    code, out, err = run("register --product-key " .. PK .. " --count 5 --service-names")
    assert.are.equal(0, code, err)
    assert.are.equal(5, select(2, out:gsub("\n" .. PK .. ",", "")))
    assert.are.equal(1, #applies_of("count"))
    assert.are.equal(0, #applies_of("check"))
    assert.truthy(err:find("names drawn by the service", 1, true), err)
    local _
    code, _, err = run("register --product-key " .. PK .. " --names-file x --service-names")
    assert.are.equal(2, code)
    assert.truthy(err:find("--service-names applies to --count only", 1, true), err)
  end)

  it("killed with kill -9 at random moments and resumed until done: exactly Count devices", function()
    local seed = os.time()
    math.randomseed(seed)
    local count, kills = 1300, 0
    emu:set{async_delay = 0.4}
    local state, out = tmp .. "/k.state", tmp .. "/k.csv"
    for round = 1, 8 do
      local args = read(state)
        and "--quiet resume --state k.state --out k.csv"
        or ("--quiet register --product-key " .. PK .. " --count " .. count ..
            " --state k.state --out k.csv")
      local pid = sh(cmd(args) .. " < /dev/null > /dev/null 2> k" .. round .. ".err & echo $!")
        :match("%d+")
      os.execute(("sleep %.2f"):format(0.05 + math.random() * 1.5))
      if os.execute("kill -9 " .. pid .. " 2>/dev/null") then kills = kills + 1 end
      os.execute("sleep 0.1")
    end
    assert.is_true(kills > 0, "seed " .. seed)
    emu:set{async_delay = 0.05}
    local code, _, err
    if read(state) then
      code, _, err = run("--quiet resume --state k.state --out k.csv")
    else
      code, _, err = run("--quiet register --product-key " .. PK .. " --count " .. count ..
                         " --state k.state --out k.csv")
    end
    assert.are.equal(0, code, ("seed %d: %s"):format(seed, err))
    local names = csv_names(out)
    assert.are.equal(count, #names, "seed " .. seed)
    for _, n in ipairs(names) do assert.truthy(n:find(NAME), n) end
    local p = product()
    assert.are.equal(count, p.devices, "seed " .. seed)
    assert.are.same(p.names, names)
    assert.are.equal(0, #applies_of("count"))
  end)

  -- An ambiguous --service-names job: 1500 devices in chunks of 1000 and 500, the first
  -- chunk's answer lost after the service acted, so the second is never sent.
  local function ambiguous_job(state)
    emu:fault{kind = "reset_after", count = 1, action = "BatchRegisterDevice"}
    local code, _, err = run("--quiet register --product-key " .. PK ..
      " --count 1500 --service-names --state " .. state .. " --out amb.csv")
    emu:clear_faults()
    assert.are.equal(1, code, err)
    assert.truthy(err:find("Ambiguous", 1, true), err)
    assert.truthy(err:find("--adopt-apply-id ID", 1, true), err)
    assert.truthy(err:find("--accept-ambiguous", 1, true), err)
    local lost = applies_of("count")
    assert.are.equal(1, #lost)
    return tostring(lost[1].ApplyId)
  end

  it("resume --adopt-apply-id takes in the lost apply once checked, and finishes the job", function()
    local lost = ambiguous_job("adopt.state")
    -- a plain resume ends the same way
    local code, _, err = run("--quiet resume --state adopt.state --out amb.csv")
    assert.are.equal(1, code, err)
    -- refused before anything is journaled: an unknown apply, a name-check apply
    code, _, err = run("--quiet resume --state adopt.state --adopt-apply-id 999999 --out amb.csv")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("cannot adopt apply 999999", 1, true), err)
    assert(run("--quiet register --product-key " .. PK .. " --count 2") == 0)
    local check = applies_of("check")[1]
    code, _, err = run("--quiet resume --state adopt.state --adopt-apply-id " ..
      tostring(check.ApplyId) .. " --out amb.csv")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("not one of BatchRegisterDevice", 1, true) or
                  err:find("does not bear a random name", 1, true) or
                  err:find("matches no uncertain submission", 1, true), err)
    assert.is_nil(read(tmp .. "/adopt.state"):find('"adopted"', 1, true))

    code, _, err = run("--quiet resume --state adopt.state --adopt-apply-id " .. lost ..
                       " --out amb.csv")
    assert.are.equal(0, code, err)
    local names = csv_names(tmp .. "/amb.csv")
    assert.are.equal(1500, #names)
    -- every device of the product is in the output but the named job's two
    assert.are.equal(1502, product().devices)
    local counted = 0
    for _, a in ipairs(applies_of("count")) do counted = counted + a.Count end
    assert.are.equal(1500, counted)
  end)

  it("resume --accept-ambiguous finishes the rest and exits 3, saying what may exist unseen", function()
    ambiguous_job("acc.state")
    local code, _, err = run("resume --state acc.state --accept-ambiguous --out acc.csv")
    assert.are.equal(3, code, err)
    assert.truthy(err:find("up to 1000 devices may exist that this output does not hold", 1, true), err)
    assert.truthy(err:find("names drawn by the service", 1, true), err)
    local names = csv_names(tmp .. "/acc.csv")
    -- the chunk never sent is registered; the lost one is not sent again
    assert.are.equal(500, #names)
    assert.are.equal(1500, product().devices)
    -- the journal is finished: the same again, without a request
    local before = #emu:requests()
    code, _, err = run("resume --state acc.state --out acc2.csv")
    assert.are.equal(3, code, err)
    assert.are.equal(before, #emu:requests())
    assert.are.same(names, csv_names(tmp .. "/acc2.csv"))
  end)

  it("refuses --adopt-apply-id on a journal with nothing uncertain", function()
    assert(run("--quiet register --product-key " .. PK .. " --count 3 --service-names --state ok.state") == 0)
    local code, _, err = run("--quiet resume --state ok.state --adopt-apply-id 5")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("nothing to adopt", 1, true), err)
  end)
end)
