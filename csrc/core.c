/*
 * Entry point of the Lua module aliyun.iot.core. Each concern (encoding, flattening,
 * signing, clocks, transport, decoding, files, device signatures, SIGTERM) lives in its
 * own file and adds its functions here; the helper that registers userdata classes lives
 * here too.
 */
#include "core.h"

#ifndef ALIYUN_IOT_VERSION
#define ALIYUN_IOT_VERSION "0.1.0"
#endif

/* Registers a userdata class (luaossl's auxL_newclass); the contract is in core.h. */
void aliyun_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                     const luaL_Reg *metamethods)
{
    if (luaL_newmetatable(L, name)) {
        lua_pushstring(L, name);
        lua_setfield(L, -2, "__name");
        if (methods != NULL) {
            lua_newtable(L);
            luaL_setfuncs(L, methods, 0);
            lua_setfield(L, -2, "__index");
        }
        if (metamethods != NULL)
            luaL_setfuncs(L, metamethods, 0);
    }
    lua_pop(L, 1);
}

/*
 * require "aliyun.iot.core" -> module table
 * Fields: _VERSION (string), plus the functions listed in docs/ARCHITECTURE.md.
 * The only symbol core.so exports (the build hides the rest).
 */
ALIYUN_EXPORT int luaopen_aliyun_iot_core(lua_State *L)
{
    lua_newtable(L);
    lua_pushliteral(L, ALIYUN_IOT_VERSION);
    lua_setfield(L, -2, "_VERSION");
    aliyun_open_encode(L);
    aliyun_open_params(L);
    aliyun_open_sign(L);
    aliyun_open_clock(L);
    aliyun_open_http(L);
    aliyun_open_decode(L);
    aliyun_open_fs(L);
    aliyun_open_mqtt(L);
    aliyun_open_signal(L);
    aliyun_open_rpcreq(L);
    return 1;
}
