/*
 * SIGTERM as an error, the way Lua's stand-alone interpreters (lua.c, luajit.c) turn
 * SIGINT into one: the handler only sets a hook, and the hook raises "terminated!" when
 * Lua code runs next, so the program unwinds through its own error handling (journal
 * closed, temporary output removed, the resume command printed) instead of dying where it
 * stood. `docker stop`, systemd and `kill` send SIGTERM; the CLI installs this, a library
 * user never gets it unasked.
 */
#include <signal.h>
#include <string.h>

#include "core.h"

/* The thread the hook goes on; NULL when not installed (or its state is closing). */
static lua_State *volatile term_state = NULL;
/* Counted by the handler, so that the sleep in progress ends early (core.sleep). */
static volatile sig_atomic_t term_count = 0;

#define TERM_GUARD "aliyun.iot.core.term_guard"

/* The registry's guard: the thread its state hooks. */
struct term_guard {
    lua_State *hooked;
};

int aliyun_term_count(void)
{
    return (int)term_count;
}

/* The hook: runs at the next call, return, line or instruction count; clears itself and
   raises, as lua.c's lstop does. */
static void term_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "terminated!");
}

/*
 * The handler. Async-signal-safe: it stores a sig_atomic_t and calls lua_sethook, which
 * Lua documents as callable from a signal handler (ldebug.c; lua.c and luajit.c do just
 * this). SA_RESETHAND restores the default action, so a second SIGTERM ends the process
 * at once, as a second Ctrl-C does under lua.c.
 */
static void on_term(int sig)
{
    lua_State *L = term_state;
    (void)sig;
    term_count = term_count + 1;
    if (L != NULL)
        lua_sethook(L, term_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

/* __gc of the registry guard, which holds the thread its state hooks: that state is
   closing, so the handler must not touch it (unless another state has taken over). */
static int term_release(lua_State *L)
{
    struct term_guard *g = (struct term_guard *)lua_touserdata(L, 1);
    if (g != NULL && g->hooked == term_state) {
        signal(SIGTERM, SIG_DFL);
        term_state = NULL;
    }
    return 0;
}

/* The thread to hook: the main one where the API names it (5.2+); on 5.1 and LuaJIT the
   caller's, which is the main one when called from a script's main chunk (the CLI). */
static lua_State *main_thread(lua_State *L)
{
#if LUA_VERSION_NUM >= 502
    lua_State *main;
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    main = lua_tothread(L, -1);
    lua_pop(L, 1);
    return main != NULL ? main : L;
#else
    return L;
#endif
}

/*
 * core.catch_term() -> true
 * From now on SIGTERM raises the error "terminated!" in the main Lua thread at its next
 * step (a C function in progress, such as a request, finishes first; core.sleep ends
 * early). Idempotent; undone when the Lua state closes. For programs (the CLI), not for
 * libraries: it takes over the process's SIGTERM.
 */
static int l_catch_term(lua_State *L)
{
    struct sigaction sa;
    lua_State *main = main_thread(L);
    lua_getfield(L, LUA_REGISTRYINDEX, TERM_GUARD);
    if (lua_isnil(L, -1)) {
        struct term_guard *g = (struct term_guard *)lua_newuserdata(L, sizeof(struct term_guard));
        g->hooked = main;
        lua_newtable(L);
        lua_pushcfunction(L, term_release);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, TERM_GUARD);
    }
    lua_pop(L, 1);
    term_state = main;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) != 0)
        return luaL_error(L, "cannot catch SIGTERM");
    lua_pushboolean(L, 1);
    return 1;
}

void aliyun_open_signal(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"catch_term", l_catch_term}, {NULL, NULL}};
    luaL_setfuncs(L, funcs, 0);
}
