-- luacheck configuration (make lint). Lua code must run on 5.1-5.4 and LuaJIT, so the
-- standard library is the union of them ("max"); each folder adds only what it really has.
std = "max"
codes = true
-- Aim for 100 columns; lines up to 110 pass so that a call with its error message does not
-- have to be split mid-argument. Long literal strings (wire samples, signed strings) and
-- comments (LDoc blocks, doc-page URLs) may run to 120.
max_line_length = 110
max_string_line_length = 120
max_comment_line_length = 120
-- Methods keep `self` even when one implementation does not need it (Client:_now, ...).
self = false
ignore = {
  "581", -- `not (x > 0)` is written on purpose: unlike `x <= 0` it also rejects NaN
  "542", -- an empty branch that carries a comment documents a case ("-- no body")
}

-- Code that may run inside OpenResty (the client's cosocket transport, the pacer's shared
-- dict mode, the emulator's nginx handlers, the OpenResty example and its test app) reads
-- the `ngx` global.
files["lua/aliyun/iot.lua"] = { read_globals = { "ngx" } }
files["lua/aliyun/iot/pacer.lua"] = { read_globals = { "ngx" } }
files["lua/aliyun/iot/transport/cosocket.lua"] = { std = "max+ngx_lua" }
files["examples/"] = { std = "max+ngx_lua" }
files["spec/support/openresty_app.lua"] = { std = "max+ngx_lua" }

-- The emulator is written around long verification and fault tables at ~140 columns;
-- it is a test fixture, not library code, so it gets a wider limit rather than a rewrap.
files["lua/aliyun/iot/emulator.lua"] = { max_line_length = 150, max_string_line_length = 150 }
files["lua/aliyun/iot/emulator/"] = { std = "max+ngx_lua", max_line_length = 150,
                                      max_string_line_length = 150 }

-- busted's globals (describe, it, assert, spy, ...) in the specs, their helpers and the
-- examples' own specs; specs are tables of cases with long assertions, so 130 columns.
files["spec/"] = { std = "max+busted", max_line_length = 130, max_string_line_length = 130 }
files["examples/**/*_spec.lua"] = { std = "max+busted" }
files["examples/*_spec.lua"] = { std = "max+busted" }
files["spec/support/openresty_app.lua"] = { std = "max+ngx_lua" }
files["spec/emulator_spec.lua"] = { max_line_length = 170, max_string_line_length = 170 }
