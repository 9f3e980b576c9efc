/*
 * Request signing (docs/wire.md §2 and §3), hashes, nonces and timestamps (clocks live in clock.c). OpenSSL does the
 * HMAC, SHA-256, Base64 and random bytes.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core.h"

/* One request parameter as signed: name and value bytes. */
struct param {
    const char *k;
    size_t klen;
    const char *v;    /* NULL while the value is a number's text at voff in scratch.text */
    size_t voff;
    size_t vlen;
};

/*
 * Memory that signing reuses from call to call (an upvalue of the signing functions, freed
 * by __gc): a 1,000-name request needs some 200 KiB of it, and fresh userdata every time
 * cost more than the signing itself in collections. Nothing in a signing function calls
 * back into Lua, so one scratch per Lua state is never used twice at once.
 */
/* A parameter's place in the sort: the name's first 16 bytes, big-endian, zero-padded,
   held by value beside the pointer so that most comparisons touch no name at all. */
struct sort_key {
    uint64_t head[2];
    const struct param *p;
};

struct scratch {
    struct param *ps;
    size_t pcap;
    struct sort_key *keys; /* sorted keys, then as many again for the merge */
    size_t kcap;
    char *text;          /* numbers' decimal text */
    size_t tcap;
    char *out;           /* the canonical query and the string to sign */
    size_t ocap;
    char *names;         /* the last sorted request's names, in the order collected */
    size_t ncap, nlen;
    size_t *order;       /* ...and their sorted order: indices into ps */
    size_t ordcap, last_n;
    struct aliyun_mac sha1, sha256; /* keyed HMAC contexts (mac.c) */
    unsigned char rnd[512]; /* random bytes for nonces, used from rpos on */
    size_t rpos;
    long rpid;              /* the process that drew them (a forked child draws anew) */
};

#define SCRATCH_NAME "aliyun.iot.core.scratch"

static int scratch_gc(lua_State *L)
{
    struct scratch *s = (struct scratch *)luaL_checkudata(L, 1, SCRATCH_NAME);
    free(s->ps);
    free(s->keys);
    free(s->text);
    free(s->out);
    free(s->names);
    free(s->order);
    aliyun_mac_free(&s->sha1);
    aliyun_mac_free(&s->sha256);
    OPENSSL_cleanse(s->rnd, sizeof s->rnd);
    memset(s, 0, sizeof *s);
    return 0;
}

static void *grow(lua_State *L, void *buf, size_t *cap, size_t need, size_t size)
{
    size_t n = *cap < 64 ? 64 : *cap;
    void *p;
    if (need <= *cap)
        return buf;
    while (n < need)
        n *= 2;
    if (n > ((size_t)-1) / size)
        luaL_error(L, "request too large to sign");
    p = realloc(buf, n * size);
    if (p == NULL)
        luaL_error(L, "out of memory while signing");
    *cap = n;
    return p;
}

static struct scratch *get_scratch(lua_State *L)
{
    return (struct scratch *)lua_touserdata(L, lua_upvalueindex(1));
}

/*
 * Byte order, never the locale's collation: signatures must not depend on LC_COLLATE.
 * Flattened names share long prefixes (DeviceName.1, DeviceName.10, ...), so the first 16
 * bytes compare as two integers before any memcmp; zero padding can only tie, and a tie
 * falls back to the whole names.
 */
static int key_cmp(const struct sort_key *x, const struct sort_key *y)
{
    size_t n;
    int c;
    if (x->head[0] != y->head[0])
        return x->head[0] < y->head[0] ? -1 : 1;
    if (x->head[1] != y->head[1])
        return x->head[1] < y->head[1] ? -1 : 1;
    n = x->p->klen < y->p->klen ? x->p->klen : y->p->klen;
    c = memcmp(x->p->k, y->p->k, n);
    if (c != 0)
        return c;
    return (x->p->klen > y->p->klen) - (x->p->klen < y->p->klen);
}

/* Merge sort of a[0..n) with tmp as room: stable, n log n, comparisons inlined. */
static void merge_sort(struct sort_key *a, struct sort_key *tmp, size_t n)
{
    struct sort_key *src = a, *dst = tmp, *t;
    size_t width, i;
    for (i = 0; i < n; i += 8) { /* insertion-sort runs of 8 */
        size_t end = i + 8 < n ? i + 8 : n, j;
        for (j = i + 1; j < end; j++) {
            struct sort_key x = a[j];
            size_t k = j;
            while (k > i && key_cmp(&a[k - 1], &x) > 0) {
                a[k] = a[k - 1];
                k--;
            }
            a[k] = x;
        }
    }
    for (width = 8; width < n; width *= 2) {
        for (i = 0; i < n; i += 2 * width) {
            size_t mid = i + width < n ? i + width : n;
            size_t hi = i + 2 * width < n ? i + 2 * width : n, l = i, r = mid, o = i;
            while (l < mid && r < hi)
                dst[o++] = key_cmp(&src[r], &src[l]) < 0 ? src[r++] : src[l++];
            while (l < mid)
                dst[o++] = src[l++];
            while (r < hi)
                dst[o++] = src[r++];
        }
        t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, n * sizeof *a);
}

/* Byte d (0: most significant) of a 64-bit head word. */
#define HEAD_BYTE(w, d) ((unsigned)((w) >> (8 * (7 - (d)))) & 0xffu)

/* LSD radix sort of a[0..n) by head[1] (tmp as room; result in a). One pass counts all
   eight byte positions; a position where all keys agree (flattened names: "me.", the zero
   padding) needs no pass of its own. */
static void radix_by_second_word(struct sort_key *a, struct sort_key *tmp, size_t n)
{
    struct sort_key *src = a, *dst = tmp, *t;
    size_t count[8][256], i;
    int d;
    memset(count, 0, sizeof count);
    for (i = 0; i < n; i++) {
        uint64_t w = a[i].head[1];
        for (d = 0; d < 8; d++)
            count[d][HEAD_BYTE(w, d)]++;
    }
    for (d = 7; d >= 0; d--) {
        size_t sum = 0, *c = count[d];
        if (c[HEAD_BYTE(a[0].head[1], d)] == n)
            continue;
        for (i = 0; i < 256; i++) {
            size_t k = c[i];
            c[i] = sum;
            sum += k;
        }
        for (i = 0; i < n; i++)
            dst[c[HEAD_BYTE(src[i].head[1], d)]++] = src[i];
        t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, n * sizeof *a);
}

#define MAX_FIRST_WORDS 16

/*
 * Sorts a[0..n) (tmp as room). Comparison sorts of shuffled names mispredict a branch
 * every other comparison, which made sorting a third of a 1,000-name signature. Request
 * names start with few distinct 8-byte words ("DeviceNa", "Signatur", ...), so keys are
 * bucketed by their first word, each bucket radix-sorted by its second word without a
 * comparison, and only keys whose 16-byte heads tie are compared whole. Requests with many
 * distinct first words take the merge sort.
 */
static void sort_keys(struct sort_key *a, struct sort_key *tmp, size_t n)
{
    uint64_t first[MAX_FIRST_WORDS];
    size_t start[MAX_FIRST_WORDS + 1], nf = 0, i, j;

    for (i = 0; i < n; i++) {
        for (j = 0; j < nf && first[j] != a[i].head[0]; j++)
            ;
        if (j == nf) {
            if (nf == MAX_FIRST_WORDS) {
                merge_sort(a, tmp, n);
                return;
            }
            first[nf++] = a[i].head[0];
        }
    }
    for (i = 1; i < nf; i++) { /* the distinct first words, in order */
        uint64_t w = first[i];
        for (j = i; j > 0 && first[j - 1] > w; j--)
            first[j] = first[j - 1];
        first[j] = w;
    }
    memset(start, 0, sizeof start);
    for (i = 0; i < n; i++) {
        for (j = 0; first[j] != a[i].head[0]; j++)
            ;
        start[j + 1]++;
    }
    for (j = 0; j < nf; j++)
        start[j + 1] += start[j];
    {
        size_t fill[MAX_FIRST_WORDS];
        memcpy(fill, start, sizeof fill);
        for (i = 0; i < n; i++) {
            for (j = 0; first[j] != a[i].head[0]; j++)
                ;
            tmp[fill[j]++] = a[i];
        }
    }
    memcpy(a, tmp, n * sizeof *a);
    for (j = 0; j < nf; j++) {
        size_t m = start[j + 1] - start[j];
        /* a radix pass costs a 256-entry count: small buckets are cheaper compared */
        if (m >= 64)
            radix_by_second_word(a + start[j], tmp, m);
        else
            merge_sort(a + start[j], tmp, m);
    }
    for (i = 0; i < n; i = j) { /* runs of equal heads: the names decide */
        for (j = i + 1; j < n && a[j].head[0] == a[i].head[0] && a[j].head[1] == a[i].head[1]; j++)
            ;
        if (j - i > 1)
            merge_sort(a + i, tmp, j - i);
    }
}

static void set_head(struct sort_key *key, const struct param *p)
{
    unsigned char b[16] = {0};
    int i;
    memcpy(b, p->k, p->klen < sizeof b ? p->klen : sizeof b);
    key->head[0] = key->head[1] = 0;
    for (i = 0; i < 8; i++) {
        key->head[0] = (key->head[0] << 8) | b[i];
        key->head[1] = (key->head[1] << 8) | b[8 + i];
    }
    key->p = p;
}

/* Appends a number's decimal text to scratch.text; records where in p. */
static void number_text(lua_State *L, struct scratch *s, size_t *tlen, struct param *p,
                        const char *fmt, double d, long long ll, int integer)
{
    char num[32];
    int len = integer ? snprintf(num, sizeof num, fmt, ll) : snprintf(num, sizeof num, fmt, d);
    if (len < 0 || (size_t)len >= sizeof num)
        luaL_error(L, "parameter '%s': number out of range", p->k);
    s->text = (char *)grow(L, s->text, &s->tcap, *tlen + (size_t)len, 1);
    memcpy(s->text + *tlen, num, (size_t)len);
    p->v = NULL;
    p->voff = *tlen;
    p->vlen = (size_t)len;
    *tlen += (size_t)len;
}

/*
 * Reads the value at the stack top into p as the API's string form: strings as they are,
 * integers (and floats with an integral value: 4415.0 signs as 4415) in decimal, booleans
 * as true/false. Anything else raises an error naming the parameter.
 */
static void param_value(lua_State *L, struct scratch *s, size_t *tlen, struct param *p)
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
            number_text(L, s, tlen, p, "%lld", 0, (long long)lua_tointeger(L, -1), 1);
            return;
        }
#endif
        {
            lua_Number n = lua_tonumber(L, -1);
            if (isfinite(n) && n == floor(n) && fabs(n) < 1e300) {
                number_text(L, s, tlen, p, "%.0f", (double)n, 0, 0);
                return;
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
 * The sort's memo. Requests of one kind carry the same names (every QueryPageByApplyId,
 * every 1,000-name chunk: DeviceName.1 to DeviceName.1000), and a table built the same
 * way is traversed in the same order, so the last sorted order often fits the next request
 * as collected: checking that its names are byte for byte the last ones costs a memcmp,
 * the sort a sixth of a 1,000-name signature. Names are kept as length + bytes (names
 * only: no value, so no secret, outlives the call).
 */
static int same_names(const struct scratch *s, size_t n)
{
    const char *q, *end;
    size_t i;
    if (n != s->last_n || s->names == NULL)
        return 0;
    q = s->names;
    end = q + s->nlen;
    for (i = 0; i < n; i++) {
        const struct param *p = &s->ps[i];
        if ((size_t)(end - q) < sizeof(size_t) + p->klen ||
            memcmp(q, &p->klen, sizeof(size_t)) != 0 ||
            memcmp(q + sizeof(size_t), p->k, p->klen) != 0)
            return 0;
        q += sizeof(size_t) + p->klen;
    }
    return q == end;
}

/* Keeps the names of the n collected parameters and their sorted order for the next call. */
static void remember_order(lua_State *L, struct scratch *s, size_t n)
{
    size_t i, len = 0;
    char *q;
    for (i = 0; i < n; i++)
        len += sizeof(size_t) + s->ps[i].klen;
    s->last_n = 0; /* forgotten until both are complete (an allocation may raise) */
    s->names = (char *)grow(L, s->names, &s->ncap, len, 1);
    s->order = (size_t *)grow(L, s->order, &s->ordcap, n + 1, sizeof *s->order);
    for (q = s->names, i = 0; i < n; i++) {
        memcpy(q, &s->ps[i].klen, sizeof(size_t));
        memcpy(q + sizeof(size_t), s->ps[i].k, s->ps[i].klen);
        q += sizeof(size_t) + s->ps[i].klen;
        s->order[i] = (size_t)(s->keys[i].p - s->ps);
    }
    s->nlen = len;
    s->last_n = n;
}

/*
 * Collects the flat parameter table at idx into the scratch area, sorted by name.
 * Returns the count; *raw gets the total bytes of names and values.
 */
static size_t collect_params(lua_State *L, int idx, struct scratch *s, size_t *raw)
{
    size_t n = 0, i, tlen = 0, bytes = 0;

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        struct param *p;
        s->ps = (struct param *)grow(L, s->ps, &s->pcap, n + 1, sizeof *s->ps);
        p = &s->ps[n];
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "parameter names must be strings (got %s)", luaL_typename(L, -2));
        p->k = lua_tolstring(L, -2, &p->klen);
        param_value(L, s, &tlen, p);
        bytes += p->klen + p->vlen;
        n++;
        lua_pop(L, 1);
    }
    s->keys = (struct sort_key *)grow(L, s->keys, &s->kcap, 2 * n + 1, sizeof *s->keys);
    for (i = 0; i < n; i++) {
        if (s->ps[i].v == NULL)
            s->ps[i].v = s->text + s->ps[i].voff;
    }
    if (same_names(s, n)) {
        for (i = 0; i < n; i++)
            s->keys[i].p = &s->ps[s->order[i]];
    } else {
        for (i = 0; i < n; i++)
            set_head(&s->keys[i], &s->ps[i]);
        sort_keys(s->keys, s->keys + n, n);
        remember_order(L, s, n);
    }
    *raw = bytes;
    return n;
}
/*
 * Writes the canonical query of the n sorted parameters into scratch.out: the encoded
 * k=v pairs joined by &. With method, also the string to sign, encode(canonical) behind
 * "METHOD&%2F&": a byte the query encodes as %XY becomes %25XY there, and the separators
 * = and & become %3D and %26. Both come out of one pass over the names and values.
 */
/* Appends the n bytes of lit (no terminator) at t; returns the end. */
static char *put(char *t, const char *lit, size_t n)
{
    memcpy(t, lit, n);
    return t + n;
}

static void write_canonical(lua_State *L, struct scratch *s, size_t n, size_t raw,
                            const char *method, size_t mlen, size_t *clen, char **sts,
                            size_t *tlen)
{
    size_t cmax = 3 * raw + 2 * n, tmax = method != NULL ? mlen + 5 + 5 * raw + 6 * n : 0;
    size_t i;
    char *c, *t;

    s->out = (char *)grow(L, s->out, &s->ocap, cmax + tmax + 1, 1);
    c = s->out;
    t = s->out + cmax;
    if (method != NULL) {
        t = put(put(t, method, mlen), "&%2F&", 5);
    }
    for (i = 0; i < n; i++) {
        const struct param *p = s->keys[i].p;
        if (method == NULL) {
            if (i > 0)
                *c++ = '&';
            c = aliyun_encode_to(c, p->k, p->klen);
            *c++ = '=';
            c = aliyun_encode_to(c, p->v, p->vlen);
            continue;
        }
        if (i > 0) {
            *c++ = '&';
            t = put(t, "%26", 3);
        }
        aliyun_encode_both(&c, &t, p->k, p->klen);
        *c++ = '=';
        t = put(t, "%3D", 3);
        aliyun_encode_both(&c, &t, p->v, p->vlen);
    }
    *clen = (size_t)(c - s->out);
    if (method != NULL) {
        *sts = s->out + cmax;
        *tlen = (size_t)(t - *sts);
    }
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
 * RPC signature, SignatureMethod HMAC-SHA1, SignatureVersion 1.0 (docs/wire.md §2):
 * method: the HTTP method actually sent ("GET", "POST"; signed as given).
 * params: flat table name -> string | integer | integral float | boolean, every request
 *   parameter except Signature (flatten lists first with core.flatten).
 * signature: Base64(HMAC-SHA1(secret .. "&", string_to_sign)), not yet URL-encoded.
 * canonical_query: the encoded, sorted k=v pairs; also usable as the query or form body.
 * Raises on a non-string name, a non-integral number, or a value of another type.
 */
static int l_sign_rpc(lua_State *L)
{
    size_t mlen, slen, n, raw, clen, tlen;
    const char *method = luaL_checklstring(L, 1, &mlen);
    const char *secret;
    struct scratch *s = get_scratch(L);
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen;
    char *sts;

    luaL_checktype(L, 2, LUA_TTABLE);
    secret = luaL_checklstring(L, 3, &slen);
    lua_settop(L, 3);
    n = collect_params(L, 2, s, &raw);
    write_canonical(L, s, n, raw, method, mlen, &clen, &sts, &tlen);

    maclen = aliyun_hmac(&s->sha1, 0, secret, slen, "&", 1, sts, tlen, mac); /* secret .. "&" */
    if (maclen == 0)
        return luaL_error(L, "HMAC-SHA1 failed");
    push_base64(L, mac, maclen);
    lua_pushlstring(L, sts, tlen);
    lua_pushlstring(L, s->out, clen);
    return 3;
}

/* Pushes the canonical query for ACS3: same encoding and order as RPC v1. */
static void push_acs3_query(lua_State *L, int idx)
{
    size_t n, raw, clen;
    struct scratch *s = get_scratch(L);

    if (lua_isnoneornil(L, idx)) {
        lua_pushliteral(L, "");
        return;
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    n = collect_params(L, idx, s, &raw);
    write_canonical(L, s, n, raw, NULL, 0, &clen, NULL, NULL);
    lua_pushlstring(L, s->out, clen);
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

/* The hex SHA-256 of the payload: x-acs-content-sha256 as given in the headers, else the
   caller's body_sha256, else computed from the body. Writes it into payload (room for
   2 * EVP_MAX_MD_SIZE + 1); returns payload when it was computed here (the header must then
   be added to the signed ones), NULL otherwise. */
static const char *acs3_payload(lua_State *L, int headers_idx, const char *body, size_t blen,
                                const char *body_sha, size_t shalen, char *payload)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    size_t mdlen, i;
    const char *added = NULL;
    lua_getfield(L, headers_idx, "x-acs-content-sha256");
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t len;
        const char *given = lua_tolstring(L, -1, &len);
        if (len >= 2 * EVP_MAX_MD_SIZE + 1)
            luaL_error(L, "sign_acs3: x-acs-content-sha256 too long");
        memcpy(payload, given, len + 1);
    } else if (body_sha != NULL) {
        if (shalen >= 2 * EVP_MAX_MD_SIZE + 1)
            luaL_error(L, "sign_acs3: body_sha256 too long");
        memcpy(payload, body_sha, shalen + 1);
    } else {
        mdlen = sha256(body != NULL ? body : "", blen, md);
        for (i = 0; i < mdlen; i++)
            snprintf(payload + 2 * i, 3, "%02x", md[i]);
        added = payload;
    }
    lua_pop(L, 1);
    return added;
}

/* Pushes the SignedHeaders list: the sorted header names, each once, joined by ';'. */
static void push_signed_headers(lua_State *L, const struct header *hs, size_t n)
{
    luaL_Buffer b;
    size_t i;
    luaL_buffinit(L, &b);
    for (i = 0; i < n; i++) {
        if (i > 0 && strcmp(hs[i].name, hs[i - 1].name) == 0)
            continue;
        if (i > 0)
            luaL_addchar(&b, ';');
        luaL_addstring(&b, hs[i].name);
    }
    luaL_pushresult(&b);
}

/* Adds the canonical headers (name:value lines; repeated names joined by ',') to b. */
static void add_canonical_headers(luaL_Buffer *b, const struct header *hs, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (i == 0 || strcmp(hs[i].name, hs[i - 1].name) != 0) {
            if (i > 0)
                luaL_addchar(b, '\n');
            luaL_addstring(b, hs[i].name);
            luaL_addchar(b, ':');
        } else {
            luaL_addchar(b, ',');
        }
        luaL_addlstring(b, hs[i].v, hs[i].vlen);
    }
    if (n > 0)
        luaL_addchar(b, '\n');
}

/* Pushes the canonical request: method, path, query, headers, signed headers, payload
   hash, each on its line. The query and the signed headers are strings on the stack. */
static void push_canonical_request(lua_State *L, const char *method, size_t mlen,
                                   const char *path, size_t plen, int query_idx,
                                   const struct header *hs, size_t n, int signed_idx,
                                   const char *payload)
{
    luaL_Buffer b;
    size_t len;
    const char *q = lua_tolstring(L, query_idx, &len);
    const char *sh;
    luaL_buffinit(L, &b);
    if (method != NULL)
        luaL_addlstring(&b, method, mlen);
    luaL_addchar(&b, '\n');
    if (path != NULL && plen > 0)
        luaL_addlstring(&b, path, plen);
    else
        luaL_addchar(&b, '/');
    luaL_addchar(&b, '\n');
    luaL_addlstring(&b, q, len);
    luaL_addchar(&b, '\n');
    add_canonical_headers(&b, hs, n);
    luaL_addchar(&b, '\n');
    sh = lua_tolstring(L, signed_idx, &len);
    luaL_addlstring(&b, sh, len);
    luaL_addchar(&b, '\n');
    luaL_addstring(&b, payload);
    luaL_pushresult(&b);
}

/* Pushes the Authorization header's value for the string to sign at the stack top. */
static void push_authorization(lua_State *L, const char *id, size_t idlen, const char *secret,
                               size_t seclen, int signed_idx)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    size_t tlen, mdlen;
    const char *sts = lua_tolstring(L, -1, &tlen);
    luaL_Buffer b;
    mdlen = aliyun_hmac(&get_scratch(L)->sha256, 1, secret, seclen, "", 0, sts, tlen, md);
    if (mdlen == 0)
        luaL_error(L, "HMAC-SHA256 failed");
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
}

/*
 * core.sign_acs3{method=, path=, query=, headers=, body= | body_sha256=,
 *                access_key_id=, access_key_secret=}
 *   -> authorization, signed_headers, hashed_canonical_request, content_sha256
 * ACS3-HMAC-SHA256 (docs/wire.md §3). query: flat table (may be nil); headers: name ->
 * string or list of strings; only host, content-type and x-acs-* are signed, names
 * lower-cased, values trimmed, a list's values joined with ",". With body and no
 * x-acs-content-sha256 header, the body's SHA-256 is added as that header and signed;
 * with body_sha256 that hex string is the payload hash and no header is added.
 * Empty method and path are signed as given (empty path means "/").
 * Raises on missing credentials or wrongly typed fields.
 */
static int l_sign_acs3(lua_State *L)
{
    size_t mlen = 0, plen = 0, blen = 0, shalen = 0, idlen, seclen, n, crlen, mdlen;
    const char *method, *path, *body, *body_sha, *id, *secret, *added, *cr;
    char payload[2 * EVP_MAX_MD_SIZE + 1];
    unsigned char md[EVP_MAX_MD_SIZE];
    struct header *hs;
    int table = 1, headers_idx = 2, query_idx = 4, signed_idx = 6, hash_idx = 8;

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
    luaL_checktype(L, headers_idx, LUA_TTABLE);
    added = acs3_payload(L, headers_idx, body, blen, body_sha, shalen, payload);

    lua_getfield(L, table, "query");                          /* 3 */
    push_acs3_query(L, 3);                                    /* 4 */
    n = collect_headers(L, headers_idx, added, &hs);          /* 5: scratch */
    push_signed_headers(L, hs, n);                            /* 6 */
    push_canonical_request(L, method, mlen, path, plen, query_idx, hs, n, signed_idx,
                           payload);                          /* 7 */
    cr = lua_tolstring(L, 7, &crlen);
    mdlen = sha256(cr, crlen, md);
    if (mdlen == 0)
        return luaL_error(L, "SHA-256 failed");
    push_hex(L, md, mdlen);                                   /* 8: hashed request */

    lua_pushliteral(L, "ACS3-HMAC-SHA256\n");                 /* 9: string to sign */
    lua_pushvalue(L, hash_idx);
    lua_concat(L, 2);
    push_authorization(L, id, idlen, secret, seclen, signed_idx);
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
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    push_acs3_query(L, 1);
    return 1;
}

/* core.hmac_sha1(key, data) -> Base64 of HMAC-SHA1, the key used as given. */
static int l_hmac_sha1(lua_State *L)
{
    size_t klen, dlen, n;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *data = luaL_checklstring(L, 2, &dlen);
    unsigned char mac[EVP_MAX_MD_SIZE];
    n = aliyun_hmac(&get_scratch(L)->sha1, 0, key, klen, "", 0, data, dlen, mac);
    if (n == 0)
        return luaL_error(L, "HMAC-SHA1 failed");
    push_base64(L, mac, n);
    return 1;
}

/*
 * core.nonce() -> "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx"
 * A UUID-v4-shaped SignatureNonce from OpenSSL's RAND_bytes. The bytes are drawn 512 at a
 * time into the state's scratch (one RAND_bytes call cost about 6 µs of a keep-alive call,
 * issue 16) and each is used once, then wiped. A process that forked (nginx workers fork
 * after init_by_lua) draws anew: the buffer is tied to the pid that filled it, and
 * OpenSSL's own DRBG reseeds after fork(), so two processes never share a nonce sequence.
 * Raises if the random generator fails.
 */
static int l_nonce(lua_State *L)
{
    struct scratch *s = get_scratch(L);
    unsigned char *r;
    char out[37];
    int i, o = 0;
    long pid = (long)getpid();
    if (s->rpid != pid || s->rpos + 16 > sizeof s->rnd) {
        if (RAND_bytes(s->rnd, sizeof s->rnd) != 1)
            return luaL_error(L, "RAND_bytes failed");
        s->rpos = 0;
        s->rpid = pid;
    }
    r = s->rnd + s->rpos;
    s->rpos += 16;
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    for (i = 0; i < 16; i++) {
        static const char digits[] = "0123456789abcdef";
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = digits[r[i] >> 4];
        out[o++] = digits[r[i] & 15];
    }
    OPENSSL_cleanse(r, 16);
    lua_pushlstring(L, out, (size_t)o);
    return 1;
}

/*
 * core.random() -> number in [0, 1)
 * 53 random bits from OpenSSL's RAND_bytes: backoff jitter that differs between
 * processes on every Lua (math.random is never seeded on 5.1-5.3 and LuaJIT).
 * Raises if the random generator fails.
 */
static int l_random(lua_State *L)
{
    unsigned char r[8];
    unsigned long long v = 0;
    int i;
    if (RAND_bytes(r, sizeof r) != 1)
        return luaL_error(L, "RAND_bytes failed");
    for (i = 0; i < 8; i++)
        v = (v << 8) | r[i];
    lua_pushnumber(L, (lua_Number)(v >> 11) / 9007199254740992.0);
    return 1;
}

/*
 * core.random_name(length) -> string of `length` characters of [A-Za-z0-9] (1..64)
 * Client-drawn DeviceNames, as random as the service's own: each character from one
 * OpenSSL RAND_bytes byte, bytes of 248 and above (62 * 4) drawn again, so that every
 * character is equally likely (a plain `% 62` would favour the first eight).
 * Raises on a length out of range or if the random generator fails.
 */
static int l_random_name(lua_State *L)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    unsigned char r[64];
    char out[64];
    lua_Integer len = luaL_checkinteger(L, 1);
    size_t n = 0, i;
    luaL_argcheck(L, len >= 1 && len <= 64, 1, "length must be from 1 to 64");
    while (n < (size_t)len) {
        if (RAND_bytes(r, sizeof r) != 1)
            return luaL_error(L, "RAND_bytes failed");
        for (i = 0; i < sizeof r && n < (size_t)len; i++) {
            if (r[i] < 248)
                out[n++] = alphabet[r[i] % 62];
        }
    }
    lua_pushlstring(L, out, n);
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

void aliyun_open_sign(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"sign_rpc", l_sign_rpc},
        {"sign_acs3", l_sign_acs3},
        {"canonical_query", l_canonical_query},
        {"hmac_sha1", l_hmac_sha1},
        {"nonce", l_nonce},
        {"random", l_random},
        {"random_name", l_random_name},
        {"timestamp", l_timestamp},
        {NULL, NULL},
    };
    static const luaL_Reg scratch_meta[] = {{"__gc", scratch_gc}, {NULL, NULL}};
    struct scratch *s = (struct scratch *)lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    aliyun_newclass(L, SCRATCH_NAME, NULL, scratch_meta);
    luaL_getmetatable(L, SCRATCH_NAME);
    lua_setmetatable(L, -2);
    luaL_setfuncs(L, funcs, 1);
}
