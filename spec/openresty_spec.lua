-- The client inside real nginx (Debian nginx + libnginx-mod-http-lua + lua-resty-core, the
-- C core built for LuaJIT): examples/openresty/nginx.conf and its /provision handler,
-- driven over HTTP, talking to the emulator. Run by `make test-openresty`.
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson.safe"
local emulator = require "aliyun.iot.emulator"
local openresty = require "spec.support.openresty"

local PK = "a1TestPK001"
local CREDS = {ALIBABA_CLOUD_ACCESS_KEY_ID = "testid", ALIBABA_CLOUD_ACCESS_KEY_SECRET = "testsecret"}

local LOCATIONS = [[
    location = /ping { content_by_lua_block { require("openresty_app").ping() } }
    location = /query { content_by_lua_block { require("openresty_app").query() } }
    location = /paced { content_by_lua_block { require("openresty_app").paced() } }
    location = /option { content_by_lua_block { require("openresty_app").option() } }
    location = /raw { content_by_lua_block { require("openresty_app").raw() } }
    location = /transport { content_by_lua_block { require("openresty_app").transport() } }
    location = /init { content_by_lua_block { require("openresty_app").init_result() } }
    location = /set {
        set_by_lua_block $outcome { return require("openresty_app").set_phase_call() }
        content_by_lua_block { ngx.say(ngx.var.outcome) }
    }
]]

local function start_nginx(emu, opts)
  opts = opts or {}
  local env = {ALIYUN_IOT_ENDPOINT = emu.endpoint}
  for k, v in pairs(CREDS) do env[k] = v end
  opts.env, opts.locations = env, LOCATIONS
  return openresty.start(opts)
end

local function request(url, body, timeout)
  local out = {}
  http.TIMEOUT = timeout or 30
  local _, status = http.request{
    url = url, method = body and "POST" or "GET", sink = ltn12.sink.table(out),
    source = body and ltn12.source.string(body) or nil,
    headers = body and {["content-type"] = "application/json", ["content-length"] = #body} or nil,
  }
  local text = table.concat(out)
  return status, cjson.decode(text ~= "" and text or "null"), text
end

local function provision(srv, t)
  return request(srv.url .. "/provision", cjson.encode(t))
end

-- Starts n parallel GETs of url with curl in the background; returns a function that
-- waits for them and gives the decoded bodies and the seconds from start to end.
local function burst(url, n)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  local args = {}
  for i = 1, n do args[i] = ("-o %s/%d %s"):format(dir, i, url) end
  local t0 = socket.gettime()
  assert(os.execute(("(curl -s -Z --parallel-immediate --parallel-max %d %s; touch %s/done) "
    .. ">/dev/null 2>&1 &"):format(n, table.concat(args, " "), dir)))
  local function done() return io.open(dir .. "/done") ~= nil end
  return function(limit)
    while not done() and socket.gettime() - t0 < (limit or 60) do socket.sleep(0.02) end
    local elapsed = socket.gettime() - t0
    local bodies = {}
    for i = 1, n do
      local f = io.open(dir .. "/" .. i)
      bodies[i] = f and cjson.decode(f:read("*a")) or false
      if f then f:close() end
    end
    os.execute("rm -rf " .. dir)
    return bodies, elapsed
  end, done
end

local function sorted_names(devices)
  local t = {}
  for i, d in ipairs(devices) do t[i] = d.DeviceName end
  table.sort(t)
  return t
end

describe("OpenResty #openresty", function()
  local emu, srv

  setup(function()
    emu = emulator.start{async_delay = 0.05}
    srv = start_nginx(emu, {workers = 2, init = 'require("openresty_app").init()'})
  end)

  teardown(function()
    if srv then srv.stop() end
    if emu then emu:stop() end
  end)

  before_each(function() emu:reset() end)

  it("provisions random-named devices through the example handler", function()
    local status, body, text = provision(srv, {ProductKey = PK, Count = 5})
    assert.equal(200, status, text .. srv.log())
    assert.equal(5, #body.Devices)
    assert.equal(1, #body.ApplyIds)
    for _, d in ipairs(body.Devices) do
      assert.equal(PK, d.ProductKey)
      assert.is_string(d.DeviceSecret)
      assert.is_string(d.IotId)
    end
    assert.same(emu:state().products[PK].names, sorted_names(body.Devices))
  end)

  it("provisions named devices, leaving out invalid ones on request", function()
    local status, body, text = provision(srv, {ProductKey = PK, SkipInvalid = true,
      Devices = {"gw_0001", "gw_0002", {DeviceName = "gw_0003", DeviceNickname = "three"}, "x"}})
    assert.equal(200, status, text .. srv.log())
    assert.same({"gw_0001", "gw_0002", "gw_0003"}, sorted_names(body.Devices))
    assert.same({"gw_0001", "gw_0002", "gw_0003"}, emu:state().products[PK].names)
    assert.equal("x", body.Invalid[1].DeviceName)
  end)

  it("answers errors as JSON with the error's code and message", function()
    local status, body = provision(srv, {ProductKey = PK, Devices = {"gw_0001", "x"}})
    assert.equal(400, status)
    assert.equal("InvalidDeviceName", body.Code)
    assert.is_string(body.Message)
    assert.same({}, emu:state().products[PK].names)

    status, body = provision(srv, {ProductKey = PK, Count = 0})
    assert.equal(400, status)
    assert.equal("InvalidParameter", body.Code)

    status, body = provision(srv, {ProductKey = "a1NoSuchPK0", Count = 2})
    assert.equal(502, status)
    assert.is_string(body.Code)

    status, body = request(srv.url .. "/provision", "{not json")
    assert.equal(400, status)
    assert.equal("InvalidRequest", body.Code)

    for _, devices in ipairs{"[1,2]", "[null,\"gw_0009\"]", "[{\"Name\":\"x\"}]"} do
      local text
      status, body, text = request(srv.url .. "/provision",
        '{"ProductKey":"' .. PK .. '","Devices":' .. devices .. '}')
      assert.equal(400, status, text)
      assert.is_string(body.Code, text)
    end
    assert.same({}, emu:state().products[PK].names)
  end)

  it("writes empty lists as JSON arrays", function()
    local _, _, text = provision(srv, {ProductKey = PK, Devices = {"gw_0100"}})
    assert.matches('"Invalid":%[%]', text)
  end)

  it("refuses ca_file and proxy under cosockets with a clear error", function()
    for _, query in ipairs{"ca_file", "proxy", "ca_file&explicit=1", "proxy&explicit=1"} do
      local name = query:match("^%w+_?%w*")
      local status, body = request(srv.url .. "/option?name=" .. query)
      assert.equal(200, status)
      assert.is_false(body.ok)
      assert.equal(0, body.retries)
      assert.equal("InvalidParameter", body.code)
      assert.matches(name, body.message, 1, true)
      assert.matches("lua_ssl_trusted_certificate", body.message, 1, true)
    end
    assert.same({}, emu:requests())
  end)

  it("falls back to libcurl in init_by_lua and set_by_lua, where cosockets are unavailable", function()
    -- The init_by_lua call ran at startup, against the emulator, before this test's reset.
    local _, body = request(srv.url .. "/init")
    assert.same({ok = false, code = "iot.device.NotExistedDevice", phase = "init"},
      {ok = body.ok, code = body.code, phase = body.phase})
    -- After a paced call has put a (wall-clock) slot time into the shared dict.
    request(srv.url .. "/paced?shared=1")
    _, body = request(srv.url .. "/set", nil, 10)
    assert.same({ok = false, code = "iot.device.NotExistedDevice", phase = "set"},
      {ok = body.ok, code = body.code, phase = body.phase})
    assert.equal(2, #emu:requests())
  end)

  it("keeps every worker within the QPS limit through qps_shared_dict", function()
    -- The emulator throttles above 5/s; each worker's client paces at 4/s. Shared, both
    -- workers together stay at 4/s; each on its own they would reach 8/s.
    emu:set{qps_limits = {QueryDeviceDetail = 5}}
    -- 16 concurrent calls; returns the throttled count, the fewest calls one worker
    -- served, and the seconds taken.
    local function run(shared)
      emu:reset()
      local bodies, elapsed = burst(srv.url .. "/paced?shared=" .. shared, 16)()
      local per_worker, throttled = {}, 0
      for i, b in ipairs(bodies) do
        assert.truthy(b, "request " .. i .. " got no answer")
        per_worker[b.worker] = (per_worker[b.worker] or 0) + 1
      end
      for _, r in ipairs(emu:requests()) do
        if r.code == "Throttling.User" then throttled = throttled + 1 end
      end
      local fewest = math.huge
      for _, n in pairs(per_worker) do fewest = math.min(fewest, n) end
      if not next(per_worker, next(per_worker)) then fewest = 0 end
      return throttled, fewest, elapsed
    end
    local throttled, fewest, elapsed = run("1")
    assert.equal(0, throttled)
    assert.is_true(fewest > 0, "both workers served requests")
    assert.is_true(elapsed > 15 / 4 * 0.8, "16 calls at 4/s took " .. elapsed .. " s")
    -- The control: each worker pacing on its own overruns the account's limit.
    throttled, fewest = run("0")
    if fewest >= 6 then assert.is_true(throttled > 0, "per-worker pacing was not throttled") end
  end)
end)

describe("OpenResty non-blocking #openresty", function()
  local emu, srv

  setup(function()
    emu = emulator.start{}
    srv = start_nginx(emu, {workers = 1})
  end)

  teardown(function()
    if srv then srv.stop() end
    if emu then emu:stop() end
  end)

  it("overlaps 20 slow calls in one worker and answers /ping meanwhile", function()
    emu:fault{kind = "slow", delay = 1, probability = 1}
    local wait, done = burst(srv.url .. "/query", 20)
    socket.sleep(0.3)
    local t0 = socket.gettime()
    local status, pong = request(srv.url .. "/ping", nil, 5)
    local ping_time = socket.gettime() - t0
    local in_flight = not done()
    local bodies, elapsed = wait(30)
    assert.equal(200, status)
    assert.is_true(pong.pong)
    assert.is_true(in_flight, "the slow calls were still in flight when /ping answered")
    assert.is_true(ping_time < 0.9, "/ping took " .. ping_time .. " s")
    for i, b in ipairs(bodies) do
      assert.truthy(b, "request " .. i .. " got no answer")
      assert.equal("iot.device.NotExistedDevice", b.code)
    end
    assert.equal(20, #emu:requests())
    -- serial would take 20 s
    assert.is_true(elapsed < 10, "20 calls took " .. elapsed .. " s")
    print(("\n# openresty overlap: 20 calls of 1 s each in %.2f s; /ping in %.3f s"):format(elapsed, ping_time))
  end)
end)

describe("OpenResty cosocket transport #openresty", function()
  local emu, srv

  setup(function()
    emu = emulator.start{}
    srv = start_nginx(emu, {workers = 1})
  end)

  teardown(function()
    if srv then srv.stop() end
    if emu then emu:stop() end
  end)

  -- Runs aliyun.iot.transport.cosocket inside nginx against /raw on the same server.
  local function transport(req)
    local status, body, text = request(srv.url .. "/transport", cjson.encode(req))
    assert.equal(200, status, text .. srv.log())
    return body
  end

  it("sends method, body and headers; lower-cases response headers, joining repeats", function()
    local r = transport{method = "POST", url = "/raw?kind=echo", body = "hello",
                        headers = {["X-Test"] = "v", ["Content-Type"] = "text/plain"}}[1]
    assert.equal(200, r.res.status)
    assert.equal("a, b", r.res.headers["x-multi"])
    local seen = cjson.decode(r.res.body)
    assert.same({method = "POST", body = "hello", test = "v", length = "5", connection = "keep-alive"},
      {method = seen.method, body = seen.body, test = seen.test, length = seen.length,
       connection = seen.connection})
    assert.equal(srv.url:match("//(.*)"), seen.host)
    assert.matches("^aliyun%-iot/%d+%.%d+%.%d+ ngx_lua/0%.%d+%.%d+ LuaJIT/2%.1", seen.ua)
    seen = cjson.decode(transport{method = "GET", url = "/raw?kind=echo"}[1].res.body)
    assert.same({method = "GET"}, {method = seen.method, body = seen.body, length = seen.length})
  end)

  it("reuses pooled connections, but never for or after a fresh_connect request", function()
    local r = transport{method = "GET", url = "/raw?kind=conn", fresh_seq = {false, true, true, false}}
    local conn = {}
    for i = 1, 4 do conn[i] = r[i].res.body end
    assert.equal(conn[1], conn[4])
    assert.are_not.equal(conn[2], conn[3])
    assert.are_not.equal(conn[1], conn[2])
    assert.are_not.equal(conn[1], conn[3])
  end)

  it("reads chunked bodies, bodies ended by close, and skips 1xx answers", function()
    assert.equal("part1;part2;part3;part4;part5;",
      transport{method = "GET", url = "/raw?kind=chunked"}[1].res.body)
    local r = transport{method = "GET", url = "/raw?kind=until_close"}[1]
    assert.same({200, "close", "hello until close"}, {r.res.status, r.res.headers["x-kind"], r.res.body})
    r = transport{method = "GET", url = "/raw?kind=interim"}[1]
    assert.same({201, "ok"}, {r.res.status, r.res.body})
  end)

  it("caps the response at max_response_size", function()
    assert.equal(100000, #transport{method = "GET", url = "/raw?kind=big",
                                    max_response_size = 100000}[1].res.body)
    for _, kind in ipairs{"big", "chunked"} do
      local r = transport{method = "GET", url = "/raw?kind=" .. kind, max_response_size = 10}[1]
      assert.same({code = "ResponseTooLarge", sent = true}, {code = r.err.code, sent = r.err.sent})
    end
  end)

  it("bounds the whole request by timeout, however slowly the bytes come", function()
    local r = transport{method = "GET", url = "/raw?kind=slow", timeout = 0.5}[1]
    assert.same({code = "Timeout", sent = true}, {code = r.err.code, sent = r.err.sent})
    assert.is_true(r.elapsed >= 0.4 and r.elapsed < 1.5, "took " .. r.elapsed .. " s")
    -- a byte every 0.1 s for 2 s: each read is quick, the request is not
    r = transport{method = "GET", url = "/raw?kind=drip", timeout = 0.7}[1]
    assert.same({code = "Timeout", sent = true}, {code = r.err.code, sent = r.err.sent})
    assert.is_true(r.elapsed < 1.5, "took " .. r.elapsed .. " s")
  end)

  it("maps failures to codes with the right sent flag", function()
    local r = transport{method = "GET", url = "/raw?kind=reset"}[1]
    assert.same({code = "ConnectionReset", sent = true}, {code = r.err.code, sent = r.err.sent})
    r = transport{method = "GET", url = "http://127.0.0.1:1/"}[1]
    assert.same({code = "ConnectFailed", sent = false}, {code = r.err.code, sent = r.err.sent})
    r = transport{method = "GET", url = "/raw?kind=conn", headers = {["X-Bad"] = "a\r\nX-Injected: 1"}}[1]
    assert.same({code = "TransportError", sent = false}, {code = r.err.code, sent = r.err.sent})
    for _, opt in ipairs{"ca_file", "proxy"} do
      r = transport{method = "GET", url = "/raw?kind=conn", [opt] = "/x"}[1]
      assert.same({code = "InvalidParameter", sent = false}, {code = r.err.code, sent = r.err.sent})
      assert.matches(opt, r.err.message, 1, true)
    end
  end)
end)

describe("OpenResty over HTTPS #openresty", function()
  local emu

  setup(function() emu = emulator.start{tls = true, async_delay = 0.05} end)
  teardown(function() if emu then emu:stop() end end)

  it("provisions through the example handler with the emulator's CA as the trust store", function()
    local srv = start_nginx(emu, {trusted = emu.ca_file})
    finally(srv.stop)
    local _, q = request(srv.url .. "/query")
    assert.equal("iot.device.NotExistedDevice", q.code, q.message)
    local status, body, text = provision(srv, {ProductKey = PK, Count = 3})
    assert.equal(200, status, text .. srv.log())
    assert.equal(3, #body.Devices)
    assert.same(emu:state().products[PK].names, sorted_names(body.Devices))
  end)

  it("rejects the emulator's certificate with the system trust store", function()
    emu:reset()
    local srv = start_nginx(emu)
    finally(srv.stop)
    local status, body = request(srv.url .. "/query")
    assert.equal(200, status)
    assert.equal("TLSError", body.code)
    assert.same({}, emu:requests())
  end)
end)
