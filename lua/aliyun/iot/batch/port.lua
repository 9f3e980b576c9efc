--- The batch helpers' one door to the client: every request, clock reading and pause of
-- a job goes through the four functions here, so the helpers depend on this small
-- interface and on nothing else of the client.
--
-- The interface is the client's documented one (`client:invoke(action, params, opts)`,
-- `client:invoke_many(action, params_list, opts, concurrency)`, `client:clock()`,
-- `client:pause(seconds)`). Until the client has it, each function maps it onto today's
-- client (`_call_internal`, `call_many`, `_now`, `_sleep`), and the deadline is kept here;
-- a client that has the interface is used through it directly.
-- `opts`: `deadline` (an absolute `clock()` value: no attempt starts after it, each
-- attempt's timeouts are cut to the time left; passed, the call ends in
-- `DeadlineExceeded`), `on_send(call_opts) -> true | nil, err` (right before an attempt
-- goes out, after its QPS wait), `on_retry(err) -> true | nil, err` (an attempt that
-- certainly did not act is about to be repeated), `max_retries`.
-- @module aliyun.iot.batch.port

local errors = require "aliyun.iot.errors"

local M = {}

local Port = {}
Port.__index = Port

--- Wraps a client.
-- @tparam table client an `aliyun.iot` client
-- @treturn table port
function M.new(client)
  return setmetatable({client = client}, Port)
end

--- The error of a call that would start after its deadline.
-- @treturn table err `DeadlineExceeded`
function M.deadline_exceeded()
  return errors.new{code = "DeadlineExceeded", message = "the deadline passed"}
end

--- A client option the helpers read (`max_batch_size`, `max_retries`).
function Port:option(name)
  return self.client[name]
end

--- The client's monotonic clock [s].
function Port:clock()
  if self.client.clock then return self.client:clock() end
  return self.client:_now()
end

--- Sleeps [s] the way the client does (cosockets inside OpenResty).
function Port:pause(seconds)
  if self.client.pause then return self.client:pause(seconds) end
  return self.client:_sleep(seconds)
end

--- Sends one action with the client's retries.
-- @treturn ?table result
-- @treturn ?table err
function Port:invoke(action, params, opts)
  opts = opts or {}
  if self.client.invoke then return self.client:invoke(action, params, opts) end
  local client, deadline, on_send = self.client, opts.deadline, opts.on_send
  return client:_call_internal(action, params, {
    on_retry = opts.on_retry, max_retries = opts.max_retries,
    on_send = function(call)
      if deadline then
        local left = deadline - client:_now()
        if left <= 0 then return nil, M.deadline_exceeded() end
        call.timeout = math.min(client.timeout, left)
        call.connect_timeout = math.min(client.connect_timeout, left)
      end
      if on_send then return on_send(call) end
      return true
    end,
  })
end

--- Sends one action many times at once; `results[i]` or `errs[i]` is set for each i.
-- Today's fan-out (`call_many`) takes no deadline and repeats a failed item once on its
-- own: with a deadline, or when no repeat is allowed (`max_retries` 0 here or on the
-- client), the calls go one by one through `invoke`, which honours both.
-- @treturn table results
-- @treturn table errs
function Port:invoke_many(action, params_list, opts, concurrency)
  opts = opts or {}
  if self.client.invoke_many then
    return self.client:invoke_many(action, params_list, opts, concurrency)
  end
  local retries = opts.max_retries or self.client.max_retries
  if opts.deadline or opts.on_send or retries == 0 then
    local results, errs = {}, {}
    for i, params in ipairs(params_list) do
      results[i], errs[i] = self:invoke(action, params, opts)
    end
    return results, errs
  end
  return self.client:call_many(action, params_list, {max_retries = opts.max_retries},
                               concurrency)
end

return M
