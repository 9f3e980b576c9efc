-- Test locations loaded into the nginx that spec/openresty_spec.lua starts (beside the
-- example's /provision). Each answers JSON. Endpoint and credentials come from the
-- environment, as for the example handler.
local cjson = require "cjson.safe"
local iot = require "aliyun.iot"

local M = {}

local PK = "a1TestPK001"

local function new_client(opts)
  opts.endpoint = os.getenv("ALIYUN_IOT_ENDPOINT")
  return iot.new(opts)
end

local function reply(t)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(t))
end

local function outcome(res, err)
  if res then return {ok = true, request_id = res.RequestId} end
  return {ok = false, code = err.code, message = err.message}
end

local fast -- per worker: pacing off
local paced = {}

--- /ping: answers at once.
function M.ping() reply{pong = true, worker = ngx.worker.pid()} end

--- /query: one QueryDeviceDetail (a device that does not exist: a business error is a
-- complete answer too), pacing off.
function M.query()
  fast = fast or assert(new_client{qps = false, max_retries = 0})
  local r = outcome(fast:query_device_detail{ProductKey = PK, DeviceName = "nosuchdevice"})
  r.worker = ngx.worker.pid()
  reply(r)
end

--- /paced?shared=1: one QueryDeviceDetail paced at 4 QPS, across workers when shared.
function M.paced()
  local shared = ngx.var.arg_shared == "1"
  local key = shared and "shared" or "local"
  paced[key] = paced[key] or assert(new_client{
    qps = {QueryDeviceDetail = 4}, max_retries = 0,
    qps_shared_dict = shared and "aliyun_iot_pacing" or nil,
  })
  local r = outcome(paced[key]:query_device_detail{ProductKey = PK, DeviceName = "nosuchdevice"})
  r.worker = ngx.worker.pid()
  reply(r)
end

--- /option?name=ca_file|proxy[&explicit=1]: a client with that option, called under
-- cosockets (chosen by the client, or given as its transport).
function M.option()
  local name = ngx.var.arg_name
  local c = assert(new_client{
    [name] = name == "proxy" and "http://127.0.0.1:9" or "/etc/ssl/certs/ca-certificates.crt",
    transport = ngx.var.arg_explicit and iot.transports.cosocket or nil,
  })
  local r = outcome(c:query_device_detail{ProductKey = PK, DeviceName = "nosuchdevice"})
  r.retries = c:stats().retries
  reply(r)
end

local init_result

--- Called from init_by_lua (no cosockets there): one call, kept for /init.
function M.init()
  local c = assert(new_client{qps = false})
  init_result = outcome(c:query_device_detail{ProductKey = PK, DeviceName = "nosuchdevice"})
  init_result.phase = ngx.get_phase()
  c:close()
end

--- /init: what the init_by_lua call returned.
function M.init_result() reply(init_result or {ok = false, code = "NotRun"}) end

--- For set_by_lua (no cosockets there either): one call, paced through the shared dict;
-- returns its outcome as JSON.
function M.set_phase_call()
  local c = assert(new_client{qps = {QueryDeviceDetail = 4}, qps_shared_dict = "aliyun_iot_pacing"})
  local r = outcome(c:query_device_detail{ProductKey = PK, DeviceName = "nosuchdevice"})
  r.phase = ngx.get_phase()
  c:close()
  return cjson.encode(r)
end

-- Raw answers for the transport cases, served by the same nginx (/raw?kind=...).
local RAW = {
  echo = function()
    ngx.req.read_body()
    ngx.header["X-Multi"] = {"a", "b"}
    ngx.say(cjson.encode{method = ngx.req.get_method(), body = ngx.req.get_body_data(),
      test = ngx.var.http_x_test, length = ngx.var.http_content_length,
      connection = ngx.var.http_connection, host = ngx.var.http_host, ua = ngx.var.http_user_agent})
  end,
  conn = function() ngx.say(ngx.worker.pid(), ":", ngx.var.connection) end,
  chunked = function()
    for i = 1, 5 do ngx.print(("part%d;"):format(i)); ngx.flush(true) end
  end,
  big = function()
    ngx.header["Content-Length"] = 100000
    ngx.print(("x"):rep(100000))
  end,
  slow = function() ngx.sleep(2); ngx.say("late") end,
  drip = function()
    for _ = 1, 20 do ngx.print("x"); ngx.flush(true); ngx.sleep(0.1) end
  end,
  reset = function() ngx.exit(444) end,
  until_close = function()
    local sock = ngx.req.socket(true)
    sock:send("HTTP/1.0 200 OK\r\nX-Kind: close\r\n\r\nhello until close")
    ngx.exit(444)
  end,
  interim = function()
    local sock = ngx.req.socket(true)
    sock:send("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    ngx.exit(444)
  end,
}

--- /raw?kind=...: the answers above.
function M.raw() return RAW[ngx.var.arg_kind]() end

--- /transport: runs the cosocket transport on the JSON request in the body (its url
-- relative to this server) `times` times, or once per entry of `fresh_seq` (fresh_connect
-- of each), and answers {{res=, err=, elapsed= [s since the first started]}, ...}.
function M.transport()
  ngx.req.read_body()
  local req = cjson.decode(ngx.req.get_body_data())
  req.url = req.url:gsub("^/", "http://127.0.0.1:" .. ngx.var.server_port .. "/")
  local request = require("aliyun.iot.transport.cosocket").request
  ngx.update_time()
  local t0 = ngx.now()
  local out = {}
  local fresh = req.fresh_seq or {}
  for i = 1, math.max(req.times or 1, #fresh) do
    if fresh[i] ~= nil then req.fresh_connect = fresh[i] end
    local res, err = request(req)
    ngx.update_time()
    out[i] = {res = res, err = err, elapsed = ngx.now() - t0}
  end
  reply(out)
end

return M
