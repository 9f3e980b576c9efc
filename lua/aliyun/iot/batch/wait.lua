--- Waiting for an apply (QueryBatchRegisterDeviceStatus, D-69483): polls until the phase
-- ends, the job's deadline passes or the apply's own bound (`apply_timeout`) is reached.
-- @module aliyun.iot.batch.wait

local errors = require "aliyun.iot.errors"
local answer = require "aliyun.iot.batch.answer"

local M = {}

local POLL_FIRST = 0.5        -- [s] first pause between status polls
local POLL_FACTOR = 1.5
local POLL_CAP = 5            -- [s] longest pause between status polls

--- The default bound of one wait for an apply [s]: an apply that never finishes is not
-- polled for ever.
M.APPLY_TIMEOUT = 3600

-- Statuses that end each phase. A check ends at anything past CHECK (an apply found
-- already registering, after a resume, has passed its check); a creation ends at
-- CREATE_SUCCESS / CREATE_FAILED, or at CHECK_FAILED, which never proceeds to creating.
M.END_STATES = {
  check = {CHECK_SUCCESS = true, CHECK_FAILED = true, CREATE = true,
           CREATE_SUCCESS = true, CREATE_FAILED = true},
  create = {CREATE_SUCCESS = true, CREATE_FAILED = true, CHECK_FAILED = true},
}

-- The ApplyTimeout error of a wait that ended at `stop`: the job's deadline, or the
-- apply's own bound (said so, with the option that changes it).
local function timed_out(w, status, cause)
  local key = answer.id_key(w.id) or tostring(w.id)
  local msg
  if w.by_apply then
    msg = ("apply %s is still %s after %g s (apply_timeout; a larger apply_timeout " ..
      "waits longer)"):format(key, tostring(status or "unread"), w.apply_timeout)
  elseif status then
    msg = ("apply %s is still %s at the deadline"):format(key, status)
  else
    msg = ("apply %s: the deadline passed before its status was read"):format(key)
  end
  if cause and cause.code ~= "ApplyTimeout" and cause.code ~= "DeadlineExceeded" then
    msg = msg .. " (" .. tostring(cause) .. ")"
  end
  return errors.new{code = "ApplyTimeout", apply_id = w.id, status = status, message = msg}
end

--- Polls until the phase ends. Pauses start at 0.5 s and grow to 5 s.
-- @tparam table port `aliyun.iot.batch.port`
-- @tparam table w `{ProductKey=, id=, phase = "check"|"create", t_end = job deadline
--   (absolute clock value) or nil, apply_timeout = [s], on_status = function(status),
--   max_retries = the status calls' (nil: the client's)}`
-- @treturn ?table the checked status `Data` at the phase's end
-- @treturn ?table err `ApplyTimeout` (`apply_id`, last `status`), `InvalidResponse`, or
--   the status call's error, each with `apply_id`
-- @treturn ?string the RequestId of the status call that saw the end state (for reports)
function M.poll(port, w)
  local pause, status = POLL_FIRST, nil
  local stop = port:clock() + w.apply_timeout
  if w.t_end and w.t_end < stop then stop = w.t_end else w.by_apply = true end
  while true do
    local res, err = port:invoke("QueryBatchRegisterDeviceStatus",
      {ProductKey = w.ProductKey, ApplyId = w.id}, {deadline = stop, max_retries = w.max_retries})
    if not res then
      if port:clock() >= stop then return nil, timed_out(w, status, err) end
      err.apply_id, err.status = w.id, status
      return nil, err
    end
    local data, why = answer.status(res)
    if not data then
      return nil, answer.invalid_response(("apply %s: %s"):format(answer.id_key(w.id), why),
        {apply_id = w.id, status = status, action = "QueryBatchRegisterDeviceStatus"})
    end
    status = data.Status
    if M.END_STATES[w.phase][status] then return data, nil, answer.request_id(res.RequestId) end
    if w.on_status then w.on_status(status) end
    local now = port:clock()
    if now >= stop then return nil, timed_out(w, status) end
    port:pause(math.min(pause, stop - now))
    pause = math.min(pause * POLL_FACTOR, POLL_CAP)
  end
end

return M
