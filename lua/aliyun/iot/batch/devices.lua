--- `client:apply_devices`' iterator: an apply's devices, one checked page at a time, so
-- memory stays flat but for the names already yielded (each device is yielded once).
-- @module aliyun.iot.batch.devices

local answer = require "aliyun.iot.batch.answer"
local pages = require "aliyun.iot.batch.pages"

local M = {}

M.SIZE = pages.SIZE

-- The next new device of the iteration `it`, reading the next page when the current one
-- is used up; nil at the end; false, err on a failure.
local function next_device(port, it)
  while true do
    it.i = it.i + 1
    local d = it.buf[it.i]
    if d then
      if not it.seen[d.DeviceName] then
        it.seen[d.DeviceName], it.n = true, it.n + 1
        return {ProductKey = it.ProductKey, DeviceName = d.DeviceName,
                DeviceSecret = d.DeviceSecret, IotId = d.IotId}
      end
    elseif it.total and it.page >= pages.count(it.total, it.size) then
      if it.n ~= it.total then
        return false, answer.invalid_response(("apply %s reported %d devices but its pages " ..
          "held %d different ones"):format(answer.id_key(it.id), it.total, it.n),
          {apply_id = it.id})
      end
      return nil
    else
      it.page = it.page + 1
      local page, err = pages.fetch(port, it.id, it.page, it.size, it.total, {deadline = it.t_end})
      if not page then
        if err.code == "DeadlineExceeded" then
          err.code, err.message = "ApplyTimeout", "the deadline passed before every page was read"
        end
        return false, err
      end
      it.total, it.buf, it.i = page.Total, page.devices, 0
    end
  end
end

--- An iterator over `step`'s results that ends for good at the first nil or failure: a
-- `for` loop that goes on after a failure must not send more requests.
-- @tparam function step `() -> record | nil | false, err`
-- @tparam[opt] table failure an argument error to yield first (as `false, failure`)
-- @treturn function yielding records, or `false, err` once, then nil
function M.iterator(step, failure)
  local finished = false
  return function()
    if finished then return nil end
    if failure then
      finished = true
      return false, failure
    end
    local dev, err = step()
    if not dev then finished = true end
    return dev, err
  end
end

--- The iterator.
-- @tparam table port `aliyun.iot.batch.port`
-- @tparam table it `{ProductKey=, id=, size=, t_end=, failure = err or nil}`
-- @treturn function yielding records, or `false, err` once, then nil
function M.iterate(port, it)
  it.page, it.buf, it.i, it.seen, it.n = 0, {}, 0, {}, 0
  return M.iterator(function() return next_device(port, it) end, it.failure)
end

return M
