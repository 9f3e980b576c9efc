-- errors.printable / errors.snippet and core.random: the shared helpers every layer uses
-- to print server text and to draw jitter.
local errors = require "aliyun.iot.errors"
local core = require "aliyun.iot.core"

describe("errors.printable", function()
  it("escapes C0 controls, DEL and UTF-8 C1 controls, keeps other UTF-8", function()
    assert.equal("a\\x1B[2Jb\\nc\\x00d\\x7F\\u{9B}x é",
      errors.printable("a\27[2Jb\nc\0d\127\194\155x é"))
  end)

  it("is applied by an error's tostring to code and message", function()
    local s = tostring(errors.new{code = "X\27]0;t\7", message = "all OK\r\27[2K"})
    assert.is_nil(s:find("[%c]"))
    assert.truthy(s:find("X\\x1B]0;t\\x07: all OK\\r\\x1B[2K", 1, true))
  end)

  it("is applied by an error's tostring to every field it prints, RequestId and HTTP status included",
     function()
    local s = tostring(errors.new{code = "Bad", message = "m", request_id = "r\27[1m",
                                  http_status = "5\27[2J"})
    assert.is_nil(s:find("%c"))
    assert.truthy(s:find("RequestId r\\x1B[1m", 1, true))
    assert.truthy(s:find("HTTP 5\\x1B[2J", 1, true))
  end)

  it("escapes Unicode bidirectional controls as \\u{HHHH}, keeps other U+2000 block text", function()
    local rlo, lrm, rli, pdi = "\226\128\174", "\226\128\142", "\226\129\167", "\226\129\169"
    assert.equal("a\\u{202E}b\\u{200E}c\\u{2067}d\\u{2069}\226\128\148\226\128\175",
      errors.printable("a" .. rlo .. "b" .. lrm .. "c" .. rli .. "d" .. pdi
                       .. "\226\128\148\226\128\175"))
    for _, cp in ipairs{0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x2066, 0x2068} do
      local ch = string.char(0xE2, 0x80 + math.floor((cp - 0x2000) / 64), 0x80 + (cp - 0x2000) % 64)
      assert.equal(("\\u{%04X}"):format(cp), errors.printable(ch))
    end
    local s = tostring(errors.new{code = "Bad", message = "ok" .. rlo .. "gnp.exe"})
    assert.truthy(s:find("ok\\u{202E}gnp.exe", 1, true))
  end)
end)

describe("errors.snippet", function()
  it("redacts before it cuts, so a secret across the cut never shows half", function()
    local secret = ("S"):rep(600)
    local redact = errors.redactor{secret}
    local s = errors.snippet(("x"):rep(300) .. secret, redact, 512)
    assert.is_nil(s:find("SSSS", 1, true))
    assert.truthy(s:find("***", 1, true))
  end)

  it("cuts on a UTF-8 boundary and escapes controls", function()
    local s = errors.snippet(("é"):rep(300) .. "\27", function(t) return t end, 11)
    assert.equal(("é"):rep(5) .. "...", s)
    assert.equal("a\\x1B", errors.snippet("a\27", function(t) return t end))
  end)
end)

describe("core.random", function()
  it("returns numbers in [0, 1) that differ between processes", function()
    for _ = 1, 1000 do
      local r = core.random()
      assert.is_true(r >= 0 and r < 1)
    end
    local lua = os.getenv("ALIYUN_IOT_LUA") or "lua5.4"
    local cmd = lua .. [[ -e 'io.write(require("aliyun.iot.core").random())']]
    local a = io.popen(cmd):read("*a")
    local b = io.popen(cmd):read("*a")
    assert.is_true(#a > 0)
    assert.not_equal(a, b)
  end)
end)
