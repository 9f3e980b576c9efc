--- The emulator's STS (Version 2015-04-01, docs/wire.md §8): `AssumeRole`, V1-signed by the
-- source credentials and checked by the same gateway code as every IoT action
-- (server.lua), and `AssumeRoleWithOIDC`, unsigned, checked against the configured
-- `oidc_token`. Both issue temporary credentials (server.lua's `issue`) that the IoT
-- actions accept, with their SecurityToken only, until they expire: after
-- `credentials_ttl` seconds when that knob is set (short, for tests), else
-- DurationSeconds. Error codes are the documented STS ones where we know them; those
-- marked "ours" are our pick.
-- @module aliyun.iot.emulator.sts
local actions = require "aliyun.iot.emulator.actions"

local M = {}

M.VERSION = "2015-04-01"

--- The actions served.
M.ACTIONS = { AssumeRole = true, AssumeRoleWithOIDC = true }

local function gateway(status, code, message)
    return { status = status, gateway = { Code = code, Message = message } }
end

--- True when a request is for STS (its Version, or one of its actions).
function M.handles(params)
    return params.Version == M.VERSION or M.ACTIONS[params.Action or ""] ~= nil
end

--- The gateway's first checks for STS: Version and Action.
-- @return the error response, or nil
function M.check_api(req)
    local p = req.params
    if p.Version ~= M.VERSION then return gateway(400, "InvalidVersion", "Specified parameter Version is not valid.") end
    if not M.ACTIONS[p.Action or ""] then
        return gateway(404, "InvalidApi.NotFound", "Specified api is not found,please check your url and method.")
    end
end

local ROLE_ARN = "^acs:ram::(%d+):role/([%w%.@_%-]+)$"

-- RoleArn, RoleSessionName and DurationSeconds; returns the checked values or the error.
local function role_params(p, conf)
    if not p.RoleArn or p.RoleArn == "" then return nil, gateway(400, "MissingRoleArn", "RoleArn is mandatory for this action.") end
    local acct, role = p.RoleArn:match(ROLE_ARN)
    if not acct then return nil, gateway(400, "InvalidParameter.RoleArn", "The parameter RoleArn is wrongly formed.") end
    local session = p.RoleSessionName
    if not session or session == "" then
        return nil, gateway(400, "MissingRoleSessionName", "RoleSessionName is mandatory for this action.")
    end
    if #session < 2 or #session > 32 or not session:find("^[%w%.@_%-]+$") then
        return nil, gateway(400, "InvalidParameter.RoleSessionName", "The parameter RoleSessionName is wrongly formed.")
    end
    local d = tonumber(p.DurationSeconds or "3600")
    if not d or d ~= math.floor(d) or d < 900 or d > 43200 then
        return nil, gateway(400, "InvalidParameter.DurationSeconds", "The Min/Max value of DurationSeconds is 15min/12hr.")
    end
    if p.Policy and #p.Policy > 1024 then
        return nil, gateway(400, "InvalidParameter.PolicyGrammar", "The policy is too long.") -- ours
    end
    return { acct = acct, role = role, session = session, ttl = conf.credentials_ttl or d }
end

local function answer(r, creds)
    return { status = 200, body = {
        AssumedRoleUser = { Arn = ("acs:ram::%s:assumed-role/%s/%s"):format(r.acct, r.role, r.session),
                            AssumedRoleId = "3" .. actions.random_string(17) .. ":" .. r.session },
        Credentials = creds } }
end

--- AssumeRole, after the gateway checked the caller's signature.
-- @param req the parsed request
-- @param account the caller's account (the credentials act for it)
-- @param conf the running configuration
-- @param issue `issue(account, ttl) -> credentials`
function M.assume_role(req, account, conf, issue)
    local r, err = role_params(req.params, conf)
    if not r then return err end
    return answer(r, issue(account, r.ttl))
end

--- AssumeRoleWithOIDC: no signature; the token must be the configured `oidc_token`, the
-- credentials act for the account of the emulator's advertised key (`issue_account`).
function M.assume_role_with_oidc(req, conf, issue)
    local p = req.params
    if not p.OIDCProviderArn or not p.OIDCProviderArn:find("^acs:ram::%d+:oidc%-provider/[%w%.@_%-]+$") then
        return gateway(400, "InvalidParameter.OIDCProviderArn", "The parameter OIDCProviderArn is wrongly formed.") -- ours
    end
    if not p.OIDCToken or p.OIDCToken == "" then
        return gateway(400, "MissingOIDCToken", "OIDCToken is mandatory for this action.")
    end
    if not conf.oidc_token or p.OIDCToken ~= conf.oidc_token then
        return gateway(400, "AuthenticationFail.OIDCToken.Invalid", "The OIDC token is invalid.") -- ours
    end
    local r, err = role_params(p, conf)
    if not r then return err end
    return answer(r, issue(conf.issue_account, r.ttl))
end

return M
