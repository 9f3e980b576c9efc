--- An nginx handler provisioning devices through aliyun-iot (see nginx.conf beside it).
--
--   POST /provision  {"ProductKey": "a1...", "Count": 10}
--                 or {"ProductKey": "a1...", "Devices": ["name", ...] or
--                     [{"DeviceName": "...", "DeviceNickname": "..."}], "SkipInvalid": true}
--   200 {"ApplyIds": [...], "Devices": [{"ProductKey","DeviceName","DeviceSecret","IotId"}],
--        "Invalid": [{"DeviceName","ErrorMsg"}]}
--   4xx/5xx {"Code": "...", "Message": "...", "RequestId": ..., "ApplyIds": [...],
--            "Devices": [...], "Invalid": [...]} (what was created before a failure is
--            returned too, so nothing is lost)
--
-- One client per worker: it is made on the first request and shared by every request the
-- worker serves concurrently. Credentials come from the environment (nginx.conf's `env`
-- lines), `~/.aliyun/config.json` or `~/.alibabacloud/credentials`, as for any client.
-- @module provision

local cjson = require "cjson.safe"
local iot = require "aliyun.iot"

local M = {}

local client

--- The worker's client, made on first use.
-- @treturn ?table client
-- @treturn ?table err as from `iot.new`
function M.client()
  if client then return client end
  local c, err = iot.new{
    region_id = os.getenv("ALIYUN_IOT_REGION"),
    endpoint = os.getenv("ALIYUN_IOT_ENDPOINT"),
    qps_shared_dict = "aliyun_iot_pacing",
  }
  client = c
  return c, err
end

-- The answer's list fields. Debian's lua-cjson (2.1.0) writes an empty table as {}, so
-- an empty one of these is written as [] here.
local LISTS = {ApplyIds = true, Devices = true, Invalid = true}

local function encode(body)
  local parts = {}
  for k, v in pairs(body) do
    local text = LISTS[k] and type(v) == "table" and next(v) == nil and "[]" or cjson.encode(v)
    parts[#parts + 1] = cjson.encode(k) .. ":" .. text
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function reply(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(encode(body))
  return ngx.exit(ngx.HTTP_OK)
end

local function fail(status, code, message)
  return reply(status, {Code = code, Message = message})
end

-- Client errors whose cause is in the request; everything else is the upstream's.
local CALLER_ERRORS = {InvalidParameter = true, InvalidDeviceName = true}

local function read_request()
  ngx.req.read_body()
  local text = ngx.req.get_body_data()
  if not text and ngx.req.get_body_file() then
    return nil, "request body too large"
  end
  local body = cjson.decode(text or "")
  if type(body) ~= "table" then return nil, "the body must be a JSON object" end
  if type(body.ProductKey) ~= "string" then return nil, "ProductKey must be a string" end
  if (body.Count == nil) == (body.Devices == nil) then
    return nil, "give either Count or Devices"
  end
  if body.Count ~= nil and type(body.Count) ~= "number" then
    return nil, "Count must be a number"
  end
  if body.Devices ~= nil and type(body.Devices) ~= "table" then
    return nil, "Devices must be a list"
  end
  return body
end

--- Serves one `POST /provision` (content phase).
function M.handle()
  if ngx.req.get_method() ~= "POST" then
    ngx.header["Allow"] = "POST"
    return fail(405, "MethodNotAllowed", "use POST")
  end
  local body, why = read_request()
  if not body then return fail(400, "InvalidRequest", why) end
  local c, err = M.client()
  if not c then return fail(500, err.code, err.message) end

  -- The helpers raise on arguments of the wrong shape (Devices = [1, 2], [null], ...):
  -- in a handler that is the caller's mistake, answered as such.
  local ok, res
  if body.Count then
    ok, res, err = pcall(c.register_devices, c, {ProductKey = body.ProductKey, Count = body.Count})
  else
    ok, res, err = pcall(c.register_named_devices, c, {ProductKey = body.ProductKey,
      Devices = body.Devices, skip_invalid = body.SkipInvalid == true})
  end
  if not ok then
    return fail(400, "InvalidRequest", (tostring(res):gsub("^[^:]*:%d+: ", "")))
  end
  if res then return reply(200, res) end
  ngx.log(ngx.ERR, "provision: ", tostring(err))
  return reply(CALLER_ERRORS[err.code] and 400 or 502, {
    Code = err.code, Message = err.message, RequestId = err.request_id,
    ApplyIds = err.apply_ids, Devices = err.devices, Invalid = err.invalid,
  })
end

return M
