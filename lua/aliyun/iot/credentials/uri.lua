--- A credentials URI (docs/wire.md §8 "Credentials URI"): `GET` answers `AccessKeyId`,
-- `AccessKeySecret`, `SecurityToken` and `Expiration`, all required (a `Code` other than
-- `Success`, when present, is a refusal).
-- @module aliyun.iot.credentials.uri

local fetch = require "aliyun.iot.credentials.fetch"

local M = {}

local TIMEOUT, CONNECT_TIMEOUT = 10, 5

--- The problem with a credentials URI, or nil: an http(s) URL on one line.
-- @param url
-- @treturn ?string
function M.problem(url)
  if type(url) ~= "string" or not url:find("^https?://[^%s]+$") then
    return "credentials_uri must be an http:// or https:// URL"
  end
end

--- A credentials URI as it may be shown: without the user and password it may carry
-- (`http://user:password@host/`), its query and its fragment (a token may ride there).
-- @tparam string url
-- @treturn string
function M.public(url)
  local scheme, rest = url:match("^(%a+://)(.*)$")
  if not scheme then return "(a URI)" end
  rest = rest:gsub("[?#].*$", "")
  local authority, path = rest:match("^([^/]*)(.*)$")
  return scheme .. authority:gsub("^.*@", "") .. path
end

--- A fetch from a credentials URI.
-- @tparam string url
-- @tparam ?string proxy
-- @treturn function `fetch() -> creds, expires_at | nil, reason`
function M.fetcher(url, proxy)
  return function()
    local res, err = fetch.request{url = url, timeout = TIMEOUT,
                                   connect_timeout = CONNECT_TIMEOUT, proxy = proxy}
    if not res then return nil, "unreachable (" .. err .. ")" end
    local t, why = fetch.json(res)
    if not t then return nil, "answered " .. why end
    if res.status ~= 200 or (t.Code ~= nil and t.Code ~= "Success") then
      return nil, ("refused: HTTP %d, Code %s"):format(res.status, fetch.short(t.Code) or "missing")
    end
    local creds, exp = fetch.credentials(t)
    if not creds then return nil, exp end
    return creds, exp
  end
end

return M
