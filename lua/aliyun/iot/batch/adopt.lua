--- The ways out of an ambiguous random-name job (a BatchRegisterDevice whose answer was
-- lost after it was sent): `resume{adopt_apply_ids = {...}}` takes in an apply the user
-- found, once the service confirms it can be the lost one; `resume{accept_ambiguous =
-- true}` gives up on the rest, so that the job finishes without them and says what may
-- exist unseen. Both are journaled, so a later resume goes on from there.
-- @module aliyun.iot.batch.adopt

local errors = require "aliyun.iot.errors"
local validate = require "aliyun.iot.validate"
local answer = require "aliyun.iot.batch.answer"
local pages = require "aliyun.iot.batch.pages"

local M = {}

-- The names BatchRegisterDevice gives are letters and digits (wire.md §4 BatchRegisterDevice:
-- the length is not documented, so only the characters are held to it). A page with any
-- other name is not a random-name apply.
local RANDOM_NAME = "^%w+$"

local function refused(id, fmt, ...)
  return errors.new{code = "InvalidParameter", parameter = "adopt_apply_ids",
    message = ("cannot adopt apply %s: " .. fmt):format(tostring(id), ...)}
end

-- The first unsettled submission of `count` devices (an apply that ended CREATE_FAILED
-- holds fewer than it asked: any submission at least as large).
local function match(job, total, status)
  for i, u in ipairs(job.unsettled) do
    if u.Count == total or (status == "CREATE_FAILED" and u.Count > total) then
      return i, u
    end
  end
end

-- What the service says of apply `id`: its creation's end status and its first page,
-- refused unless it is a random-name apply of the job's product.
local function inspect(job, id)
  local res, err = job.port:invoke("QueryBatchRegisterDeviceStatus",
    {ProductKey = job.ProductKey, ApplyId = id}, job:call_opts())
  if not res then
    return nil, refused(id, "the service does not confirm it as an apply of product %s (%s)",
      job.ProductKey, tostring(err))
  end
  local data, why = answer.status(res)
  if not data then return nil, refused(id, "%s", why) end
  if data.Status:find("^CHECK") then
    return nil, refused(id, "it is %s, a name-check apply (BatchCheckDeviceNames), not " ..
      "one of BatchRegisterDevice", data.Status)
  end
  data, err = job:wait({ApplyId = id, key = answer.id_key(id)}, "create")
  if not data then return nil, err end
  local first
  first, err = pages.fetch(job.port, id, 1, pages.SIZE, nil, job:call_opts())
  if not first then return nil, err end
  for _, d in ipairs(first.devices) do
    if not d.DeviceName:find(RANDOM_NAME) then
      return nil, refused(id, "its device %s does not bear a random name: it is not a " ..
        "BatchRegisterDevice apply", errors.printable(d.DeviceName))
    end
  end
  return data.Status, first.Total
end

-- Takes in one apply: checked, matched with an unsettled submission, journaled.
local function adopt_one(job, v)
  -- an integer or a digit string (the documented forms), checked before it is read
  if validate.apply_id_problem(v) then return refused(v, "not an ApplyId") end
  local id = answer.id_value(validate.integer_string(v))
  local key = answer.id_key(id)
  if job.by_id[key] then return refused(key, "the journal records it already") end
  local status, total = inspect(job, id)
  if not status then return total end
  local i, u = match(job, total, status)
  if not i then
    return refused(key, "it ended %s with %d devices, which matches no uncertain " ..
      "submission of the job", status, total)
  end
  local ok, jerr = job:record{event = "apply", seq = u.seq, ApplyId = key,
    ProductKey = job.ProductKey, phase = "create", Count = u.Count, adopted = true}
  if not ok then return jerr end
  job:add_apply{ApplyId = id, phase = "create", Count = u.Count}
  table.remove(job.unsettled, i)
end

--- Settles a resumed job's uncertain submissions as the user asks: each ApplyId of
-- `adopt_apply_ids` is taken in (QueryBatchRegisterDeviceStatus must know it under the
-- job's ProductKey, past any name check; its devices must bear random names; its Total
-- must match an uncertain submission's Count); then, with `accept_ambiguous`, every
-- submission still uncertain is given up on.
-- @tparam table job a rebuilt job (`unsettled`, `accepted`)
-- @tparam table args resume's arguments
-- @treturn ?table err `InvalidParameter` (`parameter = "adopt_apply_ids"`) for an apply
--   that cannot be taken in, a call's error, or the journal's; with an ApplyId refused,
--   `uncertain_left` is the number of submissions still uncertain
function M.settle(job, args)
  local ids = args.adopt_apply_ids or {}
  if #ids > 0 and #(job.unsettled or {}) == 0 then
    return errors.new{code = "InvalidParameter", parameter = "adopt_apply_ids",
      message = "the journal records no uncertain BatchRegisterDevice: there is nothing to adopt",
      uncertain_left = 0}
  end
  for _, v in ipairs(ids) do
    local err = adopt_one(job, v)
    if err then
      -- what is left to settle decides the way out the caller offers next
      err.uncertain_left = #job.unsettled
      return err
    end
  end
  if args.accept_ambiguous then
    for _, u in ipairs(job.unsettled or {}) do
      local ok, jerr = job:record{event = "accepted", seq = u.seq, Count = u.Count,
                                  message = u.message}
      if not ok then return jerr end
      job.accepted[#job.accepted + 1] = u
    end
    job.unsettled = {}
  end
  if job.unsettled and #job.unsettled == 0 then job.uncertain = nil end
end

return M
