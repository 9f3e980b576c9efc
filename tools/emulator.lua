-- `make emulator`: runs the local IoT emulator in the foreground until Ctrl-C (one stops it
-- and removes its folder; exit status 130). Every knob is an environment variable (README,
-- "Testing your code offline: the emulator"):
--   EMULATOR_PORT          port on 127.0.0.1 (18080; 0: a free port)
--   EMULATOR_TLS           1: HTTPS with a throwaway CA (0)
--   EMULATOR_ASYNC_DELAY   seconds per CHECK/CREATE phase (0.3)
--   EMULATOR_INVALID_NAMES async | sync (async)
--   EMULATOR_QPS           1: the documented per-action QPS limits (0)
--   EMULATOR_MAX_COUNT     most devices per apply (10000)
--   EMULATOR_PRODUCTS      comma-separated ProductKeys (a1TestPK001)
--   EMULATOR_IOT_INSTANCE_ID  an IotInstanceId requests must carry (none)
--   EMULATOR_PRODUCT_SECRETS  comma-separated ProductKey=ProductSecret: those products take
--                          dynamic registrations, POST /auth/register/device (none)
-- A bad value is refused with a message and exit status 2.
local emulator = require "aliyun.iot.emulator"
local socket = require "socket"

local function usage(msg)
    io.stderr:write("emulator: ", msg, "\n")
    os.exit(2)
end

local function env(name, default)
    local v = os.getenv(name)
    if v == nil or v == "" then return default end
    return v
end

local function number(name, default)
    local v = env(name, nil)
    if v == nil then return default end
    return tonumber(v) or usage(name .. " must be a number, not " .. v)
end

local function flag(name)
    local v = env(name, "0")
    if v ~= "0" and v ~= "1" then usage(name .. " must be 0 or 1, not " .. v) end
    return v == "1"
end

local products = {}
for pk in env("EMULATOR_PRODUCTS", "a1TestPK001"):gmatch("[^,%s]+") do products[#products + 1] = pk end

local product_secrets = {}
for item in env("EMULATOR_PRODUCT_SECRETS", ""):gmatch("[^,%s]+") do
    local pk, secret = item:match("^([^=]+)=(.+)$")
    if not pk then usage("EMULATOR_PRODUCT_SECRETS must be ProductKey=ProductSecret,..., not " .. item) end
    product_secrets[pk] = secret
end

local opts = {
    port = number("EMULATOR_PORT", 18080),
    tls = flag("EMULATOR_TLS"),
    async_delay = number("EMULATOR_ASYNC_DELAY", 0.3),
    invalid_names = env("EMULATOR_INVALID_NAMES", "async"),
    qps_limits = flag("EMULATOR_QPS"),
    max_count = number("EMULATOR_MAX_COUNT", 10000),
    products = products,
    iot_instance_id = env("EMULATOR_IOT_INSTANCE_ID", nil),
    product_secrets = next(product_secrets) and product_secrets or nil,
}
local ok, emu = pcall(emulator.start, opts)
if not ok then usage(tostring(emu):gsub("^[^:]*:%d+: ", "")) end

print("aliyun-iot emulator (IoT Platform 2018-01-20, registration API)")
print("  endpoint:          " .. emu.endpoint)
if emu.ca_file then print("  CA file:           " .. emu.ca_file) end
print("  AccessKeyId:       " .. emu.access_key_id)
print("  AccessKeySecret:   " .. emu.access_key_secret .. "   (test credentials)")
print("  ProductKey:        " .. table.concat(products, ", "))
if opts.product_secrets then
    local pks = {}
    for pk in pairs(product_secrets) do pks[#pks + 1] = pk end
    table.sort(pks)
    print("  dynamic register:  " .. table.concat(pks, ", ")
        .. "   (POST " .. emu.endpoint .. "auth/register/device)")
end
if opts.iot_instance_id then print("  IotInstanceId:     " .. opts.iot_instance_id) end
print("  folder:            " .. emu.prefix .. "   (removed on exit)")
print("  inspect:           curl " .. emu.control_endpoint .. "__emulator/state?format=json")
print("Ctrl-C stops it.")
io.stdout:flush()

-- Short sleeps, so that the interpreter's SIGINT hook runs Lua code soon after Ctrl-C
-- (LuaSocket's sleep resumes after a signal), and the error it raises lands here.
local stopped, err = pcall(function()
    while true do socket.sleep(0.2) end
end)
emu:stop()
if not stopped and not tostring(err):find("interrupted", 1, true) then
    io.stderr:write("emulator: ", tostring(err), "\n")
    os.exit(1)
end
os.exit(130)
