--- Alibaba Cloud IoT Platform (API version 2018-01-20) client.
--
--     local iot = require "aliyun.iot"
--     local client = assert(iot.new{region_id = "cn-shanghai"})
--     local res, err = client:batch_register_device{ProductKey = "a1...", Count = 10}
--
-- Every call goes through one pipeline (docs/ARCHITECTURE.md): validate and flatten
-- (`request`), then the attempt engine (`engine`): common parameters with a fresh nonce
-- and timestamp per attempt, sign, pace, send, decode and classify (`response`), retry
-- (`retry`). Results keep the API's own field names, so the official docs apply.
-- Network and service failures return `nil, err` (see `aliyun.iot.errors`); misuse (a
-- wrong argument type, an unknown option) raises.
--
-- This module is the facade: it makes clients (`aliyun.iot.client`) and installs the
-- batch helpers (`aliyun.iot.batch`) on them; neither of those requires it.
-- @module aliyun.iot

local core = require "aliyun.iot.core"
local errors = require "aliyun.iot.errors"
local request = require "aliyun.iot.request"
local client = require "aliyun.iot.client"
local batch = require "aliyun.iot.batch"
local device = require "aliyun.iot.device"
local fleet = require "aliyun.iot.fleet"
local credentials = require "aliyun.iot.credentials"

local M = {_VERSION = core._VERSION, API_VERSION = request.API_VERSION, errors = errors}

--- Built-in transports, each a function `(req) -> res | nil, err`: `curl` (the default,
-- libcurl) and `cosocket` (OpenResty's non-blocking sockets, loaded on first use).
M.transports = client.transports

--- The client class (`aliyun.iot.client`), with the batch helpers installed.
M.Client = client.Client

--- Makes a client.
-- @function new
-- @tparam table opts options (all optional; units in brackets; `aliyun.iot.options`
--   holds their types, defaults and ranges):
--   `access_key_id`, `access_key_secret`, `security_token`; or `credentials` (function
--   returning `{access_key_id=, access_key_secret=, security_token=, expiration=}`,
--   called when needed, or a table `{type = "ram_role_arn", ...}` by the official type
--   names; not together with a key pair); without these, the default chain: environment,
--   OIDC, `~/.aliyun/config.json`, `~/.alibabacloud/credentials`, the ECS RAM role, a
--   credentials URI (see `aliyun.iot.credentials`);
--   `region_id` (`ALIBABA_CLOUD_REGION_ID`, else the CLI profile's, else "cn-shanghai");
--   `endpoint` ("https://iot.<region_id>.aliyuncs.com/", or the central one for the
--   regions the official endpoint map lists, `aliyun.iot.endpoints`);
--   `iot_instance_id` (sent with every call); `timeout` [s, 30, up to a day];
--   `connect_timeout` [s, 5]; `ca_file`; `proxy`; `format` ("JSON" or "XML");
--   `signature_algorithm` ("HMAC-SHA1" or "ACS3-HMAC-SHA256"); `max_retries` (3, retries
--   after the first attempt, 0..100); `retry_deadline` [s, 60]; `max_response_size`
--   [bytes, 16 MiB, up to 1 GiB]; `max_batch_size` (1000, up to 10000); `qps` (true: the
--   documented limits, false, or a table Action -> requests per second); `transport`
--   (function `(req) -> res | nil, err`); `logger` (function `(level, message)`,
--   receives redacted text only); `qps_shared_dict` (OpenResty: lua_shared_dict name for
--   pacing across workers); `credentials_shared_dict` (OpenResty: a lua_shared_dict name,
--   fetched credentials shared by the workers); `profile`, `sts_endpoint`,
--   `metadata_endpoint` (see `aliyun.iot.credentials`); `user_agent`.
-- @treturn ?Client client
-- @treturn ?table err `InvalidParameter` for a bad option value (a malformed endpoint
--   too), `NoCredentials` when no credentials were found (the message lists where it
--   looked), `InvalidCredentials` for incomplete or unusable ones, `CredentialsError`
--   when a configured provider of the chain failed (STS, instance metadata, a URI)
-- @raise when opts is not a table, an option name is unknown or has the wrong type
M.new = client.new

--- Credentials tools: `chain([opts])` tells which provider of the default chain answers
-- and what was tried before it, without a secret (`aliyun.iot.credentials.chain`).
M.credentials = {chain = credentials.chain}

--- A device's MQTT connection parameters (`aliyun.iot.device.device_credentials`).
M.device_credentials = device.device_credentials

--- Dynamic registration of one device with its product's secret (`aliyun.iot.device.dynamic_register`).
M.dynamic_register = device.dynamic_register

batch.install(M.Client)
fleet.install(M.Client)
return M
