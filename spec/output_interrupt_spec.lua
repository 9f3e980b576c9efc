-- An interrupt (SIGINT, or SIGTERM through core.catch_term) is an error raised from a hook
-- at whatever line runs next. One raised while --out's temporary file is being finished
-- (after finish began, before the rename) must still leave no temporary file behind: it
-- holds DeviceSecrets. The interrupt is raised here by a line hook at each line of
-- finish in turn, as the signal's hook would.
local output = require "aliyun.iot.cli.output"
local core = require "aliyun.iot.core"

local function listing(dir)
  return require("spec.support.shell").capture("ls -A " .. dir)
end

describe("--out interrupted while it is finished", function()
  local dir
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
  end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  local function each_line(old)
    local src = debug.getinfo(output.open, "S").source
    for skip = 1, 200 do
      local target = dir .. "/devices.csv"
      os.remove(target)
      if old then
        local f = assert(io.open(target, "w"))
        f:write(old)
        f:close()
      end
      local out = output.open(target)
      out.fh:write("DeviceName,DeviceSecret\nd1,SECRETsecretSECRET\n")
      local seen = 0
      local raised = false
      debug.sethook(function()
        local info = debug.getinfo(2, "S")
        if info.source == src then
          seen = seen + 1
          if seen == skip then
            debug.sethook()
            raised = true
            error("interrupted!", 0)
          end
        end
      end, "l")
      local ok, err = pcall(out.finish, out)
      debug.sethook()
      if ok then assert.is_false(raised) end
      if not ok then assert.are.equal("interrupted!", err) end
      out:abort()
      local left = listing(dir)
      assert.is_nil(left:find("%.tmp"), ("line %d: %s"):format(skip, left))
      if core.file_kind(target) == "file" then
        local f = assert(io.open(target))
        local now = f:read("*a")
        f:close()
        if now ~= old then
          assert.are.equal("DeviceName,DeviceSecret\nd1,SECRETsecretSECRET\n", now)
        end
      end
      if not raised then break end
    end
  end

  it("leaves the target whole or absent and no temporary file, at any line", function()
    each_line(nil)
  end)

  it("replacing a file: the interrupt goes on up, whole file or old one, no temporary", function()
    each_line("old,file\n")
  end)
end)
