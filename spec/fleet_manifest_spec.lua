-- Fleet manifests (issue 15): CSV, JSON lines and Lua arrays read alike, and every
-- documented limit refused locally, naming the line, with nothing sent (client:plan and
-- the CLI against the emulator, whose request log must stay empty).
local manifest = require "aliyun.iot.fleet.manifest"
local emulator = require "aliyun.iot.emulator"
local fleet = require "spec.support.fleet"
local shell = require "spec.support.shell"

local PK = fleet.PK

local function ok_parse(text, source)
  local m, err = manifest.parse(text, source)
  assert(m, err and err.message)
  return m
end

local function refused(text, pattern)
  local m, err = manifest.parse(text, "f.csv")
  assert.is_nil(m, "accepted: " .. text)
  assert.are.equal("InvalidParameter", err.code)
  assert.are.equal("manifest", err.parameter)
  assert.matches(pattern, err.message)
  return err
end

local function tags_cell(n, value)
  local parts = {}
  for i = 1, n do parts[i] = ("k%03d=%s"):format(i, value or "v") end
  return table.concat(parts, ";")
end

local function groups_cell(n)
  local parts = {}
  for i = 1, n do parts[i] = ("group_%02d"):format(i) end
  return table.concat(parts, ";")
end

describe("fleet manifests", function()
  it("reads CSV by column name, in any order, with quotes, comments, a BOM and CRLF", function()
    local m = ok_parse('\239\187\191# the fleet\r\ngroups, tags ,Nickname,DeviceName\r\n' ..
      '"north_site;all_lamps","site=north;rev=b",lamp_one,dev_0001\r\n\r\n' ..
      ',,,dev_0002\r\n"",  "note=a,b=c" ,"",dev_0003\r\n')
    assert.are.equal(3, #m.devices)
    assert.are.same({DeviceName = "dev_0001", Nickname = "lamp_one",
      tags = {site = "north", rev = "b"}, groups = {"all_lamps", "north_site"}}, m.devices[1])
    assert.are.same({DeviceName = "dev_0002", Nickname = "", tags = {}, groups = {}}, m.devices[2])
    assert.are.same({note = "a,b=c"}, m.devices[3].tags)
    assert.are.equal(m.devices[2], m.by_name.dev_0002)
  end)

  it("leaves a column that is not there unmanaged (nil), unlike an empty one", function()
    local m = ok_parse("DeviceName\ndev_0001\n")
    assert.are.same({DeviceName = "dev_0001"}, m.devices[1])
  end)

  it("reads JSON lines with the same fields, tags as an object or a string", function()
    local m = ok_parse('{"DeviceName":"dev_0001","Nickname":"lamp_one","tags":{"site":"north"},' ..
      '"groups":["north_site"]}\n\n{"DeviceName":"dev_0002","tags":"ka=1;kb=2","groups":"grp_aaaa;grp_bbbb"}\n')
    assert.are.same({DeviceName = "dev_0001", Nickname = "lamp_one", tags = {site = "north"},
      groups = {"north_site"}}, m.devices[1])
    assert.are.same({ka = "1", kb = "2"}, m.devices[2].tags)
    assert.are.same({"grp_aaaa", "grp_bbbb"}, m.devices[2].groups)
  end)

  it("takes a Lua array; a field of the wrong Lua type raises", function()
    local m = assert(manifest.load{{DeviceName = "dev_0001", tags = {ka = "b"}, groups = "grp_aaaa"},
                                   {DeviceName = "dev_0002", Nickname = ""}})
    assert.are.same({"grp_aaaa"}, m.devices[1].groups)
    assert.has_error(function() manifest.load{{DeviceName = 7}} end)
    assert.has_error(function() manifest.load{"dev_0001"} end)
    assert.has_error(function() manifest.load(42) end)
    local _, err = manifest.load{{DeviceName = "x"}}
    assert.matches("^manifest%[1%]: DeviceName", err.message)
  end)

  it("refuses every documented limit, naming the file and line", function()
    local H = "DeviceName,Nickname,tags,groups\n"
    refused(H .. "dev_0001,,,\nbad name!,,,\n", "^f%.csv:3: DeviceName \"bad name!\" may only contain")
    refused(H .. "abc,,,\n", "^f%.csv:2: DeviceName \"abc\" must be 4 to 32")
    refused(H .. "dev_0001,a-b-c-d,,\n", "^f%.csv:2: Nickname \"a%-b%-c%-d\" may only contain")
    refused(H .. "dev_0001,abc,,\n", "^f%.csv:2: Nickname \"abc\" must be 4 to 64")
    refused(H .. "dev_0001,," .. tags_cell(101) .. ",\n", "^f%.csv:2: device dev_0001: has 101 tags, at most 100")
    ok_parse(H .. "dev_0001,," .. tags_cell(100) .. ",\n")
    -- 100 tags of 45-byte values: past 5 KB of JSON
    refused(H .. "dev_0001,," .. tags_cell(100, ("x"):rep(45)) .. ",\n",
      "^f%.csv:2: device dev_0001: its tags are %d+ bytes of JSON, at most 5120")
    refused(H .. "dev_0001,,,," .. "\n", "^f%.csv:2: has 5 fields, the header 4")
    refused(H .. "dev_0001,,,," .. groups_cell(11) .. "\n", "has 5 fields")
    refused(H .. "dev_0001,,," .. groups_cell(11) .. "\n", "^f%.csv:2: device dev_0001: is in 11 groups, at most 10")
    ok_parse(H .. "dev_0001,,," .. groups_cell(10) .. "\n")
    refused(H .. "dev_0001,,,ab\n", "^f%.csv:2: device dev_0001: group \"ab\" must be 4 to 30")
    refused(H .. "dev_0001,,,bad-group\n", "^f%.csv:2: device dev_0001: group \"bad%-group\" may only contain")
    refused(H .. "dev_0001,,,grp_aaaa;grp_aaaa\n", "group \"grp_aaaa\" given twice")
    refused(H .. "dev_0001,,a=1;a=2,\n", "tag key \"a\" given twice")
    refused(H .. "dev_0001,,abc=1,\n", "tag key \"abc\" is reserved")
    refused(H .. "dev_0001,,novalue,\n", "tag \"novalue\" is not key=value")
    refused(H .. "dev_0001,,=v,\n", "a tag key is empty")
    -- SaveDeviceProp's key and value rules: 2 to 32 letters, digits and dots; a value not
    -- empty, at most 128 characters (a Chinese one counting 2); the line and device named
    refused(H .. "dev_0001,,,\ndev_0002,,hw_rev=b,\n",
      "^f%.csv:3: device dev_0002: tag key \"hw_rev\" may only contain letters, digits and dots")
    refused(H .. "dev_0001,,x=1,\n", "^f%.csv:2: device dev_0001: tag key \"x\" must be 2 to 32 characters")
    refused(H .. "dev_0001,," .. ("k"):rep(33) .. "=1,\n", "tag key \"k+\" must be 2 to 32 characters")
    refused(H .. "dev_0001,,site.name=,\n", "device dev_0001: tag \"site.name\": its value must not be empty")
    refused(H .. "dev_0001,,site=" .. ("x"):rep(129) .. ",\n", "its value must be at most 128 characters")
    refused(H .. "dev_0001,,site=" .. ("\228\184\173"):rep(65) .. ",\n", "its value must be at most 128")
    ok_parse(H .. "dev_0001,,site.v2=" .. ("\228\184\173"):rep(64) .. ";" .. ("k"):rep(32) .. "=" ..
      ("x"):rep(128) .. ",\n")
    refused('{"DeviceName":"dev_0001","tags":{"hw rev":"b"}}\n', "^f%.csv:1: device dev_0001: tag key \"hw rev\"")
    refused(H .. "dev_0001,,,\n# x\ndev_0001,,,\n", "^f%.csv:4: DeviceName \"dev_0001\" is listed twice %(first at f%.csv:2%)")
    refused("Device,Nickname\n", "^f%.csv:1: unknown column \"Device\"")
    refused("Nickname\nlamp_one\n", "^f%.csv:1: the header row has no DeviceName column")
    refused("DeviceName,devicename\n", "column DeviceName given twice")
    refused('DeviceName\n"dev_0001\n', "^f%.csv:2: a quoted field has no closing quote")
    refused('{"DeviceName":"dev_0001"}\n{"DeviceName":"dev_0002","Tags":{}}\n', "^f%.csv:2: unknown field \"Tags\"")
    refused('{"DeviceName":"dev_0001"}\n{"DeviceName":"dev_0002"\n', "^f%.csv:2: not JSON")
    refused('{"DeviceName":"dev_0001","tags":{"a":1}}\n', "tags must be an object of strings")
    refused('{"Nickname":"lamp_one"}\n', "^f%.csv:1: has no DeviceName")
  end)

  it("reads a manifest file, regular files only", function()
    local dir = shell.temp_dir()
    finally(function() shell.ok("rm -rf " .. shell.quote(dir)) end)
    shell.write(dir .. "/fleet.csv", "DeviceName,Nickname\ndev_0001,lamp_one\n")
    assert.are.equal("lamp_one", assert(manifest.load(dir .. "/fleet.csv")).devices[1].Nickname)
    local _, err = manifest.load(dir)
    assert.matches("cannot read the manifest", err.message)
    _, err = manifest.load(dir .. "/none.csv")
    assert.matches("none%.csv: cannot read the manifest", err.message)
  end)

  describe("refused before anything is sent", function()
    local emu
    setup(function() emu = emulator.start{async_delay = 0} end)
    teardown(function() emu:stop() end)

    it("client:plan returns InvalidParameter naming the line, and the emulator saw no request", function()
      emu:reset()
      local c = fleet.client(emu)
      local cases = {
        "DeviceName,tags\ndev_0001," .. tags_cell(101) .. "\n",
        "DeviceName,groups\ndev_0001," .. groups_cell(11) .. "\n",
        "DeviceName,Nickname\ndev_0001,x\n",
        "DeviceName\ndev_0001\ndev_0001\n",
      }
      for _, text in ipairs(cases) do
        local path = os.tmpname()
        shell.write(path, text)
        local p, err = c:plan{ProductKey = PK, manifest = path}
        os.remove(path)
        assert.is_nil(p)
        assert.are.equal("InvalidParameter", err.code)
        assert.matches("^" .. path:gsub("%p", "%%%0") .. ":[23]: ", err.message)
      end
      local p, err = c:plan{ProductKey = PK, manifest = {{DeviceName = "dev_0001", tags = {abc = "x"}}}}
      assert.is_nil(p)
      assert.matches("^manifest%[1%]: device dev_0001: tag key \"abc\" is reserved", err.message)
      p, err = c:plan{ProductKey = "", manifest = {}}
      assert.is_nil(p)
      assert.are.equal("ProductKey", err.parameter)
      assert.has_error(function() c:plan{ProductKey = PK, manifest = {}, prune = true} end)
      assert.has_error(function() c:plan{ProductKey = PK, manifest = {}, prune_tags = "yes"} end)
      assert.are.equal(0, #emu:requests())
    end)
  end)
end)
