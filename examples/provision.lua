-- Provision N devices with random names and print them as CSV: a plain script to copy.
--
--   lua5.4 provision.lua PRODUCT_KEY COUNT [ENDPOINT] > devices.csv
--
-- Credentials come from where the client looks for them: ALIBABA_CLOUD_ACCESS_KEY_ID and
-- ALIBABA_CLOUD_ACCESS_KEY_SECRET (and ALIBABA_CLOUD_SECURITY_TOKEN), ~/.aliyun/config.json
-- or ~/.alibabacloud/credentials. The endpoint is the third argument, or
-- ALIYUN_IOT_ENDPOINT, or the region's (ALIYUN_IOT_REGION, default cn-shanghai).
-- Progress goes to stderr; the CSV (which holds DeviceSecrets) only to stdout.
-- Exit status: 0 done, 1 failed (stderr says which ApplyIds exist), 2 bad arguments.

local iot = require "aliyun.iot"

local product_key, count, endpoint = arg[1], tonumber(arg[2]), arg[3]
if not product_key or not count then
  io.stderr:write("usage: provision.lua PRODUCT_KEY COUNT [ENDPOINT]\n")
  os.exit(2)
end

local client, err = iot.new{
  endpoint = endpoint or os.getenv("ALIYUN_IOT_ENDPOINT"),
  region_id = os.getenv("ALIYUN_IOT_REGION"),
}
if not client then
  io.stderr:write(tostring(err), "\n")
  os.exit(2)
end

local res
res, err = client:register_devices{
  ProductKey = product_key,
  Count = count,
  on_progress = function(e)
    if e.phase == "register" or (e.phase == "fetch" and e.done == e.total) then
      io.stderr:write(("%s: %d/%d devices\n"):format(e.phase, e.done, e.total))
    end
  end,
}
if not res then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end

-- RFC 4180: a field with a comma, a quote or a line break is quoted.
local function field(s)
  s = tostring(s or "")
  if s:find('[,"\r\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

io.write("ProductKey,DeviceName,DeviceSecret,IotId\r\n")
for _, d in ipairs(res.Devices) do
  io.write(field(d.ProductKey), ",", field(d.DeviceName), ",", field(d.DeviceSecret), ",",
           field(d.IotId), "\r\n")
end
io.stderr:write(("done: %d devices in ApplyIds %s\n"):format(#res.Devices,
  table.concat(res.ApplyIds, ", ")))
