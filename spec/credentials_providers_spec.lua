-- The credentials providers that fetch (STS AssumeRole and AssumeRoleWithOIDC, ECS
-- instance metadata, a credentials URI), each against the emulator over real HTTP; their
-- refresh; the default chain's order, CLI profile modes and INI types in child
-- interpreters (spec/support/credentials_child.lua); and the aggregated errors.
local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"
local shell = require "spec.support.shell"
local child = require "spec.support.credentials_child"
local q = shell.quote

local PK = "a1TestPK001"
local OIDC_TOKEN = "oidcTokenXYZ123"
local ROLE = "acs:ram::1234567890:role/provisioner"
local OIDC_PROVIDER = "acs:ram::1234567890:oidc-provider/ack-rrsa"
local SECRETS = {"testsecret", OIDC_TOKEN, "cliSecretXYZ123", "iniSecretXYZ123", "CAIS"}

local runner = child.new(SECRETS)
local emu, base, home

local function write(path, text)
  shell.write(path, text)
  assert(shell.ok("chmod 600 " .. q(path)))
end

-- A client whose credentials come from `cfg` (a credentials table) through the emulator.
local function client(cfg, extra)
  local o = {endpoint = emu.endpoint, credentials = cfg, sts_endpoint = emu.endpoint,
             metadata_endpoint = base, qps = false}
  for k, v in pairs(extra or {}) do o[k] = v end
  return iot.new(o)
end

local function call(c) return c:query_device{ProductKey = PK} end

local function requests(action)
  local out = {}
  for _, r in ipairs(emu:requests()) do
    if r.action == action then out[#out + 1] = r end
  end
  return out
end

local function assert_no_secret(text) runner.assert_no_secret(tostring(text)) end

local RAM_ROLE = {type = "ram_role_arn", access_key_id = "testid",
                  access_key_secret = "testsecret", role_arn = ROLE}

describe("credentials providers against the emulator", function()
  setup(function()
    emu = emulator.start{async_delay = 0, oidc_token = OIDC_TOKEN}
    base = emu.endpoint:gsub("/$", "")
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
    emu:set{credentials_ttl = false, credentials_fail = false, imds = "v2", oidc_token = OIDC_TOKEN}
  end)

  it("ram_role_arn: AssumeRole signed with the source keys; IoT calls carry the STS key and token", function()
    local c = assert(client(RAM_ROLE))
    assert(call(c))
    local ar = requests("AssumeRole")
    assert.are.equal(1, #ar)
    assert.are.same({200, "V1", "testid", ROLE, "3600"}, {ar[1].status, ar[1].signature,
      ar[1].params.AccessKeyId, ar[1].params.RoleArn, ar[1].params.DurationSeconds})
    assert.matches("^aliyun%-iot%-%d+$", ar[1].params.RoleSessionName)
    local qd = requests("QueryDevice")[1]
    assert.matches("^STS%.", qd.params.AccessKeyId)
    assert.are.equal("<redacted>", qd.params.SecurityToken)
    -- the issued token is reused, not assumed again per call
    assert(call(c))
    assert.are.equal(1, #requests("AssumeRole"))
  end)

  it("ram_role_arn: a refusal is CredentialsError naming STS's code, never a secret", function()
    local cfg = {}
    for k, v in pairs(RAM_ROLE) do cfg[k] = v end
    cfg.access_key_secret = "wrongSecretXYZ"
    local c = assert(client(cfg))
    local res, err = call(c)
    assert.is_nil(res)
    assert.are.equal("CredentialsError", err.code)
    assert.matches("SignatureDoesNotMatch", err.message, 1, true)
    assert.is_nil(tostring(err):find("wrongSecretXYZ", 1, true))
    assert.are.equal(0, #requests("QueryDevice"))
  end)

  it("ram_role_arn: bad parameters are InvalidCredentials before any request", function()
    for _, bad in ipairs{{role_session_name = "x"}, {duration_seconds = 600},
                         {role_arn = ""}, {policy = ("p"):rep(1025)}} do
      local cfg = {}
      for k, v in pairs(RAM_ROLE) do cfg[k] = v end
      for k, v in pairs(bad) do cfg[k] = v end
      local c, err = client(cfg)
      assert.is_nil(c)
      assert.are.equal("InvalidCredentials", err.code)
    end
    assert.has_error(function() client{type = "ram_role", role_arn = ROLE} end)
    assert.has_error(function() client{type = "access_key", access_key_id = "a", nope = 1} end)
    assert.are.same({}, emu:requests())
  end)

  it("oidc_role_arn: AssumeRoleWithOIDC unsigned, the token file read again at each refresh", function()
    local file = home .. "/oidc-token"
    write(file, OIDC_TOKEN .. "\n")
    emu:set{credentials_ttl = 1}
    local c = assert(client{type = "oidc_role_arn", role_arn = ROLE,
      oidc_provider_arn = OIDC_PROVIDER, oidc_token_file_path = file})
    assert(call(c))
    local r = requests("AssumeRoleWithOIDC")
    assert.are.equal(1, #r)
    assert.is_nil(r[1].params.AccessKeyId)
    assert.is_nil(r[1].params.Signature)
    assert.are.equal("<redacted>", r[1].params.OIDCToken)
    assert.are.same({ROLE, OIDC_PROVIDER}, {r[1].params.RoleArn, r[1].params.OIDCProviderArn})
    -- the platform rotates the token: the next fetch must read the new one
    emu:set{oidc_token = "rotatedTokenXYZ"}
    write(file, "rotatedTokenXYZ\n")
    require("aliyun.iot.core").sleep(2.1) -- the 1 s credentials have expired
    assert(call(c))
    assert.are.equal(2, #requests("AssumeRoleWithOIDC"))
    emu:set{oidc_token = "someOtherToken"}
    require("aliyun.iot.core").sleep(2.1)
    local res, err = call(c)
    assert.is_nil(res)
    assert.are.equal("CredentialsError", err.code)
    assert.matches("AuthenticationFail.OIDCToken.Invalid", err.message, 1, true)
    assert_no_secret(err)
  end)

  it("ecs_ram_role: IMDSv2 token, role discovered, credentials; v1 fallback unless disabled", function()
    local c = assert(client{type = "ecs_ram_role"})
    assert(call(c))
    local token = requests("/latest/api/token")
    assert.are.equal(1, #token)
    local list = requests("/latest/meta-data/ram/security-credentials/")
    local creds = requests("/latest/meta-data/ram/security-credentials/EmulatorEcsRole")
    assert.are.same({"given", "given"}, {list[1].params.token, creds[1].params.token})
    -- a named role is not looked up
    emu:reset()
    assert(call(assert(client{type = "ecs_ram_role", role_name = "EmulatorEcsRole"})))
    assert.are.equal(0, #requests("/latest/meta-data/ram/security-credentials/"))
    -- v1 only: the token PUT is refused, the GETs go without one
    emu:reset()
    emu:set{imds = "v1"}
    assert(call(assert(client{type = "ecs_ram_role"})))
    assert.are.equal("none", requests("/latest/meta-data/ram/security-credentials/EmulatorEcsRole")[1]
      .params.token)
    local res, err = call(assert(client{type = "ecs_ram_role", disable_imds_v1 = true}))
    assert.is_nil(res)
    assert.are.equal("CredentialsError", err.code)
    assert.matches("IMDSv1 is disabled", err.message, 1, true)
    -- an unknown role: the metadata service's 404, named
    emu:set{imds = "v2"}
    res, err = call(assert(client{type = "ecs_ram_role", role_name = "NoSuchRole"}))
    assert.is_nil(res)
    assert.matches("refused role NoSuchRole: HTTP 404", err.message, 1, true)
  end)

  it("credentials_uri: read, and garbage or a refusal is CredentialsError", function()
    assert(call(assert(client{type = "credentials_uri",
      credentials_uri = emu.endpoint .. "credentials-uri"})))
    assert.are.equal(1, #requests("/credentials-uri"))
    local res, err = call(assert(client{type = "credentials_uri",
      credentials_uri = emu.endpoint .. "latest/api/token"}))
    assert.is_nil(res)
    assert.are.equal("CredentialsError", err.code)
    assert.matches("not a JSON object", err.message, 1, true)
    emu:set{credentials_fail = true}
    res, err = call(assert(client{type = "credentials_uri",
      credentials_uri = emu.endpoint .. "credentials-uri"}))
    assert.is_nil(res)
    assert.matches("HTTP 500", err.message, 1, true)
    assert.has_error(function() client{type = "credentials_uri", credentials_uri = 5} end)
    local c, e = client{type = "credentials_uri", credentials_uri = "file:///etc/passwd"}
    assert.is_nil(c)
    assert.are.equal("InvalidCredentials", e.code)
  end)

  it("fetched credentials are secrets: redacted from an answer that quotes them", function()
    -- a body changed on the way: the emulator's SignatureDoesNotMatch quotes its string to
    -- sign, which holds the SecurityToken the client sent
    local logs = {}
    local c = assert(client({type = "credentials_uri", credentials_uri = emu.endpoint .. "credentials-uri"},
      {transport = function(req)
        req.body = (req.body or "") .. "&Tampered=1"
        return iot.transports.curl(req)
      end, max_retries = 0, logger = function(_, msg) logs[#logs + 1] = msg end}))
    local res, err = call(c)
    assert.is_nil(res)
    assert.are.equal("SignatureDoesNotMatch", err.code)
    local creds = c.creds.get()
    local text = tostring(err) .. table.concat(logs, "\n")
    assert.matches("SecurityToken", text, 1, true)
    assert.is_nil(text:find(creds.security_token, 1, true))
    assert.is_nil(text:find(creds.access_key_secret, 1, true))
  end)

  it("expired STS credentials are refreshed exactly once under 50 concurrent calls", function()
    emu:set{credentials_ttl = 2}
    local c = assert(client(RAM_ROLE))
    assert(call(c))
    require("aliyun.iot.core").sleep(2.2) -- expired
    local params = {}
    for i = 1, 50 do params[i] = {ProductKey = PK} end
    local results, errs = c:call_many("QueryDevice", params, nil, 50)
    for i = 1, 50 do assert(results[i], tostring(errs[i])) end
    assert.are.equal(2, #requests("AssumeRole"))
    -- the expired key was never sent after its expiry: every call used the new one
    for _, r in ipairs(requests("QueryDevice")) do assert.are.equal(200, r.status) end
  end)

  it("metadata: a failed refresh keeps the credentials in hand while they are valid", function()
    emu:set{credentials_ttl = 8}
    local logs = {}
    local c = assert(client({type = "ecs_ram_role"}, {logger = function(level, msg)
      logs[#logs + 1] = level .. " " .. msg
    end}))
    assert(call(c))
    emu:set{credentials_fail = true}
    require("aliyun.iot.core").sleep(6.2) -- inside the 2 s margin, before expiry
    assert(call(c))
    local creds = requests("/latest/meta-data/ram/security-credentials/EmulatorEcsRole")
    assert.are.same({200, 500}, {creds[1].status, creds[2].status})
    local warned = false
    for _, l in ipairs(logs) do
      if l:find("^warn .*keeping the current credentials") then warned = true end
      assert_no_secret(l)
    end
    assert.is_true(warned)
  end)
end)

describe("the default chain (child interpreters) against the emulator", function()
  local ENV = {ALIBABA_CLOUD_ACCESS_KEY_ID = "testid", ALIBABA_CLOUD_ACCESS_KEY_SECRET = "testsecret"}

  setup(function()
    emu = emulator.start{async_delay = 0, oidc_token = OIDC_TOKEN}
    base = emu.endpoint:gsub("/$", "")
  end)
  teardown(function() emu:stop() end)
  before_each(function()
    home = os.tmpname()
    os.remove(home)
    assert(shell.ok("mkdir -p " .. q(home .. "/.aliyun") .. " " .. q(home .. "/.alibabacloud")))
    write(home .. "/token", OIDC_TOKEN)
  end)
  after_each(function() os.execute("rm -rf " .. q(home)) end)

  local function env(extra)
    local e = {ALIBABA_CLOUD_STS_ENDPOINT = emu.endpoint}
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  local function cli(current, profiles)
    write(home .. "/.aliyun/config.json",
      require("cjson").encode{current = current, profiles = profiles})
  end

  local OIDC_ENV = {ALIBABA_CLOUD_ROLE_ARN = ROLE, ALIBABA_CLOUD_OIDC_PROVIDER_ARN = OIDC_PROVIDER}

  it("walks the official order: env, OIDC, CLI profile, INI, ECS, URI", function()
    local all = env{ALIBABA_CLOUD_OIDC_TOKEN_FILE = home .. "/token",
      ALIBABA_CLOUD_ECS_METADATA_ENDPOINT = base,
      ALIBABA_CLOUD_CREDENTIALS_URI = emu.endpoint .. "credentials-uri"}
    for k, v in pairs(ENV) do all[k] = v end
    for k, v in pairs(OIDC_ENV) do all[k] = v end
    cli("default", {{name = "default", mode = "AK", access_key_id = "cliId",
                     access_key_secret = "cliSecretXYZ123"}})
    write(home .. "/.alibabacloud/credentials",
      "[default]\ntype = access_key\naccess_key_id = iniId\naccess_key_secret = iniSecretXYZ123\n")
    local order = {}
    local function step(drop)
      local r = runner.run(home, all)
      assert(r.ok, r.raw)
      order[#order + 1] = r.ok.name
      drop()
    end
    step(function() all.ALIBABA_CLOUD_ACCESS_KEY_ID, all.ALIBABA_CLOUD_ACCESS_KEY_SECRET = nil, nil end)
    step(function() all.ALIBABA_CLOUD_ROLE_ARN = nil end)
    step(function() all.ALIBABA_CLOUD_CLI_PROFILE_DISABLED = "true" end)
    step(function() os.remove(home .. "/.alibabacloud/credentials") end)
    step(function() all.ALIBABA_CLOUD_ECS_METADATA_DISABLED = "true" end)
    step(function() end)
    assert.are.same({"environment", "oidc", "cli_profile", "ini", "ecs_ram_role",
                     "credentials_uri"}, order)
  end)

  it("iot.credentials.chain() tells which provider answered, and the region rule", function()
    cli("default", {{name = "default", mode = "AK", access_key_id = "cliId",
                     access_key_secret = "cliSecretXYZ123", region_id = "cn-beijing"}})
    local r = runner.run(home, env(), true)
    assert.are.same({"cli_profile", "cn-beijing"}, {r.ok.name, r.ok.region})
    assert.matches("profile 'default'", r.ok.source, 1, true)
    r = runner.run(home, env{ALIBABA_CLOUD_REGION_ID = "ap-southeast-1"}, true)
    assert.are.equal("ap-southeast-1", r.ok.region)
    os.remove(home .. "/.aliyun/config.json")
    r = runner.run(home, env(ENV), true)
    assert.are.same({"environment", "cn-shanghai"}, {r.ok.name, r.ok.region})
  end)

  it("CLI profile modes: RamRoleArn, EcsRamRole, OIDC, ChainableRamRoleArn, CredentialsURI", function()
    local ak = {name = "src", mode = "AK", access_key_id = "testid", access_key_secret = "testsecret"}
    cli("ram", {ak,
      {name = "ram", mode = "RamRoleArn", access_key_id = "testid", access_key_secret = "testsecret",
       ram_role_arn = ROLE, ram_session_name = "", expired_seconds = 0},
      {name = "ecs", mode = "EcsRamRole", ram_role_name = "EmulatorEcsRole"},
      {name = "oidc", mode = "OIDC", ram_role_arn = ROLE, oidc_provider_arn = OIDC_PROVIDER,
       oidc_token_file = home .. "/token"},
      {name = "chain", mode = "ChainableRamRoleArn", source_profile = "ram", ram_role_arn = ROLE},
      {name = "uri", mode = "CredentialsURI", credentials_uri = emu.endpoint .. "credentials-uri"},
      {name = "loop1", mode = "ChainableRamRoleArn", source_profile = "loop2", ram_role_arn = ROLE},
      {name = "loop2", mode = "ChainableRamRoleArn", source_profile = "loop1", ram_role_arn = ROLE}})
    local e = env{ALIBABA_CLOUD_ECS_METADATA_ENDPOINT = base}
    for _, name in ipairs{"ram", "ecs", "oidc", "chain", "uri"} do
      e.ALIBABA_CLOUD_PROFILE = name
      local r = runner.run(home, e)
      assert(r.ok, r.raw)
      assert.matches("^STS%.", r.ok.id)
      assert.matches("profile '" .. name .. "'", r.ok.source, 1, true)
    end
    e.ALIBABA_CLOUD_PROFILE = "loop1"
    local r = runner.run(home, e)
    assert.are.equal("InvalidCredentials", r.err.code)
    assert.matches("loops back", r.err.text, 1, true)
  end)

  it("CLI profile mode External: the process's JSON, its failures named without its output", function()
    local function ext(name, json_or_cmd)
      return {name = name, mode = "External", process_command = json_or_cmd}
    end
    cli("ak", {
      ext("ak", [[printf '%s' '{"mode":"AK","access_key_id":"testid","access_key_secret":"testsecret"}']]),
      ext("sts", [[printf '%s' '{"mode":"StsToken","access_key_id":"STS.x","access_key_secret":"testsecret",]]
        .. [["sts_token":"tok","expiration":"2099-01-01T00:00:00Z"}']]),
      ext("fails", "echo notjson; exit 3"),
      ext("garbage", "echo testsecret")})
    local r = runner.run(home, env())
    assert.are.same({"testid", "cli_profile"}, {r.ok.id, r.ok.name})
    r = runner.run(home, env{ALIBABA_CLOUD_PROFILE = "sts"})
    assert.are.same({"STS.x", "tok"}, {r.ok.id, r.ok.token})
    r = runner.run(home, env{ALIBABA_CLOUD_PROFILE = "fails"})
    assert.are.equal("CredentialsError", r.err.code)
    -- Lua 5.1 and LuaJIT cannot see an exit status: the output (no JSON) fails it there
    local status_seen = not (child.LUA:find("5%.1") or child.LUA:find("jit"))
    assert.matches(status_seen and "process_command exited with status 3"
      or "process_command did not print a JSON object", r.err.text, 1, true)
    r = runner.run(home, env{ALIBABA_CLOUD_PROFILE = "garbage"})
    assert.are.equal("CredentialsError", r.err.code)
    assert.matches("did not print a JSON object", r.err.text, 1, true)
  end)

  it("ALIBABA_CLOUD_ROLE_ARN and ALIBABA_CLOUD_ROLE_SESSION_NAME fill a RAM role left out", function()
    write(home .. "/.alibabacloud/credentials", "[default]\ntype = ram_role_arn\n"
      .. "access_key_id = testid\naccess_key_secret = testsecret\n")
    local r = runner.run(home, env{ALIBABA_CLOUD_ROLE_ARN = ROLE,
      ALIBABA_CLOUD_ROLE_SESSION_NAME = "from-env"})
    assert.matches("^STS%.", r.ok.id)
    r = runner.run(home, env())
    assert.are.equal("NoCredentials", r.err.code)
    assert.matches("role_arn must be a non-empty line", r.err.text, 1, true)
  end)

  it("INI types ram_role_arn and oidc_role_arn; a section with enable = false is skipped", function()
    write(home .. "/.alibabacloud/credentials", table.concat({
      "[default]", "type = ram_role_arn", "access_key_id = testid", "access_key_secret = testsecret",
      "role_arn = " .. ROLE, "role_session_name = ci-job-42",
      "[oidc]", "type = oidc_role_arn", "role_arn = " .. ROLE, "oidc_provider_arn = " .. OIDC_PROVIDER,
      "oidc_token_file_path = " .. home .. "/token",
      "[off]", "enable = false", "type = access_key", "access_key_id = offId",
      "access_key_secret = iniSecretXYZ123"}, "\n"))
    local r = runner.run(home, env())
    assert.matches("^STS%.", r.ok.id)
    assert.are.equal("ini", r.ok.name)
    r = runner.run(home, env{ALIBABA_CLOUD_PROFILE = "oidc"})
    assert.matches("^STS%.", r.ok.id)
    r = runner.run(home, env{ALIBABA_CLOUD_PROFILE = "off"})
    assert.are.equal("NoCredentials", r.err.code)
    assert.matches("section [off] has enable = false", r.err.text, 1, true)
  end)

  it("one aggregated error: CredentialsError names the failing provider and those before it", function()
    local r = runner.run(home, env{ALIBABA_CLOUD_ECS_METADATA_DISABLED = "true",
      ALIBABA_CLOUD_CREDENTIALS_URI = emu.endpoint .. "latest/api/token"})
    assert.are.equal("CredentialsError", r.err.code)
    for _, part in ipairs{"credentials from credentials_uri failed", "not a JSON object",
        "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_OIDC_TOKEN_FILE", "config.json",
        ".alibabacloud/credentials", "disabled by ALIBABA_CLOUD_ECS_METADATA_DISABLED"} do
      assert.matches(part, r.err.text, 1, true)
    end
    -- nothing anywhere: NoCredentials names all six places
    r = runner.run(home, env())
    assert.are.equal("NoCredentials", r.err.code)
    for _, part in ipairs{"ALIBABA_CLOUD_ACCESS_KEY_ID", "OIDC", "config.json",
        ".alibabacloud/credentials", "ECS RAM role", "ALIBABA_CLOUD_CREDENTIALS_URI"} do
      assert.matches(part, r.err.text, 1, true)
    end
    -- a failing STS in the chain: the provider is not kept, the error says why
    r = runner.run(home, env{ALIBABA_CLOUD_ROLE_ARN = ROLE, ALIBABA_CLOUD_OIDC_PROVIDER_ARN =
      OIDC_PROVIDER, ALIBABA_CLOUD_OIDC_TOKEN_FILE = home .. "/missing"})
    assert.are.equal("CredentialsError", r.err.code)
    assert.matches("credentials from oidc failed: ", r.err.text, 1, true)
  end)
end)

describe("STS endpoint and AssumeRole parameters", function()
  local sts = require "aliyun.iot.credentials.sts"

  it("picks the STS endpoint: the hook, a region, the VPC one, else the central one", function()
    assert.are.equal("http://127.0.0.1:1/", sts.endpoint{sts_endpoint = "http://127.0.0.1:1"})
    assert.are.equal("https://sts.cn-hangzhou.aliyuncs.com/", sts.endpoint{sts_region = "cn-hangzhou"})
    assert.are.equal("https://sts-vpc.cn-hangzhou.aliyuncs.com/",
      sts.endpoint{sts_region = "cn-hangzhou", enable_vpc = true})
    assert.are.equal("https://sts.aliyuncs.com/", sts.endpoint{})
  end)

  it("sends Policy, ExternalId, RoleSessionName and DurationSeconds as given", function()
    local e = emulator.start{async_delay = 0}
    finally(function() e:stop() end)
    local c = assert(iot.new{endpoint = e.endpoint, sts_endpoint = e.endpoint, qps = false,
      credentials = {type = "ram_role_arn", access_key_id = "testid", access_key_secret = "testsecret",
        role_arn = ROLE, role_session_name = "ci-job-42", duration_seconds = 900,
        policy = '{"Version":"1"}', external_id = "ext-1"}})
    assert(c:query_device{ProductKey = PK})
    local ar
    for _, r in ipairs(e:requests()) do if r.action == "AssumeRole" then ar = r end end
    assert.are.same({"ci-job-42", "900", '{"Version":"1"}', "ext-1"}, {ar.params.RoleSessionName,
      ar.params.DurationSeconds, ar.params.Policy, ar.params.ExternalId})
  end)
end)
