/*
 * What the files of csrc/ share with each other: each concern registers its functions
 * into the module table, userdata classes are made one way, signing reuses the
 * percent-encoder and the transport reads the monotonic clock. Everything here is hidden
 * from core.so's exports (-fvisibility=hidden); only luaopen_aliyun_iot_core is public.
 */
#ifndef ALIYUN_IOT_CORE_H
#define ALIYUN_IOT_CORE_H

#include <stddef.h>
#include "compat.h"

/*
 * Symbol visibility. core.so is loaded into processes with other C modules (OpenResty,
 * luaossl, lua-cjson): only its entry point is exported, so nothing here can collide with
 * or be interposed by another module's symbols. The Makefile builds with
 * -fvisibility=hidden; the attribute on every declaration below keeps them hidden in
 * builds that do not pass it (LuaRocks' builtin backend has no per-module CFLAGS).
 */
#if defined(__GNUC__) && __GNUC__ >= 4
#define ALIYUN_INTERNAL __attribute__((visibility("hidden")))
#define ALIYUN_EXPORT __attribute__((visibility("default")))
#else
#define ALIYUN_INTERNAL
#define ALIYUN_EXPORT
#endif

ALIYUN_EXPORT int luaopen_aliyun_iot_core(lua_State *L);

/* Registers the functions of one concern into the module table at the stack top. */
ALIYUN_INTERNAL void aliyun_open_encode(lua_State *L);
ALIYUN_INTERNAL void aliyun_open_params(lua_State *L);
ALIYUN_INTERNAL void aliyun_open_sign(lua_State *L);
ALIYUN_INTERNAL void aliyun_open_clock(lua_State *L);
ALIYUN_INTERNAL void aliyun_open_http(lua_State *L);
ALIYUN_INTERNAL void aliyun_open_decode(lua_State *L);
ALIYUN_INTERNAL void aliyun_open_fs(lua_State *L);
ALIYUN_INTERNAL void aliyun_open_mqtt(lua_State *L);
ALIYUN_INTERNAL void aliyun_open_signal(lua_State *L);
ALIYUN_INTERNAL void aliyun_open_rpcreq(lua_State *L);

/* Appends percent_encode(s[0..len)) to b (RFC 3986 unreserved kept, %XY upper-case). */
ALIYUN_INTERNAL void aliyun_add_encoded(luaL_Buffer *b, const char *s, size_t len);

/* Writes percent_encode(s[0..len)) at out, which has room for 3 * len bytes; returns the
   end. */
ALIYUN_INTERNAL char *aliyun_encode_to(char *out, const char *s, size_t len);

/* Writes percent_encode(s) at *once and percent_encode(percent_encode(s)) at *twice (room
   for 3 * len and 5 * len bytes) in one pass, advancing both. */
ALIYUN_INTERNAL void aliyun_encode_both(char **once, char **twice, const char *s, size_t len);

/*
 * Registers a userdata class, as luaossl's auxL_newclass does: a metatable named `name` in
 * the registry (luaL_newmetatable, so luaL_checkudata/luaL_testudata find it) with
 * __name = name (5.1 and LuaJIT do not set it themselves; error messages and tostring
 * use it), __index = a table of `methods` when methods is not NULL, and every entry of
 * `metamethods` (e.g. __gc, __close, __tostring; NULL for none) set as given. __close is
 * simply ignored before 5.4, so one list serves every interpreter. A class that exists
 * already is left as it is. Leaves the stack as it found it.
 *
 * Usage, once per class in the concern's aliyun_open_* function:
 *     static const luaL_Reg methods[] = {{"unlock", lock_release}, {NULL, NULL}};
 *     static const luaL_Reg meta[] = {{"__gc", lock_release}, {"__close", lock_release},
 *                                     {NULL, NULL}};
 *     aliyun_newclass(L, LOCK_MT, methods, meta);
 * then, when making an object: p = lua_newuserdatauv(L, sizeof *p, 0); (initialise *p
 * to "owns nothing") luaL_getmetatable(L, LOCK_MT); lua_setmetatable(L, -2); and only
 * then acquire the resource, so a memory error can never leak it.
 */
ALIYUN_INTERNAL void aliyun_newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                                     const luaL_Reg *metamethods);

/*
 * An HMAC context kept keyed between calls (mac.c): one per digest in each Lua state's
 * signing scratch. All zero means empty; aliyun_mac_free empties it (and wipes the key).
 */
struct aliyun_mac {
    void *ctx;  /* EVP_MAC_CTX (OpenSSL 3), NULL when empty */
    char *key;  /* a copy of the key, to recognise it */
    size_t klen;
};

/* HMAC-SHA1 (sha256 = 0) or HMAC-SHA256 of data keyed with part1 .. part2 (the key in two
   pieces, so that "secret&" needs no concatenation) into out (EVP_MAX_MD_SIZE bytes), with
   m's context when the key is the same as last time. Returns the MAC length, 0 on failure. */
ALIYUN_INTERNAL size_t aliyun_hmac(struct aliyun_mac *m, int sha256, const char *part1,
                                   size_t len1, const char *part2, size_t len2,
                                   const char *data, size_t dlen, unsigned char *out);
ALIYUN_INTERNAL void aliyun_mac_free(struct aliyun_mac *m);

/* The same MAC fed in pieces: begin (keys or re-initialises m as aliyun_hmac does), any
   number of updates, end (the MAC into out, EVP_MAX_MD_SIZE bytes). begin and update
   return 1 on success, end the MAC length; 0 on failure (m then needs a new begin). */
ALIYUN_INTERNAL int aliyun_hmac_begin(struct aliyun_mac *m, int sha256, const char *part1,
                                      size_t len1, const char *part2, size_t len2);
ALIYUN_INTERNAL int aliyun_hmac_update(struct aliyun_mac *m, const char *data, size_t len);
ALIYUN_INTERNAL size_t aliyun_hmac_end(struct aliyun_mac *m, unsigned char *out);

/* The request object of the RPC v1 POST path (rpcreq.c): when the value at idx is one
   that has been signed, its body (the signed form) and length; NULL otherwise. */
ALIYUN_INTERNAL const char *aliyun_rpcreq_body(lua_State *L, int idx, size_t *len);

/* How many leading bytes of s[0..len) percent-encoding keeps as they are. */
ALIYUN_INTERNAL size_t aliyun_unreserved_prefix(const char *s, size_t len);

/* params.c's check of a table's keys (index idx): n for a list 1..n with no hole, -1 for
   a record (string keys only), -2 for anything else. */
ALIYUN_INTERNAL lua_Integer aliyun_table_kind(lua_State *L, int idx);

/* Writes the decimal digits of i (a list index, 1 or more) at out; returns their count. */
ALIYUN_INTERNAL size_t aliyun_format_index(char *out, lua_Integer i);

/* Seconds of the monotonic clock: core.now(), and the clock of not_before values. */
ALIYUN_INTERNAL double aliyun_now(void);

/* How many SIGTERMs core.catch_term() caught (signal.c): a sleep during which it grows
   ends early. */
ALIYUN_INTERNAL int aliyun_term_count(void);

#endif
