/*
 * Clocks and sleeping: the monotonic clock of deadlines and pacing (core.now, and
 * aliyun_now() for http.c's not_before values), the wall clock (core.time) and a sleep
 * that survives signals (core.sleep). Kept apart from signing, which only formats times.
 */
#include <errno.h>
#include <time.h>

#include "core.h"

static double clock_seconds(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double aliyun_now(void)
{
    return clock_seconds(CLOCK_MONOTONIC);
}

/* core.now() -> seconds of the monotonic clock (float); for intervals and deadlines. */
static int l_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)aliyun_now());
    return 1;
}

/* core.time() -> seconds since the epoch (float, wall clock). */
static int l_time(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)clock_seconds(CLOCK_REALTIME));
    return 1;
}

/*
 * core.sleep(seconds) blocks for that many seconds (fractions allowed; <= 0 returns).
 * A signal does not cut it short, except SIGTERM once core.catch_term() is on: the job
 * then stops without waiting out a poll's pause.
 */
static int l_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    struct timespec req, rem;
    int terms;
    if (!(s > 0))
        return 0;
    if (s > 1e6)
        return luaL_argerror(L, 1, "sleep too long");
    req.tv_sec = (time_t)s;
    req.tv_nsec = (long)((s - (lua_Number)req.tv_sec) * 1e9);
    /* only the SIGTERM that arrives during this sleep cuts it: a later sleep (should the
       error be caught and the program go on) waits in full, so pacing still holds */
    terms = aliyun_term_count();
    while (nanosleep(&req, &rem) != 0 && errno == EINTR && aliyun_term_count() == terms)
        req = rem;
    return 0;
}

void aliyun_open_clock(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"now", l_now},
        {"time", l_time},
        {"sleep", l_sleep},
        {NULL, NULL},
    };
    luaL_setfuncs(L, funcs, 0);
}
