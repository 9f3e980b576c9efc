--- Random names: BatchRegisterDevice (D-69473) in chunks of at most `max_batch_size`,
-- then each apply waited for and read. A submission is journaled right before it goes
-- out; one whose answer never arrived, or held no usable ApplyId, is never sent again
-- (the service may have acted) and ends the job in the ambiguous error.
-- @module aliyun.iot.batch.random

local answer = require "aliyun.iot.batch.answer"
local job_m = require "aliyun.iot.batch.job"

local M = {}

local UNCERTAIN = "BatchRegisterDevice (Count = %d) got no usable answer after the " ..
  "request was sent (%s): the service may have created an apply whose ApplyId never " ..
  "arrived. It was not sent again, so that no devices are created twice; look for " ..
  "devices beyond the listed ApplyIds with QueryDevice or in the console"

-- Sends one chunk of n devices. `submit` is journaled after the QPS wait, right before
-- the request goes out (a process killed while it waits for its slot leaves nothing
-- uncertain behind); an attempt whose answer says it did not act (throttled, 503, no
-- connection) is journaled `failed` before the client waits to send it again.
-- Returns the answer or nil, err, and whether a `submit` is journaled without its end.
local function submit(job, n)
  job.seq = job.seq + 1
  local pending = false
  local res, err = job.port:invoke("BatchRegisterDevice",
    {ProductKey = job.ProductKey, Count = n}, job:call_opts{
      on_send = function()
        local ok, jerr = job:record{event = "submit", seq = job.seq,
                                    action = "BatchRegisterDevice", Count = n}
        pending = ok == true and job.journal ~= nil
        return ok, jerr
      end,
      on_retry = function(e)
        if not (pending and e.retryable) then return true end
        pending = false
        return job:record{event = "failed", seq = job.seq, action = "BatchRegisterDevice"}
      end,
    })
  return res, err, pending
end

-- Submits one chunk and records its outcome. Returns true (an apply was added), or
-- false and the error that stops the submissions (nil once the chunk is uncertain).
local function step(job, n)
  local res, err, pending = submit(job, n)
  local id, key_or_why
  if res then id, key_or_why = job:new_apply_id(res) end
  if id then
    local a = job:add_apply{ApplyId = id, phase = "create", Count = n}
    local ok, jerr = job:record{event = "apply", seq = job.seq, ApplyId = a.key,
                                ProductKey = job.ProductKey, phase = "create", Count = n}
    if not ok then return false, jerr end
    return true
  end
  if not res and not err.ambiguous then
    if pending then job:record{event = "failed", seq = job.seq, action = "BatchRegisterDevice"} end
    return false, job:call_error(err)
  end
  err = err or answer.invalid_response("BatchRegisterDevice answered, but " .. key_or_why,
                                       {action = "BatchRegisterDevice"})
  job.uncertain = {message = UNCERTAIN:format(n, tostring(err))}
  job:record{event = "uncertain", seq = job.seq, action = "BatchRegisterDevice", Count = n,
             message = job.uncertain.message}
  return false
end

--- Runs (or continues) a random-named job to its result.
-- @treturn ?table result
-- @treturn ?table err
function M.run(job)
  local covered = 0
  for _, a in ipairs(job.applies) do covered = covered + (tonumber(a.Count) or 0) end
  -- a submission given up on (resume{accept_ambiguous}) is not sent again: its devices
  -- may exist
  for _, u in ipairs(job.accepted or {}) do covered = covered + (u.Count or 0) end
  local remaining, submitted, cause = job.Count - covered, covered, nil
  local size = job.port:option("max_batch_size")
  while remaining > 0 and not job.uncertain do
    if job:past_deadline() then
      cause = job_m.timeout_error()
      break
    end
    local n = math.min(remaining, size)
    local ok, err = step(job, n)
    if not ok then
      cause = err
      break
    end
    remaining, submitted = remaining - n, submitted + n
    local a = job.applies[#job.applies]
    job:emit{phase = "register", apply_id = a.ApplyId, done = submitted, total = job.total}
  end
  -- Whatever happened, finish the applies that exist, so the error carries their devices.
  local ferr = job:finish_all()
  return job:conclude(cause or ferr)
end


return M
