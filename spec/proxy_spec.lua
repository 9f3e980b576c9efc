-- Proxies and the user agent in child interpreters (Lua cannot set
-- environment variables itself; issue 13). The emulator, an nginx, also serves as the
-- proxy: it answers the absolute-form request line a proxied client sends, so a client
-- whose endpoint host cannot be resolved gets through only by way of the proxy.
local emulator = require "aliyun.iot.emulator"
local shell = require "spec.support.shell"
local child = require "spec.support.credentials_child"
local q = shell.quote

local UNREACHABLE = "http://iot.cn-shanghai.unresolvable.invalid/"

local CHILD = [[
local iot = require "aliyun.iot"
local opts = {endpoint = arg[1], access_key_id = "testid", access_key_secret = "testsecret",
              qps = false, max_retries = 0, connect_timeout = 2}
if arg[2] ~= "" then opts.proxy = arg[2] end
if arg[3] ~= "" then
  opts.access_key_id, opts.access_key_secret = nil, nil
  opts.credentials = {type = "ecs_ram_role", metadata_endpoint = arg[3]}
end
local c = assert(iot.new(opts))
local res, err = c:query_device{ProductKey = "a1TestPK001"}
if res then print("OK") else print("ERR " .. err.code .. " " .. tostring(err.message)) end
]]

local emu, dir

local function run(env, endpoint, proxy, metadata)
  local vars = {"PATH=" .. q(os.getenv("PATH")), "HOME=" .. q(dir),
                "LUA_PATH=" .. q(os.getenv("LUA_PATH") or "lua/?.lua;;"),
                "LUA_CPATH=" .. q(os.getenv("LUA_CPATH") or ";;")}
  for k, v in pairs(env) do vars[#vars + 1] = k .. "=" .. q(v) end
  return (shell.capture("env -i " .. table.concat(vars, " ") .. " " .. child.LUA .. " "
    .. q(dir .. "/child.lua") .. " " .. q(endpoint) .. " " .. q(proxy or "") .. " "
    .. q(metadata or "") .. " 2>&1"):gsub("%s+$", ""))
end

local function last_query()
  local found
  for _, r in ipairs(emu:requests()) do if r.action == "QueryDevice" then found = r end end
  return found
end

describe("proxies (child interpreters)", function()
  setup(function()
    emu = emulator.start{async_delay = 0}
    dir = os.tmpname()
    os.remove(dir)
    assert(shell.ok("mkdir -p " .. q(dir)))
    shell.write(dir .. "/child.lua", CHILD)
  end)
  teardown(function()
    emu:stop()
    os.execute("rm -rf " .. q(dir))
  end)
  before_each(function() emu:reset() end)

  it("HTTP_PROXY and http_proxy carry the request; without them it cannot get through", function()
    assert.matches("^ERR ConnectFailed", run({}, UNREACHABLE))
    assert.are.equal("OK", run({HTTP_PROXY = emu.endpoint}, UNREACHABLE))
    assert.are.equal("OK", run({http_proxy = emu.endpoint}, UNREACHABLE))
    assert.truthy(last_query())
  end)

  it("NO_PROXY bypasses the proxy for the hosts it names", function()
    for _, np in ipairs{"unresolvable.invalid", ".unresolvable.invalid", "*",
                        "example.com, iot.cn-shanghai.unresolvable.invalid"} do
      assert.matches("^ERR ConnectFailed", run({HTTP_PROXY = emu.endpoint, NO_PROXY = np}, UNREACHABLE))
    end
    assert.are.equal("OK", run({HTTP_PROXY = emu.endpoint, no_proxy = "example.com"}, UNREACHABLE))
  end)

  it("the proxy option wins over the environment", function()
    assert.are.equal("OK", run({HTTP_PROXY = "http://127.0.0.1:9"}, UNREACHABLE, emu.endpoint))
    -- NO_PROXY included: libcurl's own reading of it must not undo the option
    assert.are.equal("OK", run({NO_PROXY = "*"}, UNREACHABLE, emu.endpoint))
    assert.are.equal("OK", run({no_proxy = "unresolvable.invalid"}, UNREACHABLE, emu.endpoint))
  end)

  it("HTTPS_PROXY is for https endpoints only", function()
    assert.matches("^ERR ConnectFailed", run({HTTPS_PROXY = emu.endpoint}, UNREACHABLE))
  end)

  it("the metadata endpoint never goes through a proxy", function()
    -- the proxy could answer for metadata.invalid; the provider must not ask it
    local out = run({HTTP_PROXY = emu.endpoint}, emu.endpoint, nil, "http://metadata.unresolvable.invalid")
    assert.matches("^ERR CredentialsError .*instance metadata unreachable", out)
  end)

  it("ALIBABA_CLOUD_USER_AGENT is appended to ours", function()
    assert.are.equal("OK", run({ALIBABA_CLOUD_USER_AGENT = "ci-job/7"}, emu.endpoint))
    assert.matches("^aliyun%-iot/%S+ .* ci%-job/7$", last_query().user_agent)
    assert.are.equal("OK", run({}, emu.endpoint))
    assert.matches("^aliyun%-iot/", last_query().user_agent)
    assert.is_nil(last_query().user_agent:find("ci-job", 1, true))
  end)
end)
