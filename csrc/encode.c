/*
 * Percent-encoding as Alibaba Cloud's RPC and ACS3 signatures define it (reference §2.2):
 * UTF-8 bytes, A-Z a-z 0-9 - _ . ~ kept, every other byte %XY in upper-case hex, so space
 * is %20 (never +) and * is %2A. libcurl's curl_easy_escape does exactly this (RFC 3986
 * unreserved set, upper-case hex), so it is the encoder.
 */
#include <limits.h>

#include <curl/curl.h>

#include "core.h"

void aliyun_add_encoded(luaL_Buffer *b, const char *s, size_t len)
{
    char *out;

    if (len == 0)
        return;
    if (len > (size_t)INT_MAX)
        luaL_error(b->L, "value too long to percent-encode");
    /* The handle argument is ignored since libcurl 7.82; NULL is accepted. */
    out = curl_easy_escape(NULL, s, (int)len);
    if (out == NULL)
        luaL_error(b->L, "out of memory while percent-encoding");
    luaL_addstring(b, out);
    curl_free(out);
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
