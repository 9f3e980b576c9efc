--- The emulator's ECS instance metadata and credentials URI (docs/wire.md §8): `PUT
-- /latest/api/token` (IMDSv2; refused in the v1-only mode `imds = "v1"`), the role list and
-- the role's credentials under `/latest/meta-data/ram/security-credentials/` (a token
-- required in `imds = "v2_only"`, accepted or absent in the default `"v2"`), and
-- `GET /credentials-uri`. Credentials are issued for the account of the emulator's
-- advertised key (`issue_account`), for `credentials_ttl` seconds (else 3600); with
-- `credentials_fail` every credentials request answers 500 (a refresh that fails).
-- @module aliyun.iot.emulator.imds
local actions = require "aliyun.iot.emulator.actions"

local M = {}

local ROLES = "/latest/meta-data/ram/security-credentials/"
M.URI = "/credentials-uri"

-- Tokens handed out: token -> expiry (ngx.time()).
local tokens = {}

local function text(status, body, ctype)
    return { status = status, body = body, ctype = ctype or "text/plain" }
end

local function put_token(conf, headers)
    if conf.imds == "v1" then return text(403, "Forbidden") end
    local ttl = tonumber(headers["x-aliyun-ecs-metadata-token-ttl-seconds"] or "")
    if not ttl or ttl < 1 or ttl > 21600 then return text(400, "Bad Request") end
    local t = actions.random_string(48)
    tokens[t] = ngx.time() + ttl
    return text(200, t)
end

local function creds_body(conf, issue, json)
    local c = issue(conf.issue_account, conf.credentials_ttl or 3600)
    c.Code = "Success"
    c.LastUpdated = os.date("!%Y-%m-%dT%H:%M:%SZ", ngx.time())
    return text(200, json(c), "application/json")
end

--- Answers one metadata or credentials-URI request.
-- @param conf the running configuration
-- @param issue `issue(account, ttl) -> credentials`
-- @param json an encoder (table -> JSON text)
-- @return `{status=, body=, ctype=}` and the request's record for `requests()`
function M.answer(conf, issue, json)
    local method, uri = ngx.req.get_method(), ngx.var.uri
    local headers = ngx.req.get_headers(50)
    local token = headers["x-aliyun-ecs-metadata-token"]
    local record = { action = uri, method = method, signature = "none",
                     params = { token = token and "given" or "none" } }
    if uri == "/latest/api/token" and method == "PUT" then return put_token(conf, headers), record end
    if uri == M.URI then
        if conf.credentials_fail then return text(500, json { Code = "InternalError" }, "application/json"), record end
        return creds_body(conf, issue, json), record
    end
    if method ~= "GET" or uri:sub(1, #ROLES) ~= ROLES then return text(404, "Not Found"), record end
    if token and not (tokens[token] and tokens[token] > ngx.time()) then return text(401, "Unauthorized"), record end
    if conf.imds == "v2_only" and not token then return text(401, "Unauthorized"), record end
    local role = uri:sub(#ROLES + 1)
    if role == "" then return text(200, conf.ecs_role .. "\n"), record end
    if role ~= conf.ecs_role then return text(404, "Not Found"), record end
    if conf.credentials_fail then return text(500, json { Code = "InternalError" }, "application/json"), record end
    return creds_body(conf, issue, json), record
end

return M
