--- The batch helpers' one door to the client: every request, clock reading and pause of
-- a job goes through the functions here, so the helpers depend on this small
-- interface and on nothing else of the client.
--
-- The interface is the client's documented one (`client:invoke(action, params, opts)`,
-- `client:invoke_many(action, params_list, opts, concurrency)`, `client:clock()`,
-- `client:pause(seconds)`, `client:target()`).
-- `opts`: `deadline` (an absolute `clock()` value: no attempt starts after it, each
-- attempt's timeouts are cut to the time left; passed, the call ends in
-- `DeadlineExceeded`), `on_send(call_opts) -> true | nil, err` (right before an attempt
-- goes out, after its QPS wait), `on_retry(err) -> true | nil, err` (an attempt that
-- certainly did not act is about to be repeated), `max_retries`.
-- @module aliyun.iot.batch.port

local M = {}

local Port = {}
Port.__index = Port

--- Wraps a client.
-- @tparam table client an `aliyun.iot` client
-- @treturn table port
function M.new(client)
  return setmetatable({client = client}, Port)
end

--- A client option the helpers read (`max_batch_size`, `max_retries`).
function Port:option(name)
  return self.client[name]
end

--- Where the client sends its calls (`client:target(with_key)`): the journal's record of
-- it; `with_key` also names the AccessKeyId (fetching the credentials).
-- @treturn table `{endpoint=, RegionId=, IotInstanceId=, ApiVersion=, AccessKeyId=}`
function Port:target(with_key)
  return self.client:target(with_key)
end

--- The client's monotonic clock [s].
function Port:clock()
  return self.client:clock()
end

--- Sleeps [s] the way the client does (cosockets inside OpenResty).
function Port:pause(seconds)
  return self.client:pause(seconds)
end

--- Sends one action through the client's attempt engine, with its retries.
-- @treturn ?table result
-- @treturn ?table err
function Port:invoke(action, params, opts)
  return self.client:invoke(action, params, opts or {})
end

--- Sends one action many times at once (the same engine, fanned out); `results[i]` or
-- `errs[i]` is set for each i.
-- @treturn table results
-- @treturn table errs
function Port:invoke_many(action, params_list, opts, concurrency)
  return self.client:invoke_many(action, params_list, opts or {}, concurrency)
end

return M
