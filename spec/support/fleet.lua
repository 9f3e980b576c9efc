--- What the fleet specs (spec/fleet_*_spec.lua) share: they all drive plan, apply and
-- retire against one emulator, through the library and through the CLI run as a user runs
-- it, and prove what was (not) sent from the emulator's request log. One copy of that
-- harness, so that a fix to how the CLI is started or the log is read reaches every spec.
local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"
local shell = require "spec.support.shell"
local cjson = require "cjson"

local q = shell.quote
local M = {}

--- The product every fleet spec works in (the emulator makes products on first use).
M.PK = "a1TestPK001"

--- The interpreter the CLI runs under: the one the suite runs (ALIYUN_IOT_LUA, set by the
-- Makefile), else this process's own, so that the child loads the same build of the core.
M.LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))

--- The CLI of this checkout (busted runs from its top folder).
M.BIN = os.getenv("PWD") .. "/bin/aliyun-iot"

--- The manifest of three lamps that plan and apply start from (a nickname, tags and two
-- groups on one; one of each on another; a nickname alone on the third).
M.MANIFEST = table.concat({
  "DeviceName,Nickname,tags,groups",
  "lamp_0001,lamp_one,site=north;rev=b,north_site;all_lamps",
  "lamp_0002,,site=south,all_lamps",
  "lamp_0003,lamp_three,,",
}, "\n") .. "\n"

--- A client of `emu` with the test credentials; `opts` (optional) adds to or overrides its
-- options (a transport that tampers with answers, ...). Raises when it cannot be made.
function M.client(emu, opts)
  local o = {access_key_id = "testid", access_key_secret = "testsecret", endpoint = emu.endpoint}
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(iot.new(o))
end

--- A client of `emu` whose answers to `action` pass through edit(res) (res: the curl
-- transport's {status, headers, body}) before it reads them: an answer unlike the API's,
-- from a real exchange with the emulator.
function M.tampering(emu, action, edit)
  local curl = iot.transports.curl
  return M.client(emu, {transport = function(req)
    local res, err = curl(req)
    if res and ((req.body or "") .. req.url):find("Action=" .. action, 1, true) then edit(res) end
    return res, err
  end})
end

--- For a describe block's setup: a running emulator (asynchronous creations answered at
-- once) and a new folder of the spec's own, 0700 as a user keeps one the CLI writes device
-- secrets into. Returns emu, dir.
function M.start()
  local emu = emulator.start{async_delay = 0}
  local dir = shell.temp_dir()
  assert(shell.ok("chmod 700 " .. q(dir)), "cannot chmod " .. dir)
  return emu, dir
end

--- For the teardown: stops the emulator and removes the folder.
function M.stop(emu, dir)
  emu:stop()
  shell.ok("rm -rf " .. q(dir))
end

--- For a before_each: the emulator's devices, groups, faults and log cleared (a test that
-- changed async_delay and failed midway does not leak it), `dir`'s files removed when it is
-- given (dot files too: no test sees another's files), `names` registered in PK.
-- Returns a new client.
function M.fresh(emu, dir, names)
  emu:reset()
  emu:set{async_delay = 0}
  if dir then assert(shell.ok("rm -rf " .. q(dir) .. "/* " .. q(dir) .. "/.[!.]*")) end
  local c = M.client(emu)
  M.register(c, names or {})
  return c
end

--- Registers each of `names` in PK, one RegisterDevice each (raises on a failure).
function M.register(c, names)
  for _, n in ipairs(names) do assert(c:register_device{ProductKey = M.PK, DeviceName = n}) end
end

--- The interpreter with the environment a fresh user has: no LUA_PATH or LUA_CPATH of the
-- suite's (the CLI finds its modules itself), HOME at `dir` (no config file of the
-- machine's), the test credentials in the variables the CLI reads. Append the program.
function M.lua_env(dir)
  return ("env -u LUA_PATH -u LUA_CPATH HOME=%s ALIBABA_CLOUD_ACCESS_KEY_ID=testid " ..
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret %s"):format(q(dir), M.LUA)
end

-- The shell command that runs the CLI with `args` (shell words, quoted by the caller) in
-- opts.cwd (default `dir`). It ends in exec, so that the CLI has the shell's pid.
local function command(dir, args, opts)
  return ("cd %s && %s exec %s%s %s %s"):format(q(opts.cwd or dir), opts.pre or "",
    opts.timeout and ("timeout -s KILL %d "):format(opts.timeout) or "", M.lua_env(dir), q(M.BIN), args)
end

--- Runs the CLI to its end, stdin empty: exit status (a number), stdout, stderr (kept in
-- dir/stdout, dir/stderr). `opts` (optional): `cwd`, the folder to run it from (default
-- `dir`); `pre`, shell words run first in the same shell, ending in `&&` (a ulimit);
-- `timeout`, seconds after which the run is killed, for a run that could hang (the spec
-- then fails rather than waits forever).
function M.run(dir, args, opts)
  local out, err = dir .. "/stdout", dir .. "/stderr"
  local code = shell.capture(("(%s) < /dev/null > %s 2> %s; echo $?")
    :format(command(dir, args, opts or {}), q(out), q(err)))
  return tonumber(code), shell.read(out), shell.read(err)
end

--- Starts the CLI with `args` in `dir` in the background, stdin empty, and returns its pid
-- (for kill) once it runs. Its stdout, stderr and, once it has ended, its exit status go
-- to dir/NAME.out, NAME.err and NAME.code (`name` default "bg"). Raises when it never starts.
function M.start_cli(dir, args, name)
  local base = dir .. "/" .. (name or "bg")
  os.remove(base .. ".pid")
  os.remove(base .. ".code")
  -- the shell writes its pid, then becomes the CLI (command() ends in exec)
  local cmd = ("echo $$ > %s; %s"):format(q(base .. ".pid"), command(dir, args, {}))
  shell.ok(("(sh -c %s < /dev/null > %s 2> %s; echo $? > %s) > /dev/null 2>&1 &")
    :format(q(cmd), q(base .. ".out"), q(base .. ".err"), q(base .. ".code")))
  return assert(M.poll(function() return (shell.read(base .. ".pid") or ""):match("%d+") end, 10),
    "the CLI did not start")
end

--- Calls ok() every 0.05 s until it returns a true value, for `seconds` of sleeps at the
-- most (default 30): a child or the emulator's held calls take their time on a loaded
-- machine, and a spec fails by its assertion, not by hanging. Returns ok()'s last value.
function M.poll(ok, seconds)
  for _ = 1, (seconds or 30) * 20 do
    local v = ok()
    if v then return v end
    os.execute("sleep 0.05")
  end
  return ok()
end

--- Waits until the emulator's request log has stood still for `seconds` (0.05 s steps):
-- calls it holds (a `slow` fault) are carried out after a kill, and a count taken before
-- they land would miss them.
function M.settle(emu, seconds)
  local n, still = #emu:requests(), 0
  while still < seconds do
    os.execute("sleep 0.05")
    local now = #emu:requests()
    if now == n then still = still + 0.05 else n, still = now, 0 end
  end
end

-- Whether request `r` is one `test` names: an action, a set of actions, or a predicate.
local function matches(test, r)
  local t = type(test)
  if t == "string" then return r.action == test end
  if t == "table" then return test[r.action] == true end
  return test(r) and true or false
end

--- The actions of the emulator's request log from index `from` (default 1) on, in order;
-- with `test` (see count), only those it names.
function M.actions(emu, from, test)
  local out = {}
  for i, r in ipairs(emu:requests()) do
    if i >= (from or 1) and (test == nil or matches(test, r)) then out[#out + 1] = r.action end
  end
  return out
end

--- How many requests of the emulator's log from index `from` (default 1) on `test` names:
-- an action ("DeleteDevice"), a set of actions ({DisableThing = true, ...}) or a function
-- of the log's record (its action, params, status, fault).
function M.count(emu, test, from)
  return #M.actions(emu, from, test)
end

--- The records of a JSON-lines file (a --report, a journal), decoded, in order. Raises when
-- the file is missing, a line is not JSON or the last line is cut (each record is written
-- whole, its newline included).
function M.records(path)
  local text = assert(shell.read(path), path .. " is missing")
  assert(text == "" or text:sub(-1) == "\n", path .. " ends in a cut line")
  local out = {}
  for line in text:gmatch("([^\n]*)\n") do out[#out + 1] = cjson.decode(line) end
  return out
end

return M
