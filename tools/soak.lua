-- make soak: 200 batch jobs (random and named, sizes up to 120 and 60) against the
-- emulator with faults on ~10% of each job's actions (spec/support/faults.lua), then the
-- report: jobs complete, jobs that ended in an error with a full account, jobs that ended
-- in the ambiguous error (a BatchRegisterDevice answer lost after the service acted; each
-- must say so), devices lost (must be 0) and duplicates (must be 0). One TAP line per job.
-- Usage: lua5.4 tools/soak.lua [jobs] [seed] [probability]   (from the checkout's root)
package.path = "lua/?.lua;lua/?/init.lua;./?.lua;" .. package.path
package.cpath = "build/lua5.4/?.so;" .. package.cpath
local iot = require "aliyun.iot"
local emulator = require "aliyun.iot.emulator"
local faults = require "spec.support.faults"

local JOBS = tonumber(arg[1] or os.getenv("SOAK_JOBS") or "") or 200
local SEED = tonumber(arg[2] or os.getenv("SOAK_SEED") or "") or os.time()
local P = tonumber(arg[3] or os.getenv("SOAK_P") or "") or 0.1

local emu = emulator.start{async_delay = 0.02}
local client = assert(iot.new{access_key_id = "testid", access_key_secret = "testsecret",
  endpoint = emu.endpoint, qps = false, max_batch_size = 50, timeout = 0.5, max_retries = 3,
  retry_deadline = 20})
math.randomseed(SEED)
print(("# soak: %d jobs, seed %d, fault probability %.2f per action"):format(JOBS, SEED, P))

local n = {complete = 0, error = 0, ambiguous = 0, lost = 0, duplicates = 0, faults = 0,
           failed = 0, unknown_applies = 0}
local kinds = {}
local t0 = os.time()
for job = 1, JOBS do
  local ok, out = pcall(faults.run_job, emu, client, math.random, P)
  if not ok then
    n.failed = n.failed + 1
    print(("not ok %d - job raised: %s"):format(job, tostring(out)))
  else
    n[out.status] = n[out.status] + 1
    n.lost, n.duplicates = n.lost + out.lost, n.duplicates + out.duplicates
    n.faults = n.faults + #out.faults
    if out.unknown_apply then n.unknown_applies = n.unknown_applies + 1 end
    local fs = {}
    for _, f in ipairs(out.faults) do
      fs[#fs + 1] = f.kind .. "@" .. f.action
      kinds[f.kind] = (kinds[f.kind] or 0) + 1
    end
    local line = ("%d - %s job %s; faults: %s"):format(job, out.kind, out.status,
      #fs > 0 and table.concat(fs, ", ") or "none")
    if #out.problems == 0 and out.lost == 0 and out.duplicates == 0 then
      print("ok " .. line)
    else
      n.failed = n.failed + 1
      print("not ok " .. line)
      for _, p in ipairs(out.problems) do print("#   " .. p) end
    end
  end
end
emu:stop()

local kl = {}
for k, v in pairs(kinds) do kl[#kl + 1] = k .. " " .. v end
table.sort(kl)
print(("# report: %d jobs in %d s (seed %d): %d complete, %d ended in an error with every " ..
  "ApplyId and fetched device listed, %d ended in the ambiguous error (%d of them with an " ..
  "apply whose ApplyId never arrived, each saying so)"):format(JOBS, os.time() - t0, SEED,
  n.complete, n.error, n.ambiguous, n.unknown_applies))
print(("# report: devices lost %d (must be 0), duplicates %d (must be 0), jobs failing the " ..
  "audit %d; %d faults injected: %s"):format(n.lost, n.duplicates, n.failed, n.faults,
  table.concat(kl, ", ")))
