--- One benchmark run of our client, as its own process (so that its peak RSS is its own).
-- Run by bench/run.lua: `lua5.4 bench/ours.lua SCENARIO ARGS...`; prints one JSON line.
--   sign KIND SECONDS          KIND: register | check1000; signatures per second: sign_rpc
--                              (rate), flatten + sign_rpc (rate_with_flatten),
--                              rpc_request + sign (rate_rpc), one attempt's sign (rate_rpc_sign)
--   sequential URL WARMUP N    N QueryBatchRegisterDeviceStatus calls, one after another
--   provision URL N RUN MODE   register N named devices (names bench<RUN>_<i>) and fetch
--                              every secret; MODE paced (documented QPS) or unpaced;
--                              cpu_seconds: user + system CPU of the job (os.clock),
--                              process_cpu_seconds: of the whole process
--   stream URL OUT APPLYIDS    stream the devices of the listed applies (comma-separated)
--                              to a CSV file; peak RSS after 10,000 and at the end
-- Every line carries `rss_kb`: VmHWM (peak resident set) of this process at the end.

local core = require "aliyun.iot.core"
local common = require "bench.common"

local scenario = arg[1]
local out = {}

if scenario == "sign" then
  -- The signing step alone: core.sign_rpc on the flat parameters, all three results
  -- kept, CPU time by os.clock (issue 7).
  local kind, seconds = arg[2], tonumber(arg[3])
  local params = common.sign_params(kind)
  local flat = assert(core.flatten(params))
  local secret = common.SECRET
  local sign = core.sign_rpc
  local sig = sign("POST", flat, secret)
  out.signature = sig
  local function loop(budget)
    local n, t0 = 0, os.clock()
    local t = t0
    repeat
      for _ = 1, 16 do
        local s, sts, q = sign("POST", flat, secret)
        if s == nil or sts == nil or q == nil then error("sign_rpc returned nothing") end
      end
      n = n + 16
      t = os.clock()
    until t - t0 >= budget
    return n, t - t0
  end
  loop(seconds / 5) -- warm-up, as for the SDK (its JIT needs one)
  local n, t = loop(seconds)
  out.ops, out.seconds, out.rate = n, t, n / t
  -- Flattening too, from the nested list, for the informative row.
  local n2, t0 = 0, os.clock()
  repeat
    local f = core.flatten(params)
    sign("POST", f, secret)
    n2 = n2 + 1
  until os.clock() - t0 >= seconds
  out.rate_with_flatten = n2 / (os.clock() - t0)
  -- The call path's request object (issue 16): core.rpc_request from the nested params
  -- (the call's own; prepare does this once per call), signed with an attempt's common
  -- parameters merged in, then closed; and the signing of one attempt alone.
  local own, com = common.split_common(params)
  -- nil on a core before it (comparing trees A/B)
  local r = core.rpc_request and assert(core.rpc_request(own))
  if r then
    if r:sign("POST", com, secret) ~= sig then error("rpc_request signed other bytes") end
    local n3, t3 = 0, os.clock()
    repeat
      for _ = 1, 8 do
        local x = core.rpc_request(own)
        x:sign("POST", com, secret)
        x:close()
      end
      n3 = n3 + 8
    until os.clock() - t3 >= seconds
    out.rate_rpc = n3 / (os.clock() - t3)
    local n4, t4 = 0, os.clock()
    repeat
      for _ = 1, 16 do r:sign("POST", com, secret) end
      n4 = n4 + 16
    until os.clock() - t4 >= seconds
    out.rate_rpc_sign = n4 / (os.clock() - t4)
    r:close()
  end

elseif scenario == "sequential" then
  local iot = require "aliyun.iot"
  local url, warmup, n = arg[2], tonumber(arg[3]), tonumber(arg[4])
  local client = assert(iot.new{access_key_id = common.KEY_ID, access_key_secret = common.SECRET,
                                endpoint = url, qps = false, max_retries = 0})
  local params = {ProductKey = common.PRODUCT_KEY, ApplyId = 100000}
  local function run(count)
    for _ = 1, count do
      local res, err = client:query_batch_register_device_status(params)
      if not res then error(tostring(err)) end
      if res.Data.Status ~= "CREATE_SUCCESS" then error("unexpected answer") end
    end
  end
  run(warmup)
  local t0, c0 = core.now(), os.clock()
  run(n)
  local t, c = core.now() - t0, os.clock() - c0
  out.calls, out.seconds, out.rate = n, t, n / t
  -- user + system CPU of this process over the calls (os.clock is clock())
  out.cpu_seconds, out.cpu_us_per_call = c, c / n * 1e6

elseif scenario == "provision" then
  -- Scenario 3 (unpaced: qps off) and 4 (paced: the documented limits).
  local iot = require "aliyun.iot"
  local url, n, run, mode = arg[2], tonumber(arg[3]), arg[4], arg[5]
  local client = assert(iot.new{access_key_id = common.KEY_ID, access_key_secret = common.SECRET,
                                endpoint = url, qps = mode == "paced", max_batch_size = 10000})
  local names = {}
  for i = 1, n do names[i] = common.device_name(run, i) end
  local t0, c0 = core.now(), os.clock()
  local res, err = client:register_named_devices{ProductKey = common.PRODUCT_KEY, Devices = names}
  local t = core.now() - t0
  out.cpu_seconds = os.clock() - c0
  if not res then error(tostring(err)) end
  local with_secret = 0
  for _, d in ipairs(res.Devices) do
    if type(d.DeviceSecret) == "string" and #d.DeviceSecret > 0 then with_secret = with_secret + 1 end
  end
  local st = client:stats()
  out.seconds, out.devices, out.requests, out.throttled = t, with_secret, st.requests, st.throttled
  -- os.clock is clock(): user + system CPU of this process since it started.
  out.process_cpu_seconds = os.clock()

elseif scenario == "stream" then
  -- Scenario 5: every device of the listed applies to a CSV file, one record at a time.
  local iot = require "aliyun.iot"
  local url, path, list = arg[2], arg[3], arg[4]
  local client = assert(iot.new{access_key_id = common.KEY_ID, access_key_secret = common.SECRET,
                                endpoint = url, qps = false, max_batch_size = 10000})
  local f = assert(io.open(path, "w"))
  f:write("ProductKey,DeviceName,DeviceSecret,IotId\n")
  local count = 0
  local t0 = core.now()
  for id in list:gmatch("%d+") do
    for dev, err in client:apply_devices{ProductKey = common.PRODUCT_KEY, ApplyId = id} do
      if not dev then error(tostring(err)) end
      f:write(dev.ProductKey, ",", dev.DeviceName, ",", dev.DeviceSecret, ",", dev.IotId, "\n")
      count = count + 1
      if count == 10000 then out.hwm_10k_kb, out.rss_10k_kb = common.peak_rss_kb(), common.rss_kb() end
    end
  end
  f:close()
  out.seconds, out.records = core.now() - t0, count
  out.hwm_100k_kb, out.rss_100k_kb = common.peak_rss_kb(), common.rss_kb()

else
  error("unknown scenario " .. tostring(scenario))
end

out.rss_kb = common.peak_rss_kb()
io.write(common.json(out), "\n")
