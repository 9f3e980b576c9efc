-- `make demo`: the main job of aliyun-iot, end to end, against the local emulator.
--
-- Starts the emulator (a real HTTP server on 127.0.0.1 with the documented QPS limits on and
-- asynchronous registration), registers 2,500 devices with random names (three applies, as
-- one BatchRegisterDevice takes at most 1,000) and the 25 named devices of
-- examples/device-names.txt (two of them invalid, left out with skip_invalid), writes all
-- devices to devices.csv in the repository root (mode 0600: it holds DeviceSecrets), prints
-- a summary and stops the emulator.
--
-- Run from the repository root after `make`:
--   LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 examples/demo.lua [OUT]
-- (OUT: where to write the CSV instead of devices.csv in the repository root).
-- The same job against the real cloud is one command per step with bin/aliyun-iot (README).

local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"
local cli = require "aliyun.iot.cli"

local PRODUCT_KEY = "a1DemoPK001"
local root = (arg and arg[0] or ""):match("^(.*)/examples/[^/]+$") or "."

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

-- Writes the devices as CSV (header ProductKey,DeviceName,DeviceSecret,IotId) to a new
-- temporary file beside `path` (created exclusively, mode 0600, synced to disk), then
-- renames it over `path`, so a reader never sees half a file.
local function write_csv(path, devices)
  local core = require "aliyun.iot.core"
  local rows = {"ProductKey,DeviceName,DeviceSecret,IotId\r\n"}
  for _, d in ipairs(devices) do
    rows[#rows + 1] = table.concat({cli.csv_field(d.ProductKey), cli.csv_field(d.DeviceName),
      cli.csv_field(d.DeviceSecret), cli.csv_field(d.IotId)}, ",") .. "\r\n"
  end
  local tmp = ("%s.%s.tmp"):format(path, core.nonce())
  local f = assert(core.journal_open(tmp, "create"))
  local ok, err = f:append(table.concat(rows))
  f:close()
  if ok then ok, err = os.rename(tmp, path) end
  if not ok then
    os.remove(tmp) -- ours: created just above
    error(("cannot write %s: %s"):format(path, tostring(err)))
  end
end

local emu = emulator.start{products = {PRODUCT_KEY}, qps_limits = true, async_delay = 0.3}
local client = assert(iot.new{endpoint = emu.endpoint, access_key_id = emu.access_key_id,
                              access_key_secret = emu.access_key_secret})

local function fail(err)
  io.stderr:write("demo failed: ", tostring(err), "\n")
  emu:stop()
  os.exit(1)
end

-- One line per step of a job, with the counts it reached (events come per page and per
-- poll; the last one of a phase says how far it got).
local last
local function flush()
  if last then
    local count = last.total and ("%d/%d"):format(last.done or 0, last.total) or ""
    print(("  %-8s %s"):format(last.phase, count))
  end
  last = nil
end
local function progress(event)
  if last and event.phase ~= last.phase then flush() end
  last = event
end

local t0 = client:clock()
print(("emulator at %s; product %s"):format(emu.endpoint, PRODUCT_KEY))

print("2,500 devices with random names:")
local random, err = client:register_devices{ProductKey = PRODUCT_KEY, Count = 2500,
                                            on_progress = progress}
flush()
if not random then fail(err) end

print("25 named devices from examples/device-names.txt (skip_invalid):")
local names = cli.parse_names(read_file(root .. "/examples/device-names.txt"))
local named
named, err = client:register_named_devices{ProductKey = PRODUCT_KEY, Devices = names,
                                           skip_invalid = true, on_progress = progress}
flush()
if not named then fail(err) end

local devices = {}
for _, d in ipairs(random.Devices) do devices[#devices + 1] = d end
for _, d in ipairs(named.Devices) do devices[#devices + 1] = d end
local csv = arg and arg[1] or (root .. "/devices.csv")
write_csv(csv, devices)
local wall = client:clock() - t0
local stats = client:stats()
emu:stop()

print()
print(("devices:  %d (%d random-named in %d applies, %d named in %d)"):format(#devices,
  #random.Devices, #random.ApplyIds, #named.Devices, #named.ApplyIds))
for _, bad in ipairs(named.Invalid) do
  print(("left out: %q (%s)"):format(bad.DeviceName, bad.ErrorMsg))
end
print(("written:  %s (mode 0600, %d rows)"):format(csv, #devices))
print(("time:     %.1f s wall"):format(wall))
print(("requests: %d (%d retries, %d throttles absorbed; %.0f KiB sent, %.0f KiB received)"):format(
  stats.requests, stats.retries, stats.throttled, stats.bytes_sent / 1024, stats.bytes_received / 1024))
