-- The credentials chain under hostile input (issue 13, break2): credentials that have
-- already expired, an External process_command that reads standard input, writes its
-- secrets to standard error or floods its output, and NO_PROXY patterns. Calls go to
-- the emulator over real HTTP; the CLI runs as a child process.
local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"
local shell = require "spec.support.shell"
local child = require "spec.support.credentials_child"
local q = shell.quote

local PK = "a1TestPK001"

local BIN = os.getenv("PWD") .. "/bin/aliyun-iot"
local SECRET = "procSecretXYZ123"

local emu, home

-- Runs the command with HOME = home, only `env`, `stdin` (a file) as its standard input
-- and `endpoint` (else the emulator's); returns exit code, stdout, stderr.
local function cli(args, stdin, env, endpoint)
  local vars = {"HOME=" .. q(home), "TMPDIR=" .. q(home), "PATH=" .. q(os.getenv("PATH")),
                "ALIBABA_CLOUD_ECS_METADATA_ENDPOINT=" .. child.NO_METADATA}
  for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. q(v) end
  local out, err = home .. "/stdout", home .. "/stderr"
  local code = shell.capture("env -i " .. table.concat(vars, " ") .. " " .. child.LUA .. " "
    .. q(BIN) .. " --endpoint " .. (endpoint or emu.endpoint) .. " " .. args .. " <" .. q(stdin or "/dev/null")
    .. " >" .. q(out) .. " 2>" .. q(err) .. "; echo $?")
  return tonumber(code), shell.read(out), shell.read(err)
end

-- A CLI config whose current profile runs `command` (mode External).
local function external(command)
  local path = home .. "/.aliyun/config.json"
  assert(shell.ok("mkdir -p " .. q(home .. "/.aliyun")))
  shell.write(path, require("cjson").encode{current = "ext", profiles = {
    {name = "ext", mode = "External", process_command = command}}})
  assert(shell.ok("chmod 600 " .. q(path)))
end

local AK = [[printf '{"mode":"AK","access_key_id":"testid","access_key_secret":"testsecret"}']]

local function requests(action)
  local n = 0
  for _, r in ipairs(emu:requests()) do
    if r.action == action then n = n + 1 end
  end
  return n
end

describe("credentials under hostile input", function()
  setup(function()
    emu = emulator.start{async_delay = 0}
    home = os.tmpname()
    os.remove(home)
    assert(shell.ok("mkdir -p " .. q(home)))
  end)
  teardown(function()
    emu:stop()
    os.execute("rm -rf " .. q(home))
  end)
  before_each(function()
    emu:reset()
    os.remove(home .. "/.aliyun/config.json")
  end)

  it("refuses credentials that have already expired, sending nothing with them", function()
    local calls = 0
    local c = assert(iot.new{endpoint = emu.endpoint, qps = false, credentials = function()
      calls = calls + 1
      return {access_key_id = "testid", access_key_secret = "testsecret",
              expiration = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() - 3600)}
    end})
    local res, err = c:query_device{ProductKey = PK}
    assert.is_nil(res)
    assert.are.equal("InvalidCredentials", err.code)
    assert.matches("already expired", err.message, 1, true)
    assert.matches("clock", err.message, 1, true)
    assert.are.equal(0, requests("QueryDevice"))
    -- an expiration that is not a number (cjson reads NaN) is no time either
    c = assert(iot.new{endpoint = emu.endpoint, qps = false, credentials = function()
      return {access_key_id = "testid", access_key_secret = "testsecret", expiration = 0 / 0}
    end})
    res, err = c:query_device{ProductKey = PK}
    assert.is_nil(res)
    assert.matches("not a time", err.message, 1, true)
    assert.are.equal(0, requests("QueryDevice"))
  end)

  it("keeps credentials in hand when a refresh answers expired ones", function()
    local calls = 0
    local c = assert(iot.new{endpoint = emu.endpoint, qps = false, credentials = function()
      calls = calls + 1
      -- first near their end (within the refresh margin), then already expired
      if calls == 1 then
        return {access_key_id = "testid", access_key_secret = "testsecret",
                expiration = os.time() + 100}
      end
      return {access_key_id = "expiredId", access_key_secret = "x", expiration = os.time() - 100}
    end})
    assert(c:query_device{ProductKey = PK})
    assert(c:query_device{ProductKey = PK})
    assert.are.equal(2, calls)
    assert.are.equal(2, requests("QueryDevice"))
  end)

  it("External: the command gets an empty standard input, not ours #lua54only", function()
    -- as the official CLI runs it; ours may be a names file or a terminal it would wait on
    local stdin = home .. "/stdin"
    shell.write(stdin, "lamp1\nlamp2\n")
    external("cat > " .. q(home .. "/eaten") .. "; " .. AK)
    local code, _, err = cli("export --product-key " .. PK, stdin)
    assert.are.equal(0, code, err)
    assert.are.equal("", shell.read(home .. "/eaten"))
  end)

  it("External: a failing command's standard error never reaches ours #lua54only", function()
    external("echo " .. SECRET .. " >&2; echo " .. SECRET .. "; exit 5")
    local code, _, err = cli("export --product-key " .. PK)
    assert.are.equal(1, code)
    assert.matches("CredentialsError", err, 1, true)
    assert.matches("process_command exited with status 5 (its standard error is not shown",
      err, 1, true)
    assert.is_nil(err:find(SECRET, 1, true), err)
  end)

  it("External: a flood of output is said to be one, not a signal #lua54only", function()
    external("yes " .. SECRET)
    local code, _, err = cli("export --product-key " .. PK)
    assert.are.equal(1, code)
    assert.matches("process_command printed more than 64 KiB", err, 1, true)
    assert.is_nil(err:find(SECRET, 1, true), err)
  end)

  it("NO_PROXY *.domain bypasses the proxy for hosts in the domain #lua54only", function()
    -- the emulator also answers as a proxy; the endpoint's host cannot be resolved, so
    -- the call gets through only by way of the proxy
    local env = {ALIBABA_CLOUD_ACCESS_KEY_ID = "testid", ALIBABA_CLOUD_ACCESS_KEY_SECRET = "testsecret",
                 HTTP_PROXY = emu.endpoint}
    local unreachable = "http://iot.cn-shanghai.unresolvable.invalid/"
    local code, _, err = cli("export --product-key " .. PK, nil, env, unreachable)
    assert.are.equal(0, code, err)
    env.NO_PROXY = "example.com, *.unresolvable.invalid"
    code, _, err = cli("export --product-key " .. PK, nil, env, unreachable)
    assert.are.equal(1, code)
    assert.matches("ConnectFailed", err, 1, true)
  end)

  it("NO_PROXY entries: domains, *.domain, host:port, [v6]:port, blocks; a URL's user is no host",
    function()
      local script = home .. "/np.lua"
      shell.write(script, [[
local curl = require "aliyun.iot.transport.curl"
for i = 1, #arg do io.write(curl.proxy_for(arg[i]) == "" and "direct" or "proxy", " ") end]])
      local urls = {"http://10.1.2.3/", "http://11.1.2.3/", "http://iot.example.com/",
        "http://example.com/", "http://example.org:8080/", "http://example.org/",
        "http://[::1]:8080/", "http://[::1]/", "http://u:p@svc.internal/", "http://svc.internal.x/"}
      for i, u in ipairs(urls) do urls[i] = q(u) end
      -- PATH kept: the interpreter may be a wrapper (tools/asan/lua) that needs it
      local out = shell.capture("env -i PATH=" .. q(os.getenv("PATH")) .. " HTTP_PROXY=http://127.0.0.1:9 NO_PROXY="
        .. q("10.0.0.0/8,*.example.com,example.org:8080,[::1]:8080,.internal")
        .. " LUA_PATH=" .. q(os.getenv("LUA_PATH") or "lua/?.lua;;") .. " LUA_CPATH="
        .. q(os.getenv("LUA_CPATH") or ";;") .. " " .. child.LUA .. " " .. q(script) .. " "
        .. table.concat(urls, " "))
      assert.are.equal("direct proxy direct direct direct proxy direct proxy direct proxy ", out)
    end)

  it("a credentials URI's user, password and query never show in the chain's error", function()
    local runner = child.new{"uriPassXYZ", "uriTokXYZ", "bob"}
    local r = runner.run(home, {ALIBABA_CLOUD_CREDENTIALS_URI =
      "http://bob:uriPassXYZ@127.0.0.1:9/creds?token=uriTokXYZ#frag"}) -- nothing listens
    assert.are.equal("CredentialsError", r.err.code)
    assert.matches("credentials URI http://127.0.0.1:9/creds: unreachable", r.err.text, 1, true)
  end)

  it("--profile naming a profile no file serves stops the chain before the ECS role #lua54only",
    function()
      -- on an ECS instance with a role, a typo or a broken profile must not act as the role
      local env = {ALIBABA_CLOUD_ECS_METADATA_ENDPOINT = (emu.endpoint:gsub("/$", ""))}
      assert(shell.ok("mkdir -p " .. q(home .. "/.aliyun")))
      shell.write(home .. "/.aliyun/config.json", require("cjson").encode{current = "work",
        profiles = {{name = "work", mode = "AK", access_key_id = "testid", access_key_secret = ""}}})
      assert(shell.ok("chmod 600 " .. q(home .. "/.aliyun/config.json")))
      for _, name in ipairs{"work", "wrok"} do
        local code, _, err = cli("--profile " .. name .. " export --product-key " .. PK, nil, env)
        assert.are.equal(2, code, err)
        assert.matches("InvalidCredentials: profile '" .. name .. "' (the profile option) is "
          .. "served by neither", err, 1, true)
      end
      assert.are.same({}, emu:requests())
      -- without the option the chain goes on as the official SDKs' does: the role answers
      local code, _, err = cli("export --product-key " .. PK, nil, env)
      assert.are.equal(0, code, err)
    end)

  it("judges a symlinked credentials file by the file it points to", function()
    local runner = child.new{"testsecret"}
    local target = home .. "/dotfiles-credentials"
    shell.write(target, "[default]\ntype = access_key\naccess_key_id = linkId\n"
      .. "access_key_secret = testsecret\n")
    assert(shell.ok("mkdir -p " .. q(home .. "/.alibabacloud") .. " && chmod 600 " .. q(target)
      .. " && ln -sf " .. q(target) .. " " .. q(home .. "/.alibabacloud/credentials")))
    local function warnings()
      local r, out = runner.run(home, {}), {}
      assert.are.equal("linkId", r.ok.id)
      for _, l in ipairs(r.logs) do
        if l.level == "warn" then out[#out + 1] = l.msg end
      end
      return out
    end
    assert.are.same({}, warnings())
    assert(shell.ok("chmod 640 " .. q(target)))
    local w = warnings()
    assert.are.equal(1, #w)
    assert.matches("has mode 640", w[1], 1, true)
  end)

  it("an STS region that is no region id is refused before it becomes a host name", function()
    for _, region in ipairs{"x.invalid/y?", "cn-hangzhou.x.invalid", ""} do
      local c, err = iot.new{endpoint = emu.endpoint, qps = false, credentials = {
        type = "ram_role_arn", access_key_id = "testid", access_key_secret = "testsecret",
        role_arn = "acs:ram::1234567890:role/provisioner", sts_region = region}}
      assert.is_nil(c)
      assert.are.equal("InvalidCredentials", err.code)
      assert.matches("sts_region (or ALIBABA_CLOUD_STS_REGION) must be a region id", err.message,
        1, true)
    end
    assert.are.same({}, emu:requests())
    -- with an endpoint given, the region names no host and is not checked
    assert(iot.new{endpoint = emu.endpoint, qps = false, sts_endpoint = emu.endpoint,
      credentials = {type = "ram_role_arn", access_key_id = "testid", access_key_secret = "testsecret",
        role_arn = "acs:ram::1234567890:role/provisioner", sts_region = "cn-hangzhou"}})
  end)
end)
