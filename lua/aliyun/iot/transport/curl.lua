--- The default transport: libcurl through the C core's session (keep-alive, TLS
-- verification, multi-interface fan-out).
-- A transport is a function `(req) -> res | nil, err` (see `aliyun.iot.new`); this module
-- is also an object factory, so each client owns a session whose connections it reuses.
-- @module aliyun.iot.transport.curl

local core = require "aliyun.iot.core"

local M = {}

local Transport = {}
Transport.__index = Transport

--- Makes a transport object owning one libcurl session.
-- @tparam[opt] table opts `{user_agent=}`
-- @treturn table object with `request`, `request_many`, `close`
function M.new(opts)
  return setmetatable({session = core.session(opts)}, Transport)
end

--- Sends one request.
-- @tparam table req `{method=, url=, headers=, body=, timeout= [s], connect_timeout= [s],
--   max_response_size= [bytes], ca_file=, proxy=, fresh_connect=}`
-- @treturn ?table `{status=, headers= (lower-case names), body=}`
-- @treturn ?table err `{code=, message=, sent=}` (ConnectFailed, Timeout,
--   ConnectionReset, TLSError, ResponseTooLarge, TransportError)
function Transport:request(req)
  return self.session:perform(req)
end

--- Sends many requests at once over libcurl's multi interface.
-- @tparam {table,...} reqs requests as for `request`, each may carry `not_before`
--   (a `core.now()` time before which it is not started)
-- @tparam integer concurrency most requests in flight at once
-- @treturn table responses, @treturn table errors (exactly one set per index)
function Transport:request_many(reqs, concurrency)
  return self.session:perform_many(reqs, concurrency)
end

--- Closes the session's connections (idempotent).
function Transport:close()
  self.session:close()
end

local shared

--- The transport as a plain function, for `iot.new{transport = iot.transports.curl}` and
-- for wrapping: one process-wide session.
-- @tparam table req as for `Transport:request`
function M.request(req)
  shared = shared or M.new()
  return shared:request(req)
end

return M
