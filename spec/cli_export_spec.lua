-- `aliyun-iot export`, run as a child process (bin/aliyun-iot, no LUA_PATH) against the
-- emulator: every device of the product with its secret, CSV and JSON, to stdout or to an
-- --out file replaced atomically with mode 0600; a failure leaves an existing file as it
-- was; bad command lines exit 2 before any request; no secret on stderr.
local cjson = require "cjson"
local iot = require "aliyun.iot"
local shell = require "spec.support.shell"

local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))
local BIN = os.getenv("PWD") .. "/bin/aliyun-iot"
local PK = "a1TestPK001"
local q, read, write, sh = shell.quote, shell.read, shell.write, shell.capture

describe("aliyun-iot export", function()
  local emu, tmp, devices

  -- exit code, stdout, stderr of `aliyun-iot ARGS` (credentials in the environment, HOME
  -- and TMPDIR in the spec's folder)
  local function run(args)
    local out, err = tmp .. "/stdout", tmp .. "/stderr"
    local code = sh("cd " .. q(tmp) .. " && env -u LUA_PATH -u LUA_CPATH HOME=" .. q(tmp) ..
      " TMPDIR=" .. q(tmp) .. " ALIBABA_CLOUD_ACCESS_KEY_ID=testid" ..
      " ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret TERM=dumb " .. LUA .. " " .. q(BIN) .. " " ..
      args .. " < /dev/null > " .. q(out) .. " 2> " .. q(err) .. "; echo $?")
    local stderr = read(err)
    assert.is_nil(stderr:find("testsecret", 1, true), stderr)
    for _, d in pairs(devices or {}) do
      assert.is_nil(stderr:find(d.DeviceSecret, 1, true), "a DeviceSecret on stderr: " .. stderr)
    end
    return tonumber(code), read(out), stderr
  end

  local function ep() return "--endpoint " .. emu.endpoint .. " " end

  -- The devices of a CSV or JSON export, by name.
  local function parse(text, format)
    local list = {}
    if format == "json" then
      list = cjson.decode(text)
    else
      local lines = {}
      for line in text:gmatch("([^\n]*)\n") do lines[#lines + 1] = line:gsub("\r$", "") end
      assert.are.equal("ProductKey,DeviceName,DeviceSecret,IotId", lines[1])
      for i = 2, #lines do
        local pk, name, secret, id = lines[i]:match("^([^,]*),([^,]*),([^,]*),([^,]*)$")
        list[#list + 1] = {ProductKey = pk, DeviceName = name, DeviceSecret = secret, IotId = id}
      end
    end
    local out = {}
    for _, d in ipairs(list) do
      assert.is_nil(out[d.DeviceName], "twice: " .. d.DeviceName)
      out[d.DeviceName] = d
    end
    return out
  end

  local function files_in(dir) return sh("ls -A " .. q(dir)) end

  setup(function()
    emu = require("aliyun.iot.emulator").start{async_delay = 0}
    tmp = require("spec.support.shell").temp_dir("/out")
    local c = assert(iot.new{access_key_id = "testid", access_key_secret = "testsecret",
                             endpoint = emu.endpoint, qps = false})
    local res = assert(c:register_devices{ProductKey = PK, Count = 130})
    devices = {}
    for _, d in ipairs(res.Devices) do devices[d.DeviceName] = d end
  end)

  teardown(function()
    if emu then emu:stop() end
    os.execute("rm -rf " .. q(tmp))
  end)

  it("writes every device of the product with its secret as CSV on stdout", function()
    local code, out, err = run(ep() .. "export --product-key " .. PK)
    assert.are.equal(0, code, err)
    assert.are.same(devices, parse(out, "csv"))
    assert.truthy(err:find("130 devices of product " .. PK, 1, true), err)
  end)

  it("writes JSON to --out atomically, mode 0600, replacing what the file held", function()
    local path = tmp .. "/out/devices.json"
    write(path, "old contents\n")
    os.execute("chmod 644 " .. q(path))
    local code, out, err = run(ep() .. "export --product-key " .. PK .. " --format json --out " .. q(path))
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    assert.are.same(devices, parse(read(path), "json"))
    assert.are.equal("600", (sh("stat -c %a " .. q(path)):gsub("%s+$", "")))
    assert.are.equal("devices.json\n", files_in(tmp .. "/out")) -- no temporary file left
  end)

  it("a failure leaves --out as it was, no temporary file, exit 1", function()
    local path = tmp .. "/out/kept.csv"
    write(path, "kept\n")
    emu:fault{kind = "malformed", count = 10, action = "QueryDevice"}
    local code, _, err = run(ep() .. "--timeout 5 export --product-key " .. PK .. " --out " .. q(path))
    emu:clear_faults()
    assert.are.equal(1, code, err)
    assert.truthy(err:find("InvalidResponse", 1, true), err)
    assert.are.equal("kept\n", read(path))
    assert.is_nil(files_in(tmp .. "/out"):find("%.tmp"))
    code, _, err = run(ep() .. "export --product-key a1NoSuchPK --out " .. q(path))
    assert.are.equal(1, code, err)
    assert.truthy(err:find("NotExistedProduct", 1, true), err)
    assert.are.equal("kept\n", read(path))
  end)

  it("refuses bad command lines with exit 2 before any request", function()
    emu:reset()
    for _, case in ipairs{
      {"export", "'export' needs --product-key"},
      {"export --product-key " .. PK .. " --count 3", "--count does not apply to 'export'"},
      {"export --product-key " .. PK .. " --format xml", "--format must be csv, json, ndjson or esp-idf"},
      {"export --product-key " .. PK .. " extra", "unexpected argument 'extra'"},
      {"export --product-key ''", "ProductKey must not be empty"},
    } do
      local code, _, err = run(ep() .. case[1])
      assert.are.equal(2, code, case[1] .. ": " .. err)
      assert.truthy(err:find(case[2], 1, true), case[1] .. ": " .. err)
    end
    assert.are.equal(0, #emu:requests())
    local code, out = run("--help")
    assert.are.equal(0, code)
    assert.truthy(out:find("export --product-key PK", 1, true))
  end)
end)
