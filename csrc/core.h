/*
 * What the files of csrc/ share with each other: each concern registers its functions
 * into the module table, and signing reuses the percent-encoder.
 */
#ifndef ALIYUN_IOT_CORE_H
#define ALIYUN_IOT_CORE_H

#include <stddef.h>
#include "compat.h"

/* Registers the functions of one concern into the module table at the stack top. */
void aliyun_open_encode(lua_State *L);
void aliyun_open_params(lua_State *L);
void aliyun_open_sign(lua_State *L);
void aliyun_open_http(lua_State *L);
void aliyun_open_decode(lua_State *L);
void aliyun_open_fs(lua_State *L);

/* Appends percent_encode(s[0..len)) to b (RFC 3986 unreserved kept, %XY upper-case). */
void aliyun_add_encoded(luaL_Buffer *b, const char *s, size_t len);

/* Writes percent_encode(s[0..len)) at out, which has room for 3 * len bytes; returns the
   end. */
char *aliyun_encode_to(char *out, const char *s, size_t len);

/* Writes percent_encode(s) at *once and percent_encode(percent_encode(s)) at *twice (room
   for 3 * len and 5 * len bytes) in one pass, advancing both. */
void aliyun_encode_both(char **once, char **twice, const char *s, size_t len);

/* Seconds of the monotonic clock: core.now(), and the clock of not_before values. */
double aliyun_now(void);

#endif
