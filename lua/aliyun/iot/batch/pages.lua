--- Reading an apply's devices (QueryPageByApplyId, D-69518), page by page. Every page is
-- checked (`aliyun.iot.batch.answer.page`) before any of its devices is used, and the
-- pages read are bounded by the first page's Total (itself at most what the apply asked
-- for) and the page size, never by the PageCount a server announces.
-- @module aliyun.iot.batch.pages

local answer = require "aliyun.iot.batch.answer"

local M = {}

--- QueryPageByApplyId's largest page.
M.SIZE = 50

local FETCH_CONCURRENCY = 16  -- pages in flight at once; the pacer keeps them within QPS

--- How many pages of `size` hold `total` devices.
function M.count(total, size)
  return math.ceil(total / (size or M.SIZE))
end

local function params(id, p, size)
  return {ApplyId = id, PageSize = size, CurrentPage = p}
end

local function checked(id, res, p, size, total, known)
  local page, why = answer.page(res, p, size, total, known)
  if page then return page end
  return nil, answer.invalid_response(("apply %s, page %d: %s"):format(answer.id_key(id), p,
    why), {apply_id = id, action = "QueryPageByApplyId"})
end

--- Reads and checks one page.
-- @tparam table port `aliyun.iot.batch.port`
-- @param id ApplyId
-- @tparam integer p page number (1-based)
-- @tparam integer size page size
-- @tparam[opt] integer total the first page's Total (nil for the first page)
-- @tparam[opt] table opts port options (`deadline`)
-- @tparam[opt] table known names the caller asked for, checked by it (`answer.page`)
-- @treturn ?table `{Total=, devices = {...}}`
-- @treturn ?table err the call's error or `InvalidResponse`, with `apply_id`
function M.fetch(port, id, p, size, total, opts, known)
  local res, err = port:invoke("QueryPageByApplyId", params(id, p, size), opts)
  if not res then
    err.apply_id = id
    return nil, err
  end
  return checked(id, res, p, size, total, known)
end

--- Reads and checks pages `first..last` at once (`known` as for `M.fetch`).
-- @treturn table the pages that came and passed, in page order
-- @treturn ?table err the first failure (call error or `InvalidResponse`), with `apply_id`
function M.fetch_many(port, id, first, last, size, total, opts, known)
  local list = {}
  for p = first, last do list[#list + 1] = params(id, p, size) end
  local results, errs = port:invoke_many("QueryPageByApplyId", list, opts, FETCH_CONCURRENCY)
  local pages, failure = {}, nil
  for i = 1, #list do
    local p = first + i - 1
    local page, err
    if results[i] then
      page, err = checked(id, results[i], p, size, total, known)
    else
      err = errs[i] or answer.invalid_response("the fan-out returned no answer")
      err.apply_id = id
    end
    pages[#pages + 1] = page
    failure = failure or err
  end
  return pages, failure
end

return M
