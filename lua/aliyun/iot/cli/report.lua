--- How the CLI reports failures: exit statuses, errors rewritten for shell users, the
-- applies created and the command that finishes a job.
-- @module aliyun.iot.cli.report

local args = require "aliyun.iot.cli.args"

local shell_quote = args.shell_quote

local M = {}

--- The program name printed in follow-up commands: `aliyun-iot`, or the path the user
-- ran (`bin/aliyun-iot` from a checkout); `cli.main` sets it.
M.PROG = "aliyun-iot"

local printable = require("aliyun.iot.errors").printable

M.EXIT_OK, M.EXIT_FAILURE, M.EXIT_USAGE, M.EXIT_PARTIAL = 0, 1, 2, 3
M.EXIT_INTERRUPTED = 130 -- SIGINT (Ctrl-C), as shells report a command it ended
M.EXIT_TERMINATED = 143 -- SIGTERM (docker stop, systemd, kill), likewise

-- Exit status for a failed call: 2 when nothing was sent because a value was bad, there
-- are no credentials or they are malformed (local mistakes), 1 for the service or network.
local LOCAL_CODES = {InvalidParameter = true, InvalidDeviceName = true, NoCredentials = true,
                     InvalidCredentials = true, TargetMismatch = true}

function M.failure_code(err)
  return LOCAL_CODES[err.code] and M.EXIT_USAGE or M.EXIT_FAILURE
end

local CREDENTIALS_HELP = "set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET " ..
  "(and ALIBABA_CLOUD_SECURITY_TOKEN for STS), or write ~/.aliyun/config.json (aliyun " ..
  "configure) or ~/.alibabacloud/credentials, or run on ECS with a RAM role (README, " ..
  "\"Credentials\")"

-- Library arguments a message may name, and the flags a shell user types for them.
local FLAGS = {prune_tags = "--prune-tags", retire_unlisted = "--retire-unlisted"}

-- The error as the CLI prints it: library hints (option names, `client:...` calls, the
-- notes on ApplyIds and journals the CLI prints itself) replaced by what a shell user types.
local function cli_error(err)
  if type(err) ~= "table" then return err end
  local copy = {}
  for k, v in pairs(err) do copy[k] = v end
  local msg = tostring(err.message or "")
  msg = msg:gsub(" %[ApplyIds created: .*%]$", "")
  msg = msg:gsub("client:resume{journal = %.%.%., adopt_apply_ids = {ApplyId}}",
    "aliyun-iot resume --state FILE --adopt-apply-id ID")
  msg = msg:gsub("client:resume{journal = %.%.%., accept_ambiguous = true}",
    "aliyun-iot resume --state FILE --accept-ambiguous")
  msg = msg:gsub("client:resume{journal = %.%.%.}", "aliyun-iot resume --state FILE")
  local flag = FLAGS[err.parameter]
  if err.code == "InvalidParameter" and flag then -- an apply's options, as its journal has them
    msg = msg:gsub("`" .. err.parameter .. " = true`", flag)
      :gsub("`" .. err.parameter .. " = false`", "no " .. flag)
  end
  if err.code == "DevicesOnline" then -- retire's, apply --retire-unlisted's way on
    msg = msg:gsub("a longer `wait`", "a longer --wait S"):gsub("with `force = true`", "with --force")
  end
  if err.code == "NoCredentials" then
    local looked = msg:match("looked at: (.*)$") or ""
    looked = looked:gsub("options [^;]*%(not given%);?%s*", "")
    msg = "no credentials found: " .. CREDENTIALS_HELP ..
      (looked ~= "" and ("; looked at: " .. looked) or "")
  end
  copy.message = msg
  return setmetatable(copy, getmetatable(err))
end

function M.print_error(streams, err)
  streams.stderr:write("aliyun-iot: ", tostring(cli_error(err)), "\n")
end
-- The options a follow-up command needs to reach the same service and output.
function M.common_flags(opts)
  local f = {}
  for _, name in ipairs{"endpoint", "region", "profile", "iot-instance-id", "ca-file",
                       "timeout"} do
    local v = opts[(name:gsub("%-", "_"))]
    if v then f[#f + 1] = "--" .. name .. " " .. shell_quote(tostring(v)) end
  end
  return f
end

function M.resume_command(opts, state)
  local f = {shell_quote(M.PROG), "resume", "--state", shell_quote(state)}
  for _, x in ipairs(M.common_flags(opts)) do f[#f + 1] = x end
  if opts.apply_timeout then f[#f + 1] = "--apply-timeout " .. tostring(opts.apply_timeout) end
  if opts.format ~= "csv" then f[#f + 1] = "--format " .. opts.format end
  for _, x in ipairs(require("aliyun.iot.cli.formats").flags(opts)) do f[#f + 1] = x end
  if opts.out then f[#f + 1] = "--out " .. shell_quote(opts.out) end
  return table.concat(f, " ")
end

-- The options of a stopped apply or retire that a run again must repeat, in command-line
-- order: {flag, kind}, kind "path" (made absolute), "value" or "switch".
local FLEET_FLAGS = {
  apply = {{"product-key", "value"}, {"manifest", "path"}, {"state", "path"},
           {"report", "path"}, {"prune-tags", "switch"}, {"retire-unlisted", "switch"},
           {"undo", "path"}, {"wait", "value"}, {"force", "switch"},
           {"allow-empty-manifest", "switch"}},
  retire = {{"product-key", "value"}, {"names-file", "path"}, {"state", "path"},
            {"report", "path"}, {"undo", "path"}, {"wait", "value"}, {"force", "switch"}},
}

-- A number of seconds as `--wait` parses it again (digits and a point, no exponent).
local function seconds(v)
  if type(v) ~= "number" then return tostring(v) end
  return (("%.6f"):format(v):gsub("%.?0+$", ""))
end

--- The command that finishes a stopped `apply` or `retire` run with `--state` (its
-- journal): the same command, its options and the common flags (`common_flags`), every
-- path made absolute, so that a run again from another folder finds the same files.
-- @tparam table opts the checked options (`command` "apply" or "retire")
-- @treturn string the command line, quoted for a POSIX shell
function M.finish_command(opts)
  local absolute = require("aliyun.iot.journal").absolute
  -- bin/aliyun-iot as run from a checkout, found again from any folder
  local f = {shell_quote(M.PROG:find("/") and absolute(M.PROG) or M.PROG), opts.command}
  for _, spec in ipairs(FLEET_FLAGS[opts.command]) do
    local v = opts[(spec[1]:gsub("%-", "_"))]
    if v and spec[2] == "switch" then
      f[#f + 1] = "--" .. spec[1]
    elseif v then
      v = spec[2] == "path" and absolute(v) or spec[1] == "wait" and seconds(v) or v
      f[#f + 1] = "--" .. spec[1] .. " " .. shell_quote(tostring(v))
    end
  end
  local common = {}
  for k, v in pairs(opts) do common[k] = v end
  common.ca_file = common.ca_file and absolute(common.ca_file)
  for _, x in ipairs(M.common_flags(common)) do f[#f + 1] = x end
  if opts.out then f[#f + 1] = "--out " .. shell_quote(absolute(opts.out)) end
  return table.concat(f, " ")
end

--- How to finish a stopped `apply` or `retire`, the end of a line on stderr: with
-- `--state`, the command (`finish_command`) on a line of its own; without, that the same
-- command run again does it (reading the state again; a `--report` then needs a new path:
-- nothing records the one written).
-- @tparam table opts the checked options
-- @treturn string "; ...\n"
function M.finish_note(opts)
  if opts.state then return "; to finish it, run:\n  " .. M.finish_command(opts) .. "\n" end
  return ("; run the same command again%s to finish%s\n"):format(
    opts.report and " with a new --report path" or "",
    opts.command == "apply" and " (it plans again from the product's state)" or "")
end

-- Whether a resume would meet the same end: an uncertain BatchRegisterDevice (Ambiguous:
-- the ApplyId it lacks can never arrive).
local function settled_by_service(err)
  return err.code == "Ambiguous" or err.ambiguous == true
end

-- The two ways out of a journal that records an uncertain BatchRegisterDevice.
local function ways_out(streams, state, opts)
  local resume = M.resume_command(opts, state)
  streams.stderr:write("aliyun-iot: the journal ", state, " keeps the ApplyIds and the ",
    "devices known; two ways out:\n",
    "  if you find the apply's ApplyId (QueryDevice gives none: look in the console's ",
    "batch registrations, or try those next to the job's with ", M.PROG,
    " status --apply-id ID), take it in (it is checked first):\n    ", resume, " --adopt-apply-id ID\n",
    "  or finish the rest of the job without it (exit 3; its devices, if any, stay ",
    "unseen):\n    ", resume, " --accept-ambiguous\n")
end

-- What exists after a failure a plain resume cannot finish, and the two ways out.
local function report_settled(streams, state, opts)
  local w = streams.stderr
  w:write("aliyun-iot: a plain resume cannot settle the uncertain ",
    "BatchRegisterDevice: its ApplyId never arrived\n")
  if not state then
    w:write("aliyun-iot: look up the devices of the unknown apply with QueryDevice or in the console\n")
    return
  end
  ways_out(streams, state, opts)
end

-- The command that reads one apply's devices, with the flags that reach the same service.
local function devices_command(opts, product_key, id)
  local f = {shell_quote(M.PROG), "devices --product-key", shell_quote(tostring(product_key)),
             "--apply-id", printable(tostring(id))}
  for _, x in ipairs(M.common_flags(opts)) do f[#f + 1] = x end
  return table.concat(f, " ")
end

-- An apply's answer that contradicts what was asked may be a garbled answer that a resume
-- gets past, or the service's settled word that it gives again: both are said. (On resume
-- the ProductKey is the journal's.)
local function journal_product_key(opts, state)
  local pk = opts.product_key
  if not pk then
    local records = require("aliyun.iot.journal").read(state)
    pk = records and records[1].ProductKey or "PK"
  end
  return pk
end

local function report_contradiction(err, opts, streams, state)
  streams.stderr:write("aliyun-iot: if resume ends the same way, the service's answer for apply ",
    printable(tostring(err.apply_id)), " contradicts the journal: read the apply's devices with:\n  ",
    devices_command(opts, journal_product_key(opts, state), err.apply_id), "\n")
end

-- An --adopt-apply-id refused (exit 2, nothing journaled): while a submission is still
-- uncertain the two ways out, since a plain resume would only end Ambiguous again; once
-- none is (settled, or given up with --accept-ambiguous), a plain resume, and the
-- command that reads the devices of the apply the user found.
local function report_adopt_refused(err, opts, streams, state)
  local w = streams.stderr
  if (err.uncertain_left or 0) > 0 then
    w:write("aliyun-iot: nothing was taken in\n")
    ways_out(streams, state, opts)
    return M.failure_code(err)
  end
  w:write("aliyun-iot: the journal ", state, " records no uncertain submission (none, or ",
    "given up with --accept-ambiguous); resume it without --adopt-apply-id:\n  ",
    M.resume_command(opts, state), "\n",
    "aliyun-iot: to read the devices of an apply you found, run:\n")
  for _, id in ipairs(opts.adopt_apply_id or {}) do
    w:write("  ", devices_command(opts, journal_product_key(opts, state), id), "\n")
  end
  return M.failure_code(err)
end

-- A resume refused for another target than its journal's (exit 2, nothing sent): the
-- command that goes back to the journal's own target (the client's settings for a journal
-- that records none: its ProductKey was the mismatch).
local function report_mismatch(err, opts, streams, state)
  local own, t = {}, err.journal_target or {}
  for k, v in pairs(opts) do own[k] = v end
  own.endpoint, own.region, own.iot_instance_id = t.endpoint, t.RegionId, t.IotInstanceId
  streams.stderr:write("aliyun-iot: to finish the job where it lives, run:\n  ",
    M.resume_command(own, state), "\n")
  return M.EXIT_USAGE
end

-- Reports a register/resume failure: the error, the applies created and how to finish.
-- `state`: the journal to name with the resume command (nil when there is none to keep).
-- No resume command is printed when a resume would meet the same end (`settled_by_service`).
function M.report_failure(err, opts, streams, state)
  if err.code == "InvalidDeviceName" and err.invalid then
    -- the names once, a line each (the library's message lists them too)
    streams.stderr:write(("aliyun-iot: InvalidDeviceName: %d device %s invalid:\n")
      :format(#err.invalid, #err.invalid == 1 and "name is" or "names are"))
    for _, inv in ipairs(err.invalid) do
      streams.stderr:write(("  %s: %s\n"):format(printable(inv.DeviceName), printable(inv.ErrorMsg)))
    end
    -- names that exist already are refused too: --existing takes them (never judged
    -- here by the wording of their ErrorMsg)
    streams.stderr:write("aliyun-iot: nothing was registered; fix the names or pass ",
      "--skip-invalid; for names that exist already, --existing adopt writes them with ",
      "the new devices (--existing skip leaves them out)\n")
    return M.EXIT_USAGE
  end
  M.print_error(streams, err)
  if err.code == "TargetMismatch" and state then
    return report_mismatch(err, opts, streams, state)
  end
  if err.parameter == "adopt_apply_ids" and state then
    return report_adopt_refused(err, opts, streams, state)
  end
  local ids = {}
  for i, id in ipairs(err.apply_ids or {}) do ids[i] = tostring(id) end
  if #ids > 0 then
    streams.stderr:write("aliyun-iot: ApplyIds created: ", table.concat(ids, " "), "\n")
  end
  if settled_by_service(err) then
    report_settled(streams, state, opts)
  elseif state then
    streams.stderr:write("aliyun-iot: the journal ", state, " records the job; to finish it, run:\n  ",
      M.resume_command(opts, state), "\n")
    if err.code == "InvalidResponse" and err.apply_id ~= nil then
      report_contradiction(err, opts, streams, state)
    end
  elseif #ids > 0 then
    streams.stderr:write("aliyun-iot: read each apply's devices once it is done with:\n")
    for _, id in ipairs(ids) do
      streams.stderr:write("  ", devices_command(opts, opts.product_key, id), "\n")
    end
  end
  return M.failure_code(err)
end

-- Reports a job stopped by SIGINT or SIGTERM (`signal`; Lua's "interrupted!" error, or
-- core.catch_term's "terminated!"): what the journal holds and how to finish. A journal
-- this run created in TMPDIR that holds nothing sent is removed.
function M.report_interrupt(ctx, streams, signal)
  local code = M.EXIT_INTERRUPTED
  if signal == "SIGTERM" then
    streams.stderr:write("aliyun-iot: terminated (SIGTERM)\n")
    code = M.EXIT_TERMINATED
  else
    streams.stderr:write("aliyun-iot: interrupted\n")
  end
  local state = ctx.state
  if not state then
    local opts = ctx.opts
    if opts and FLEET_FLAGS[opts.command] and not opts.dry_run then
      streams.stderr:write("aliyun-iot: ", opts.command, " interrupted", M.finish_note(opts))
    end
    return code
  end
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
    return code
  end
  if #ids > 0 then
    streams.stderr:write("aliyun-iot: ApplyIds created: ", table.concat(ids, " "), "\n")
  end
  if records then
    streams.stderr:write("aliyun-iot: the journal ", state, " records the job; to finish it, run:\n  ",
      M.resume_command(ctx.opts, state), "\n")
  end
  return code
end

return M
