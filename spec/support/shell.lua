--- File and shell helpers the specs share.
local M = {}

--- Quotes s for /bin/sh (single quotes; embedded ones escaped).
function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- The whole file, or nil when it cannot be opened.
function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

--- Writes text to path (raises when it cannot).
function M.write(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  f:close()
end

--- Runs a shell command; true when it exited 0 (Lua 5.1 returns a number, 5.2+ a boolean).
function M.ok(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

--- Runs a shell command and returns its standard output.
function M.capture(cmd)
  local p = assert(io.popen(cmd))
  local s = p:read("*a")
  p:close()
  return s
end

--- A new empty folder for a spec's files (and `sub` below it, when given): a name from
-- os.tmpname, whose file is replaced by the folder. Raises when it cannot be made.
function M.temp_dir(sub)
  local dir = os.tmpname()
  os.remove(dir)
  assert(M.ok("mkdir -p " .. M.quote(dir .. (sub or ""))), "cannot make " .. dir)
  return dir
end

return M
