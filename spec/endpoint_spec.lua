-- The endpoint from the region (issue 13): regional iot.<region>.aliyuncs.com, except the
-- regions the official IoT SDK's endpoint map sends to iot.aliyuncs.com; an endpoint
-- option always wins.
local iot = require "aliyun.iot"

describe("endpoint from the region", function()
  local function url(opts)
    opts.access_key_id, opts.access_key_secret = "id", "secret"
    return assert(iot.new(opts)).url
  end

  it("is regional, central for the map's regions, and the endpoint option wins", function()
    assert.are.equal("https://iot.cn-shanghai.aliyuncs.com/", url{region_id = "cn-shanghai"})
    assert.are.equal("https://iot.ap-southeast-1.aliyuncs.com/", url{region_id = "ap-southeast-1"})
    assert.are.equal("https://iot.aliyuncs.com/", url{region_id = "cn-qingdao"})
    assert.are.equal("https://iot.aliyuncs.com/", url{region_id = "eu-west-1"})
    assert.are.equal("http://127.0.0.1:1/", url{region_id = "cn-qingdao", endpoint = "http://127.0.0.1:1"})
  end)

  it("refuses a malformed region before anything is sent", function()
    local c, err = iot.new{region_id = "cn shanghai", access_key_id = "id", access_key_secret = "s"}
    assert.is_nil(c)
    assert.are.equal("InvalidParameter", err.code)
    assert.are.equal("region_id", err.parameter)
  end)
end)
