--- Progress on stderr: a bar on a terminal, a line per phase elsewhere, notes between.
-- @module aliyun.iot.cli.progress

local M = {}

-- Runs a shell command: true when it exits 0 (Lua 5.1 returns a number, 5.2+ a boolean).
local function sh_ok(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

-- "1 apply", "2 applies".
function M.count_of(n, one, many)
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
function M.new(streams, quiet, now)
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
  -- Events count the whole job (`done` of `total`); the rate is over the current phase.
  local phase, seen, since, done0, last_draw = nil, {}, 0, 0, -1
  local reached = {} -- phase -> {done, total} of its last event
  function p.done()
    if drawn then err:write("\n") drawn = false end -- the last bar stays on screen
    -- A phase line names the phase's goal; a job that ended short of it (a failure, an
    -- ambiguous answer) says what was reached, so the last line is the truth.
    local r = phase and reached[phase]
    if not tty and r and r[1] and r[2] and r[1] < r[2] then
      local names = phase == "validate" or phase == "check"
      err:write("aliyun-iot: ", tostring(phase), ": stopped at ", tostring(r[1]), " of ",
        names and M.count_of(r[2], "name", "names") or M.count_of(r[2], "device", "devices"), "\n")
      reached[phase] = nil
    end
    err:flush()
  end
  function p.on_progress(ev)
    local t, done, total = now(), tonumber(ev.done), tonumber(ev.total)
    if ev.phase ~= nil then reached[ev.phase] = {done, total} end
    if ev.phase ~= phase then
      phase, since, done0 = ev.phase, t, done or 0
      if not tty and not seen[phase] then
        seen[phase] = true
        local names = phase == "validate" or phase == "check"
        err:write("aliyun-iot: ", tostring(phase), total and (": " .. (names
          and M.count_of(total, "name", "names") or M.count_of(total, "device", "devices"))) or "", "\n")
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


return M
