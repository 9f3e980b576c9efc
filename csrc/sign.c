/*
 * Request signing (reference §2 and §3), hashes, nonces and clocks. OpenSSL does the
 * HMAC, SHA-256, Base64 and random bytes.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "core.h"

/* One request parameter as signed: name and value bytes (value possibly in num). */
struct param {
    const char *k;
    size_t klen;
    const char *v;
    size_t vlen;
    char num[32];
};

/* Byte order, never the locale's collation: signatures must not depend on LC_COLLATE. */
static int cmp_param(const void *a, const void *b)
{
    const struct param *x = *(const struct param *const *)a;
    const struct param *y = *(const struct param *const *)b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->k, y->k, n);
    if (c != 0)
        return c;
    return (x->klen > y->klen) - (x->klen < y->klen);
}

/*
 * Reads the value at the stack top into p as the API's string form: strings as they are,
 * integers (and floats with an integral value: 4415.0 signs as 4415) in decimal, booleans
 * as true/false. Anything else raises an error naming the parameter.
 */
static void param_value(lua_State *L, struct param *p)
{
    switch (lua_type(L, -1)) {
    case LUA_TSTRING:
        p->v = lua_tolstring(L, -1, &p->vlen);
        return;
    case LUA_TBOOLEAN:
        p->v = lua_toboolean(L, -1) ? "true" : "false";
        p->vlen = strlen(p->v);
        return;
    case LUA_TNUMBER:
#if COMPAT_HAS_INTEGERS
        if (lua_isinteger(L, -1)) {
            p->vlen = (size_t)snprintf(p->num, sizeof p->num, "%lld",
                                       (long long)lua_tointeger(L, -1));
            p->v = p->num;
            return;
        }
#endif
        {
            lua_Number n = lua_tonumber(L, -1);
            if (isfinite(n) && n == floor(n) && fabs(n) < 1e300) {
                p->vlen = (size_t)snprintf(p->num, sizeof p->num, "%.0f", (double)n);
                if (p->vlen < sizeof p->num) {
                    p->v = p->num;
                    return;
                }
            }
            luaL_error(L, "parameter '%s': number %f is not an integer", p->k, (double)n);
            return;
        }
    default:
        luaL_error(L, "parameter '%s': %s value cannot be signed", p->k,
                   luaL_typename(L, -1));
    }
}

/*
 * Collects the flat parameter table at idx into a sorted array of pointers (allocated as
 * userdata, so an error anywhere leaves nothing to free). Leaves the userdata on the stack.
 */
static struct param **collect_params(lua_State *L, int idx, size_t *count)
{
    size_t n = 0, i = 0;
    struct param *ps;
    struct param **sorted;

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        n++;
    }
    ps = (struct param *)lua_newuserdatauv(L, n * (sizeof *ps + sizeof(struct param *)) + 1, 0);
    sorted = (struct param **)(void *)(ps + n);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        struct param *p = &ps[i];
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "parameter names must be strings (got %s)", luaL_typename(L, -2));
        p->k = lua_tolstring(L, -2, &p->klen);
        param_value(L, p);
        sorted[i] = p;
        i++;
        lua_pop(L, 1);
    }
    qsort(sorted, n, sizeof(struct param *), cmp_param);
    *count = n;
    return sorted;
}

/* Pushes the canonicalized query string: encoded k=v pairs in byte order, joined by &. */
static void push_canonical(lua_State *L, struct param **sorted, size_t n)
{
    luaL_Buffer b;
    size_t i;

    luaL_buffinit(L, &b);
    for (i = 0; i < n; i++) {
        if (i > 0)
            luaL_addchar(&b, '&');
        aliyun_add_encoded(&b, sorted[i]->k, sorted[i]->klen);
        luaL_addchar(&b, '=');
        aliyun_add_encoded(&b, sorted[i]->v, sorted[i]->vlen);
    }
    luaL_pushresult(&b);
}

static void push_base64(lua_State *L, const unsigned char *data, size_t len)
{
    char out[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
    int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    lua_pushlstring(L, out, (size_t)n);
}

static void push_hex(lua_State *L, const unsigned char *data, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    char out[2 * EVP_MAX_MD_SIZE];
    size_t i;
    for (i = 0; i < len; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    lua_pushlstring(L, out, 2 * len);
}

static size_t hmac(const EVP_MD *md, const char *key, size_t klen, const char *data,
                   size_t dlen, unsigned char *out)
{
    unsigned int n = 0;
    if (HMAC(md, key, (int)klen, (const unsigned char *)data, dlen, out, &n) == NULL)
        return 0;
    return n;
}

static size_t sha256(const char *data, size_t len, unsigned char *out)
{
    unsigned int n = 0;
    if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL))
        return 0;
    return n;
}

/*
 * core.sign_rpc(method, params, access_key_secret)
 *   -> signature, string_to_sign, canonical_query
 * RPC signature, SignatureMethod HMAC-SHA1, SignatureVersion 1.0 (reference §2):
 * method: the HTTP method actually sent ("GET", "POST"; signed as given).
 * params: flat table name -> string | integer | integral float | boolean, every request
 *   parameter except Signature (flatten lists first with core.flatten).
 * signature: Base64(HMAC-SHA1(secret .. "&", string_to_sign)), not yet URL-encoded.
 * canonical_query: the encoded, sorted k=v pairs; also usable as the query or form body.
 * Raises on a non-string name, a non-integral number, or a value of another type.
 */
static int l_sign_rpc(lua_State *L)
{
    size_t mlen, slen, n, clen;
    const char *method = luaL_checklstring(L, 1, &mlen);
    const char *secret;
    const char *canonical;
    struct param **sorted;
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen;
    luaL_Buffer b;

    luaL_checktype(L, 2, LUA_TTABLE);
    secret = luaL_checklstring(L, 3, &slen);
    lua_settop(L, 3);
    sorted = collect_params(L, 2, &n);                        /* 4: scratch */
    push_canonical(L, sorted, n);                             /* 5: canonical */
    canonical = lua_tolstring(L, 5, &clen);

    luaL_buffinit(L, &b);                                     /* string to sign */
    luaL_addlstring(&b, method, mlen);
    luaL_addstring(&b, "&%2F&");
    aliyun_add_encoded(&b, canonical, clen);
    luaL_pushresult(&b);                                      /* 6 */

    lua_pushlstring(L, secret, slen);                         /* 7: key = secret .. "&" */
    lua_pushliteral(L, "&");
    lua_concat(L, 2);
    {
        size_t klen, tlen;
        const char *key = lua_tolstring(L, 7, &klen);
        const char *sts = lua_tolstring(L, 6, &tlen);
        maclen = hmac(EVP_sha1(), key, klen, sts, tlen, mac);
    }
    if (maclen == 0)
        return luaL_error(L, "HMAC-SHA1 failed");
    push_base64(L, mac, maclen);                              /* 8 */
    lua_pushvalue(L, 6);
    lua_pushvalue(L, 5);
    return 3;
}

/* Pushes the canonical query for ACS3: same encoding and order as RPC v1. */
static void push_acs3_query(lua_State *L, int idx)
{
    size_t n;
    struct param **sorted;

    if (lua_isnoneornil(L, idx)) {
        lua_pushliteral(L, "");
        return;
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    sorted = collect_params(L, idx, &n);
    push_canonical(L, sorted, n);
    lua_remove(L, -2);
}

static const char *opt_field(lua_State *L, int t, const char *name, size_t *len)
{
    const char *s;
    lua_getfield(L, t, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "sign_acs3: field '%s' must be a string", name);
    s = lua_tolstring(L, -1, len);
    lua_pop(L, 1); /* still referenced by the argument table */
    return s;
}

static int signed_header(const char *name)
{
    return strncmp(name, "x-acs-", 6) == 0 || strcmp(name, "host") == 0 ||
           strcmp(name, "content-type") == 0;
}

/* A header line being canonicalised: lower-case name and one trimmed value. */
struct header {
    char *name;
    const char *v;
    size_t vlen;
};

static int cmp_header(const void *a, const void *b)
{
    const struct header *x = (const struct header *)a;
    const struct header *y = (const struct header *)b;
    int c = strcmp(x->name, y->name);
    size_t n;
    if (c != 0)
        return c;
    n = x->vlen < y->vlen ? x->vlen : y->vlen;
    c = memcmp(x->v, y->v, n);
    return c != 0 ? c : (x->vlen > y->vlen) - (x->vlen < y->vlen);
}

static void trim(const char **s, size_t *len)
{
    while (*len > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
}

/*
 * Gathers the signed headers of the table at idx (plus x-acs-content-sha256 when given) as
 * lower-cased name/value lines, sorted by name then value: OAU folds headers whose names
 * differ only in case, and list values, into one "a,b" value with the values sorted.
 * Storage is userdata left on the stack. Returns the number of lines.
 */
static size_t collect_headers(lua_State *L, int idx, const char *sha, struct header **out)
{
    size_t cap = sha != NULL ? 1 : 0, n = 0;
    struct header *hs;
    char *names;
    size_t names_len = sha != NULL ? sizeof "x-acs-content-sha256" : 0;

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t klen;
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "sign_acs3: header names must be strings");
        lua_tolstring(L, -2, &klen);
        if (lua_type(L, -1) == LUA_TTABLE) {
            size_t m = lua_rawlen(L, -1);
            cap += m;
            names_len += m * (klen + 1);
        } else {
            cap += 1;
            names_len += klen + 1;
        }
        lua_pop(L, 1);
    }
    hs = (struct header *)lua_newuserdatauv(L, cap * sizeof *hs + names_len + 1, 0);
    names = (char *)(hs + cap);

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t klen, i, m;
        const char *k = lua_tolstring(L, -2, &klen);
        char lower[128];
        int list = lua_type(L, -1) == LUA_TTABLE;
        if (klen >= sizeof lower)
            luaL_error(L, "sign_acs3: header name too long");
        for (i = 0; i < klen; i++)
            lower[i] = (char)((k[i] >= 'A' && k[i] <= 'Z') ? k[i] + 32 : k[i]);
        lower[klen] = '\0';
        m = list ? lua_rawlen(L, -1) : 1;
        for (i = 1; i <= m; i++) {
            struct header *h;
            if (list)
                lua_rawgeti(L, -1, (int)i);
            if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
                luaL_error(L, "sign_acs3: header '%s' must be a string or list", lower);
            if (signed_header(lower)) {
                h = &hs[n++];
                memcpy(names, lower, klen + 1);
                h->name = names;
                names += klen + 1;
                h->v = lua_tolstring(L, -1, &h->vlen);
                trim(&h->v, &h->vlen);
            }
            if (list)
                lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (sha != NULL) {
        struct header *h = &hs[n++];
        memcpy(names, "x-acs-content-sha256", sizeof "x-acs-content-sha256");
        h->name = names;
        h->v = sha;
        h->vlen = strlen(sha);
    }
    qsort(hs, n, sizeof *hs, cmp_header);
    *out = hs;
    return n;
}

/*
 * core.sign_acs3{method=, path=, query=, headers=, body= | body_sha256=,
 *                access_key_id=, access_key_secret=}
 *   -> authorization, signed_headers, hashed_canonical_request, content_sha256
 * ACS3-HMAC-SHA256 (reference §3). query: flat table (may be nil); headers: name ->
 * string or list of strings; only host, content-type and x-acs-* are signed, names
 * lower-cased, values trimmed, a list's values joined with ",". With body and no
 * x-acs-content-sha256 header, the body's SHA-256 is added as that header and signed;
 * with body_sha256 that hex string is the payload hash and no header is added.
 * Empty method and path are signed as given (empty path means "/").
 * Raises on missing credentials or wrongly typed fields.
 */
static int l_sign_acs3(lua_State *L)
{
    size_t mlen = 0, plen = 0, blen = 0, shalen = 0, idlen, seclen, n, i;
    const char *method, *path, *body, *body_sha, *id, *secret;
    char payload[2 * EVP_MAX_MD_SIZE + 1];
    const char *added = NULL;
    struct header *hs;
    unsigned char md[EVP_MAX_MD_SIZE];
    size_t mdlen;
    luaL_Buffer b;
    int headers_idx, query_str, signed_idx, hash_idx, table = 1;

    luaL_checktype(L, table, LUA_TTABLE);
    lua_settop(L, 1);
    method = opt_field(L, table, "method", &mlen);
    path = opt_field(L, table, "path", &plen);
    body = opt_field(L, table, "body", &blen);
    body_sha = opt_field(L, table, "body_sha256", &shalen);
    id = opt_field(L, table, "access_key_id", &idlen);
    secret = opt_field(L, table, "access_key_secret", &seclen);
    if (id == NULL || secret == NULL)
        return luaL_error(L, "sign_acs3: access_key_id and access_key_secret are required");

    lua_getfield(L, table, "headers");                        /* 2 */
    if (lua_isnil(L, 2)) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    headers_idx = 2;

    lua_getfield(L, headers_idx, "x-acs-content-sha256");
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t len;
        const char *given = lua_tolstring(L, -1, &len);
        if (len >= sizeof payload)
            return luaL_error(L, "sign_acs3: x-acs-content-sha256 too long");
        memcpy(payload, given, len + 1);
    } else if (body_sha != NULL) {
        if (shalen >= sizeof payload)
            return luaL_error(L, "sign_acs3: body_sha256 too long");
        memcpy(payload, body_sha, shalen + 1);
    } else {
        mdlen = sha256(body != NULL ? body : "", blen, md);
        for (i = 0; i < mdlen; i++)
            snprintf(payload + 2 * i, 3, "%02x", md[i]);
        added = payload;
    }
    lua_pop(L, 1);

    lua_getfield(L, table, "query");                          /* 3 */
    push_acs3_query(L, 3);                                    /* 4 */
    query_str = 4;
    n = collect_headers(L, headers_idx, added, &hs);          /* 5: scratch */

    luaL_buffinit(L, &b);                                     /* signed headers */
    for (i = 0; i < n; i++) {
        if (i > 0 && strcmp(hs[i].name, hs[i - 1].name) == 0)
            continue;
        if (i > 0)
            luaL_addchar(&b, ';');
        luaL_addstring(&b, hs[i].name);
    }
    luaL_pushresult(&b);                                      /* 6 */
    signed_idx = 6;

    luaL_buffinit(L, &b);                                     /* canonical request */
    if (method != NULL)
        luaL_addlstring(&b, method, mlen);
    luaL_addchar(&b, '\n');
    if (path != NULL && plen > 0)
        luaL_addlstring(&b, path, plen);
    else
        luaL_addchar(&b, '/');
    luaL_addchar(&b, '\n');
    {
        size_t qlen;
        const char *q = lua_tolstring(L, query_str, &qlen);
        luaL_addlstring(&b, q, qlen);
    }
    luaL_addchar(&b, '\n');
    for (i = 0; i < n; i++) {
        if (i == 0 || strcmp(hs[i].name, hs[i - 1].name) != 0) {
            if (i > 0)
                luaL_addchar(&b, '\n');
            luaL_addstring(&b, hs[i].name);
            luaL_addchar(&b, ':');
        } else {
            luaL_addchar(&b, ',');
        }
        luaL_addlstring(&b, hs[i].v, hs[i].vlen);
    }
    if (n > 0)
        luaL_addchar(&b, '\n');
    luaL_addchar(&b, '\n');
    {
        size_t slen;
        const char *s = lua_tolstring(L, signed_idx, &slen);
        luaL_addlstring(&b, s, slen);
    }
    luaL_addchar(&b, '\n');
    luaL_addstring(&b, payload);
    luaL_pushresult(&b);                                      /* 7 */
    {
        size_t crlen;
        const char *cr = lua_tolstring(L, 7, &crlen);
        mdlen = sha256(cr, crlen, md);
    }
    if (mdlen == 0)
        return luaL_error(L, "SHA-256 failed");
    push_hex(L, md, mdlen);                                   /* 8: hashed request */
    hash_idx = 8;

    lua_pushliteral(L, "ACS3-HMAC-SHA256\n");                 /* 9: string to sign */
    lua_pushvalue(L, hash_idx);
    lua_concat(L, 2);
    {
        size_t tlen;
        const char *sts = lua_tolstring(L, -1, &tlen);
        mdlen = hmac(EVP_sha256(), secret, seclen, sts, tlen, md);
    }
    if (mdlen == 0)
        return luaL_error(L, "HMAC-SHA256 failed");

    luaL_buffinit(L, &b);
    luaL_addstring(&b, "ACS3-HMAC-SHA256 Credential=");
    luaL_addlstring(&b, id, idlen);
    luaL_addstring(&b, ",SignedHeaders=");
    lua_pushvalue(L, signed_idx);
    luaL_addvalue(&b);
    luaL_addstring(&b, ",Signature=");
    push_hex(L, md, mdlen);
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    lua_pushvalue(L, signed_idx);
    lua_pushvalue(L, hash_idx);
    lua_pushstring(L, payload);
    return 4;
}

/*
 * core.canonical_query(params) -> string
 * params: flat table as for sign_rpc. The encoded k=v pairs in byte order joined by "&":
 * the canonical query of both signatures, and a valid query string or form body.
 * Raises as sign_rpc does.
 */
static int l_canonical_query(lua_State *L)
{
    size_t n;
    struct param **sorted;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    sorted = collect_params(L, 1, &n);
    push_canonical(L, sorted, n);
    return 1;
}

/* core.hmac_sha1(key, data) -> Base64 of HMAC-SHA1, the key used as given. */
static int l_hmac_sha1(lua_State *L)
{
    size_t klen, dlen, n;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *data = luaL_checklstring(L, 2, &dlen);
    unsigned char mac[EVP_MAX_MD_SIZE];
    n = hmac(EVP_sha1(), key, klen, data, dlen, mac);
    if (n == 0)
        return luaL_error(L, "HMAC-SHA1 failed");
    push_base64(L, mac, n);
    return 1;
}

/* core.hmac_sha256_hex(key, data) -> lower-case hex of HMAC-SHA256. */
static int l_hmac_sha256_hex(lua_State *L)
{
    size_t klen, dlen, n;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *data = luaL_checklstring(L, 2, &dlen);
    unsigned char mac[EVP_MAX_MD_SIZE];
    n = hmac(EVP_sha256(), key, klen, data, dlen, mac);
    if (n == 0)
        return luaL_error(L, "HMAC-SHA256 failed");
    push_hex(L, mac, n);
    return 1;
}

/* core.sha256_hex(data) -> lower-case hex of SHA-256(data). */
static int l_sha256_hex(lua_State *L)
{
    size_t len, n;
    const char *data = luaL_checklstring(L, 1, &len);
    unsigned char md[EVP_MAX_MD_SIZE];
    n = sha256(data, len, md);
    if (n == 0)
        return luaL_error(L, "SHA-256 failed");
    push_hex(L, md, n);
    return 1;
}

/*
 * core.nonce() -> "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx"
 * A UUID-v4-shaped SignatureNonce from OpenSSL's RAND_bytes, whose DRBG reseeds after
 * fork() (nginx workers fork), so two processes never share a nonce sequence.
 * Raises if the random generator fails.
 */
static int l_nonce(lua_State *L)
{
    unsigned char r[16];
    char out[37];
    int i, o = 0;
    if (RAND_bytes(r, sizeof r) != 1)
        return luaL_error(L, "RAND_bytes failed");
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    for (i = 0; i < 16; i++) {
        static const char digits[] = "0123456789abcdef";
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = digits[r[i] >> 4];
        out[o++] = digits[r[i] & 15];
    }
    lua_pushlstring(L, out, (size_t)o);
    return 1;
}

/*
 * core.timestamp([epoch_seconds]) -> "YYYY-MM-DDThh:mm:ssZ" (UTC; the Timestamp common
 * parameter and ACS3's x-acs-date). Without an argument, the current time.
 */
static int l_timestamp(lua_State *L)
{
    time_t t;
    struct tm tm;
    char out[32];
    if (lua_isnoneornil(L, 1)) {
        t = time(NULL);
    } else {
        lua_Number n = luaL_checknumber(L, 1);
        if (!isfinite(n) || n < 0 || n > 253402300799.0)
            return luaL_argerror(L, 1, "epoch seconds out of range");
        t = (time_t)floor(n);
    }
    if (gmtime_r(&t, &tm) == NULL)
        return luaL_argerror(L, 1, "epoch seconds out of range");
    strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%SZ", &tm);
    lua_pushstring(L, out);
    return 1;
}

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

/* core.sleep(seconds) blocks for that many seconds (fractions allowed; <= 0 returns). */
static int l_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    struct timespec req, rem;
    if (!(s > 0))
        return 0;
    if (s > 1e6)
        return luaL_argerror(L, 1, "sleep too long");
    req.tv_sec = (time_t)s;
    req.tv_nsec = (long)((s - (lua_Number)req.tv_sec) * 1e9);
    while (nanosleep(&req, &rem) != 0 && errno == EINTR)
        req = rem;
    return 0;
}

void aliyun_open_sign(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"sign_rpc", l_sign_rpc},
        {"sign_acs3", l_sign_acs3},
        {"canonical_query", l_canonical_query},
        {"hmac_sha1", l_hmac_sha1},
        {"hmac_sha256_hex", l_hmac_sha256_hex},
        {"sha256_hex", l_sha256_hex},
        {"nonce", l_nonce},
        {"timestamp", l_timestamp},
        {"now", l_now},
        {"time", l_time},
        {"sleep", l_sleep},
        {NULL, NULL},
    };
    luaL_setfuncs(L, funcs, 0);
}
