/*
 * Entry point of the Lua module aliyun.iot.core. Each concern (encoding, flattening,
 * signing, transport, decoding) lives in its own file and adds its functions here.
 */
#include "core.h"

#ifndef ALIYUN_IOT_VERSION
#define ALIYUN_IOT_VERSION "0.1.0"
#endif

/*
 * require "aliyun.iot.core" -> module table
 * Fields: _VERSION (string), plus the functions listed in docs/ARCHITECTURE.md.
 */
int luaopen_aliyun_iot_core(lua_State *L)
{
    lua_newtable(L);
    lua_pushliteral(L, ALIYUN_IOT_VERSION);
    lua_setfield(L, -2, "_VERSION");
    aliyun_open_encode(L);
    aliyun_open_params(L);
    aliyun_open_sign(L);
    aliyun_open_http(L);
    aliyun_open_decode(L);
    aliyun_open_fs(L);
    return 1;
}
