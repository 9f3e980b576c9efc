/*
 * libFuzzer driver shared by the targets that go through the Lua API of the core (make
 * fuzz): one Lua 5.4 state with aliyun.iot.core preloaded; the Lua file named by HARNESS
 * returns a function that takes the input bytes as a string, calls the core and checks
 * what comes back. Any error escaping that function (an unexpected raise, a broken
 * property) aborts, which libFuzzer records as a crash; memory errors are ASan's.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#ifndef HARNESS
#error "compile with -DHARNESS='\"path/to/harness.lua\"'"
#endif

int luaopen_aliyun_iot_core(lua_State *L);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static int check_ref;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    L = luaL_newstate();
    if (L == NULL)
        abort();
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_aliyun_iot_core);
    lua_setfield(L, -2, "aliyun.iot.core");
    lua_pop(L, 1);
    if (luaL_dofile(L, HARNESS) != LUA_OK || !lua_isfunction(L, -1)) {
        fprintf(stderr, "harness %s: %s\n", HARNESS, lua_tostring(L, -1));
        abort();
    }
    check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "harness %s failed: %s\n", HARNESS, lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, 0);
    return 0;
}
