-- A new user's findings on `aliyun-iot apply` (issue 15), against the emulator over real
-- HTTP: the apply's journal records the options that change the job (a run again with
-- others is refused before any request), a stopped or interrupted apply or retire prints
-- the command that finishes it (paths absolute: it works from another folder), and a plan
-- retiring devices says which are ONLINE now, from the listing it reads anyway.
local fleet = require "spec.support.fleet"
local shell = require "spec.support.shell"
local cjson = require "cjson"

local PK, LUA = fleet.PK, fleet.LUA
local q = shell.quote

describe("fleet apply options and follow-ups", function()
  local emu, c, dir, real

  -- Runs the CLI in `dir` (its arguments), or from folder `from` (its arguments as a printed
  -- command gives them after the program); exit status, stdout, stderr.
  local function run_cli(args, from) return fleet.run(dir, args, {cwd = from}) end

  setup(function()
    emu, dir = fleet.start()
    -- the folder as getcwd(3) names it (a symlinked TMPDIR resolved)
    real = shell.capture("cd " .. q(dir) .. " && pwd -P"):match("[^\n]+")
  end)
  teardown(function() fleet.stop(emu, dir) end)
  before_each(function()
    c = fleet.fresh(emu, dir, {"keep_0001", "old_0001", "old_0002"})
    shell.write(dir .. "/m.csv", "DeviceName,tags\nkeep_0001,site=a\nnew_0001,site=b\n")
  end)

  -- An apply --retire-unlisted --state that stops: old_0001 stays ONLINE past --wait 0.
  local function stopped_apply(extra)
    emu:set_online{ProductKey = PK, DeviceName = "old_0001", stay_online = true}
    return run_cli(("apply --endpoint %s --product-key %s --manifest m.csv --state s.state " ..
      "--retire-unlisted --wait 0%s"):format(emu.endpoint, PK, extra or ""))
  end

  it("refuses a run again with other --prune-tags or --retire-unlisted than its journal's, before any request", function()
    local code, _, err = stopped_apply()
    assert.are.equal(1, code, err)
    assert.matches("DevicesOnline", err)
    local from = #emu:requests()
    code, _, err = run_cli(("apply --endpoint %s --product-key %s --manifest m.csv --state s.state")
      :format(emu.endpoint, PK))
    assert.are.equal(2, code, err)
    assert.matches("InvalidParameter: journal s%.state is an apply started with %-%-retire%-unlisted, " ..
      "this run has no %-%-retire%-unlisted: run it again with %-%-retire%-unlisted to finish it", err)
    assert.is_nil(err:find("`", 1, true), err)
    assert.are.equal(from, #emu:requests())
    code, _, err = stopped_apply(" --prune-tags")
    assert.are.equal(2, code, err)
    assert.matches("started with no %-%-prune%-tags, this run has %-%-prune%-tags: run it again with " ..
      "no %-%-prune%-tags to finish it", err)
    assert.are.equal(from, #emu:requests())
    -- the library names its own arguments
    local res, lerr = c:apply{ProductKey = PK, manifest = dir .. "/m.csv", journal = dir .. "/s.state",
      prune_tags = true}
    assert.is_nil(res)
    assert.are.equal("InvalidParameter", lerr.code)
    assert.are.equal("prune_tags", lerr.parameter)
    assert.matches("started with `prune_tags = false`, this run has `prune_tags = true`", lerr.message)
    assert.are.equal(from, #emu:requests())
    -- a journal from before options were recorded is taken as it is
    local text = shell.read(dir .. "/s.state")
    local first, rest = text:match("^([^\n]*\n)(.*)$")
    local job = cjson.decode(first)
    assert.are.same({prune_tags = false, retire_unlisted = true}, job.apply.options)
    shell.write(dir .. "/s.state", first:gsub('"options":%b{},?', ""):gsub(",}", "}") .. rest)
    code, _, err = run_cli(("apply --endpoint %s --product-key %s --manifest m.csv --state s.state")
      :format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
  end)

  it("a stopped apply prints the command that finishes it, paths absolute; run from another folder, it does", function()
    local code, _, err = stopped_apply(" --report r.jsonl --prune-tags")
    assert.are.equal(1, code, err)
    local cmd = err:match("aliyun%-iot: apply stopped %(changes: [^)]*%); to finish it, run:\n  ([^\n]+)\n")
    assert.is_string(cmd, err)
    for _, part in ipairs{" apply ", " --product-key " .. PK .. " ", " --manifest " .. real .. "/m.csv ",
                          " --state " .. real .. "/s.state ", " --report " .. real .. "/r.jsonl ",
                          " --prune-tags ", " --retire-unlisted ", " --wait 0 ",
                          " --endpoint " .. emu.endpoint} do
      assert.truthy((cmd .. " "):find(part, 1, true), part .. " in " .. cmd)
    end
    assert.is_nil(cmd:find("--undo", 1, true), cmd) -- the default, beside the journal
    local prog = cmd:match("^%S+")
    assert.truthy(prog == "aliyun-iot" or prog:sub(1, 1) == "/", cmd)
    emu:set_online{ProductKey = PK, DeviceName = "old_0001", online = false}
    local out
    code, out, err = run_cli(cmd:sub(#prog + 1), "/")
    assert.are.equal(0, code, err)
    assert.matches("Apply: ", out)
    assert.are.same({"keep_0001", "new_0001"}, emu:state().products[PK].names)
    assert.matches('"DeviceName":"old_0002","change":"retire","outcome":"deleted"', shell.read(dir .. "/r.jsonl"))
  end)

  it("without --state says a run again plans again and needs a new --report; retire prints its command too", function()
    emu:set_online{ProductKey = PK, DeviceName = "old_0001", stay_online = true}
    local code, _, err = run_cli(("apply --endpoint %s --product-key %s --manifest m.csv --report r.jsonl " ..
      "--retire-unlisted --wait 0"):format(emu.endpoint, PK))
    assert.are.equal(1, code, err)
    assert.matches("; run the same command again with a new %-%-report path to finish %(it plans again " ..
      "from the product's state%)\n", err)
    shell.write(dir .. "/names.txt", "old_0001\nold_0002\n")
    code, _, err = run_cli(("retire --endpoint %s --product-key %s --names-file names.txt --state r.state " ..
      "--wait 0"):format(emu.endpoint, PK))
    assert.are.equal(1, code, err)
    local cmd = err:match("retire stopped: [^\n]*; to finish it, run:\n  ([^\n]+)\n")
    assert.is_string(cmd, err)
    assert.truthy(cmd:find(" retire --product-key " .. PK .. " --names-file " .. real .. "/names.txt --state " ..
      real .. "/r.state --wait 0 --endpoint ", 1, true), cmd)
  end)

  it("an interrupted apply prints the command that finishes it", function()
    emu:set_online{ProductKey = PK, DeviceName = "old_0001", stay_online = true}
    local line = ("apply --endpoint %s --product-key %s --manifest m.csv --state s.state --retire-unlisted " ..
      "--wait 60"):format(emu.endpoint, PK)
    local pid = fleet.start_cli(dir, line, "t")
    -- in the retire's wait: its note is on stderr
    assert.truthy(fleet.poll(function()
      return (shell.read(dir .. "/t.err") or ""):find("waiting for 1 of 2 devices", 1, true) ~= nil
    end, 20), shell.read(dir .. "/t.err"))
    assert(shell.ok("kill -TERM " .. pid))
    assert.truthy(fleet.poll(function() return shell.read(dir .. "/t.code") ~= nil end, 20))
    local err = shell.read(dir .. "/t.err")
    assert.are.equal("143", shell.read(dir .. "/t.code"):match("%d+"), err)
    local cmd = err:match("aliyun%-iot: apply interrupted; to finish it, run:\n  ([^\n]+)\n")
    assert.is_string(cmd, err)
    assert.truthy(cmd:find(" --state " .. real .. "/s.state ", 1, true), cmd)
    assert.truthy(cmd:find(" --wait 60 ", 1, true), cmd)
  end)

  it("plan and apply --retire-unlisted mark the devices ONLINE now, with no extra request", function()
    emu:set_online{ProductKey = PK, DeviceName = "old_0001"}
    -- without --retire-unlisted nothing is retired: no mark, no count
    local code, out = run_cli(("plan --endpoint %s --product-key %s --manifest m.csv"):format(emu.endpoint, PK))
    assert.are.equal(0, code)
    assert.matches("\n%? old_0001  unlisted %(left alone", out)
    assert.matches("; 2 unlisted, 0 to retire%.\n", out)
    local from = #emu:requests()
    local err
    code, out, err = run_cli(("plan --endpoint %s --product-key %s --manifest m.csv --retire-unlisted")
      :format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    assert.matches("\n%- old_0001  retire %(ONLINE now%)\n%- old_0002  retire\n", out)
    assert.matches("; 2 unlisted, 2 to retire %(1 ONLINE now%)%.\n", out)
    for i, r in ipairs(emu:requests()) do
      assert.is_true(i <= from or r.action ~= "BatchGetDeviceState", r.action)
    end
    local p = assert(c:plan{ProductKey = PK, manifest = dir .. "/m.csv", retire_unlisted = true})
    assert.are.same({"old_0001"}, p.RetireOnline)
    assert.are.equal(1, p.Totals.retire_online)
    code, out, err = run_cli(("apply --endpoint %s --product-key %s --manifest m.csv --retire-unlisted")
      :format(emu.endpoint, PK))
    assert.are.equal(0, code, err)
    assert.matches("\n%- old_0001  retire %(ONLINE now%)\n", out)
    assert.are.same({"keep_0001", "new_0001"}, emu:state().products[PK].names)
  end)

  it("core.cwd is getcwd(3), past 256 bytes too; journal.absolute keeps - and absolute paths", function()
    local deep = dir .. "/" .. ("d"):rep(200) .. "/" .. ("e"):rep(200)
    assert(shell.ok("mkdir -p " .. q(deep)))
    -- this process's cpath, made absolute: the core this suite runs on (make check-asan's too)
    local cpath = package.cpath:gsub("^build/", os.getenv("PWD") .. "/build/")
      :gsub(";build/", ";" .. os.getenv("PWD") .. "/build/")
    local got = shell.capture(("cd %s && env LUA_CPATH=%s %s -e %s"):format(q(deep), q(cpath), LUA,
      q('io.write(assert(require("aliyun.iot.core").cwd()))')))
    assert.are.equal(real .. "/" .. ("d"):rep(200) .. "/" .. ("e"):rep(200), got)
    local journal = require "aliyun.iot.journal"
    assert.are.equal("-", journal.absolute("-"))
    assert.are.equal("/x/y", journal.absolute("/x/y"))
    local here = assert(require("aliyun.iot.core").cwd())
    assert.are.equal(here .. "/a.csv", journal.absolute("./a.csv"))
  end)
end)
