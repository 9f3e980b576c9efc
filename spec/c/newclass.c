/*
 * aliyun_newclass, the one way the core registers a userdata class (luaossl's
 * auxL_newclass): the registry metatable, __name, __index from the methods, each
 * metamethod as given, a second registration leaving the first alone, the stack as it
 * was. Linked against the core's objects, so the hidden symbol is reachable. Prints TAP.
 */
#include <stdio.h>
#include <string.h>

#include "../../csrc/core.h"

static int tests, failures;

static void ok(int cond, const char *what)
{
    tests++;
    if (!cond)
        failures++;
    printf("%sok %d - newclass: %s\n", cond ? "" : "not ", tests, what);
}

static int m_hello(lua_State *L)
{
    lua_pushliteral(L, "hello");
    return 1;
}

static int m_gc(lua_State *L)
{
    (void)L;
    return 0;
}

static int field_is(lua_State *L, const char *mt, const char *field, int type)
{
    int r;
    luaL_getmetatable(L, mt);
    lua_getfield(L, -1, field);
    r = lua_type(L, -1) == type;
    lua_pop(L, 2);
    return r;
}

int main(void)
{
    static const luaL_Reg methods[] = {{"hello", m_hello}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", m_gc}, {"__close", m_gc}, {NULL, NULL}};
    lua_State *L = luaL_newstate();
    int top = lua_gettop(L);

    aliyun_newclass(L, "test.Thing", methods, meta);
    ok(lua_gettop(L) == top, "leaves the stack as it found it");
    luaL_getmetatable(L, "test.Thing");
    lua_getfield(L, -1, "__name");
    ok(lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "test.Thing") == 0, "sets __name");
    lua_pop(L, 2);
    ok(field_is(L, "test.Thing", "__index", LUA_TTABLE), "__index is the methods table");
    luaL_getmetatable(L, "test.Thing");
    lua_getfield(L, -1, "__index");
    lua_getfield(L, -1, "hello");
    ok(lua_tocfunction(L, -1) == m_hello, "the methods are in __index");
    lua_pop(L, 3);
    ok(field_is(L, "test.Thing", "__gc", LUA_TFUNCTION), "sets __gc");
    ok(field_is(L, "test.Thing", "__close", LUA_TFUNCTION), "sets __close");

    aliyun_newclass(L, "test.Bare", NULL, NULL);
    ok(field_is(L, "test.Bare", "__name", LUA_TSTRING), "a class without methods has __name");
    ok(field_is(L, "test.Bare", "__index", LUA_TNIL), "and no __index");

    aliyun_newclass(L, "test.Thing", NULL, NULL);
    ok(field_is(L, "test.Thing", "__index", LUA_TTABLE), "a second registration keeps the first");
    ok(lua_gettop(L) == top, "the stack is still as it was");
    lua_close(L);
    return failures != 0;
}
