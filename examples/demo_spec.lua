-- `make demo` run as a user runs it (examples/demo.lua in its own process): it ends with
-- exit 0 and a complete 0600 CSV of every device it registered.
local shell = require "spec.support.shell"

local LUA = os.getenv("ALIYUN_IOT_LUA")
  or (rawget(_G, "jit") and "luajit" or "lua" .. _VERSION:match("%d+%.%d+"))

describe("examples/demo.lua", function()
  it("registers 2,523 devices and writes them all to a 0600 CSV", function()
    local dir = shell.capture("mktemp -d"):gsub("%s+$", "")
    local out = dir .. "/devices.csv"
    local ok = shell.ok(("%s examples/demo.lua %s >%s/log 2>&1"):format(LUA, shell.quote(out),
                                                                       shell.quote(dir)))
    local log = shell.read(dir .. "/log") or ""
    assert.is_true(ok, log)
    local text = assert(shell.read(out), log)
    local rows = 0
    for _ in text:gmatch("\r\n") do rows = rows + 1 end
    assert.are.equal(2524, rows) -- the header and 2,523 devices
    assert.are.equal("-rw-------", shell.capture("stat -c %A " .. shell.quote(out)):sub(1, 10))
    assert.is_nil(log:find("left out: \"lamp", 1, true))
    shell.ok("rm -rf " .. shell.quote(dir))
  end)
end)
