-- The aliyun-iot command, run as a child process (bin/aliyun-iot, with no LUA_PATH: it must
-- find the checkout's modules itself) against one local emulator; plus its pure helpers
-- (parameter building, names files, CSV/JSON) in process.
local cli = require "aliyun.iot.cli"
local cjson = require "cjson"

local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))
local ROOT = os.getenv("PWD")
local BIN = ROOT .. "/bin/aliyun-iot"
local PK = "a1TestPK001"

local shell = require "spec.support.shell"
local q, read, write, sh = shell.quote, shell.read, shell.write, shell.capture

local function mode(path) return (sh("stat -c %a " .. q(path)):gsub("%s+$", "")) end

local emu, tmp
local all_stderr, all_secrets = {}, {}

-- Everything a child needs: credentials in the environment, HOME without config files,
-- TMPDIR here (default journals land in this spec's folder, removed at the end), no
-- LUA_PATH/LUA_CPATH (bin/aliyun-iot finds the checkout's modules itself).
local function env_prefix()
  return "cd " .. q(tmp) .. " && env -u LUA_PATH -u LUA_CPATH HOME=" .. q(tmp) .. " TMPDIR=" .. q(tmp) ..
    " ALIBABA_CLOUD_ACCESS_KEY_ID=testid ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret TERM=dumb "
end

--- Runs the command with argument string `args`; returns exit code, stdout, stderr.
local function run(args, stdin, env)
  local input = stdin and (" < " .. q(tmp .. "/stdin")) or " < /dev/null"
  if stdin then write(tmp .. "/stdin", stdin) end
  local out, err = tmp .. "/stdout", tmp .. "/stderr"
  local code = sh(env_prefix() .. (env or "") .. " " .. LUA .. " " .. q(BIN) .. " " .. args .. input ..
    " > " .. q(out) .. " 2> " .. q(err) .. "; echo $?")
  local stderr = read(err)
  all_stderr[#all_stderr + 1] = stderr
  return tonumber(code), read(out), stderr
end

local function ep() return "--endpoint " .. emu.endpoint .. " " end

local function parse_csv(text)
  local lines = {}
  for line in text:gmatch("([^\n]*)\n") do lines[#lines + 1] = line:gsub("\r$", "") end
  assert.are.equal("ProductKey,DeviceName,DeviceSecret,IotId", lines[1])
  local devs = {}
  for i = 2, #lines do
    local pk, name, secret, iot = lines[i]:match("^([^,]*),([^,]*),([^,]*),([^,]*)$")
    assert.truthy(pk, "bad CSV line " .. lines[i])
    devs[#devs + 1] = {ProductKey = pk, DeviceName = name, DeviceSecret = secret, IotId = iot}
    all_secrets[#all_secrets + 1] = secret
  end
  return devs
end

local function names_of(devs)
  local t = {}
  for i, d in ipairs(devs) do t[i] = d.DeviceName end
  table.sort(t)
  return t
end

local function state_names()
  local s = emu:state()
  return s.products[PK] and s.products[PK].names or {}
end

local function request_count() return #emu:requests() end

local function no_secret_in(text)
  assert.is_nil(text:find("testsecret", 1, true), "AccessKeySecret on stderr: " .. text)
  for _, s in ipairs(all_secrets) do
    assert.is_nil(text:find(s, 1, true), "DeviceSecret on stderr: " .. text)
  end
end

describe("aliyun-iot helpers", function()
  it("builds parameter tables from Key=Value words, lists and lists of records", function()
    assert.are.same({ProductKey = "pk", DeviceName = {"a", "b"}},
      cli.build_params{"ProductKey=pk", "DeviceName.2=b", "DeviceName.1=a"})
    assert.are.same({DeviceNameList = {{DeviceName = "x", DeviceNickname = "n=1"}, {DeviceName = "y"}}},
      cli.build_params{"DeviceNameList.1.DeviceName=x", "DeviceNameList.2.DeviceName=y",
                       "DeviceNameList.1.DeviceNickname=n=1"})
    assert.are.same({Empty = ""}, cli.build_params{"Empty="})
    for _, bad in ipairs{{"NoEquals"}, {"=x"}, {"A.1=a", "A.3=c"}, {"A=1", "A=2"},
                         {"A=1", "A.1=2"}, {"A.1=1", "A.x=2"}, {"1=x"}, {"A..1=x"}, {"A.0=x"}} do
      local ok, e = pcall(cli.build_params, bad)
      assert.is_false(ok, table.concat(bad, " "))
      assert.truthy(e.message, table.concat(bad, " "))
    end
  end)

  it("reads names files: CR, blank lines, comments, nicknames", function()
    assert.are.same({"light1", "light2"}, cli.parse_names("# lights\r\nlight1\r\n\r\n  light2  \r\n"))
    assert.are.same({{DeviceName = "light1"}, {DeviceName = "light2", DeviceNickname = "Lamp, kitchen"}},
      cli.parse_names("light1\n#x,y\nlight2 , Lamp, kitchen\n"))
    assert.are.same({}, cli.parse_names("\n# nothing\n\r\n"))
    -- a UTF-8 byte order mark (Windows editors) is not part of the first name
    assert.are.same({"light1", "light2"}, cli.parse_names("\239\187\191light1\r\nlight2\r\n"))
    assert.are.same({"light1"}, cli.parse_names("\239\187\191# lights\nlight1\n"))
  end)

  it("progress lines: a job that ends short of a phase's goal says what was reached", function()
    local lines = {}
    local stderr = {write = function(self, ...) lines[#lines + 1] = table.concat({...}) return self end,
                    flush = function() end}
    local ui = require("aliyun.iot.cli.progress").new({stderr = stderr, stderr_is_tty = false},
      false, function() return 0 end)
    ui.on_progress{phase = "register", done = 0, total = 2500}
    ui.on_progress{phase = "register", done = 1000, total = 2500}
    ui.done()
    local text = table.concat(lines)
    assert.truthy(text:find("register: 2500 devices\n", 1, true), text)
    assert.are.equal("aliyun-iot: register: stopped at 1000 of 2500 devices\n", lines[#lines])
  end)

  it("quotes CSV fields as RFC 4180 asks", function()
    assert.are.equal("abc", cli.csv_field("abc"))
    assert.are.equal('"a,b"', cli.csv_field("a,b"))
    assert.are.equal('"say ""hi"""', cli.csv_field('say "hi"'))
    assert.are.equal('"a\r\nb"', cli.csv_field("a\r\nb"))
  end)

  it("prints JSON with exact integers and sorted keys", function()
    local big = math.tointeger and math.tointeger(9007199254740993) or 4415
    local text = cli.json{Total = 4415, ApplyId = big, Ratio = 0.5, Ok = true, List = {"a", "b"}}
    assert.truthy(text:find('"Total": 4415\n', 1, true) or text:find('"Total": 4415,', 1, true))
    assert.truthy(text:find('"ApplyId": ' .. tostring(big), 1, true))
    assert.is_nil(text:find("4415.0", 1, true))
    assert.truthy(text:find('"Ratio": 0.5', 1, true))
    assert.are.same({Total = 4415, Ratio = 0.5, Ok = true, List = {"a", "b"}, ApplyId = big},
      require("aliyun.iot.core").json_decode(text))
    assert.is_true(text:find('"ApplyId"', 1, true) < text:find('"Total"', 1, true))
  end)

  it("prints an empty table as [] where the action's schema has a list, else {}", function()
    local lists = {"Data.ValidList.Name", "Items.Item", "Items.Item.Tags"}
    local text = cli.json({Data = {ValidList = {Name = {}}, Other = {}},
                           Items = {Item = {{Tags = {}, Meta = {}}}}}, lists)
    assert.truthy(text:find('"Name": []', 1, true), text)
    assert.truthy(text:find('"Other": {}', 1, true), text)
    -- items of a list share its path: Items.Item.Tags is a list, Items.Item.Meta is not
    assert.truthy(text:find('"Tags": []', 1, true), text)
    assert.truthy(text:find('"Meta": {}', 1, true), text)
    assert.truthy(cli.json({Name = {}}):find('"Name": {}', 1, true))
  end)
end)

describe("aliyun-iot command", function()
  setup(function()
    emu = require("aliyun.iot.emulator").start{async_delay = 0.05}
    tmp = require("spec.support.shell").temp_dir()
  end)

  teardown(function()
    if emu then emu:stop() end
    -- No run ever printed a secret on stderr (checked again over every run's stderr).
    no_secret_in(table.concat(all_stderr, "\n"))
    os.execute("rm -rf " .. q(tmp))
  end)

  before_each(function() emu:reset() end)

  it("prints its usage and version", function()
    local code, out = run("--help")
    assert.are.equal(0, code)
    assert.truthy(out:find("Usage: aliyun-iot", 1, true))
    assert.truthy(out:find("--names-file FILE", 1, true))
    code, out = run("register --help")
    assert.are.equal(0, code)
    assert.truthy(out:find("Usage: aliyun-iot", 1, true))
    code, out = run("--version")
    assert.are.equal(0, code)
    assert.truthy(out:find("^aliyun%-iot %d+%.%d+%.%d+"))
  end)

  it("runs as an executable from any folder (shebang, no LUA_PATH)", function()
    local out = sh(env_prefix() .. q(BIN) .. " --version 2>&1; echo rc=$?")
    assert.truthy(out:find("^aliyun%-iot %d"), out)
    assert.truthy(out:find("rc=0", 1, true), out)
  end)

  -- Bad command lines and local problems: exit 2, a clear message, nothing sent.
  local usage_cases = {
    {"register --product-key " .. PK .. " --count 3 --bogus", "unknown option '--bogus'"},
    {"register --product-key " .. PK .. " --cuont 3", "unknown option '--cuont'"},
    {"register --product-key " .. PK .. " --count", "option --count needs a value"},
    {"register --count 3 --product-key", "option --product-key needs a value"},
    {"register --product-key " .. PK .. " --count 3 --out --quiet", "option --out needs a value"},
    {"register --product-key " .. PK .. " --count=3 --quiet=yes", "option --quiet takes no value"},
    {"register --product-key " .. PK .. " --count 3 --count 4", "option --count given twice"},
    {"regster --product-key " .. PK, "unknown command 'regster'"},
    {"--quiet", "no command given"},
    {"register --count 3", "'register' needs --product-key"},
    {"register --product-key " .. PK, "needs either --count or --names-file"},
    {"register --product-key " .. PK .. " --count 3 --names-file x", "--count and --names-file exclude each other"},
    {"register --product-key " .. PK .. " --count 3 --apply-timeout 0", "--apply-timeout must be a positive number"},
    {"status --product-key " .. PK .. " --apply-id 1 --apply-timeout 5", "option --apply-timeout does not apply to 'status'"},
    {"register --product-key " .. PK .. " --count 0", "--count must be a positive integer"},
    {"register --product-key " .. PK .. " --count 1e3", "--count must be a positive integer"},
    {"register --product-key " .. PK .. " --count -1", "--count must be a positive integer"},
    {"register --product-key " .. PK .. " --count 3 --skip-invalid", "--skip-invalid applies to --names-file only"},
    {"register --product-key " .. PK .. " --count 3 --format xml", "--format must be csv, json, ndjson or esp-idf"},
    {"register --product-key " .. PK .. " --count 3 --timeout 0", "--timeout must be a positive number"},
    {"register --product-key " .. PK .. " --count 3 --deadline soon", "--deadline must be a positive number"},
    {"register --product-key " .. PK .. " --count 3 extra", "unexpected argument 'extra'"},
    {"status --product-key " .. PK .. " --count 3 --apply-id 1", "option --count does not apply to 'status'"},
    {"status --product-key " .. PK, "'status' needs --apply-id"},
    {"devices --product-key " .. PK .. " --apply-id 4415.5", "--apply-id must be a positive integer"},
    {"resume", "'resume' needs --state"},
    {"call", "'call' needs an ACTION"},
    {"call Query-Device", "is not an action name"},
    {"call QueryDevice ProductKey", "'ProductKey' is not Key=Value"},
    {"call BatchGetDeviceState DeviceName.1=a DeviceName.3=c", "list DeviceName has no item 2"},
    {"register --product-key " .. PK .. " --names-file NOPE/names.txt", "cannot read names file", true},
    {"register --product-key " .. PK .. " --count 3 --out NOPE/devices.csv",
     "cannot write --out NOPE/devices.csv: no folder NOPE", true},
    {"resume --state NOPE.state", "cannot read state file NOPE.state: no such file", true},
    {"register --product-key " .. PK .. " --count 3 --out .", "cannot write --out .: it is a folder", true},
  }
  for _, case in ipairs(usage_cases) do
    it("exits 2 before any request: " .. case[1], function()
      local before = request_count()
      local code, out, err = run(ep() .. case[1])
      assert.are.equal(2, code, err)
      assert.are.equal("", out)
      assert.truthy(err:find(case[2], 1, true), err)
      -- usage errors point at --help; local file problems do not need to
      assert.are.equal(not case[3], err:find("--help", 1, true) ~= nil, err)
      assert.are.equal(before, request_count())
    end)
  end

  it("exits 2 on a names file with no name, and on a folder that is not writable", function()
    write(tmp .. "/empty.txt", "# nothing here\n\n")
    local code, _, err = run(ep() .. "register --product-key " .. PK .. " --names-file empty.txt")
    assert.are.equal(2, code)
    assert.truthy(err:find("holds no device name", 1, true), err)
    code, _, err = run(ep() .. "register --product-key " .. PK .. " --count 1 --out /proc/devices.csv")
    assert.are.equal(2, code)
    assert.truthy(err:find("cannot write --out /proc/devices.csv", 1, true), err)
    assert.are.equal(0, request_count())
  end)

  it("register --state: refuses anything already there, untouched, before any request", function()
    -- a journal of a job not finished, a finished one, an empty file, a file of the user's
    write(tmp .. "/used.state", '{"event":"job","version":1,"kind":"random","ProductKey":"' .. PK ..
      '","Count":1}\n')
    write(tmp .. "/done.state", '{"event":"job","version":1,"kind":"random","ProductKey":"' .. PK ..
      '","Count":1}\n{"event":"done","Devices":0}\n')
    write(tmp .. "/empty.state", "")
    write(tmp .. "/notes.txt", "my notes\n")
    assert(os.execute("chmod 644 " .. q(tmp .. "/empty.state") .. " " .. q(tmp .. "/notes.txt")))
    assert(os.execute("ln -sf notes.txt " .. q(tmp .. "/link.state")))
    assert(os.execute("ln -sf nowhere.state " .. q(tmp .. "/dangling.state")))
    assert(os.execute("rm -f " .. q(tmp .. "/fifo.state") .. " && mkfifo " .. q(tmp .. "/fifo.state")))
    local cases = {
      -- the whole resume command (--endpoint too), named as the program was run
      {"used.state", "state file used.state exists: finish its job with '" .. BIN ..
        " resume --state used.state --endpoint " .. emu.endpoint .. "'"},
      {"done.state", "state file done.state holds a finished job"},
      {"empty.state", "state file empty.state exists: --state takes the path of a new file"},
      {"notes.txt", "state file notes.txt exists: --state takes the path of a new file"},
      {"link.state", "state file link.state exists and is not a regular file (a symlink)"},
      {"dangling.state", "state file dangling.state exists and is not a regular file (a symlink)"},
      {"fifo.state", "state file fifo.state exists and is not a regular file (a device, FIFO or socket)"},
    }
    local dev = tmp .. "/null.state"
    os.remove(dev)
    if shell.ok("mknod -m 666 " .. q(dev) .. " c 1 3 2>/dev/null") then
      cases[#cases + 1] = {"null.state", "state file null.state exists and is not a regular file"}
    end
    local function snapshot()
      return sh("cd " .. q(tmp) .. " && stat -c '%n %F %a %s %i' used.state done.state empty.state " ..
        "notes.txt link.state dangling.state fifo.state " .. (#cases > 7 and "null.state" or "") ..
        " && cat used.state done.state notes.txt && readlink link.state dangling.state")
    end
    local before = snapshot()
    for _, case in ipairs(cases) do
      local code, out, err = run(ep() .. "register --product-key " .. PK .. " --count 1 --state " .. case[1])
      assert.are.equal(2, code, err)
      assert.are.equal("", out)
      assert.truthy(err:find(case[2], 1, true), err)
      assert.is_nil(err:find("to finish it, run", 1, true), err)
      assert.is_nil(err:find("client:", 1, true), err)
    end
    assert.are.equal(before, snapshot())
    assert.are.equal(0, request_count())
    assert.is_nil(read(tmp .. "/nowhere.state"))
    if #cases > 7 then
      assert.are.equal("character special file", (sh("stat -c %F " .. q(dev)):gsub("%s+$", "")))
      assert.are.equal("666", mode(dev))
    end

    -- a new path: created 0600; the journal a user named stays, and resume from it writes
    -- the same devices again
    local code, out, err = run(ep() .. "--quiet register --product-key " .. PK .. " --count 2 --state new.state")
    assert.are.equal(0, code, err)
    assert.are.equal(2, #parse_csv(out))
    assert.are.equal("600", mode(tmp .. "/new.state"))
    code, out, err = run(ep() .. "--quiet resume --state new.state")
    assert.are.equal(0, code, err)
    assert.are.same(names_of(parse_csv(out)), state_names())
    assert.are.equal(1, #emu:state().applies)
  end)

  it("a --state path created by another run after the check: exit 2, that file untouched", function()
    -- The run is held between its check of --state and the journal's creation: its --out is
    -- a FIFO, whose open waits for a reader. Meanwhile another run "wins" the path (a file it
    -- has just created and not yet written, mode 0644 here to see any chmod).
    local S, fifo = tmp .. "/late.state", tmp .. "/late.fifo"
    assert(os.execute("rm -f " .. q(S) .. " " .. q(fifo) .. " && mkfifo " .. q(fifo)))
    sh(env_prefix() .. "sh -c " .. q(LUA .. " " .. q(BIN) .. " " .. ep() ..
      "--quiet register --product-key " .. PK .. " --count 1 --state late.state --out late.fifo" ..
      " < /dev/null > late.out 2> late.err & echo $! > late.pid; wait $!; echo $? > late.rc") ..
      " > /dev/null 2>&1 &")
    local t0 = os.time()
    local pid
    while not pid and os.time() - t0 < 10 do
      pid = (read(tmp .. "/late.pid") or ""):match("%d+")
      if not pid then os.execute("sleep 0.05") end
    end
    -- wait until it blocks opening the FIFO (past the --state check)
    t0 = os.time()
    while os.time() - t0 < 5 and not (read("/proc/" .. pid .. "/wchan") or ""):find("fifo") do
      os.execute("sleep 0.05")
    end
    write(S, "")
    assert(os.execute("chmod 644 " .. q(S)))
    local ino = sh("stat -c %i " .. q(S))
    assert(os.execute("cat " .. q(fifo) .. " > /dev/null &"))
    t0 = os.time()
    while not read(tmp .. "/late.rc") and os.time() - t0 < 20 do os.execute("sleep 0.05") end
    local err = read(tmp .. "/late.err") or ""
    all_stderr[#all_stderr + 1] = err
    assert.are.equal("2", (read(tmp .. "/late.rc") or ""):match("%d+"), err)
    assert.truthy(err:find("late.state", 1, true), err)
    assert.are.equal("", read(S))
    assert.are.equal("644", mode(S))
    assert.are.equal(ino, sh("stat -c %i " .. q(S)))
    assert.are.equal(0, request_count())
  end)

  it("two register --state S at once: one wins, the other exits 2 and touches nothing", function()
    emu:set{async_delay = 0.5}
    for i = 1, 2 do
      sh(env_prefix() .. "sh -c " .. q(LUA .. " " .. q(BIN) .. " " .. ep() ..
        "--quiet register --product-key " .. PK .. " --count 3 --state race.state" ..
        " > race" .. i .. ".out 2> race" .. i .. ".err; echo $? > race" .. i .. ".rc") ..
        " > /dev/null 2>&1 &")
    end
    local t0 = os.time()
    while not (read(tmp .. "/race1.rc") and read(tmp .. "/race2.rc")) and os.time() - t0 < 30 do
      os.execute("sleep 0.05")
    end
    emu:set{async_delay = 0.05}
    local rc = {tonumber(read(tmp .. "/race1.rc")), tonumber(read(tmp .. "/race2.rc"))}
    table.sort(rc)
    local errs = read(tmp .. "/race1.err") .. read(tmp .. "/race2.err")
    all_stderr[#all_stderr + 1] = errs
    assert.are.same({0, 2}, rc, errs)
    assert.truthy(errs:find("race.state", 1, true), errs)
    assert.are.equal(1, #emu:state().applies)
    -- the winner's journal is whole: resume finds the job finished, with its devices
    local code, out, err = run(ep() .. "--quiet resume --state race.state")
    assert.are.equal(0, code, err)
    assert.are.same(state_names(), names_of(parse_csv(out)))
    assert.are.equal(1, #emu:state().applies)
  end)

  it("register --count writes CSV to stdout: exactly the devices the service holds", function()
    local code, out, err = run(ep() .. "register --product-key " .. PK .. " --count 7")
    assert.are.equal(0, code, err)
    local devs = parse_csv(out)
    assert.are.equal(7, #devs)
    assert.are.same(state_names(), names_of(devs))
    for _, d in ipairs(devs) do
      assert.are.equal(PK, d.ProductKey)
      assert.truthy(#d.DeviceSecret > 0 and #d.IotId > 0)
    end
    -- one progress line per phase on a pipe, and a summary
    assert.truthy(err:find("aliyun-iot: create", 1, true), err)
    assert.truthy(err:find("7 devices in 1 apply,", 1, true), err)
    -- the journal it kept meanwhile is named, and gone once the job is done
    local journal = err:match("journal (%S+); if the job stops, finish it with: %S*aliyun%-iot resume")
    assert.truthy(journal, err)
    assert.are.equal(tmp .. "/", journal:sub(1, #tmp + 1))
    assert.is_nil(read(journal))
    assert.is_nil(err:find("\r", 1, true))
    no_secret_in(err)
  end)

  it("draws a progress bar when stderr is a terminal", function()
    -- script(1) gives the command a pseudo-terminal; its log holds what the terminal got
    local log = tmp .. "/tty.log"
    local cmd = LUA .. " " .. BIN .. " " .. ep() .. "register --product-key " .. PK ..
      " --count 1200 --out tty.csv"
    local rc = sh(env_prefix() .. "TERM=xterm script -qec " .. q(cmd) .. " " .. q(log) ..
      " > /dev/null; echo $?")
    assert.are.equal("0", rc:match("%d+"), read(log))
    local screen = read(log)
    assert.truthy(screen:find("\r\27[K", 1, true), screen)
    assert.truthy(screen:find("fetch    %[" .. ("#"):rep(30) .. "%] 1200/1200  %d+/s"), screen)
    -- the create phase's count jumps when the service answers: no rate for it
    assert.truthy(screen:find("create   [##############################] 1200/1200", 1, true), screen)
    assert.is_nil(screen:find("create   %[#+%] 1200/1200  %d+/s"), screen)
    assert.truthy(screen:find("1200 devices in 2 applies", 1, true), screen)
    assert.are.equal(1200, #parse_csv(read(tmp .. "/tty.csv")))
    no_secret_in(screen)
  end)

  it("--quiet prints nothing on stderr; options may come before the command", function()
    local code, out, err = run("--quiet " .. ep() .. "--format json register --count 2 --product-key " .. PK)
    assert.are.equal(0, code, err)
    assert.are.equal("", err)
    local devs = cjson.decode(out)
    assert.are.equal(2, #devs)
    assert.are.same(state_names(), names_of(devs))
  end)

  it("--out writes atomically with mode 0600, replacing a previous file", function()
    local path = tmp .. "/out/devices.json"
    assert(os.execute("mkdir -p " .. q(tmp .. "/out")))
    write(path, "OLD")
    assert(os.execute("chmod 644 " .. q(path)))
    local code, out, err = run(ep() .. "register --product-key " .. PK .. " --count 3 --format json --out out/devices.json")
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    assert.are.equal("600", mode(path))
    local devs = cjson.decode(read(path))
    assert.are.equal(3, #devs)
    for _, d in ipairs(devs) do
      all_secrets[#all_secrets + 1] = d.DeviceSecret
      assert.are.same({"DeviceName", "DeviceSecret", "IotId", "ProductKey"},
        (function() local k = {} for n in pairs(d) do k[#k + 1] = n end table.sort(k) return k end)())
    end
    assert.are.same(state_names(), names_of(devs))
    -- nothing but the output in the folder: the temporary file was renamed
    assert.are.equal("devices.json\n", sh("ls -A " .. q(tmp .. "/out")))
    no_secret_in(err)

    -- a failed run leaves the previous output untouched and no temporary file behind
    emu:fault{kind = "503", probability = 1, action = "BatchRegisterDevice"}
    code, out, err = run(ep() .. "register --product-key " .. PK ..
      " --count 3 --service-names --format json --out out/devices.json")
    emu:clear_faults()
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("ServiceUnavailable", 1, true), err)
    assert.are.same(devs, cjson.decode(read(path)))
    assert.are.equal("devices.json\n", sh("ls -A " .. q(tmp .. "/out")))
  end)

  it("register --names-file: CR, comments, nicknames; exit 2 on invalid names, nothing registered", function()
    write(tmp .. "/names.txt", "\239\187\191# our lights\r\nlight_0001\r\n\r\nlight_0002,Kitchen_lamp\r\n" ..
      "  # indented comment\nlight_0003\n")
    local code, out, err = run(ep() .. "register --product-key " .. PK .. " --names-file names.txt")
    assert.are.equal(0, code, err)
    assert.are.same({"light_0001", "light_0002", "light_0003"}, names_of(parse_csv(out)))
    assert.are.same({"light_0001", "light_0002", "light_0003"}, state_names())
    local check = nil
    for _, r in ipairs(emu:requests()) do
      if r.action == "BatchCheckDeviceNames" then check = r.params end
    end
    assert.are.equal("Kitchen_lamp", check["DeviceNameList.2.DeviceNickname"])

    emu:reset()
    write(tmp .. "/bad.txt", "good_0001\nbad name\nx\n")
    code, out, err = run(ep() .. "register --product-key " .. PK .. " --names-file bad.txt")
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("InvalidDeviceName", 1, true), err)
    assert.truthy(err:find("bad name", 1, true), err)
    assert.are.same({}, state_names())
  end)

  it("register --names-file - --skip-invalid reads stdin and exits 3 with the invalid names listed", function()
    local code, out, err = run(ep() .. "register --product-key " .. PK .. " --names-file - --skip-invalid",
      "sensor_0001\nbad name\nsensor_0002\n")
    assert.are.equal(3, code, err)
    assert.are.same({"sensor_0001", "sensor_0002"}, names_of(parse_csv(out)))
    assert.are.same({"sensor_0001", "sensor_0002"}, state_names())
    assert.truthy(err:find("1 invalid name left out", 1, true), err)
    assert.truthy(err:find("bad name", 1, true), err)
    no_secret_in(err)
  end)

  it("a failure midway exits 1, lists the ApplyIds and the resume command, which finishes the job", function()
    emu:fault{kind = "503", probability = 1, action = "QueryPageByApplyId"}
    local code, out, err = run(ep() .. "--quiet register --product-key " .. PK .. " --count 5 --out devices.csv")
    emu:clear_faults()
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    assert.is_nil(read(tmp .. "/devices.csv"))
    local ids = err:match("ApplyIds created: ([%d ]+)\n")
    assert.truthy(ids, err)
    assert.are.equal(tostring(emu:state().applies[1].ApplyId), ids)
    local resume = err:match("to finish it, run:\n  (%S*aliyun%-iot resume [^\n]+)\n")
    assert.truthy(resume, err)
    assert.truthy(resume:find("--out devices.csv", 1, true), resume)
    local state = resume:match("%-%-state (%S+)")
    assert.are.equal(tmp .. "/", state:sub(1, #tmp + 1)) -- $TMPDIR
    assert.are.equal("600", mode(state))
    code, out, err = run(resume:gsub("^%S*aliyun%-iot ", ""))
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    assert.are.equal("600", mode(tmp .. "/devices.csv"))
    local devs = parse_csv(read(tmp .. "/devices.csv"))
    assert.are.equal(5, #devs)
    assert.are.same(state_names(), names_of(devs))
    assert.are.equal(1, #emu:state().applies)
    no_secret_in(err)
  end)

  it("a BatchRegisterDevice that may have acted without answering ends in the ambiguous error", function()
    emu:fault{kind = "reset_after", count = 1, action = "BatchRegisterDevice"}
    local code, out, err = run(ep() .. "--quiet register --product-key " .. PK .. " --count 3 --service-names --out amb.csv")
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("the service may have created an apply whose ApplyId never arrived", 1, true), err)
    assert.is_nil(read(tmp .. "/amb.csv"))
    -- the service did take the apply, and nothing was sent a second time
    local applies = emu:state().applies
    assert.are.equal(1, #applies)
    assert.are.equal(3, applies[1].Count)
    local sent = 0
    for _, r in ipairs(emu:requests()) do
      if r.action == "BatchRegisterDevice" then sent = sent + 1 end
    end
    assert.are.equal(1, sent)
  end)

  -- A plain resume would meet the same end: not offered, but what exists and the two ways
  -- out (adopt the apply once found, or accept the ambiguity).
  local function no_resume_advice(err, state)
    assert.is_nil(err:find("to finish it", 1, true), err)
    assert.truthy(err:find("the journal " .. state .. " keeps the ApplyIds and the devices known", 1, true), err)
    assert.truthy(err:find("QueryDevice or the console", 1, true), err)
    assert.truthy(err:find("resume %-%-state " .. state:gsub("%p", "%%%0") .. " [^\n]*%-%-adopt%-apply%-id ID"), err)
    assert.truthy(err:find("resume %-%-state " .. state:gsub("%p", "%%%0") .. " [^\n]*%-%-accept%-ambiguous"), err)
  end

  it("an Ambiguous ending prints no resume command, on register and on resume", function()
    emu:fault{kind = "reset_after", count = 1, action = "BatchRegisterDevice"}
    local code, out, err = run(ep() .. "--quiet register --product-key " .. PK ..
      " --count 3 --service-names --state amb.state --out amb.csv")
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("aliyun-iot: Ambiguous:", 1, true), err)
    no_resume_advice(err, "amb.state")
    code, out, err = run(ep() .. "--quiet resume --state amb.state --out amb.csv")
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("aliyun-iot: Ambiguous:", 1, true), err)
    assert.truthy(err:find("cannot settle the uncertain BatchRegisterDevice", 1, true), err)
    no_resume_advice(err, "amb.state")
  end)

  it("an apply the service answers against what was asked: resume, and the way out if it repeats", function()
    local code, _, err = run(ep() .. "--quiet register --product-key " .. PK .. " --count 3 --service-names --state c.state")
    assert.are.equal(0, code, err)
    -- every line asks for 4 and the job is not finished: the service answers 3 devices
    local kept = {}
    for line in read(tmp .. "/c.state"):gmatch("[^\n]+") do
      if not line:find('"event":"fetched"', 1, true) and not line:find('"event":"done"', 1, true) then
        kept[#kept + 1] = (line:gsub('"Count":3', '"Count":4'))
      end
    end
    write(tmp .. "/c.state", table.concat(kept, "\n") .. "\n")
    local out
    code, out, err = run(ep() .. "--quiet resume --state c.state")
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("InvalidResponse: apply %d+: CREATE_SUCCESS with 3 devices, 4 asked"), err)
    -- a garbled answer is the likelier cause, which a resume gets past: it is offered, and
    -- the way out if the service says the same again
    assert.truthy(err:find("resume %-%-state c%.state"), err)
    assert.truthy(err:find("contradicts the journal: read the apply's devices with:", 1, true), err)
    assert.truthy(err:find("devices %-%-product%-key " .. PK .. " %-%-apply%-id %d+"), err)
  end)

  it("--deadline ends a job that takes too long: exit 1 with the resume command", function()
    emu:set{async_delay = 3}
    local code, out, err = run(ep() .. "--quiet --deadline 0.5 register --product-key " .. PK .. " --count 2")
    emu:set{async_delay = 0.05}
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("ApplyTimeout", 1, true), err)
    assert.truthy(err:find("aliyun-iot resume --state ", 1, true), err)
  end)

  it("a wrong AccessKeySecret: exit 1, SignatureDoesNotMatch, the secret nowhere on stderr", function()
    local code, out, err = run(ep() .. "register --product-key " .. PK .. " --count 2", nil,
      "ALIBABA_CLOUD_ACCESS_KEY_SECRET=wrong%26Secret=XYZ")
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("SignatureDoesNotMatch", 1, true), err)
    assert.is_nil(err:find("Secret=XYZ", 1, true), err)
    assert.is_nil(err:find("%26Secret", 1, true), err)
    assert.are.equal(0, #emu:state().applies)
    -- nothing was created, so the default journal is not kept (nor offered to resume)
    local journal = err:match("journal (%S+); if the job stops")
    assert.truthy(journal, err)
    assert.is_nil(read(journal))
    assert.is_nil(err:find("to finish it", 1, true), err)
  end)

  it("status, devices and call print what the service answers", function()
    local code, out, err = run(ep() .. "--quiet register --product-key " .. PK .. " --count 3")
    assert.are.equal(0, code, err)
    local registered = parse_csv(out)
    local apply_id = emu:state().applies[1].ApplyId

    code, out, err = run(ep() .. "status --product-key " .. PK .. " --apply-id " .. apply_id)
    assert.are.equal(0, code, err)
    local status = cjson.decode(out)
    assert.are.equal("CREATE_SUCCESS", status.Data.Status)
    assert.is_true(status.Success)
    -- random names: no name lists, printed as the empty lists they are
    assert.truthy(out:find('"ValidList": {\n      "Name": []\n', 1, true), out)
    assert.truthy(out:find('"InvalidList": {\n      "Name": []\n', 1, true), out)

    code, out, err = run(ep() .. "devices --product-key " .. PK .. " --apply-id " .. apply_id)
    assert.are.equal(0, code, err)
    assert.are.same(registered, parse_csv(out))
    no_secret_in(err)

    code, out, err = run(ep() .. "call QueryPageByApplyId ApplyId=" .. apply_id .. " PageSize=2")
    assert.are.equal(0, code, err)
    assert.truthy(out:find('"Total": 3', 1, true), out)
    assert.truthy(out:find('"PageSize": 2', 1, true), out)
    assert.is_nil(out:find("%d%.0[,\n]"), out)
    assert.are.equal(2, #cjson.decode(out).ApplyDeviceList.ApplyDeviceInfo)

    code, out, err = run(ep() .. "call BatchCheckDeviceNames ProductKey=" .. PK ..
      " DeviceNameList.1.DeviceName=lamp_0001 DeviceNameList.2.DeviceName=lamp_0002" ..
      " DeviceNameList.2.DeviceNickname=Hall")
    assert.are.equal(0, code, err)
    assert.truthy(cjson.decode(out).Data.ApplyId)
    local last = emu:requests()
    last = last[#last].params
    assert.are.equal("lamp_0001", last["DeviceNameList.1.DeviceName"])
    assert.are.equal("Hall", last["DeviceNameList.2.DeviceNickname"])

    -- a service error: exit 1 and the error's text; a bad value: exit 2, nothing sent
    code, out, err = run(ep() .. "status --product-key " .. PK .. " --apply-id 999999999")
    assert.are.equal(1, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("^aliyun%-iot: [%w.]+: "), err)
    local before = request_count()
    code, out, err = run(ep() .. "call QueryPageByApplyId ApplyId=abc")
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("InvalidParameter", 1, true), err)
    assert.are.equal(before, request_count())
  end)

  it("a register killed midway is finished by resume: nothing lost, nothing created twice", function()
    emu:set{async_delay = 2}
    local state, out = tmp .. "/kill.state", tmp .. "/kill.csv"
    local pid = sh(env_prefix() .. LUA .. " " .. q(BIN) .. " " .. ep() ..
      "--quiet register --product-key " .. PK .. " --count 1500 --service-names --state kill.state --out kill.csv" ..
      " > /dev/null 2> kill.err & echo $!"):match("%d+")
    -- wait until both applies (1000 + 500) are on disk, then kill the process with no
    -- chance to react, while the service is still creating their devices
    local function applies()
      local n = 0
      for _ in (read(state) or ""):gmatch('"event":"apply"') do n = n + 1 end
      return n
    end
    local t0 = os.time()
    while applies() < 2 and os.time() - t0 < 20 do os.execute("sleep 0.05") end
    assert.are.equal(2, applies())
    assert(os.execute("kill -9 " .. pid))
    os.execute("sleep 0.2")
    assert.is_nil(read(out))
    emu:set{async_delay = 0.05}

    local code, stdout, err = run(ep() .. "resume --state kill.state --out kill.csv")
    assert.are.equal(0, code, err)
    assert.are.equal("", stdout)
    local devs = parse_csv(read(out))
    assert.are.equal(1500, #devs)
    local seen = {}
    for _, d in ipairs(devs) do
      assert.is_nil(seen[d.DeviceName], "duplicate " .. d.DeviceName)
      seen[d.DeviceName] = true
    end
    local s = emu:state()
    assert.are.equal(1500, s.products[PK].devices)
    assert.are.same(s.products[PK].names, names_of(devs))
    local created = 0
    for _, a in ipairs(s.applies) do created = created + a.Count end
    assert.are.equal(1500, created)
    no_secret_in(err .. (read(tmp .. "/kill.err") or ""))
  end)

  it("--out into a FIFO, a device or through a symlink writes there and replaces nothing", function()
    -- a FIFO: written straight into, read concurrently
    assert(os.execute("mkfifo " .. q(tmp .. "/fifo")))
    assert(os.execute("timeout 10 cat " .. q(tmp .. "/fifo") .. " > " .. q(tmp .. "/fifo.out") ..
      " 2> /dev/null < /dev/null &"))
    local code, out, err = run(ep() .. "--quiet register --product-key " .. PK .. " --count 2 --out fifo")
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    local t0 = os.time()
    local function lines() return select(2, (read(tmp .. "/fifo.out") or ""):gsub("\n", "")) end
    while lines() < 3 and os.time() - t0 < 5 do os.execute("sleep 0.05") end
    assert.are.same(state_names(), names_of(parse_csv(read(tmp .. "/fifo.out"))))
    assert.are.equal("fifo", (sh("stat -c %F " .. q(tmp .. "/fifo")):gsub("%s+$", "")))

    -- a symlink to a regular file: the link stays, its target gets the output, mode 0600
    emu:reset()
    assert(os.execute("mkdir -p " .. q(tmp .. "/real")))
    write(tmp .. "/real/target.csv", "OLD")
    assert(os.execute("chmod 644 " .. q(tmp .. "/real/target.csv")))
    assert(os.execute("ln -s real/target.csv " .. q(tmp .. "/link.csv")))
    code, out, err = run(ep() .. "--quiet register --product-key " .. PK .. " --count 3 --out link.csv")
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    assert.are.equal("real/target.csv\n", sh("readlink " .. q(tmp .. "/link.csv")))
    assert.are.equal("600", mode(tmp .. "/real/target.csv"))
    assert.are.same(state_names(), names_of(parse_csv(read(tmp .. "/real/target.csv"))))
    assert.are.equal("target.csv\n", sh("ls -A " .. q(tmp .. "/real"))) -- no temporary left

    -- a character device (our own /dev/null twin): it stays one
    local dev = tmp .. "/null"
    if not shell.ok("mknod -m 666 " .. q(dev) .. " c 1 3 2>/dev/null") then
      pending("mknod needs root")
      return
    end
    code, out, err = run(ep() .. "--quiet call QueryPageByApplyId ApplyId=" ..
      emu:state().applies[1].ApplyId .. " --out null")
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    assert.are.equal("character special file", (sh("stat -c %F " .. q(dev)):gsub("%s+$", "")))
    assert.are.equal("666", mode(dev))
  end)

  it("a failed write to stdout is a failure: exit 1, the journal kept", function()
    local full = tmp .. "/full"
    if not shell.ok("mknod -m 666 " .. q(full) .. " c 1 7 2>/dev/null") then
      pending("mknod needs root")
      return
    end
    local code = sh(env_prefix() .. q(BIN) .. " " .. ep() .. "--quiet register --product-key " .. PK ..
      " --count 120 --state full.state > full 2> full.err; echo $?")
    local err = read(tmp .. "/full.err")
    assert.are.equal("1\n", code, err)
    assert.truthy(err:find("cannot write the output", 1, true), err)
    assert.truthy(err:find("resume --state full.state", 1, true), err)
    assert.truthy(read(tmp .. "/full.state"):find('"apply"', 1, true))
    no_secret_in(err)
  end)

  it("--out through a dangling symlink or into a folder: exit 2 before any request", function()
    assert(os.execute("ln -s nowhere/devices.csv " .. q(tmp .. "/dangling.csv")))
    assert(os.execute("mkdir -p " .. q(tmp .. "/folder.csv")))
    for _, case in ipairs{{"dangling.csv", "it is a symlink to nothing"}, {"folder.csv", "it is a folder"}} do
      local code, out, err = run(ep() .. "register --product-key " .. PK .. " --count 2 --out " .. case[1])
      assert.are.equal(2, code, err)
      assert.are.equal("", out)
      assert.truthy(err:find("cannot write --out " .. case[1] .. ": " .. case[2], 1, true), err)
    end
    assert.are.equal(0, request_count())
    assert.are.equal("nowhere/devices.csv\n", sh("readlink " .. q(tmp .. "/dangling.csv")))
  end)

  it("resume from a file that is not a journal: exit 2 with a clear message, nothing sent", function()
    write(tmp .. "/garbage.state", "not json at all\n{\"event\":\"job\"}\n")
    write(tmp .. "/nojob.state", "{\"event\":\"apply\",\"ApplyId\":1}\n")
    write(tmp .. "/blank.state", "")
    assert(os.execute("mkdir -p " .. q(tmp .. "/dir.state")))
    for _, case in ipairs{{"garbage.state", "state file garbage.state is not a journal to resume"},
                          {"nojob.state", "state file nojob.state is not a journal to resume"},
                          {"blank.state", "state file blank.state is not a journal to resume"},
                          {"dir.state", "state file dir.state is a folder"}} do
      local code, out, err = run(ep() .. "resume --state " .. case[1])
      assert.are.equal(2, code, err)
      assert.are.equal("", out)
      assert.truthy(err:find(case[2], 1, true), err)
      assert.is_nil(err:find("internal error", 1, true), err)
    end
    local code, _, err = run(ep() .. "register --product-key " .. PK .. " --count 1 --state dir.state")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("state file dir.state is a folder", 1, true), err)
    assert.are.equal(0, request_count())
  end)

  it("Ctrl-C (SIGINT) stops cleanly: exit 130, the ApplyIds and the resume command, which finishes", function()
    emu:set{async_delay = 2}
    local state = tmp .. "/int.state"
    -- the inner shell waits for the command and records its exit status
    sh(env_prefix() .. "sh -c " .. q(LUA .. " " .. q(BIN) .. " " .. ep() ..
      "register --product-key " .. PK .. " --count 3 --state int.state --out int.csv" ..
      " > int.out 2> int.err & echo $! > int.pid; wait $!; echo $? > int.rc") .. " > /dev/null 2>&1 &")
    local t0 = os.time()
    while not (read(state) or ""):find('"event":"apply"', 1, true) and os.time() - t0 < 10 do
      os.execute("sleep 0.05")
    end
    assert.truthy((read(state) or ""):find('"event":"apply"', 1, true), read(state))
    local pid = read(tmp .. "/int.pid"):match("%d+")
    -- core dumps are off in the CLI: the AccessKeySecret is in its memory
    local limits = read("/proc/" .. pid .. "/limits")
    if limits then
      assert.truthy(limits:find("Max core file size%s+0%s+0"), limits)
    end
    assert(os.execute("kill -INT " .. pid))
    t0 = os.time()
    while not read(tmp .. "/int.rc") and os.time() - t0 < 10 do os.execute("sleep 0.05") end
    emu:set{async_delay = 0.05}
    local err = read(tmp .. "/int.err")
    all_stderr[#all_stderr + 1] = err
    assert.are.equal("130", (read(tmp .. "/int.rc") or ""):match("%d+"), err)
    assert.is_nil(err:find("internal error", 1, true), err)
    assert.is_nil(err:find("traceback", 1, true), err)
    assert.truthy(err:find("aliyun-iot: interrupted\n", 1, true), err)
    assert.truthy(err:find("ApplyIds created: " .. emu:state().applies[1].ApplyId .. "\n", 1, true), err)
    local resume = err:match("to finish it, run:\n  (%S*aliyun%-iot resume [^\n]+)\n")
    assert.truthy(resume, err)
    assert.are.equal("", read(tmp .. "/int.out"))
    assert.is_nil(read(tmp .. "/int.csv"))
    -- the temporary output beside int.csv is gone
    assert.are.equal("", sh("cd " .. q(tmp) .. " && ls -A | grep '^\\.int\\.csv' || true"))

    local code, out
    code, out, err = run(resume:gsub("^%S*aliyun%-iot ", ""))
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    local devs = parse_csv(read(tmp .. "/int.csv"))
    assert.are.same(state_names(), names_of(devs))
    assert.are.equal(3, #devs)
    assert.are.equal(1, #emu:state().applies)
  end)
  -- A tiny file system for the output: a tmpfs (root), else a file-size limit.
  local function tiny_fs(name, kbytes)
    local dir = tmp .. "/" .. name
    assert(os.execute("mkdir -p " .. q(dir)))
    if shell.ok("mount -t tmpfs -o size=" .. kbytes .. "k tmpfs " .. q(dir) .. " 2>/dev/null") then
      return dir, function() os.execute("umount " .. q(dir) .. " 2>/dev/null") end, ""
    end
    -- SIGXFSZ ignored: a write past the limit fails with EFBIG instead of killing the process
    return dir, function() end, "trap '' XFSZ; ulimit -f " .. kbytes .. "; "
  end

  it("--out on a full disk: exit 1, the journal kept and named, resume writes every device", function()
    local dir, unmount, limit = tiny_fs("tiny", 16)
    local ok, e = pcall(function()
      local code = sh(limit .. env_prefix() .. LUA .. " " .. q(BIN) .. " " .. ep() ..
        "--quiet register --product-key " .. PK .. " --count 300 --out tiny/devices.csv " ..
        "< /dev/null > full.out 2> full.err; echo $?")
      local err = read(tmp .. "/full.err")
      all_stderr[#all_stderr + 1] = err
      assert.are.equal("1\n", code, err)
      assert.is_nil(err:find("300 devices", 1, true), err)
      -- the output's failure is not called a journal's
      assert.is_nil(err:find("devices.csv: cannot write the journal", 1, true), err)
      assert.is_nil(read(dir .. "/devices.csv"))
      assert.are.equal("", sh("ls -A " .. q(dir))) -- no temporary left behind
      local resume = err:match("write them again with:\n  (%S*aliyun%-iot resume [^\n]+)\n")
      if limit ~= "" and not resume then
        -- under a file-size limit the journal may be the first file to hit it: kept too
        resume = err:match("to finish it, run:\n  (%S*aliyun%-iot resume [^\n]+)\n")
      end
      assert.truthy(resume, err)
      local state = resume:match("%-%-state (%S+)")
      assert.truthy(read(state), state)
      unmount()
      local again = resume:gsub("^%S*aliyun%-iot ", ""):gsub("%-%-out %S+", "--out again.csv")
      local c2, _, e2 = run(again)
      assert.are.equal(0, c2, e2)
      local devs = parse_csv(read(tmp .. "/again.csv"))
      assert.are.equal(300, #devs)
      assert.are.same(state_names(), names_of(devs))
      assert.are.equal(1, #emu:state().applies)
    end)
    unmount()
    assert(ok, e)
  end)

  it("a file-size limit (ulimit -f, no trap) ends in exit 1 with a message, not SIGXFSZ", function()
    -- systemd's LimitFSIZE or a shell's ulimit: the signal used to kill the job (exit 153)
    -- with nothing said; the CLI ignores it itself, so the write fails and is reported
    local code = sh("ulimit -f 1; " .. env_prefix() .. LUA .. " " .. q(BIN) .. " " .. ep() ..
      "--quiet register --product-key " .. PK .. " --count 50 --service-names --out lim.csv" ..
      " < /dev/null > lim.out 2> lim.err; echo $?")
    local err = read(tmp .. "/lim.err")
    all_stderr[#all_stderr + 1] = err
    assert.are.equal("1\n", code, err)
    assert.truthy(err:find("cannot write", 1, true), err)
    local state = err:match("resume %-%-state (%S+)")
    assert.truthy(state and read(state), err)
  end)

  it("call ... --out on a full disk exits 1, and so does devices", function()
    local dir, unmount, limit = tiny_fs("fullfs", 64)
    local ok, e = pcall(function()
      if limit == "" then
        sh("dd if=/dev/zero of=" .. q(dir .. "/fill") .. " bs=4k 2>/dev/null; true")
      else
        limit = "trap '' XFSZ; ulimit -f 0; "
      end
      assert(run(ep() .. "--quiet register --product-key " .. PK .. " --count 5") == 0)
      for _, args in ipairs{"call QueryDevice ProductKey=" .. PK .. " --out fullfs/q.json",
                            "devices --product-key " .. PK .. " --apply-id " ..
                              emu:state().applies[1].ApplyId .. " --out fullfs/d.csv"} do
        local code = sh(limit .. env_prefix() .. LUA .. " " .. q(BIN) .. " " .. ep() .. args ..
          " < /dev/null > q.out 2> q.err; echo $?")
        local err = read(tmp .. "/q.err")
        all_stderr[#all_stderr + 1] = err
        assert.are.equal("1\n", code, err)
        assert.truthy(err:find("cannot write fullfs/", 1, true), err)
        assert.is_nil(read(dir .. "/q.json"))
        assert.is_nil(read(dir .. "/d.csv"))
      end
    end)
    unmount()
    assert(ok, e)
  end)

  it("an unusable TMPDIR without --state: no journal, no job (exit 2, the folder named)", function()
    write(tmp .. "/a-file", "x")
    local cases = {{tmp .. "/no-such-dir", "no-such-dir"}, {tmp .. "/a-file", "a-file"}}
    local ro = tmp .. "/ro"
    assert(os.execute("mkdir -p " .. q(ro)))
    local mounted = shell.ok("mount -t tmpfs -o ro,size=16k tmpfs " .. q(ro) .. " 2>/dev/null")
    if mounted then cases[#cases + 1] = {ro, ro} end
    local ok, e = pcall(function()
      for _, case in ipairs(cases) do
        local code, out, err = run(ep() .. "register --product-key " .. PK .. " --count 2", nil,
          "TMPDIR=" .. q(case[1]))
        assert.are.equal(2, code, err)
        assert.are.equal("", out)
        assert.truthy(err:find("TMPDIR folder", 1, true), err)
        assert.truthy(err:find(case[2], 1, true), err)
      end
    end)
    if mounted then os.execute("umount " .. q(ro)) end
    assert(ok, e)
    assert.are.equal(0, request_count())
    assert.are.equal("x", read(tmp .. "/a-file"))
  end)

  it("names files: CR alone ends a line; /dev/zero and a FIFO are refused, not read", function()
    write(tmp .. "/cr.txt", "lamp_1101\rlamp_1102\r# note\rlamp_1103,Hall\r")
    local code, out, err = run(ep() .. "--quiet register --product-key " .. PK .. " --names-file cr.txt")
    assert.are.equal(0, code, err)
    assert.are.same({"lamp_1101", "lamp_1102", "lamp_1103"}, names_of(parse_csv(out)))
    emu:reset()
    assert(os.execute("rm -f " .. q(tmp .. "/names.fifo") .. " && mkfifo " .. q(tmp .. "/names.fifo")))
    for _, f in ipairs{"/dev/zero", "names.fifo"} do
      local c, _, e = run(ep() .. "register --product-key " .. PK .. " --names-file " .. f)
      assert.are.equal(2, c, e)
      assert.truthy(e:find("cannot read names file", 1, true), e)
      assert.truthy(e:find("not a regular file", 1, true), e)
    end
    assert.are.equal(0, request_count())
  end)

  it("resume refuses a bad journal with PATH:LINE (exit 2, no traceback, nothing sent)", function()
    local job = '{"event":"job","version":1,"kind":"random","ProductKey":"' .. PK .. '","Count":%s}\n'
    local apply = '{"event":"apply","seq":1,"ProductKey":"' .. PK .. '","phase":"create","Count":1%s}\n'
    local cases = {
      {job:format('"abc"'), "j.state:1: job event: Count must be an integer"},
      {job:format("2.5"), "j.state:1: job event: Count must be an integer"},
      {job:format("1000000000000"), "j.state:1: job event: Count must be an integer from 1 to 10000000"},
      {job:format("3") .. apply:format(""), "j.state:2: apply event: ApplyId must be a string of digits"},
      {job:format("3") .. apply:format(',"ApplyId":"7"') ..
       '{"event":"device","ApplyId":"7","ProductKey":"' .. PK .. '","DeviceSecret":"s","IotId":"i"}\n',
       "j.state:3: device event: DeviceName must be a string"},
    }
    for _, case in ipairs(cases) do
      write(tmp .. "/j.state", case[1])
      local code, out, err = run(ep() .. "resume --state j.state")
      assert.are.equal(2, code, err)
      assert.are.equal("", out)
      assert.truthy(err:find(case[2], 1, true), err)
      assert.is_nil(err:find("internal error", 1, true), err)
      assert.is_nil(err:find("traceback", 1, true), err)
      assert.are.equal(case[1], read(tmp .. "/j.state"))
    end
    -- a FIFO or a device: refused at once, never waited on
    assert(os.execute("rm -f " .. q(tmp .. "/r.fifo") .. " && mkfifo " .. q(tmp .. "/r.fifo")))
    for _, f in ipairs{"r.fifo", "/dev/zero"} do
      local code, _, err = run(ep() .. "resume --state " .. f)
      assert.are.equal(2, code, err)
      assert.truthy(err:find("is not a regular file", 1, true), err)
    end
    assert.are.equal(0, request_count())
  end)

  it("credentials: InvalidCredentials and NoCredentials exit 2 and name what the CLI reads", function()
    local journals = "cd " .. q(tmp) .. " && ls -A | grep '^aliyun-iot-.*\\.state$' || true"
    local before = sh(journals)
    local _
    local code, out, err = run(ep() .. "register --product-key " .. PK .. " --count 1", nil,
      "ALIBABA_CLOUD_ACCESS_KEY_SECRET=")
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("InvalidCredentials", 1, true), err)
    code, _, err = run(ep() .. "register --product-key " .. PK .. " --count 1", nil,
      "ALIBABA_CLOUD_ACCESS_KEY_SECRET= ALIBABA_CLOUD_ACCESS_KEY_ID=")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("NoCredentials", 1, true), err)
    assert.truthy(err:find("ALIBABA_CLOUD_ACCESS_KEY_ID", 1, true), err)
    assert.is_nil(err:find("access_key_id/", 1, true), err)
    assert.is_nil(err:find("options ", 1, true), err)
    assert.is_nil(err:find("to finish it", 1, true), err)
    -- a credentials file that is a device is not read (it would never end)
    code, _, err = run(ep() .. "register --product-key " .. PK .. " --count 1", nil,
      "ALIBABA_CLOUD_ACCESS_KEY_SECRET= ALIBABA_CLOUD_ACCESS_KEY_ID= ALIBABA_CLOUD_CREDENTIALS_FILE=/dev/zero")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("NoCredentials", 1, true), err)
    assert.are.equal(0, request_count())
    -- no default journal was left behind for a job that never ran
    assert.are.equal(before, sh(journals))
  end)

  it("invalid names are printed once; errors carry no library hints", function()
    write(tmp .. "/bad2.txt", "good_0001\nbad name\n")
    local code, _, err = run(ep() .. "register --product-key " .. PK .. " --names-file bad2.txt")
    assert.are.equal(2, code, err)
    assert.are.equal(1, select(2, err:gsub("bad name", "")), err)
    assert.truthy(err:find("InvalidDeviceName", 1, true), err)
    assert.is_nil(err:find("to finish it", 1, true), err)

    emu:fault{kind = "503", probability = 1, action = "QueryPageByApplyId"}
    code, _, err = run(ep() .. "--quiet register --product-key " .. PK .. " --count 2")
    emu:clear_faults()
    assert.are.equal(1, code, err)
    assert.is_nil(err:find("client:", 1, true), err)
    assert.is_nil(err:find("journal = ", 1, true), err)
    assert.truthy(err:find("to finish it, run:", 1, true), err)
    -- the journal named is kept
    local state = err:match("to finish it, run:\n  %S*aliyun%-iot resume %-%-state (%S+)")
    assert.truthy(read(state), state)
  end)

  it("--apply-timeout bounds the wait for each apply (register and resume)", function()
    local code, _, err = run(ep() .. "--quiet register --product-key " .. PK .. " --count 1 --apply-timeout 30")
    assert.are.equal(0, code, err)
    emu:set{async_delay = 3}
    code, _, err = run(ep() .. "--quiet register --product-key " .. PK .. " --count 1 --apply-timeout 0.5")
    emu:set{async_delay = 0.05}
    assert.are.equal(1, code, err)
    assert.truthy(err:find("ApplyTimeout", 1, true), err)
    assert.truthy(err:find("--apply-timeout 0.5", 1, true), err)
  end)

  it("--out never replaces a journal nor --state or --names-file itself: exit 2, nothing sent", function()
    local job = '{"event":"job","version":1,"kind":"random","ProductKey":"' .. PK .. '","Count":1}\n'
    -- the same file as a --state the job is about to create
    local code, out, err = run(ep() .. "register --product-key " .. PK .. " --count 1 --state s.state --out ./s.state")
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("same file as --state", 1, true), err)
    assert.is_nil(read(tmp .. "/s.state"))
    -- an existing journal, by resume of that journal and by call
    write(tmp .. "/a.state", job)
    local _
    code, _, err = run(ep() .. "resume --state a.state --out a.state")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("same file as --state", 1, true), err)
    assert(os.execute("ln -sf a.state " .. q(tmp .. "/a.link")))
    code, _, err = run(ep() .. "call QueryDevice ProductKey=" .. PK .. " --out a.link")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("aliyun-iot journal", 1, true), err)
    assert.are.equal(job, read(tmp .. "/a.state"))
    -- a file another process holds locked (a running job's journal)
    write(tmp .. "/held.csv", "x\n")
    local lock = assert(require("aliyun.iot.core").lock_file(tmp .. "/held.csv"))
    code, _, err = run(ep() .. "call QueryDevice ProductKey=" .. PK .. " --out held.csv")
    lock:unlock()
    assert.are.equal(2, code, err)
    assert.truthy(err:find("in use by another process", 1, true), err)
    assert.are.equal("x\n", read(tmp .. "/held.csv"))
    -- the names file
    write(tmp .. "/n.txt", "light1\n")
    code, _, err = run(ep() .. "register --product-key " .. PK .. " --names-file n.txt --out n.txt")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("same file as --names-file", 1, true), err)
    assert.are.equal("light1\n", read(tmp .. "/n.txt"))
    assert.are.equal(0, request_count())
  end)

  it("--out never replaces a retire's journal or a report; only a devices output replaces a file of secrets", function()
    -- what another command wrote earlier: the undo export is the only copy of the secrets
    -- of devices deleted since; the report and the retire journal are a job's record
    local kept = {
      ["r.state"] = '{"event":"retire","version":1,"ProductKey":"' .. PK .. '"}\n',
      ["r.undo.csv"] = "ProductKey,DeviceName,DeviceSecret,IotId\n" .. PK .. ",d1,s3cr3t,id1\n",
      ["r.undo.crlf"] = "ProductKey,DeviceName,DeviceSecret,IotId\r\n",
      ["r.jsonl"] = '{"DeviceName":"d1","change":"tag_set","outcome":"done"}\n',
      ["g.jsonl"] = '{"change":"create_group","target":"g","outcome":"failed"}\n',
    }
    for name, text in pairs(kept) do
      write(tmp .. "/" .. name, text)
      local code, out, err = run(ep() .. "call QueryDevice ProductKey=" .. PK .. " --out " .. name)
      assert.are.equal(2, code, name .. ": " .. err)
      assert.are.equal("", out)
      assert.truthy(err:find("which this output may not replace", 1, true), err)
      assert.are.equal(text, read(tmp .. "/" .. name), name)
    end
    assert.are.equal(0, request_count())
    -- an ordinary file is still replaced, as documented
    write(tmp .. "/plain.csv", "DeviceName,outcome\nd1,done\n")
    local code, _, err = run(ep() .. "call QueryDevice ProductKey=" .. PK .. " --out plain.csv")
    assert.are.equal(0, code, err)
    assert.truthy(err:find("replaced plain.csv", 1, true), err)
    -- and a devices output replaces an earlier devices file (a re-run's), as documented
    code, _, err = run(ep() .. "--quiet register --product-key " .. PK .. " --count 1 --out r.undo.csv")
    assert.are.equal(0, code, err)
    assert.falsy(read(tmp .. "/r.undo.csv"):find("s3cr3t", 1, true))
  end)

  it("--out /dev/fd/N, /proc/self/fd/N and links to them write through the descriptor", function()
    local function inode() return sh("stat -c %i " .. q(tmp .. "/log.csv")) end
    write(tmp .. "/log.csv", "earlier\n")
    local before = inode()
    assert(os.execute("ln -sf /proc/self/fd/7 " .. q(tmp .. "/fd7.link")))
    for i, path in ipairs{"/dev/fd/7", "/proc/self/fd/7", "fd7.link"} do
      local code, _, err = run(ep() .. "--quiet register --product-key " .. PK .. " --count 1 --out " ..
        path .. " 7>>log.csv")
      assert.are.equal(0, code, err)
      assert.are.equal(before, inode())
      local text = read(tmp .. "/log.csv")
      assert.truthy(text:find("^earlier\n"), text)
      local _, headers = text:gsub("ProductKey,DeviceName,DeviceSecret,IotId", "")
      assert.are.equal(i, headers, text)
    end
  end)

  it("--deadline bounds devices, status and call as a whole (slow answers)", function()
    local code, _, err = run(ep() .. "--quiet register --product-key " .. PK .. " --count 2")
    assert.are.equal(0, code, err)
    local id = tostring(emu:state().applies[1].ApplyId)
    local cases = {
      {"QueryDevice", "call QueryDevice ProductKey=" .. PK, "DeadlineExceeded"},
      {"QueryBatchRegisterDeviceStatus", "status --product-key " .. PK .. " --apply-id " .. id,
       "DeadlineExceeded"},
      -- devices reads an apply: its deadline ends it as the batch helpers' ApplyTimeout
      {"QueryPageByApplyId", "devices --product-key " .. PK .. " --apply-id " .. id, "ApplyTimeout"},
    }
    for _, case in ipairs(cases) do
      emu:clear_faults()
      emu:fault{kind = "slow", delay = 3, probability = 1, action = case[1]}
      local t0 = os.time()
      local out
      code, out, err = run(ep() .. "--deadline 1 " .. case[2])
      assert.are.equal(1, code, case[2] .. ": " .. err)
      assert.are.equal("", out)
      assert.truthy(err:find("aliyun-iot: " .. case[3] .. ":", 1, true), case[2] .. ": " .. err)
      assert.truthy(os.time() - t0 < 30, case[2])
    end
    emu:clear_faults()
  end)

  it("prints no control character from servers or from the user's own words", function()
    write(tmp .. "/n.txt", "light1\nbad\27[31mname\n")
    local code, _, err = run(ep() .. "--quiet register --product-key " .. PK .. " --names-file n.txt --skip-invalid")
    assert.are.equal(3, code, err)
    assert.truthy(err:find("bad\\x1B[31mname", 1, true), err)
    code, _, err = run(ep() .. "register --product-key " .. PK .. " --names-file n.txt")
    assert.are.equal(2, code, err)
    assert.truthy(err:find("1 device name is invalid", 1, true), err)
    for _, args in ipairs{"call $'QueryDevice\\r\\nX'", "resume --state $'no\\e[31msuch'"} do
      code, _, err = run(args, nil)
      assert.are.equal(2, code, err)
      assert.truthy(err:find("\\", 1, true), err)
    end
    for _, e in ipairs(all_stderr) do
      assert.is_nil(e:find("\27", 1, true), e)
      assert.is_nil(e:find("\r", 1, true), e)
    end
  end)

  it("a journal resume refuses is a local error: exit 2 with PATH, no resume advice", function()
    local job = '{"event":"job","version":1,"kind":"random","ProductKey":"' .. PK .. '","Count":3}\n'
    local cases = {
      job .. '{"event":"submit","seq":3000000000,"Count":3}\n',
      job .. '{"event":"apply","seq":1,"ProductKey":"' .. PK .. '","phase":"create","Count":20000,"ApplyId":"7"}\n',
      job .. '{"event":"apply","seq":1,"ProductKey":"' .. PK .. '","phase":"create","Count":3,' ..
        '"ApplyId":"99999999999999999999"}\n',
    }
    for _, text in ipairs(cases) do
      write(tmp .. "/bad.state", text)
      local code, out, err = run(ep() .. "resume --state bad.state")
      assert.are.equal(2, code, err)
      assert.are.equal("", out)
      assert.truthy(err:find("bad.state:2: ", 1, true), err)
      assert.is_nil(err:find("to finish it", 1, true), err)
      assert.is_nil(err:find("resume %-%-state"), err)
      assert.are.equal(text, read(tmp .. "/bad.state"))
    end
    assert.are.equal(0, request_count())
  end)

  it("a job the library refuses before sending: no journal note, no journal", function()
    assert(os.execute("mkdir -p " .. q(tmp .. "/fresh")))
    local code, out, err = run(ep() .. "register --product-key 'bad pk' --count 3", nil,
      "TMPDIR=" .. q(tmp .. "/fresh"))
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("InvalidParameter", 1, true), err)
    assert.is_nil(err:find("journal", 1, true), err)
    assert.are.equal("", sh("ls -A " .. q(tmp .. "/fresh")))
    assert.are.equal(0, request_count())
  end)

  it("--out replacing a non-empty file says so; a full disk names the output, not a journal", function()
    local code, _, err = run(ep() .. "register --product-key " .. PK .. " --count 2 --out o.csv")
    assert.are.equal(0, code, err)
    assert.is_nil(err:find("replaced", 1, true), err)
    local size = #read(tmp .. "/o.csv")
    code, _, err = run(ep() .. "register --product-key " .. PK .. " --count 1 --out o.csv")
    assert.are.equal(0, code, err)
    assert.truthy(err:find(("replaced o.csv (it held %d bytes)"):format(size), 1, true), err)
    assert.are.equal(2, #parse_csv(read(tmp .. "/o.csv")) + 1)
  end)


  it("register refuses an existing 1.5 GB --state from its first line, without reading it whole", function()
    -- sparse: no disk used; reading it whole (as before) took gigabytes of memory and
    -- ended in the plain "exists" message, not in the resume command
    write(tmp .. "/big.state", '{"event":"job","version":1,"kind":"random","ProductKey":"' .. PK ..
      '","Count":1}\n')
    assert(os.execute("truncate -s 1500M " .. q(tmp .. "/big.state")))
    local code, out, err = run(ep() .. "register --product-key " .. PK .. " --count 1 --state big.state")
    assert.are.equal(2, code, err)
    assert.are.equal("", out)
    assert.truthy(err:find("state file big.state exists: finish its job with '", 1, true), err)
    assert.are.equal("1572864000", (sh("stat -c %s " .. q(tmp .. "/big.state")):gsub("%s+$", "")))
    os.remove(tmp .. "/big.state")
    assert.are.equal(0, request_count())
  end)
end)
