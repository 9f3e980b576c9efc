--- Sending one round of requests: one request alone, many at once over libcurl's multi
-- interface, over OpenResty light threads, or one after another through a custom
-- transport. Each request may carry `not_before` (a `client:clock()` value, its paced
-- start); nothing here decides anything about the answers.
-- @module aliyun.iot.fanout

local M = {}

local function wait_until(c, t)
  if t then c:pause(t - c:clock()) end
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
      wait_until(c, req.not_before)
      responses[n], errs[n] = send(req)
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
    local req = reqs[1]
    wait_until(c, req.not_before)
    req.not_before = nil
    responses[1], errs[1] = send(req)
  elseif threads then
    send_threads(c, send, reqs, concurrency, responses, errs)
  elseif session then
    -- perform_many waits for each not_before itself (same clock: core.now)
    responses, errs = session:request_many(reqs, concurrency)
  else
    for n, req in ipairs(reqs) do
      wait_until(c, req.not_before)
      responses[n], errs[n] = send(req)
    end
  end
  return responses, errs
end

return M
