-- SIGTERM (docker stop, systemd, kill) against a real CLI child and the emulator: the job
-- stops as Ctrl-C stops it (journal kept, temporary output removed, the ApplyIds and the
-- resume command on stderr), with exit status 143; the resume then finishes it. Runs under
-- every interpreter the suite runs (core.catch_term is C: lua5.1..5.4, LuaJIT).
local cjson = require "cjson"

local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))
local ROOT = os.getenv("PWD")
local BIN = ROOT .. "/bin/aliyun-iot"
local PK = "a1TestPK001"

local shell = require "spec.support.shell"
local q, read, sh = shell.quote, shell.read, shell.capture

describe("aliyun-iot and SIGTERM", function()
  local emu, tmp

  local function env_prefix()
    return "cd " .. q(tmp) .. " && env -u LUA_PATH -u LUA_CPATH HOME=" .. q(tmp) .. " TMPDIR=" ..
      q(tmp) .. " ALIBABA_CLOUD_ACCESS_KEY_ID=testid ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret " ..
      "TERM=dumb "
  end

  local function wait_for(pred)
    local t0 = os.time()
    while not pred() and os.time() - t0 < 20 do os.execute("sleep 0.05") end
    return pred()
  end

  -- Starts `args` in the background; its pid, and its exit status later in NAME.rc.
  local function start(name, args)
    sh(env_prefix() .. "sh -c " .. q(LUA .. " " .. q(BIN) .. " " .. args .. " > " .. name ..
      ".out 2> " .. name .. ".err < /dev/null & echo $! > " .. name .. ".pid; wait $!; echo $? > " ..
      name .. ".rc") .. " > /dev/null 2>&1 &")
    assert.truthy(wait_for(function() return (read(tmp .. "/" .. name .. ".pid") or ""):find("%d") end))
    return read(tmp .. "/" .. name .. ".pid"):match("%d+")
  end

  local function devices_in(csv)
    local names = {}
    for name in csv:gmatch("\n[^,\n]*,([^,\n]*),") do names[#names + 1] = name end
    table.sort(names)
    return names
  end

  setup(function()
    emu = require("aliyun.iot.emulator").start{async_delay = 0.05}
    tmp = require("spec.support.shell").temp_dir()
  end)

  teardown(function()
    if emu then emu:stop() end
    os.execute("rm -rf " .. q(tmp))
  end)

  it("stops the job: exit 143, the ApplyIds and the resume command, which finishes it", function()
    emu:set{async_delay = 3}
    local state = tmp .. "/term.state"
    local pid = start("term", "--endpoint " .. emu.endpoint .. " register --product-key " .. PK ..
      " --count 3 --state term.state --out term.csv")
    -- the apply is journaled: the CLI now polls it (a pause, then a request, ...)
    assert.truthy(wait_for(function()
      return (read(state) or ""):find('"event":"apply"', 1, true) ~= nil
    end), read(state))
    assert(os.execute("kill -TERM " .. pid))
    assert.truthy(wait_for(function() return read(tmp .. "/term.rc") ~= nil end))
    emu:set{async_delay = 0.05}
    local err = read(tmp .. "/term.err")
    assert.are.equal("143", read(tmp .. "/term.rc"):match("%d+"), err)
    assert.is_nil(err:find("internal error", 1, true), err)
    assert.is_nil(err:find("traceback", 1, true), err)
    assert.truthy(err:find("aliyun-iot: terminated (SIGTERM)\n", 1, true), err)
    assert.truthy(err:find("ApplyIds created: " .. emu:state().applies[1].ApplyId .. "\n", 1, true), err)
    local resume = err:match("to finish it, run:\n  (%S*aliyun%-iot resume [^\n]+)\n")
    assert.truthy(resume, err)
    assert.is_nil(err:find("testsecret", 1, true), err)
    -- no output, not even the temporary file beside term.csv; the journal is whole
    assert.are.equal("", read(tmp .. "/term.out"))
    assert.is_nil(read(tmp .. "/term.csv"))
    assert.are.equal("", sh("cd " .. q(tmp) .. " && ls -A | grep '^\\.term\\.csv' || true"))
    for line in read(state):gmatch("[^\n]+") do assert.is_table(cjson.decode(line)) end

    -- the printed command finishes the job: the same devices, no second apply
    local rc = sh(env_prefix() .. LUA .. " " .. q(BIN) .. " " .. resume:gsub("^%S*aliyun%-iot ", "") ..
      " < /dev/null > resume.out 2> resume.err; echo $?")
    assert.are.equal("0\n", rc, read(tmp .. "/resume.err"))
    local csv = read(tmp .. "/term.csv")
    assert.are.same(emu:state().products[PK].names, devices_in(csv))
    assert.are.equal(3, #devices_in(csv))
    assert.are.equal(1, #emu:state().applies)
  end)
end)
