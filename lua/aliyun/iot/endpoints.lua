--- The IoT endpoint of a region, by the official rule (docs/wire.md §1 "Endpoint"):
-- `iot.<region>.aliyuncs.com`, except the regions the official IoT SDK's endpoint map
-- sends to the central `iot.aliyuncs.com` (alibabacloud-python-sdk
-- `iot-20180120/alibabacloud_iot20180120/client.py` @02ee396, `_endpoint_map`).
-- @module aliyun.iot.endpoints

local M = {}

--- Regions served by the central endpoint.
M.CENTRAL = {}
for r in ([[ap-northeast-2-pop ap-south-1 ap-southeast-2 ap-southeast-3 ap-southeast-5
  cn-beijing-finance-1 cn-beijing-finance-pop cn-beijing-gov-1 cn-beijing-nu16-b01 cn-chengdu
  cn-edge-1 cn-fujian cn-haidian-cm12-c01 cn-hangzhou-bj-b01 cn-hangzhou-finance
  cn-hangzhou-internal-prod-1 cn-hangzhou-internal-test-1 cn-hangzhou-internal-test-2
  cn-hangzhou-internal-test-3 cn-hangzhou-test-306 cn-hongkong cn-hongkong-finance-pop
  cn-huhehaote cn-huhehaote-nebula-1 cn-qingdao cn-qingdao-nebula cn-shanghai-et15-b01
  cn-shanghai-et2-b01 cn-shanghai-finance-1 cn-shanghai-inner cn-shanghai-internal-test-1
  cn-shenzhen-finance-1 cn-shenzhen-inner cn-shenzhen-st4-d01 cn-shenzhen-su18-b01 cn-wuhan
  cn-wulanchabu cn-yushanfang cn-zhangbei cn-zhangbei-na61-b01 cn-zhangjiakou
  cn-zhangjiakou-na62-a01 cn-zhengzhou-nebula-1 eu-west-1 eu-west-1-oxs me-east-1
  rus-west-1-pop]]):gmatch("%S+") do
  M.CENTRAL[r] = true
end

--- The endpoint URL for a region.
-- @tparam string region a region id (already checked: letters, digits, -)
-- @treturn string `https://iot.<region>.aliyuncs.com/` or `https://iot.aliyuncs.com/`
function M.for_region(region)
  if M.CENTRAL[region] then return "https://iot.aliyuncs.com/" end
  return ("https://iot.%s.aliyuncs.com/"):format(region)
end

return M
