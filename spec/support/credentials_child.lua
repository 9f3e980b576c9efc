--- Runs the credentials chain in a child interpreter started with `env -i`, a given HOME
-- and exactly the variables a scenario sets (Lua cannot set environment variables
-- itself), and checks that no secret shows in what it prints.
--
--     local child = require("spec.support.credentials_child").new(SECRETS)
--     local r = child.run(home, {ALIBABA_CLOUD_PROFILE = "x"})
--     -- r.ok = {id=, secret=, token=, source=, name=} | r.err = {code=, text=}; r.logs
-- Unless the scenario sets it, ALIBABA_CLOUD_ECS_METADATA_ENDPOINT points at a closed
-- port, so that the chain's ECS step is skipped at once, whatever answers at
-- 100.100.100.200 on the test machine.
local shell = require "spec.support.shell"
local q = shell.quote

local M = {}

M.LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))

--- No metadata service: a port nothing listens on.
M.NO_METADATA = "http://127.0.0.1:9"

local CHILD = [[
local credentials = require "aliyun.iot.credentials"
local function logger(level, msg) io.write("LOG\t", level, "\t", msg, "\n") end
local p, err = credentials.resolve({}, logger)
if not p then io.write("ERR\t", err.code, "\t", tostring(err), "\n") os.exit(0) end
local c = p:get()
io.write("OK\t", c.access_key_id, "\t", c.access_key_secret, "\t",
  tostring(c.security_token), "\t", p.source, "\t", tostring(p.name), "\n")
]]

-- `iot.credentials.chain()`: which provider answers, and the region a client would use.
local CHAIN = [[
local iot = require "aliyun.iot"
local info, err = iot.credentials.chain()
if not info then io.write("ERR\t", err.code, "\t", tostring(err), "\n") os.exit(0) end
local c = assert(iot.new{})
io.write("OK\t-\t-\tnil\t", info.source, "\t", info.provider, "\t", c.region_id, "\n")
]]

local function fields(line)
  local f = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
  return f
end

--- A runner that refuses any of `secrets` in an error or log line.
-- @param secrets list of strings
function M.new(secrets)
  local runner = {}

  function runner.assert_no_secret(text)
    for _, s in ipairs(secrets) do
      assert(not text:find(s, 1, true), "secret " .. s .. " leaked in: " .. text)
    end
  end

  --- Runs the chain with HOME = home plus `env`; returns {ok = {id, secret, token, source,
  -- name} | nil, err = {code, text} | nil, logs = {{level, msg}}, raw = output}.
  -- With `chain = true` the child asks `iot.credentials.chain()` instead, and makes a client
  -- (r.ok.region: its region_id).
  function runner.run(home, env, chain)
    local script = home .. "/child.lua"
    shell.write(script, chain and CHAIN or CHILD)
    local vars = {"HOME=" .. q(home),
                  "LUA_PATH=" .. q(os.getenv("LUA_PATH") or "lua/?.lua;lua/?/init.lua;;"),
                  "LUA_CPATH=" .. q(os.getenv("LUA_CPATH") or ";;"),
                  "PATH=" .. q(os.getenv("PATH") or "/usr/bin:/bin")}
    env = env or {}
    if env.ALIBABA_CLOUD_ECS_METADATA_ENDPOINT == nil then
      vars[#vars + 1] = "ALIBABA_CLOUD_ECS_METADATA_ENDPOINT=" .. M.NO_METADATA
    end
    for k, v in pairs(env) do vars[#vars + 1] = k .. "=" .. q(v) end
    local out = shell.capture("env -i " .. table.concat(vars, " ") .. " " .. M.LUA .. " "
      .. q(script) .. " 2>&1")
    local r = {logs = {}, raw = out}
    for line in out:gmatch("[^\n]+") do
      local f = fields(line)
      if f[1] == "OK" then
        r.ok = {id = f[2], secret = f[3], token = f[4] ~= "nil" and f[4] or nil, source = f[5],
                name = f[6] ~= "nil" and f[6] or nil, region = f[7]}
      elseif f[1] == "ERR" then
        r.err = {code = f[2], text = f[3]}
        runner.assert_no_secret(line)
      elseif f[1] == "LOG" then
        r.logs[#r.logs + 1] = {level = f[2], msg = f[3]}
        runner.assert_no_secret(line)
      else
        error("unexpected child output: " .. out)
      end
    end
    assert(r.ok or r.err, "child printed no result: " .. out)
    return r
  end
  return runner
end

return M
