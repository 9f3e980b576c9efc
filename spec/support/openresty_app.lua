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

--- /option?name=ca_file|proxy: a client with that option, called under cosockets.
function M.option()
  local name = ngx.var.arg_name
  local c = assert(new_client{[name] = name == "proxy" and "http://127.0.0.1:9" or "/etc/ssl/certs/ca-certificates.crt"})
  reply(outcome(c:query_device_detail{ProductKey = PK, DeviceName = "nosuchdevice"}))
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

return M
