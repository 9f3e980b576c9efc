--- The attempt engine: every request the client makes goes through `run`, alone (`call`,
-- `invoke`) or many at once (`call_many`, `invoke_many`). It runs in rounds: the next
-- attempt of each pending request whose backoff has ended is built (fresh nonce, timestamp
-- and credentials), paced and sent together with the others (with a deadline, at most
-- `concurrency` per round, so that none waits in a queue past its cut timeouts); each
-- answer is decoded and classified (`response`), decided (`retry`: repeat, backoff,
-- clock-skew correction, named RegisterDevice resolution) and counted (`stats`) by the
-- same code whatever the number of requests.
-- @module aliyun.iot.engine

local errors = require "aliyun.iot.errors"
local request = require "aliyun.iot.request"
local response = require "aliyun.iot.response"
local retry = require "aliyun.iot.retry"
local fanout = require "aliyun.iot.fanout"

local M = {}

local function deadline_error(item)
  local last = item.last_err
  return errors.new{
    code = "DeadlineExceeded", action = item.action,
    message = "the deadline passed" .. (last and ("; last error: " .. tostring(last)) or
      " before the request was sent"),
    -- a request never sent certainly did not act; otherwise the last attempt says
    retryable = last == nil or last.retryable, ambiguous = last ~= nil and last.ambiguous or nil,
    cause = last, request_id = last and last.request_id,
  }
end

-- Fills an attempt's per-request fields: timeouts cut to what the deadline leaves.
local function attempt_of(c, item, opts, creds, now, body_object)
  local a = {row = item.row, action = item.action, flat = item.flat, rpc = item.rpc,
             params = item.params, creds = creds, body_object = body_object,
             method = (opts.method or item.row.method):upper(),
             format = (opts.format or c.format):upper(),
             timeout = opts.timeout or c.timeout,
             connect_timeout = opts.connect_timeout or c.connect_timeout}
  if opts.deadline then
    local left = opts.deadline - now
    a.timeout = math.min(a.timeout, left)
    a.connect_timeout = math.min(a.connect_timeout, left)
  end
  return a
end

-- Builds the round's requests: the pending items still inside the deadline, paced by the
-- AccessKeyId in use. Items that cannot be sent get their final error in errs.
local function build_round(c, st, pending, body_object)
  local creds, cerr = c:_credentials()
  local items, errs, opts = st.items, st.errs, st.opts
  local deadline = opts.deadline
  local live = {}
  for _, i in ipairs(pending) do
    if not creds then
      errs[i] = cerr
    elseif deadline and c:clock() >= deadline then
      errs[i] = deadline_error(items[i])
    else
      live[#live + 1] = i
    end
  end
  local nlive = #live
  if nlive == 0 then return live, {} end
  -- pacing slots past the deadline are not taken (the pacer's clock may be another one)
  local base, now = c.pacer.now(), c:clock()
  local before = deadline and base + (deadline - now)
  local slots = c.pacer:schedule(st.action, nlive, creds.access_key_id, before)
  local built, reqs = {}, {}
  for n = 1, nlive do
    local i = live[n]
    local item = items[i]
    local not_before = slots[n] and now + (slots[n] - base)
    local ok, oerr, start = true, nil, nil
    -- the attempt starts at its pacing slot: no start past the deadline
    if not not_before or (deadline and not_before >= deadline) then
      ok, oerr = nil, deadline_error(item)
    elseif nlive == 1 then
      -- one read of the clock serves as the start when nothing waits or runs before it
      -- (each read is a time update and a phase check inside OpenResty)
      start = c:clock()
      if not_before > start then
        c:pause(not_before - start)
        start = nil
      end
      not_before = nil
    end
    if ok and opts.on_send then ok, oerr = opts.on_send(opts); start = nil end
    start = not_before or start or c:clock()
    if ok and deadline and start >= deadline then
      ok, oerr = nil, deadline_error(item)
    end
    if not ok then
      errs[i] = oerr or errors.new{code = "Aborted", action = item.action,
                                   message = "on_send refused the attempt", retryable = true}
    else
      local req, sts = request.build(c, attempt_of(c, item, opts, creds, start, body_object))
      req.not_before, req.deadline = not_before, deadline
      built[#built + 1], reqs[#reqs + 1] = {i = i, sts = sts}, req
    end
  end
  return built, reqs
end

local function count(c, req, res, e)
  local k = c.counters
  k.requests = k.requests + 1
  k.bytes_sent = k.bytes_sent + #req.url + #(req.body or "")
  if res then k.bytes_received = k.bytes_received + #(res.body or "") end
  if e and (e.throttled or e.code:find("^Throttling")) then k.throttled = k.throttled + 1 end
end

-- A named RegisterDevice repeated after its answer was lost: if the first copy created the
-- device, the repeat answers AlreadyExistedDeviceName, and the device is read back.
local function resolved(c, item, e, opts)
  if e.code ~= "iot.device.AlreadyExistedDeviceName" then
    e.action = item.action
    return nil, e
  end
  local detail, e2 = c:invoke("QueryDeviceDetail",
    {ProductKey = item.params.ProductKey, DeviceName = item.params.DeviceName},
    {format = opts.format, deadline = opts.deadline})
  if not detail then return nil, e2 end
  return {RequestId = detail.RequestId, Success = true, Data = detail.Data}
end

-- Decides one answer: final (results/errs set) or the pause before the item's next try.
local function settle(c, st, i, result, e)
  local item = st.items[i]
  if result then st.results[i] = result; return nil end
  if item.resolving then
    st.results[i], st.errs[i] = resolved(c, item, e, st.opts)
    return nil
  end
  item.last_err = e
  local verdict, delay, cut = retry.decide(c, item, e)
  if not verdict then
    e.action = item.action
    -- a timeout cut to the deadline that ran out at it is the deadline's doing
    cut = cut or (e.code == "Timeout" and st.opts.deadline ~= nil
                  and c:clock() >= st.opts.deadline)
    st.errs[i] = cut and deadline_error(item) or e
    return nil
  end
  c.log("warn", ("%s: %s; retrying in %.2f s (attempt %d of %d)")
    :format(item.action, tostring(e), delay, item.attempt + 2, item.max_retries + 1))
  if st.opts.on_retry and e.retryable then
    -- this attempt certainly did not act: the caller may record that first
    local ok, oerr = st.opts.on_retry(e)
    if ok == nil and oerr then st.errs[i] = oerr; return nil end
  end
  c.counters.retries = c.counters.retries + 1
  item.attempt = item.attempt + 1
  item.resolving = verdict == "resolve"
  return delay
end

-- The items of the next round, in order: those whose backoff has ended; with a deadline
-- at most `concurrency` of them, so that each request starts when its pacing slot comes
-- and its timeouts, cut to the deadline when it was built, hold from its real start (one
-- queued behind others in libcurl's multi would start later, and could start past the
-- deadline). The others wait for a later round, which costs them no attempt. Once the
-- deadline passed every item is taken (build_round ends them). Returns the round, the
-- rest and the earliest time one of the rest is ready.
local function next_round(c, st, pending, concurrency)
  local now, deadline = c:clock(), st.opts.deadline
  if pending[2] == nil then
    -- one request (every `call`): it fits any round, and waits only for its own backoff
    local at = st.items[pending[1]].ready_at
    if at == nil or at <= now or (deadline ~= nil and now >= deadline) then return pending, {} end
    return {}, pending, at
  end
  local cap = deadline and concurrency or math.huge
  if deadline and now >= deadline then cap = math.huge end
  local round, rest, soonest = {}, {}, nil
  for _, i in ipairs(pending) do
    local at = st.items[i].ready_at
    local ready = at == nil or at <= now or (deadline ~= nil and now >= deadline)
    if ready and #round < cap then
      round[#round + 1] = i
    else
      rest[#rest + 1] = i
      if not ready and (soonest == nil or at < soonest) then soonest = at end
    end
  end
  return round, rest, soonest
end

-- Sends one round and settles its answers; items to try again are appended to `rest`
-- with the time their backoff ends.
local function run_round(c, st, round, rest, send, session, concurrency)
  -- the C core's libcurl session sends an RPC body from its object, not a Lua string
  local built, reqs = build_round(c, st, round, session ~= nil)
  if #reqs == 0 then return end
  -- (the phase matters only to a fan-out: one request is sent alike in every phase)
  local responses, terrs = fanout.send(c, send, session, #reqs > 1 and c:_in_cosocket_phase(),
                                       reqs, concurrency)
  for n, b in ipairs(built) do
    local item = st.items[b.i]
    local result, e = response.classify(item.row, responses[n], terrs[n], b.sts, c.redact)
    count(c, reqs[n], responses[n], e)
    local delay = settle(c, st, b.i, result, e)
    if delay then
      item.ready_at = c:clock() + delay
      rest[#rest + 1] = b.i
    end
  end
end

--- Runs requests of one action to their end.
-- @tparam table c the client
-- @tparam string action
-- @tparam {table,...} items `{row=, flat=, rpc=, params=}` per request (`request.prepare`'s
--   results and the call's params); the `rpc` objects are closed once all are done
-- @tparam table opts checked `options.INVOKE` options
-- @tparam integer concurrency most requests in flight at once (with `opts.deadline`, also
--   the most sent in one round)
-- @treturn table results, @treturn table errs (one of them set per index)
function M.run(c, action, items, opts, concurrency)
  local st = {action = action, items = items, opts = opts, results = {}, errs = {}}
  local send, session = c:_transport()
  local pending = {}
  -- every item's retry deadline counts from the same start
  local retry_deadline = send and items[1] and c:clock() + c.retry_deadline
  for i, item in ipairs(items) do
    if not send then
      st.errs[i] = session
    else
      item.action, item.attempt, item.ready_at = action, 0, nil
      item.max_retries = opts.max_retries or c.max_retries
      item.retry_deadline = retry_deadline
      item.deadline = opts.deadline
      pending[#pending + 1] = i
    end
  end
  while #pending > 0 do
    local round, rest, soonest = next_round(c, st, pending, concurrency)
    if #round == 0 then
      -- every item is backing off: wait for the first (never past the deadline)
      local t = soonest
      if opts.deadline and opts.deadline < t then t = opts.deadline end
      c:pause(t - c:clock())
    else
      run_round(c, st, round, rest, send, session, concurrency)
    end
    pending = rest
  end
  -- the request objects hold their parameters in C memory the collector does not see
  for _, item in ipairs(items) do
    if item.rpc then item.rpc:close() end
  end
  return st.results, st.errs
end

return M
