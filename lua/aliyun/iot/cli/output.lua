--- Where the CLI's output goes (stdout, a device or FIFO written directly, or a regular
-- file replaced atomically) and the device writers (CSV or JSON).
-- @module aliyun.iot.cli.output

local args = require "aliyun.iot.cli.args"
local json = require "aliyun.iot.cli.json"

local local_error, shell_quote = args.local_error, args.shell_quote
local json_string = json.string

local M = {}

local FIELDS = {"ProductKey", "DeviceName", "DeviceSecret", "IotId"}

--- One CSV field, quoted as RFC 4180 asks when it holds a comma, a quote, CR or LF.
-- @tparam string s
-- @treturn string
function M.csv_field(s)
  s = tostring(s or "")
  if s:find('[,"\r\n]') then return '"' .. s:gsub('"', '""') .. '"' end
  return s
end

local function csv_line(dev)
  local f = {}
  for i, k in ipairs(FIELDS) do f[i] = M.csv_field(dev[k]) end
  return table.concat(f, ",") .. "\r\n"
end

local function json_device(dev)
  local f = {}
  for i, k in ipairs(FIELDS) do
    f[i] = json_string(k) .. ": " .. json_string(tostring(dev[k] or ""))
  end
  return "  {" .. table.concat(f, ", ") .. "}"
end

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
local function replacing_output(path, target)
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
    if not ok then fh.err = err end
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
      if not err then okr, rerr = os.rename(tmp, target) end
      if err or not okr then
        remove_tmp()
        return nil, ("cannot write %s: %s"):format(path, tostring(err or rerr))
      end
      return true
    end,
    abort = function(self)
      if self.closed then return end
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
function M.open(path, stdout)
  if not path then return stdout_output(stdout) end
  local kind, link, id = path_kind(path)
  if kind == "folder" then local_error("cannot write --out %s: it is a folder", path) end
  if kind == "special" then return direct_output(path) end
  local target = path
  if link then
    if kind == "none" then
      local_error("cannot write --out %s: it is a symlink to nothing", path)
    end
    target = link_target(path, id)
    if not target then return direct_output(path) end
  end
  return replacing_output(path, target)
end

-- Writes devices one at a time in the chosen format.
function M.device_writer(out, format, product_key)
  local w = {count = 0}
  function w.add(dev)
    if dev.ProductKey == nil and product_key then
      local copy = {}
      for k, v in pairs(dev) do copy[k] = v end
      copy.ProductKey = product_key
      dev = copy
    end
    if format == "csv" then
      if w.count == 0 then out.fh:write(table.concat(FIELDS, ","), "\r\n") end
      out.fh:write(csv_line(dev))
    else
      out.fh:write(w.count == 0 and "[\n" or ",\n", json_device(dev))
    end
    w.count = w.count + 1
  end
  function w.close()
    if format == "csv" then
      if w.count == 0 then out.fh:write(table.concat(FIELDS, ","), "\r\n") end
    else
      out.fh:write(w.count == 0 and "[]\n" or "\n]\n")
    end
  end
  return w
end

function M.write_devices(opts, out, devices, product_key)
  local w = M.device_writer(out, opts.format, product_key)
  for _, dev in ipairs(devices) do w.add(dev) end
  w.close()
  return w.count
end


return M
