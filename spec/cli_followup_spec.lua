-- What a failed job tells its user to do next, as a new user meets it (issue 12): a
-- refused --adopt-apply-id names the ways out instead of a plain resume that ends
-- Ambiguous again, and the read of an apply found after --accept-ambiguous; names that
-- exist already point at --existing (and, adopted, are not counted as created); a job
-- refused for invalid names keeps each report record short (one line per requested name
-- must not repeat the whole list of invalid names); export runs with --quiet. Child
-- processes and the library against the emulator over loopback.
local iot = require "aliyun.iot"
local shell = require "spec.support.shell"
local q, read, sh = shell.quote, shell.read, shell.capture

local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))
local BIN = os.getenv("PWD") .. "/bin/aliyun-iot"
local PK = "a1TestPK001"

local emu, tmp

local function run(args)
  local code = sh("cd " .. q(tmp) .. " && env -u LUA_PATH -u LUA_CPATH HOME=" .. q(tmp) ..
    " TMPDIR=" .. q(tmp) .. " ALIBABA_CLOUD_ACCESS_KEY_ID=testid" ..
    " ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret " .. LUA .. " " .. q(BIN) ..
    " --endpoint " .. emu.endpoint .. " " .. args .. " < /dev/null > out.txt 2> err.txt; echo $?")
  return tonumber(code), read(tmp .. "/out.txt"), read(tmp .. "/err.txt")
end

local function lost_apply()
  for _, a in ipairs(emu:state().applies) do
    if a.Kind == "count" then return tostring(a.ApplyId) end
  end
end

describe("aliyun-iot: the next step after a failure #followup", function()
  setup(function()
    emu = require("aliyun.iot.emulator").start{async_delay = 0}
    tmp = require("spec.support.shell").temp_dir()
  end)
  teardown(function()
    if emu then emu:stop() end
    os.execute("rm -rf " .. q(tmp))
  end)
  before_each(function() emu:reset() end)

  it("a refused --adopt-apply-id names both ways out, not a resume that ends Ambiguous", function()
    emu:fault{kind = "reset_after", count = 1, action = "BatchRegisterDevice"}
    local code, _, err = run("--quiet register --product-key " .. PK ..
      " --count 1500 --service-names --state amb.state --out amb.csv")
    emu:clear_faults()
    assert.are.equal(1, code, err)
    local lost = assert(lost_apply())
    code, _, err = run("--quiet resume --state amb.state --adopt-apply-id 999999 --out amb.csv")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("cannot adopt apply 999999", 1, true), err)
    assert.is_nil(err:find("to finish it, run", 1, true), err)
    assert.truthy(err:find("--accept-ambiguous", 1, true), err)
    assert.truthy(err:find("--adopt-apply-id ID", 1, true), err)

    -- given up with --accept-ambiguous, the apply found later cannot be taken in: the
    -- command that reads its devices is named instead of a resume
    code, _, err = run("--quiet resume --state amb.state --accept-ambiguous --out amb.csv")
    assert.are.equal(3, code, err)
    code, _, err = run("--quiet resume --state amb.state --adopt-apply-id " .. lost .. " --out amb.csv")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("nothing to adopt", 1, true), err)
    assert.is_nil(err:find("to finish it, run", 1, true), err)
    assert.truthy(err:find("devices --product-key " .. PK .. " --apply-id " .. lost, 1, true), err)
  end)

  it("names that exist already point at --existing adopt", function()
    local f = assert(io.open(tmp .. "/names", "w"))
    f:write("exists-0001\nexists-0002\n")
    f:close()
    assert.are.equal(0, (run("--quiet register --product-key " .. PK .. " --names-file names")))
    local code, _, err = run("--quiet register --product-key " .. PK .. " --names-file names")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("--existing adopt", 1, true), err)
    -- adopted, they are written, not created: the summary says so
    code, _, err = run("register --product-key " .. PK .. " --names-file names --existing adopt")
    assert.are.equal(0, code, err)
    assert.truthy(err:find("2 devices (0 created) in", 1, true), err)
  end)

  it("export --quiet exports (it called the progress a quiet run does not have)", function()
    assert.are.equal(0, (run("--quiet register --product-key " .. PK .. " --count 120")))
    local code, _, err = run("--quiet export --product-key " .. PK .. " --format ndjson --out e.ndjson")
    assert.are.equal(0, code, err)
    assert.are.equal("", err)
    assert.are.equal(120, select(2, read(tmp .. "/e.ndjson"):gsub("\n", "")))
  end)

  it("a job refused for invalid names keeps every report record short", function()
    local client = assert(iot.new{endpoint = emu.endpoint, access_key_id = "testid",
                                  access_key_secret = "testsecret"})
    local devices = {}
    for i = 1, 200 do devices[#devices + 1] = ("fine-%04d"):format(i) end
    for i = 1, 200 do devices[#devices + 1] = ("bad name %04d"):format(i) end
    local res, err = client:register_named_devices{ProductKey = PK, Devices = devices}
    assert.is_nil(res)
    assert.are.equal("InvalidDeviceName", err.code)
    assert.are.equal(400, #err.Report)
    for i = 1, 200 do
      local r = err.Report[i]
      assert.are.equal("failed", r.outcome)
      assert.are.equal("InvalidDeviceName", r.code)
      assert.is_true(#r.message <= 300, r.message:sub(1, 400))
    end
    assert.are.equal(0, #emu:requests())
  end)
end)
