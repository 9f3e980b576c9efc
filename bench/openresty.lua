--- The OpenResty scenario's two clients, run inside one nginx worker (bench/openresty_nginx.conf):
--   GET /ours?url=URL&n=N    N QueryBatchRegisterDeviceStatus calls through our client
--                            (content phase: the cosocket transport), as bench/ours.lua does
--   GET /floor?url=URL&n=N   the floor: plain cosocket code, as lua-resty-http would do
--                            it, sending the same bytes (our request with its signature)
--                            over a pooled connection and reading status, headers and a
--                            Content-Length body
-- Each answers one JSON line: {"calls":N,"cpu_seconds":S,"seconds":W}, where cpu_seconds is
-- the worker's CPU time (os.clock: user + system of the worker process, which serves only
-- this request) over the N calls.
local cjson = require "cjson"
local common = require "bench.common"

local M = {}

local clients = {}

local function args()
  local a = ngx.req.get_uri_args()
  return a.url, tonumber(a.n)
end

local function report(n, c0, t0)
  ngx.update_time()
  ngx.say(cjson.encode{calls = n, cpu_seconds = os.clock() - c0, seconds = ngx.now() - t0})
end

function M.ours()
  local url, n = args()
  local iot = require "aliyun.iot"
  local client = clients[url]
  if not client then
    client = assert(iot.new{access_key_id = common.KEY_ID, access_key_secret = common.SECRET,
                            endpoint = url, qps = false, max_retries = 0})
    clients[url] = client
  end
  local params = {ProductKey = common.PRODUCT_KEY, ApplyId = 100000}
  ngx.update_time()
  local c0, t0 = os.clock(), ngx.now()
  for _ = 1, n do
    local res, err = client:query_batch_register_device_status(params)
    if not res then error(tostring(err)) end
    if res.Data.Status ~= "CREATE_SUCCESS" then error("unexpected answer") end
  end
  report(n, c0, t0)
end

-- The bytes our client sends for one call, captured once through a transport that keeps
-- the request and answers nothing (the floor then sends them as they are).
local function our_bytes(url)
  local iot = require "aliyun.iot"
  local captured
  local client = assert(iot.new{access_key_id = common.KEY_ID, access_key_secret = common.SECRET,
    endpoint = url, qps = false, max_retries = 0,
    transport = function(req)
      captured = req
      return nil, {code = "ConnectFailed", message = "captured", sent = false}
    end})
  client:query_batch_register_device_status{ProductKey = common.PRODUCT_KEY, ApplyId = 100000}
  local host = url:match("^http://([^/]+)")
  local lines = {"POST / HTTP/1.1", "Host: " .. host}
  for k, v in pairs(captured.headers) do lines[#lines + 1] = k .. ": " .. v end
  if not captured.headers["user-agent"] then -- the cosocket transport's own, same length
    lines[#lines + 1] = "User-Agent: aliyun-iot/0.1.0 ngx_lua/0.10.23 LuaJIT/2.1.0-beta3"
  end
  lines[#lines + 1] = "Content-Length: " .. #captured.body
  lines[#lines + 1] = "Connection: keep-alive"
  lines[#lines + 1] = ""
  lines[#lines + 1] = captured.body
  return table.concat(lines, "\r\n"), host:match("^(.-):(%d+)$")
end

function M.floor()
  local url, n = args()
  local text, host, port = our_bytes(url)
  port = tonumber(port)
  ngx.update_time()
  local c0, t0 = os.clock(), ngx.now()
  for _ = 1, n do
    local sock = ngx.socket.tcp()
    assert(sock:connect(host, port))
    assert(sock:send(text))
    local status = assert(sock:receive("*l"))
    if not status:find("^HTTP/1%.1 200") then error("floor: " .. status) end
    local len
    while true do
      local line = assert(sock:receive("*l"))
      if line == "" then break end
      local v = line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
      if v then len = tonumber(v) end
    end
    local body = assert(sock:receive(len))
    if #body ~= len then error("floor: short body") end
    sock:setkeepalive(60000, 16)
  end
  report(n, c0, t0)
end

return M
