/*
 * One place that papers over the Lua 5.1 / 5.2 / 5.3 / 5.4 / LuaJIT API differences the
 * core relies on. Everything else in csrc/ is written against the 5.4 API.
 */
#ifndef ALIYUN_IOT_COMPAT_H
#define ALIYUN_IOT_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
/* 5.1 and LuaJIT: no luaL_setfuncs, no luaL_newlib, no lua_rawlen. */
static inline void compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    luaL_checkstack(L, nup + 1, "too many upvalues");
    for (; l->name != NULL; l++) {
        int i;
        for (i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#define luaL_setfuncs(L, l, n) compat_setfuncs((L), (l), (n))
#ifndef luaL_newlib /* OpenResty's LuaJIT has them */
#define luaL_newlibtable(L, l) lua_createtable((L), 0, (int)(sizeof(l) / sizeof((l)[0]) - 1))
#define luaL_newlib(L, l) (luaL_newlibtable((L), (l)), luaL_setfuncs((L), (l), 0))
#endif
#define lua_rawlen(L, i) lua_objlen((L), (i))

static inline void *compat_testudata(lua_State *L, int i, const char *tname)
{
    void *p = lua_touserdata(L, i);
    if (p == NULL || !lua_getmetatable(L, i))
        return NULL;
    luaL_getmetatable(L, tname);
    if (!lua_rawequal(L, -1, -2))
        p = NULL;
    lua_pop(L, 2);
    return p;
}
#define luaL_testudata(L, i, t) compat_testudata((L), (i), (t))
#endif

#if LUA_VERSION_NUM < 503
/* No integer subtype before 5.3: integers travel as doubles (exact up to 2^53). */
#define COMPAT_HAS_INTEGERS 0
#define lua_isinteger(L, i) 0
#else
#define COMPAT_HAS_INTEGERS 1
#endif

#if LUA_VERSION_NUM < 504
/* lua_newuserdatauv appeared in 5.4; user values are not used by the core. */
#define lua_newuserdatauv(L, sz, nuv) lua_newuserdata((L), (sz))
#endif

#endif
