-- The command's credentials and region (issue 13): --profile and --region, a CLI profile
-- that assumes a role through the emulator's STS, and the exit status of each credentials
-- error (2: nothing configured or unusable; 1: a configured provider failed). Children run
-- with `env -i`, so no credentials of the test machine leak in.
local emulator = require "aliyun.iot.emulator"
local shell = require "spec.support.shell"
local child = require "spec.support.credentials_child"
local q = shell.quote

local BIN = os.getenv("PWD") .. "/bin/aliyun-iot"
local PK = "a1TestPK001"
local ROLE = "acs:ram::1234567890:role/provisioner"

local emu, home

-- Runs the command with HOME = home and exactly `env`; returns exit code, stdout, stderr.
local function run(args, env)
  local vars = {"HOME=" .. q(home), "TMPDIR=" .. q(home), "PATH=" .. q(os.getenv("PATH")),
                "ALIBABA_CLOUD_ECS_METADATA_ENDPOINT=" .. child.NO_METADATA,
                "ALIBABA_CLOUD_STS_ENDPOINT=" .. q(emu.endpoint)}
  for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "=" .. q(v) end
  local out, err = home .. "/stdout", home .. "/stderr"
  local code = shell.capture("env -i " .. table.concat(vars, " ") .. " " .. child.LUA .. " "
    .. q(BIN) .. " --endpoint " .. emu.endpoint .. " " .. args .. " </dev/null >" .. q(out)
    .. " 2>" .. q(err) .. "; echo $?")
  local stderr = shell.read(err)
  assert.is_nil(stderr:find("testsecret", 1, true), "secret on stderr: " .. stderr)
  return tonumber(code), shell.read(out), stderr
end

local function profiles(list)
  local path = home .. "/.aliyun/config.json"
  shell.write(path, require("cjson").encode{current = "laptop", profiles = list})
  assert(shell.ok("chmod 600 " .. q(path)))
end

local function last(action)
  local found
  for _, r in ipairs(emu:requests()) do if r.action == action then found = r end end
  return found
end

describe("aliyun-iot credentials and region #lua54only", function()
  setup(function() emu = emulator.start{async_delay = 0} end)
  teardown(function() emu:stop() end)
  before_each(function()
    emu:reset()
    home = os.tmpname()
    os.remove(home)
    assert(shell.ok("mkdir -p " .. q(home .. "/.aliyun")))
  end)
  after_each(function() os.execute("rm -rf " .. q(home)) end)

  local LAPTOP = {name = "laptop", mode = "AK", access_key_id = "testid",
                  access_key_secret = "testsecret", region_id = "cn-beijing"}
  local CI = {name = "ci", mode = "RamRoleArn", access_key_id = "testid",
              access_key_secret = "testsecret", ram_role_arn = ROLE, region_id = "cn-hangzhou"}

  it("--profile picks a CLI profile that assumes a role; its region_id is used", function()
    profiles{LAPTOP, CI}
    local code, out, err = run("--profile ci call QueryDevice ProductKey=" .. PK)
    assert.are.equal(0, code, err)
    assert.matches('"Success": true', out, 1, true)
    assert.are.equal("testid", last("AssumeRole").params.AccessKeyId)
    local qd = last("QueryDevice")
    assert.matches("^STS%.", qd.params.AccessKeyId)
    assert.are.equal("cn-hangzhou", qd.params.RegionId)
  end)

  it("region: --region, else ALIBABA_CLOUD_REGION_ID, else the profile's, else cn-shanghai", function()
    profiles{LAPTOP}
    local region = function(args, env)
      local code, _, err = run(args .. " call QueryDevice ProductKey=" .. PK, env)
      assert.are.equal(0, code, err)
      return last("QueryDevice").params.RegionId
    end
    assert.are.equal("cn-beijing", region(""))
    assert.are.equal("ap-southeast-1", region("", {ALIBABA_CLOUD_REGION_ID = "ap-southeast-1"}))
    assert.are.equal("eu-central-1", region("--region eu-central-1",
      {ALIBABA_CLOUD_REGION_ID = "ap-southeast-1"}))
    os.remove(home .. "/.aliyun/config.json")
    assert.are.equal("cn-shanghai", region("", {ALIBABA_CLOUD_ACCESS_KEY_ID = "testid",
      ALIBABA_CLOUD_ACCESS_KEY_SECRET = "testsecret"}))
  end)

  it("a bad region names where it came from (the profile, the variable), nothing sent", function()
    local odd = {}
    for k, v in pairs(LAPTOP) do odd[k] = v end
    odd.region_id = "cn shanghai"
    profiles{odd}
    local code, _, err = run("call QueryDevice ProductKey=" .. PK)
    assert.are.equal(2, code, err)
    assert.matches("profile 'laptop' of " .. home .. "/.aliyun/config.json", err, 1, true)
    code, _, err = run("call QueryDevice ProductKey=" .. PK, {ALIBABA_CLOUD_REGION_ID = "x y"})
    assert.are.equal(2, code, err)
    assert.matches("ALIBABA_CLOUD_REGION_ID", err, 1, true)
    assert.are.equal(0, #emu:requests())
  end)

  it("--signature-algorithm, --response-format, --max-batch-size and --qps reach the client", function()
    profiles{LAPTOP}
    local code, out, err = run("--signature-algorithm ACS3-HMAC-SHA256 --response-format xml "
      .. "--qps QueryDevice=5,QueryPageByApplyId=2 --max-batch-size 500 call QueryDevice ProductKey=" .. PK)
    assert.are.equal(0, code, err)
    assert.matches('"Success": true', out, 1, true)
    local qd = last("QueryDevice")
    assert.are.same({"ACS3", "XML"}, {qd.signature, qd.params.Format})
    for _, bad in ipairs{"--qps QueryDevice", "--qps =5", "--response-format yaml",
                         "--max-batch-size 0", "--max-batch-size x", "--qps QueryDevice=0",
                         "--qps QueryDevices=5", "--qps BatchRegisterDevic=2",
                         "--signature-algorithm MD5"} do
      code, _, err = run(bad .. " call QueryDevice ProductKey=" .. PK)
      assert.are.equal(2, code, bad .. ": " .. err)
    end
    -- call's own action may be one the table does not know
    code, out, err = run("--qps QueryThingModel=5 call QueryThingModel ProductKey=" .. PK)
    assert.is_string(out)
    assert.are_not.equal(2, code, err)
  end)

  it("exits 1 when a configured provider fails, 2 when credentials are missing or unusable", function()
    local bad = {}
    for k, v in pairs(CI) do bad[k] = v end
    bad.access_key_secret = "wrongSecretXYZ"
    profiles{LAPTOP, bad}
    local code, _, err = run("--profile ci call QueryDevice ProductKey=" .. PK)
    assert.are.equal(1, code)
    assert.matches("CredentialsError", err, 1, true)
    assert.matches("SignatureDoesNotMatch", err, 1, true)
    assert.is_nil(err:find("wrongSecretXYZ", 1, true))
    code, _, err = run("call QueryDevice ProductKey=" .. PK, {ALIBABA_CLOUD_ACCESS_KEY_ID = "x"})
    assert.are.equal(2, code)
    assert.matches("InvalidCredentials", err, 1, true)
    os.remove(home .. "/.aliyun/config.json")
    code, _, err = run("call QueryDevice ProductKey=" .. PK)
    assert.are.equal(2, code)
    assert.matches("no credentials found", err, 1, true)
  end)
end)
