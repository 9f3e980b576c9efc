/*
 * make fuzz, target "http": the part of the HTTP response path that is ours, csrc/http.c's
 * header and body callbacks (the size cap) and its header parser (push_headers), fed the
 * way libcurl feeds them: one header line per call, then body pieces. http.c is included
 * whole, so its static functions are reachable without any change to it.
 * Input: 2 bytes cap (bytes), 1 byte body piece size, then the raw response head and body.
 */
#include "../csrc/http.c"

#include <assert.h>
#include <lualib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "PROPERTY: %s\n", what);
        abort();
    }
}

/* Whether s[0..len) contains ", " (values may hold NUL bytes, so no strstr). */
static int has_separator(const char *s, size_t len)
{
    size_t i;
    for (i = 0; i + 1 < len; i++)
        if (s[i] == ',' && s[i + 1] == ' ')
            return 1;
    return 0;
}

/* Feeds one callback as libcurl would and checks the cap after each call. */
static int feed(struct transfer *t, int header, const uint8_t *p, size_t len)
{
    size_t body_before = t->resp.len;
    size_t got;
    /* libcurl hands out a writable buffer; a copy keeps the input const */
    char *copy = malloc(len ? len : 1);
    check(copy != NULL, "malloc");
    memcpy(copy, p, len);
    got = header ? on_header(copy, 1, len, t) : on_body(copy, 1, len, t);
    free(copy);
    check(got == len || got == 0, "callback took part of a piece");
    check((curl_off_t)(t->head.len + t->resp.len) <= t->max_size, "kept more than max_size");
    if (got == 0 && len > 0)
        check(t->too_large, "refused a piece without flagging too_large");
    if (!header)
        check(t->resp.len == body_before + got, "body length bookkeeping");
    return got == len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct transfer t;
    size_t i = 3, piece;
    int going = 1;
    if (L == NULL) {
        L = luaL_newstate();
        luaL_openlibs(L);
    }
    if (size < 3)
        return 0;
    memset(&t, 0, sizeof t);
    t.max_size = (curl_off_t)(data[0] | data[1] << 8);
    piece = (size_t)data[2] + 1;
    /* the head: one call per line, as CURLOPT_HEADERFUNCTION is called */
    while (going && i < size) {
        size_t end = i;
        while (end < size && data[end] != '\n')
            end++;
        if (end < size)
            end++;
        going = feed(&t, 1, data + i, end - i);
        if (end - i <= 2 && (data[i] == '\r' || data[i] == '\n'))
            { i = end; break; } /* the blank line ends the head */
        i = end;
    }
    while (going && i < size) {
        size_t n = size - i < piece ? size - i : piece;
        going = feed(&t, 0, data + i, n);
        i += n;
    }
    if (!t.too_large) {
        int top = lua_gettop(L);
        size_t body_len = t.resp.len;
        push_response(L, &t);
        check(lua_istable(L, -1), "push_response pushed no table");
        lua_getfield(L, -1, "body");
        check(lua_rawlen(L, -1) == body_len, "body length");
        lua_pop(L, 1);
        lua_getfield(L, -1, "headers");
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            size_t klen, vlen, k;
            const char *key = lua_tolstring(L, -2, &klen);
            const char *val = lua_tolstring(L, -1, &vlen);
            check(klen > 0, "empty header name");
            for (k = 0; k < klen; k++)
                check(key[k] != ':' && key[k] != '\n' && !(key[k] >= 'A' && key[k] <= 'Z'),
                      "header name with ':', LF or upper case");
            for (k = 0; k < vlen; k++)
                check(val[k] != '\n', "header value with LF");
            /* repeats are joined with ", "; an empty repeat leaves the separator's space */
            if (vlen > 0 && !has_separator(val, vlen))
                check(val[0] != ' ' && val[0] != '\t' && val[vlen - 1] != ' ' &&
                      val[vlen - 1] != '\t', "header value not trimmed");
            lua_pop(L, 1);
        }
        lua_settop(L, top);
    }
    free(t.head.data);
    free(t.resp.data);
    return 0;
}
