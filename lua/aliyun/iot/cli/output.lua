--- Where the CLI's output goes (stdout, a device or FIFO written directly, or a regular
-- file replaced atomically) and the device writers (CSV or JSON).
-- @module aliyun.iot.cli.output

local args = require "aliyun.iot.cli.args"
local connection = require "aliyun.iot.cli.connection"
local formats = require "aliyun.iot.cli.formats"

local local_error, shell_quote = args.local_error, args.shell_quote
local printable = require("aliyun.iot.errors").printable

local M = {}

--- One CSV field, quoted as RFC 4180 asks (`formats.csv_field`).
M.csv_field = formats.csv_field

-- A fresh random tag for file names: the core's nonce (OpenSSL's RAND_bytes), since Lua
-- before 5.4 seeds math.random alike in every process.
function M.random_tag()
  return (require("aliyun.iot.core").nonce():gsub("%-", ""))
end

local function core() return require "aliyun.iot.core" end

-- What is at `path`, following symlinks: "none", "folder", "file" (regular), or "special"
-- (character or block device, FIFO, socket), and the file's identity; `link` is true when
-- `path` itself is a symlink. Asked in this process (lstat/stat), so descriptor names such
-- as /dev/stdout name what they name for this process.
local function path_kind(path)
  local own = core().file_kind(path)
  local kind, id = core().file_kind(path, true)
  if kind == "link" then kind = "none" end
  return kind or "none", own == "link", id
end

-- Paths whose meaning depends on the process that opens them (descriptor names, /proc):
-- written directly, never resolved in another process nor replaced (a replace would give
-- the name a new inode and drop what the descriptor's file held).
local function per_process(p)
  return p:find("^/dev/fd/") or p:find("^/dev/fd$") or p:find("^/proc/")
    or p:find("^/dev/std[a-z]+$") or p:find("^/dev/stdin") or false
end

local function read_link(p)
  local h = io.popen("readlink -- " .. shell_quote(p) .. " 2>/dev/null")
  local t = h and h:read("*l")
  if h then h:close() end
  if t == nil or t == "" then return nil end
  return t
end

-- True when `path` or any hop of its symlink chain names a per-process path. Each hop is
-- read one level at a time (readlink without -f), which needs no descriptor of ours.
local function leads_to_process_path(path)
  local p = path
  for _ = 1, 40 do
    if per_process(p) then return true end
    local t = read_link(p)
    if not t then return false end
    if t:sub(1, 1) ~= "/" then t = (p:match("^(.*/)") or "") .. t end
    p = t
  end
  return true -- a loop: not a file to replace
end

-- The regular file a symlink leads to, or nil when it cannot be named from another
-- process (readlink runs with stdout on a pipe, so /dev/stdout would name that pipe: the
-- target must be the very file `path` leads to here, same device and inode).
local function link_target(path, id)
  local p = io.popen("readlink -f -- " .. shell_quote(path) .. " 2>/dev/null")
  local target = p and p:read("*l")
  if p then p:close() end
  if target and target ~= "" and select(2, core().file_kind(target, true)) == id then
    return target
  end
  return nil
end

local JOURNAL_PROBE = 65536 -- bytes of a file's first line looked at for a job record

-- What the regular file at `path` is when it is a file of aliyun-iot's that this output may
-- not replace, from its first line (at most JOURNAL_PROBE bytes; JSON keys in any order):
-- a journal (a `job` record: register's, apply's; a `retire` record), a report (an
-- `outcome` per line), or, unless the output is itself a list of devices (`devices`: a
-- re-run replacing its earlier devices file, as documented), a file of DeviceSecrets in
-- the devices CSV's columns (an undo export, the only copy of deleted devices' secrets,
-- has the same); else nil.
local function kept_kind(path, devices)
  local fh = io.open(path, "rb")
  if not fh then return nil end
  local head = fh:read(JOURNAL_PROBE) or ""
  fh:close()
  local line = head:match("^([^\n\r]*)")
  if not devices and line == require("aliyun.iot.fleet.retire").HEADER then
    return "a file of DeviceSecrets (an undo export or devices output, whose secrets " ..
      "may exist nowhere else)"
  end
  if line:sub(1, 1) ~= "{" then return nil end
  if line:find('"event":"job"', 1, true) or line:find('"event":"retire"', 1, true) then
    return "an aliyun-iot journal"
  end
  if line:find('"outcome":"', 1, true) then return "an aliyun-iot report" end
  return nil
end

-- Refuses (exit 2) an output file that is a journal, a report or (`devices` false) a file of
-- DeviceSecrets, or is locked by another process (a journal in use); `name` is the path as
-- given, `file` a name of the regular file.
local function refuse_journal(name, file, lockable, devices)
  local kept = kept_kind(file, devices)
  if kept then
    local_error("cannot write --out %s: it is %s, which this output may not replace; " ..
      "choose another file", name, kept)
  end
  if lockable and require("aliyun.iot.journal").in_use(file) then
    local_error("cannot write --out %s: it is in use by another process (locked, as a " ..
      "running job's journal is); choose another file", name)
  end
end

-- The identity of a regular file, or of the place a new one would take (folder id and
-- name), to compare --out with --state and --names-file by device and inode.
local function place_of(path)
  local kind, id = core().file_kind(path, true)
  if kind and kind ~= "none" then return id end
  local dir, base = path:match("^(.*)/([^/]+)$")
  if not dir then dir, base = ".", path end
  if dir == "" then dir = "/" end
  local dkind, did = core().file_kind(dir, true)
  if dkind ~= "folder" then return nil end
  return did .. "/" .. base
end

-- The files a run names, those it writes first (--out, the esp-idf config file beside it,
-- --report), then those it reads or keeps (--state, --names-file, --in, --manifest, and
-- `keeps`: the command's own files, such as retire's undo export).
local function named_files(opts, keeps)
  local list = {}
  local function add(flag, p) if p and p ~= "-" then list[#list + 1] = {flag, p} end end
  add("--out", opts.out)
  if opts.format == "esp-idf" and opts.out then
    add("--out's esp-idf config file", formats.esp_config_path(opts.out))
  end
  add("--report", opts.report)
  local writes = #list
  add("--state", opts.state)
  add("--names-file", opts.names_file)
  add("--in", opts["in"])
  add("--manifest", opts.manifest)
  for _, k in ipairs(keeps or {}) do add(k[1], k[2]) end
  return list, writes
end

--- Refuses, before any request (exit 2), a file the run writes (`--out`, the esp-idf config
-- file, `--report`) that would destroy another of the job's own files: the same file as
-- another of them, `--state`, `--names-file`, `--in`, `--manifest` or one of `keeps`
-- (device and inode, or folder and name for a file not yet made); an `--out` that is a
-- journal, or a file locked by another process.
-- @tparam table opts the checked options (`out`, `format`, `report`, `state`, `names_file`,
--   `in`, `manifest`)
-- @tparam[opt] table keeps more files of the job, `{{what, path}, ...}` (retire's undo
--   export, apply's retire journal: `what` names them in the message)
-- @tparam[opt] boolean devices the output is a list of devices (it may replace one)
function M.check_out(opts, keeps, devices)
  local list, writes = named_files(opts, keeps)
  for i = 1, writes do
    local here = place_of(list[i][2])
    for j = i + 1, #list do
      if here and place_of(list[j][2]) == here then
        local_error("%s %s is the same file as %s %s: give each file a path of its own",
          list[i][1], list[i][2], list[j][1], list[j][2])
      end
    end
  end
  local out = opts.out
  if not out then return end
  if core().file_kind(out, true) == "file" then
    refuse_journal(out, out, not per_process(out) and core().file_kind(out) == "file", devices)
  end
end

-- A file-like object that remembers the first write error: with buffering it may surface
-- at any write or only at the flush, and a job must not report success, and drop its
-- journal, when the secrets never reached the output.
local function checked_fh(fh)
  local w = {}
  function w:write(...)
    if not self.err then
      local ok, err = fh:write(...)
      if not ok then self.err = err end
    end
    return self
  end
  return w
end

-- Writes straight into `path` (a device, a FIFO, or a file reached through a descriptor
-- name): nothing is created, replaced or removed. Every write, the flush and the close are
-- checked.
local function direct_output(path)
  local fh, why = io.open(path, "ab")
  if not fh then local_error("cannot write --out %s: %s", path, tostring(why)) end
  return {
    fh = checked_fh(fh),
    finish = function(self)
      self.closed = true
      local err = self.fh.err
      local okf, ferr = fh:flush()
      local okc, cerr = fh:close()
      err = err or (not okf and ferr) or (not okc and cerr) or nil
      if err then return nil, ("cannot write %s: %s"):format(path, tostring(err)) end
      return true
    end,
    abort = function(self)
      if self.closed then return end
      self.closed = true
      fh:close()
    end,
  }
end

-- Standard output, every write and the flush checked.
local function stdout_output(stdout)
  local fh = checked_fh(stdout)
  return {
    fh = fh,
    finish = function()
      local ok, err = stdout:flush()
      if not ok and not fh.err then fh.err = err end
      if fh.err then return nil, "cannot write the output: " .. tostring(fh.err) end
      return true
    end,
    abort = function() end,
  }
end

local CHUNK = 1048576 -- bytes gathered before a write to a temporary output

-- A temporary file beside `target`, created exclusively with mode 0600 from the start (it
-- will hold secrets), written in checked chunks and renamed over `target` when complete;
-- removed on failure (only while it is still the file this run created).
local function replacing_output(path, target, devices)
  local dir, base = target:match("^(.*)/([^/]+)$")
  if not dir then dir, base = ".", target end
  if dir == "" then dir = "/" end
  local tmp = ("%s/.%s.%s.tmp"):format(dir, base, M.random_tag())
  local file = core().journal_open(tmp, "create")
  if not file then
    local probe = core().file_kind(dir, true)
    local_error("cannot write --out %s: %s", path,
      probe == "folder" and ("folder " .. dir .. " is not writable") or ("no folder " .. dir))
  end
  local id = file:id()
  local parts, size = {}, 0
  local fh = {}
  local function drain()
    if fh.err or #parts == 0 then return end
    local ok, err = file:append(table.concat(parts))
    -- the core names its file "the journal"; here it is the output
    if not ok then fh.err = tostring(err):gsub("^cannot write the journal: ", "") end
    parts, size = {}, 0
  end
  function fh:write(...)
    for i = 1, select("#", ...) do
      local s = tostring((select(i, ...)))
      parts[#parts + 1], size = s, size + #s
    end
    if size >= CHUNK then drain() end
    return self
  end
  local function remove_tmp()
    if select(2, core().file_kind(tmp)) == id then os.remove(tmp) end
  end
  return {
    fh = fh,
    finish = function(self)
      self.closed = true
      drain()
      local okc, cerr = file:close()
      local err = fh.err or (not okc and cerr) or nil
      local okr, rerr = true, nil
      local held = 0
      if not err and core().file_kind(target, true) == "file" then
        -- a journal made since the output was opened (--state FILE is this very path) is
        -- never replaced
        local okj, jerr = pcall(refuse_journal, path, target, core().file_kind(target) == "file",
          devices)
        -- an interrupt (SIGINT, SIGTERM) raised meanwhile is no verdict on the file: it goes
        -- on up, and abort removes the temporary file
        if not okj and not args.is_usage(jerr) then error(jerr, 0) end
        if not okj then
          local m = type(jerr) == "table" and tostring(jerr.message) or tostring(jerr)
          err = m:gsub("^cannot write %-%-out [^:]*: ", "")
        end
        local old = io.open(target, "rb")
        if old then held = old:seek("end") or 0; old:close() end
      end
      if not err then okr, rerr = os.rename(tmp, target) end
      if err or not okr then
        remove_tmp()
        return nil, ("cannot write %s: %s"):format(path, tostring(err or rerr))
      end
      if held > 0 then self.replaced = ("replaced %s (it held %d bytes)"):format(path, held) end
      return true
    end,
    -- Also after finish began: an interrupt raised inside it (before or after the rename)
    -- must leave no temporary file. remove_tmp touches only the file this run made, and
    -- file:close is idempotent.
    abort = function(self)
      self.closed = true
      file:close()
      remove_tmp()
    end,
  }
end

-- An output: stdout; `path` itself when it is a device, FIFO or socket (/dev/null,
-- /dev/stdout); else a temporary file that replaces the regular file only when complete --
-- the file a symlink leads to, so the link stays. Made before any request, so a bad path
-- fails first.
function M.open(path, stdout, devices)
  if not path then return stdout_output(stdout) end
  local kind, link, id = path_kind(path)
  if kind == "folder" then local_error("cannot write --out %s: it is a folder", path) end
  if kind == "special" or per_process(path) then return direct_output(path) end
  local target = path
  if link then
    if kind == "none" then
      local_error("cannot write --out %s: it is a symlink to nothing", path)
    end
    if leads_to_process_path(path) then return direct_output(path) end
    target = link_target(path, id)
    if not target then return direct_output(path) end
  end
  return replacing_output(path, target, devices)
end

-- A file open through `core.journal_open` (locked), appended to in checked, durable
-- writes; kept when the run fails (it tells what happened). `id`: its identity.
local function file_output(path, file)
  local fh = {}
  function fh:write(...)
    if self.err then return self end
    local ok, err = file:append(table.concat({...}))
    if not ok then self.err = tostring(err):gsub("^cannot write the journal: ", "") end
    return self
  end
  local function close(self)
    if self.closed then return true end
    self.closed = true
    local ok, err = file:close()
    if not ok and not fh.err then fh.err = err end
    return true
  end
  return {
    fh = fh,
    id = file:id(),
    finish = function(self)
      close(self)
      if fh.err then return nil, ("cannot write %s: %s"):format(path, tostring(fh.err)) end
      return true
    end,
    abort = close,
  }
end

-- A new file created exclusively (mode 0600, never through a symlink), as file_output.
local function new_file_output(flag, path)
  local file, why = core().journal_open(path, "create")
  if not file then local_error("cannot write %s %s: %s", flag, path, tostring(why)) end
  return file_output(path, file)
end

--- An existing regular file this job created (the caller has proved it: `id` is the
-- identity it recorded), opened locked (never through a symlink) and appended to as
-- `open_new`'s files are; a last line cut short by a kill is cut off first, so that the
-- appends start on a line of their own. Refused (exit 2) when the path no longer holds
-- that file, or `check(body)` returns a reason (the whole text, before any change).
-- @tparam string flag the option, for messages ("--report")
-- @tparam string path
-- @tparam string id the file's identity ("device:inode")
-- @tparam number max the largest file read [bytes]
-- @tparam function check `check(body) -> ?reason`
-- @treturn table output (`fh`, `id`, `finish`, `abort`)
-- @treturn integer the size it holds [bytes], a torn last line cut off
function M.continue_file(flag, path, id, max, check)
  local file, why = core().journal_open(path, "existing")
  if not file then local_error("cannot continue %s %s: %s", flag, path, tostring(why)) end
  local body
  if file:id() == id then body, why = file:read(max) else why = "it is another file now" end
  why = why or (body and check(body))
  local size = body and #body - #body:match("[^\n]*$")
  if not why and size ~= #body then
    local ok, terr = file:truncate(size)
    if not ok then why = terr end
  end
  if why then
    file:close()
    local_error("cannot continue %s %s: %s", flag, path, tostring(why))
  end
  return file_output(path, file), size
end

--- An output that never replaces a file this run did not create (`--report`): a device or
-- descriptor name is written directly; a FIFO is refused (its open would wait for a
-- reader); any other path must name nothing yet, and
-- becomes a new file (mode 0600) written as the job goes. Refused (exit 2) before any
-- request otherwise.
-- @tparam string flag the option, for messages ("--report")
-- @tparam string path
function M.open_new(flag, path)
  local kind, link = path_kind(path)
  if kind == "folder" then local_error("cannot write %s %s: it is a folder", flag, path) end
  if kind == "special" and not per_process(path) and select(3, core().file_kind(path, true)) == "fifo" then
    -- open(2) of a FIFO for writing waits for a reader, with no end, and no signal is
    -- handled while it waits: asked by its kind, never opened
    local_error("cannot write %s %s: it is a FIFO (opening it would wait for a reader " ..
      "without end): give the path of a new file, or a descriptor such as /dev/stdout", flag, path)
  end
  if kind == "special" or per_process(path) then return direct_output(path) end
  if kind ~= "none" or link or core().file_kind(path) ~= "none" then
    local_error("%s %s exists: give the path of a new file (an existing file is never " ..
      "overwritten)", flag, path)
  end
  return new_file_output(flag, path)
end


-- The esp-idf config file `path`, created exclusively (never replacing a file: this run
-- did not make it) with mode 0600 and written in one fsync'ed write before any request;
-- the values output `o` is wrapped so that the config is removed again unless the values
-- were written.
local function with_esp_config(o, path, text)
  local file, why = core().journal_open(path, "create")
  if not file then
    o:abort()
    local exists = (core().file_kind(path) or "none") ~= "none"
    local_error("cannot write the esp-idf config file %s: %s", path, exists and
      "it exists (a file this run did not create is never replaced): remove it or choose " ..
      "another --out" or tostring(why))
  end
  local id = file:id()
  local ok, err = file:append(text)
  file:close()
  local function remove()
    if select(2, core().file_kind(path)) == id then os.remove(path) end
  end
  if not ok then
    remove()
    o:abort()
    local_error("cannot write the esp-idf config file %s: %s", path,
      (tostring(err):gsub("^cannot write the journal: ", "")))
  end
  local finish, abort = o.finish, o.abort
  o.finish = function(self)
    local okf, ferr = finish(self)
    if okf then self.config_written = true else remove() end
    return okf, ferr
  end
  o.abort = function(self)
    abort(self)
    if not self.config_written then remove() end
  end
  o.config = path
  return o
end

--- The output of a command that writes devices: `open`, and for `--format esp-idf` the
-- config file beside the values file (`formats.esp_config_path`), which must be a
-- regular file or a new one.
-- @tparam table opts the checked options (`out`, `format`, `esp_namespace`, columns)
-- @param stdout the standard output stream
-- @treturn table the output (`fh`, `finish`, `abort`)
function M.open_devices(opts, stdout)
  if opts.format ~= "esp-idf" then return M.open(opts.out, stdout, true) end
  local kind = path_kind(opts.out)
  if kind == "special" or per_process(opts.out) then
    local_error("--format esp-idf writes --out %s and a config file beside it: give a " ..
      "regular file, not a device or FIFO", opts.out)
  end
  local o = M.open(opts.out, stdout, true)
  return with_esp_config(o, formats.esp_config_path(opts.out),
    formats.esp_config(formats.columns(opts), opts.esp_namespace))
end

--- Writes devices one at a time in the chosen format and columns (`--mqtt` computes the
-- connection columns of each device, `--no-secrets` leaves the secrets out). A device
-- whose columns cannot be computed stops the writer: the output's write error is set, so
-- its `finish` fails and nothing incomplete replaces a file.
-- @tparam table out an output (`open`, `open_devices`)
-- @tparam table|string opts the checked options (`format`, `mqtt`, `no_secrets`, the
--   connection options), or just the format's name
-- @tparam[opt] string product_key for devices given without their ProductKey
-- @treturn table `{add = function(dev), close = function(), count = n}`
function M.device_writer(out, opts, product_key)
  if type(opts) == "string" then opts = {format = opts} end
  local enc = formats.encoder(opts.format or "csv", formats.columns(opts))
  local cred_opts = opts.mqtt and connection.options(opts)
  local w = {count = 0}
  function w.add(dev)
    if out.fh.err then return end
    if dev.ProductKey == nil and product_key then
      local copy = {}
      for k, v in pairs(dev) do copy[k] = v end
      copy.ProductKey = product_key
      dev = copy
    end
    if cred_opts then
      local why
      dev, why = connection.add(dev, cred_opts)
      if not dev then out.fh.err = printable(why) return end
    end
    if w.count == 0 then out.fh:write(enc.head()) end
    w.count = w.count + 1
    out.fh:write(enc.row(dev, w.count))
  end
  function w.close()
    if w.count == 0 then out.fh:write(enc.head()) end
    out.fh:write(enc.tail(w.count))
  end
  return w
end

--- Writes a list of devices (`device_writer` over them).
-- @treturn integer how many were written
function M.write_devices(opts, out, devices, product_key)
  local w = M.device_writer(out, opts, product_key)
  for _, dev in ipairs(devices) do w.add(dev) end
  w.close()
  return w.count
end

return M
