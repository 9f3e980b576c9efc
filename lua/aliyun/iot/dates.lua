--- Date parsing shared by the client (HTTP `Date` headers) and the credentials providers
-- (ISO-8601 expirations). Strict: anything out of range is nil, never an error, and no
-- local time zone is involved.
-- @module aliyun.iot.dates

local M = {}

--- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil);
-- os.time would read the date as local time.
-- @tparam integer y year
-- @tparam integer m month 1..12
-- @tparam integer d day 1..31
-- @treturn integer days
function M.days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

local function leap(y) return (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0 end
local MONTH_DAYS = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

-- Epoch seconds of a checked date and time, or nil when a field is out of range.
local function epoch(y, mo, d, h, mi, s)
  if not (y and mo and d and h and mi and s) then return nil end
  if y < 1 or y > 9999 or mo < 1 or mo > 12 or d < 1 or h > 23 or mi > 59 or s > 60 then
    return nil
  end
  local last = (mo == 2 and leap(y)) and 29 or MONTH_DAYS[mo]
  if d > last then return nil end
  return M.days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s
end

--- Parses an ISO-8601 date-time (`2026-11-29T20:00:00Z`, fractions and `±hh:mm` offsets
-- allowed; no offset is read as UTC) into epoch seconds.
-- @tparam string s
-- @treturn number|nil epoch seconds, nil when `s` is not such a date-time
function M.iso8601(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec, frac, zone =
    s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not y then return nil end
  local t = epoch(tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi),
                  tonumber(sec))
  if not t then return nil end
  if frac ~= "" and not frac:match("^%.%d+$") then return nil end
  local offset = 0
  if zone ~= "" and zone ~= "Z" and zone ~= "z" then
    local sign, zh, zm = zone:match("^([+-])(%d%d):?(%d%d)$")
    if not sign or tonumber(zh) > 23 or tonumber(zm) > 59 then return nil end
    offset = (tonumber(zh) * 60 + tonumber(zm)) * 60
    if sign == "-" then offset = -offset end
  end
  return t + (tonumber("0" .. frac) or 0) - offset
end

local MONTHS = {Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
                Sep = 9, Oct = 10, Nov = 11, Dec = 12}
local DAYS = {Mon = true, Tue = true, Wed = true, Thu = true, Fri = true, Sat = true,
              Sun = true}
local LONG_DAYS = {Monday = true, Tuesday = true, Wednesday = true, Thursday = true,
                   Friday = true, Saturday = true, Sunday = true}

--- Parses an HTTP date (RFC 7231 §7.1.1.1): the IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`,
-- and the obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
-- (`Sun Nov  6 08:49:37 1994`) forms.
-- @tparam string s
-- @treturn number|nil epoch seconds, nil for anything else (never raises)
function M.http(s)
  if type(s) ~= "string" or #s > 64 then return nil end
  local wd, d, mon, y, h, mi, sec =
    s:match("^(%a%a%a), (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if wd then
    if not DAYS[wd] then return nil end
  else
    wd, d, mon, y, h, mi, sec =
      s:match("^(%a+), (%d%d)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d) GMT$")
    if wd then
      if not LONG_DAYS[wd] then return nil end
      -- RFC 7231: a two-digit year more than 50 years ahead is in the past century
      y = tonumber(y) + 2000
      if y > tonumber(os.date("!%Y")) + 50 then y = y - 100 end
    else
      wd, mon, d, h, mi, sec, y =
        s:match("^(%a%a%a) (%a%a%a) ([ %d]%d) (%d%d):(%d%d):(%d%d) (%d%d%d%d)$")
      if not wd or not DAYS[wd] then return nil end
      d = d:gsub(" ", "")
    end
  end
  if not MONTHS[mon] then return nil end
  return epoch(tonumber(y), MONTHS[mon], tonumber(d), tonumber(h), tonumber(mi), tonumber(sec))
end

return M
