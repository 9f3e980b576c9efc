-- The libcurl transport against a real nginx on 127.0.0.1 (spec/support/http_server.lua).
local core = require "aliyun.iot.core"
local cjson = require "cjson"
local support = require "spec.support.http_server"

describe("core.session", function()
  local server, session

  lazy_setup(function()
    server = support.start()
    session = core.session()
  end)

  lazy_teardown(function()
    if session then session:close() end
    if server then server.stop() end
  end)

  local function echo(req)
    local res, err = session:perform(req)
    assert(res, err and err.message)
    assert.are.equal(200, res.status)
    return cjson.decode(res.body), res
  end

  describe("perform", function()
    it("sends a POST with its body and headers, and returns status, headers, body", function()
      local seen, res = echo{
        method = "POST", url = server.http .. "/echo?x=1",
        headers = { ["Content-Type"] = "application/x-www-form-urlencoded",
                    ["X-Acs-Action"] = "RegisterDevice", ["X-Count"] = 12 },
        body = "Action=RegisterDevice&Signature=abc%3D",
      }
      assert.are.equal("POST", seen.method)
      assert.are.equal("Action=RegisterDevice&Signature=abc%3D", seen.body)
      assert.are.equal("x=1", seen.args)
      assert.are.equal("RegisterDevice", seen.headers["x-acs-action"])
      assert.are.equal("12", seen.headers["x-count"])
      assert.are.equal("application/x-www-form-urlencoded", seen.headers["content-type"])
      assert.is_nil(seen.headers["expect"])
      assert.matches("^aliyun%-iot/[%d.]+ libcurl/[%d.]+ Lua/5%.%d", seen.headers["user-agent"])
      -- Response header names come back lower-case.
      assert.are.equal("Yes", res.headers["x-echo-mixed-case"])
      assert.are.equal("application/json", res.headers["content-type"])
      assert.is_nil(res.headers["X-Echo-Mixed-Case"])
    end)

    it("sends a GET after a POST on the same session as a GET without a body", function()
      local first = echo{ method = "POST", url = server.http .. "/echo", body = "a=1" }
      local seen = echo{ method = "GET", url = server.http .. "/echo?b=2" }
      assert.are.equal(first.connection, seen.connection) -- same handle, same connection
      assert.are.equal("GET", seen.method)
      assert.are.equal("", seen.body)
      assert.is_nil(seen.headers["content-length"])
      assert.is_nil(seen.headers["content-type"])
      assert.are.equal("b=2", seen.args)
      -- and a header of the previous request does not stick
      echo{ method = "POST", url = server.http .. "/echo", headers = { ["X-Once"] = "1" } }
      seen = echo{ url = server.http .. "/echo" }
      assert.is_nil(seen.headers["x-once"])
    end)

    it("sends an empty POST body and headers with empty values", function()
      local seen = echo{ method = "POST", url = server.http .. "/echo",
                         headers = { ["X-Empty"] = "" } }
      assert.are.equal("POST", seen.method)
      assert.are.equal("0", seen.headers["content-length"])
      assert.are.equal("", seen.headers["x-empty"])
    end)

    it("keeps the connection alive across calls; fresh_connect opens a new one", function()
      local a = echo{ url = server.http .. "/echo" }
      local b = echo{ method = "POST", url = server.http .. "/echo", body = "x" }
      assert.are.equal(a.connection, b.connection)
      local c = echo{ method = "POST", url = server.http .. "/echo", body = "x",
                      fresh_connect = true }
      assert.are_not.equal(b.connection, c.connection)
      local d = echo{ url = server.http .. "/echo" }
      assert.is_true(d.connection == b.connection or d.connection == c.connection)
    end)

    it("takes the user agent from the session options", function()
      local s = core.session{ user_agent = "custom/1.0" }
      local res = assert(s:perform{ url = server.http .. "/echo" })
      s:close()
      assert.are.equal("custom/1.0", cjson.decode(res.body).headers["user-agent"])
    end)

    it("returns HTTP error statuses as responses", function()
      local res = assert(session:perform{ url = server.http .. "/status?code=503" })
      assert.are.equal(503, res.status)
    end)

    it("fails a refused connection with ConnectFailed, not sent", function()
      local res, err = session:perform{ url = ("http://127.0.0.1:%d/"):format(support.free_port()) }
      assert.is_nil(res)
      assert.are.equal("ConnectFailed", err.code)
      assert.is_false(err.sent)
      assert.is_string(err.message)
    end)

    it("times out on a server that accepts and never answers, sent", function()
      local silent = support.silent_server()
      local t0 = core.now()
      local res, err = session:perform{ url = silent.url, method = "POST", body = "a=1",
                                         timeout = 0.5 }
      local elapsed = core.now() - t0
      silent.close()
      assert.is_nil(res)
      assert.are.equal("Timeout", err.code)
      assert.is_true(err.sent)
      assert.is_true(elapsed >= 0.45 and elapsed < 5, "elapsed " .. elapsed)
    end)

    it("times out on a slow answer", function()
      local res, err = session:perform{ url = server.http .. "/sleep?s=3", timeout = 0.3 }
      assert.is_nil(res)
      assert.are.equal("Timeout", err.code)
      assert.is_true(err.sent)
      -- the session is still usable afterwards
      echo{ url = server.http .. "/echo" }
    end)

    it("reports a connection closed without an answer as ConnectionReset, sent", function()
      local res, err = session:perform{ method = "POST", url = server.http .. "/drop", body = "a" }
      assert.is_nil(res)
      assert.are.equal("ConnectionReset", err.code)
      assert.is_true(err.sent)
      res, err = session:perform{ url = server.http .. "/truncate" }
      assert.is_nil(res)
      assert.are.equal("ConnectionReset", err.code)
      assert.is_true(err.sent)
    end)

    it("sends a request once on a fresh connection, where a reused one may be re-sent", function()
      -- The server acts, then drops the connection without answering. On a reused
      -- keep-alive connection libcurl takes that for a stale connection and silently
      -- sends the request again; fresh_connect is what keeps non-idempotent calls single.
      local function hits(key)
        return assert(session:perform{ url = server.http .. "/hits?key=" .. key }).body
      end
      echo{ url = server.http .. "/echo" } -- a kept-alive connection to reuse
      local res, err = session:perform{ method = "POST", url = server.http ..
        "/act_then_drop?key=fresh", body = "a=1", fresh_connect = true }
      assert.is_nil(res)
      assert.are.equal("ConnectionReset", err.code)
      assert.is_true(err.sent)
      assert.are.equal("1", hits("fresh"))
      echo{ url = server.http .. "/echo" }
      session:perform{ method = "POST", url = server.http .. "/act_then_drop?key=reused",
                       body = "a=1" }
      -- libcurl 7.88's behaviour, the reason for fresh_connect (see csrc/http.c)
      assert.are.equal("2", hits("reused"), "libcurl no longer re-sends on a reused connection")
    end)

    it("caps the response size (streamed and announced)", function()
      local res = assert(session:perform{ url = server.http .. "/big?n=40000",
                                          max_response_size = 50000 })
      assert.are.equal(40000, #res.body)
      local err
      res, err = session:perform{ url = server.http .. "/big?n=3000000", max_response_size = 50000 }
      assert.is_nil(res)
      assert.are.equal("ResponseTooLarge", err.code)
      assert.matches("50000", err.message)
      res, err = session:perform{ url = server.http .. "/big?n=3000000&cl=1",
                                  max_response_size = 50000 }
      assert.is_nil(res)
      assert.are.equal("ResponseTooLarge", err.code)
      -- the default cap (16 MiB) lets 2 MB through
      res = assert(session:perform{ url = server.http .. "/big?n=2000000" })
      assert.are.equal(2000000, #res.body)
    end)

    it("verifies TLS peers: a self-signed server fails unless its CA is given", function()
      local res, err = session:perform{ url = server.https .. "/echo" }
      assert.is_nil(res)
      assert.are.equal("TLSError", err.code)
      assert.is_false(err.sent)
      res = assert(session:perform{ url = server.https .. "/echo", ca_file = server.ca_file })
      assert.are.equal(200, res.status)
      assert.are.equal("GET", cjson.decode(res.body).method)
    end)

    it("fails a missing CA file with TLSError naming the path, before connecting", function()
      local silent = support.silent_server() -- would time out if anything were attempted
      local res, err = session:perform{ url = silent.url, ca_file = "/nonexistent/ca.pem",
                                         timeout = 5 }
      silent.close()
      assert.is_nil(res)
      assert.are.equal("TLSError", err.code)
      assert.matches("/nonexistent/ca.pem", err.message, 1, true)
      assert.is_false(err.sent)
    end)

    it("raises on malformed requests", function()
      local url = server.http .. "/echo"
      local bad = {
        { url = url, headers = { ["X-A"] = "1\r\nX-Injected: 1" } },
        { url = url, headers = { ["X-A\n"] = "1" } },
        { url = url, headers = { ["X A"] = "1" } },
        { url = url, headers = { ["X-A"] = true } },
        { url = url, headers = { "positional" } },
        { url = url, headers = "X-A: 1" },
        { url = url .. "\r\nX: y" },
        { url = 42 },
        {},
        { url = url, method = "get" },
        { url = url, method = "GET", body = "a=1" },
        { url = url, timeout = 0 },
        { url = url, timeout = -1 },
        { url = url, timeout = "5" },
        { url = url, connect_timeout = 0 / 0 },
        { url = url, max_response_size = 0 },
        { url = url, fresh_connect = "yes" },
        { url = url, body = {} },
      }
      for i, req in ipairs(bad) do
        assert.has_error(function() session:perform(req) end, nil, "case " .. i)
      end
      assert.has_error(function() session:perform("http://x/") end)
      assert.has_error(function() core.session{ user_agnet = "x" } end)
      assert.has_error(function() core.session{ user_agent = 1 } end)
      -- the session survives all that
      echo{ url = url }
    end)
  end)

  describe("perform_many", function()
    it("runs 50 requests with concurrency 8, results in request order", function()
      local reqs = {}
      for i = 1, 50 do
        reqs[i] = { method = i % 2 == 0 and "POST" or "GET",
                    url = server.http .. "/echo?i=" .. i,
                    body = i % 2 == 0 and ("n=" .. i) or nil }
      end
      -- A session of its own, so that its connection cache holds this batch's only.
      local s = core.session()
      local responses, errors = s:perform_many(reqs, 8)
      assert.is_nil(next(errors))
      local connections = {}
      for i = 1, 50 do
        local seen = cjson.decode(responses[i].body)
        assert.are.equal("i=" .. i, seen.args)
        assert.are.equal(i % 2 == 0 and "POST" or "GET", seen.method)
        assert.are.equal(i % 2 == 0 and ("n=" .. i) or "", seen.body)
        connections[seen.connection] = true
      end
      local n = 0
      for _ in pairs(connections) do n = n + 1 end
      assert.is_true(n >= 1 and n <= 8, "connections used: " .. n)
      -- a second batch reuses the kept-alive connections
      local again = s:perform_many(reqs, 8)
      for i = 1, 50 do
        assert.is_true(connections[cjson.decode(again[i].body).connection], "request " .. i)
      end
      -- and so does a single perform on the same session
      local seen = cjson.decode(assert(s:perform{ url = server.http .. "/echo" }).body)
      assert.is_true(connections[seen.connection])
      s:close()
    end)

    it("sets exactly one of responses[i], errors[i], with mixed failures", function()
      local silent = support.silent_server()
      local refused = ("http://127.0.0.1:%d/"):format(support.free_port())
      local reqs = {
        { url = server.http .. "/echo?i=1" },
        { url = refused },
        { url = server.http .. "/status?code=404" },
        { url = silent.url, timeout = 0.4 },
        { url = server.http .. "/big?n=100000", max_response_size = 1000 },
        { url = server.https .. "/echo" },
        { url = server.http .. "/echo?i=7", ca_file = "/nonexistent/ca.pem" },
        { url = server.http .. "/drop" },
        { url = server.https .. "/echo?i=9", ca_file = server.ca_file },
      }
      local responses, errors = session:perform_many(reqs, 3)
      silent.close()
      for i = 1, #reqs do
        assert.is_true((responses[i] == nil) ~= (errors[i] == nil), "request " .. i)
      end
      assert.are.equal("i=1", cjson.decode(responses[1].body).args)
      assert.are.equal("ConnectFailed", errors[2].code)
      assert.is_false(errors[2].sent)
      assert.are.equal(404, responses[3].status)
      assert.are.equal("Timeout", errors[4].code)
      assert.is_true(errors[4].sent)
      assert.are.equal("ResponseTooLarge", errors[5].code)
      assert.are.equal("TLSError", errors[6].code)
      assert.are.equal("TLSError", errors[7].code)
      assert.matches("/nonexistent/ca.pem", errors[7].message, 1, true)
      assert.are.equal("ConnectionReset", errors[8].code)
      assert.are.equal("i=9", cjson.decode(responses[9].body).args)
    end)

    it("starts no request before its not_before", function()
      local t0 = core.now()
      local reqs = {}
      for i = 1, 6 do
        reqs[i] = { url = server.http .. "/echo?i=" .. i, not_before = t0 + (i - 1) * 0.1 }
      end
      local responses, errors = session:perform_many(reqs, 6)
      local elapsed = core.now() - t0
      assert.is_nil(next(errors))
      assert.are.equal(6, #responses)
      assert.is_true(elapsed >= 0.5 and elapsed < 5, "elapsed " .. elapsed)
      -- The server saw each request no earlier than its slot (its own clock, relative
      -- to the first request; 20 ms slack for clock granularity).
      local first = cjson.decode(responses[1].body).now
      for i = 2, 6 do
        local at = cjson.decode(responses[i].body).now - first
        assert.is_true(at >= (i - 1) * 0.1 - 0.02, ("request %d at +%.3f s"):format(i, at))
      end
    end)

    it("accepts an empty list and checks its arguments", function()
      local responses, errors = session:perform_many({}, 4)
      assert.are.same({}, responses)
      assert.are.same({}, errors)
      assert.has_error(function() session:perform_many({}, 0) end)
      assert.has_error(function() session:perform_many(nil, 1) end)
      assert.has_error(function() session:perform_many({ { url = 1 } }, 1) end)
    end)
  end)

  describe("lifetime", function()
    it("closes idempotently and refuses use after close", function()
      local s = core.session()
      assert.matches("^aliyun%.iot%.core%.Session: ", tostring(s))
      assert(s:perform{ url = server.http .. "/echo" })
      s:close()
      s:close()
      assert.matches("closed", tostring(s))
      local ok, err = pcall(s.perform, s, { url = server.http .. "/echo" })
      assert.is_false(ok)
      assert.matches("closed", err)
      ok, err = pcall(s.perform_many, s, {}, 1)
      assert.is_false(ok)
      assert.matches("closed", err)
    end)

    it("is a to-be-closed value on Lua 5.4", function()
      if _VERSION ~= "Lua 5.4" then return end
      local chunk = assert(load([[
        local core = ...
        local kept
        do
          local s <close> = core.session()
          kept = s
        end
        return kept
      ]]))
      local s = chunk(core)
      assert.matches("closed", tostring(s))
      s:close()
    end)

    it("is collected without being closed", function()
      for _ = 1, 20 do
        local s = core.session()
        assert(s:perform{ url = server.http .. "/echo" })
      end
      collectgarbage()
      collectgarbage()
    end)
  end)
end)
