-- The C core's housekeeping (issue 11 §3): what core.so exports, how its userdata classes
-- are registered, and the clocks that moved out of the signing file.
local core = require "aliyun.iot.core"

local function core_path()
  return assert(package.searchpath("aliyun.iot.core", package.cpath))
end

describe("core.so", function()
  it("exports only luaopen_aliyun_iot_core", function()
    local p = assert(io.popen("nm -D --defined-only '" .. core_path() .. "' 2>&1"))
    local out = p:read("*a")
    p:close()
    local names = {}
    for name in out:gmatch("%S+ %a (%S+)") do names[#names + 1] = name end
    assert.is_true(#names > 0, out)
    local ours = {}
    for _, name in ipairs(names) do
      -- toolchain and sanitizer internals start with "_"; everything else is ours
      if name:sub(1, 1) ~= "_" then ours[#ours + 1] = name end
    end
    assert.are.same({"luaopen_aliyun_iot_core"}, ours)
  end)

  it("registers each userdata class with __name, __index and its metamethods", function()
    local s = core.session()
    local mt = getmetatable(s)
    assert.are.equal("aliyun.iot.core.Session", mt.__name)
    assert.are.equal("function", type(mt.__index.perform))
    assert.are.equal("function", type(mt.__index.perform_many))
    assert.are.equal("function", type(mt.__index.close))
    assert.are.equal("function", type(mt.__gc))
    assert.are.equal("function", type(mt.__close))
    assert.truthy(tostring(s):find("aliyun.iot.core.Session", 1, true))
    assert.are.equal(mt, debug.getregistry()["aliyun.iot.core.Session"])
    s:close()
    s:close() -- idempotent
    assert.has_error(function() s:perform{method = "GET", url = "http://127.0.0.1:9/"} end)
    -- every class the core registers carries its name
    for name, v in pairs(debug.getregistry()) do
      if type(name) == "string" and name:find("^aliyun%.iot%.core%.") and type(v) == "table"
          and name ~= "aliyun.iot.core.cjson_decode" then
        assert.are.equal(name, v.__name, name)
      end
    end
  end)
end)

describe("core clocks", function()
  it("keeps now, time and sleep", function()
    local t0, w0 = core.now(), core.time()
    core.sleep(0.02)
    assert.is_true(core.now() - t0 >= 0.015)
    assert.is_true(math.abs(w0 - os.time()) < 5)
    core.sleep(0)
    core.sleep(-1)
    assert.has_error(function() core.sleep(1e7) end)
    assert.has_error(function() core.sleep("x") end)
  end)
end)
