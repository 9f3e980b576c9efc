-- Loads the signing test vectors of spec/vectors.json (published and captured values, each
-- with its source; docs/wire.md §2 and §3 state the rules they pin). The file is found next
-- to this module's own folder, so the specs need nothing outside the repository and work
-- from any current directory.
local cjson = require "cjson"

local here = debug.getinfo(1, "S").source:match("^@(.*)$") or ""
local spec_dir = here:match("^(.*)/support/[^/]*$") or "spec"
local path = spec_dir .. "/vectors.json"

local f, err = io.open(path, "rb")
if not f then error("spec/vectors.json cannot be read: " .. tostring(err)) end
local text = f:read("*a")
f:close()
return cjson.decode(text)
