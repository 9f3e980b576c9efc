-- A throw-away nginx (with the Lua module) on 127.0.0.1 for the transport specs: a
-- generated config in a temporary prefix, plain HTTP and HTTPS (self-signed certificate
-- for 127.0.0.1) on free ports. Locations:
--   /echo      JSON {method, uri, args, body, headers (lower-case), connection, now}
--   /sleep?s=N answers after N seconds
--   /big?n=N   a body of N bytes;  /status?code=N  an empty answer with that status
--   /drop      closes the connection without answering
--   /truncate  announces 1000 bytes, sends 10, closes
--   /act_then_drop?key=K  counts a hit for K, then closes without answering; /hits?key=K
-- Also: free_port() (a port nothing listens on) and silent_server() (accepts TCP
-- connections through the kernel backlog, never reads nor answers).
local socket = require "socket"

local M = {}

local function sh(cmd)
  local ok, how, code = os.execute(cmd)
  -- Lua 5.1/LuaJIT return a number, 5.2+ return true/nil, "exit", code.
  if ok == true or ok == 0 then return true end
  error(("command failed (%s %s): %s"):format(tostring(how), tostring(code), cmd))
end

function M.free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- A listening socket that is never accepted: connects succeed, nothing is ever answered.
function M.silent_server()
  local s = assert(socket.tcp())
  assert(s:bind("127.0.0.1", 0))
  assert(s:listen(64))
  local _, port = s:getsockname()
  return { url = ("http://127.0.0.1:%d/"):format(port), close = function() s:close() end }
end

local CONF = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
daemon on;
pid %PREFIX%/nginx.pid;
error_log %PREFIX%/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path %PREFIX%/tmp;
  lua_package_path "/usr/share/lua/5.1/?.lua;;";
  keepalive_requests 10000;
  lua_shared_dict hits 1m;
  keepalive_timeout 60s;
  server {
    listen 127.0.0.1:%HTTP%;
    listen 127.0.0.1:%HTTPS% ssl;
    ssl_certificate %PREFIX%/cert.pem;
    ssl_certificate_key %PREFIX%/key.pem;
    location /echo {
      content_by_lua_block {
        ngx.req.read_body()
        ngx.update_time()
        local h = {}
        for k, v in pairs(ngx.req.get_headers(100)) do h[k:lower()] = v end
        ngx.header["Content-Type"] = "application/json"
        ngx.header["X-Echo-Mixed-Case"] = "Yes"
        ngx.say(require("cjson").encode{
          method = ngx.req.get_method(), uri = ngx.var.uri, args = ngx.var.args or "",
          body = ngx.req.get_body_data() or "", headers = h,
          connection = tonumber(ngx.var.connection),
          now = ngx.now(),
        })
      }
    }
    location /sleep {
      content_by_lua_block {
        ngx.sleep(tonumber(ngx.var.arg_s) or 10)
        ngx.say("slept")
      }
    }
    location /big {
      content_by_lua_block {
        local n = tonumber(ngx.var.arg_n)
        local chunk = string.rep("x", 65536)
        ngx.header["Content-Length"] = ngx.var.arg_cl and n or nil
        while n > 0 do
          local k = math.min(n, #chunk)
          ngx.print(chunk:sub(1, k))
          n = n - k
        end
      }
    }
    location /status {
      content_by_lua_block { ngx.exit(tonumber(ngx.var.arg_code)) }
    }
    location /act_then_drop {
      content_by_lua_block {
        ngx.shared.hits:incr(ngx.var.arg_key, 1, 0)
        ngx.exit(444)
      }
    }
    location /hits {
      content_by_lua_block { ngx.print(ngx.shared.hits:get(ngx.var.arg_key) or 0) }
    }
    location /drop {
      content_by_lua_block { ngx.req.read_body() ngx.exit(444) }
    }
    location /truncate {
      content_by_lua_block {
        ngx.header["Content-Length"] = 1000
        ngx.print(string.rep("y", 10))
        ngx.flush(true)
        ngx.exit(444)
      }
    }
  }
}
]]

-- Starts the server: returns {http = "http://127.0.0.1:P", https = "https://127.0.0.1:Q",
-- ca_file = path of the self-signed certificate, stop = function}.
function M.start()
  local prefix = os.tmpname()
  os.remove(prefix)
  sh(("mkdir -p %s/tmp && chmod 755 %s"):format(prefix, prefix))
  sh(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 " ..
      "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout %s/key.pem " ..
      "-out %s/cert.pem >/dev/null 2>&1"):format(prefix, prefix))
  local http_port, https_port = M.free_port(), M.free_port()
  local conf = CONF:gsub("%%(%u+)%%", { PREFIX = prefix, HTTP = tostring(http_port),
                                        HTTPS = tostring(https_port) })
  local f = assert(io.open(prefix .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  sh(("nginx -p %s -c %s/nginx.conf -e %s/error.log"):format(prefix, prefix, prefix))
  -- Wait until it accepts connections.
  for _ = 1, 200 do
    local c = socket.connect("127.0.0.1", http_port)
    if c then c:close() break end
    socket.sleep(0.02)
  end
  local server = {
    http = ("http://127.0.0.1:%d"):format(http_port),
    https = ("https://127.0.0.1:%d"):format(https_port),
    ca_file = prefix .. "/cert.pem",
    prefix = prefix,
  }
  function server.stop()
    os.execute(("nginx -p %s -c %s/nginx.conf -e %s/error.log -s stop 2>/dev/null")
      :format(prefix, prefix, prefix))
    for _ = 1, 100 do
      local p = io.open(prefix .. "/nginx.pid")
      if not p then break end
      p:close()
      socket.sleep(0.02)
    end
    os.execute(("rm -rf %s"):format(prefix))
  end
  return server
end

return M
