-- `make emulator`: runs the local IoT emulator in the foreground until Ctrl-C.
-- Environment: EMULATOR_PORT (18080), EMULATOR_TLS=1 (HTTPS with a throwaway CA),
-- EMULATOR_ASYNC_DELAY (seconds per CHECK/CREATE phase, 0.3), EMULATOR_INVALID_NAMES
-- (async | sync), EMULATOR_QPS=1 (the documented per-action QPS limits).
local emulator = require "aliyun.iot.emulator"
local socket = require "socket"

local env = os.getenv
local emu = emulator.start {
    port = tonumber(env("EMULATOR_PORT") or "18080"),
    tls = env("EMULATOR_TLS") == "1",
    async_delay = tonumber(env("EMULATOR_ASYNC_DELAY") or "0.3"),
    invalid_names = env("EMULATOR_INVALID_NAMES") or "async",
    qps_limits = env("EMULATOR_QPS") == "1",
}
print("aliyun-iot emulator (IoT Platform 2018-01-20, registration API)")
print("  endpoint:          " .. emu.endpoint)
if emu.ca_file then print("  CA file:           " .. emu.ca_file) end
print("  AccessKeyId:       " .. emu.access_key_id)
print("  AccessKeySecret:   " .. emu.access_key_secret .. "   (test credentials)")
print("  ProductKey:        a1TestPK001")
print("  inspect:           curl " .. emu.control_endpoint .. "__emulator/state  (a Lua table literal)")
print("Ctrl-C stops it.")
io.stdout:flush()
while true do socket.sleep(3600) end
