-- The repository's own tooling, as a contributor or CI meets it: tools/test.sh's closing
-- list of failing tests, `make demo` installing no test tooling, `make docs` rendering
-- the Client's methods, and README's Lua examples running against the emulator.
local shell = require "spec.support.shell"
local q, ok, capture, write = shell.quote, shell.ok, shell.capture, shell.write

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(ok("mkdir -m 700 " .. q(d)))
  return d
end

-- A fake program on PATH: records each call's arguments in log, prints out, exits 0.
local function fake(dir, name, out, log)
  local path = dir .. "/" .. name
  write(path, ("#!/bin/sh\necho \"$*\" >> %s\nprintf '%%s' %s\n"):format(q(log), q(out or "")))
  assert(ok("chmod +x " .. q(path)))
end

describe("the repository's tooling", function()
  local tmp
  before_each(function() tmp = tmpdir() end)
  after_each(function() ok("rm -rf " .. q(tmp)) end)

  it("tools/test.sh lists the failing tests with their step just above its closing line",
    function()
    fake(tmp, "busted", "ok 1 - a passes\nnot ok 2 - b fails\n# b fails: why\n1..2\n",
      tmp .. "/busted.log")
    local out = capture(("PATH=%s:$PATH LUA=lua5.4 sh tools/test.sh core 2>&1"):format(q(tmp)))
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal("1 passed, 1 failed", lines[#lines])
    assert.are.equal("lua5.4: not ok 2 - b fails", lines[#lines - 1])
    assert.are.equal("Failing tests:", lines[#lines - 2])
  end)

  it("tools/test.sh lists a step that died before reporting any test", function()
    fake(tmp, "busted", "lua5.4: cannot open spec\n", tmp .. "/busted.log")
    local out = capture(("PATH=%s:$PATH LUA=lua5.4 sh tools/test.sh core 2>&1"):format(q(tmp)))
    assert.matches("Failing tests:\nlua5.4: not ok %- the step reported no test[^\n]*\n0 passed, 1 failed\n$",
      out)
  end)

  it("tools/test.sh prints no list when nothing fails", function()
    fake(tmp, "busted", "ok 1 - a passes\n1..1\n", tmp .. "/busted.log")
    local out = capture(("PATH=%s:$PATH LUA=lua5.4 sh tools/test.sh core 2>&1"):format(q(tmp)))
    assert.is_nil(out:find("Failing tests:", 1, true))
    assert.matches("\n1 passed, 0 failed\n$", out)
  end)

  it("make demo installs none of the Node.js test tooling (make deps does)", function()
    -- A copy of tools/deps.sh beside a lock file and no node_modules, as in a fresh clone,
    -- with a fake npm that records its calls.
    assert(ok(("mkdir -p %s/tools/node %s/bin && cp tools/deps.sh %s/tools/ && " ..
      "cp tools/node/package-lock.json %s/tools/node/"):format(q(tmp), q(tmp), q(tmp), q(tmp))))
    local log = tmp .. "/npm.log"
    fake(tmp .. "/bin", "npm", "", log)
    local path = ("PATH=%s/bin:$PATH"):format(q(tmp))
    assert.is_true(ok(("%s sh %s/tools/deps.sh demo >/dev/null 2>&1"):format(path, q(tmp))))
    assert.is_nil(shell.read(log), "deps.sh demo ran npm")
    -- the demo target asks for the demo set, not for the deps target
    local plan = capture("make -n demo 2>&1")
    assert.matches("sh tools/deps.sh demo\n", plan)
    assert.is_nil(plan:find("tools/deps.sh\n", 1, true))
    -- the full set does run npm ci there (so the fake above would have seen it)
    if ok("command -v node >/dev/null 2>&1") then
      assert.is_true(ok(("%s sh %s/tools/deps.sh >/dev/null 2>&1"):format(path, q(tmp))))
      assert.matches("^ci ", shell.read(log) or "")
    end
  end)

  it("make docs renders the Client's methods with LDoc, without a warning", function()
    local out = capture(("make --no-print-directory docs DOCS_DIR=%s 2>&1; echo \"exit $?\"")
      :format(q(tmp .. "/html")))
    assert.matches("exit 0\n$", out)
    local page = shell.read(tmp .. "/html/classes/aliyun.iot.Client.html")
    assert.is_not_nil(page, "no Client page in:\n" .. out)
    local function method(name)
      return page:find(('name = "aliyun.iot.Client:%s"'):format(name), 1, true) ~= nil
    end
    for _, name in ipairs{"register_devices", "register_named_devices", "wait_apply",
                          "apply_devices", "product_devices", "check_device_names", "resume",
                          "batch_register_device", "call",
                          "invoke", "call_many", "invoke_many"} do
      assert.is_true(method(name), name .. " is not a Client method in the HTML")
    end
    -- one method per row of the action table, each with its retry class
    local actions = require "aliyun.iot.actions"
    for action in pairs(actions.rows) do
      assert.is_true(method(actions.method_name(action)), action .. " has no method")
      assert.is_truthy(page:find(("client:call(&quot;%s&quot;"):format(action), 1, true)
        or page:find(('client:call("%s"'):format(action), 1, true), action .. " stub")
    end
    assert.is_truthy(page:find("Retry class <code>never</code>", 1, true))
    assert.is_truthy(page:find("D-69473", 1, true))
    -- public modules only: none of the pipeline's internals
    for _, internal in ipairs{"engine", "fanout", "request", "response", "retry"} do
      assert.is_nil(shell.read(tmp .. "/html/modules/aliyun.iot." .. internal .. ".html"))
    end
    assert.is_not_nil(shell.read(tmp .. "/html/modules/aliyun.iot.errors.html"))
    -- the C core, from the comments above its exported functions
    local core_page = shell.read(tmp .. "/html/modules/aliyun.iot.core.html") or ""
    assert.is_truthy(core_page:find('name = "sign_rpc"', 1, true), "core.sign_rpc")
    assert.is_truthy(core_page:find('name = "Session:perform_many"', 1, true))
  end)

  it("README's Lua examples run against the emulator", function()
    local f = assert(io.open("README.md"))
    local readme = f:read("*a")
    f:close()
    -- every ```lua block but the busted one (examples/emulator_spec.lua runs that)
    local blocks = {}
    for indent, code in readme:gmatch("\n( *)```lua\n(.-)\n%1```") do
      if not code:find("describe(", 1, true) then
        blocks[#blocks + 1] = code:gsub("\n" .. indent, "\n")
      end
    end
    assert.is_true(#blocks >= 2, "no Lua examples found in README")
    local emulator = require "aliyun.iot.emulator"
    local iot = require "aliyun.iot"
    local emu = emulator.start{products = {"a1TestPK001"}, async_delay = 0}
    finally(function() emu:stop() end)
    -- the examples as a user runs them, pointed at the emulator: its endpoint and keys
    -- (the examples take credentials from the environment), its ProductKey for "a1...",
    -- their journal in this test's folder
    local fake_iot = setmetatable({new = function(opts)
      local o = {}
      for k, v in pairs(opts or {}) do o[k] = v end
      o.endpoint = emu.endpoint
      o.access_key_id, o.access_key_secret = emu.access_key_id, emu.access_key_secret
      return iot.new(o)
    end}, {__index = iot})
    local env = setmetatable({
      print = function() end,
      require = function(name)
        if name == "aliyun.iot" then return fake_iot end
        return require(name)
      end,
    }, {__index = _G})
    -- one program, as a reader follows them: later examples use the first one's client
    local code = table.concat(blocks, "\n"):gsub('"a1%.%.%."', '"a1TestPK001"')
      :gsub('"job%.state"', ("%q"):format(tmp .. "/job.state"))
    local chunk = assert((loadstring or load)(code, "=README examples", "t", env))
    if setfenv then setfenv(chunk, env) end
    local ok_, why = pcall(chunk)
    assert(ok_, ("README's examples failed: %s\n%s"):format(tostring(why), code))
    local journal = io.open(tmp .. "/job.state")
    assert.truthy(journal, "the example's journal was not written")
    journal:close()
  end)

  it("no module requires a module above it (the layers of docs/ARCHITECTURE.md)", function()
    local doc = assert(shell.read("docs/ARCHITECTURE.md"))
    local section = assert(doc:match("\n## Layers\n(.-)\n## "), "no Layers section")
    -- each row: "| N name | `file`, `glob*.lua`, ... | ..." -> patterns for that layer
    local layers = {}
    for n, files in section:gmatch("\n| (%d+) [^|]*| ([^|]*) |") do
      for f in files:gmatch("`([^`]+%.lua)`") do
        local path = f:find("^lua/") and f or ("lua/aliyun/iot/" .. f)
        local pat = "^" .. path:gsub("[%.%-]", "%%%0"):gsub("%*", "[^/]*") .. "$"
        layers[#layers + 1] = {pat = pat, layer = tonumber(n)}
      end
    end
    assert.is_true(#layers > 10, "the Layers table was not understood")
    local function layer_of(path)
      for _, l in ipairs(layers) do
        if path:find(l.pat) then return l.layer end
      end
    end
    local function module_path(name)
      if name == "aliyun.iot" then return "lua/aliyun/iot.lua" end
      return "lua/" .. name:gsub("%.", "/") .. ".lua"
    end
    local problems = {}
    local list = io.popen("find lua/aliyun -name '*.lua' | sort")
    for path in list:lines() do
      if not path:find("/emulator") then
        local own = layer_of(path)
        if not own then
          problems[#problems + 1] = path .. " is in no layer of docs/ARCHITECTURE.md"
        else
          local src = assert(shell.read(path))
          for line in src:gmatch("[^\n]+") do
            local code = line:gsub("%-%-.*$", "")
            for name in code:gmatch("require%s*%(?%s*[\"']([^\"']+)[\"']") do
              if name:find("^aliyun%.iot") and name ~= "aliyun.iot.core" then
                local theirs = layer_of(module_path(name))
                if not theirs or theirs > own or (own == 5 and theirs >= 3 and theirs <= 4) then
                  problems[#problems + 1] = ("%s (layer %s) requires %s (layer %s)")
                    :format(path, own, name, tostring(theirs))
                end
              end
            end
          end
        end
      end
    end
    list:close()
    assert.are.same({}, problems)
  end)
end)
