--- `make bench`: our client against the official Node.js SDK and the machine's floor.
-- Each run of each client is its own process (bench/ours.lua, bench/sdk.js,
-- build/bench/curl_floor), alternating A B A B, so that no client warms up the other's
-- caches and each reports its own peak RSS. Prints one table and writes
-- bench/results.json. Speed is never asserted here; the targets are printed beside the
-- figures (issue 7).
--
-- Usage (from the repository root, as the Makefile does):
--   lua5.4 bench/run.lua [scenario ...]     scenarios: sign sequential e2e paced stream
-- Environment: BENCH_RUNS=N overrides every scenario's run count (quick checks).

local cjson = require "cjson"
local socket = require "socket"
local common = require "bench.common"

local LUA = os.getenv("BENCH_LUA") or "lua5.4"
local FLOOR = "build/bench/curl_floor"
local HMAC_FLOOR = "build/bench/hmac_floor"
local RUNS_OVERRIDE = tonumber(os.getenv("BENCH_RUNS") or "")

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_all(path, s)
  local f = assert(io.open(path, "wb"))
  assert(f:write(s))
  f:close()
end

local function command_output(cmd)
  local p = assert(io.popen(cmd))
  local s = p:read("*a")
  p:close()
  return s
end

--- Runs one client process; returns its JSON line decoded. Raises when it fails.
local function run_child(argv)
  local parts = {}
  for i, a in ipairs(argv) do parts[i] = shell_quote(a) end
  local err_path = os.tmpname()
  local cmd = table.concat(parts, " ") .. " 2>" .. err_path
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  local ok = p:close()
  local errtext = read_all(err_path) or ""
  os.remove(err_path)
  local line = out:match("(%b{})%s*$")
  if not ok or not line then
    error(("bench: %s failed:\n%s%s"):format(table.concat(argv, " "), out, errtext), 0)
  end
  return cjson.decode(line)
end

local function ours(...) return run_child{LUA, "bench/ours.lua", ...} end
local function sdk(...) return run_child{"node", "bench/sdk.js", ...} end

-- ---------------------------------------------------------------------------------------
-- Statistics and the table.

local function stats(values)
  local s = {}
  for i, v in ipairs(values) do s[i] = v end
  table.sort(s)
  local n = #s
  local median = n % 2 == 1 and s[(n + 1) / 2] or (s[n / 2] + s[n / 2 + 1]) / 2
  return {median = median, min = s[1], max = s[n], runs = values}
end

local rows = {}      -- printed table rows, in order

-- Records one client's figures for a scenario. `metric` names the field of each run's
-- JSON line; `higher` says whether a larger value is better (rates) or not (times).
local function add_row(scenario, client, metric, unit, higher, runs, extra)
  local values, rss = {}, 0
  for i, r in ipairs(runs) do
    values[i] = r[metric]
    rss = math.max(rss, r.rss_kb or 0)
  end
  local row = stats(values)
  row.scenario, row.client, row.metric, row.unit, row.higher = scenario, client, metric, unit, higher
  row.rss_kb = rss
  row.raw = runs
  for k, v in pairs(extra or {}) do row[k] = v end
  rows[#rows + 1] = row
  return row
end

-- ours/theirs as a speed ratio: rates divide as they are, times inversely, so that a
-- figure above 1 always means ours is faster.
local function speed_ratio(a, b)
  if a.higher then return a.median / b.median end
  return b.median / a.median
end

local function fmt(v)
  if type(v) ~= "number" then return tostring(v) end
  if v >= 1000 then return ("%.0f"):format(v) end
  if v >= 100 then return ("%.1f"):format(v) end
  if v >= 10 then return ("%.2f"):format(v) end
  return ("%.3f"):format(v)
end

local function print_table()
  local head = {"scenario", "client", "unit", "median", "min", "max", "ours/theirs", "peak RSS MiB"}
  local lines = {"| " .. table.concat(head, " | ") .. " |",
                 "|" .. ("---|"):rep(#head)}
  for _, r in ipairs(rows) do
    local ratio = r.ratio and ("%.2fx"):format(r.ratio) or ""
    lines[#lines + 1] = "| " .. table.concat({r.scenario, r.client, r.unit, fmt(r.median),
      fmt(r.min), fmt(r.max), ratio, ("%.1f"):format(r.rss_kb / 1024)}, " | ") .. " |"
  end
  print(table.concat(lines, "\n"))
end

-- ---------------------------------------------------------------------------------------
-- Servers: the emulator, and a static nginx for scenario 2.

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function wait_port(port, pid_alive)
  local deadline = socket.gettime() + 10
  while socket.gettime() < deadline do
    local c = socket.tcp()
    c:settimeout(0.2)
    local ok = c:connect("127.0.0.1", port)
    c:close()
    if ok then return true end
    if not pid_alive() then return false end
    socket.sleep(0.01)
  end
  return false
end

-- Starts an nginx configuration of bench/ (default: static_nginx.conf) from a private
-- prefix; returns url and a stop function.
local function start_static_nginx(conf_file)
  local prefix = os.tmpname() .. "-bench-nginx"
  assert(os.execute("mkdir -p " .. shell_quote(prefix)))
  local port = free_port()
  local is_root = (read_all("/proc/self/status") or ""):match("\nUid:%s+(%d+)") == "0"
  local root = command_output("pwd"):gsub("%s+$", "")
  local conf = assert(read_all(conf_file or "bench/static_nginx.conf"))
    :gsub("@PREFIX@", prefix):gsub("@PORT@", tostring(port)):gsub("@ROOT@", root)
    :gsub("@USER@", is_root and "user root;" or "")
  write_all(prefix .. "/nginx.conf", conf)
  local nginx = read_all("/usr/sbin/nginx") and "/usr/sbin/nginx" or "nginx"
  local pid = command_output(("%s -p %s -c %s -e %s </dev/null >%s 2>&1 & echo $!"):format(
    nginx, shell_quote(prefix), shell_quote(prefix .. "/nginx.conf"),
    shell_quote(prefix .. "/error.log"), shell_quote(prefix .. "/stdout.log"))):match("%d+")
  local function alive() return read_all("/proc/" .. pid .. "/stat") ~= nil end
  if not wait_port(port, alive) then
    error("bench: static nginx did not start: " .. (read_all(prefix .. "/error.log") or "")
      .. (read_all(prefix .. "/stdout.log") or ""), 0)
  end
  return "http://127.0.0.1:" .. port .. "/", function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    local deadline = socket.gettime() + 5
    while alive() and socket.gettime() < deadline do socket.sleep(0.01) end
    os.execute("rm -rf " .. shell_quote(prefix))
  end
end

local emulator
local function emu(opts)
  if emulator then emulator:stop() end
  emulator = require("aliyun.iot.emulator").start(opts)
  return emulator
end

local function runs_of(n) return RUNS_OVERRIDE or n end

-- ---------------------------------------------------------------------------------------
-- Scenarios.

local scenarios, order = {}, {"sign", "sequential", "openresty", "e2e", "paced", "stream"}
local notes = {}
local targets = {} -- issue 16's ratios: {name, value, goal, met, format}

local function target(name, value, goal, met, format)
  targets[#targets + 1] = {name = name, value = value, goal = goal, met = met, format = format}
end

-- The key and the 1,000-name string to sign, for bench/hmac_floor.c (its file format).
local function write_sts_file()
  local core = require "aliyun.iot.core"
  local flat = assert(core.flatten(common.sign_params("check1000")))
  local sig, sts = core.sign_rpc("POST", flat, common.SECRET)
  local path = os.tmpname()
  write_all(path, common.SECRET .. "&\n" .. sts)
  return path, sig
end

-- 1. Signing only.
function scenarios.sign()
  local seconds = "1"
  local sts_path, sts_sig = write_sts_file()
  for _, kind in ipairs{"register", "check1000"} do
    local a, b, c = {}, {}, {}
    for i = 1, runs_of(5) do
      a[i] = ours("sign", kind, seconds)
      b[i] = sdk("sign", kind, seconds)
      if kind == "check1000" then
        c[i] = run_child{HMAC_FLOOR, sts_path, seconds}
        if c[i].signature ~= sts_sig then error("bench: the HMAC floor signed other bytes", 0) end
      end
      if a[i].signature ~= b[i].signature then
        error(("bench: signatures differ for %s: ours %s, SDK %s"):format(kind, a[i].signature,
          b[i].signature), 0)
      end
    end
    local label = kind == "register" and "1 sign BatchRegisterDevice" or "1 sign BatchCheckDeviceNames x1000"
    local r = add_row(label, "ours", "rate", "signatures/s", true, a)
    local s = add_row(label, "official SDK", "rate", "signatures/s", true, b)
    r.ratio = speed_ratio(r, s)
    -- with the flattening of the nested list on both sides (informative)
    local fr = add_row(label .. " +flatten", "ours", "rate_with_flatten", "signatures/s", true, a)
    local fs = add_row(label .. " +flatten", "official SDK", "rate_with_flatten", "signatures/s", true, b)
    fr.ratio = speed_ratio(fr, fs)
    if kind == "check1000" then
      notes[#notes + 1] = ("signing, 1,000-name POST: %.1fx the official SDK (gate: >= 10x, wanted 20x)")
        :format(r.ratio)
      local h = add_row(label, "bare HMAC-SHA1 floor", "rate", "signatures/s", true, c)
      -- times against the floor: how many bare HMACs one of our signatures costs
      h.ratio = h.median / r.median
      local hf = add_row(label .. " +flatten", "bare HMAC-SHA1 floor", "rate", "signatures/s", true, c)
      hf.ratio = hf.median / fr.median
      target("signing 1,000 names, sign_rpc alone, x the bare HMAC-SHA1 (lower is better)",
             h.ratio, "<= 2x", h.ratio <= 2, "%.2fx")
      target("signing 1,000 names, flatten + sign_rpc (a call's path), x the bare HMAC-SHA1",
             hf.ratio, "<= 2x", hf.ratio <= 2, "%.2fx")
      -- the call path's request object: built from the nested params, then each attempt
      -- (absent from a core before it, when comparing trees)
      if a[1].rate_rpc ~= nil then
        local rr = add_row(label .. " rpc_request + sign", "ours", "rate_rpc", "signatures/s", true, a)
        rr.ratio = h.median / rr.median
        local rs = add_row(label .. " RpcRequest:sign", "ours", "rate_rpc_sign", "signatures/s",
                           true, a)
        rs.ratio = h.median / rs.median
        target("signing 1,000 names, rpc_request + sign (a call's path now), x the bare HMAC-SHA1",
               rr.ratio, "<= 2x", rr.ratio <= 2, "%.2fx")
        target("signing 1,000 names, RpcRequest:sign (each attempt), x the bare HMAC-SHA1",
               rs.ratio, "<= 2x", rs.ratio <= 2, "%.2fx")
      end
    end
  end
  os.remove(sts_path)
end

-- 2. Sequential calls over keep-alive against a static answer.
function scenarios.sequential()
  local url, stop = start_static_nginx()
  local warmup, n = "50", "5000"
  local a, b, c = {}, {}, {}
  local ok, err = pcall(function()
    for i = 1, runs_of(5) do
      a[i] = ours("sequential", url, warmup, n)
      b[i] = sdk("sequential", url, warmup, n)
      c[i] = run_child{FLOOR, url, warmup, n}
    end
  end)
  stop()
  if not ok then error(err, 0) end
  local label = "2 sequential 5,000 calls"
  local r = add_row(label, "ours", "rate", "calls/s", true, a)
  local s = add_row(label, "official SDK", "rate", "calls/s", true, b)
  local f = add_row(label, "libcurl floor", "rate", "calls/s", true, c)
  r.ratio = speed_ratio(r, s)
  f.ratio = speed_ratio(r, f)
  notes[#notes + 1] = ("sequential: %.1f%% of the libcurl floor (target >= 85%%), %.2fx the SDK (target >= 2x)")
    :format(100 * f.ratio, r.ratio)
  target("sequential calls over keep-alive, x the raw libcurl loop", f.ratio, ">= 0.85x",
         f.ratio >= 0.85, "%.2fx")
  -- The same calls as client CPU (user + system of each process over the calls): wall
  -- time on a shared machine moves with the load, CPU per call much less.
  label = "2 sequential 5,000 calls, client CPU"
  local rc = add_row(label, "ours", "cpu_us_per_call", "us CPU/call", false, a)
  local sc = add_row(label, "official SDK", "cpu_us_per_call", "us CPU/call", false, b)
  local fc = add_row(label, "libcurl floor", "cpu_us_per_call", "us CPU/call", false, c)
  rc.ratio = speed_ratio(rc, sc)
  fc.ratio = speed_ratio(rc, fc)
  target("sequential calls, client CPU per call: libcurl loop / ours (informative)", fc.ratio,
         ">= 0.85x", fc.ratio >= 0.85, "%.2fx")
end

-- 2b. OpenResty: worker CPU per call, our client (cosocket transport) against plain
-- cosocket code sending the same bytes (bench/openresty.lua), alternating.
function scenarios.openresty()
  local url, stop = start_static_nginx()
  local ngx_url, ngx_stop = start_static_nginx("bench/openresty_nginx.conf")
  local n = 5000
  local a, c = {}, {}
  local function get(path)
    local body = command_output(("curl -sS --max-time 120 %s"):format(
      shell_quote(ngx_url .. path .. "?n=" .. n .. "&url=" .. url)))
    local line = body:match("(%b{})%s*$")
    if not line then error("bench: OpenResty " .. path .. " answered: " .. body, 0) end
    local r = cjson.decode(line)
    r.cpu_us_per_call = r.cpu_seconds / n * 1e6
    r.rate = n / r.seconds
    return r
  end
  local ok, err = pcall(function()
    get("ours"); get("floor") -- warm-up: connections, JIT, modules
    for i = 1, runs_of(5) do
      a[i] = get("ours")
      c[i] = get("floor")
    end
  end)
  ngx_stop()
  stop()
  if not ok then error(err, 0) end
  local label = "2b OpenResty 5,000 calls, worker CPU"
  local r = add_row(label, "ours (cosocket)", "cpu_us_per_call", "us CPU/call", false, a)
  local f = add_row(label, "plain cosocket floor", "cpu_us_per_call", "us CPU/call", false, c)
  f.ratio = speed_ratio(r, f)
  target("OpenResty worker CPU per call, plain cosocket floor / ours", f.ratio, ">= 0.85x",
         f.ratio >= 0.85, "%.2fx")
end

-- Counts an emulator run: requests, throttled requests, devices; then forgets it all.
local function emulator_tally(n)
  local reqs = emulator:requests()
  local throttled = 0
  for _, q in ipairs(reqs) do
    if q.code and tostring(q.code):find("^Throttling") then throttled = throttled + 1 end
  end
  local st = emulator:state()
  local p = st.products[common.PRODUCT_KEY]
  local devices = p and p.devices or 0
  emulator:reset()
  if devices ~= n then error(("bench: the emulator holds %d devices, expected %d"):format(devices, n), 0) end
  return #reqs, throttled
end

local function provision_runs(n, runs, paced)
  local a, b = {}, {}
  for i = 1, runs do
    for _, side in ipairs{"ours", "sdk"} do
      local run = side .. i
      local r = side == "ours" and ours("provision", emulator.endpoint, tostring(n), run, paced)
                                or sdk("provision", emulator.endpoint, tostring(n), run)
      r.server_requests, r.server_throttled = emulator_tally(n)
      if r.devices ~= n then error(("bench: %s fetched %d devices of %d"):format(side, r.devices, n), 0) end
      if side == "ours" then a[i] = r else b[i] = r end
    end
  end
  return a, b
end

local function median_of(runs, field)
  local v = {}
  for i, r in ipairs(runs) do v[i] = r[field] end
  return stats(v).median
end

-- 3. End to end, no delays, no limits.
function scenarios.e2e()
  emu{async_delay = 0, qps_limits = false, max_count = 10000}
  local n = 10000
  local a, b = provision_runs(n, runs_of(5), "unpaced")
  local label = "3 end to end 10,000 named"
  local r = add_row(label, "ours", "seconds", "s wall", false, a,
                    {requests = median_of(a, "server_requests")})
  local s = add_row(label, "official SDK", "seconds", "s wall", false, b,
                    {requests = median_of(b, "server_requests")})
  r.ratio = speed_ratio(r, s)
  notes[#notes + 1] = ("end to end: %.2fx faster than the SDK script (target >= 3x); requests %d vs %d")
    :format(r.ratio, r.requests, s.requests)
  -- Client CPU (user + system) of the job, from the start of the call to its result, in
  -- the client process (getrusage in ours, process.cpuUsage in the SDK script); and of
  -- the whole process, start-up included.
  label = "3 client CPU 10,000 named"
  local rc = add_row(label, "ours", "cpu_seconds", "s CPU", false, a)
  local sc = add_row(label, "official SDK", "cpu_seconds", "s CPU", false, b)
  rc.ratio = speed_ratio(rc, sc)
  local rp = add_row(label .. ", whole process", "ours", "process_cpu_seconds", "s CPU", false, a)
  local sp = add_row(label .. ", whole process", "official SDK", "process_cpu_seconds", "s CPU", false, b)
  rp.ratio = speed_ratio(rp, sp)
  target("client CPU of the 10,000-named job, SDK script / ours", rc.ratio, ">= 3x",
         rc.ratio >= 3, "%.2fx")
end

-- When a phase of `delay` seconds is seen done by a poller that asks at once, then after
-- pauses first, first*factor, ... (capped).
local function seen_after(delay, first, factor, cap)
  local t, pause = 0, first
  while t < delay do
    t = t + pause
    pause = math.min(pause * factor, cap)
  end
  return t
end

-- 4. Paced: the documented QPS limits and the default async delay.
function scenarios.paced()
  local delay = 0.3
  emu{async_delay = delay, qps_limits = true, max_count = 10000}
  local n = 10000
  local pages = math.ceil(n / 50)
  local qps = 50 -- QueryPageByApplyId (docs/wire.md §4)
  -- Both clients: check, poll, register, poll (status polls at once, then after 0.5 s,
  -- ours growing x1.5, the SDK script every 0.5 s: both see a 0.3 s phase at 0.5 s),
  -- then the pages. Calls other than pages are single and far below their limits.
  local polls = seen_after(delay, 0.5, 1.5, 5) * 2
  local min = {
    ideal = 2 * delay + (pages - 1) / qps,
    rate = polls + (pages - 1) / qps,
    burst = polls + math.floor((pages - 1) / qps),
  }
  local a, b = provision_runs(n, runs_of(3), "paced")
  local label = "4 paced 10,000 named"
  local extra = function(runs)
    return {requests = median_of(runs, "server_requests"),
            throttled = median_of(runs, "server_throttled"), minimum = min}
  end
  local r = add_row(label, "ours", "seconds", "s wall", false, a, extra(a))
  local s = add_row(label, "official SDK", "seconds", "s wall", false, b, extra(b))
  r.ratio = speed_ratio(r, s)
  local max_thr = 0
  for _, x in ipairs(a) do max_thr = math.max(max_thr, x.server_throttled) end
  notes[#notes + 1] = table.concat({
    ("paced: minimum %.2f s = 2 x %.2f s (a %.1f s async phase seen by the status polls) + "
      .. "%d pages after the first at %d QPS, evenly spaced (%.2f s)"):format(min.rate, polls / 2,
      delay, pages - 1, qps, (pages - 1) / qps),
    ("        [a 1 s sliding window allows bursts: %.2f s; instant polling and even spacing: %.2f s]")
      :format(min.burst, min.ideal),
    ("        ours %.2f s = %.1f%% over the minimum (target <= 10%%), Throttling: %d (worst run %d)"
      .. "; SDK %.2f s, Throttling: %d"):format(r.median, 100 * (r.median / min.rate - 1),
      r.throttled, max_thr, s.median, s.throttled),
  }, "\n")
end

-- 5. Memory: 100,000 records streamed through apply_devices.
function scenarios.stream()
  emu{async_delay = 0, qps_limits = false, max_count = 10000}
  local iot = require "aliyun.iot"
  local client = assert(iot.new{access_key_id = common.KEY_ID, access_key_secret = common.SECRET,
                                endpoint = emulator.endpoint, qps = false, max_batch_size = 10000})
  local ids = {}
  for i = 1, 10 do
    local res = assert(client:batch_register_device{ProductKey = common.PRODUCT_KEY, Count = 10000})
    ids[i] = tostring(res.Data.ApplyId)
    assert(client:wait_apply{ProductKey = common.PRODUCT_KEY, ApplyId = res.Data.ApplyId})
  end
  client:close()
  local csv = os.tmpname()
  local a = {}
  for i = 1, runs_of(3) do
    a[i] = ours("stream", emulator.endpoint, csv, table.concat(ids, ","))
    if a[i].records ~= 100000 then error("bench: streamed " .. a[i].records .. " records", 0) end
  end
  os.remove(csv)
  local label = "5 stream 100,000 to CSV"
  local r = add_row(label, "ours", "seconds", "s wall", false, a)
  local at10 = add_row("5 peak RSS at 10,000", "ours", "hwm_10k_kb", "kB", false, a)
  local at100 = add_row("5 peak RSS at 100,000", "ours", "hwm_100k_kb", "kB", false, a)
  notes[#notes + 1] = ("stream: %.0f records/s; peak RSS %.1f MiB at 10,000 and %.1f MiB at 100,000"
    .. " (%+.1f%%, target within 10%%)"):format(100000 / r.median, at10.median / 1024,
    at100.median / 1024, 100 * (at100.median / at10.median - 1))
end

-- ---------------------------------------------------------------------------------------

local function machine()
  local m = {nproc = tonumber(command_output("nproc"))}
  local cpu = command_output("lscpu")
  m.cpu = cpu:match("Model name:%s*([^\n]+)")
  m.mem_total_kb = tonumber((read_all("/proc/meminfo") or ""):match("MemTotal:%s*(%d+)"))
  m.lua = command_output(LUA .. " -v 2>&1"):match("^(%S+%s+%S+)")
  m.node = command_output("node --version"):gsub("%s+$", "")
  m.nginx = command_output("nginx -v 2>&1"):gsub("%s+$", "")
  m.kernel = command_output("uname -r"):gsub("%s+$", "")
  m.libcurl = command_output("curl-config --version 2>/dev/null"):gsub("%s+$", "")
  m.openssl = command_output("openssl version 2>/dev/null"):match("^(%S+%s+%S+)")
  return m
end

-- The load average (1, 5, 15 minutes) and runnable/total tasks: how busy the machine was,
-- since other work skews every figure here.
local function load()
  return ((read_all("/proc/loadavg") or ""):match("^(%S+ %S+ %S+ %S+)")) or "?"
end

local function describe(m)
  return ("%s, %d cores, %.1f GiB, kernel %s; %s; %s; %s; node %s; %s"):format(m.cpu, m.nproc,
    m.mem_total_kb / 1048576, m.kernel, m.lua, m.libcurl or "libcurl ?", m.openssl or "OpenSSL ?",
    m.node, m.nginx)
end

-- Issue 16's targets, each a ratio measured side by side in this run.
local function print_targets(m)
  print("targets (issue 16), measured side by side in this run on: " .. describe(m))
  print(("load average at the start: %s, at the end: %s"):format(m.load_start, m.load_end))
  for _, t in ipairs(targets) do
    print(("  %-86s %9s  target %-8s %s"):format(t.name, t.format:format(t.value), t.goal,
      t.met and "met" or "MISSED"))
  end
end

local wanted = {}
for _, a in ipairs(arg) do wanted[a] = true end
local m = machine()
m.load_start = load()
print("bench: " .. describe(m) .. "; load average " .. m.load_start)
local t_start = socket.gettime()
local ok, err = pcall(function()
  for _, name in ipairs(order) do
    if next(wanted) == nil or wanted[name] then
      io.stderr:write("bench: scenario ", name, "\n")
      local t0 = socket.gettime()
      scenarios[name]()
      io.stderr:write(("bench: scenario %s took %.1f s\n"):format(name, socket.gettime() - t0))
    end
  end
end)
if emulator then emulator:stop() end
m.load_end = load()
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end

print()
print_table()
print()
for _, n in ipairs(notes) do print(n) end
print()
print_targets(m)
print(("bench: total %.0f s"):format(socket.gettime() - t_start))

-- JSON: per scenario and client, the runs' figures and their statistics.
local out = {date = os.date("!%Y-%m-%dT%H:%M:%SZ"), machine = m, scenarios = {}, notes = notes,
             targets = targets}
for _, r in ipairs(rows) do
  out.scenarios[#out.scenarios + 1] = {
    scenario = r.scenario, client = r.client, metric = r.metric, unit = r.unit,
    median = r.median, min = r.min, max = r.max, runs = r.runs, ratio = r.ratio,
    peak_rss_kb = r.rss_kb, requests = r.requests, throttled = r.throttled, minimum = r.minimum,
  }
end
write_all("bench/results.json", cjson.encode(out) .. "\n")
print("bench: wrote bench/results.json")
