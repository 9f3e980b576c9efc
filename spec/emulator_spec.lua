-- The emulator proven with a signer of its own (spec/emulator/signer.lua), over real HTTP.
local emulator = require "aliyun.iot.emulator"
local s = require "spec.emulator.signer"
local cjson = require "cjson"
local socket = require "socket"

local PK = "a1TestPK001"
local emu

local function call(method, action, extra, opts)
    local status, body = s.v1(emu, method, s.params(action, extra), opts)
    local ok, doc = pcall(cjson.decode, body or "")
    return status, ok and doc or nil, body
end

local function wait_status(apply_id, want)
    local deadline = socket.gettime() + 5
    repeat
        local _, doc = call("GET", "QueryBatchRegisterDeviceStatus", { ApplyId = string.format("%d", apply_id), ProductKey = PK })
        if doc.Data.Status == want then return doc end
        socket.sleep(0.01)
    until socket.gettime() > deadline
    error("apply " .. apply_id .. " never reached " .. want)
end

describe("emulator", function()
    lazy_setup(function() emu = emulator.start { async_delay = 0.05 } end)
    lazy_teardown(function() emu:stop() end)
    before_each(function() emu:reset(); emu:set { async_delay = 0.05, invalid_names = "async", qps_limits = false, max_count = 10000 } end)

    describe("launcher", function()
        it("rejects unknown options and bad values", function()
            assert.has_error(function() emulator.start { prot = 1 } end)
            assert.has_error(function() emulator.start { invalid_names = "later" } end)
            assert.has_error(function() emulator.start { access_keys = {} } end)
            assert.has_error(function() emulator.start { max_count = "abc" } end)
            assert.has_error(function() emu:set { port = 1 } end)
            assert.has_error(function() emu:fault { kind = "explode", count = 1 } end)
        end)

        it("serves on loopback and stops idempotently; the port closes", function()
            local e = emulator.start {}
            assert.matches("^http://127%.0%.0%.1:%d+/$", e.endpoint)
            assert.equal("testid", e.access_key_id)
            e:stop()
            e:stop()
            local c = socket.tcp()
            c:settimeout(1)
            assert.is_nil(c:connect("127.0.0.1", e.port))
            c:close()
            assert.has_error(function() e:state() end)
        end)

        it("dies with the Lua process that started it", function()
            local p = io.popen([[LUA_PATH="lua/?.lua;;" lua5.4 -e 'io.write(require("aliyun.iot.emulator").start{}.port)']])
            local port = tonumber(p:read("*a"))
            p:close()
            assert.is_number(port)
            local deadline, open = socket.gettime() + 3, true
            while open and socket.gettime() < deadline do
                local c = socket.tcp()
                c:settimeout(0.5)
                open = c:connect("127.0.0.1", port) ~= nil
                c:close()
                if open then socket.sleep(0.05) end
            end
            assert.is_false(open)
        end)
    end)

    describe("V1 signatures", function()
        it("registers with BatchRegisterDevice over GET and POST (JSON)", function()
            for _, method in ipairs { "GET", "POST" } do
                local status, doc = call(method, "BatchRegisterDevice", { ProductKey = PK, Count = "3" })
                assert.equal(200, status)
                assert.is_true(doc.Success)
                local id = doc.Data.ApplyId
                assert.equal(math.floor(id), id)
                local st = wait_status(id, "CREATE_SUCCESS")
                assert.same({}, st.Data.ValidList.Name)
                local _, page = call("GET", "QueryPageByApplyId", { ApplyId = string.format("%d", id), PageSize = "50" })
                assert.equal(3, page.Total)
                assert.equal(1, page.PageCount)
                assert.equal(3, #page.ApplyDeviceList.ApplyDeviceInfo)
                for _, d in ipairs(page.ApplyDeviceList.ApplyDeviceInfo) do
                    assert.equal(32, #d.DeviceSecret)
                    assert.is_true(#d.IotId >= 20)
                end
            end
            assert.equal(6, emu:state().products[PK].devices)
        end)

        it("answers XML by default and treats Format case-insensitively", function()
            local p = s.params("BatchRegisterDevice", { ProductKey = PK, Count = "1" })
            p.Format = nil
            local status, body = s.v1(emu, "GET", p)
            assert.equal(200, status)
            assert.matches("^<%?xml.-<BatchRegisterDeviceResponse><Data><ApplyId>%d+</ApplyId></Data>"
                .. "<RequestId>[%w-]+</RequestId><Success>true</Success></BatchRegisterDeviceResponse>$", body)
            local _, doc = call("GET", "BatchRegisterDevice", { ProductKey = PK, Count = "1", Format = "json" })
            assert.is_true(doc.Success)
        end)

        it("echoes the server's string to sign on a bad signature", function()
            local p = s.params("BatchRegisterDevice", { ProductKey = PK, Count = "1" })
            local status, body = s.v1(emu, "POST", p, { tamper = true })
            assert.equal(400, status)
            local doc = cjson.decode(body)
            assert.equal("SignatureDoesNotMatch", doc.Code)
            local _, sts = s.v1_sign("POST", p, "testsecret")
            assert.equal("Specified signature is not matched with our calculation. server string to sign is:" .. sts, doc.Message)
            assert.equal(0, #emu:state().applies)
        end)

        it("signs spaces, * and UTF-8 like the reference (form body with + for space)", function()
            local p = s.params("BatchCheckDeviceNames", { ProductKey = PK, ["DeviceNameList.1.DeviceName"] = "lamp*1 (x)",
                ["DeviceNameList.1.DeviceNickname"] = "智能灯_1" })
            local sig = s.v1_sign("POST", p, "testsecret")
            p.Signature = sig
            local keys = {}
            for k, v in pairs(p) do keys[#keys + 1] = k .. "=" .. s.pct(v):gsub("%%20", "+") end
            local status, body = s.http(emu.endpoint, "POST", { ["content-type"] = "application/x-www-form-urlencoded" },
                table.concat(keys, "&"))
            assert.equal(200, status, body)
        end)
    end)

    describe("gateway errors", function()
        local function expect(status, code, method, params, opts)
            local st, body = s.v1(emu, method or "GET", params, opts)
            assert.equal(status, st, body)
            assert.equal(code, cjson.decode(body).Code)
        end
        it("answers with the documented codes", function()
            expect(404, "InvalidAccessKeyId.NotFound", "GET", s.params("QueryDevice", { ProductKey = PK }, "nobody"))
            local p = s.params("QueryDevice", { ProductKey = PK }); p.Timestamp = nil
            expect(400, "MissingTimestamp", "GET", p)
            p = s.params("QueryDevice", { ProductKey = PK, Timestamp = "2024-01-01 00:00:00" })
            expect(400, "InvalidTimeStamp.Format", "GET", p)
            p = s.params("QueryDevice", { ProductKey = PK, Timestamp = s.timestamp(os.time() - 16 * 60) })
            expect(400, "InvalidTimeStamp.Expired", "GET", p)
            expect(404, "InvalidApi.NotFound", "GET", s.params("DescribeRegions"))
            expect(400, "InvalidVersion", "GET", s.params("QueryDevice", { ProductKey = PK, Version = "2017-04-20" }))
            expect(400, "MissingProductKey", "POST", s.params("BatchRegisterDevice", { Count = "1" }))
            expect(400, "MissingApplyId", "POST", s.params("QueryPageByApplyId", {}))
            p = s.params("QueryDevice", { ProductKey = PK })
            local st = s.v1(emu, "GET", p)
            assert.equal(200, st)
            expect(400, "SignatureNonceUsed", "GET", p)
        end)

        it("renders gateway errors in XML in the real element order", function()
            local p = s.params("QueryDevice", { ProductKey = PK }, "nobody"); p.Format = "XML"
            local st, body = s.v1(emu, "GET", p)
            assert.equal(404, st)
            assert.matches("^<%?xml version='1.0' encoding='UTF%-8'%?><Error><RequestId>[%w-]+</RequestId><HostId>.-</HostId>"
                .. "<Code>InvalidAccessKeyId.NotFound</Code><Message>Specified access key is not found.</Message>"
                .. "<Recommend><!%[CDATA%[https://error%-center.aliyun.com/.-%]%]></Recommend></Error>$", body)
        end)
    end)

    describe("check and register", function()
        it("reports invalid, existing and repeated names through the status call (async)", function()
            call("POST", "RegisterDevice", { ProductKey = PK, DeviceName = "taken1" })
            local _, doc = call("POST", "BatchCheckDeviceNames", { ProductKey = PK,
                ["DeviceName.1"] = "good_1", ["DeviceName.2"] = "bad name", ["DeviceName.3"] = "taken1",
                ["DeviceName.4"] = "twice", ["DeviceName.5"] = "twice", ["DeviceName.10"] = "good_10" })
            assert.is_true(doc.Success)
            local st = wait_status(doc.Data.ApplyId, "CHECK_FAILED")
            assert.same({ "good_1", "good_10" }, st.Data.ValidList.Name)
            assert.same({ "bad name", "taken1", "twice" }, st.Data.InvalidList.Name)
            local details = st.Data.InvalidDetailList.invalidDetailList
            assert.equal(3, #details)
            assert.equal("The device name already exists.", details[2].ErrorMsg)
            local _, r = call("POST", "BatchRegisterDeviceWithApplyId", { ProductKey = PK, ApplyId = string.format("%d", doc.Data.ApplyId) })
            assert.is_false(r.Success)
        end)

        it("reports them synchronously with invalid_names = sync (wire typos kept)", function()
            emu:set { invalid_names = "sync" }
            local status, doc = call("POST", "BatchCheckDeviceNames", { ProductKey = PK,
                ["DeviceNameList.1.DeviceName"] = "ok_name", ["DeviceNameList.2.DeviceName"] = "x",
                ["DeviceNameList.3.DeviceName"] = "dup_1", ["DeviceNameList.4.DeviceName"] = "dup_1",
                ["DeviceNameList.5.DeviceName"] = "nick_bad", ["DeviceNameList.5.DeviceNickname"] = "a!" })
            assert.equal(200, status)
            assert.is_false(doc.Success)
            assert.equal("iot.device.InvalidFormattedDeviceName", doc.Code)
            assert.same({ "x" }, doc.Data.InvalidDeviceNameList.InvalidDeviceName)
            assert.same({ "dup_1" }, doc.Data.RepeatedDeviceNameList.RepeatDevieNameList)
            assert.same({ "a!" }, doc.Data.InvalidDeviceNicknameList.InvalidDeviceNickname)
            assert.equal(3, #doc.Data.InvalidDetailList.InvalidDetailList)
            assert.equal(0, #emu:state().applies)
        end)

        it("walks check -> register -> pages with DeviceNameList and nicknames", function()
            local params = { ProductKey = PK }
            for i = 1, 12 do
                params["DeviceNameList." .. i .. ".DeviceName"] = "lamp_" .. i
                params["DeviceNameList." .. i .. ".DeviceNickname"] = "智能灯" .. i
            end
            local _, doc = call("POST", "BatchCheckDeviceNames", params)
            local id = doc.Data.ApplyId
            wait_status(id, "CHECK_SUCCESS")
            local _, r = call("POST", "BatchRegisterDeviceWithApplyId", { ProductKey = PK, ApplyId = string.format("%d", id) })
            assert.is_true(r.Success)
            assert.equal(id, r.Data.ApplyId)
            wait_status(id, "CREATE_SUCCESS")
            local seen = {}
            for page = 1, 3 do
                local _, pg = call("GET", "QueryPageByApplyId", { ApplyId = string.format("%d", id), PageSize = "5", CurrentPage = tostring(page) })
                assert.equal(12, pg.Total)
                assert.equal(3, pg.PageCount)
                for _, d in ipairs(pg.ApplyDeviceList.ApplyDeviceInfo) do seen[#seen + 1] = d.DeviceName end
            end
            table.sort(seen)
            local names = emu:state().products[PK].names
            assert.same(names, seen)
            assert.equal(12, #names)
            local _, detail = call("GET", "QueryDeviceDetail", { ProductKey = PK, DeviceName = "lamp_3" })
            assert.equal("智能灯3", detail.Data.Nickname)
        end)

        it("fails the creation of names that appeared after the check", function()
            local _, doc = call("POST", "BatchCheckDeviceNames", { ProductKey = PK, ["DeviceName.1"] = "late_1", ["DeviceName.2"] = "late_2" })
            wait_status(doc.Data.ApplyId, "CHECK_SUCCESS")
            call("POST", "RegisterDevice", { ProductKey = PK, DeviceName = "late_2" })
            call("POST", "BatchRegisterDeviceWithApplyId", { ProductKey = PK, ApplyId = string.format("%d", doc.Data.ApplyId) })
            local st = wait_status(doc.Data.ApplyId, "CREATE_FAILED")
            assert.same({ "late_1" }, st.Data.ValidList.Name)
            assert.same({ "late_2" }, st.Data.InvalidList.Name)
            assert.equal(2, emu:state().products[PK].devices)
        end)

        it("accepts only integer ApplyIds", function()
            for _, bad in ipairs { "4415.0", "4415.5", "-1", "abc", "1e5" } do
                local status, doc = call("GET", "QueryPageByApplyId", { ApplyId = bad })
                assert.equal(200, status)
                assert.equal("iot.device.InvalidFormattedApplyId", doc.Code, bad)
            end
            local _, doc = call("GET", "QueryPageByApplyId", { ApplyId = "4415" })
            assert.equal("iot.device.DeviceApplyIsNotFound", doc.Code)
        end)

        it("enforces max_count and discards names beyond it", function()
            emu:set { max_count = 2 }
            local _, doc = call("GET", "BatchRegisterDevice", { ProductKey = PK, Count = "3" })
            assert.equal("iot.device.DeviceCountExceeded", doc.Code)
            _, doc = call("POST", "BatchCheckDeviceNames", { ProductKey = PK, ["DeviceName.1"] = "aaaa", ["DeviceName.2"] = "bbbb", ["DeviceName.3"] = "cccc" })
            wait_status(doc.Data.ApplyId, "CHECK_SUCCESS")
            assert.same({ "aaaa", "bbbb" }, emu:state().applies[1].Valid)
        end)

        it("takes 10,000 names with nicknames in one form body", function()
            local params = { ProductKey = PK }
            for i = 1, 10000 do
                params["DeviceNameList." .. i .. ".DeviceName"] = string.format("dev_%05d", i)
                params["DeviceNameList." .. i .. ".DeviceNickname"] = "灯_" .. i
            end
            local status, doc = call("POST", "BatchCheckDeviceNames", params)
            assert.equal(200, status)
            wait_status(doc.Data.ApplyId, "CHECK_SUCCESS")
            call("POST", "BatchRegisterDeviceWithApplyId", { ProductKey = PK, ApplyId = string.format("%d", doc.Data.ApplyId) })
            wait_status(doc.Data.ApplyId, "CREATE_SUCCESS")
            assert.equal(10000, emu:state().products[PK].devices)
        end)
    end)

    describe("other actions", function()
        it("RegisterDevice, QueryDevice, QueryDeviceDetail, BatchGetDeviceState, DeleteDevice", function()
            local _, r = call("POST", "RegisterDevice", { ProductKey = PK, DeviceName = "one_1" })
            assert.equal(32, #r.Data.DeviceSecret)
            local _, dup = call("POST", "RegisterDevice", { ProductKey = PK, DeviceName = "one_1" })
            assert.equal("iot.device.AlreadyExistedDeviceName", dup.Code)
            call("POST", "RegisterDevice", { ProductKey = PK, DeviceName = "two_2" })
            local _, q = call("GET", "QueryDevice", { ProductKey = PK, PageSize = "1" })
            assert.equal(2, q.Total)
            assert.equal("two_2", q.Data.DeviceInfo[1].DeviceName) -- newest first
            local _, d = call("GET", "QueryDeviceDetail", { IotId = r.Data.IotId })
            assert.equal("one_1", d.Data.DeviceName)
            local _, bs = call("GET", "BatchGetDeviceState", { ProductKey = PK, ["DeviceName.1"] = "one_1", ["DeviceName.2"] = "two_2" })
            assert.equal(2, #bs.DeviceStatusList.DeviceStatus)
            local _, del = call("POST", "DeleteDevice", { ProductKey = PK, DeviceName = "one_1" })
            assert.is_true(del.Success)
            local _, gone = call("GET", "QueryDeviceDetail", { IotId = r.Data.IotId })
            assert.equal("iot.device.NotExistedDevice", gone.Code)
            local _, np = call("GET", "QueryDevice", { ProductKey = "a1Nope" })
            assert.equal("iot.prod.NotExistedProduct", np.Code)
        end)
    end)

    describe("ACS3-HMAC-SHA256", function()
        it("accepts query + form requests and rejects a tampered one", function()
            local status, body = s.acs3(emu, "BatchCheckDeviceNames", { ProductKey = PK },
                { ["DeviceName.1"] = "v3 name*", ["DeviceName.2"] = "v3_name" })
            assert.equal(200, status, body)
            local id = cjson.decode(body).Data.ApplyId
            local st = wait_status(id, "CHECK_FAILED")
            assert.same({ "v3 name*" }, st.Data.InvalidList.Name)
            status, body = s.acs3(emu, "BatchRegisterDevice", { ProductKey = PK, Count = "1" }, nil, { tamper = true })
            assert.equal(400, status)
            local doc = cjson.decode(body)
            assert.equal("SignatureDoesNotMatch", doc.Code)
            assert.matches("server StringToSign is %[ACS3%-HMAC%-SHA256\n%x+%]", doc.Message)
            local reqs = emu:requests()
            assert.equal("ACS3", reqs[1].signature)
            assert.equal("BatchCheckDeviceNames", reqs[1].action)
        end)
    end)

    describe("faults", function()
        local function register() return call("POST", "BatchRegisterDevice", { ProductKey = PK, Count = "1" }) end

        it("503, throttle, malformed and truncate answer without acting", function()
            emu:fault { kind = "503", count = 1 }
            assert.equal(503, (register()))
            emu:fault { kind = "throttle", count = 1, action = "BatchRegisterDevice" }
            local st, doc = register()
            assert.equal(400, st)
            assert.equal("Throttling.User", doc.Code)
            emu:fault { kind = "malformed", count = 1 }
            local _, parsed, raw = register()
            assert.is_nil(parsed)
            assert.is_truthy(#raw > 0)
            emu:fault { kind = "truncate", count = 1 }
            assert.is_nil((register()))
            assert.equal(0, #emu:state().applies)
            assert.equal(200, (register()))
            assert.equal(1, #emu:state().applies)
        end)

        it("reset drops without acting, reset_after acts then drops", function()
            emu:fault { kind = "reset", count = 1 }
            assert.is_nil((register()))
            assert.equal(0, #emu:state().applies)
            emu:fault { kind = "reset_after", count = 1 }
            assert.is_nil((register()))
            assert.equal(1, #emu:state().applies)
        end)

        it("slow delays the answer; action filter and probability until cleared", function()
            emu:fault { kind = "slow", count = 1, delay = 0.3 }
            local t0 = socket.gettime()
            assert.equal(200, (register()))
            assert.is_true(socket.gettime() - t0 >= 0.25)
            emu:fault { kind = "503", probability = 1, action = "QueryDevice" }
            assert.equal(200, (register()))
            for _ = 1, 3 do assert.equal(503, (call("GET", "QueryDevice", { ProductKey = PK }))) end
            emu:clear_faults()
            assert.equal(200, (call("GET", "QueryDevice", { ProductKey = PK })))
            local reqs = emu:requests()
            assert.equal("slow", reqs[1].fault)
            assert.equal(503, reqs[3].status)
        end)
    end)

    describe("QPS limits", function()
        it("throttles an action beyond its limit", function()
            emu:set { qps_limits = { BatchRegisterDevice = 2 } }
            local codes = {}
            for i = 1, 3 do
                local _, doc = call("POST", "BatchRegisterDevice", { ProductKey = PK, Count = "1" })
                codes[i] = doc.Code or "ok"
            end
            assert.same({ "ok", "ok", "Throttling.User" }, codes)
            assert.is_true(call("GET", "QueryDevice", { ProductKey = PK }) == 200)
        end)
    end)

    describe("inspection", function()
        it("records requests without the Signature", function()
            call("GET", "QueryDevice", { ProductKey = PK })
            local r = emu:requests()
            assert.equal(1, #r)
            assert.same({ action = "QueryDevice", method = "GET", signature = "V1", status = 200 },
                { action = r[1].action, method = r[1].method, signature = r[1].signature, status = r[1].status })
            assert.is_nil(r[1].params.Signature)
            assert.equal(PK, r[1].params.ProductKey)
        end)
    end)

    describe("keep-alive", function()
        it("serves 64 concurrent keep-alive connections", function()
            local conns = {}
            local host, port = emu.endpoint:match("//([^:]+):(%d+)")
            for i = 1, 64 do
                conns[i] = assert(socket.connect(host, tonumber(port)))
                conns[i]:settimeout(5)
            end
            local function round()
                for _, c in ipairs(conns) do
                    local p = s.params("QueryDevice", { ProductKey = PK })
                    p.Signature = s.v1_sign("GET", p, "testsecret")
                    local q = {}
                    for k, v in pairs(p) do q[#q + 1] = s.pct(k) .. "=" .. s.pct(v) end
                    assert(c:send("GET /?" .. table.concat(q, "&") .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
                end
                for _, c in ipairs(conns) do
                    local line = assert(c:receive("*l"))
                    assert.equal("HTTP/1.1 200 OK", line)
                    local len
                    repeat
                        line = assert(c:receive("*l"))
                        len = len or tonumber(line:lower():match("^content%-length:%s*(%d+)"))
                    until line == ""
                    assert(c:receive(len))
                end
            end
            round()
            round()
            for _, c in ipairs(conns) do c:close() end
        end)
    end)
end)

describe("emulator options", function()
    it("renders ApplyIds beyond 2^53 exactly", function()
        local e = emulator.start { apply_id_base = "9007199254740993", async_delay = 0 }
        local old = emu
        emu = e
        local status, _, body = call("GET", "BatchRegisterDevice", { ProductKey = PK, Count = "1" })
        assert.equal(200, status)
        assert.matches('"ApplyId":9007199254740993[,}]', body)
        local _, doc = call("GET", "QueryBatchRegisterDeviceStatus", { ApplyId = "9007199254740993", ProductKey = PK })
        assert.equal("CREATE_SUCCESS", doc.Data.Status)
        local _, nf = call("GET", "QueryBatchRegisterDeviceStatus", { ApplyId = "9007199254740992", ProductKey = PK })
        assert.equal("iot.device.DeviceApplyIsNotFound", nf.Code)
        -- an exact integer on 5.3+, the decimal string where numbers are doubles
        local want = math.type and math.tointeger(9007199254740993) or "9007199254740993"
        assert.equal(want, e:state().applies[1].ApplyId)
        e:stop()
        emu = old
    end)

    it("refuses a port another server holds, and leaves that server alone", function()
        -- a second emulator on a busy port used to report success while every request
        -- went to the first one (whose state its reset() then wiped)
        local first = emulator.start { async_delay = 0 }
        finally(function() first:stop() end)
        local before = #first:requests()
        local ok, err = pcall(emulator.start, { port = first.port })
        assert.is_false(ok)
        assert.matches("in use", tostring(err))
        assert.equal(before, #first:requests())
    end)

    it("serves HTTPS with a throwaway CA", function()
        local e = emulator.start { tls = true }
        finally(function() e:stop() end)
        assert.matches("^https://127%.0%.0%.1:%d+/$", e.endpoint)
        local status, body = s.v1(e, "GET", s.params("BatchRegisterDevice", { ProductKey = PK, Count = "1" }))
        assert.equal(200, status, body)
        local untrusted = { endpoint = e.endpoint, ca_file = "/dev/null" }
        assert.is_nil((s.v1(untrusted, "GET", s.params("QueryDevice", { ProductKey = PK }))))
        e:fault { kind = "truncate", count = 1 }
        assert.is_nil((s.v1(e, "GET", s.params("QueryDevice", { ProductKey = PK }))))
        assert.equal(1, e:state().products[PK] and #e:state().applies)
    end)

    it("requires the configured IotInstanceId and checks STS tokens", function()
        local e = emulator.start { iot_instance_id = "iot-06z00", security_tokens = { "tok1" },
                                   access_keys = { STS_id = "sts_secret" } }
        local old = emu
        emu = e
        local function q(extra) return s.v1(e, "GET", s.params("QueryDevice", extra, "STS_id"), { secret = "sts_secret" }) end
        local _, body = q { ProductKey = PK }
        assert.equal("iot.system.InstanceNotFound", cjson.decode(body).Code)
        local st = q { ProductKey = PK, IotInstanceId = "iot-06z00", SecurityToken = "tok1" }
        assert.equal(200, st)
        st, body = q { ProductKey = PK, IotInstanceId = "iot-06z00", SecurityToken = "stolen" }
        assert.equal(400, st)
        assert.equal("InvalidSecurityToken.Malformed", cjson.decode(body).Code)
        e:stop()
        emu = old
    end)
end)

-- Raw HTTP/1.1 over one connection (Connection: close): status, body (nil, err on timeout).
local function raw(e, method, path, headers, body, timeout)
    local c = assert(socket.connect("127.0.0.1", tonumber(e.control_endpoint:match(":(%d+)/$"))))
    c:settimeout(timeout or 30)
    local lines = { method .. " " .. path .. " HTTP/1.1", "Host: 127.0.0.1", "Connection: close" }
    for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
    if body then lines[#lines + 1] = "Content-Length: " .. #body end
    assert(c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")))
    local status, err = c:receive("*l")
    if not status then c:close(); return nil, err end
    local text = c:receive("*a")
    c:close()
    return tonumber(status:match("^HTTP/1%.%d (%d+)")), text and text:match("\r\n\r\n(.*)$") or ""
end

local function free_json(text)
    local ok, v = pcall(cjson.decode, text)
    return ok and v or nil
end

describe("emulator as a test double", function()
    local function with(opts, fn)
        local e = emulator.start(opts)
        local old = emu
        emu = e
        finally(function() emu = old; e:stop() end)
        fn(e)
    end

    it("answers a 100 KB ACS3 Authorization header with an error and keeps serving", function()
        with({}, function(e)
            local q = "/?Action=QueryDevice&Version=2018-01-20&ProductKey=" .. PK
            -- before the fix, 100 KB took the single worker 50 s and more (quadratic parsing)
            for _, auth in ipairs { "ACS3-HMAC-SHA256 " .. string.rep("a", 200000),
                                    "ACS3-HMAC-SHA256 Credential=" .. string.rep(" ", 60000) .. "x," } do
                local status = raw(e, "GET", q, { Authorization = auth }, nil, 15)
                assert.equal(400, status)
            end
            local status, doc = call("GET", "QueryDevice", { ProductKey = PK })
            assert.equal(200, status)
            assert.is_true(doc.Success)
        end)
    end)

    it("takes JSON data at /__emulator/set, never code; validates each knob; changes nothing on error", function()
        with({}, function(e)
            local st, body = raw(e, "POST", "/__emulator/set", { ["Content-Type"] = "application/json" },
                "{async_delay = (function() while true do end end)()}", 10)
            assert.equal(400, st, body)
            for _, bad in ipairs { '{"max_count": "abc"}', '{"async_delay": -1}', '{"max_count": 2, "async_delay": -1}',
                                   '{"max_count": 1.5}', '{"invalid_names": "later"}', '{"qps_limits": {"NoSuchAction": 1}}',
                                   '{"port": 1}', '[1]', '"x"', '{"max_count": null}' } do
                st, body = raw(e, "POST", "/__emulator/set?format=json", { ["Content-Type"] = "application/json" }, bad)
                assert.equal(400, st, bad)
                assert.is_string(free_json(body).error, bad)
            end
            assert.has_error(function() e:set { max_count = "abc" } end)
            assert.has_error(function() e:set { async_delay = -1 } end)
            -- nothing changed: max_count is still 10000, async_delay still 0.3
            local _, doc = call("GET", "BatchRegisterDevice", { ProductKey = PK, Count = "3" })
            assert.is_true(doc.Success)
            assert.equal("CREATE", e:state().applies[1].Status)
            e:set { max_count = 2, async_delay = 0 }
            _, doc = call("GET", "BatchRegisterDevice", { ProductKey = PK, Count = "3" })
            assert.equal("iot.device.DeviceCountExceeded", doc.Code)
        end)
    end)

    it("needs POST for control URLs that change state (GET: 405) and answers JSON when asked", function()
        with({}, function(e)
            for _, name in ipairs { "set", "reset", "fault", "clear_faults", "issue_credentials" } do
                local st = raw(e, "GET", "/__emulator/" .. name)
                assert.equal(405, st, name)
            end
            assert.equal(405, (raw(e, "POST", "/__emulator/state", nil, "{}")))
            call("GET", "BatchRegisterDevice", { ProductKey = PK, Count = "1" })
            local st, body = raw(e, "GET", "/__emulator/state?format=json")
            assert.equal(200, st)
            local doc = free_json(body)
            assert.equal(1, #doc.applies)
            assert.equal(0, doc.products[PK].devices)
            st, body = raw(e, "GET", "/__emulator/requests", { Accept = "application/json" })
            assert.equal(200, st)
            assert.equal("BatchRegisterDevice", free_json(body)[1].action)
            st, body = raw(e, "GET", "/__emulator/state")
            assert.equal(200, st)
            assert.matches("^{", body) -- a Lua table literal for people with curl
            assert.is_nil(free_json(body))
        end)
    end)

    it("keeps its files 0600 in a 0700 folder, runs nginx with a clean environment", function()
        local script = [[
            local e = require("aliyun.iot.emulator").start{access_keys = {k = "s3cr3t-from-start"}}
            local function rd(p) local f = io.open(p, "rb"); if not f then return "" end
                local s = f:read("*a"); f:close(); return s end
            local ppid = rd("/proc/" .. e._pid .. "/stat"):match("^%d+ %b() %a (%d+)")
            local env = rd("/proc/" .. e._pid .. "/environ") .. rd("/proc/" .. ppid .. "/environ")
            local p = io.popen("find " .. e.prefix .. " -perm /077 ! -path " .. e.prefix .. "/client_body -print")
            local loose = p:read("*a"); p:close()
            p = io.popen("stat -c %a " .. e.prefix); local dir = p:read("*l"); p:close()
            io.write(env:find("envsecret", 1, true) and "LEAK " or "clean ", dir, " [", loose, "]")
            e:stop()]]
        local p = io.popen("ALIBABA_CLOUD_ACCESS_KEY_SECRET=envsecret LUA_PATH='lua/?.lua;;' lua5.4 -e "
            .. "'" .. script:gsub("'", "'\\''") .. "'")
        local out = p:read("*a")
        p:close()
        assert.equal("clean 700 []", out)
    end)

    it("redacts SecurityTokens in what requests() records", function()
        with({ security_tokens = { "tok-SECRET-1" } }, function(e)
            local st = call("GET", "QueryDevice", { ProductKey = PK, SecurityToken = "tok-SECRET-1",
                                                     AccessKeySecret = "ak-SECRET-2" })
            assert.equal(200, st)
            local r = e:requests()
            assert.equal("<redacted>", r[1].params.SecurityToken)
            assert.equal("<redacted>", r[1].params.AccessKeySecret)
            assert.equal(PK, r[1].params.ProductKey)
            local _, body = raw(e, "GET", "/__emulator/requests")
            assert.is_nil(body:find("SECRET", 1, true))
        end)
    end)

    it("security_tokens = {} checks no token; a non-empty list refuses other tokens", function()
        with({}, function()
            assert.equal(200, (call("GET", "QueryDevice", { ProductKey = PK, SecurityToken = "anything" })))
            assert.equal(200, (call("GET", "QueryDevice", { ProductKey = PK })))
        end)
        with({ security_tokens = { "tok1" } }, function()
            assert.equal(200, (call("GET", "QueryDevice", { ProductKey = PK, SecurityToken = "tok1" })))
            assert.equal(200, (call("GET", "QueryDevice", { ProductKey = PK })))
            local st, doc = call("GET", "QueryDevice", { ProductKey = PK, SecurityToken = "other" })
            assert.equal(400, st)
            assert.equal("InvalidSecurityToken.Malformed", doc.Code)
        end)
    end)

    describe("accounts", function()
        local ACCOUNTS = {
            alice = { access_keys = { alice_id = "alice_secret" }, products = { "a1Alice" } },
            bob = { access_keys = { bob_id = "bob_secret", bob_id2 = "bob_secret2" }, products = { "a1Bob" } },
        }
        local function as(id, secret, method, action, extra, token)
            local p = s.params(action, extra, id)
            p.SecurityToken = token
            local status, body = s.v1(emu, method, p, { secret = secret })
            return status, cjson.decode(body)
        end

        it("scope applies and devices: another account's key gets the not-found answers", function()
            with({ accounts = ACCOUNTS, async_delay = 0 }, function(e)
                local _, r = as("alice_id", "alice_secret", "POST", "BatchRegisterDevice", { ProductKey = "a1Alice", Count = "2" })
                local id = string.format("%d", r.Data.ApplyId)
                local _, st = as("alice_id", "alice_secret", "GET", "QueryBatchRegisterDeviceStatus", { ApplyId = id, ProductKey = "a1Alice" })
                assert.equal("CREATE_SUCCESS", st.Data.Status)
                local _, page = as("alice_id", "alice_secret", "GET", "QueryPageByApplyId", { ApplyId = id })
                local iotid = page.ApplyDeviceList.ApplyDeviceInfo[1].IotId
                for _, key in ipairs { { "bob_id", "bob_secret" }, { "bob_id2", "bob_secret2" } } do
                    local _, d = as(key[1], key[2], "GET", "QueryBatchRegisterDeviceStatus", { ApplyId = id, ProductKey = "a1Alice" })
                    assert.equal("iot.device.DeviceApplyIsNotFound", d.Code)
                    _, d = as(key[1], key[2], "GET", "QueryPageByApplyId", { ApplyId = id })
                    assert.equal("iot.device.DeviceApplyIsNotFound", d.Code)
                    _, d = as(key[1], key[2], "GET", "QueryDevice", { ProductKey = "a1Alice" })
                    assert.equal("iot.prod.NotExistedProduct", d.Code)
                    _, d = as(key[1], key[2], "GET", "QueryDeviceDetail", { IotId = iotid })
                    assert.equal("iot.device.NotExistedDevice", d.Code)
                    _, d = as(key[1], key[2], "GET", "BatchGetDeviceState", { ["IotId.1"] = iotid })
                    assert.same({}, d.DeviceStatusList.DeviceStatus)
                    _, d = as(key[1], key[2], "POST", "DeleteDevice", { IotId = iotid })
                    assert.equal("iot.device.NotExistedDevice", d.Code)
                end
                -- both of bob's keys are one account
                _, r = as("bob_id", "bob_secret", "POST", "BatchRegisterDevice", { ProductKey = "a1Bob", Count = "1" })
                local _, d = as("bob_id2", "bob_secret2", "GET", "QueryPageByApplyId", { ApplyId = string.format("%d", r.Data.ApplyId) })
                assert.equal(1, d.Total)
                local state = e:state()
                assert.equal(2, state.products.a1Alice.devices)
                assert.equal("alice", state.applies[1].account)
                assert.equal("bob", state.applies[2].account)
            end)
        end)

        it("temporary credentials belong to the account that obtained them, with their token, until they expire", function()
            with({ accounts = ACCOUNTS, async_delay = 0 }, function(e)
                local _, r = as("alice_id", "alice_secret", "POST", "BatchRegisterDevice", { ProductKey = "a1Alice", Count = "1" })
                local alice_apply = string.format("%d", r.Data.ApplyId)
                local c = e:issue_credentials { account = "bob" }
                assert.matches("^STS%.", c.AccessKeyId)
                local st, d = as(c.AccessKeyId, c.AccessKeySecret, "POST", "BatchRegisterDevice", { ProductKey = "a1Bob", Count = "1" }, c.SecurityToken)
                assert.equal(200, st)
                local _, mine = as("bob_id", "bob_secret", "GET", "QueryPageByApplyId", { ApplyId = string.format("%d", d.Data.ApplyId) })
                assert.equal(1, mine.Total)
                _, d = as(c.AccessKeyId, c.AccessKeySecret, "GET", "QueryPageByApplyId", { ApplyId = alice_apply }, c.SecurityToken)
                assert.equal("iot.device.DeviceApplyIsNotFound", d.Code)
                _, d = as(c.AccessKeyId, c.AccessKeySecret, "GET", "QueryDevice", { ProductKey = "a1Bob" })
                assert.equal("InvalidSecurityToken.MismatchWithAccessKey", d.Code)
                _, d = as(c.AccessKeyId, c.AccessKeySecret, "GET", "QueryDevice", { ProductKey = "a1Bob" }, "other")
                assert.equal("InvalidSecurityToken.MismatchWithAccessKey", d.Code)
                local short = e:issue_credentials { account = "bob", expires_in = 1 }
                socket.sleep(2.1)
                _, d = as(short.AccessKeyId, short.AccessKeySecret, "GET", "QueryDevice", { ProductKey = "a1Bob" }, short.SecurityToken)
                assert.equal("InvalidSecurityToken.Expired", d.Code)
                assert.has_error(function() e:issue_credentials { account = "carol" } end)
            end)
        end)

        it("keep the plain access_keys form as one account and refuse ambiguous configurations", function()
            with({ access_keys = { one = "s1", two = "s2" }, async_delay = 0 }, function()
                local _, r = as("one", "s1", "POST", "BatchRegisterDevice", { ProductKey = PK, Count = "1" })
                local _, d = as("two", "s2", "GET", "QueryPageByApplyId", { ApplyId = string.format("%d", r.Data.ApplyId) })
                assert.equal(1, d.Total)
            end)
            assert.has_error(function() emulator.start { accounts = ACCOUNTS, access_keys = { x = "y" } } end)
            assert.has_error(function() emulator.start { accounts = ACCOUNTS, products = { "a1X" } } end)
            assert.has_error(function()
                emulator.start { accounts = { a = { access_keys = { k = "1" } }, b = { access_keys = { k = "2" } } } }
            end)
            assert.has_error(function()
                emulator.start { accounts = { a = { access_keys = { k = "1" }, products = { "p1" } },
                                              b = { access_keys = { j = "2" }, products = { "p1" } } } }
            end)
        end)
    end)
end)

describe("make emulator (tools/emulator.lua) #lua54only", function()
    local function dir_exists(path) return os.execute("test -d '" .. path .. "'") == true end

    it("stops on one SIGINT, exits 130 and leaves no folder", function()
        local p = io.popen("sh -c 'echo $$; EMULATOR_PORT=0 LUA_PATH=\"lua/?.lua;;\" exec lua5.4 tools/emulator.lua' 2>&1")
        local pid = p:read("*l")
        local prefix, port
        for line in p:lines() do
            port = port or line:match("endpoint:%s+http://127%.0%.0%.1:(%d+)/")
            prefix = prefix or line:match("folder:%s+(%S+)")
            if line:find("Ctrl-C", 1, true) then break end
        end
        assert.is_string(prefix)
        assert.is_true(dir_exists(prefix))
        os.execute("kill -INT " .. pid)
        local deadline = socket.gettime() + 15
        while os.execute("kill -0 " .. pid .. " 2>/dev/null") == true and socket.gettime() < deadline do socket.sleep(0.05) end
        local alive = os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
        if alive then os.execute("kill -9 " .. pid) end
        p:read("*a")
        local _, _, code = p:close()
        assert.is_false(alive)
        assert.equal(130, code)
        assert.is_false(dir_exists(prefix))
        local c = socket.tcp()
        c:settimeout(1)
        assert.is_nil(c:connect("127.0.0.1", tonumber(port)))
        c:close()
    end)

    it("refuses a bad knob with exit status 2", function()
        for _, env in ipairs { "EMULATOR_ASYNC_DELAY=abc", "EMULATOR_TLS=yes", "EMULATOR_INVALID_NAMES=later",
                               "EMULATOR_MAX_COUNT=0", "EMULATOR_QPS=2" } do
            local p = io.popen(env .. " EMULATOR_PORT=0 LUA_PATH='lua/?.lua;;' timeout 10 lua5.4 tools/emulator.lua 2>&1")
            local out = p:read("*a")
            local _, _, code = p:close()
            assert.equal(2, code, env .. ": " .. out)
            assert.matches("^emulator: ", out)
        end
    end)

    it("documents every knob it reads in README's emulator section", function()
        local f = assert(io.open("tools/emulator.lua"))
        local src = f:read("*a")
        f:close()
        f = assert(io.open("README.md"))
        local readme = f:read("*a"):match("\n## Testing your code offline: the emulator\n(.-)\n## ")
        f:close()
        local n = 0
        for name in src:gmatch('"(EMULATOR_[%u_]+)"') do
            n = n + 1
            assert.truthy(readme:find(name, 1, true), name .. " is not in README")
        end
        assert.is_true(n >= 8)
    end)
end)

-- Dynamic registration (POST /auth/register/device), signed here with the openssl command:
-- neither the client nor its core takes part.
describe("emulator dynamic registration", function()
    local PSECRET = "emuProductSecret42"
    local e

    local function openssl_hmac(alg, key, data)
        local p = assert(io.popen(("printf '%%s' '%s' | openssl dgst -%s -hmac '%s'"):format(data, alg, key)))
        local out = p:read("*a")
        p:close()
        return assert(out:match("(%x+)%s*$"), out)
    end

    local function register(name, o)
        o = o or {}
        local pk, random, method = o.pk or PK, o.random or "0123abcd", o.method or "hmacsha1"
        local alg = ({ hmacsha1 = "sha1", hmacsha256 = "sha256", hmacmd5 = "md5" })[method] or "sha1"
        local sign = o.sign or openssl_hmac(alg, o.secret or PSECRET, "deviceName" .. name .. "productKey" .. pk .. "random" .. random)
        local form = ("productKey=%s&deviceName=%s&random=%s&sign=%s&signMethod=%s"):format(pk, s.pct(name), random, sign, method)
        local status, body = s.http(e.endpoint .. "auth/register/device", "POST",
            { ["content-type"] = "application/x-www-form-urlencoded" }, form)
        assert.equal(200, status)
        return cjson.decode(body)
    end

    local function secret_of(name)
        local _, body = s.v1(e, "GET", s.params("QueryDeviceDetail", { ProductKey = PK, DeviceName = name }))
        return cjson.decode(body).Data.DeviceSecret
    end

    lazy_setup(function()
        e = emulator.start { products = { PK, "a1OtherPK01" }, product_secrets = { [PK] = PSECRET } }
    end)
    lazy_teardown(function() e:stop() end)
    before_each(function() e:reset() end)

    it("refuses product_secrets for products it does not have, and bad set_active calls", function()
        assert.has_error(function() emulator.start { product_secrets = { a1Unknown = "x" } } end)
        assert.has_error(function() emulator.start { product_secrets = { [PK] = "" } } end)
        assert.has_error(function() e:set_active { ProductKey = PK, DeviceName = "missing1" } end)
        assert.has_error(function() e:set_active { ProductKey = PK } end)
    end)

    it("registers an inactive device with every sign method, rotating its secret each time", function()
        s.v1(e, "POST", s.params("RegisterDevice", { ProductKey = PK, DeviceName = "dyn-0001" }))
        local seen = { [secret_of("dyn-0001")] = true }
        for _, method in ipairs { "hmacsha256", "hmacsha1", "hmacmd5" } do
            local doc = register("dyn-0001", { method = method })
            assert.equal(200, doc.code)
            assert.equal("success", doc.message)
            assert.same({ PK, "dyn-0001" }, { doc.data.productKey, doc.data.deviceName })
            assert.is_nil(seen[doc.data.deviceSecret])
            seen[doc.data.deviceSecret] = true
            assert.equal(doc.data.deviceSecret, secret_of("dyn-0001"))
        end
        -- an upper-case sign is the same sign
        local up = openssl_hmac("sha1", PSECRET, "deviceNamedyn-0001productKey" .. PK .. "random0123abcd"):upper()
        assert.equal(200, register("dyn-0001", { sign = up }).code)
        -- recorded without the sign or the secret
        local last = e:requests()[#e:requests()]
        assert.equal("/auth/register/device", last.action)
        assert.is_nil(last.params.sign)
        assert.equal("dyn-0001", last.params.deviceName)
    end)

    it("refuses what the platform refuses", function()
        s.v1(e, "POST", s.params("RegisterDevice", { ProductKey = PK, DeviceName = "dyn-0002" }))
        s.v1(e, "POST", s.params("RegisterDevice", { ProductKey = "a1OtherPK01", DeviceName = "dyn-0002" }))
        local before = secret_of("dyn-0002")
        assert.equal(6608, register("dyn-0002", { secret = "wrong" }).code)
        assert.equal(460, register("dyn-0002", { method = "hmacsha512", sign = "00" }).code)
        assert.equal(6205, register("dyn-none").code)
        assert.equal(6250, register("dyn-0002", { pk = "a1NoSuchPK1" }).code)
        assert.equal(6251, register("dyn-0002", { pk = "a1OtherPK01" }).code)
        assert.equal(before, secret_of("dyn-0002"))
        e:set_active { ProductKey = PK, DeviceName = "dyn-0002" }
        local _, body = s.v1(e, "GET", s.params("QueryDeviceDetail", { ProductKey = PK, DeviceName = "dyn-0002" }))
        assert.equal("ONLINE", cjson.decode(body).Data.Status)
        assert.equal(6289, register("dyn-0002").code)
        assert.equal(before, secret_of("dyn-0002"))
        e:set_active { ProductKey = PK, DeviceName = "dyn-0002", active = false }
        assert.equal(200, register("dyn-0002").code)
        local status, body2 = s.http(e.endpoint .. "auth/register/device", "GET")
        assert.equal(200, status)
        assert.equal(460, cjson.decode(body2).code)
    end)
end)
