/*
 * Percent-encoding as Alibaba Cloud's RPC and ACS3 signatures define it (docs/wire.md §2.2):
 * UTF-8 bytes, A-Z a-z 0-9 - _ . ~ kept, every other byte %XY in upper-case hex, so space
 * is %20 (never +) and * is %2A.
 *
 * libcurl's curl_easy_escape gives the same bytes, but it allocates per call and grows its
 * output a byte at a time; signing a 1,000-name BatchCheckDeviceNames request encodes
 * 2,000 strings and then the whole canonical query again, and with it signing ran at a
 * fifth of the speed. Signing is what this library exists for, so the encoder is ours: a
 * lookup table, exact output sizes, no allocation. spec/sign_spec.lua checks it against
 * every byte value and the official vectors.
 */
#include <string.h>

#include "core.h"

static const char HEX[] = "0123456789ABCDEF";

/* 1 for the bytes RFC 3986 leaves unreserved, 0 for the ones that become %XY. */
static const unsigned char UNRESERVED[256] = {
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1, ['-'] = 1, ['_'] = 1, ['.'] = 1, ['~'] = 1,
};

size_t aliyun_unreserved_prefix(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len && UNRESERVED[p[i]])
        i++;
    return i;
}

char *aliyun_encode_to(char *out, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i;
    for (i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (UNRESERVED[c]) {
            *out++ = (char)c;
        } else {
            out[0] = '%';
            out[1] = HEX[c >> 4];
            out[2] = HEX[c & 15];
            out += 3;
        }
    }
    return out;
}

void aliyun_encode_both(char **once, char **twice, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    char *c = *once, *t = *twice;
    size_t i;
    for (i = 0; i < len; i++) {
        unsigned char b = p[i];
        if (UNRESERVED[b]) {
            *c++ = (char)b;
            *t++ = (char)b;
        } else {
            /* encode(encode(b)) is "%25" followed by b's two hex digits */
            c[0] = t[0] = '%';
            c[1] = t[3] = HEX[b >> 4];
            c[2] = t[4] = HEX[b & 15];
            t[1] = '2';
            t[2] = '5';
            c += 3;
            t += 5;
        }
    }
    *once = c;
    *twice = t;
}

void aliyun_add_encoded(luaL_Buffer *b, const char *s, size_t len)
{
    char out[3 * 256];
    while (len > 0) {
        size_t chunk = len < 256 ? len : 256;
        char *end = aliyun_encode_to(out, s, chunk);
        luaL_addlstring(b, out, (size_t)(end - out));
        s += chunk;
        len -= chunk;
    }
}

/*
 * core.percent_encode(s) -> string
 * s: a string (a number is converted by Lua). Raises on other types.
 */
static int l_percent_encode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;

    luaL_buffinit(L, &b);
    aliyun_add_encoded(&b, s, len);
    luaL_pushresult(&b);
    return 1;
}

void aliyun_open_encode(lua_State *L)
{
    lua_pushcfunction(L, l_percent_encode);
    lua_setfield(L, -2, "percent_encode");
}
