-- Loads the signing test vectors from the shared reference at run time, so the specs check
-- the published and captured values themselves rather than a pasted copy.
local cjson = require "cjson"

local candidates = {
  os.getenv("ALIYUN_IOT_VECTORS") or "../shared/reference/vectors.json",
  "../shared/reference/vectors.json",
}

for _, path in ipairs(candidates) do
  local f = io.open(path, "rb")
  if f then
    local text = f:read("*a")
    f:close()
    return cjson.decode(text)
  end
end
error("vectors.json not found (set ALIYUN_IOT_VECTORS); looked in ../shared/reference")
