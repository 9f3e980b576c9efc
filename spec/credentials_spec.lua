-- Credentials: explicit options and user functions in process; the environment / CLI
-- config / INI chain in a child interpreter started with `env -i`, a temporary HOME and
-- exactly the variables a scenario sets (Lua cannot set environment variables itself).
local credentials = require "aliyun.iot.credentials"

-- Every secret a scenario may hold; none may show in an error or a log line.
local SECRETS = {"envSecretXYZ123", "envTokenXYZ123", "cliSecretXYZ123", "cliTokenXYZ123",
                 "iniSecretXYZ123", "optSecretXYZ123", "fnSecretXYZ123", "fnTokenXYZ123"}

local shell = require "spec.support.shell"
local child = require "spec.support.credentials_child"
local q = shell.quote
local LUA = child.LUA
local runner = child.new(SECRETS)
local assert_no_secret = runner.assert_no_secret

local function write(path, text, mode)
  shell.write(path, text)
  assert(shell.ok("chmod " .. (mode or "600") .. " " .. q(path)))
end

local home

local function run(env) return runner.run(home, env) end

local function warnings(r)
  local w = {}
  for _, l in ipairs(r.logs) do if l.level == "warn" then w[#w + 1] = l.msg end end
  return w
end

local function cli_config(current, profiles, mode)
  write(home .. "/.aliyun/config.json", require("cjson").encode{
    current = current, profiles = profiles}, mode)
end

local function ini(text, mode, path)
  write(path or home .. "/.alibabacloud/credentials", text, mode)
end

local ENV = {ALIBABA_CLOUD_ACCESS_KEY_ID = "envId", ALIBABA_CLOUD_ACCESS_KEY_SECRET = "envSecretXYZ123"}
local AK = {name = "default", mode = "AK", access_key_id = "cliId",
            access_key_secret = "cliSecretXYZ123"}
local INI = "# comment\n[default]\ntype = access_key\n  access_key_id=iniId  \n"
  .. "; another comment\naccess_key_secret =   iniSecretXYZ123\r\n"

describe("credentials chain (child interpreter " .. LUA .. ")", function()
  before_each(function()
    home = os.tmpname()
    os.remove(home)
    assert(os.execute("mkdir -p " .. q(home .. "/.aliyun") .. " " .. q(home .. "/.alibabacloud")))
  end)
  after_each(function()
    os.execute("rm -rf " .. q(home))
  end)

  it("reads the environment, with and without a security token", function()
    local r = run(ENV)
    assert.are.same({id = "envId", secret = "envSecretXYZ123", source = "environment",
                      name = "environment"}, r.ok)
    local env = {ALIBABA_CLOUD_SECURITY_TOKEN = "envTokenXYZ123"}
    for k, v in pairs(ENV) do env[k] = v end
    r = run(env)
    assert.are.equal("envTokenXYZ123", r.ok.token)
  end)

  it("refuses a security token with CR or LF from the environment", function()
    for _, token in ipairs{"envTokenXYZ123\r\nX-Evil: 1", "envTokenXYZ123\n"} do
      local env = {ALIBABA_CLOUD_SECURITY_TOKEN = token}
      for k, v in pairs(ENV) do env[k] = v end
      local r = run(env)
      assert.is_nil(r.ok)
      assert.are.equal("InvalidCredentials", r.err.code)
    end
  end)

  it("refuses a CLI config sts_token with CR or LF", function()
    cli_config("default", {{name = "default", mode = "StsToken", access_key_id = "cliId",
      access_key_secret = "cliSecretXYZ123", sts_token = "cliTokenXYZ123\r\nX-Evil: 1"}})
    local r = run()
    assert.is_nil(r.ok)
    assert.are.equal("InvalidCredentials", r.err.code)
  end)

  it("reads the CLI config's current profile in AK mode", function()
    cli_config("default", {AK})
    local r = run()
    assert.are.equal("cliId", r.ok.id)
    assert.are.equal("cliSecretXYZ123", r.ok.secret)
    assert.is_nil(r.ok.token)
    assert.matches("profile 'default'", r.ok.source, 1, true)
    assert.are.same({}, warnings(r))
  end)

  it("reads a StsToken profile and prefers ALIBABA_CLOUD_PROFILE over current", function()
    cli_config("default", {AK, {name = "sts", mode = "StsToken", access_key_id = "stsId",
      access_key_secret = "cliSecretXYZ123", sts_token = "cliTokenXYZ123"}})
    local r = run{ALIBABA_CLOUD_PROFILE = "sts"}
    assert.are.same({"stsId", "cliTokenXYZ123"}, {r.ok.id, r.ok.token})
    cli_config("sts", {AK, {name = "sts", mode = "StsToken", access_key_id = "stsId",
      access_key_secret = "cliSecretXYZ123", sts_token = "cliTokenXYZ123"}})
    r = run()
    assert.are.equal("stsId", r.ok.id)
    r = run{ALIBABA_CLOUD_PROFILE = "default"}
    assert.are.equal("cliId", r.ok.id)
  end)

  it("skips the CLI config when ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true", function()
    cli_config("default", {AK})
    ini(INI)
    assert.are.equal("iniId", run{ALIBABA_CLOUD_CLI_PROFILE_DISABLED = "true"}.ok.id)
    assert.are.equal("cliId", run{ALIBABA_CLOUD_CLI_PROFILE_DISABLED = "false"}.ok.id)
  end)

  it("reads the INI file's default or named section, at its default or given path", function()
    ini(INI .. "[work]\ntype = access_key\naccess_key_id = workId\n"
      .. "access_key_secret = iniSecretXYZ123\n[ram]\ntype = ecs_ram_role\nrole_name = r\n")
    local r = run()
    assert.are.same({id = "iniId", secret = "iniSecretXYZ123", name = "ini",
      source = "credentials file " .. home .. "/.alibabacloud/credentials (section [default])"},
      r.ok)
    assert.are.equal("workId", run{ALIBABA_CLOUD_PROFILE = "work"}.ok.id)
    -- a section naming the ECS RAM role, with no metadata service: that provider failed
    r = run{ALIBABA_CLOUD_PROFILE = "ram"}
    assert.are.equal("CredentialsError", r.err.code)
    assert.matches("credentials from ini failed: ", r.err.text, 1, true)
    assert.matches("section [ram]", r.err.text, 1, true)
    ini("[default]\ntype = access_key\naccess_key_id = otherId\naccess_key_secret = iniSecretXYZ123\n",
      "600", home .. "/other.ini")
    assert.are.equal("otherId", run{ALIBABA_CLOUD_CREDENTIALS_FILE = home .. "/other.ini"}.ok.id)
  end)

  it("refuses half a key pair in the environment rather than falling back to a file", function()
    ini(INI)
    local r = run{ALIBABA_CLOUD_ACCESS_KEY_ID = "envId"}
    assert.are.equal("InvalidCredentials", r.err.code)
    assert.matches("ALIBABA_CLOUD_ACCESS_KEY_SECRET not set", r.err.text, 1, true)
  end)

  it("takes the environment before the CLI config, and the CLI config before the INI file", function()
    cli_config("default", {AK})
    ini(INI)
    assert.are.equal("envId", run(ENV).ok.id)
    assert.are.equal("cliId", run().ok.id)
    os.remove(home .. "/.aliyun/config.json")
    assert.are.equal("iniId", run().ok.id)
  end)

  it("warns about a credentials file readable by group or others, naming file and mode", function()
    cli_config("default", {AK}, "644")
    local r = run()
    local w = warnings(r)
    assert.are.equal(1, #w)
    assert.matches(home .. "/.aliyun/config.json", w[1], 1, true)
    assert.matches("mode 644", w[1], 1, true)
    assert.is_nil(w[1]:find("cliId", 1, true))
    cli_config("default", {AK}, "600")
    assert.are.same({}, warnings(run()))

    ini(INI, "640")
    r = run{ALIBABA_CLOUD_CLI_PROFILE_DISABLED = "true"}
    assert.are.equal("iniId", r.ok.id)
    assert.matches("credentials file " .. home .. "/.alibabacloud/credentials has mode 640",
      warnings(r)[1], 1, true)
    ini(INI, "600")
    assert.are.same({}, warnings(run{ALIBABA_CLOUD_CLI_PROFILE_DISABLED = "true"}))
  end)

  it("says a CLI config with a syntax error is not valid JSON, and where, never 'no profiles'",
     function()
    write(home .. "/.aliyun/config.json",
      '{"current": "default", "profiles": [{"name": "default", "mode": "AK",\n'
      .. '"access_key_id": "cliId", "access_key_secret": "cliSecretXYZ123",}]}', "600")
    local r = run()
    assert.are.equal("NoCredentials", r.err.code)
    assert.matches(home .. "/.aliyun/config.json (not valid JSON: ", r.err.text, 1, true)
    assert.matches("at character %d+", r.err.text)
    assert.is_nil(r.err.text:find("no profiles", 1, true))
  end)

  it("reports NoCredentials listing every place it looked", function()
    local r = run()
    assert.are.equal("NoCredentials", r.err.code)
    for _, place in ipairs{"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        home .. "/.aliyun/config.json", home .. "/.alibabacloud/credentials"} do
      assert.matches(place, r.err.text, 1, true)
    end
    -- Half-configured places say what is missing, and still never show a secret.
    cli_config("default", {{name = "default", mode = "AK", access_key_id = "cliId"},
      {name = "x", mode = "CloudSSO"}})
    ini("[default]\ntype = access_key\naccess_key_secret = iniSecretXYZ123\n")
    r = run{ALIBABA_CLOUD_ACCESS_KEY_SECRET = "envSecretXYZ123"}
    assert.are.equal("InvalidCredentials", r.err.code)
    assert.matches("ALIBABA_CLOUD_ACCESS_KEY_ID not set", r.err.text, 1, true)
    r = run()
    assert.are.equal("NoCredentials", r.err.code)
    assert.matches("profile 'default' lacks access_key_id or access_key_secret", r.err.text, 1, true)
    assert.matches("section [default] lacks", r.err.text, 1, true)
    r = run{ALIBABA_CLOUD_PROFILE = "x"}
    assert.matches("mode CloudSSO, which is not supported", r.err.text, 1, true)
    assert.matches("no section [x]", r.err.text, 1, true)
  end)
end)

describe("credentials from options", function()
  local logs, logger
  before_each(function()
    logs = {}
    logger = function(level, msg) logs[#logs + 1] = level .. " " .. msg end
  end)
  after_each(function()
    for _, line in ipairs(logs) do assert_no_secret(line) end
  end)

  -- issue 17 changed this: explicit keys used to win silently over a credentials function
  it("refuses explicit keys together with a credentials function", function()
    for _, o in ipairs{{access_key_id = "optId", access_key_secret = "optSecretXYZ123"},
                       {security_token = "t"}, {access_key_id = "optId"}} do
      o.credentials = function() error("must not be called") end
      local p, err = credentials.resolve(o, logger)
      assert.is_nil(p)
      assert.are.equal("InvalidCredentials", err.code)
      assert_no_secret(tostring(err))
    end
  end)

  it("refuses a SecurityToken or AccessKeyId with NUL, CR or LF from a function", function()
    for _, c in ipairs{{access_key_id = "id", access_key_secret = "fnSecretXYZ123",
                        security_token = "fnTokenXYZ123\r\nX-Evil: 1"},
                       {access_key_id = "id\n", access_key_secret = "fnSecretXYZ123"},
                       {access_key_id = "id", access_key_secret = "fnSecretXYZ123",
                        security_token = "fnTokenXYZ123\0"}} do
      local p = assert(credentials.resolve({credentials = function() return c end}, logger))
      local got, err = p:get()
      assert.is_nil(got)
      assert.are.equal("InvalidCredentials", err.code)
      assert_no_secret(tostring(err))
    end
  end)

  it("rejects incomplete explicit keys without showing them", function()
    local p, err = credentials.resolve({access_key_secret = "optSecretXYZ123"}, logger)
    assert.is_nil(p)
    assert.are.equal("InvalidCredentials", err.code)
    assert_no_secret(tostring(err))
    p, err = credentials.resolve({security_token = "fnTokenXYZ123"}, logger)
    assert.is_nil(p)
    assert.are.equal("InvalidCredentials", err.code)
    assert_no_secret(tostring(err))
  end)

  it("raises on options of the wrong type", function()
    assert.has_error(function() credentials.resolve({access_key_id = 1}) end)
    assert.has_error(function() credentials.resolve({credentials = {}}) end)
    assert.has_error(function() credentials.resolve("x") end)
  end)

  it("builds errors with the given constructor", function()
    local made
    local _, err = credentials.resolve({access_key_id = "a"}, nil,
      function(f) made = f; f.custom = true; return f end)
    assert.are.equal(made, err)
    assert.is_true(err.custom)
  end)

  it("calls the function once when its credentials do not expire soon", function()
    local calls = 0
    local p = assert(credentials.resolve({credentials = function()
      calls = calls + 1
      return {access_key_id = "fnId", access_key_secret = "fnSecretXYZ123",
              security_token = "fnTokenXYZ123", expiration = os.time() + 3600}
    end}, logger))
    for _ = 1, 3 do
      assert.are.same({access_key_id = "fnId", access_key_secret = "fnSecretXYZ123",
        security_token = "fnTokenXYZ123"}, p:get())
    end
    assert.are.equal(1, calls)
    assert.are.equal("credentials function", p.source)
  end)

  it("calls the function again once expiration is within the refresh margin", function()
    local calls = 0
    local p = assert(credentials.resolve({credentials = function()
      calls = calls + 1
      -- First an STS result near its end (ISO form), then a fresh one (epoch form).
      local exp = calls == 1 and os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 100)
        or os.time() + 3600
      return {access_key_id = "fnId" .. calls, access_key_secret = "fnSecretXYZ123",
              expiration = exp}
    end}, logger))
    assert.are.equal(0, calls)
    assert.are.equal("fnId1", p:get().access_key_id)
    assert.are.equal("fnId2", p:get().access_key_id)
    assert.are.equal("fnId2", p:get().access_key_id)
    assert.are.equal(2, calls)
  end)

  it("caches forever without expiration", function()
    local calls = 0
    local p = assert(credentials.resolve({credentials = function()
      calls = calls + 1
      return {access_key_id = "fnId", access_key_secret = "fnSecretXYZ123"}
    end}))
    p:get(); p:get()
    assert.are.equal(1, calls)
  end)

  it("fails with InvalidCredentials when the function errors or returns no keys", function()
    for _, fn in ipairs{
      function() error("sts endpoint down") end,
      function() return nil, "no role" end,
      function() return {access_key_id = "fnId"} end,
      function() return {access_key_id = "fnId", access_key_secret = "fnSecretXYZ123",
                         expiration = "tomorrow"} end,
      function() return "fnSecretXYZ123" end,
    } do
      local p = assert(credentials.resolve({credentials = fn}, logger))
      local c, err = p:get()
      assert.is_nil(c)
      assert.are.equal("InvalidCredentials", err.code)
      assert_no_secret(tostring(err))
    end
  end)

  it("keeps unexpired credentials when a refresh fails, and fails once they expire", function()
    local calls, exp = 0, os.time() + 100
    local p = assert(credentials.resolve({credentials = function()
      calls = calls + 1
      if calls > 1 then error("sts endpoint down") end
      return {access_key_id = "fnId", access_key_secret = "fnSecretXYZ123", expiration = exp}
    end}, logger))
    assert.are.equal("fnId", p:get().access_key_id)
    assert.are.equal("fnId", p:get().access_key_id)
    assert.are.equal(2, calls)
    assert.matches("sts endpoint down", logs[#logs], 1, true)
    assert.matches("^warn ", logs[#logs])

    calls, exp = 0, os.time() + 1
    p = assert(credentials.resolve({credentials = function()
      calls = calls + 1
      if calls > 1 then error("sts endpoint down") end
      return {access_key_id = "fnId", access_key_secret = "fnSecretXYZ123", expiration = exp}
    end}, logger))
    assert.truthy(p:get())
    require("aliyun.iot.core").sleep(2.1) -- they have expired
    local c, err = p:get()
    assert.is_nil(c)
    assert.are.equal("InvalidCredentials", err.code)
  end)
end)

describe("credentials helpers", function()
  it("parses ISO-8601 times as UTC", function()
    assert.are.equal(1795982400, credentials.parse_time("2026-11-29T20:00:00Z"))
    assert.are.equal(0, credentials.parse_time("1970-01-01T00:00:00Z"))
    assert.are.equal(-1, credentials.parse_time("1969-12-31T23:59:59Z"))
    assert.are.equal(951818400, credentials.parse_time("2000-02-29T12:00:00+02:00"))
    assert.are.equal(1795982400.5, credentials.parse_time("2026-11-29T20:00:00.5Z"))
    assert.are.equal(1795982400, credentials.parse_time("2026-11-29T20:00:00"))
    assert.is_nil(credentials.parse_time("2026-13-29T20:00:00Z"))
    assert.is_nil(credentials.parse_time("2026-11-29T20:00:00 UTC"))
    assert.is_nil(credentials.parse_time("yesterday"))
  end)

  it("reads INI sections, comments, trimmed and quoted values", function()
    assert.are.same({a = {k = "v = w", x = ""}, b = {y = "1", q = "quoted", s = "single"}},
      credentials.parse_ini("top = ignored\n[a]\n k =v = w \n#c=1\n;d=2\nx=\n[ b ]\ny=1\r\n"
        .. 'q = "quoted"\n' .. "s = 'single'\n"))
  end)
end)
