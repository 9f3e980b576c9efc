/*
 * The request object of the RPC v1 path (issue 16): core.rpc_request(params) reads an
 * action's parameters once, straight from the nested table (no flat Lua table), and keeps
 * them in C, sorted, in the two forms signing needs: the canonical query ("k=v&" per
 * parameter, the form body) and the string to sign's form ("k%3Dv%26", each byte the
 * query encodes as %XY written %25XY). Each attempt then signs with its common parameters
 * (nonce, timestamp, key...) merged in: the body is a few memcpy of the query form, the
 * HMAC-SHA1 is fed the string-to-sign form in as many pieces, and the string to sign
 * itself is made only when asked for (to explain a SignatureDoesNotMatch). libcurl sends
 * the body from the object's buffer (http.c), never a Lua string.
 *
 * Bytes are those of core.flatten + core.sign_rpc, which spec/rpcreq_spec.lua checks on
 * random tables. Flat names come out in byte order without a sort: a list's entries
 * Name.1 .. Name.n in the order of their decimal strings (1, 10, 100, 11, ...), a table's
 * keys by their flat prefix ("Key." for a nested value, "Key" for a scalar). Only a key
 * that starts with a sibling's "Key." (a top-level "DeviceName.1" beside a DeviceName
 * list) could interleave with that sibling's names: then everything is sorted whole.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "core.h"

#define RPCREQ_MT "aliyun.iot.core.RpcRequest"
#define MACS_MT "aliyun.iot.core.RpcShared"
#define MAX_DEPTH 8
#define MAX_NAME 256
#define MAX_COMMON 64

/* One parameter: its "k=v&" in q and "k%3Dv%26" in t, its raw name at noff in names, or
   in q (at qoff) when the name needs no encoding (in_q). */
struct entry {
    size_t noff, nlen, qoff, qlen, toff, tlen;
    int in_q;
    const char *sort_name; /* the raw name, while sort_whole sorts */
};

/* An entry's raw name (nlen bytes). */
static const char *entry_name(const char *names, const char *q, const struct entry *e)
{
    return e->in_q ? q + e->qoff : names + e->noff;
}

/* A growable byte buffer. */
struct bytes {
    char *p;
    size_t len, cap;
};

/* A stretch of the signed request: body bytes q[0..qlen), string-to-sign bytes t[0..tlen). */
struct piece {
    const char *q, *t;
    size_t qlen, tlen;
};

/* A key of a table being walked, with its flat prefix's length ("Key." or "Key"). */
struct key {
    const char *k;
    size_t klen, plen;
};

struct rpcreq {
    struct bytes names, q, t;  /* the request's own parameters, sorted */
    struct key *keys;          /* while building: a stack of the tables' keys being walked */
    size_t kcap;
    struct entry *es;
    size_t n, ecap;
    /* the last signature: body, the common parameters' forms, the pieces in order */
    struct bytes body, common;
    struct piece *pieces;
    size_t npieces, pcap;
    char method[17];
    size_t mlen;
    int is_signed, closed;
};

/* ---- buffers ------------------------------------------------------------------------ */

static void *grow_array(lua_State *L, void *p, size_t *cap, size_t need, size_t size)
{
    size_t n = *cap < 16 ? 16 : *cap;
    if (need <= *cap)
        return p;
    while (n < need) {
        if (n > ((size_t)-1) / 4 / size)
            luaL_error(L, "request too large");
        n *= 2;
    }
    p = realloc(p, n * size);
    if (p == NULL)
        luaL_error(L, "not enough memory");
    *cap = n;
    return p;
}

static char *grow_bytes(lua_State *L, struct bytes *b, size_t more)
{
    if (more > ((size_t)-1) / 8 - b->len)
        luaL_error(L, "request too large");
    b->p = (char *)grow_array(L, b->p, &b->cap, b->len + more < 4096 ? 4096 : b->len + more, 1);
    return b->p + b->len;
}

/* Room for `more` bytes at the end of b; returns where they go. */
static char *room(lua_State *L, struct bytes *b, size_t more)
{
    if (more <= b->cap - b->len && b->p != NULL) /* never NULL: memcpy's target */
        return b->p + b->len;
    return grow_bytes(L, b, more);
}

static void bytes_free(struct bytes *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Writes encode(s) at *q and encode(encode(s)) at *t (room for 3 and 5 times len),
   advancing both; clean: s is known to need no encoding. */
static void write_both(char **q, char **t, const char *s, size_t len, int clean)
{
    if (clean) {
        memcpy(*q, s, len);
        memcpy(*t, s, len);
        *q += len;
        *t += len;
        return;
    }
    aliyun_encode_both(q, t, s, len);
}

static void put_raw(lua_State *L, struct bytes *b, const char *s, size_t len)
{
    memcpy(room(L, b, len), s, len);
    b->len += len;
}

/*
 * A value's text as signed: strings as they are, integers and integral floats in decimal,
 * booleans true/false. NULL for a number that is no integer the API can take (*why says
 * how, as validate.integer_string words it). num holds a number's digits.
 */
static const char *value_text(lua_State *L, int idx, char *num, size_t *len, const char **why)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        return lua_tolstring(L, idx, len);
    case LUA_TBOOLEAN:
        *len = lua_toboolean(L, idx) ? 4 : 5;
        return lua_toboolean(L, idx) ? "true" : "false";
    default: {
#if COMPAT_HAS_INTEGERS
        if (lua_isinteger(L, idx)) {
            *len = (size_t)snprintf(num, 32, "%lld", (long long)lua_tointeger(L, idx));
            return num;
        }
#endif
        lua_Number v = lua_tonumber(L, idx);
        if (!isfinite(v) || v != floor(v)) {
            *why = "must be an integer";
            return NULL;
        }
        if (fabs(v) >= 9223372036854775808.0) {
            *why = "is out of range";
            return NULL;
        }
        *len = (size_t)snprintf(num, 32, "%.0f", (double)v);
        return num;
    }
    }
}

/* ---- building ----------------------------------------------------------------------- */

struct builder {
    lua_State *L;
    struct rpcreq *r;
    char name[MAX_NAME];
    const char *message, *kind; /* the first problem found */
    char errname[MAX_NAME];
    int unsorted;               /* a key may interleave with a sibling's names */
    size_t clean_len;           /* name[0..clean_len) is known to need no encoding */
    size_t nkeys;               /* on r->keys */
};

static int fail(struct builder *b, const char *message, const char *kind, size_t len)
{
    b->message = message;
    b->kind = kind;
    memcpy(b->errname, b->name, len);
    b->errname[len] = '\0';
    return 0;
}

/* Adds the scalar at the stack top as the parameter named b->name[0..len). */
static int add_entry(struct builder *b, size_t len)
{
    lua_State *L = b->L;
    struct rpcreq *r = b->r;
    struct entry *e;
    char num[32], *q, *t;
    const char *why = NULL, *v;
    size_t vlen = 0, known = b->clean_len < len ? b->clean_len : len;
    int clean = known == len ||
                aliyun_unreserved_prefix(b->name + known, len - known) == len - known;
    v = value_text(L, -1, num, &vlen, &why);
    if (v == NULL)
        return fail(b, why, "number", len);
    /* one reservation per entry: the worst case of both forms */
    if (r->n == r->ecap)
        r->es = (struct entry *)grow_array(L, r->es, &r->ecap, r->n + 1, sizeof *r->es);
    room(L, &r->q, 3 * (len + vlen) + 2);
    room(L, &r->t, 5 * (len + vlen) + 6);
    e = &r->es[r->n++];
    e->nlen = len;
    e->in_q = clean;
    if (!clean) {
        e->noff = r->names.len;
        put_raw(L, &r->names, b->name, len);
    }
    e->qoff = r->q.len;
    e->toff = r->t.len;
    q = r->q.p + r->q.len;
    t = r->t.p + r->t.len;
    write_both(&q, &t, b->name, len, clean);
    *q++ = '=';
    memcpy(t, "%3D", 3);
    t += 3;
    write_both(&q, &t, v, vlen, 0);
    *q++ = '&';
    memcpy(t, "%26", 3);
    t += 3;
    e->qlen = (size_t)(q - r->q.p) - e->qoff;
    e->tlen = (size_t)(t - r->t.p) - e->toff;
    r->q.len += e->qlen;
    r->t.len += e->tlen;
    return 1;
}

static int add_value(struct builder *b, size_t len, int depth);

/* Appends ".suffix" to the name and adds the value at the stack top under it. */
static int add_child(struct builder *b, size_t len, const char *suffix, size_t slen, int depth)
{
    if (len + 1 + slen >= MAX_NAME) {
        lua_pop(b->L, 1);
        return fail(b, "parameter name too long", NULL, len);
    }
    b->name[len] = '.';
    memcpy(b->name + len + 1, suffix, slen);
    return add_value(b, len + 1 + slen, depth + 1);
}

/* The list at tab (n entries): Name.i in the byte order of the decimal strings i. */
static int add_list(struct builder *b, int tab, size_t len, lua_Integer n, int depth)
{
    lua_Integer i = 1, k;
    size_t clean_before = b->clean_len, dlen = 1;
    struct rpcreq *r = b->r;
    char *digits = b->name + len + 1; /* i's decimal digits, kept as i moves */
    /* every entry's name is "Name." and digits: "Name." is checked once, here */
    if (aliyun_unreserved_prefix(b->name, len) == len)
        b->clean_len = len + 1;
    r->es = (struct entry *)grow_array(b->L, r->es, &r->ecap, r->n + (size_t)n, sizeof *r->es);
    b->name[len] = '.';
    digits[0] = '1';
    for (k = 0; k < n; k++) {
        if (len + 1 + dlen >= MAX_NAME)
            return fail(b, "parameter name too long", NULL, len);
        lua_rawgeti(b->L, tab, (int)i);
        if (lua_isnil(b->L, -1)) /* see list_length */
            return fail(b, "a list must have keys 1..n with no hole", NULL, len);
        if (b->clean_len == len + 1) /* digits need no encoding either */
            b->clean_len = len + 1 + dlen;
        if (!add_value(b, len + 1 + dlen, depth + 1))
            return 0;
        if (b->clean_len > len + 1)
            b->clean_len = len + 1;
        if (k + 1 == n)
            break;
        if (i * 10 <= n) { /* 1 -> 10: the next string in byte order */
            i *= 10;
            digits[dlen++] = '0';
        } else {           /* 19 -> 2, 10 -> 11 (n = 19) */
            while (i % 10 == 9 || i + 1 > n) {
                i /= 10;
                dlen--;
            }
            i++;
            digits[dlen - 1]++;
        }
    }
    b->clean_len = clean_before;
    return 1;
}

static int key_cmp(const void *x, const void *y)
{
    const struct key *a = (const struct key *)x, *b = (const struct key *)y;
    size_t n = a->plen < b->plen ? a->plen : b->plen;
    /* the prefix of a nested value is "Key.": compare as if its '.' were there */
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char ca = i < a->klen ? (unsigned char)a->k[i] : '.';
        unsigned char cb = i < b->klen ? (unsigned char)b->k[i] : '.';
        if (ca != cb)
            return ca < cb ? -1 : 1;
    }
    return (a->plen > b->plen) - (a->plen < b->plen);
}

/* Whether key b's flat names may fall among nested key a's: b starts with "a.". */
static int interleaves(const struct key *a, const struct key *b)
{
    return a->plen > a->klen && b->klen > a->klen && memcmp(a->k, b->k, a->klen) == 0 &&
           b->k[a->klen] == '.';
}

/* The keys of the table at tab onto the key stack, sorted by flat prefix; top: 1 for the
   top level (its names are the keys themselves). Returns how many. */
static size_t sorted_keys(struct builder *b, int tab, int top)
{
    lua_State *L = b->L;
    size_t base = b->nkeys, m, i;
    struct key *ks;
    lua_pushnil(L);
    while (lua_next(L, tab) != 0) {
        struct key *k;
        if (top && lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "parameter names must be strings");
        b->r->keys = (struct key *)grow_array(L, b->r->keys, &b->r->kcap, b->nkeys + 1,
                                             sizeof *b->r->keys);
        k = &b->r->keys[b->nkeys++];
        k->k = lua_tolstring(L, -2, &k->klen); /* table_kind saw only string keys */
        k->plen = k->klen + (lua_type(L, -1) == LUA_TTABLE);
        if (top && k->klen >= MAX_NAME)
            luaL_error(L, "parameter name too long");
        lua_pop(L, 1);
    }
    m = b->nkeys - base;
    ks = b->r->keys + base;
    if (m > 1)
        qsort(ks, m, sizeof *ks, key_cmp);
    for (i = 0; i + 1 < m; i++)
        if (interleaves(&ks[i], &ks[i + 1]))
            b->unsorted = 1;
    return m;
}

/* The record at tab (string keys), or the top-level table (top = 1). */
static int add_record(struct builder *b, int tab, size_t len, int depth, int top)
{
    lua_State *L = b->L;
    size_t base = b->nkeys, m = sorted_keys(b, tab, top), i;
    int ok = 1;
    for (i = 0; ok && i < m; i++) {
        const struct key *k = &b->r->keys[base + i];
        const char *kk = k->k;
        size_t klen = k->klen;
        lua_pushlstring(L, kk, klen);
        lua_rawget(L, tab);
        if (top) {
            memcpy(b->name, kk, klen);
            ok = add_value(b, klen, 0);
        } else {
            ok = add_child(b, len, kk, klen, depth);
        }
    }
    b->nkeys = base;
    return ok;
}

/*
 * aliyun_table_kind's answer, sooner for a list: with n = #t and n keys in all, the keys
 * are 1..n exactly unless one of t[1..n] is nil, which add_list sees as it reads them
 * (that table has other keys: the same "no hole" error). Counting keys costs less than
 * checking each one.
 */
static lua_Integer list_length(lua_State *L, int tab)
{
    size_t n = lua_rawlen(L, tab), count = 0;
    lua_pushnil(L);
    while (lua_next(L, tab) != 0) {
        lua_pop(L, 1);
        count++;
    }
    if (count == n && n <= 1000000000)
        return (lua_Integer)n;
    return aliyun_table_kind(L, tab);
}

/* Adds the value at the stack top (popping it) under b->name[0..len). */
static int add_value(struct builder *b, size_t len, int depth)
{
    lua_State *L = b->L;
    int t = lua_type(L, -1), ok, tab;
    lua_Integer n;
    if (t == LUA_TSTRING || t == LUA_TNUMBER || t == LUA_TBOOLEAN) {
        ok = add_entry(b, len);
        lua_pop(L, 1);
        return ok;
    }
    if (t != LUA_TTABLE) {
        lua_pop(L, 1);
        return fail(b, "value must be a string, number, boolean or list", NULL, len);
    }
    if (depth >= MAX_DEPTH) {
        lua_pop(L, 1);
        return fail(b, "lists nested too deeply", NULL, len);
    }
    luaL_checkstack(L, 6, "rpc_request");
    tab = lua_gettop(L);
    n = list_length(L, tab);
    if (n == -2)
        ok = fail(b, "a list must have keys 1..n with no hole", NULL, len);
    else if (n >= 0)
        ok = add_list(b, tab, len, n, depth);
    else
        ok = add_record(b, tab, len, depth, 0);
    lua_settop(L, tab - 1);
    return ok;
}

/* ---- the whole sort, for requests whose keys interleave ------------------------------ */

static int entry_cmp(const void *x, const void *y)
{
    const struct entry *a = (const struct entry *)x, *b = (const struct entry *)y;
    size_t n = a->nlen < b->nlen ? a->nlen : b->nlen;
    int c = memcmp(a->sort_name, b->sort_name, n);
    return c != 0 ? c : (a->nlen > b->nlen) - (a->nlen < b->nlen);
}

/* Sorts the entries by name and lays both forms out again in that order; 0 when two
   parameters have one name (core.flatten would keep one of them, by traversal order). */
static int sort_whole(struct builder *b)
{
    lua_State *L = b->L;
    struct rpcreq *r = b->r;
    struct bytes q = {NULL, 0, 0}, t = {NULL, 0, 0};
    size_t i;
    for (i = 0; i < r->n; i++)
        r->es[i].sort_name = entry_name(r->names.p, r->q.p, &r->es[i]);
    qsort(r->es, r->n, sizeof *r->es, entry_cmp);
    for (i = 0; i + 1 < r->n; i++) {
        if (entry_cmp(&r->es[i], &r->es[i + 1]) == 0) {
            size_t len = r->es[i].nlen;
            memcpy(b->name, entry_name(r->names.p, r->q.p, &r->es[i]), len);
            return fail(b, "parameter given twice (as a list entry and by its flat name)",
                        NULL, len);
        }
    }
    q.p = malloc(r->q.len + 1);
    t.p = malloc(r->t.len + 1);
    if (q.p == NULL || t.p == NULL) { /* both or neither: a raise must not leak one */
        free(q.p);
        free(t.p);
        return luaL_error(L, "not enough memory");
    }
    q.cap = r->q.len + 1;
    t.cap = r->t.len + 1;
    for (i = 0; i < r->n; i++) {
        struct entry *e = &r->es[i];
        memcpy(q.p + q.len, r->q.p + e->qoff, e->qlen);
        memcpy(t.p + t.len, r->t.p + e->toff, e->tlen);
        e->qoff = q.len;
        e->toff = t.len;
        q.len += e->qlen;
        t.len += e->tlen;
    }
    bytes_free(&r->q);
    bytes_free(&r->t);
    r->q = q;
    r->t = t;
    return 1;
}

static struct rpcreq *check_req(lua_State *L)
{
    struct rpcreq *r = (struct rpcreq *)luaL_checkudata(L, 1, RPCREQ_MT);
    if (r->closed)
        luaL_error(L, "attempt to use a closed " RPCREQ_MT);
    return r;
}

/*
 * What the objects of one Lua state share (the upvalue of their functions): the keyed
 * HMAC context (mac.c), and the buffers of the last closed object, which the next one
 * takes over: a call's object needs some 200 KiB, and fresh memory every call cost
 * reallocations as it grew and page faults (issue 16).
 */
struct shared {
    struct aliyun_mac mac;
    struct rpcreq spare;
    int has_spare, dead; /* dead: collected (lua_close finalises in any order) */
};

#define KEEP_SPARE ((size_t)1 << 20) /* larger buffers are freed, not kept */

static struct shared *get_shared(lua_State *L)
{
    return (struct shared *)lua_touserdata(L, lua_upvalueindex(1));
}

static void free_buffers(struct rpcreq *r)
{
    free(r->names.p);
    free(r->q.p);
    free(r->t.p);
    free(r->body.p);
    free(r->common.p);
    free(r->es);
    free(r->pieces);
    free(r->keys);
}

/* close(), __close, __gc: frees the object's memory, or leaves it for the next object. */
static int req_free(lua_State *L)
{
    struct rpcreq *r = (struct rpcreq *)luaL_checkudata(L, 1, RPCREQ_MT);
    struct shared *sh = get_shared(L);
    if (r->closed)
        return 0;
    /* the common parameters (a SecurityToken) are wiped, where they are; the request's
       own parameters hold no secret */
    if (r->body.p != NULL)
        OPENSSL_cleanse(r->body.p, r->body.len);
    if (r->common.p != NULL)
        OPENSSL_cleanse(r->common.p, r->common.len);
    if (!sh->dead && !sh->has_spare && r->q.cap <= KEEP_SPARE && r->t.cap <= KEEP_SPARE &&
        r->body.cap <= KEEP_SPARE && r->ecap * sizeof *r->es <= KEEP_SPARE) {
        sh->spare = *r;
        sh->has_spare = 1;
    } else {
        free_buffers(r);
    }
    memset(r, 0, sizeof *r);
    r->closed = 1;
    return 0;
}

/* Gives r the spare buffers, emptied. */
static void take_spare(struct shared *sh, struct rpcreq *r)
{
    if (!sh->has_spare)
        return;
    *r = sh->spare;
    sh->has_spare = 0;
    memset(&sh->spare, 0, sizeof sh->spare);
    r->names.len = r->q.len = r->t.len = r->body.len = r->common.len = 0;
    r->n = r->npieces = 0;
    r->closed = r->is_signed = 0;
}

static int shared_gc(lua_State *L)
{
    struct shared *sh = (struct shared *)luaL_checkudata(L, 1, MACS_MT);
    aliyun_mac_free(&sh->mac);
    if (sh->has_spare)
        free_buffers(&sh->spare);
    sh->has_spare = 0;
    sh->dead = 1;
    return 0;
}

/*
 * core.rpc_request(params) -> RpcRequest | nil, message, parameter, kind
 * params: the action's parameters as core.flatten takes them (name -> scalar, list or
 * record). The object holds them flattened, sorted and encoded; sign it with
 * RpcRequest:sign. Errors as core.flatten's (kind nil), plus a number that is no integer
 * (message "must be an integer" or "is out of range", kind "number"). Raises as
 * core.flatten does (a non-table, a non-string or too long top-level name).
 * Close it (close(), <close>) to free its memory at once; the collector does otherwise.
 */
static int l_rpc_request(lua_State *L)
{
    struct builder b;
    struct rpcreq *r;
    int ok;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    r = (struct rpcreq *)lua_newuserdatauv(L, sizeof *r, 0); /* 2 */
    memset(r, 0, sizeof *r);
    luaL_getmetatable(L, RPCREQ_MT);
    lua_setmetatable(L, -2);
    take_spare(get_shared(L), r);
    memset(&b, 0, sizeof b);
    b.L = L;
    b.r = r;
    ok = add_record(&b, 1, 0, 0, 1);
    free(r->keys); /* in the object until now, so that a raise cannot leak it */
    r->keys = NULL;
    r->kcap = 0;
    if (ok && b.unsorted)
        ok = sort_whole(&b);
    if (!ok) {
        lua_pushnil(L);
        lua_pushstring(L, b.message);
        lua_pushstring(L, b.errname);
        if (b.kind != NULL)
            lua_pushstring(L, b.kind);
        else
            lua_pushnil(L);
        return 4;
    }
    return 1;
}

/* ---- signing ------------------------------------------------------------------------ */

/* A common parameter of one signature: its raw name and where its forms are in common. */
struct common_param {
    const char *k;
    size_t klen, qoff, qlen, toff, tlen;
};

static int raw_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c != 0 ? c : (alen > blen) - (alen < blen);
}

/* Reads the common parameters (table at idx) into cs, their forms into r->common, sorted
   by name. Raises on a non-string name, a value that cannot be signed, too many. */
static size_t read_common(lua_State *L, int idx, struct rpcreq *r, struct common_param *cs)
{
    size_t m = 0, j;
    r->common.len = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        struct common_param *c;
        char num[32], *out;
        const char *why = NULL, *v;
        size_t vlen = 0;
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "parameter names must be strings");
        if (m == MAX_COMMON)
            luaL_error(L, "more than %d common parameters", MAX_COMMON);
        c = &cs[m++];
        c->k = lua_tolstring(L, -2, &c->klen);
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER &&
            lua_type(L, -1) != LUA_TBOOLEAN)
            luaL_error(L, "parameter '%s': %s value cannot be signed", c->k,
                       luaL_typename(L, -1));
        v = value_text(L, -1, num, &vlen, &why);
        if (v == NULL)
            luaL_error(L, "parameter '%s': number %s", c->k, why);
        c->qoff = r->common.len;
        room(L, &r->common, 3 * c->klen + 3 * vlen + 2);
        out = aliyun_encode_to(r->common.p + c->qoff, c->k, c->klen);
        *out++ = '=';
        out = aliyun_encode_to(out, v, vlen);
        *out++ = '&';
        r->common.len = (size_t)(out - r->common.p);
        c->qlen = r->common.len - c->qoff;
        /* the string to sign's form is the query form encoded once more */
        c->toff = r->common.len;
        room(L, &r->common, 3 * c->qlen);
        r->common.len = (size_t)(aliyun_encode_to(r->common.p + c->toff, r->common.p + c->qoff,
                                                  c->qlen) - r->common.p);
        c->tlen = r->common.len - c->toff;
        lua_pop(L, 1);
        for (j = m - 1; j > 0 && raw_cmp(cs[j - 1].k, cs[j - 1].klen, cs[j].k, cs[j].klen) > 0;
             j--) {
            struct common_param x = cs[j];
            cs[j] = cs[j - 1];
            cs[j - 1] = x;
        }
    }
    return m;
}

/* The first entry in [lo, n) whose name is not below k. */
static size_t lower_bound(const struct rpcreq *r, size_t lo, const char *k, size_t klen)
{
    size_t hi = r->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct entry *e = &r->es[mid];
        if (raw_cmp(entry_name(r->names.p, r->q.p, e), e->nlen, k, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void add_piece(lua_State *L, struct rpcreq *r, const char *q, size_t qlen, const char *t,
                      size_t tlen)
{
    struct piece *p;
    if (qlen == 0)
        return;
    r->pieces = (struct piece *)grow_array(L, r->pieces, &r->pcap, r->npieces + 1,
                                           sizeof *r->pieces);
    p = &r->pieces[r->npieces++];
    p->q = q;
    p->qlen = qlen;
    p->t = t;
    p->tlen = tlen;
}

/* The entries [a, b) as one piece (they are laid out in order). */
static void add_run(lua_State *L, struct rpcreq *r, size_t a, size_t b)
{
    const struct entry *x, *y;
    if (a >= b)
        return;
    x = &r->es[a];
    y = &r->es[b - 1];
    add_piece(L, r, r->q.p + x->qoff, y->qoff + y->qlen - x->qoff, r->t.p + x->toff,
              y->toff + y->tlen - x->toff);
}

/* Lays out the pieces of the request with the m sorted common parameters merged in; a
   common parameter replaces the request's own of the same name (as the v1 path's table
   assignment did). */
static void merge_pieces(lua_State *L, struct rpcreq *r, const struct common_param *cs, size_t m)
{
    size_t j = 0, i;
    r->npieces = 0;
    for (i = 0; i < m; i++) {
        size_t at = lower_bound(r, j, cs[i].k, cs[i].klen);
        add_run(L, r, j, at);
        add_piece(L, r, r->common.p + cs[i].qoff, cs[i].qlen, r->common.p + cs[i].toff,
                  cs[i].tlen);
        if (at < r->n && raw_cmp(entry_name(r->names.p, r->q.p, &r->es[at]), r->es[at].nlen, cs[i].k,
                                 cs[i].klen) == 0)
            at++;
        j = at;
    }
    add_run(L, r, j, r->n);
}

/*
 * RpcRequest:sign(method, common, access_key_secret) -> signature
 * Signs the request (RPC v1, HMAC-SHA1, as core.sign_rpc) with the flat table `common`
 * merged in (AccessKeyId, SignatureNonce, Timestamp, ...: scalars; one of the request's
 * own names is replaced). Afterwards the object holds the signed body, the canonical query
 * followed by "&Signature=<encoded signature>" (RpcRequest:body(), #req; the curl
 * transport sends it as it is). Every call signs anew (a new attempt).
 * signature: Base64, not yet URL-encoded. Raises on misuse, as sign_rpc does.
 */
static int l_sign(lua_State *L)
{
    struct rpcreq *r = check_req(L);
    size_t mlen, slen, m, i, need = 0;
    const char *method = luaL_checklstring(L, 2, &mlen);
    const char *secret;
    struct common_param cs[MAX_COMMON];
    struct aliyun_mac *mac = &get_shared(L)->mac;
    unsigned char md[EVP_MAX_MD_SIZE];
    char sig[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1], *out;
    size_t mdlen;
    int ok;

    luaL_argcheck(L, mlen >= 1 && mlen < sizeof r->method, 2, "invalid method");
    luaL_checktype(L, 3, LUA_TTABLE);
    secret = luaL_checklstring(L, 4, &slen);
    r->is_signed = 0;
    m = read_common(L, 3, r, cs);
    merge_pieces(L, r, cs, m);
    memcpy(r->method, method, mlen);
    r->mlen = mlen;

    for (i = 0; i < r->npieces; i++)
        need += r->pieces[i].qlen;
    r->body.len = 0;
    out = room(L, &r->body, need + sizeof "Signature=" + 3 * sizeof sig);
    ok = aliyun_hmac_begin(mac, 0, secret, slen, "&", 1) &&
         aliyun_hmac_update(mac, method, mlen) && aliyun_hmac_update(mac, "&%2F&", 5);
    for (i = 0; ok && i < r->npieces; i++) {
        const struct piece *p = &r->pieces[i];
        memcpy(out, p->q, p->qlen);
        out += p->qlen;
        /* the last "%26" separates nothing: the string to sign ends before it */
        ok = aliyun_hmac_update(mac, p->t, p->tlen - (i + 1 == r->npieces ? 3 : 0));
    }
    mdlen = ok ? aliyun_hmac_end(mac, md) : 0;
    if (mdlen == 0)
        return luaL_error(L, "HMAC-SHA1 failed");
    EVP_EncodeBlock((unsigned char *)sig, md, (int)mdlen);
    memcpy(out, "Signature=", 10);
    out = aliyun_encode_to(out + 10, sig, strlen(sig));
    r->body.len = (size_t)(out - r->body.p);
    r->is_signed = 1;
    lua_pushstring(L, sig);
    return 1;
}

static struct rpcreq *check_signed(lua_State *L)
{
    struct rpcreq *r = check_req(L);
    if (!r->is_signed)
        luaL_error(L, RPCREQ_MT " not signed yet");
    return r;
}

/* RpcRequest:body() -> the signed body (form body, or query of a GET) as a Lua string. */
static int l_body(lua_State *L)
{
    struct rpcreq *r = check_signed(L);
    lua_pushlstring(L, r->body.p, r->body.len);
    return 1;
}

/* RpcRequest:string_to_sign() -> the last signature's string to sign, made now. */
static int l_string_to_sign(lua_State *L)
{
    struct rpcreq *r = check_signed(L);
    luaL_Buffer b;
    size_t i;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, r->method, r->mlen);
    luaL_addlstring(&b, "&%2F&", 5);
    for (i = 0; i < r->npieces; i++)
        luaL_addlstring(&b, r->pieces[i].t, r->pieces[i].tlen - (i + 1 == r->npieces ? 3 : 0));
    luaL_pushresult(&b);
    return 1;
}

/* #req: the signed body's length in bytes (0 before the first signature). */
static int l_len(lua_State *L)
{
    struct rpcreq *r = check_req(L);
    lua_pushinteger(L, (lua_Integer)(r->is_signed ? r->body.len : 0));
    return 1;
}

/* Never the body: it carries the SecurityToken. */
static int l_tostring(lua_State *L)
{
    struct rpcreq *r = (struct rpcreq *)luaL_checkudata(L, 1, RPCREQ_MT);
    lua_pushfstring(L, RPCREQ_MT ": %p%s", (void *)r, r->closed ? " (closed)" : "");
    return 1;
}

const char *aliyun_rpcreq_body(lua_State *L, int idx, size_t *len)
{
    struct rpcreq *r = (struct rpcreq *)luaL_testudata(L, idx, RPCREQ_MT);
    if (r == NULL || r->closed || !r->is_signed)
        return NULL;
    *len = r->body.len;
    return r->body.p;
}

void aliyun_open_rpcreq(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"sign", l_sign},
        {"body", l_body},
        {"string_to_sign", l_string_to_sign},
        {"close", req_free},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__len", l_len},
        {"__tostring", l_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg shared_meta[] = {
        {"__gc", req_free},
        {"__close", req_free},
        {NULL, NULL},
    };
    static const luaL_Reg shared_gc_meta[] = {{"__gc", shared_gc}, {NULL, NULL}};
    struct shared *sh;
    aliyun_newclass(L, RPCREQ_MT, NULL, meta);
    aliyun_newclass(L, MACS_MT, NULL, shared_gc_meta);
    sh = (struct shared *)lua_newuserdatauv(L, sizeof *sh, 0);
    memset(sh, 0, sizeof *sh);
    luaL_getmetatable(L, MACS_MT);
    lua_setmetatable(L, -2);
    /* every function of the class has the shared state as its upvalue */
    luaL_getmetatable(L, RPCREQ_MT);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, shared_meta, 1);
    lua_newtable(L);
    lua_pushvalue(L, -3);
    luaL_setfuncs(L, methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_pushcclosure(L, l_rpc_request, 1);
    lua_setfield(L, -2, "rpc_request");
}
