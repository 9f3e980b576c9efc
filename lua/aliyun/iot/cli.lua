--- The `aliyun-iot` command: argument parsing and output only; every request goes through
-- the Lua API (`aliyun.iot` and its batch helpers).
--
--     local code = require("aliyun.iot.cli").main(arg)   -- bin/aliyun-iot
--     os.exit(code)
--
-- Exit codes: 0 success; 1 service or network failure (stderr lists the ApplyIds created
-- and the command that finishes the job); 2 usage error or local validation failure;
-- 3 partial success (`--skip-invalid` left names out); 130 SIGINT (as for 1, from the
-- journal).
-- Secrets (AccessKeySecret, SecurityToken, DeviceSecret) go only to the chosen output
-- (stdout or `--out FILE`), never to stderr.
-- @module aliyun.iot.cli

local M = {}

M.EXIT_OK, M.EXIT_FAILURE, M.EXIT_USAGE, M.EXIT_PARTIAL = 0, 1, 2, 3
M.EXIT_INTERRUPTED = 130 -- SIGINT (Ctrl-C), as shells report a command it ended

M.USAGE = [[
Usage: aliyun-iot [options] COMMAND [options]

Registers Alibaba Cloud IoT Platform devices in bulk and prints their secrets.

Commands:
  register --product-key PK --count N
        register N devices with random names
  register --product-key PK --names-file FILE [--skip-invalid]
        register the devices named in FILE: one DeviceName[,Nickname] a line,
        blank lines and # comments skipped; FILE - reads stdin
  resume --state FILE
        finish a register job that stopped, from its state file
  status --product-key PK --apply-id ID
        print an apply's status (QueryBatchRegisterDeviceStatus) as JSON
  devices --product-key PK --apply-id ID
        print the devices of an apply
  call ACTION [Key=Value ...]
        call any IoT action and print the result as JSON; lists as
        Name.1=a Name.2=b, lists of records as Name.1.Field=x

Register options:
  --state FILE          keep the job's journal in FILE (a new file this run
                        creates; resume from it)
  --skip-invalid        leave invalid names out instead of failing (exit status 3)
  --apply-timeout S     seconds to wait for each apply (register and resume)

Options (before or after the command):
  --endpoint URL        API endpoint (default https://iot.<region>.aliyuncs.com/)
  --region ID           region id (default cn-shanghai)
  --iot-instance-id ID  IoT instance id (Enterprise Edition instances)
  --ca-file PATH        CA certificates to verify the endpoint with
  --timeout S           seconds per request (default 30)
  --deadline S          seconds for the whole job
  --format csv|json     device output: CSV with header
                        ProductKey,DeviceName,DeviceSecret,IotId (default) or JSON
  --out FILE            write the output to FILE instead of stdout: a file is
                        replaced atomically with mode 0600 (through a symlink, the
                        file it leads to); a device or FIFO is written directly
  --quiet               no progress or notes on stderr
  --help, --version

Credentials: ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET (and
ALIBABA_CLOUD_SECURITY_TOKEN), else ~/.aliyun/config.json, else
~/.alibabacloud/credentials.

Exit status: 0 done; 1 service or network failure; 2 usage or validation error;
3 partial success (--skip-invalid left names out); 130 stopped by Ctrl-C (the
journal and the command that finishes the job are on stderr).
]]

-- Option name -> {value = takes a value?, field = key in the options table,
-- commands = where it applies (nil: everywhere)}.
local OPTIONS = {
  endpoint = {value = true}, region = {value = true}, ["iot-instance-id"] = {value = true},
  ["ca-file"] = {value = true}, timeout = {value = true}, deadline = {value = true},
  format = {value = true, commands = {register = true, resume = true, devices = true}},
  out = {value = true}, quiet = {}, help = {}, version = {},
  ["product-key"] = {value = true, commands = {register = true, status = true, devices = true}},
  count = {value = true, commands = {register = true}},
  ["names-file"] = {value = true, commands = {register = true}},
  ["skip-invalid"] = {commands = {register = true}},
  state = {value = true, commands = {register = true, resume = true}},
  ["apply-timeout"] = {value = true, commands = {register = true, resume = true}},
  ["apply-id"] = {value = true, commands = {status = true, devices = true}},
}

local COMMANDS = {register = true, resume = true, status = true, devices = true, call = true}

-- A usage error: raised inside `main` and turned into exit status 2.
local Usage = {}
Usage.__index = Usage
Usage.__tostring = function(u) return u.message end

local function usage_error(fmt, ...)
  error(setmetatable({message = fmt:format(...), hint = true}, Usage), 0)
end

-- A local problem (a file that cannot be read or written): exit status 2, no usage hint.
local function local_error(fmt, ...)
  error(setmetatable({message = fmt:format(...)}, Usage), 0)
end

local function shell_quote(s)
  if s:find("^[%w%-_./:=@,+]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- Parses the command line.
-- @tparam {string,...} argv the arguments (without the program name)
-- @treturn table `{command=, args = {positional...}, <option names with - as _> = value}`;
--   flags are `true`
-- @raise a usage error (a table with `message`) on a bad command line
function M.parse(argv)
  local opts = {args = {}}
  local seen = {}
  local i, only_args = 1, false
  while i <= #argv do
    local a = argv[i]
    if only_args or a == "-" or a:sub(1, 1) ~= "-" then
      if not opts.command and not only_args then
        if not COMMANDS[a] then usage_error("unknown command '%s'", a) end
        opts.command = a
      else
        opts.args[#opts.args + 1] = a
      end
    elseif a == "--" then
      only_args = true
    else
      local name, value = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:match("^%-%-(.+)$")
      if a == "-h" then name = "help" end
      local spec = name and OPTIONS[name]
      if not spec then usage_error("unknown option '%s'", a) end
      if spec.value then
        if value == nil then
          value = argv[i + 1]
          if value == nil or (value:sub(1, 2) == "--" and #value > 2) then
            usage_error("option --%s needs a value", name)
          end
          i = i + 1
        end
      elseif value ~= nil then
        usage_error("option --%s takes no value", name)
      else
        value = true
      end
      if seen[name] then usage_error("option --%s given twice", name) end
      seen[name] = true
      opts[(name:gsub("%-", "_"))] = value
    end
    i = i + 1
  end
  if opts.help or opts.version then return opts end
  if not opts.command then usage_error("no command given") end
  for name in pairs(seen) do
    local only = OPTIONS[name].commands
    if only and not only[opts.command] then
      usage_error("option --%s does not apply to '%s'", name, opts.command)
    end
  end
  return opts
end

local function positive_number(opts, name)
  local key = name:gsub("%-", "_")
  local v = opts[key]
  if v == nil then return nil end
  local n = v:find("^%d*%.?%d+$") and tonumber(v)
  if not n or n <= 0 then
    usage_error("--%s must be a positive number of seconds, got '%s'", name, v)
  end
  opts[key] = n
  return n
end

-- A positive integer given as digits: a Lua integer when it fits, else the digit string
-- (the client accepts both and checks the range).
local function positive_integer(opts, name)
  local v = opts[(name:gsub("%-", "_"))]
  if not v:find("^%d+$") or v:find("^0+$") then
    usage_error("--%s must be a positive integer, got '%s'", name, v)
  end
  local n = tonumber(v)
  if math.tointeger and math.tointeger(n) and #v < 19 then return math.tointeger(n) end
  if not math.tointeger and n < 2^53 then return n end
  return (v:gsub("^0+", ""))
end

local function require_opts(opts, ...)
  for _, name in ipairs{...} do
    if opts[(name:gsub("%-", "_"))] == nil then
      usage_error("'%s' needs --%s", opts.command, name)
    end
  end
end

--- Checks the parsed command line for each command's needs and converts values.
-- @tparam table opts from `parse`
-- @raise a usage error
function M.check(opts)
  local cmd = opts.command
  if cmd ~= "call" and #opts.args > 0 then
    usage_error("unexpected argument '%s'", opts.args[1])
  end
  positive_number(opts, "timeout")
  positive_number(opts, "deadline")
  positive_number(opts, "apply-timeout")
  opts.format = opts.format or "csv"
  if opts.format ~= "csv" and opts.format ~= "json" then
    usage_error("--format must be csv or json, got '%s'", opts.format)
  end
  if opts.out == "" or (opts.out and opts.out:sub(-1) == "/") then
    usage_error("--out needs a file name, got '%s'", opts.out)
  end
  if cmd == "register" then
    require_opts(opts, "product-key")
    if opts.count and opts.names_file then
      usage_error("--count and --names-file exclude each other: give one")
    elseif not opts.count and not opts.names_file then
      usage_error("'register' needs either --count or --names-file")
    end
    if opts.count then opts.count = positive_integer(opts, "count") end
    if opts.skip_invalid and not opts.names_file then
      usage_error("--skip-invalid applies to --names-file only")
    end
  elseif cmd == "resume" then
    require_opts(opts, "state")
  elseif cmd == "status" or cmd == "devices" then
    require_opts(opts, "product-key", "apply-id")
    opts.apply_id = positive_integer(opts, "apply-id")
  elseif cmd == "call" then
    if #opts.args == 0 then usage_error("'call' needs an ACTION") end
    if not opts.args[1]:find("^%a%w*$") then
      usage_error("'%s' is not an action name", opts.args[1])
    end
  end
  return opts
end

--- Builds an API parameter table from `Key=Value` words: `Name.1=a Name.2=b` becomes
-- `Name = {"a", "b"}`, `List.1.Field=x` becomes `List = {{Field = "x"}}`. Values stay
-- strings (the client reads integer parameters from digit strings).
-- @tparam {string,...} words
-- @treturn table params
-- @raise a usage error on a malformed word, a duplicate, a clash or a list with a gap
function M.build_params(words)
  local params = {}
  for _, w in ipairs(words) do
    local key, value = w:match("^([^=]+)=(.*)$")
    if not key then usage_error("'%s' is not Key=Value", w) end
    local parts = {}
    for p in (key .. "."):gmatch("([^.]*)%.") do parts[#parts + 1] = p end
    local t = params
    for n, p in ipairs(parts) do
      if not (p:find("^%a[%w_]*$") or (n > 1 and p:find("^[1-9]%d*$"))) then
        usage_error("'%s' is not a parameter name", key)
      end
      local k = tonumber(p) or p
      if n > 1 and (type(k) == "number") ~= (t.__list == true) and next(t) ~= nil then
        usage_error("'%s' mixes list items and fields", key)
      end
      if n > 1 and next(t) == nil then rawset(t, "__list", type(k) == "number") end
      if n == #parts then
        if t[k] ~= nil then usage_error("'%s' given twice or clashes with another", key) end
        t[k] = value
      else
        if t[k] == nil then t[k] = {} end
        if type(t[k]) ~= "table" then usage_error("'%s' clashes with another", key) end
        t = t[k]
      end
    end
  end
  -- Turns the marked tables into plain lists, checking each runs 1..n without a gap.
  local function finish(t, name)
    local is_list = t.__list
    t.__list = nil
    local n = 0
    for k, v in pairs(t) do
      if type(v) == "table" then finish(v, name .. "." .. tostring(k)) end
      n = n + 1
    end
    if is_list then
      for i = 1, n do
        if t[i] == nil then usage_error("list %s has no item %d", name, i) end
      end
    end
  end
  for k, v in pairs(params) do
    if type(v) == "table" then finish(v, k) end
  end
  return params
end

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

-- JSON ----------------------------------------------------------------------------

local cjson_encode -- loaded on first use (cjson.encode of a string: JSON escaping)

local function json_string(s)
  cjson_encode = cjson_encode or require("cjson").encode
  return cjson_encode(s)
end

local function is_integer(v)
  if math.type then return math.type(v) == "integer" end
  return v == math.floor(v) and math.abs(v) < 2^53
end

-- Encodes a decoded response (strings, integers, numbers, booleans, tables) as indented
-- JSON with sorted keys; integers print as integers, however large. The decoder marks no
-- table as a list, so an empty table prints `[]` when its dotted `path` is in `lists`
-- (items of a list share the list's path, as in the action table), else `{}`.
local function json_value(v, indent, out, path, lists)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = json_string(v)
  elseif t == "number" then
    if is_integer(v) then
      out[#out + 1] = ("%d"):format(v)
    elseif v ~= v or v == math.huge or v == -math.huge then
      out[#out + 1] = "null"
    else
      local s = ("%.14g"):format(v)
      if tonumber(s) ~= v then s = ("%.17g"):format(v) end
      out[#out + 1] = s
    end
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif t == "table" then
    local n, keys = #v, {}
    for k in pairs(v) do keys[#keys + 1] = k end
    local inner = indent .. "  "
    if n > 0 and #keys == n then
      out[#out + 1] = "[\n"
      for i = 1, n do
        out[#out + 1] = inner
        json_value(v[i], inner, out, path, lists)
        out[#out + 1] = i < n and ",\n" or "\n"
      end
      out[#out + 1] = indent .. "]"
    elseif #keys == 0 then
      out[#out + 1] = lists[path] and "[]" or "{}"
    else
      for i, k in ipairs(keys) do keys[i] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{\n"
      for i, k in ipairs(keys) do
        out[#out + 1] = inner .. json_string(k) .. ": "
        json_value(v[k] == nil and v[tonumber(k)] or v[k], inner, out,
          path and path .. "." .. k or k, lists)
        out[#out + 1] = i < #keys and ",\n" or "\n"
      end
      out[#out + 1] = indent .. "}"
    end
  else
    out[#out + 1] = "null"
  end
end

--- Encodes a value as indented JSON (sorted keys, exact integers).
-- @param v a decoded response or part of one
-- @tparam[opt] {string,...} lists dotted paths of the fields that are lists (an action's
--   `lists` in `aliyun.iot.actions`): an empty table there prints `[]`, elsewhere `{}`
-- @treturn string
function M.json(v, lists)
  local out, set = {}, {}
  for _, p in ipairs(lists or {}) do set[p] = true end
  json_value(v, "", out, nil, set)
  return table.concat(out)
end

-- Device output ---------------------------------------------------------------------

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
local function random_tag()
  return (require("aliyun.iot.core").nonce():gsub("%-", ""))
end

-- Runs a shell command: true when it exits 0 (Lua 5.1 returns a number, 5.2+ a boolean).
local function sh_ok(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
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
  local tmp = ("%s/.%s.%s.tmp"):format(dir, base, random_tag())
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
local function open_output(path, stdout)
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
local function device_writer(out, format, product_key)
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

-- Progress on stderr --------------------------------------------------------------

-- "1 apply", "2 applies".
local function count_of(n, one, many)
  return ("%d %s"):format(n, n == 1 and one or many)
end

-- Phases whose counts grow with our own work, so devices a second says something; in the
-- others the count jumps when the service answers (check, create) or is local (validate).
local RATE_PHASES = {register = true, fetch = true}

local function is_terminal(streams)
  if streams.stderr_is_tty ~= nil then return streams.stderr_is_tty end
  local term = os.getenv("TERM")
  if not term or term == "" or term == "dumb" then return false end
  return sh_ok("test -t 2")
end

-- Makes `on_progress` plus `note` (a line on stderr that does not tear the bar) and
-- `done` (ends the bar). A bar when stderr is a terminal, else one line per phase.
local function progress(streams, quiet, now)
  local p = {}
  if quiet then
    p.note = function() end
    p.done = function() end
    return p
  end
  local err = streams.stderr
  local tty = is_terminal(streams)
  local drawn = false
  local function clear()
    if drawn then err:write("\r\27[K") drawn = false end
  end
  function p.note(line)
    clear()
    err:write("aliyun-iot: ", line, "\n")
  end
  function p.done()
    if drawn then err:write("\n") drawn = false end -- the last bar stays on screen
    err:flush()
  end
  -- Events count the whole job (`done` of `total`); the rate is over the current phase.
  local phase, seen, since, done0, last_draw = nil, {}, 0, 0, -1
  function p.on_progress(ev)
    local t, done, total = now(), tonumber(ev.done), tonumber(ev.total)
    if ev.phase ~= phase then
      phase, since, done0 = ev.phase, t, done or 0
      if not tty and not seen[phase] then
        seen[phase] = true
        local names = phase == "validate" or phase == "check"
        err:write("aliyun-iot: ", tostring(phase), total and (": " .. (names
          and count_of(total, "name", "names") or count_of(total, "device", "devices"))) or "", "\n")
        err:flush()
      end
    end
    if tty and done and (t - last_draw >= 0.1 or done == total) then
      last_draw = t
      local width, bar = 30, ""
      if total and total > 0 then
        local filled = math.floor(width * math.min(done, total) / total)
        bar = "[" .. ("#"):rep(filled) .. ("."):rep(width - filled) .. "] "
      end
      local rate = ""
      if RATE_PHASES[phase] and t > since then
        rate = ("  %.0f/s"):format((done - done0) / (t - since))
      end
      err:write(("\r\27[K%-8s %s%d%s%s"):format(tostring(phase), bar, done,
        total and ("/" .. total) or "", rate))
      err:flush()
      drawn = true
    end
  end
  return p
end

-- Commands ---------------------------------------------------------------------------

-- Exit status for a failed call: 2 when nothing was sent because a value was bad, there
-- are no credentials or they are malformed (local mistakes), 1 for the service or network.
local LOCAL_CODES = {InvalidParameter = true, InvalidDeviceName = true, NoCredentials = true,
                     InvalidCredentials = true}

local function failure_code(err)
  return LOCAL_CODES[err.code] and M.EXIT_USAGE or M.EXIT_FAILURE
end

local CREDENTIALS_HELP = "set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET " ..
  "(and ALIBABA_CLOUD_SECURITY_TOKEN for STS), or write ~/.aliyun/config.json (aliyun " ..
  "configure) or ~/.alibabacloud/credentials"

-- The error as the CLI prints it: library hints (option names, `client:...` calls, the
-- notes on ApplyIds and journals the CLI prints itself) replaced by what a shell user types.
local function cli_error(err)
  if type(err) ~= "table" then return err end
  local copy = {}
  for k, v in pairs(err) do copy[k] = v end
  local msg = tostring(err.message or "")
  msg = msg:gsub(" %[ApplyIds created: .*%]$", "")
  msg = msg:gsub("client:resume{journal = %.%.%.}", "aliyun-iot resume --state FILE")
  if err.code == "NoCredentials" then
    local looked = msg:match("looked at: (.*)$") or ""
    looked = looked:gsub("options [^;]*%(not given%);?%s*", "")
    msg = "no credentials found: " .. CREDENTIALS_HELP ..
      (looked ~= "" and ("; looked at: " .. looked) or "")
  end
  copy.message = msg
  return setmetatable(copy, getmetatable(err))
end

local function print_error(streams, err)
  streams.stderr:write("aliyun-iot: ", tostring(cli_error(err)), "\n")
end

local function new_client(opts, ui)
  local iot = require "aliyun.iot"
  local client, err = iot.new{
    endpoint = opts.endpoint, region_id = opts.region, iot_instance_id = opts.iot_instance_id,
    ca_file = opts.ca_file, timeout = opts.timeout,
    -- a single call's retries end at --deadline; a job passes it to the helper instead
    retry_deadline = (opts.command ~= "register" and opts.command ~= "resume")
      and opts.deadline or nil,
    logger = function(level, message)
      if level ~= "debug" and level ~= "info" then ui.note(level .. ": " .. message) end
    end,
  }
  return client, err
end

-- The options a follow-up command needs to reach the same service and output.
local function common_flags(opts)
  local f = {}
  for _, name in ipairs{"endpoint", "region", "iot-instance-id", "ca-file", "timeout"} do
    local v = opts[(name:gsub("%-", "_"))]
    if v then f[#f + 1] = "--" .. name .. " " .. shell_quote(tostring(v)) end
  end
  return f
end

local function resume_command(opts, state)
  local f = {"aliyun-iot", "resume", "--state", shell_quote(state)}
  for _, x in ipairs(common_flags(opts)) do f[#f + 1] = x end
  if opts.apply_timeout then f[#f + 1] = "--apply-timeout " .. tostring(opts.apply_timeout) end
  if opts.format ~= "csv" then f[#f + 1] = "--format " .. opts.format end
  if opts.out then f[#f + 1] = "--out " .. shell_quote(opts.out) end
  return table.concat(f, " ")
end

--- The largest names file read, in bytes (10,000,000 names of 32 characters and more).
M.MAX_NAMES_BYTES = 1073741824
--- The largest credentials or config file read, in bytes.
M.MAX_CONFIG_BYTES = 1048576

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

local function read_names(opts, streams)
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

-- Reports a register/resume failure: the error, the applies created and how to finish.
-- `state`: the journal to name with the resume command (nil when there is none to keep).
local function report_failure(err, opts, streams, state)
  if err.code == "InvalidDeviceName" and err.invalid then
    -- the names once, a line each (the library's message lists them too)
    streams.stderr:write(("aliyun-iot: InvalidDeviceName: %d device %s invalid:\n")
      :format(#err.invalid, #err.invalid == 1 and "name is" or "names are"))
    for _, inv in ipairs(err.invalid) do
      streams.stderr:write(("  %s: %s\n"):format(tostring(inv.DeviceName), tostring(inv.ErrorMsg)))
    end
    streams.stderr:write("aliyun-iot: nothing was registered; ",
      "fix the names or pass --skip-invalid\n")
    return M.EXIT_USAGE
  end
  print_error(streams, err)
  local ids = {}
  for i, id in ipairs(err.apply_ids or {}) do ids[i] = tostring(id) end
  if #ids > 0 then
    streams.stderr:write("aliyun-iot: ApplyIds created: ", table.concat(ids, " "), "\n")
  end
  if state then
    streams.stderr:write("aliyun-iot: the journal ", state, " records the job; to finish it, run:\n  ",
      resume_command(opts, state), "\n")
  elseif #ids > 0 then
    streams.stderr:write("aliyun-iot: read each apply's devices once it is done with:\n")
    for _, id in ipairs(ids) do
      local f = {"aliyun-iot devices --product-key", shell_quote(opts.product_key),
                 "--apply-id", id}
      for _, x in ipairs(common_flags(opts)) do f[#f + 1] = x end
      streams.stderr:write("  ", table.concat(f, " "), "\n")
    end
  end
  return failure_code(err)
end

-- Reports a job stopped by SIGINT (Lua's "interrupted!" error): what the journal holds
-- and how to finish. A journal this run created in TMPDIR that holds nothing sent is
-- removed.
local function report_interrupt(ctx, streams)
  streams.stderr:write("aliyun-iot: interrupted\n")
  local state = ctx.state
  if not state then return M.EXIT_INTERRUPTED end
  local journal = require "aliyun.iot.journal"
  -- read, not opened: the interrupted job in this process may still hold its lock
  local records = journal.read(state)
  local ids, seen = {}, {}
  for _, r in ipairs(records or {}) do
    local id = r.event == "apply" and tostring(r.ApplyId)
    if id and not seen[id] then ids[#ids + 1], seen[id] = id, true end
  end
  if ctx.own_state and records and #records < 2 and journal.discard(state) then
    streams.stderr:write("aliyun-iot: nothing was sent yet\n")
    return M.EXIT_INTERRUPTED
  end
  if #ids > 0 then
    streams.stderr:write("aliyun-iot: ApplyIds created: ", table.concat(ids, " "), "\n")
  end
  if records then
    streams.stderr:write("aliyun-iot: the journal ", state, " records the job; to finish it, run:\n  ",
      resume_command(ctx.opts, state), "\n")
  end
  return M.EXIT_INTERRUPTED
end

local function write_devices(opts, out, devices, product_key)
  local w = device_writer(out, opts.format, product_key)
  for _, dev in ipairs(devices) do w.add(dev) end
  w.close()
  return w.count
end

-- Refuses a --state path for 'register' unless nothing is there (exit 2, before any
-- request, the path untouched): a journal is a new file the job creates.
local function check_new_state(state)
  local kind = core().file_kind(state)
  if kind == "none" then return end
  if kind == "folder" then local_error("state file %s is a folder, not a journal", state) end
  if kind ~= "file" then
    local_error("state file %s exists and is not a regular file (%s): --state takes the " ..
      "path of a new file", state, kind == "link" and "a symlink" or "a device, FIFO or socket")
  end
  local journal = require "aliyun.iot.journal"
  local records = journal.read(state)
  if records and journal.finished(records) then
    local_error("state file %s holds a finished job (its devices are in it: 'aliyun-iot " ..
      "resume --state %s' prints them); choose a new file for a new job", state, shell_quote(state))
  elseif records then
    local_error("state file %s exists: finish its job with 'aliyun-iot resume --state %s' " ..
      "or choose a new file", state, shell_quote(state))
  end
  local_error("state file %s exists: --state takes the path of a new file (it was left " ..
    "as it is)", state)
end

-- The journal of a register run without --state: a new file in TMPDIR. No journal, no job:
-- a TMPDIR that is not a folder is refused before anything is sent.
local function temp_state()
  local dir = os.getenv("TMPDIR")
  if not dir or dir == "" then dir = "/tmp" end
  if core().file_kind(dir, true) ~= "folder" then
    local_error("cannot keep the job's journal: TMPDIR folder %s does not exist or is not " ..
      "a folder; set TMPDIR to a writable folder or give --state FILE", dir)
  end
  return ("%s/aliyun-iot-%s.state"):format(dir:gsub("/+$", ""), random_tag()), dir
end

-- Checks the --state of 'resume' before any request (exit 2 with the reason).
local function check_resume_state(state)
  local kind = core().file_kind(state)
  if kind == "none" then local_error("cannot read state file %s: no such file", state) end
  if kind == "folder" then local_error("state file %s is a folder, not a journal", state) end
  if kind ~= "file" then
    local_error("state file %s is not a regular file: resume reads a journal", state)
  end
  -- read, not opened: opening locks the journal, and the job opens it again
  local records, jerr = require("aliyun.iot.journal").read(state)
  if not records then
    local_error("state file %s is not a journal to resume: %s", state,
      tostring(jerr and jerr.message or jerr))
  end
end

-- The job's arguments and the journal path for register/resume; `own` is true for a
-- journal in TMPDIR (removed once the job is done).
local function job_args(opts, streams, ui)
  local job = {on_progress = ui.on_progress, deadline = opts.deadline,
               apply_timeout = opts.apply_timeout}
  if opts.command == "resume" then
    check_resume_state(opts.state)
    job.journal = opts.state
    return job, opts.state, false
  end
  job.ProductKey = opts.product_key
  if opts.count then
    job.Count = opts.count
  else
    job.Devices = read_names(opts, streams)
    job.skip_invalid = opts.skip_invalid or nil
  end
  local state, own, dir = opts.state, false, nil
  if state then
    check_new_state(state)
  else
    -- Without --state the job still keeps a journal, so a failure can be finished with
    -- 'resume'; it is removed when the job completes.
    state, dir = temp_state()
    own = true
  end
  job.journal = state
  return job, state, own, dir
end

local function run_helper(client, opts, job)
  if opts.command == "resume" then return client:resume(job) end
  if job.Count then return client:register_devices(job) end
  return client:register_named_devices(job)
end

-- A job that failed: the known devices written when no command can fetch them, the
-- failure reported, and the journal removed only when this run created it and it is of
-- no use (nothing created, or nothing sent).
local function job_failed(err, opts, streams, out, state, own_state, dir)
  local journal = require "aliyun.iot.journal"
  if err.ambiguous and err.devices and #err.devices > 0 then
    -- No command can settle an uncertain BatchRegisterDevice (its error says so), so the
    -- devices of the applies known are written rather than held back; exit status stays 1.
    write_devices(opts, out, err.devices, opts.product_key)
    local ok, werr = out:finish()
    streams.stderr:write("aliyun-iot: ", ok and (("%d devices of the known applies written to %s")
      :format(#err.devices, opts.out or "stdout")) or werr, "\n")
  end
  out:abort()
  if err.parameter == "journal" and dir then
    -- the library could not create the journal in TMPDIR: no journal, no job
    local_error("cannot keep the job's journal in TMPDIR folder %s: %s; set TMPDIR to a " ..
      "writable folder or give --state FILE", dir, tostring(err.message))
  end
  local created = (err.apply_ids and #err.apply_ids > 0) or err.ambiguous
  local code = failure_code(err)
  -- a journal with an ApplyId in it is never dropped, whatever the error
  if not created and (code == M.EXIT_USAGE or own_state) then
    if journal.discard(state) or own_state then state = nil end
  end
  if state and (err.parameter == "journal" or not journal.read(state)) then
    state = nil -- not a journal of this job (refused, or unreadable): nothing to resume
  end
  return report_failure(err, opts, streams, state)
end

-- register and resume: the job, then all devices to the output at once.
-- `ctx` receives the output, the journal and whether this run chose it, for
-- `report_interrupt`.
local function run_job(opts, streams, ui, now, ctx)
  local job, state, own_state, dir = job_args(opts, streams, ui)
  local out = open_output(opts.out, streams.stdout)
  ctx.out, ctx.state, ctx.own_state = out, state, own_state
  local client, cerr = new_client(opts, ui)
  if not client then
    out:abort()
    print_error(streams, cerr)
    return failure_code(cerr)
  end
  if own_state then
    -- the only way to find this journal if the process is killed (SIGTERM, SIGKILL)
    ui.note(("journal %s; if the job stops, finish it with: %s")
      :format(state, resume_command(opts, state)))
  end
  local t0 = now()
  local res, err = run_helper(client, opts, job)
  ui.done()
  if not res then return job_failed(err, opts, streams, out, state, own_state, dir) end
  local n = write_devices(opts, out, res.Devices or {}, opts.product_key)
  local ok, werr = out:finish()
  if not ok then
    -- the devices are safe in the journal only: it stays, named with the command
    streams.stderr:write("aliyun-iot: ", werr, "\n")
    streams.stderr:write("aliyun-iot: the devices are in the journal ", state,
      "; write them again with:\n  ", resume_command(opts, state), "\n")
    return M.EXIT_FAILURE
  end
  if own_state then require("aliyun.iot.journal").discard(state) end
  local stats = client:stats()
  ui.note(("%s in %s, %.1f s, %s, %s, %d throttled")
    :format(count_of(n, "device", "devices"), count_of(#(res.ApplyIds or {}), "apply", "applies"),
      now() - t0, count_of(stats.requests or 0, "request", "requests"),
      count_of(stats.retries or 0, "retry", "retries"), stats.throttled or 0))
  if res.Invalid and #res.Invalid > 0 then
    streams.stderr:write(("aliyun-iot: %s left out:\n")
      :format(count_of(#res.Invalid, "invalid name", "invalid names")))
    for _, inv in ipairs(res.Invalid) do
      streams.stderr:write(("  %s: %s\n"):format(tostring(inv.DeviceName), tostring(inv.ErrorMsg)))
    end
    return M.EXIT_PARTIAL
  end
  return M.EXIT_OK
end

local function run_devices(opts, streams, ui, ctx)
  local out = open_output(opts.out, streams.stdout)
  ctx.out = out
  local client, cerr = new_client(opts, ui)
  if not client then
    out:abort()
    print_error(streams, cerr)
    return failure_code(cerr)
  end
  local w = device_writer(out, opts.format, opts.product_key)
  for dev, err in client:apply_devices{ProductKey = opts.product_key, ApplyId = opts.apply_id} do
    if not dev then
      out:abort()
      print_error(streams, err)
      return failure_code(err)
    end
    w.add(dev)
  end
  w.close()
  local ok, werr = out:finish()
  if not ok then
    streams.stderr:write("aliyun-iot: ", werr, "\n")
    return M.EXIT_FAILURE
  end
  return M.EXIT_OK
end

-- status and call: one action, its decoded result as JSON.
local function run_call(opts, streams, ui, ctx)
  local action, params
  if opts.command == "status" then
    action = "QueryBatchRegisterDeviceStatus"
    params = {ProductKey = opts.product_key, ApplyId = opts.apply_id}
  else
    action = opts.args[1]
    local words = {}
    for i = 2, #opts.args do words[#words + 1] = opts.args[i] end
    params = M.build_params(words)
  end
  local out = open_output(opts.out, streams.stdout)
  ctx.out = out
  local client, cerr = new_client(opts, ui)
  local res, err
  if client then
    res, err = client:call(action, params)
  else
    err = cerr
  end
  if not res then
    out:abort()
    print_error(streams, err)
    return failure_code(err)
  end
  local row = require("aliyun.iot.actions").get(action)
  out.fh:write(M.json(res, row and row.lists), "\n")
  local ok, werr = out:finish()
  if not ok then
    streams.stderr:write("aliyun-iot: ", werr, "\n")
    return M.EXIT_FAILURE
  end
  return M.EXIT_OK
end

local function version()
  local ok, mod = pcall(require, "aliyun.iot.core")
  return ok and mod._VERSION or "unknown"
end

-- Lua's stand-alone interpreters turn SIGINT into this error (lua.c and luajit.c: a hook
-- raises "interrupted!" when the Lua code runs next).
local function is_interrupt(e)
  return type(e) == "string" and e:find("interrupted!$") ~= nil
end

--- Runs the command.
-- @tparam {string,...} argv the arguments (as `arg` holds them, without the program name)
-- @tparam[opt] table streams `{stdin=, stdout=, stderr=, stderr_is_tty=}` (default the
--   process's own; `stderr_is_tty` overrides the terminal check)
-- @treturn integer exit status (0, 1, 2 or 3; 130 when SIGINT stopped it: the journal and
--   the resume command are then on stderr)
function M.main(argv, streams)
  -- The process holds the AccessKeySecret and DeviceSecrets: no core file may keep them.
  require("aliyun.iot.core").disable_core_dumps()
  streams = streams or {}
  streams.stdin = streams.stdin or io.stdin
  streams.stdout = streams.stdout or io.stdout
  streams.stderr = streams.stderr or io.stderr
  local args = {}
  for i = 1, #argv do args[i] = argv[i] end
  -- what an interrupt must clean up or report: the output, the job's journal
  local ctx = {}
  local ok, code = xpcall(function()
    local opts = M.parse(args)
    if opts.help then
      streams.stdout:write(M.USAGE)
      return M.EXIT_OK
    end
    if opts.version then
      streams.stdout:write("aliyun-iot ", version(), " (IoT API 2018-01-20)\n")
      return M.EXIT_OK
    end
    M.check(opts)
    ctx.opts = opts
    local now = require("aliyun.iot.core").now
    local ui = progress(streams, opts.quiet, now)
    ctx.ui = ui
    if opts.command == "register" or opts.command == "resume" then
      return run_job(opts, streams, ui, now, ctx)
    elseif opts.command == "devices" then
      return run_devices(opts, streams, ui, ctx)
    end
    return run_call(opts, streams, ui, ctx)
  end, function(e)
    if getmetatable(e) == Usage or is_interrupt(e) then return e end
    return debug.traceback(tostring(e), 2)
  end)
  if ok then return code end
  if getmetatable(code) == Usage then
    streams.stderr:write("aliyun-iot: ", code.message, "\n",
      code.hint and "Try 'aliyun-iot --help'.\n" or "")
    return M.EXIT_USAGE
  end
  if is_interrupt(code) then
    if ctx.out then ctx.out:abort() end
    if ctx.ui then ctx.ui.done() end
    return report_interrupt(ctx, streams)
  end
  streams.stderr:write("aliyun-iot: internal error: ", tostring(code), "\n")
  return M.EXIT_FAILURE
end

return M
