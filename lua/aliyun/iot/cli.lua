--- The `aliyun-iot` command's entry (`main`); every request goes through the Lua API
-- (`aliyun.iot`, its client methods and batch helpers, `aliyun.iot.journal`). The pieces,
-- one concern a file: `cli.args` (usage text, parsing, checks, `Key=Value` parameters),
-- `cli.names` (names files), `cli.json`, `cli.output` (where output goes, CSV/JSON device
-- writers), `cli.progress`, `cli.report` (exit statuses, failure reports), `cli.state`
-- (the job's journal path), `cli.commands` (register, resume, devices, status, call),
-- `cli.export` (export), `cli.plan` (plan),
-- `cli.apply` (apply), `cli.retire` (retire).
--
--     local code = require("aliyun.iot.cli").main(arg)   -- bin/aliyun-iot
--     os.exit(code)
--
-- Exit codes: 0 success; 1 service or network failure (stderr lists the ApplyIds created
-- and the command that finishes the job); 2 usage error or local validation failure;
-- 3 partial success (`--skip-invalid` left names out); 130 SIGINT, 143 SIGTERM (as for 1,
-- from the journal). `plan --detailed-exitcode`: 2 means changes, so every failure is 1 there.
-- Secrets (AccessKeySecret, SecurityToken, DeviceSecret) go only to the chosen output
-- (stdout or `--out FILE`), never to stderr.
-- @module aliyun.iot.cli

local args = require "aliyun.iot.cli.args"
local commands = require "aliyun.iot.cli.commands"
local json = require "aliyun.iot.cli.json"
local names = require "aliyun.iot.cli.names"
local output = require "aliyun.iot.cli.output"
local progress = require "aliyun.iot.cli.progress"
local report = require "aliyun.iot.cli.report"

local M = {}

-- The pieces, under the names the command has always offered (specs and scripts use them).
M.EXIT_OK, M.EXIT_FAILURE, M.EXIT_USAGE = report.EXIT_OK, report.EXIT_FAILURE, report.EXIT_USAGE
M.EXIT_PARTIAL, M.EXIT_INTERRUPTED = report.EXIT_PARTIAL, report.EXIT_INTERRUPTED
M.EXIT_TERMINATED = report.EXIT_TERMINATED
M.USAGE = args.USAGE
M.parse, M.check, M.build_params = args.parse, args.check, args.build_params
M.parse_names, M.MAX_NAMES_BYTES = names.parse_names, names.MAX_NAMES_BYTES
M.json, M.csv_field = json.json, output.csv_field

-- "aliyun-iot 0.1.0 (IoT API 2018-01-20)", from the library's own fields.
local function version()
  local iot = require "aliyun.iot"
  return ("aliyun-iot %s (IoT API %s)"):format(tostring(iot._VERSION), tostring(iot.API_VERSION))
end

-- SIGINT and SIGTERM arrive as errors (`errors.signal`): the signal's name, or nil.
local is_interrupt = require("aliyun.iot.errors").signal

--- Runs the command.
-- @tparam {string,...} argv the arguments (as `arg` holds them, without the program name)
-- @tparam[opt] table streams `{stdin=, stdout=, stderr=, stderr_is_tty=}` (default the
--   process's own; `stderr_is_tty` overrides the terminal check)
-- @tparam[opt] string prog the program name printed in follow-up commands (default
--   `aliyun-iot`; bin/aliyun-iot passes the path it was run by from a checkout)
-- @treturn integer exit status (0, 1, 2 or 3; 130 when SIGINT stopped it, 143 when
--   SIGTERM did: the journal and the resume command are then on stderr)
-- The name follow-up commands use: `prog` as the user typed it (bin/aliyun-iot from a
-- checkout), `aliyun-iot` when none is given.
local function set_prog(prog)
  if type(prog) == "string" and prog ~= "" then report.PROG = prog end
end

function M.main(argv, streams, prog)
  set_prog(prog)
  -- The process holds the AccessKeySecret and DeviceSecrets: no core file may keep them.
  -- Past a file-size limit a write fails (and is reported, the journal kept) rather than
  -- SIGXFSZ ending the job with nothing said.
  local core = require "aliyun.iot.core"
  core.disable_core_dumps()
  core.ignore_file_size_signal()
  -- `docker stop` and systemd send SIGTERM: it stops the job as Ctrl-C does (exit 143)
  core.catch_term()
  streams = streams or {}
  streams.stdin = streams.stdin or io.stdin
  streams.stdout = streams.stdout or io.stdout
  streams.stderr = streams.stderr or io.stderr
  local words = {}
  for i = 1, #argv do words[i] = argv[i] end
  -- what an interrupt must clean up or report: the output, the job's journal
  local ctx = {}
  local ok, code = xpcall(function()
    local opts = M.parse(words)
    if opts.help then
      streams.stdout:write(M.USAGE)
      return M.EXIT_OK
    end
    if opts.version then
      streams.stdout:write(version(), "\n")
      return M.EXIT_OK
    end
    M.check(opts)
    ctx.opts = opts
    local now = require("aliyun.iot.core").now
    local ui = progress.new(streams, opts.quiet, now)
    ctx.ui = ui
    if opts.command == "register" and opts.dry_run then
      return require("aliyun.iot.cli.dryrun").run(opts, streams, ctx)
    elseif opts.command == "check" then
      return require("aliyun.iot.cli.check").run(opts, streams, ui, ctx)
    elseif opts.command == "register" or opts.command == "resume" then
      return commands.run_job(opts, streams, ui, now, ctx)
    elseif opts.command == "devices" then
      return commands.run_devices(opts, streams, ui, ctx)
    elseif opts.command == "mqtt-credentials" then
      return require("aliyun.iot.cli.mqtt").run(opts, streams, ctx)
    elseif opts.command == "export" then
      return require("aliyun.iot.cli.export").run(opts, streams, ui, now, ctx)
    elseif opts.command == "plan" then
      return require("aliyun.iot.cli.plan").run(opts, streams, ui, ctx)
    elseif opts.command == "apply" then
      return require("aliyun.iot.cli.apply").run(opts, streams, ui, ctx)
    elseif opts.command == "retire" then
      return require("aliyun.iot.cli.retire").run(opts, streams, ui, ctx)
    end
    return commands.run_call(opts, streams, ui, ctx)
  end, function(e)
    if args.is_usage(e) or is_interrupt(e) then return e end
    return debug.traceback(tostring(e), 2)
  end)
  if ok then return code end
  -- an error raised once the output was opened (a --report that exists, say) leaves no
  -- temporary file and no esp-idf config file behind: this run made them
  if ctx.out and not is_interrupt(code) then ctx.out:abort() end
  if args.is_usage(code) then
    -- the message may echo the user's own words: control characters escaped
    streams.stderr:write("aliyun-iot: ", require("aliyun.iot.errors").printable(code.message), "\n",
      code.hint and ("Try '" .. args.shell_quote(report.PROG) .. " --help'.\n") or "")
    return require("aliyun.iot.cli.plan").usage_status(words)
  end
  local signal = is_interrupt(code)
  if signal then
    if ctx.out then ctx.out:abort() end
    if ctx.report then ctx.report.abort() end -- the lines decided so far are kept
    if ctx.ui then ctx.ui.done() end
    return report.report_interrupt(ctx, streams, signal)
  end
  -- a bug must not leave the output's temporary (it may hold DeviceSecrets) behind
  if ctx.out then pcall(ctx.out.abort, ctx.out) end
  streams.stderr:write("aliyun-iot: internal error: ", tostring(code), "\n")
  return M.EXIT_FAILURE
end

return M
