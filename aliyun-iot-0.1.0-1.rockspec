rockspec_format = "3.0"
package = "aliyun-iot"
version = "0.1.0-1"
source = {
  url = "git+https://github.com/aliyun-iot/aliyun-iot.git",
  tag = "v0.1.0",
}
description = {
  summary = "Alibaba Cloud IoT Platform (2018-01-20) client: bulk device provisioning, with a local emulator",
  detailed = [[
A Lua client with a C core (signing, libcurl transport, decoding) for the Alibaba Cloud
IoT Platform device-registration API, batch provisioning helpers that run a whole
registration flow in one call, an `aliyun-iot` command, and a local emulator of the API
for offline tests.
]],
  license = "MIT",
  homepage = "https://github.com/aliyun-iot/aliyun-iot",
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
  "luasocket", -- the emulator's launcher (aliyun.iot.emulator); Debian: lua-socket
}
-- Debian puts curl's headers under the multiarch include folder, which LuaRocks' header
-- search does not look in; declaring curl by its library resolves it there too.
external_dependencies = {
  CURL = { library = "curl" },
  OPENSSL = { header = "openssl/evp.h" },
  EXPAT = { header = "expat.h" },
}
build = {
  type = "builtin",
  modules = {
    ["aliyun.iot.core"] = {
      sources = {
        "csrc/core.c",
        "csrc/decode.c",
        "csrc/encode.c",
        "csrc/fs.c",
        "csrc/http.c",
        "csrc/params.c",
        "csrc/sign.c",
        "csrc/clock.c",
        "csrc/mqtt.c",
        "csrc/mac.c",
      },
      defines = { "_POSIX_C_SOURCE=200809L", 'ALIYUN_IOT_VERSION="0.1.0"' },
      libraries = { "curl", "crypto", "expat", "pthread", "m" },
      incdirs = { "$(CURL_INCDIR)", "$(OPENSSL_INCDIR)", "$(EXPAT_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(OPENSSL_LIBDIR)", "$(EXPAT_LIBDIR)" },
    },
    ["aliyun.iot"] = "lua/aliyun/iot.lua",
    ["aliyun.iot.actions"] = "lua/aliyun/iot/actions.lua",
    ["aliyun.iot.batch"] = "lua/aliyun/iot/batch.lua",
    ["aliyun.iot.batch.answer"] = "lua/aliyun/iot/batch/answer.lua",
    ["aliyun.iot.batch.args"] = "lua/aliyun/iot/batch/args.lua",
    ["aliyun.iot.batch.devices"] = "lua/aliyun/iot/batch/devices.lua",
    ["aliyun.iot.batch.job"] = "lua/aliyun/iot/batch/job.lua",
    ["aliyun.iot.batch.named"] = "lua/aliyun/iot/batch/named.lua",
    ["aliyun.iot.batch.pages"] = "lua/aliyun/iot/batch/pages.lua",
    ["aliyun.iot.batch.port"] = "lua/aliyun/iot/batch/port.lua",
    ["aliyun.iot.batch.random"] = "lua/aliyun/iot/batch/random.lua",
    ["aliyun.iot.batch.resume"] = "lua/aliyun/iot/batch/resume.lua",
    ["aliyun.iot.batch.wait"] = "lua/aliyun/iot/batch/wait.lua",
    ["aliyun.iot.cli"] = "lua/aliyun/iot/cli.lua",
    ["aliyun.iot.cli.args"] = "lua/aliyun/iot/cli/args.lua",
    ["aliyun.iot.cli.commands"] = "lua/aliyun/iot/cli/commands.lua",
    ["aliyun.iot.cli.json"] = "lua/aliyun/iot/cli/json.lua",
    ["aliyun.iot.cli.names"] = "lua/aliyun/iot/cli/names.lua",
    ["aliyun.iot.cli.output"] = "lua/aliyun/iot/cli/output.lua",
    ["aliyun.iot.cli.progress"] = "lua/aliyun/iot/cli/progress.lua",
    ["aliyun.iot.cli.report"] = "lua/aliyun/iot/cli/report.lua",
    ["aliyun.iot.cli.state"] = "lua/aliyun/iot/cli/state.lua",
    ["aliyun.iot.client"] = "lua/aliyun/iot/client.lua",
    ["aliyun.iot.dates"] = "lua/aliyun/iot/dates.lua",
    ["aliyun.iot.device"] = "lua/aliyun/iot/device.lua",
    ["aliyun.iot.engine"] = "lua/aliyun/iot/engine.lua",
    ["aliyun.iot.fanout"] = "lua/aliyun/iot/fanout.lua",
    ["aliyun.iot.options"] = "lua/aliyun/iot/options.lua",
    ["aliyun.iot.request"] = "lua/aliyun/iot/request.lua",
    ["aliyun.iot.response"] = "lua/aliyun/iot/response.lua",
    ["aliyun.iot.retry"] = "lua/aliyun/iot/retry.lua",
    ["aliyun.iot.credentials"] = "lua/aliyun/iot/credentials.lua",
    ["aliyun.iot.emulator"] = "lua/aliyun/iot/emulator.lua",
    ["aliyun.iot.emulator.actions"] = "lua/aliyun/iot/emulator/actions.lua",
    ["aliyun.iot.emulator.knobs"] = "lua/aliyun/iot/emulator/knobs.lua",
    ["aliyun.iot.emulator.dynreg"] = "lua/aliyun/iot/emulator/dynreg.lua",
    ["aliyun.iot.emulator.literal"] = "lua/aliyun/iot/emulator/literal.lua",
    ["aliyun.iot.emulator.render"] = "lua/aliyun/iot/emulator/render.lua",
    ["aliyun.iot.emulator.server"] = "lua/aliyun/iot/emulator/server.lua",
    ["aliyun.iot.emulator.sign"] = "lua/aliyun/iot/emulator/sign.lua",
    ["aliyun.iot.errors"] = "lua/aliyun/iot/errors.lua",
    ["aliyun.iot.journal"] = "lua/aliyun/iot/journal.lua",
    ["aliyun.iot.pacer"] = "lua/aliyun/iot/pacer.lua",
    ["aliyun.iot.shape"] = "lua/aliyun/iot/shape.lua",
    ["aliyun.iot.transport.cosocket"] = "lua/aliyun/iot/transport/cosocket.lua",
    ["aliyun.iot.transport.curl"] = "lua/aliyun/iot/transport/curl.lua",
    ["aliyun.iot.validate"] = "lua/aliyun/iot/validate.lua",
  },
  install = {
    bin = { ["aliyun-iot"] = "bin/aliyun-iot" },
  },
}
