/*
 * Force-included by clang-tidy only (make lint), never by the build: Lua's headers do not
 * mark the error functions noreturn, so the static analyser follows paths past
 * luaL_error / luaL_argcheck that cannot happen (a longjmp leaves the function) and
 * reports NULL dereferences on them. Redeclaring them with the attribute tells it the truth.
 */
#include <lua.h>
#include <lauxlib.h>

LUA_API int(lua_error)(lua_State *L) __attribute__((noreturn));
LUALIB_API int(luaL_error)(lua_State *L, const char *fmt, ...) __attribute__((noreturn));
LUALIB_API int(luaL_argerror)(lua_State *L, int arg, const char *extramsg)
    __attribute__((noreturn));
#if LUA_VERSION_NUM >= 504
LUALIB_API int(luaL_typeerror)(lua_State *L, int arg, const char *tname)
    __attribute__((noreturn));
#endif
