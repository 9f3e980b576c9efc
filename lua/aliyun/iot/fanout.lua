--- Sending one round of requests: one request alone, many at once over libcurl's multi
-- interface, over OpenResty light threads, or one after another through a custom
-- transport. Each request may carry `not_before` (a `client:clock()` value, its paced
-- start); nothing here decides anything about the answers.
-- @module aliyun.iot.fanout

local M = {}

local function wait_until(c, t)
  if t then c:pause(t - c:clock()) end
end

-- Sends one request once its slot has come, unless its deadline (`req.deadline`, a
-- `client:clock()` value) passed meanwhile: one after another, a request's real start is
-- known only when the ones before it have answered. Its timeouts are cut to what is left.
local function send_one(c, send, req)
  wait_until(c, req.not_before)
  req.not_before = nil
  local deadline = req.deadline
  req.deadline = nil
  if deadline then
    local left = deadline - c:clock()
    if left <= 0 then
      return nil, {code = "DeadlineExceeded", sent = false,
                   message = "the deadline passed before the request was sent"}
    end
    req.timeout = math.min(req.timeout, left)
    req.connect_timeout = math.min(req.connect_timeout, left)
  end
  return send(req)
end

-- Light threads: each waits for its slot and sends; at most `concurrency` at once.
local function send_threads(c, send, reqs, concurrency, responses, errs)
  local ngx = rawget(_G, "ngx")
  local threads = {}
  -- A light thread's error would otherwise be lost (and responses[i], errs[i] both nil).
  local function wait(t)
    local ok, err = ngx.thread.wait(t)
    if not ok then error(err, 0) end
  end
  for n, req in ipairs(reqs) do
    threads[#threads + 1] = ngx.thread.spawn(function()
      responses[n], errs[n] = send_one(c, send, req)
    end)
    if #threads >= concurrency then wait(table.remove(threads, 1)) end
  end
  for _, t in ipairs(threads) do wait(t) end
end

--- Sends a round of requests.
-- @tparam table c the client (`clock`, `pause`)
-- @tparam function send the transport function `(req) -> res | nil, err`
-- @tparam ?table session an object with `request_many(reqs, concurrency)` (libcurl)
-- @tparam boolean threads true inside OpenResty's yielding phases
-- @tparam {table,...} reqs
-- @tparam integer concurrency most requests in flight at once
-- @treturn table responses, @treturn table errors (exactly one set per index)
function M.send(c, send, session, threads, reqs, concurrency)
  local responses, errs = {}, {}
  if #reqs == 1 then
    responses[1], errs[1] = send_one(c, send, reqs[1])
  elseif threads then
    send_threads(c, send, reqs, concurrency, responses, errs)
  elseif session then
    -- perform_many waits for each not_before itself (same clock: core.now); with a
    -- deadline the engine sends at most `concurrency` requests in a round, so each starts
    -- at its not_before and the timeouts cut then to the deadline bound it
    for _, req in ipairs(reqs) do req.deadline = nil end
    responses, errs = session:request_many(reqs, concurrency)
  else
    for n, req in ipairs(reqs) do
      responses[n], errs[n] = send_one(c, send, req)
    end
  end
  return responses, errs
end

return M
