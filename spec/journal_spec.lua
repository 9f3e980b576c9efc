-- The journal (aliyun.iot.journal) and the file functions under it (core.journal_open,
-- core.file_kind, core.read_file): a journal is a new regular file the job creates, or an
-- existing regular journal to resume; nothing else is written into, and nothing is
-- removed unless this process created it. Reading validates every event.
local journal = require "aliyun.iot.journal"
local core = require "aliyun.iot.core"
local shell = require "spec.support.shell"
local q, read, write, sh = shell.quote, shell.read, shell.write, shell.capture

local tmp

local function mode(path) return (sh("stat -c %a " .. q(path)):gsub("%s+$", "")) end
local function ftype(path) return (sh("stat -c %F " .. q(path) .. " 2>/dev/null"):gsub("%s+$", "")) end

local JOB = '{"event":"job","version":1,"kind":"random","ProductKey":"a1TestPK001","Count":3}\n'
local APPLY = '{"event":"apply","seq":1,"ApplyId":"4415","ProductKey":"a1TestPK001",' ..
  '"phase":"create","Count":3}\n'
local DEVICE = '{"event":"device","ApplyId":"4415","ProductKey":"a1TestPK001",' ..
  '"DeviceName":"dev_0001","DeviceSecret":"s3cr3t","IotId":"iot1"}\n'

describe("journal", function()
  setup(function()
    tmp = require("spec.support.shell").temp_dir()
  end)
  teardown(function() os.execute("rm -rf " .. q(tmp)) end)

  describe("create", function()
    it("makes a new regular file, mode 0600, locked, with the job line", function()
      local path = tmp .. "/new.state"
      local j, err = journal.create(path, {kind = "random", ProductKey = "a1TestPK001", Count = 3})
      assert.is_nil(err)
      assert.are.equal(path, j.path)
      assert.are.equal("600", mode(path))
      assert.truthy(read(path):find('"event":"job"', 1, true))
      local lock, why = core.lock_file(path)
      assert.is_nil(lock)
      assert.truthy(why:find("is locked", 1, true), why)
      j:close()
      assert.truthy(core.lock_file(path))
    end)

    local function refuses(name, make, check)
      it("refuses " .. name .. " and leaves it untouched", function()
        local path = tmp .. "/" .. name:gsub("%W", "_")
        if make(path) == false then
          pending("needs root (mknod)")
          return
        end
        local before_type, before_mode = ftype(path), mode(path)
        local j, err = journal.create(path, {kind = "random", ProductKey = "pk", Count = 1})
        assert.is_nil(j)
        assert.are.equal("JournalError", err.code)
        assert.are.equal(before_type, ftype(path))
        assert.are.equal(before_mode, mode(path))
        if check then check(path, err) end
      end)
    end

    refuses("an existing empty file", function(p)
      write(p, "")
      assert(os.execute("chmod 644 " .. q(p)))
    end, function(p) assert.are.equal("", read(p)) end)
    refuses("an existing file with data", function(p) write(p, "keep me\n") end,
      function(p) assert.are.equal("keep me\n", read(p)) end)
    refuses("a symlink to a new file", function(p)
      assert(os.execute("ln -s " .. q(p .. ".target") .. " " .. q(p)))
    end, function(p) assert.is_nil(read(p .. ".target")) end)
    refuses("a symlink to an existing file", function(p)
      write(p .. ".target", "theirs\n")
      assert(os.execute("ln -s " .. q(p .. ".target") .. " " .. q(p)))
    end, function(p) assert.are.equal("theirs\n", read(p .. ".target")) end)
    refuses("a FIFO", function(p) assert(os.execute("mkfifo " .. q(p))) end)
    refuses("a folder", function(p) assert(os.execute("mkdir " .. q(p))) end,
      function(_, err) assert.truthy(tostring(err):find("is a directory", 1, true)) end)
    refuses("a character device", function(p)
      return shell.ok("mknod -m 666 " .. q(p) .. " c 1 3 2>/dev/null")
    end)

    it("says plainly that a journal holds a finished job, and one that is not finished", function()
      local done = tmp .. "/done.state"
      write(done, JOB .. APPLY .. DEVICE .. '{"event":"done","Devices":1}\n')
      local j, err = journal.create(done, {kind = "random", ProductKey = "pk", Count = 1})
      assert.is_nil(j)
      assert.truthy(tostring(err):find("journal " .. done .. " holds a finished job", 1, true), tostring(err))
      assert.truthy(tostring(err):find("choose a new path", 1, true), tostring(err))
      assert.is_nil(tostring(err):find("resume", 1, true), tostring(err))
      local open = tmp .. "/open.state"
      write(open, JOB .. APPLY)
      j, err = journal.create(open, {kind = "random", ProductKey = "pk", Count = 1})
      assert.is_nil(j)
      assert.truthy(tostring(err):find("holds an unfinished job", 1, true), tostring(err))
    end)

    it("refuses a path with a NUL byte (it would be cut silently)", function()
      local path = tmp .. "/nul.state"
      local j, err = journal.create(path .. "\0.x", {kind = "random", ProductKey = "pk", Count = 1})
      assert.is_nil(j)
      assert.are.equal("JournalError", err.code)
      assert.is_nil(read(path))
      local _, _, oerr = journal.open(path .. "\0.x")
      assert.are.equal("JournalError", oerr.code)
      assert.has_error(function() core.journal_open(path .. "\0", "create") end)
      assert.has_error(function() core.read_file(path .. "\0", 10) end)
    end)

    it("appends through the locked descriptor, not by reopening the path", function()
      local path = tmp .. "/moved.state"
      local j = assert(journal.create(path, {kind = "random", ProductKey = "pk", Count = 1}))
      assert(os.rename(path, path .. ".moved"))
      write(path, "someone else's file\n")
      assert(j:append({event = "failed", seq = 1, action = "BatchRegisterDevice"}))
      j:close()
      assert.are.equal("someone else's file\n", read(path))
      assert.truthy(read(path .. ".moved"):find('"event":"failed"', 1, true))
    end)
  end)

  describe("discard", function()
    it("removes only a file this process created, and only while the path still names it", function()
      local mine = tmp .. "/mine.state"
      local j = assert(journal.create(mine, {kind = "random", ProductKey = "pk", Count = 1}))
      j:close()
      local theirs = tmp .. "/theirs.state"
      write(theirs, JOB)
      assert.is_false(journal.discard(theirs))
      assert.are.equal(JOB, read(theirs))
      -- replaced by another file since: kept
      assert(os.rename(mine, mine .. ".old"))
      write(mine, JOB)
      assert.is_false(journal.discard(mine))
      assert.are.equal(JOB, read(mine))
      local mine2 = tmp .. "/mine2.state"
      j = assert(journal.create(mine2, {kind = "random", ProductKey = "pk", Count = 1}))
      j:close()
      assert.is_true(journal.discard(mine2))
      assert.is_nil(read(mine2))
    end)
  end)

  describe("reading validates every event", function()
    -- A hand-edited or corrupted journal: refused with PATH:LINE and what is wrong.
    local BAD = {
      {"Count not a number", JOB:gsub('"Count":3', '"Count":"abc"'), 1, "Count must be an integer"},
      {"Count 2.5", JOB:gsub('"Count":3', '"Count":2.5'), 1, "Count must be an integer"},
      {"Count 10^12", JOB:gsub('"Count":3', '"Count":1000000000000'), 1, "from 1 to 10000000"},
      {"Count 0", JOB:gsub('"Count":3', '"Count":0'), 1, "Count must be an integer"},
      {"an unknown kind", JOB:gsub('"random"', '"other"'), 1, "unknown kind"},
      {"no ProductKey", JOB:gsub('"ProductKey":"a1TestPK001",', ''), 1, "ProductKey"},
      {"a missing ApplyId", JOB .. APPLY:gsub('"ApplyId":"4415",', ''), 2, "ApplyId must be a string of digits"},
      {"an ApplyId not digits", JOB .. APPLY:gsub('"4415"', '"44x5"'), 2, "ApplyId"},
      {"an ApplyId a table", JOB .. APPLY:gsub('"4415"', '{}'), 2, "ApplyId"},
      {"a device without DeviceName", JOB .. APPLY .. DEVICE:gsub('"DeviceName":"dev_0001",', ''), 3,
       "DeviceName must be a string"},
      {"a DeviceName against the rule", JOB .. APPLY .. DEVICE:gsub('dev_0001', '=HYPERLINK(1)'), 3,
       "DeviceName may only contain"},
      {"a DeviceSecret a number", JOB .. APPLY .. DEVICE:gsub('"s3cr3t"', '5'), 3, "DeviceSecret"},
      {"an IotId a table", JOB .. APPLY .. DEVICE:gsub('"iot1"', '{"a":1}'), 3, "IotId"},
      {"an unknown event", JOB .. '{"event":"launch"}\n', 2, "unknown event 'launch'"},
      {"a submit with Count 2.5", JOB ..
       '{"event":"submit","seq":1,"action":"BatchRegisterDevice","Count":2.5}\n', 2, "Count"},
      {"a submit with seq -1", JOB ..
       '{"event":"submit","seq":-1,"action":"BatchRegisterDevice","Count":1}\n', 2, "seq"},
      {"an apply phase unknown", JOB .. APPLY:gsub('"create"', '"explode"'), 2, "phase"},
      {"a fetched Total a string", JOB .. APPLY ..
       '{"event":"fetched","ApplyId":"4415","Total":"3","Status":"CREATE_SUCCESS"}\n', 3, "Total"},
      {"a done Devices 1.5", JOB .. '{"event":"done","Devices":1.5}\n', 2, "Devices"},
      {"a named job whose Devices is a string",
       '{"event":"job","version":1,"kind":"named","ProductKey":"pk","Devices":"x"}\n', 1, "Devices"},
      {"a line that is not JSON in the middle", JOB .. "garbage\n" .. APPLY, 2, "is not a journal event"},
      {"an event that is not a table", JOB .. "[1,2]\n", 2, "is not a journal event"},
      {"no job line", APPLY, 1, "no job event first"},
      {"version 2", JOB:gsub('"version":1', '"version":2'), 1, "unknown journal version 2"},
      -- one set of limits (issue 17): what resume would refuse, the reader refuses first
      {"a seq beyond 2^31", JOB .. APPLY:gsub('"seq":1', '"seq":3000000000'), 2,
       "apply event: seq must be an integer from 1 to 2147483648"},
      {"a submit seq beyond 2^31", JOB ..
       '{"event":"submit","seq":4294967296,"action":"BatchRegisterDevice","Count":1}\n', 2, "seq"},
      {"an apply Count beyond 10,000", JOB .. APPLY:gsub('"Count":3', '"Count":10001'), 2,
       "apply event: Count must be an integer from 1 to 10000"},
      {"a submit Count beyond 10,000", JOB ..
       '{"event":"submit","seq":1,"action":"BatchRegisterDevice","Count":20000}\n', 2, "Count"},
      {"an ApplyId beyond int64", JOB .. APPLY:gsub('"4415"', '"99999999999999999999"'), 2,
       "ApplyId must be a string of digits"},
      {"an ApplyId 0", JOB .. APPLY:gsub('"4415"', '"0"'), 2, "ApplyId"},
      {"a create apply without Count", JOB .. APPLY:gsub(',"Count":3', ''), 2,
       "a create apply needs Count"},
      {"a check apply without Names", JOB .. APPLY:gsub('"create","Count":3', '"check"'), 2,
       "a check apply needs Names"},
      {"an apply ProductKey with a space", JOB .. APPLY:gsub('"a1TestPK001"', '"bad pk"'), 2,
       "ProductKey must not contain whitespace"},
      {"a DeviceSecret that is a formula", JOB .. APPLY .. DEVICE:gsub('"s3cr3t"', '"=HYPERLINK(1)"'),
       3, "DeviceSecret is not 1 to 64 letters and digits"},
      {"an IotId with a NUL", JOB .. APPLY .. DEVICE:gsub('"iot1"', '"io\\u0000t"'), 3, "IotId"},
      {"a fetched Status unknown", JOB .. APPLY ..
       '{"event":"fetched","ApplyId":"4415","Total":3,"Status":"WEIRD"}\n', 3,
       "Status must be CREATE_SUCCESS or CREATE_FAILED"},
      {"a fetched Total beyond 10,000", JOB .. APPLY ..
       '{"event":"fetched","ApplyId":"4415","Total":20000,"Status":"CREATE_SUCCESS"}\n', 3,
       "Total must be an integer from 0 to 10000"},
      {"a named job's DeviceName a number",
       '{"event":"job","version":1,"kind":"named","ProductKey":"pk","Devices":[{"DeviceName":5}]}\n',
       1, "Devices item 1 has no DeviceName string"},
      {"a done verdict's DeviceName a number", JOB ..
       '{"event":"done","Devices":0,"Invalid":[{"DeviceName":5}]}\n', 2, "Invalid item 1"},
      -- an apply's batch of writes in flight (aliyun.iot.fleet.apply_journal)
      {"a sending change unknown", JOB .. '{"event":"sending","seq":1,"Changes":' ..
       '[{"DeviceName":"dev_0001","change":"delete","target":"x"}]}\n', 2, "Changes item 1 change must be"},
      {"a sending change's DeviceName against the rule", JOB .. '{"event":"sending","seq":1,' ..
       '"Changes":[{"DeviceName":"=1","change":"join","target":"g"}]}\n', 2, "Changes item 1 DeviceName"},
      {"a sending change with no target", JOB .. '{"event":"sending","seq":1,"Changes":' ..
       '[{"change":"create_group"}]}\n', 2, "Changes item 1 has no target string"},
      {"a sending without Changes", JOB .. '{"event":"sending","seq":1}\n', 2, "Changes must be a list"},
      {"a settled seq 0", JOB .. '{"event":"settled","seq":0}\n', 2, "settled event: seq"},
    }
    for _, case in ipairs(BAD) do
      it(case[1] .. ": JournalError PATH:LINE, never a Lua error", function()
        local path = tmp .. "/bad.state"
        write(path, case[2])
        for _, how in ipairs{"read", "open"} do
          local ok, a, b, c = pcall(journal[how], path)
          assert.is_true(ok, tostring(a))
          local err = how == "read" and b or c
          assert.is_nil(a)
          assert.are.equal("JournalError", err.code)
          local prefix = ("%s:%d: "):format(path, case[3])
          if case[3] == 1 and case[4] == "no job event first" then prefix = path end
          assert.truthy(err.message:find(prefix, 1, true), err.message)
          assert.truthy(err.message:find(case[4], 1, true), err.message)
        end
        assert.are.equal(case[2], read(path)) -- untouched
      end)
    end

    it("accepts a good journal, and leaves out (and cuts) a torn last line", function()
      local path = tmp .. "/good.state"
      write(path, JOB .. APPLY .. DEVICE .. '{"event":"dev')
      local recs = assert(journal.read(path))
      assert.are.equal(3, #recs)
      local j, recs2 = journal.open(path)
      assert.are.equal(3, #recs2)
      j:close()
      assert.are.equal(JOB .. APPLY .. DEVICE, read(path))
    end)

    it("reads an apply's batches in flight: those never settled are unsettled", function()
      local path = tmp .. "/batches.state"
      write(path, JOB .. '{"event":"sending","seq":1,"Changes":[{"change":"create_group","target":"g"}]}\n' ..
        '{"event":"settled","seq":1}\n' ..
        '{"event":"sending","seq":2,"Changes":[{"DeviceName":"dev_0001","change":"rename","target":""}]}\n')
      local recs = assert(journal.read(path))
      local open = require("aliyun.iot.fleet.apply_journal").unsettled(recs)
      assert.are.equal(1, #open)
      assert.are.equal(2, open[1].seq)
      assert.are.same({{DeviceName = "dev_0001", change = "rename", target = ""}}, open[1].Changes)
    end)

    it("refuses a FIFO, a device, a symlink or a folder to resume from, without waiting", function()
      local fifo = tmp .. "/resume.fifo"
      assert(os.execute("mkfifo " .. q(fifo)))
      local real = tmp .. "/real.state"
      write(real, JOB)
      local link = tmp .. "/link.state"
      assert(os.execute("ln -s real.state " .. q(link)))
      for _, p in ipairs{fifo, "/dev/zero", link, tmp} do
        local j, _, err = journal.open(p)
        assert.is_nil(j)
        assert.are.equal("JournalError", err.code)
        local recs, rerr = journal.read(p)
        assert.is_nil(recs)
        assert.are.equal("JournalError", rerr.code)
      end
    end)
  end)

  describe("core file functions", function()
    it("file_kind tells none, file, folder, link and special apart without following links", function()
      write(tmp .. "/k.file", "x")
      assert(os.execute("ln -sf k.file " .. q(tmp .. "/k.link")))
      assert.are.equal("none", core.file_kind(tmp .. "/k.none"))
      assert.are.equal("none", core.file_kind(tmp .. "/k.file/below"))
      assert.are.equal("file", core.file_kind(tmp .. "/k.file"))
      assert.are.equal("folder", core.file_kind(tmp))
      assert.are.equal("link", core.file_kind(tmp .. "/k.link"))
      assert.are.equal("file", core.file_kind(tmp .. "/k.link", true))
      assert.are.equal("special", core.file_kind("/dev/null"))
      assert.are.equal("device", select(3, core.file_kind("/dev/null")))
      assert(os.execute("mkfifo " .. q(tmp .. "/k.fifo")))
      assert.are.equal("fifo", select(3, core.file_kind(tmp .. "/k.fifo")))
      assert.is_nil(select(3, core.file_kind(tmp .. "/k.file")))
      assert.are.equal(select(2, core.file_kind(tmp .. "/k.file")),
                       select(2, core.file_kind(tmp .. "/k.link", true)))
    end)

    it("read_file reads regular files only, bounded, returning nil, message, errno", function()
      write(tmp .. "/r.txt", "hello")
      assert.are.equal("hello", core.read_file(tmp .. "/r.txt", 5))
      local s, why, errno = core.read_file(tmp .. "/r.txt", 4)
      assert.is_nil(s)
      assert.truthy(why:find("larger than 4 bytes", 1, true), why)
      assert.are.equal("number", type(errno))
      s, why = core.read_file("/dev/zero", 1024)
      assert.is_nil(s)
      assert.truthy(why:find("not a regular file", 1, true), why)
      assert(os.execute("mkfifo " .. q(tmp .. "/r.fifo")))
      assert.is_nil((core.read_file(tmp .. "/r.fifo", 1024)))
      s, why, errno = core.read_file(tmp .. "/missing", 10)
      assert.is_nil(s)
      assert.truthy(why:find("missing", 1, true), why)
      assert.are.equal("number", type(errno))
    end)

    it("journal_open and lock_file return nil, message, errno", function()
      local path = tmp .. "/lk.state"
      local f = assert(core.journal_open(path, "create"))
      local f2, why, errno = core.journal_open(path, "existing")
      assert.is_nil(f2)
      assert.truthy(why:find("is locked", 1, true), why)
      assert.are.equal("number", type(errno))
      local l, lwhy, lerrno = core.lock_file(path)
      assert.is_nil(l)
      assert.truthy(lwhy:find("is locked", 1, true))
      assert.are.equal(errno, lerrno)
      assert.is_true(f:close())
      assert.is_true(f:close()) -- idempotent
      assert.has_error(function() f:append("x") end)
      local _, _, e3 = core.journal_open(path, "create")
      assert.are.equal("number", type(e3))
      assert.are.equal("aliyun.iot.core.journal_file", getmetatable(assert(core.journal_open(path, "existing"))).__name)
    end)

    it("disable_core_dumps sets RLIMIT_CORE to 0 (children inherit it)", function()
      local lua = os.getenv("ALIYUN_IOT_LUA") or "lua5.4"
      local out = sh("ulimit -c unlimited 2>/dev/null; LUA_PATH=" .. q(package.path) .. " LUA_CPATH=" ..
        q(package.cpath) .. " " .. lua .. " -e " ..
        q('assert(require("aliyun.iot.core").disable_core_dumps()); os.execute("ulimit -c")'))
      assert.are.equal("0\n", out)
    end)
  end)
end)
