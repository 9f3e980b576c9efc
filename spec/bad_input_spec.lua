-- Bad input across the public API and the CLI (issue "Hardening", section "Bad input"):
-- every case gets a clear error before any request is sent, checked against a live
-- emulator (#emu:requests() == 0 afterwards). The one rule: misuse (wrong types, unknown
-- option names, params not a table) raises; a bad value on a raw call returns nil, err
-- with InvalidParameter naming the parameter; the batch helpers answer bad names with
-- InvalidDeviceName and err.invalid; the CLI exits with status 2 and a message.
local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"

local PK = "a1TestPK001"
local SECRET = "testsecret"
local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))
local ROOT = os.getenv("PWD")
local BIN = ROOT .. "/bin/aliyun-iot"

local q = require("spec.support.shell").quote

local function names(n, prefix)
  local t = {}
  for i = 1, n do t[i] = ("%s%05d"):format(prefix or "dev_", i) end
  return t
end

-- Raw calls: {label, action, params, parameter named by the error, client options}.
local RAW = {
  {"Count 0", "BatchRegisterDevice", {ProductKey = PK, Count = 0}, "Count"},
  {"Count -1", "BatchRegisterDevice", {ProductKey = PK, Count = -1}, "Count"},
  {"Count 1.5", "BatchRegisterDevice", {ProductKey = PK, Count = 1.5}, "Count"},
  {"Count \"1e3\"", "BatchRegisterDevice", {ProductKey = PK, Count = "1e3"}, "Count"},
  {"Count \" 12\"", "BatchRegisterDevice", {ProductKey = PK, Count = " 12"}, "Count"},
  {"Count 1001 (default max_batch_size 1000)", "BatchRegisterDevice",
   {ProductKey = PK, Count = 1001}, "Count"},
  {"Count 10001 (max_batch_size 10000)", "BatchRegisterDevice",
   {ProductKey = PK, Count = 10001}, "Count", {max_batch_size = 10000}},
  {"Count as a nested table", "BatchRegisterDevice", {ProductKey = PK, Count = {5}}, "Count"},
  {"missing ProductKey", "BatchRegisterDevice", {Count = 1}, "ProductKey"},
  {"empty ProductKey", "BatchRegisterDevice", {ProductKey = "", Count = 1}, "ProductKey"},
  {"ProductKey as a table", "RegisterDevice", {ProductKey = {PK}}, "ProductKey"},
  {"ProductKey with CR/LF", "RegisterDevice", {ProductKey = PK .. "\r\nX-Evil: 1"}, "ProductKey"},
  {"DeviceName too short", "RegisterDevice", {ProductKey = PK, DeviceName = "abc"}, "DeviceName"},
  {"DeviceName too long", "RegisterDevice", {ProductKey = PK, DeviceName = ("a"):rep(33)},
   "DeviceName"},
  {"DeviceName with a space", "RegisterDevice", {ProductKey = PK, DeviceName = "lamp one"},
   "DeviceName"},
  {"DeviceName non-ASCII", "RegisterDevice", {ProductKey = PK, DeviceName = "灯泡灯泡"},
   "DeviceName"},
  {"DeviceName with NUL", "RegisterDevice", {ProductKey = PK, DeviceName = "lamp\0one"},
   "DeviceName"},
  {"DeviceName with CR/LF", "RegisterDevice", {ProductKey = PK, DeviceName = "lamp\r\none"},
   "DeviceName"},
  {"DeviceName as a nested table", "RegisterDevice",
   {ProductKey = PK, DeviceName = {x = {"lamp_one"}}}, "DeviceName"},
  {"Nickname with CR/LF", "RegisterDevice",
   {ProductKey = PK, DeviceName = "lamp_one", Nickname = "a\r\nb"}, "Nickname"},
  {"duplicated DeviceName in a check", "BatchCheckDeviceNames",
   {ProductKey = PK, DeviceName = {"lamp_001", "lamp_002", "lamp_001"}}, "DeviceName.3"},
  {"bad DeviceName in a check list", "BatchCheckDeviceNames",
   {ProductKey = PK, DeviceName = {"lamp_001", "no"}}, "DeviceName.2"},
  {"duplicated name in DeviceNameList", "BatchCheckDeviceNames",
   {ProductKey = PK, DeviceNameList = {{DeviceName = "lamp_001"}, {DeviceName = "lamp_001"}}},
   "DeviceNameList.2"},
  {"10,001 names on a raw BatchCheckDeviceNames", "BatchCheckDeviceNames",
   {ProductKey = PK, DeviceName = names(10001)}, "DeviceName", {max_batch_size = 10000}},
  {"1,001 names over the default max_batch_size", "BatchCheckDeviceNames",
   {ProductKey = PK, DeviceName = names(1001)}, "DeviceName"},
  {"DeviceName list with a hole", "BatchCheckDeviceNames",
   {ProductKey = PK, DeviceName = {"lamp_001", nil, "lamp_003"}}, "DeviceName.2"},
  {"ApplyId 4415.5", "QueryBatchRegisterDeviceStatus", {ProductKey = PK, ApplyId = 4415.5},
   "ApplyId"},
  {"ApplyId -1", "QueryBatchRegisterDeviceStatus", {ProductKey = PK, ApplyId = -1}, "ApplyId"},
  {"ApplyId \"abc\"", "QueryBatchRegisterDeviceStatus", {ProductKey = PK, ApplyId = "abc"},
   "ApplyId"},
  {"ApplyId beyond int64", "QueryPageByApplyId", {ApplyId = "99999999999999999999"}, "ApplyId"},
  {"PageSize 0", "QueryPageByApplyId", {ApplyId = 4415, PageSize = 0}, "PageSize"},
  {"PageSize 51", "QueryPageByApplyId", {ApplyId = 4415, PageSize = 51}, "PageSize"},
  {"IotId with CR/LF (header injection through ACS3)", "QueryDeviceDetail",
   {IotId = "x\r\nx-acs-action: RegisterDevice"}, "IotId",
   {signature_algorithm = "ACS3-HMAC-SHA256"}},
  -- issue 17: action names are refused before they reach a header or a signed query
  {"action with CR/LF", "QueryDevice\r\nX-Evil: 1", {ProductKey = PK}, "Action"},
  {"action with NUL", "QueryDevice\0", {ProductKey = PK}, "Action"},
  {"action of 1 MB", string.rep("A", 1024 * 1024), {}, "Action"},
  {"action starting with a digit", "1QueryDevice", {}, "Action"},
  {"empty action", "", {}, "Action"},
}

-- Client options: {label, options, parameter named by the error}. Each returns nil, err.
local OPTIONS = {
  {"endpoint ftp://", {endpoint = "ftp://127.0.0.1/"}, "endpoint"},
  {"endpoint without a scheme", {endpoint = "127.0.0.1:8080"}, "endpoint"},
  {"endpoint with CR/LF", {endpoint = "http://127.0.0.1/\r\nHost: evil"}, "endpoint"},
  {"endpoint with credentials", {endpoint = "http://user:pass@127.0.0.1/"}, "endpoint"},
  {"endpoint with a path", {endpoint = "http://127.0.0.1/admin"}, "endpoint"},
  {"user_agent with CR/LF (header injection)", {user_agent = "x\r\nX-Evil: 1"}, "user_agent"},
  {"security_token with CR/LF (header injection)", {security_token = "t\r\nX-Evil: 1"},
   "security_token"},
  {"iot_instance_id with LF", {iot_instance_id = "iot-1\nX-Evil: 1"}, "iot_instance_id"},
  {"region_id with a slash", {region_id = "cn/shanghai"}, "region_id"},
  {"format YAML", {format = "YAML"}, "format"},
  {"max_batch_size 10001", {max_batch_size = 10001}, "max_batch_size"},
  {"timeout 0", {timeout = 0}, "timeout"},
  {"max_retries -1", {max_retries = -1}, "max_retries"},
  -- issue 17: every numeric option has a range; empty names and malformed endpoints
  {"max_retries infinite", {max_retries = math.huge}, "max_retries"},
  {"max_retries 1e9", {max_retries = 1e9}, "max_retries"},
  {"max_response_size infinite", {max_response_size = math.huge}, "max_response_size"},
  {"max_response_size NaN", {max_response_size = 0 / 0}, "max_response_size"},
  {"max_response_size 1e15", {max_response_size = 1e15}, "max_response_size"},
  {"max_response_size 1.5", {max_response_size = 1.5}, "max_response_size"},
  {"retry_deadline infinite", {retry_deadline = math.huge}, "retry_deadline"},
  {"retry_deadline NaN", {retry_deadline = 0 / 0}, "retry_deadline"},
  {"timeout NaN", {timeout = 0 / 0}, "timeout"},
  {"connect_timeout infinite", {connect_timeout = math.huge}, "connect_timeout"},
  {"max_batch_size NaN", {max_batch_size = 0 / 0}, "max_batch_size"},
  {"empty region_id", {region_id = ""}, "region_id"},
  {"empty iot_instance_id", {iot_instance_id = ""}, "iot_instance_id"},
  {"endpoint http://:/", {endpoint = "http://:/"}, "endpoint"},
  {"endpoint without a host", {endpoint = "http:///"}, "endpoint"},
  {"endpoint with port 0", {endpoint = "http://127.0.0.1:0/"}, "endpoint"},
  {"endpoint with port 99999", {endpoint = "http://127.0.0.1:99999/"}, "endpoint"},
  {"endpoint with a port that is not a number", {endpoint = "http://127.0.0.1:abc/"}, "endpoint"},
  {"endpoint with an empty port", {endpoint = "http://127.0.0.1:/"}, "endpoint"},
  -- a qps rate the pacer cannot space: nil, InvalidParameter, not a raw pacer error
  {"qps QueryDevice NaN", {qps = {QueryDevice = 0 / 0}}, "qps", "QueryDevice"},
  {"qps QueryDevice 0", {qps = {QueryDevice = 0}}, "qps", "QueryDevice"},
  {"qps RegisterDevice -1", {qps = {QueryDevice = 5, RegisterDevice = -1}}, "qps", "RegisterDevice"},
  {"qps QueryDevice infinite", {qps = {QueryDevice = math.huge}}, "qps", "QueryDevice"},
  -- tiny rates: 1e-9 made the pacer sleep "too long" (a raise), 0.001 stalled other clients
  {"qps QueryDevice 1e-9", {qps = {QueryDevice = 1e-9}}, "qps", "QueryDevice"},
  {"qps QueryDevice 0.001", {qps = {QueryDevice = 0.001}}, "qps", "QueryDevice"},
  {"qps QueryDevice 1e6", {qps = {QueryDevice = 1e6}}, "qps", "QueryDevice"},
}

-- Misuse that raises: {label, function(client)}; the message must match the pattern.
local RAISES = {
  {"unknown option acess_key_id (a typo)", "unknown client option 'acess_key_id'", function()
    iot.new{acess_key_id = "testid", access_key_secret = SECRET}
  end},
  {"an option of the wrong type", "timeout", function() iot.new{timeout = "30"} end},
  {"options not a table", "table", function() iot.new("testid") end},
  {"a qps table with a number key", "client option 'qps' must map names", function()
    iot.new{access_key_id = "testid", access_key_secret = SECRET, qps = {5}}
  end},
  {"a qps table with a string value", "client option 'qps' must map names", function()
    iot.new{access_key_id = "testid", access_key_secret = SECRET, qps = {QueryDevice = "5"}}
  end},
  {"params not a table", "params must be a table", function(c) c:call("QueryDeviceDetail", "x") end},
  {"action not a string", "action must be a string", function(c) c:call(42, {}) end},
  {"unknown call option", "unknown call option 'retries'", function(c)
    c:call("QueryDeviceDetail", {IotId = "x"}, {retries = 2})
  end},
  {"unknown batch helper argument", "Cuont", function(c)
    c:register_devices{ProductKey = PK, Cuont = 3}
  end},
  {"a Devices entry that is neither a name nor a record", "Devices", function(c)
    c:register_named_devices{ProductKey = PK, Devices = {"lamp_001", 42}}
  end},
}

-- Batch helpers: {label, method, args, code, parameter (InvalidParameter) or invalid
-- names expected in err.invalid (InvalidDeviceName)}.
local BATCH = {
  {"register_devices Count 0", "register_devices", {ProductKey = PK, Count = 0},
   "InvalidParameter", "Count"},
  {"register_devices Count 1.5", "register_devices", {ProductKey = PK, Count = 1.5},
   "InvalidParameter", "Count"},
  {"register_devices Count \"1e3\"", "register_devices", {ProductKey = PK, Count = "1e3"},
   "InvalidParameter", "Count"},
  {"register_devices empty ProductKey", "register_devices", {ProductKey = "", Count = 3},
   "InvalidParameter", "ProductKey"},
  {"register_named_devices no names", "register_named_devices", {ProductKey = PK, Devices = {}},
   "InvalidParameter", "Devices"},
  {"register_named_devices bad names", "register_named_devices",
   {ProductKey = PK, Devices = {"lamp_001", "no", "lamp one", "lamp\0x", "灯泡灯泡"}},
   "InvalidDeviceName", {"no", "lamp one", "lamp\0x", "灯泡灯泡"}},
  {"register_named_devices duplicated names", "register_named_devices",
   {ProductKey = PK, Devices = {"lamp_001", "lamp_002", "lamp_001"}},
   "InvalidDeviceName", {"lamp_001"}},
  {"register_named_devices bad name among 10,001", "register_named_devices",
   {ProductKey = PK, Devices = (function() local t = names(10001); t[5000] = "x"; return t end)()},
   "InvalidDeviceName", {"x"}},
}

describe("bad input", function()
  local emu

  setup(function() emu = emulator.start{async_delay = 0} end)
  teardown(function() emu:stop() end)
  before_each(function() emu:reset() end)

  local function client(opts)
    local o = {access_key_id = "testid", access_key_secret = SECRET, endpoint = emu.endpoint,
               qps = false, max_retries = 0}
    for k, v in pairs(opts or {}) do o[k] = v end
    return assert(iot.new(o))
  end

  local function nothing_sent()
    assert.are.equal(0, #emu:requests(), "a request reached the emulator")
  end

  describe("raw calls", function()
    for _, case in ipairs(RAW) do
      local label, action, params, parameter, opts = case[1], case[2], case[3], case[4], case[5]
      it(label .. " -> InvalidParameter " .. parameter, function()
        local res, err = client(opts):call(action, params)
        assert.is_nil(res)
        assert.are.equal("InvalidParameter", err.code, tostring(err))
        assert.are.equal(parameter, err.parameter, tostring(err))
        assert.is_string(err.message)
        assert.truthy(tostring(err):find("InvalidParameter", 1, true))
        nothing_sent()
      end)
    end

    it("takes integer parameters as digit strings (the rule's other side)", function()
      local c = client()
      assert(c:call("BatchRegisterDevice", {ProductKey = PK, Count = "3"}))
      assert.are.equal(1, #emu:requests())
    end)
  end)

  describe("client options", function()
    for _, case in ipairs(OPTIONS) do
      it(case[1] .. " -> InvalidParameter " .. case[3], function()
        local o = {access_key_id = "testid", access_key_secret = SECRET, endpoint = emu.endpoint}
        for k, v in pairs(case[2]) do o[k] = v end
        local c, err = iot.new(o)
        assert.is_nil(c)
        assert.are.equal("InvalidParameter", err.code, tostring(err))
        assert.are.equal(case[3], err.parameter, tostring(err))
        if case[4] then assert.truthy(err.message:find(case[4], 1, true), tostring(err)) end
        assert.is_nil(err.message:find("pacer", 1, true), tostring(err))
        nothing_sent()
      end)
    end
  end)

  describe("options.check", function()
    local options = require "aliyun.iot.options"
    local SCHEMA = {deadline = {type = "number", above = 0, max = 86400},
                    Count = {type = "number", integer = true, min = 1, max = 10},
                    ProductKey = {type = "string", nonempty = true, line = true}}

    it("raises on unknown names and wrong types, at the caller's level", function()
      local function helper(args) return options.check(SCHEMA, args, "helper", 2) end
      local ok, msg = pcall(helper, {Cuont = 1})
      assert.is_false(ok)
      assert.matches("unknown helper option 'Cuont'", msg, 1, true)
      ok, msg = pcall(helper, {Count = "1"})
      assert.is_false(ok)
      assert.matches("'Count' must be a number", msg, 1, true)
      assert.has_error(function() helper("x") end)
    end)

    it("returns InvalidParameter for values out of range", function()
      for _, args in ipairs{{Count = 0}, {Count = 1.5}, {Count = 0 / 0}, {Count = math.huge},
                            {deadline = 0}, {deadline = -1}, {ProductKey = ""},
                            {ProductKey = "a\nb"}} do
        local r, err = options.check(SCHEMA, args, "helper", 1)
        assert.is_nil(r)
        assert.are.equal("InvalidParameter", err.code)
        assert.are.equal(next(args), err.parameter)
      end
      assert.are.same({Count = 3}, options.check(SCHEMA, {Count = 3}, "helper", 1))
      assert.are.same({}, options.check(SCHEMA, nil, "helper", 1))
    end)
  end)

  describe("misuse", function()
    for _, case in ipairs(RAISES) do
      it(case[1] .. " raises", function()
        local c = client()
        local ok, msg = pcall(case[3], c)
        assert.is_false(ok)
        assert.truthy(tostring(msg):find(case[2], 1, true), tostring(msg))
        nothing_sent()
      end)
    end
  end)

  describe("batch helpers", function()
    for _, case in ipairs(BATCH) do
      local label, method, args, code, detail = case[1], case[2], case[3], case[4], case[5]
      it(label .. " -> " .. code, function()
        local res, err = client()[method](client(), args)
        assert.is_nil(res)
        assert.are.equal(code, err.code, tostring(err))
        if code == "InvalidParameter" then
          assert.are.equal(detail, err.parameter, tostring(err))
        else
          local got = {}
          for _, inv in ipairs(err.invalid) do
            got[#got + 1] = inv.DeviceName
            assert.is_string(inv.ErrorMsg)
          end
          table.sort(got)
          table.sort(detail)
          assert.are.same(detail, got)
        end
        nothing_sent()
      end)
    end
  end)

  describe("journal and file inputs", function()
    local shell = require "spec.support.shell"
    local dir
    setup(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. q(dir)))
    end)
    teardown(function() os.execute("rm -rf " .. q(dir)) end)

    local function ftype(path) return (shell.capture("stat -c '%F %a %s' " .. q(path)):gsub("%s+$", "")) end

    it("a journal path with a NUL byte is refused, not cut", function()
      local res, err = client():register_devices{ProductKey = PK, Count = 1,
                                                 journal = dir .. "/cut.state\0.x"}
      assert.is_nil(res)
      assert.are.equal("journal", err.parameter, tostring(err))
      assert.is_nil(shell.read(dir .. "/cut.state"))
      res, err = client():resume{journal = dir .. "/cut.state\0.x"}
      assert.is_nil(res)
      assert.are.equal("JournalError", err.code, tostring(err))
      nothing_sent()
    end)

    it("a journal path that exists (empty file, device, symlink) is refused and left as it is", function()
      shell.write(dir .. "/empty.state", "")
      assert(os.execute("chmod 644 " .. q(dir .. "/empty.state")))
      assert(os.execute("ln -sf nowhere " .. q(dir .. "/link.state")))
      for _, path in ipairs{dir .. "/empty.state", "/dev/null", dir .. "/link.state"} do
        local before = ftype(path)
        local res, err = client():register_devices{ProductKey = PK, Count = 1, journal = path}
        assert.is_nil(res)
        assert.are.equal("InvalidParameter", err.code, tostring(err))
        assert.are.equal("journal", err.parameter, tostring(err))
        assert.are.equal(before, ftype(path))
      end
      assert.is_nil(shell.read(dir .. "/nowhere"))
      nothing_sent()
    end)

    it("resume from a FIFO, /dev/zero or a folder: JournalError at once", function()
      assert(os.execute("mkfifo " .. q(dir .. "/j.fifo")))
      for _, path in ipairs{dir .. "/j.fifo", "/dev/zero", dir} do
        local res, err = client():resume{journal = path}
        assert.is_nil(res)
        assert.are.equal("JournalError", err.code, tostring(err))
      end
      nothing_sent()
    end)

    it("resume from a hand-edited journal (Count 10^12, Count 2.5, no ApplyId): JournalError with the line", function()
      local job = '{"event":"job","version":1,"kind":"random","ProductKey":"' .. PK .. '","Count":%s}\n'
      for _, case in ipairs{{job:format("1000000000000"), ":1: "}, {job:format("2.5"), ":1: "},
          {job:format("3") .. '{"event":"apply","seq":1,"ProductKey":"' .. PK ..
           '","phase":"create","Count":3}\n', ":2: "}} do
        local path = dir .. "/edited.state"
        shell.write(path, case[1])
        local ok, res, err = pcall(client().resume, client(), {journal = path})
        assert.is_true(ok, tostring(res))
        assert.is_nil(res)
        assert.are.equal("JournalError", err.code, tostring(err))
        assert.truthy(err.message:find(path .. case[2], 1, true), err.message)
      end
      nothing_sent()
    end)
  end)

  describe("values that are fine", function()
    it("a secret containing & = and non-ASCII signs correctly, both algorithms", function()
      local secret = "s&e=c+r/e t中文"
      local e2 = emulator.start{access_keys = {oddid = secret}, async_delay = 0}
      finally(function() e2:stop() end)
      for _, alg in ipairs{"HMAC-SHA1", "ACS3-HMAC-SHA256"} do
        local c = assert(iot.new{access_key_id = "oddid", access_key_secret = secret,
          endpoint = e2.endpoint, qps = false, max_retries = 0, signature_algorithm = alg})
        local r, err = c:call("BatchRegisterDevice", {ProductKey = PK, Count = 1})
        assert.is_nil(err)
        assert.is_true(r.Success)
      end
      assert.are.equal(2, #e2:requests())
    end)
  end)

  describe("the CLI", function()
    local tmp

    setup(function()
      tmp = require("spec.support.shell").temp_dir()
    end)
    teardown(function() os.execute("rm -rf " .. q(tmp)) end)

    local function run(args)
      local out, err = tmp .. "/stdout", tmp .. "/stderr"
      local p = assert(io.popen("cd " .. q(tmp) .. " && env -u LUA_PATH -u LUA_CPATH HOME=" ..
        q(tmp) .. " TMPDIR=" .. q(tmp) .. " ALIBABA_CLOUD_ACCESS_KEY_ID=testid ALIBABA_CLOUD_ACCESS_KEY_SECRET=" ..
        SECRET .. " " .. LUA .. " " .. q(BIN) .. " " .. args .. " < /dev/null > " .. q(out) ..
        " 2> " .. q(err) .. "; echo $?"))
      local code = tonumber(p:read("*a"))
      p:close()
      local f = io.open(err, "rb")
      local stderr = f and f:read("*a") or ""
      if f then f:close() end
      return code, stderr
    end

    local function ep() return "--endpoint " .. emu.endpoint .. " " end

    local CLI = {
      {"an unknown flag", "register --product-key " .. PK .. " --count 3 --bogus", "--bogus"},
      {"a flag missing its value", "register --product-key " .. PK .. " --count", "--count"},
      {"an unknown command", "provision --product-key " .. PK, "provision"},
      {"Count 0", "register --product-key " .. PK .. " --count 0", "count"},
      {"Count not a number", "register --product-key " .. PK .. " --count ten", "count"},
      {"an unreadable names file", "register --product-key " .. PK ..
       " --names-file /nonexistent/names.txt", "names.txt"},
      {"a names file with invalid names", "register --product-key " .. PK ..
       " --names-file bad-names.txt", "no"},
      {"an output path in a missing folder", "register --product-key " .. PK ..
       " --count 3 --out missing/dir/devices.csv", "missing/dir"},
      {"an endpoint that is not http(s)", "register --product-key " .. PK ..
       " --count 3", "endpoint", "--endpoint ftp://127.0.0.1/ "},
      {"no product key", "register --count 3", "product-key"},
    }

    for _, case in ipairs(CLI) do
      it(case[1] .. " exits 2 and says so", function()
        local f = assert(io.open(tmp .. "/bad-names.txt", "wb"))
        f:write("lamp_001\nno\nlamp_002\n")
        f:close()
        local code, stderr = run((case[4] or ep()) .. case[2])
        assert.are.equal(2, code, stderr)
        assert.truthy(stderr:find(case[3], 1, true), stderr)
        assert.is_nil(stderr:find(SECRET, 1, true))
        nothing_sent()
      end)
    end
  end)
end)
