--- Names files for `register --names-file`: reading (bounded, regular files only) and
-- parsing.
-- @module aliyun.iot.cli.names

local args = require "aliyun.iot.cli.args"

local local_error = args.local_error
local function core() return require "aliyun.iot.core" end

local M = {}

--- Reads a names file: one DeviceName a line, optionally `,Nickname`; lines end with LF,
-- CRLF or CR alone (old Mac editors), a leading UTF-8 byte order mark (editors on Windows
-- write one) is dropped, blank lines and lines starting with `#` skipped, spaces around
-- each part trimmed.
-- @tparam string text the file's contents
-- @treturn table a list of names, or of `{DeviceName=, DeviceNickname=}` when any line
--   has a nickname
function M.parse_names(text)
  local records, any_nickname = {}, false
  text = text:gsub("^\239\187\191", ""):gsub("\r\n?", "\n")
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line:match("^%s*(.-)%s*$")
    if line ~= "" and line:sub(1, 1) ~= "#" then
      local name, nickname = line:match("^([^,]*),(.*)$")
      name = (name or line):match("^%s*(.-)%s*$")
      nickname = nickname and nickname:match("^%s*(.-)%s*$")
      if nickname == "" then nickname = nil end
      any_nickname = any_nickname or nickname ~= nil
      records[#records + 1] = {DeviceName = name, DeviceNickname = nickname}
    end
  end
  if not any_nickname then
    for i, r in ipairs(records) do records[i] = r.DeviceName end
  end
  return records
end

--- The largest names file read, in bytes (10,000,000 names of 32 characters and more).
M.MAX_NAMES_BYTES = 1073741824

-- Reads at most `max` bytes from a stream; nil and a reason past that.
local function read_bounded(fh, max)
  local parts, size = {}, 0
  while true do
    local s, why = fh:read(65536)
    if not s then
      if why then return nil, why end
      break
    end
    size = size + #s
    if size > max then return nil, ("more than %d bytes"):format(max) end
    parts[#parts + 1] = s
  end
  return table.concat(parts)
end

--- Reads the names of `--names-file` (`-`: stdin).
-- @raise a local error when the file cannot be read or holds no name
function M.read(opts, streams)
  local text, why
  if opts.names_file == "-" then
    text, why = read_bounded(streams.stdin, M.MAX_NAMES_BYTES)
  else
    -- a regular file only (never /dev/zero, never a FIFO to wait on), and bounded
    text, why = core().read_file(opts.names_file, M.MAX_NAMES_BYTES)
  end
  if not text then local_error("cannot read names file: %s", tostring(why)) end
  local names = M.parse_names(text)
  if #names == 0 then local_error("names file %s holds no device name", opts.names_file) end
  return names
end

return M
