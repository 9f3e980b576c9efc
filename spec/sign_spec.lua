local core = require "aliyun.iot.core"
local vectors = require "spec.support.vectors"

local function check_vectors()
  for _, v in ipairs(vectors.v1) do
    local sig, sts, canonical = core.sign_rpc(v.method, v.params, v.access_key_secret)
    assert.are.equal(v.signature, sig, v.name)
    if v.string_to_sign then assert.are.equal(v.string_to_sign, sts, v.name) end
    if v.canonical_query then assert.are.equal(v.canonical_query, canonical, v.name) end
    if v.signature_url_encoded then
      assert.are.equal(v.signature_url_encoded, core.percent_encode(sig), v.name)
    end
  end
  for _, v in ipairs(vectors.v3) do
    local auth, signed, hashed = core.sign_acs3{
      method = v.method, path = v.path, query = v.query, headers = v.headers,
      body = v.body, body_sha256 = v.body_sha256,
      access_key_id = v.access_key_id, access_key_secret = v.access_key_secret,
    }
    if v.authorization then assert.are.equal(v.authorization, auth, v.name) end
    if v.signed_headers then assert.are.equal(v.signed_headers, signed, v.name) end
    if v.hashed_canonical_request then
      assert.are.equal(v.hashed_canonical_request, hashed, v.name)
    end
    if v.signature then
      assert.are.equal(("ACS3-HMAC-SHA256 Credential=%s,SignedHeaders=%s,Signature=%s")
        :format(v.access_key_id, signed, v.signature), auth, v.name)
    end
  end
  for _, v in ipairs(vectors.hmac_sha1) do
    assert.are.equal(v.hmac_sha1_base64, core.hmac_sha1(v.key, v.data))
  end
  for _, v in ipairs(vectors.percent_encode) do
    assert.are.equal(v.out, core.percent_encode(v["in"]))
  end
end

describe("core signing", function()
  it("reproduces every vector of spec/vectors.json", function()
    assert.is_true(#vectors.v1 >= 10 and #vectors.v3 >= 2)
    check_vectors()
  end)

  it("gives the same signatures under a non-C collation locale", function()
    local old = os.setlocale(nil, "all")
    local set = os.setlocale("de_DE.UTF-8", "all") or os.setlocale("de_DE.utf8", "all")
    assert.is_truthy(set, "de_DE.UTF-8 locale missing: run make deps")
    -- the locale really changes collation: "a" sorts before "B" in German, not in C
    -- (LuaJIT compares strings bytewise, never through strcoll: nothing to see there)
    if not rawget(_G, "jit") then assert.is_true(("a") < ("B")) end
    local ok, err = pcall(check_vectors)
    os.setlocale(old, "all")
    assert(ok, err)
  end)

  describe("percent_encode", function()
    local cases = {
      {" ", "%20"}, {"*", "%2A"}, {"!", "%21"}, {"'", "%27"}, {"(", "%28"}, {")", "%29"},
      {"~", "~"}, {"+", "%2B"}, {"/", "%2F"}, {"=", "%3D"}, {"-_.", "-_."},
      {"中", "%E4%B8%AD"}, {"😀", "%F0%9F%98%80"}, {"", ""}, {"a\0b", "a%00b"},
      {"AZaz09", "AZaz09"},
    }
    for _, c in ipairs(cases) do
      it(("encodes %q"):format(c[1]), function()
        assert.are.equal(c[2], core.percent_encode(c[1]))
      end)
    end
  end)

  describe("sign_rpc", function()
    local base = {AccessKeyId = "testid", Action = "X", Format = "JSON"}
    local function with(extra)
      local t = {}
      for k, v in pairs(base) do t[k] = v end
      for k, v in pairs(extra) do t[k] = v end
      return t
    end

    it("signs an empty value as k=", function()
      local _, _, canonical = core.sign_rpc("GET", with{Empty = ""}, "s")
      assert.matches("&Empty=&", canonical, 1, true)
    end)

    it("signs integers, integral floats and booleans as the API's strings", function()
      local _, _, c1 = core.sign_rpc("GET", with{ApplyId = 4415, On = true, Off = false}, "s")
      local _, _, c2 = core.sign_rpc("GET", with{ApplyId = 4415.0, On = "true", Off = "false"}, "s")
      local _, _, c3 = core.sign_rpc("GET", with{ApplyId = "4415", On = "true", Off = "false"}, "s")
      assert.are.equal(c3, c1)
      assert.are.equal(c3, c2)
      assert.matches("ApplyId=4415&", c1, 1, true)
    end)

    it("rejects a non-integral float and other types, naming the parameter", function()
      assert.has_error(function() core.sign_rpc("GET", with{ApplyId = 1.5}, "s") end)
      local ok, err = pcall(core.sign_rpc, "GET", with{Bad = {}}, "s")
      assert.is_false(ok)
      assert.matches("Bad", err)
      ok, err = pcall(core.sign_rpc, "GET", with{Fn = print}, "s")
      assert.is_false(ok)
      assert.matches("Fn", err)
    end)

    it("sorts flattened lists in byte order (DeviceName.10 before DeviceName.2)", function()
      local names = {}
      for i = 1, 12 do names[i] = ("dev_%02d"):format(i) end
      local flat = assert(core.flatten(with{DeviceName = names}))
      local _, _, canonical = core.sign_rpc("POST", flat, "s")
      local order = {}
      for k in canonical:gmatch("DeviceName%.(%d+)=") do order[#order + 1] = tonumber(k) end
      assert.are.same({1, 10, 11, 12, 2, 3, 4, 5, 6, 7, 8, 9}, order)
    end)

    it("signs a secret containing & = + / and non-ASCII", function()
      local sig1 = core.sign_rpc("GET", base, "a&b=c+d/é")
      local sig2 = core.sign_rpc("GET", base, "a&b=c+d/e")
      assert.are_not.equal(sig1, sig2)
      assert.are.equal(28, #sig1)
    end)

    it("signs right when the secret changes between calls (the kept HMAC context)", function()
      -- another implementation's HMAC (luaossl) over our own string to sign
      local hmac = require "openssl.hmac"
      local b64 = function(raw) return (require "mime").b64(raw) end
      for _, secret in ipairs{"s1", "s2", "s1", "", "s1&", "s1", ("x"):rep(200), "s2"} do
        local sig, sts = core.sign_rpc("POST", base, secret)
        assert.are.equal(b64(hmac.new(secret .. "&", "sha1"):final(sts)), sig, secret)
        -- hmac_sha1 and sign_acs3 in between use the same per-state contexts
        assert.are.equal(b64(hmac.new("k", "sha1"):final(sts)), core.hmac_sha1("k", sts))
      end
    end)

    it("puts the method into the string to sign", function()
      local g, gs = core.sign_rpc("GET", base, "s")
      local p, ps = core.sign_rpc("POST", base, "s")
      assert.are_not.equal(g, p)
      assert.are.equal("GET&%2F&", gs:sub(1, 8))
      assert.are.equal("POST&%2F&", ps:sub(1, 9))
    end)

    it("raises when params is not a table", function()
      assert.has_error(function() core.sign_rpc("GET", "x", "s") end)
      assert.has_error(function() core.sign_rpc("GET", {}, nil) end)
    end)
  end)

  describe("canonical order and encoding, against a plain Lua statement of the rules", function()
    local function encode(str)
      return (str:gsub("[^A-Za-z0-9%-_.~]", function(c) return ("%%%02X"):format(c:byte()) end))
    end
    local function reference(params)
      local names = {}
      for k in pairs(params) do names[#names + 1] = k end
      table.sort(names) -- byte order: the C locale's strcmp for ASCII names
      local parts = {}
      for i, k in ipairs(names) do parts[i] = encode(k) .. "=" .. encode(tostring(params[k])) end
      return table.concat(parts, "&")
    end
    local function check(params)
      local _, sts, canonical = core.sign_rpc("POST", params, "s")
      assert.are.equal(reference(params), canonical)
      assert.are.equal("POST&%2F&" .. encode(canonical), sts)
    end

    it("encodes every byte value", function()
      local all = {}
      for b = 0, 255 do all[#all + 1] = string.char(b) end
      all = table.concat(all)
      assert.are.equal(encode(all), core.percent_encode(all))
      check{Value = all}
    end)

    it("orders 10,000 flattened names with nicknames (long shared prefixes)", function()
      local list = {}
      for i = 1, 10000 do list[i] = {DeviceName = ("dev%05d"):format(i), DeviceNickname = "n" .. i} end
      check(assert(core.flatten{ProductKey = "pk", DeviceNameList = list}))
    end)

    it("orders names with many distinct first words, ties and odd lengths", function()
      local params, seed = {}, 7
      local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n end
      for i = 1, 600 do
        local len = 1 + rnd(40)
        local name = {}
        for j = 1, len do name[j] = string.char(65 + rnd(4) + (j % 3 == 0 and 32 or 0)) end
        params[table.concat(name) .. (i % 5 == 0 and ("SharedPrefix_0123456789" .. i) or "")] = "v" .. i
      end
      for i = 1, 40 do params[("Word%02dxxxxxxxxxxxxxxxx"):format(i) .. i] = i end
      check(params)
    end)
  end)

  describe("flatten", function()
    it("flattens lists and lists of records", function()
      local flat = assert(core.flatten{
        ProductKey = "pk",
        DeviceName = {"a", "b"},
        DeviceNameList = {{DeviceName = "x", DeviceNickname = "nx"}, {DeviceName = "y"}},
      })
      assert.are.same({
        ProductKey = "pk", ["DeviceName.1"] = "a", ["DeviceName.2"] = "b",
        ["DeviceNameList.1.DeviceName"] = "x", ["DeviceNameList.1.DeviceNickname"] = "nx",
        ["DeviceNameList.2.DeviceName"] = "y",
      }, flat)
    end)

    it("keeps scalar values as given", function()
      local flat = assert(core.flatten{Count = 10, On = true, S = "x"})
      assert.are.same({Count = 10, On = true, S = "x"}, flat)
      assert.are.equal(math.type and "integer" or "number", math.type and math.type(flat.Count) or type(flat.Count))
    end)

    it("rejects a hole, a mixed table and a function, naming the parameter", function()
      local r, msg, name, _ = core.flatten{DeviceName = {"a", nil, "c"}}
      assert.is_nil(r); assert.matches("hole", msg); assert.are.equal("DeviceName", name)
      r, _, name = core.flatten{DeviceNameList = {{DeviceName = "a"}, {DeviceName = {x = print}}}}
      assert.is_nil(r); assert.are.equal("DeviceNameList.2.DeviceName.x", name)
      r, _, name = core.flatten{L = {1, 2, x = 3}}
      assert.is_nil(r); assert.are.equal("L", name)
    end)

    it("raises when params is not a table", function()
      assert.has_error(function() core.flatten("x") end)
    end)
  end)

  describe("sign_acs3", function()
    it("hashes the body into x-acs-content-sha256 when it is given", function()
      local _, signed, _, sha = core.sign_acs3{
        method = "POST", path = "/", headers = {host = "h", ["x-acs-action"] = "A"},
        body = "", access_key_id = "id", access_key_secret = "s",
      }
      assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", sha)
      assert.are.equal("host;x-acs-action;x-acs-content-sha256", signed)
    end)

    it("ignores unsigned headers and lower-cases names", function()
      local _, signed = core.sign_acs3{
        method = "GET", headers = {Host = "h", ["User-Agent"] = "x", ["X-Acs-Date"] = "d"},
        body_sha256 = "00", access_key_id = "id", access_key_secret = "s",
      }
      assert.are.equal("host;x-acs-date", signed)
    end)
  end)

  describe("nonce", function()
    it("is UUID-v4-shaped and unique over 100,000 calls", function()
      local seen, n = {}, 100000
      for _ = 1, n do
        local v = core.nonce()
        assert(not seen[v], "duplicate nonce")
        seen[v] = true
      end
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x+$", core.nonce())
    end)
  end)

  describe("timestamp", function()
    it("formats UTC whatever TZ says", function()
      -- a child process, so TZ is read at its start-up as in a user's program
      local lua = os.getenv("ALIYUN_IOT_LUA") or "lua5.4"
      local cmd = ("TZ=Asia/Shanghai LUA_CPATH=%q %s -e %q"):format(package.cpath, lua,
        'print(require("aliyun.iot.core").timestamp(0))')
      local p = io.popen(cmd)
      local out = p:read("*a")
      p:close()
      assert.are.equal("1970-01-01T00:00:00Z\n", out)
      assert.are.equal("2024-05-20T08:00:00Z", core.timestamp(1716192000))
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", core.timestamp())
    end)
  end)
end)
