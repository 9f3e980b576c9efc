/*
 * Force-included by clang-tidy only (make lint), never by the build. Two facts about Lua's
 * headers that clang-tidy gets wrong without help:
 * - they do not mark the error functions noreturn, so the static analyser follows paths
 *   past luaL_error / luaL_argcheck that cannot happen (a longjmp leaves the function) and
 *   reports NULL dereferences on them: redeclaring them with the attribute tells the truth;
 * - LUAL_BUFFERSIZE is (16 * sizeof(void*) * sizeof(lua_Number)), which
 *   bugprone-sizeof-expression reports as a suspicious sizeof product wherever our code
 *   uses it: the same value is given here through a constant computed in this header,
 *   which lies outside the checked files.
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

enum { LINT_LUAL_BUFFERSIZE = 16 * sizeof(void *) * sizeof(lua_Number) };
#undef LUAL_BUFFERSIZE
#define LUAL_BUFFERSIZE ((int)LINT_LUAL_BUFFERSIZE)
