--- What bench/run.lua and bench/ours.lua share (and bench/sdk.js mirrors): the emulator's
-- test credentials, the signed parameter sets of scenario 1, device names, peak RSS.
local cjson = require "cjson"

local M = {
  KEY_ID = "testid",
  SECRET = "testsecret",
  PRODUCT_KEY = "a1TestPK001",
  -- Fixed, so that both clients sign byte-identical requests and the run can check that
  -- their signatures agree.
  NONCE = "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
  TIMESTAMP = "2024-01-01T00:00:00Z",
}

--- Device name number i of a run: `bench<run>_<i>` (4-32 characters, unique per run).
function M.device_name(run, i)
  return ("bench%s_%05d"):format(run, i)
end

--- Scenario 1's parameters, with the common ones, before flattening.
-- @tparam string kind "register" (BatchRegisterDevice, Count 1000) or "check1000"
--   (BatchCheckDeviceNames with 1,000 DeviceName entries)
function M.sign_params(kind)
  local p = {
    Version = "2018-01-20", Format = "JSON", AccessKeyId = M.KEY_ID,
    SignatureMethod = "HMAC-SHA1", SignatureVersion = "1.0", SignatureNonce = M.NONCE,
    Timestamp = M.TIMESTAMP, RegionId = "cn-shanghai", ProductKey = M.PRODUCT_KEY,
  }
  if kind == "register" then
    p.Action, p.Count = "BatchRegisterDevice", "1000"
  elseif kind == "check1000" then
    p.Action = "BatchCheckDeviceNames"
    local names = {}
    for i = 1, 1000 do names[i] = M.device_name("s", i) end
    p.DeviceName = names
  else
    error("unknown signing kind " .. tostring(kind))
  end
  return p
end

-- The parameters a call adds to every attempt (request.lua's sign_v1): the rest are the
-- call's own, which core.rpc_request holds.
local COMMON = {Version = true, Format = true, AccessKeyId = true, SignatureMethod = true,
                SignatureVersion = true, SignatureNonce = true, Timestamp = true,
                RegionId = true, Action = true}

--- Scenario 1's parameters split as the call path splits them.
-- @treturn table the call's own parameters (nested lists kept)
-- @treturn table the common parameters of an attempt
function M.split_common(params)
  local own, common = {}, {}
  for k, v in pairs(params) do
    if COMMON[k] then common[k] = v else own[k] = v end
  end
  return own, common
end

--- Peak resident set size of this process so far, in kB (VmHWM), or nil off Linux.
function M.peak_rss_kb()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)"))
end

--- Current resident set size in kB (VmRSS).
function M.rss_kb()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

M.json = cjson.encode

return M
