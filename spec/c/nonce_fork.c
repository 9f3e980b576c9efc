/*
 * Nonces across fork(): nginx forks its workers after loading modules, so a parent and
 * its children must never draw the same SignatureNonce sequence. Debian ships no
 * lua-posix for 5.4, so this check embeds Lua and forks from C. Prints TAP lines.
 */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int luaopen_aliyun_iot_core(lua_State *L);

#define ROUNDS 64
#define CHILDREN 4

static void nonce(lua_State *L, char out[64])
{
    lua_getfield(L, -1, "nonce");
    lua_call(L, 0, 1);
    snprintf(out, 64, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
}

int main(void)
{
    lua_State *L = luaL_newstate();
    static char seen[(CHILDREN + 1) * ROUNDS][64];
    int fds[2], c, i, n = 0, dup = 0;
    char first[64];

    luaL_openlibs(L);
    luaopen_aliyun_iot_core(L);
    nonce(L, first); /* seed the parent's generator before forking, as nginx's master would */
    if (pipe(fds) != 0)
        return 1;
    for (c = 0; c < CHILDREN; c++) {
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            for (i = 0; i < ROUNDS; i++) {
                char v[64];
                nonce(L, v);
                if (write(fds[1], v, sizeof v) != (ssize_t)sizeof v)
                    _exit(1);
            }
            _exit(0);
        }
    }
    close(fds[1]);
    for (i = 0; i < ROUNDS; i++)
        nonce(L, seen[n++]);
    while (n < (CHILDREN + 1) * ROUNDS && read(fds[0], seen[n], 64) == 64)
        n++;
    while (wait(NULL) > 0)
        ;
    for (i = 0; i < n; i++) {
        int j;
        for (j = i + 1; j < n; j++)
            dup += strcmp(seen[i], seen[j]) == 0;
    }
    printf("%s 1 - %d nonces from a parent and %d forked children\n",
           n == (CHILDREN + 1) * ROUNDS ? "ok" : "not ok", n, CHILDREN);
    printf("%s 2 - no nonce repeats across fork() (%d duplicates)\n", dup == 0 ? "ok" : "not ok", dup);
    lua_close(L);
    return dup != 0;
}
