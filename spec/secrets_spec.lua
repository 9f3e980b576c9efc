-- No secret in any text a user or an operator sees (issue "Hardening", section "Secrets"):
-- every error string and __tostring, every progress event, every log line (a logger that
-- records everything, debug included) and the CLI's stderr, over runs that go wrong in
-- every way the emulator can make them (503, throttling, resets, truncated and malformed
-- bodies, slow answers, a SignatureDoesNotMatch with a SecurityToken), are searched for
-- the AccessKeySecret, the SecurityToken and every DeviceSecret the service holds.
local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"

local PK = "a1TestPK001"
local ID, SECRET = "secretid", "Sup3rS3cret&Key=Value+/中"
local TOKEN = "STS.TokenValue/With+Odd=Chars&More"
local WRONG = "WrongSecretValue-12345"
local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))
local BIN = os.getenv("PWD") .. "/bin/aliyun-iot"

local q = require("spec.support.shell").quote

-- Every string reachable from v (keys and values), skipping the fields that carry secrets
-- by contract (a result's or an error's devices: the user asked for them).
local function strings_of(v, out, seen)
  out, seen = out or {}, seen or {}
  if type(v) == "string" then
    out[#out + 1] = v
  elseif type(v) == "number" or type(v) == "boolean" then
    out[#out + 1] = tostring(v)
  elseif type(v) == "table" and not seen[v] then
    seen[v] = true
    local mt = getmetatable(v)
    if mt and mt.__tostring then out[#out + 1] = tostring(v) end
    for k, x in pairs(v) do
      if k ~= "devices" and k ~= "Devices" then
        strings_of(k, out, seen)
        strings_of(x, out, seen)
      end
    end
  end
  return out
end

local function forms(s)
  local enc = s:gsub("[^%w%-_%.~]", function(c) return ("%%%02X"):format(c:byte()) end)
  return {s, enc, (s:gsub(" ", "+"))}
end

-- Asserts that none of the texts holds any of the secrets, raw or percent-encoded.
local function assert_clean(texts, secrets, where)
  assert.is_true(#texts > 0, where .. ": nothing was collected")
  local all = table.concat(texts, "\0")
  for _, s in ipairs(secrets) do
    for _, f in ipairs(forms(s)) do
      local i = all:find(f, 1, true)
      assert.is_nil(i, ("%s: a secret appears in %q"):format(where, all:sub((i or 1) - 80, (i or 1) + 80)))
    end
  end
end

-- The redactor on its own (issue 17: "body starts:" snippets could be bypassed). Every
-- planted value holds LEAK; nothing of it may survive.
describe("the redactor", function()
  local errors = require "aliyun.iot.errors"
  local KEY, TOK = "Sup3rS3cret&Key=Value+/中", "STS.TokenValue/With+Odd=Chars&More"
  local redact = errors.redactor{KEY, TOK}

  local function clean(text, keep)
    local out = redact(text)
    assert.is_nil(out:find("LEAK", 1, true), ("%q -> %q"):format(text, out))
    for _, k in ipairs(keep or {}) do
      assert.truthy(out:find(k, 1, true), ("%q lost %q: %q"):format(text, k, out))
    end
    return out
  end

  it("blanks a DeviceSecret however the JSON name is escaped", function()
    for _, name in ipairs{[[Device\u0053ecret]], [[\u0044eviceSecret]], [[Device\u0053\u0065cret]],
                          [[\u0044\u0065\u0076\u0069\u0063\u0065\u0053\u0065\u0063\u0072\u0065\u0074]],
                          [[DEVICESECRET]], [[devicesecret]], "DeviceSecret"} do
      clean('{"DeviceName":"lamp_1","' .. name .. '":"LEAK1234","IotId":"id1"}',
            {"lamp_1", "id1"})
      clean('{"' .. name .. '" : "LEAK1234"}')
    end
  end)

  it("blanks the whole value when it holds escaped quotes or other escapes", function()
    for _, value in ipairs{[[ab\"LEAK\"cd]], [[\"LEAK]], [[ab\\\"LEAK]], [[LE\u0041K]],
                           [[LEAK\\]]} do
      clean('{"DeviceSecret":"' .. value .. '","DeviceName":"lamp_1"}')
    end
    -- a value that is not a string is blanked whole as well
    clean('{"DeviceSecret":["LEAK1",{"x":"LEAK2"}],"DeviceName":"lamp_1"}', {"lamp_1"})
    local out = clean('{"DeviceSecret":12345678,"DeviceName":"lamp_1"}', {"lamp_1"})
    assert.is_nil(out:find("12345678", 1, true), out)
  end)

  it("blanks a value the snippet cut short", function()
    clean('{"DeviceName":"lamp_1","DeviceSecret":"LEAK12')
    clean('{"DeviceName":"lamp_1","DeviceSecret":"ab\\"LEAK')
    clean('{"List":[{"Device\\u0053ecret":"LEAK')
  end)

  it("blanks an XML DeviceSecret with CDATA, attributes, children or a prefix", function()
    for _, el in ipairs{"<DeviceSecret><![CDATA[LEAK</x>]]></DeviceSecret>",
                        "<DeviceSecret>ab<![CDATA[LEAK]]></DeviceSecret>",
                        '<DeviceSecret id="1">LEAK</DeviceSecret>',
                        "<DeviceSecret >LEAK</DeviceSecret >",
                        "<DeviceSecret\n>LEAK</DeviceSecret>",
                        "<DeviceSecret><a>LEAK</a></DeviceSecret>",
                        "<iot:DeviceSecret>LEAK</iot:DeviceSecret>",
                        "<DeviceSecret>&#76;EAK</DeviceSecret>",
                        "<DeviceSecret><![CDATA[a</DeviceSecret>]]>LEAK</DeviceSecret>",
                        "<DeviceSecret>a<!-- </DeviceSecret> -->LEAK</DeviceSecret>",
                        "<DeviceSecret>LEAK"} do
      clean("<R><DeviceName>lamp_1</DeviceName>" .. el .. "<IotId>id1</IotId></R>",
            el:find("</", 1, true) and {"lamp_1", "id1"} or {"lamp_1"})
    end
    local out = clean("<R><DeviceSecretHint>kept</DeviceSecretHint><DeviceSecret/></R>", {"kept"})
    assert.truthy(out:find("<DeviceSecret/>", 1, true))
  end)

  it("blanks SecurityToken and AccessKeySecret fields too", function()
    clean('{"Credentials":{"AccessKeyId":"STS.id","AccessKeySecret":"LEAK1",' ..
          '"SecurityToken":"LEAK2","Expiration":"2030"}}', {"STS.id", "2030"})
    clean("<Credentials><AccessKeySecret>LEAK</AccessKeySecret>" ..
          "<SecurityToken><![CDATA[LEAK]]></SecurityToken></Credentials>")
    clean("x=1&SecurityToken=LEAK&y=2", {"x=1", "y=2"})
    clean("GET&%2F&AccessKeyId%3Did%26SecurityToken%3DLEAK%26Timestamp", {"Timestamp"})
    clean("GET&%2F&SecurityToken%253DLEAK%2526x")
  end)

  it("redacts documents escaped inside JSON strings", function()
    clean('{"Message":"echo: {\\"DeviceSecret\\":\\"LEAK\\"}","Code":"X"}', {"echo", "X"})
    clean('{"Message":"echo: {\\"Device\\\\u0053ecret\\":\\"LEAK\\"}"}')
    clean('{"Message":"{\\"DeviceSecret\\":\\"ab\\\\\\"LEAK\\"}"}')
    clean('{"Message":"<DeviceSecret>LEAK<\\/DeviceSecret>"}')
    -- an unpaired quote earlier does not hide a member from the redactor
    clean('{"a":"x"y", "DeviceSecret":"LEAK"}')
  end)

  it("finds the known secrets in their JSON and XML spellings", function()
    local json_tok = TOK:gsub("/", "\\/")
    for _, text in ipairs{'{"t":"' .. json_tok .. '"}',
                          '{"t":"' .. TOK:gsub("S", "\\u0053") .. '"}',
                          '{"k":"' .. KEY:gsub("/", "\\/"):gsub("中", "\\u4e2d") .. '"}',
                          "<T>" .. TOK:gsub("&", "&amp;") .. "</T>",
                          "<K>" .. KEY:gsub("&", "&#38;") .. "</K>"} do
      local out = redact(text)
      assert.is_nil(out:find("TokenValue", 1, true), out)
      assert.is_nil(out:find("Sup3r", 1, true), out)
    end
  end)

  it("leaves text without secrets as it was", function()
    for _, text in ipairs{'{"DeviceName":"lamp_1","Nickname":"a \\"b\\" c","Page":1}',
                          "<R><DeviceName>lamp&amp;1</DeviceName></R>",
                          "plain text: DeviceSecret is what you get", "a=1&b=2", ""} do
      assert.are.equal(text, redact(text))
    end
  end)
end)

describe("errors.redact_tree", function()
  local errors = require "aliyun.iot.errors"
  local redact = errors.redactor{"Sup3rS3cretValue"}

  it("blanks secret fields at any depth and redacts every string, keys included", function()
    local tree = {
      Code = "X", Message = "key Sup3rS3cretValue echoed", Page = 2, Success = false,
      Data = {List = {{DeviceName = "lamp_1", DeviceSecret = "LEAK1"},
                      {DeviceName = "lamp_2", devicesecret = {"LEAK2"}}, false}},
      Credentials = {SecurityToken = "LEAK3", AccessKeySecret = "LEAK4"},
      ["Sup3rS3cretValue"] = "as a key",
      Echo = '{"DeviceSecret":"LEAK5"}',
    }
    local out = errors.redact_tree(tree, redact)
    assert.are.same({
      Code = "X", Message = "key *** echoed", Page = 2, Success = false,
      Data = {List = {{DeviceName = "lamp_1", DeviceSecret = "***"},
                      {DeviceName = "lamp_2", devicesecret = "***"}, false}},
      Credentials = {SecurityToken = "***", AccessKeySecret = "***"},
      ["***"] = "as a key",
      Echo = '{"DeviceSecret":"***"}',
    }, out)
    assert.are.equal("LEAK1", tree.Data.List[1].DeviceSecret) -- the original is untouched
    assert.are.equal("a ***", errors.redact_tree("a Sup3rS3cretValue", redact))
    assert.are.equal(7, errors.redact_tree(7, redact))
  end)
end)

describe("errors.snippet on a long body", function()
  local errors = require "aliyun.iot.errors"

  it("never shows part of a secret field that runs past the cut or what is redacted", function()
    local redact = errors.redactor{}
    local body = ('{"x":"' .. ("a"):rep(480) .. '","DeviceSecret":"LEAK' .. ("L"):rep(200000) .. '"}')
    local s = errors.snippet(body, redact, 512)
    assert.is_nil(s:find("LEAK", 1, true), s)
    assert.truthy(s:find('"DeviceSecret":"***', 1, true), s)
  end)
end)

describe("secrets", function()
  local emu

  it("the search finds a planted secret in any of its forms", function()
    for _, f in ipairs(forms(SECRET)) do
      assert.has_error(function() assert_clean({"x", "a" .. f .. "b"}, {SECRET}, "planted") end)
    end
    assert_clean({"nothing to see"}, {SECRET, TOKEN}, "clean")
  end)

  setup(function()
    emu = emulator.start{access_keys = {[ID] = SECRET}, security_tokens = {TOKEN},
                         async_delay = 0}
  end)
  teardown(function() emu:stop() end)
  before_each(function() emu:reset() end)

  local function client(opts, logs)
    local o = {access_key_id = ID, access_key_secret = SECRET, security_token = TOKEN,
               endpoint = emu.endpoint, qps = false, max_retries = 2, timeout = 0.5,
               logger = function(level, msg) logs[#logs + 1] = level .. " " .. tostring(msg) end}
    for k, v in pairs(opts or {}) do o[k] = v end
    return assert(iot.new(o))
  end

  -- Every DeviceSecret the service holds, read back without faults.
  local function device_secrets()
    local c = client({}, {})
    local secrets = {}
    for _, a in ipairs(emu:state().applies) do
      if a.Status == "CREATE_SUCCESS" then
        for page = 1, 100 do
          local r = assert(c:query_page_by_apply_id{ApplyId = a.ApplyId, PageSize = 50,
                                                    CurrentPage = page})
          local list = r.ApplyDeviceList and r.ApplyDeviceList.ApplyDeviceInfo or {}
          for _, d in ipairs(list) do secrets[#secrets + 1] = d.DeviceSecret end
          if #list < 50 then break end
        end
      end
    end
    return secrets
  end

  local FAULTS = {
    {kind = "503", count = 2},
    {kind = "throttle", count = 2},
    {kind = "reset", count = 1},
    {kind = "reset_after", count = 1, action = "BatchRegisterDevice"},
    {kind = "truncate", count = 2, action = "QueryPageByApplyId"},
    {kind = "malformed", count = 2, action = "QueryPageByApplyId"},
    {kind = "truncate", count = 1, action = "RegisterDevice"},
    {kind = "slow", count = 1, delay = 1, action = "QueryPageByApplyId"},
  }

  for _, algorithm in ipairs{"HMAC-SHA1", "ACS3-HMAC-SHA256"} do
    it("never shows a secret in errors, logs or progress under faults (" .. algorithm .. ")", function()
      local texts, logs, secrets = {}, {}, {}
      local c = client({signature_algorithm = algorithm}, logs)
      local function keep(res, err)
        if res then
          for _, d in ipairs(res.Devices or {}) do secrets[#secrets + 1] = d.DeviceSecret end
        end
        if err then
          strings_of(err, texts)
          texts[#texts + 1] = tostring(err)
          for _, d in ipairs(err.devices or {}) do secrets[#secrets + 1] = d.DeviceSecret end
        end
      end
      local function progress(e) strings_of(e, texts) end
      for i, f in ipairs(FAULTS) do
        emu:clear_faults()
        emu:fault(f)
        keep(c:register_devices{ProductKey = PK, Count = 60, on_progress = progress})
        keep(c:register_named_devices{ProductKey = PK, on_progress = progress,
          Devices = {("named_%02d_a"):format(i), ("named_%02d_b"):format(i)}})
        keep(c:register_device{ProductKey = PK, DeviceName = ("single_%02d"):format(i)})
        keep(c:query_page_by_apply_id{ApplyId = 100000, PageSize = 50})
      end
      emu:clear_faults()
      for _, s in ipairs(device_secrets()) do secrets[#secrets + 1] = s end
      assert.is_true(#secrets >= 60, "the runs created devices")
      for _, l in ipairs(logs) do texts[#texts + 1] = l end
      secrets[#secrets + 1] = SECRET
      secrets[#secrets + 1] = TOKEN
      assert_clean(texts, secrets, algorithm)
    end)

    it("keeps the SecurityToken and secret out of a SignatureDoesNotMatch (" .. algorithm .. ")", function()
      local logs = {}
      local c = client({access_key_secret = WRONG, signature_algorithm = algorithm}, logs)
      local res, err = c:register_devices{ProductKey = PK, Count = 3}
      assert.is_nil(res)
      assert.are.equal("SignatureDoesNotMatch", err.code)
      local _, err2 = c:call("QueryDeviceDetail", {IotId = "x"}, {method = "GET"})
      assert.are.equal("SignatureDoesNotMatch", err2.code)
      local texts = strings_of(err)
      strings_of(err2, texts)
      texts[#texts + 1] = tostring(err)
      texts[#texts + 1] = tostring(err2)
      for _, l in ipairs(logs) do texts[#texts + 1] = l end
      assert_clean(texts, {WRONG, TOKEN, SECRET}, "SignatureDoesNotMatch")
    end)
  end

  describe("the CLI", function()
    local tmp

    setup(function()
      tmp = require("spec.support.shell").temp_dir("/.alibabacloud")
    end)
    teardown(function() os.execute("rm -rf " .. q(tmp)) end)

    local function run(args, env)
      local p = assert(io.popen("cd " .. q(tmp) .. " && env -u LUA_PATH -u LUA_CPATH HOME=" ..
        q(tmp) .. " TMPDIR=" .. q(tmp) .. " " .. (env or "") .. " " .. LUA .. " " .. q(BIN) .. " --endpoint " ..
        emu.endpoint .. " " .. args .. " < /dev/null > out.txt 2> err.txt; echo $?"))
      local code = tonumber(p:read("*a"))
      p:close()
      local function read(name)
        local f = assert(io.open(tmp .. "/" .. name, "rb"))
        local s = f:read("*a")
        f:close()
        return s
      end
      return code, read("out.txt"), read("err.txt")
    end

    local function env_keys(secret)
      return "ALIBABA_CLOUD_ACCESS_KEY_ID=" .. ID .. " ALIBABA_CLOUD_ACCESS_KEY_SECRET=" ..
        q(secret) .. " ALIBABA_CLOUD_SECURITY_TOKEN=" .. q(TOKEN)
    end

    it("prints DeviceSecrets only to the output, never to stderr, also when things fail", function()
      local stderr, secrets, _ = {}, {}, nil
      local code, out, err = run("register --product-key " .. PK .. " --count 5", env_keys(SECRET))
      assert.are.equal(0, code, err)
      stderr[#stderr + 1] = err
      for secret in out:gmatch("\n[^,\n]*,[^,\n]*,([^,\n]*),") do secrets[#secrets + 1] = secret end
      assert.are.equal(5, #secrets)
      emu:fault{kind = "truncate", count = 5, action = "QueryPageByApplyId"}
      -- (service names: a client-named job retries its page reads past these faults)
      code, _, err = run("register --product-key " .. PK .. " --count 4 --service-names --timeout 1",
                         env_keys(SECRET))
      assert.are_not.equal(0, code)
      stderr[#stderr + 1] = err
      emu:clear_faults()
      emu:fault{kind = "malformed", count = 5, action = "QueryPageByApplyId"}
      code, _, err = run("register --product-key " .. PK .. " --count 4 --service-names",
                         env_keys(SECRET))
      assert.are_not.equal(0, code)
      stderr[#stderr + 1] = err
      emu:clear_faults()
      code, _, err = run("register --product-key " .. PK .. " --count 2", env_keys(WRONG))
      assert.are.equal(1, code)
      assert.truthy(err:find("SignatureDoesNotMatch", 1, true), err)
      stderr[#stderr + 1] = err
      for _, s in ipairs(device_secrets()) do secrets[#secrets + 1] = s end
      assert.is_true(#secrets >= 13)
      secrets[#secrets + 1] = SECRET
      secrets[#secrets + 1] = TOKEN
      secrets[#secrets + 1] = WRONG
      assert_clean(stderr, secrets, "CLI stderr")
    end)

    it("warns about a credentials file readable by others without quoting it", function()
      local path = tmp .. "/.alibabacloud/credentials"
      local f = assert(io.open(path, "wb"))
      f:write("[default]\ntype = access_key\naccess_key_id = " .. ID ..
              "\naccess_key_secret = " .. SECRET .. "\n")
      f:close()
      assert(os.execute("chmod 644 " .. q(path)))
      local code, _, err = run("status --product-key " .. PK .. " --apply-id 100000")
      assert.truthy(err:find("credentials", 1, true), err)
      assert.truthy(err:find("644", 1, true), err)
      assert.are_not.equal(2, code, err)
      assert_clean({err}, {SECRET}, "credentials warning")
    end)
  end)
end)
