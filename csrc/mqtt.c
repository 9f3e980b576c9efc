/*
 * Device-side signatures (docs/wire.md §11): the MQTT password of a device that holds its
 * DeviceSecret, and the sign of a dynamic registration keyed by the ProductSecret. Both are
 * the hex HMAC of the parameters sorted by name, each name followed by its value, with no
 * separators (iotkit-embedded dev_sign_mqtt.c and dynreg.c, Link SDK 4 core_auth.c).
 * OpenSSL does the HMAC.
 */
#include <limits.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core.h"

/* One parameter as signed: its name, and its value (NULL: left out). */
struct field {
    const char *name;
    const char *value;
    size_t len;
};

static const EVP_MD *method_md(lua_State *L, const char *method)
{
    if (strcmp(method, "hmacsha256") == 0)
        return EVP_sha256();
    if (strcmp(method, "hmacsha1") == 0)
        return EVP_sha1();
    if (strcmp(method, "hmacmd5") == 0)
        return EVP_md5();
    luaL_error(L, "method must be hmacsha256, hmacsha1 or hmacmd5, not '%s'", method);
    return NULL;
}

/* The string field `key` of the table at index 1, pushed and kept on the stack (so the
   pointer stays valid); NULL when absent and optional. A NUL byte raises: a C signer
   would cut the value there and sign something else than the caller sees. */
static const char *get_string(lua_State *L, const char *key, int optional, size_t *len)
{
    const char *s;
    lua_getfield(L, 1, key);
    if (lua_isnil(L, -1)) {
        if (!optional)
            luaL_error(L, "field '%s' is required", key);
        *len = 0;
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "field '%s' must be a string, not %s", key, luaL_typename(L, -1));
    s = lua_tolstring(L, -1, len);
    if (memchr(s, '\0', *len) != NULL)
        luaL_error(L, "field '%s' must not contain a NUL byte", key);
    return s;
}

/* The digits-only check of timestamp and random: what goes into the signed string must
   be what the client id or the form says, and those are plain text fields. */
static void check_digits(lua_State *L, const char *key, const char *s, size_t len)
{
    size_t i;
    if (s == NULL)
        return;
    if (len == 0)
        luaL_error(L, "field '%s' must not be empty", key);
    for (i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            luaL_error(L, "field '%s' must be a string of digits", key);
}

/* Pushes the hex HMAC (keyed by the table's `secret`, by its `method`) of the fields, in
   the order given (already sorted by name), absent ones left out. */
static int push_sign(lua_State *L, const struct field *fields, size_t n)
{
    static const char lower[] = "0123456789abcdef", upper[] = "0123456789ABCDEF";
    size_t klen, mlen, dlen, i;
    const char *method = get_string(L, "method", 0, &mlen);
    const char *secret = get_string(L, "secret", 0, &klen);
    const EVP_MD *md = method_md(L, method);
    const char *digits;
    const unsigned char *data;
    unsigned char mac[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    luaL_Buffer b;
    lua_getfield(L, 1, "upper");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
        return luaL_error(L, "field 'upper' must be a boolean, not %s", luaL_typename(L, -1));
    digits = lua_toboolean(L, -1) ? upper : lower;
    if (klen > INT_MAX)
        return luaL_error(L, "field 'secret' is too long");
    luaL_buffinit(L, &b);
    for (i = 0; i < n; i++) {
        if (fields[i].value == NULL)
            continue;
        luaL_addstring(&b, fields[i].name);
        luaL_addlstring(&b, fields[i].value, fields[i].len);
    }
    luaL_pushresult(&b);
    data = (const unsigned char *)lua_tolstring(L, -1, &dlen);
    if (HMAC(md, secret, (int)klen, data, dlen, mac, &maclen) == NULL)
        return luaL_error(L, "HMAC failed");
    for (i = 0; i < maclen; i++) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 15];
    }
    lua_pushlstring(L, hex, 2 * (size_t)maclen);
    return 1;
}

/*
 * core.mqtt_sign{method=, secret=, ProductKey=, DeviceName=, client_id=, timestamp=,
 * upper=} -> hex
 * The MQTT password of a device (docs/wire.md §11): the hex HMAC, keyed by `secret` (the
 * DeviceSecret), of `clientId<client_id>deviceName<DeviceName>productKey<ProductKey>
 * timestamp<timestamp>`, clientId and timestamp left out when absent (when given they must
 * equal those of the MQTT client id). method: "hmacsha256", "hmacsha1" or "hmacmd5";
 * timestamp: a string of digits (milliseconds); upper: true for upper-case hex (what
 * iotkit-embedded sends), lower-case by default (the published examples).
 * Raises on misuse: not a table, a missing or non-string field, an unknown method, a NUL
 * byte in any field, a timestamp that is not digits.
 */
static int l_mqtt_sign(lua_State *L)
{
    struct field f[4] = {{"clientId", NULL, 0}, {"deviceName", NULL, 0},
                         {"productKey", NULL, 0}, {"timestamp", NULL, 0}};
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    f[0].value = get_string(L, "client_id", 1, &f[0].len);
    f[1].value = get_string(L, "DeviceName", 0, &f[1].len);
    f[2].value = get_string(L, "ProductKey", 0, &f[2].len);
    f[3].value = get_string(L, "timestamp", 1, &f[3].len);
    check_digits(L, "timestamp", f[3].value, f[3].len);
    return push_sign(L, f, 4);
}

/*
 * core.register_sign{method=, secret=, ProductKey=, DeviceName=, random=, upper=} -> hex
 * The sign of a dynamic registration (docs/wire.md §11, POST /auth/register/device): the
 * hex HMAC, keyed by `secret` (the ProductSecret), of
 * `deviceName<DeviceName>productKey<ProductKey>random<random>`. method and upper as for
 * mqtt_sign; random: any non-empty string without NUL (the form carries it as given).
 * Raises on misuse as mqtt_sign does.
 */
static int l_register_sign(lua_State *L)
{
    struct field f[3] = {{"deviceName", NULL, 0}, {"productKey", NULL, 0}, {"random", NULL, 0}};
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    f[0].value = get_string(L, "DeviceName", 0, &f[0].len);
    f[1].value = get_string(L, "ProductKey", 0, &f[1].len);
    f[2].value = get_string(L, "random", 0, &f[2].len);
    if (f[2].len == 0)
        return luaL_error(L, "field 'random' must not be empty");
    return push_sign(L, f, 3);
}

void aliyun_open_mqtt(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"mqtt_sign", l_mqtt_sign},
        {"register_sign", l_register_sign},
        {NULL, NULL},
    };
    luaL_setfuncs(L, funcs, 0);
}
