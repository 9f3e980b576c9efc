--- The `aliyun-iot` command line: the usage text, parsing, per-command checks and the
-- `Key=Value` parameters of `call`; the usage and local errors every CLI module raises.
-- @module aliyun.iot.cli.args

local validate = require "aliyun.iot.validate"
local tuning = require "aliyun.iot.cli.tuning"

local M = {}

M.USAGE = [[
Usage: aliyun-iot [options] COMMAND [options]

Registers Alibaba Cloud IoT Platform devices in bulk and prints their secrets.

Commands:
  register --product-key PK --count N [--service-names]
        register N devices with random names, drawn by this client (checked,
        then registered: never ambiguous); --service-names lets the service
        draw them (BatchRegisterDevice: half the requests, but a lost answer
        can leave an apply nobody knows of)
  register --product-key PK --names-file FILE [--skip-invalid]
           [--existing fail|skip|adopt] [--report FILE] [--dry-run]
        register the devices named in FILE: one DeviceName[,Nickname] a line,
        blank lines and # comments skipped; FILE - reads stdin
  check --product-key PK --names-file FILE
        ask the service which names it would register (and which exist),
        registering nothing; prints JSON
  resume --state FILE [--adopt-apply-id ID ...] [--accept-ambiguous]
        finish a register job that stopped, from its state file, at the
        endpoint, region and instance it records (another one is refused);
        after an ambiguous --service-names job, --adopt-apply-id takes in the
        lost apply once you found it, --accept-ambiguous finishes without it
        (exit 3)
  status --product-key PK --apply-id ID
        print an apply's status (QueryBatchRegisterDeviceStatus) as JSON
  devices --product-key PK --apply-id ID
        print the devices of an apply
  mqtt-credentials --in FILE
        add the MQTT connection columns to the devices of FILE (CSV, JSON
        or NDJSON written by this command); no request is sent
  export --product-key PK
        print every device of a product with its DeviceSecret
  plan --product-key PK --manifest FILE [--prune-tags] [--retire-unlisted]
       [--detailed-exitcode]
        print what apply would change to make the product match FILE (CSV
        DeviceName,Nickname,tags,groups with a header, or JSON lines); sends
        no write; exit 0, or 2 on changes with --detailed-exitcode
  apply --product-key PK --manifest FILE [--state FILE] [--prune-tags]
        [--report FILE] [--retire-unlisted] [--undo FILE] [--wait S] [--force]
        [--allow-empty-manifest]
        make the product match FILE: print the plan, then create, rename, tag,
        join and leave groups as it says; --state keeps a journal: after a
        stop, the same command finishes the job without repeating a write;
        --retire-unlisted retires the devices FILE does not list, as retire
        does (undo export default STATE.undo.csv with --state STATE, else
        MANIFEST.undo.csv beside the manifest); a FILE listing no device is
        refused then, unless --allow-empty-manifest
  retire --product-key PK --names-file FILE [--state FILE] [--undo FILE]
         [--wait S] [--force] [--dry-run] [--report FILE]
        delete the devices of FILE: an undo export with their secrets first
        (default STATE.undo.csv with --state STATE, else NAMES-FILE.undo.csv
        beside the names file; never overwritten), then DisableThing, a wait
        until none is online (600 s; --force deletes the online ones), then
        DeleteDevice; run the same command again (same --state, --undo,
        --report) to finish
  call ACTION [Key=Value ...]
        call any IoT action and print the result as JSON; lists as
        Name.1=a Name.2=b, lists of records as Name.1.Field=x

Register options:
  --state FILE          keep the job's journal in FILE (a new file this run
                        creates; resume from it)
  --skip-invalid        leave invalid names out instead of failing (exit status 3)
  --apply-timeout S     seconds to wait for each apply (register and resume)
  --existing MODE       names that exist already: fail (default: they are
                        invalid), skip (left out, no error) or adopt (their
                        DeviceSecrets written with the new devices: a names file
                        run twice gives the same output, creating nothing again)
  --report FILE         one JSON line per requested name (outcome created,
                        existing, invalid, failed or unknown), written as the
                        job goes to a new file (mode 0600; never an existing one)
  --dry-run             check the names file locally and print the requests
                        that would be sent, sending nothing

Options (before or after the command):
  --endpoint URL        API endpoint (default https://iot.<region>.aliyuncs.com/)
  --region ID           region id (default: ALIBABA_CLOUD_REGION_ID, else the CLI
                        profile's region_id, else cn-shanghai)
  --profile NAME        CLI (~/.aliyun/config.json) or INI profile to take
                        credentials from (default ALIBABA_CLOUD_PROFILE)
  --iot-instance-id ID  IoT instance id (Enterprise Edition instances)
  --ca-file PATH        CA certificates to verify the endpoint with
  --timeout S           seconds per request (default 30)
  --deadline S          seconds for the whole job
  --format F            device output: csv (header ProductKey,DeviceName,
                        DeviceSecret,IotId; the default), json, ndjson (one
                        device a line) or esp-idf (mfg_gen.py's values file
                        --out FILE.csv and its config FILE.config.csv)
  --esp-namespace NS    the NVS namespace of --format esp-idf (aliyun-key)
  --no-secrets          leave DeviceSecret and MqttPassword out
  --mqtt                add MqttHost,MqttPort,MqttClientId,MqttUsername,
                        MqttPassword (the device's MQTT connection parameters)
  --signmethod M        hmacsha256 (default), hmacsha1 or hmacmd5
  --securemode N        2: TLS, port 8883 (default); 3: TCP, port 1883
  --instance-style S    host <IotInstanceId>.mqtt.iothub.aliyuncs.com (instance:
                        the default with --iot-instance-id) or
                        <ProductKey>.iot-as-mqtt.<region>.aliyuncs.com (old)
  --password-case C     lower (default) or upper hex MqttPassword
  --mqtt-timestamp MS   the signed timestamp (default: now, one for the run)
  --mqtt-port N         another port (443, as Link SDK 4 may use)
  --out FILE            write the output to FILE instead of stdout: a file is
                        replaced atomically with mode 0600 (through a symlink, the
                        file it leads to; give each job its own); a device, FIFO
                        or /dev/fd/N is written directly; a journal, the --state
                        or the names file is never replaced
  --quiet               no progress or notes on stderr
  --signature-algorithm HMAC-SHA1|ACS3-HMAC-SHA256
  --response-format json|xml   what the service is asked to answer in
  --max-batch-size N    devices per BatchRegisterDevice (default 1000, up to 10000)
  --qps Action=N[,Action=N]    requests per second per action (default: the
                        documented limits)
  --help, --version

Credentials, the official chain: ALIBABA_CLOUD_ACCESS_KEY_ID,
ALIBABA_CLOUD_ACCESS_KEY_SECRET (and ALIBABA_CLOUD_SECURITY_TOKEN); else OIDC
(ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN,
ALIBABA_CLOUD_OIDC_TOKEN_FILE); else ~/.aliyun/config.json; else
~/.alibabacloud/credentials; else the ECS instance's RAM role; else
ALIBABA_CLOUD_CREDENTIALS_URI. A configured source that fails exits 1.

Exit status: 0 done; 1 service or network failure; 2 usage or validation error;
3 partial success (--skip-invalid left names out; check found names the service
would not take; --accept-ambiguous finished without an uncertain apply); 130
stopped by Ctrl-C, 143 by SIGTERM (the journal and the command that finishes
the job are on stderr). plan --detailed-exitcode: 0 no changes, 2 changes, 1
any failure (usage included).
]]

-- Option name -> {value = takes a value?, field = key in the options table,
-- commands = where it applies (nil: everywhere), many = may be given again (a list)}.
local OPTIONS = {
  endpoint = {value = true}, region = {value = true}, ["iot-instance-id"] = {value = true},
  profile = {value = true},
  ["ca-file"] = {value = true}, timeout = {value = true}, deadline = {value = true},
  format = {value = true, commands = {register = true, resume = true, devices = true,
                                     ["mqtt-credentials"] = true, export = true}},
  out = {value = true}, quiet = {}, help = {}, version = {},
  ["product-key"] = {value = true, commands = {register = true, status = true, devices = true,
                                               check = true, export = true, plan = true,
                                               resume = true, apply = true, retire = true}},
  manifest = {value = true, commands = {plan = true, apply = true}},
  ["prune-tags"] = {commands = {plan = true, apply = true}},
  ["retire-unlisted"] = {commands = {plan = true, apply = true}},
  ["allow-empty-manifest"] = {commands = {apply = true}},
  ["detailed-exitcode"] = {commands = {plan = true}},
  count = {value = true, commands = {register = true}},
  ["names-file"] = {value = true, commands = {register = true, check = true, retire = true}},
  undo = {value = true, commands = {retire = true, apply = true}},
  wait = {value = true, commands = {retire = true, apply = true}},
  force = {commands = {retire = true, apply = true}},
  existing = {value = true, commands = {register = true}},
  report = {value = true, commands = {register = true, resume = true, apply = true, retire = true}},
  ["dry-run"] = {commands = {register = true, retire = true}},
  ["skip-invalid"] = {commands = {register = true}},
  ["service-names"] = {commands = {register = true}},
  ["adopt-apply-id"] = {value = true, many = true, commands = {resume = true}},
  ["accept-ambiguous"] = {commands = {resume = true}},
  state = {value = true, commands = {register = true, resume = true, apply = true, retire = true}},
  ["apply-timeout"] = {value = true, commands = {register = true, resume = true}},
  ["apply-id"] = {value = true, commands = {status = true, devices = true}},
}
-- the commands that write devices, and their options (cli/formats.lua, cli/connection.lua)
local WRITERS = {register = true, resume = true, devices = true, export = true,
                 ["mqtt-credentials"] = true}
for _, name in ipairs{"mqtt", "no-secrets"} do OPTIONS[name] = {commands = WRITERS} end
for _, name in ipairs{"signmethod", "securemode", "instance-style", "password-case",
                      "mqtt-timestamp", "mqtt-port", "esp-namespace"} do
  OPTIONS[name] = {value = true, commands = WRITERS}
end
OPTIONS["in"] = {value = true, commands = {["mqtt-credentials"] = true}}

for k, v in pairs(tuning.OPTIONS) do OPTIONS[k] = v end

local COMMANDS = {register = true, resume = true, status = true, devices = true, call = true,
                  ["mqtt-credentials"] = true, check = true, export = true, plan = true,
                  apply = true, retire = true}

-- A usage error: raised inside `main` and turned into exit status 2.
local Usage = {}
Usage.__index = Usage
Usage.__tostring = function(u) return u.message end

function M.usage_error(fmt, ...)
  error(setmetatable({message = fmt:format(...), hint = true}, Usage), 0)
end

-- A local problem (a file that cannot be read or written): exit status 2, no usage hint.
function M.local_error(fmt, ...)
  error(setmetatable({message = fmt:format(...)}, Usage), 0)
end

function M.shell_quote(s)
  if s:find("^[%w%-_./:=@,+]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local usage_error = M.usage_error
M.Usage = Usage

--- True when `e` is a usage or local error (exit status 2).
function M.is_usage(e) return getmetatable(e) == Usage end

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
      local key = name:gsub("%-", "_")
      if spec.many then
        opts[key] = opts[key] or {}
        table.insert(opts[key], value)
      elseif seen[name] then
        usage_error("option --%s given twice", name)
      else
        opts[key] = value
      end
      seen[name] = true
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

-- A positive integer given as digits, passed on as its digit string without leading
-- zeros: the library takes Count and ApplyId as digit strings and checks their range.
local function positive_integer(opts, name)
  local v = opts[(name:gsub("%-", "_"))]
  if not v:find("^%d+$") or v:find("^0+$") then
    usage_error("--%s must be a positive integer, got '%s'", name, v)
  end
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
  opts.client_tuning = tuning.client_options(opts, usage_error)
  positive_number(opts, "deadline")
  positive_number(opts, "apply-timeout")
  require("aliyun.iot.cli.formats").check(opts)
  for _, flag in ipairs{"out", "report"} do
    local v = opts[flag]
    if v == "" or (v and v:sub(-1) == "/") then
      usage_error("--%s needs a file name, got '%s'", flag, v)
    end
  end
  if opts.report == "-" then
    -- not stdout, which carries the devices, and not a file named "-" made by surprise
    usage_error("--report needs a file name ('-' is not stdout here: stdout carries the " ..
      "devices; /dev/stderr is a choice)")
  end
  if cmd == "register" then
    require_opts(opts, "product-key")
    if opts.count and opts.names_file then
      usage_error("--count and --names-file exclude each other: give one")
    elseif not opts.count and not opts.names_file then
      usage_error("'register' needs either --count or --names-file")
    end
    if opts.count then opts.count = positive_integer(opts, "count") end
    for _, flag in ipairs{"skip-invalid", "existing", "dry-run", "report"} do
      if opts[(flag:gsub("%-", "_"))] and not opts.names_file then
        usage_error("--%s applies to --names-file only", flag)
      end
    end
    if opts.existing and opts.existing ~= "fail" and opts.existing ~= "skip"
      and opts.existing ~= "adopt" then
      usage_error("--existing must be fail, skip or adopt, got '%s'", opts.existing)
    end
    if opts.service_names and not opts.count then
      usage_error("--service-names applies to --count only")
    end
  elseif cmd == "check" then
    require_opts(opts, "product-key", "names-file")
  elseif cmd == "resume" then
    require_opts(opts, "state")
    for i, v in ipairs(opts.adopt_apply_id or {}) do
      opts.adopt_apply_id[i] = positive_integer({adopt_apply_id = v}, "adopt-apply-id")
    end
  elseif cmd == "export" then
    require_opts(opts, "product-key")
  elseif cmd == "status" or cmd == "devices" then
    require_opts(opts, "product-key", "apply-id")
    opts.apply_id = positive_integer(opts, "apply-id")
  elseif cmd == "retire" or cmd == "apply" then
    require_opts(opts, "product-key", cmd == "retire" and "names-file" or "manifest")
    if cmd == "retire" and opts.state and opts.dry_run then
      usage_error("--dry-run keeps no journal: leave --state out")
    end
    if cmd == "apply" and not opts.retire_unlisted and (opts.undo or opts.wait or opts.force
        or opts.allow_empty_manifest) then
      usage_error("--undo, --wait, --force and --allow-empty-manifest go with --retire-unlisted")
    end
    if opts.wait ~= nil then
      local n = opts.wait:find("^%d*%.?%d+$") and tonumber(opts.wait)
      if not n then usage_error("--wait must be a number of seconds, got '%s'", opts.wait) end
      opts.wait = n
    end
  elseif cmd == "plan" then
    require_opts(opts, "product-key", "manifest")
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
    for k, v in pairs(t) do
      if type(v) == "table" then finish(v, name .. "." .. tostring(k)) end
    end
    local hole = is_list and select(2, validate.list_length(t))
    if hole then usage_error("list %s has no item %d", name, hole) end
  end
  for k, v in pairs(params) do
    if type(v) == "table" then finish(v, k) end
  end
  return params
end

return M
