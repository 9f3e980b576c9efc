-- The command's output formats and connection columns (issue 14): --format csv|json|ndjson|
-- esp-idf, --mqtt with its options, --no-secrets, and mqtt-credentials; run as child
-- processes against one local emulator. Passwords are checked against `openssl dgst -hmac`.
local cjson = require "cjson"

local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))
local BIN = os.getenv("PWD") .. "/bin/aliyun-iot"
local PK = "a1TestPK001"
local TS = "1700000000123"

local shell = require "spec.support.shell"
local q, read, write, sh = shell.quote, shell.read, shell.write, shell.capture

local emu, tmp

local function env_prefix()
  return "cd " .. q(tmp) .. " && env -u LUA_PATH -u LUA_CPATH HOME=" .. q(tmp) .. " TMPDIR=" ..
    q(tmp) .. " ALIBABA_CLOUD_ACCESS_KEY_ID=testid ALIBABA_CLOUD_ACCESS_KEY_SECRET=testsecret "
end

-- Runs the command; returns exit code, stdout, stderr.
local function run(args)
  local out, err = tmp .. "/stdout", tmp .. "/stderr"
  local code = sh(env_prefix() .. LUA .. " " .. q(BIN) .. " " .. args .. " < /dev/null > " ..
    q(out) .. " 2> " .. q(err) .. "; echo $?")
  return tonumber(code), read(out), read(err)
end

local function ep() return "--quiet --endpoint " .. emu.endpoint .. " " end
local function path(name) return tmp .. "/" .. name end
local function mode(p) return (sh("stat -c %a " .. q(p)):gsub("%s+$", "")) end
local function exists(p) return shell.ok("test -e " .. q(p)) end

-- HMAC by another implementation: the openssl command.
local function openssl_hmac(alg, key, data)
  write(path("hmac.in"), data)
  local out = sh(("openssl dgst -%s -hmac %s < %s"):format(alg, q(key), q(path("hmac.in"))))
  return assert(out:match("(%x+)%s*$"), out)
end

-- CSV text (no quoted line ends) to a header and records.
local function csv(text, eol)
  local lines = {}
  for line in text:gmatch("([^\n]*)\n") do
    if eol == "\r\n" then
      assert.are.equal("\r", line:sub(-1))
      line = line:sub(1, -2)
    end
    lines[#lines + 1] = line
  end
  local function fields(line)
    local f, i = {}, 1
    while i <= #line + 1 do
      if line:sub(i, i) == '"' then
        local j = i + 1
        local s = {}
        while true do
          local k = line:find('"', j, true)
          s[#s + 1] = line:sub(j, k - 1)
          if line:sub(k + 1, k + 1) == '"' then s[#s + 1] = '"' j = k + 2 else i = k + 2 break end
        end
        f[#f + 1] = table.concat(s)
      else
        local k = line:find(",", i, true) or #line + 1
        f[#f + 1] = line:sub(i, k - 1)
        i = k + 1
      end
    end
    return f
  end
  local header = fields(lines[1])
  local recs = {}
  for n = 2, #lines do
    local r, f = {}, fields(lines[n])
    assert.are.equal(#header, #f, lines[n])
    for c, name in ipairs(header) do r[name] = f[c] end
    recs[#recs + 1] = r
  end
  return table.concat(header, ","), recs
end

local MQTT_HEADER = "ProductKey,DeviceName,DeviceSecret,IotId,MqttHost,MqttPort,MqttClientId," ..
  "MqttUsername,MqttPassword"

-- What a device's connection columns must be, computed here (openssl for the HMAC).
local function expect_mqtt(d, o)
  o = o or {}
  local method, mode_n = o.signmethod or "hmacsha256", o.securemode or 2
  local id = d.ProductKey .. "." .. d.DeviceName
  local pw = openssl_hmac(method:sub(5), d.DeviceSecret, "clientId" .. id .. "deviceName" ..
    d.DeviceName .. "productKey" .. d.ProductKey .. "timestamp" .. TS)
  return {
    MqttHost = o.instance and (o.instance .. ".mqtt.iothub.aliyuncs.com")
      or (d.ProductKey .. ".iot-as-mqtt." .. (o.region or "cn-shanghai") .. ".aliyuncs.com"),
    MqttPort = tostring(mode_n == 2 and 8883 or 1883),
    MqttClientId = ("%s|securemode=%d,signmethod=%s,timestamp=%s|"):format(id, mode_n, method, TS),
    MqttUsername = d.DeviceName .. "&" .. d.ProductKey,
    MqttPassword = o.upper and pw:upper() or pw,
  }
end

local function check_mqtt(d, o)
  for k, v in pairs(expect_mqtt(d, o)) do assert.are.equal(v, tostring(d[k]), k) end
end

-- A small devices file written by hand (no service needed).
local FILE_DEVICES = {
  {ProductKey = "a14Xib5kdYd", DeviceName = "light1983432", DeviceSecret = "oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq",
   IotId = "iot1"},
  {ProductKey = "a14Xib5kdYd", DeviceName = "light_2:x@y", DeviceSecret = "s2eCret9q", IotId = "iot2"},
}
-- quoted fields are read as RFC 4180 has them (a DeviceSecret is letters and digits only)
local FILE_CSV = 'ProductKey,DeviceName,DeviceSecret,IotId\r\n' ..
  'a14Xib5kdYd,light1983432,oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq,iot1\r\n' ..
  '"a14Xib5kdYd","light_2:x@y","s2eCret9q",iot2\r\n'

describe("aliyun-iot output formats", function()
  setup(function()
    emu = require("aliyun.iot.emulator").start{async_delay = 0.05}
    tmp = require("spec.support.shell").temp_dir()
  end)

  teardown(function()
    if emu then emu:stop() end
    os.execute("rm -rf " .. q(tmp))
  end)

  before_each(function() emu:reset() end)

  it("register --mqtt adds the connection columns, the password as openssl computes it", function()
    local code, _, err = run(ep() .. "register --product-key " .. PK .. " --count 3 --mqtt " ..
      "--mqtt-timestamp " .. TS .. " --out m.csv")
    assert.are.equal(0, code, err)
    assert.are.equal("600", mode(path("m.csv")))
    local header, devs = csv(read(path("m.csv")), "\r\n")
    assert.are.equal(MQTT_HEADER, header)
    assert.are.equal(3, #devs)
    for _, d in ipairs(devs) do
      assert.are.equal(PK, d.ProductKey)
      check_mqtt(d)
    end
    -- no password or secret on stderr
    for _, d in ipairs(devs) do
      assert.is_nil(err:find(d.DeviceSecret, 1, true))
      assert.is_nil(err:find(d.MqttPassword, 1, true))
    end
  end)

  it("mqtt-credentials: every sign method, both cases, both host styles, securemode 3", function()
    write(path("in.csv"), FILE_CSV)
    local cases = {
      {"", {}},
      {"--signmethod hmacsha1", {signmethod = "hmacsha1"}},
      {"--signmethod hmacmd5 --password-case upper", {signmethod = "hmacmd5", upper = true}},
      {"--securemode 3 --region cn-beijing", {securemode = 3, region = "cn-beijing"}},
      {"--iot-instance-id iot-06z00ab1cd", {instance = "iot-06z00ab1cd"}},
      {"--iot-instance-id iot-06z00ab1cd --instance-style old", {}},
    }
    for _, c in ipairs(cases) do
      local code, out, err = run("mqtt-credentials --in in.csv --mqtt-timestamp " .. TS .. " " .. c[1])
      assert.are.equal(0, code, err)
      local header, devs = csv(out, "\r\n")
      assert.are.equal(MQTT_HEADER, header)
      assert.are.equal(2, #devs)
      for i, d in ipairs(devs) do
        assert.are.equal(FILE_DEVICES[i].DeviceSecret, d.DeviceSecret)
        check_mqtt(d, c[2])
      end
    end
  end)

  it("mqtt-credentials on a file made by register equals register --mqtt", function()
    local code, _, err = run(ep() .. "register --product-key " .. PK .. " --count 3 --mqtt " ..
      "--mqtt-timestamp " .. TS .. " --signmethod hmacsha1 --state job.state --out reg.csv")
    assert.are.equal(0, code, err)
    -- the same devices without the connection columns, from the journal, in each format
    for _, fmt in ipairs{"csv", "json", "ndjson"} do
      code, _, err = run(ep() .. "resume --state job.state --format " .. fmt .. " --out plain." .. fmt)
      assert.are.equal(0, code, err)
      assert.is_nil(read(path("plain." .. fmt)):find("Mqtt", 1, true))
      code, _, err = run("mqtt-credentials --in plain." .. fmt .. " --mqtt-timestamp " .. TS ..
        " --signmethod hmacsha1 --out mc.csv")
      assert.are.equal(0, code, err)
      assert.are.equal(read(path("reg.csv")), read(path("mc.csv")))
    end
  end)

  it("json and ndjson: one object per device, the same records as CSV", function()
    local code, _, err = run(ep() .. "register --product-key " .. PK .. " --count 3 --state f.state " ..
      "--mqtt --mqtt-timestamp " .. TS .. " --out f.csv")
    assert.are.equal(0, code, err)
    local _, devs = csv(read(path("f.csv")), "\r\n")
    code, _, err = run(ep() .. "resume --state f.state --mqtt --mqtt-timestamp " .. TS ..
      " --format ndjson --out f.ndjson")
    assert.are.equal(0, code, err)
    local text = read(path("f.ndjson"))
    local n = 0
    for line in text:gmatch("([^\n]*)\n") do
      n = n + 1
      local d = cjson.decode(line)
      assert.are.equal(8883, d.MqttPort)
      d.MqttPort = ("%.0f"):format(d.MqttPort)
      assert.are.same(devs[n], d)
    end
    assert.are.equal(3, n)
    assert.are.equal("\n", text:sub(-1))
    -- devices streams its pages through the same writer
    local ids = {}
    for id in read(path("f.state")):gmatch('"ApplyId":"?(%d+)') do ids[id] = true end
    local id = next(ids)
    assert.truthy(id and next(ids, id) == nil, "one apply")
    local out
    code, out, err = run(ep() .. "devices --product-key " .. PK .. " --apply-id " .. id ..
      " --mqtt --mqtt-timestamp " .. TS .. " --format ndjson")
    assert.are.equal(0, code, err)
    assert.are.equal(text, out)
    code, _, err = run(ep() .. "resume --state f.state --mqtt --mqtt-timestamp " .. TS ..
      " --format json --out f.json")
    assert.are.equal(0, code, err)
    local list = cjson.decode(read(path("f.json")))
    assert.are.equal(3, #list)
    for i, d in ipairs(list) do
      d.MqttPort = ("%.0f"):format(d.MqttPort)
      assert.are.same(devs[i], d)
    end
  end)

  it("esp-idf: mfg_gen.py's values file and its config file beside it, both 0600", function()
    local code, _, err = run(ep() .. "register --product-key " .. PK .. " --count 3 --mqtt " ..
      "--mqtt-timestamp " .. TS .. " --format esp-idf --out factory.csv")
    assert.are.equal(0, code, err)
    local values = read(path("factory.csv"))
    assert.is_nil(values:find("\r", 1, true))
    local header, devs = csv(values)
    assert.are.equal(MQTT_HEADER, header)
    assert.are.equal(3, #devs)
    for _, d in ipairs(devs) do check_mqtt(d) end
    assert.are.equal("aliyun-key,namespace,\nProductKey,data,string\nDeviceName,data,string\n" ..
      "DeviceSecret,data,string\nMqttHost,data,string\nMqttPort,data,u16\n" ..
      "MqttClientId,data,string\nMqttUsername,data,string\nMqttPassword,data,string\n",
      read(path("factory.config.csv")))
    assert.are.equal("600", mode(path("factory.csv")))
    assert.are.equal("600", mode(path("factory.config.csv")))
    -- the config file is never replaced: a second run refuses before any request
    local before = #emu:requests()
    code, _, err = run(ep() .. "register --product-key " .. PK .. " --count 3 --format esp-idf " ..
      "--esp-namespace fleet_1 --out factory.csv")
    assert.are.equal(2, code)
    assert.truthy(err:find("factory.config.csv: it exists", 1, true), err)
    assert.are.equal(before, #emu:requests())
    assert.are.equal(values, read(path("factory.csv")))
    -- without --mqtt, another namespace
    code, _, err = run(ep() .. "register --product-key " .. PK .. " --count 2 --format esp-idf " ..
      "--esp-namespace fleet_1 --out plain.csv")
    assert.are.equal(0, code, err)
    assert.are.equal("fleet_1,namespace,\nProductKey,data,string\nDeviceName,data,string\n" ..
      "DeviceSecret,data,string\n", read(path("plain.config.csv")))
    header, devs = csv(read(path("plain.csv")))
    assert.are.equal("ProductKey,DeviceName,DeviceSecret,IotId", header)
    assert.are.equal(2, #devs)
  end)

  it("esp-idf refuses stdout, a name without .csv and a bad namespace; a failed job keeps no config", function()
    local base = ep() .. "register --product-key " .. PK .. " --count 2 --format esp-idf "
    for _, c in ipairs{{"", "not stdout"}, {"--out x.txt", "ending in .csv"},
                       {"--out x.csv --esp-namespace sixteen_chars_ns", "--esp-namespace must be"},
                       {"--out /dev/null", "needs --out ending in .csv"}} do
      local code, out, err = run(base .. c[1])
      assert.are.equal(2, code, c[1])
      assert.truthy(err:find(c[2], 1, true), err)
      assert.are.equal("", out)
    end
    assert.are.equal(0, #emu:requests())
    assert.is_false(exists(path("x.config.csv")))
    -- the service refuses the job: neither file is left
    local code, _, err = run(ep() .. "register --product-key NoSuchPK99 --count 2 --format esp-idf " ..
      "--out gone.csv")
    assert.are_not.equal(0, code, err)
    assert.is_false(exists(path("gone.csv")))
    assert.is_false(exists(path("gone.config.csv")))
  end)

  it("--no-secrets: no DeviceSecret or password anywhere, in every format", function()
    local code, _, err = run(ep() .. "register --product-key " .. PK .. " --count 3 --state ns.state " ..
      "--out secrets.csv")
    assert.are.equal(0, code, err)
    local _, devs = csv(read(path("secrets.csv")), "\r\n")
    local secrets = {}
    for _, d in ipairs(devs) do
      secrets[#secrets + 1] = d.DeviceSecret
      secrets[#secrets + 1] = expect_mqtt(d).MqttPassword
      secrets[#secrets + 1] = expect_mqtt(d).MqttPassword:upper()
    end
    for _, fmt in ipairs{"csv", "json", "ndjson", "esp-idf"} do
      for _, extra in ipairs{"", "--mqtt --mqtt-timestamp " .. TS} do
        local out = "inv-" .. fmt .. (extra == "" and "" or "-m") .. ".csv"
        code, _, err = run(ep() .. "resume --state ns.state --no-secrets --format " .. fmt .. " " ..
          extra .. " --out " .. out)
        assert.are.equal(0, code, err)
        local text = read(path(out)) .. (read(path(out:gsub("%.csv$", ".config.csv"))) or "")
        assert.is_nil(text:find("DeviceSecret", 1, true), text)
        assert.is_nil(text:find("MqttPassword", 1, true), text)
        for _, s in ipairs(secrets) do assert.is_nil(text:find(s, 1, true), out) end
        assert.truthy(text:find(devs[1].DeviceName, 1, true), text)
        if extra ~= "" then assert.truthy(text:find("MqttUsername", 1, true), text) end
      end
    end
    -- a file without secrets gives no connection parameters: a clear error
    code, _, err = run("mqtt-credentials --in inv-csv.csv --out never.csv")
    assert.are.equal(2, code)
    assert.truthy(err:find("inv-csv.csv:2: no DeviceSecret", 1, true), err)
    assert.is_false(exists(path("never.csv")))
  end)

  it("mqtt-credentials reads strictly: a bad row is an error before anything is written", function()
    local cases = {
      {"ProductKey,DeviceName,Secret\r\na1,dev1,x\r\n", "bad.csv:1: unknown column Secret"},
      {FILE_CSV .. "a14Xib5kdYd,short\r\n", "bad.csv:4: 2 fields, the header has 4"},
      {FILE_CSV .. "a14Xib5kdYd,bad name!,secret,iot\r\n", "bad.csv:4: DeviceName bad name! may only contain"},
      {FILE_CSV .. 'a14Xib5kdYd,"open,secret,iot\r\n', "bad.csv:4: a quoted field is never closed"},
      {'[{"ProductKey":"a1","DeviceName":"dev1","DeviceSecret":1}]', "bad.csv: device 1: DeviceSecret is not a string"},
      {'{"ProductKey":"a1","DeviceName":"dev1","DeviceSecret":"x"}\n{"ProductKey":"a1"}\n',
       "bad.csv:2: no DeviceName"},
      {"ProductKey,DeviceName,DeviceSecret,IotId\r\n", "bad.csv holds no devices"},
    }
    for _, c in ipairs(cases) do
      write(path("bad.csv"), c[1])
      local code, out, err = run("mqtt-credentials --in bad.csv --out out.csv")
      assert.are.equal(2, code, c[2])
      assert.truthy(err:find(c[2], 1, true), err)
      assert.are.equal("", out)
      assert.is_nil(err:find("oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq", 1, true))
      assert.is_false(exists(path("out.csv")))
    end
    -- --out never the input file itself
    write(path("in.csv"), FILE_CSV)
    local code, _, err = run("mqtt-credentials --in in.csv --out in.csv")
    assert.are.equal(2, code)
    assert.truthy(err:find("same file as --in", 1, true), err)
    assert.are.equal(FILE_CSV, read(path("in.csv")))
  end)

  it("mqtt-credentials copies no value the API would not produce, no device twice, and echoes no cell", function()
    local SECRET = "oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq"
    local H = "ProductKey,DeviceName,DeviceSecret,IotId\r\n"
    local cases = {
      -- a file without its header: the first row's cells (a secret among them) never echoed
      {SECRET .. ",a14Xib5kdYd,light1983432,iot1\r\n", "bad.csv:1: no header row"},
      -- the same device twice: which secret is right cannot be told
      {FILE_CSV .. "a14Xib5kdYd,light1983432," .. SECRET .. "x,iot3\r\n",
       "bad.csv:4: device light1983432 given twice (first at bad.csv:2)"},
      {'{"ProductKey":"a1","DeviceName":"dev1","DeviceSecret":"x"}\n' ..
       '{"ProductKey":"a1","DeviceName":"dev1","DeviceSecret":"y"}\n', "bad.csv:2: device dev1 given twice"},
      -- a spreadsheet formula, an escape sequence, a NUL: never copied into an output
      {H .. 'a14Xib5kdYd,light1983432,' .. SECRET .. ',"=HYPERLINK(""http://x"")"\r\n',
       "bad.csv:2: IotId is not 1 to 64 letters and digits"},
      {H .. "a14Xib5kdYd,light1983432," .. SECRET .. ",iot\27[2J\r\n",
       "bad.csv:2: IotId is not 1 to 64 letters and digits"},
      {'[{"ProductKey":"a1","DeviceName":"dev1","DeviceSecret":"@SUM(1)","IotId":"i"}]',
       "bad.csv: device 1: DeviceSecret is not 1 to 64 letters and digits"},
      {H .. "a14Xib5kdYd,light1983432,se\0cret,iot1\r\n", "bad.csv:2: DeviceSecret is not"},
      {H .. "a1 4,light1983432," .. SECRET .. ",iot1\r\n", "bad.csv:2: ProductKey must not contain"},
      -- a row wider than any this command writes stops the reading at once (a huge line of
      -- commas once became as many strings: gigabytes of memory)
      {H .. (","):rep(100000) .. "\r\n", "bad.csv:2: more than 9 fields"},
      -- a ProductKey is the first cell of a row and a label of MqttHost
      {H .. "=1+1,light1983432," .. SECRET .. ",iot1\r\n", "bad.csv:2: ProductKey may only contain"},
      {'{"ProductKey":"x@evil.example:1883?","DeviceName":"dev1","DeviceSecret":"abc"}\n',
       "bad.csv:1: ProductKey may only contain"},
    }
    for _, c in ipairs(cases) do
      write(path("bad.csv"), c[1])
      local code, out, err = run("mqtt-credentials --in bad.csv --out out.csv")
      assert.are.equal(2, code, c[2])
      assert.truthy(err:find(c[2], 1, true), err)
      assert.are.equal("", out)
      assert.is_nil(err:find(SECRET, 1, true), err)
      assert.is_nil(err:find("\27", 1, true), err)
      assert.is_false(exists(path("out.csv")))
    end
    -- a file without IotId goes round every format: its JSON holds "IotId": "", read as none
    write(path("noiot.csv"), "ProductKey,DeviceName,DeviceSecret\r\na14Xib5kdYd,light1983432," ..
      SECRET .. "\r\n")
    local prev = "noiot.csv"
    for _, fmt in ipairs{"json", "ndjson", "csv"} do
      local code, _, err = run("mqtt-credentials --in " .. prev .. " --format " .. fmt ..
        " --out noiot-" .. fmt .. " --mqtt-timestamp " .. TS)
      assert.are.equal(0, code, fmt .. ": " .. err)
      prev = "noiot-" .. fmt
    end
    -- a blank line is no row (a file edited by hand often ends with one)
    write(path("blank.csv"), FILE_CSV .. "\r\n")
    local code, out, err = run("mqtt-credentials --in blank.csv --mqtt-timestamp " .. TS)
    assert.are.equal(0, code, err)
    assert.are.equal(2, #select(2, csv(out, "\r\n")))
  end)

  it("the resume command after a failure keeps the format and connection options", function()
    local cli = require "aliyun.iot.cli"
    local opts = cli.check(cli.parse{"register", "--product-key", PK, "--count", "2", "--mqtt",
      "--signmethod", "hmacmd5", "--password-case", "upper", "--no-secrets", "--format",
      "esp-idf", "--esp-namespace", "fleet", "--out", "f.csv"})
    local cmd = require("aliyun.iot.cli.report").resume_command(opts, "j.state")
    for _, want in ipairs{"--mqtt", "--signmethod hmacmd5", "--password-case upper",
                          "--no-secrets", "--format esp-idf", "--esp-namespace fleet",
                          "--instance-style old", "--securemode 2", "--out f.csv",
                          "--mqtt-timestamp " .. opts.mqtt_timestamp} do
      assert.truthy(cmd:find(want, 1, true), want .. " in " .. cmd)
    end
  end)

  it("refuses connection options without --mqtt and bad values, before any request", function()
    local base = ep() .. "register --product-key " .. PK .. " --count 2 "
    for _, c in ipairs{{"--signmethod hmacsha1", "--signmethod needs --mqtt"},
                       {"--mqtt --signmethod sha1", "--signmethod must be"},
                       {"--mqtt --securemode 1", "--securemode must be 2 (TLS) or 3 (TCP)"},
                       {"--mqtt --instance-style instance", "needs --iot-instance-id"},
                       {"--mqtt --password-case mixed", "--password-case must be"},
                       {"--mqtt --mqtt-timestamp 12a", "--mqtt-timestamp must be"},
                       {"--mqtt --mqtt-port 70000", "--mqtt-port"},
                       {"--format xml", "--format must be csv, json, ndjson or esp-idf"},
                       {"--esp-namespace x", "applies to --format esp-idf only"}} do
      local code, _, err = run(base .. c[1])
      assert.are.equal(2, code, c[1])
      assert.truthy(err:find(c[2], 1, true), err)
    end
    assert.are.equal(0, #emu:requests())
  end)
end)
