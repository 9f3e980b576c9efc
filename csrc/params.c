/*
 * Flattening of list parameters, the one place that does it (docs/wire.md §1, "Parameter
 * placement"): {DeviceName = {"a", "b"}} becomes DeviceName.1, DeviceName.2, and
 * {DeviceNameList = {{DeviceName = "a"}}} becomes DeviceNameList.1.DeviceName, as the
 * official SDKs' flatRepeatedList does. A table with string keys nests as Name.Key.
 */
#include <string.h>

#include "core.h"

#define MAX_DEPTH 8
#define MAX_NAME 256

/* Failure details travel back up the recursion so flatten can return nil, msg, name. */
struct flat_error {
    const char *message;
    char name[MAX_NAME];
};

static int is_scalar(int t)
{
    return t == LUA_TSTRING || t == LUA_TNUMBER || t == LUA_TBOOLEAN;
}

/*
 * Counts the keys of the table at idx and checks that they are exactly 1..n (an array with
 * no hole) or all strings (a record). Returns n for an array, -1 for a record, -2 for a mix.
 */
lua_Integer aliyun_table_kind(lua_State *L, int idx)
{
    lua_Integer count = 0, max = 0;
    int strings = 0;

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) == LUA_TSTRING) {
            strings++;
        } else if (lua_type(L, -1) == LUA_TNUMBER) {
            lua_Number n = lua_tonumber(L, -1);
            if (n < 1 || n > 1e9 || n != (lua_Number)(lua_Integer)n)
                return -2;
            if ((lua_Integer)n > max)
                max = (lua_Integer)n;
        } else {
            return -2;
        }
    }
    if (strings == count && count > 0)
        return -1;
    if (strings > 0 || max != count)
        return -2;
    return count;
}

static int flatten_value(lua_State *L, int out, char *name, size_t len, int depth,
                         struct flat_error *err);

/* Writes the decimal digits of i (1-based list index) at out; returns their count. */
size_t aliyun_format_index(char *out, lua_Integer i)
{
    char rev[24];
    size_t n = 0, k;
    do {
        rev[n++] = (char)('0' + (int)(i % 10));
        i /= 10;
    } while (i > 0);
    for (k = 0; k < n; k++)
        out[k] = rev[n - 1 - k];
    return n;
}

/* How many flat entries params will give, near enough to size the result table once
   (growing it entry by entry rehashed a 1,000-name request ten times). */
static int estimate_entries(lua_State *L, int idx)
{
    size_t total = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -1) == LUA_TTABLE) {
            size_t n = lua_rawlen(L, -1), fields = 1;
            if (n > 0) {
                lua_rawgeti(L, -1, 1);
                if (lua_type(L, -1) == LUA_TTABLE) {
                    fields = 0;
                    lua_pushnil(L);
                    while (lua_next(L, -2) != 0) {
                        lua_pop(L, 1);
                        fields++;
                    }
                }
                lua_pop(L, 1);
            }
            total += n * fields;
        } else {
            total++;
        }
        lua_pop(L, 1);
    }
    return total > 1000000 ? 1000000 : (int)total;
}

static int set_error(struct flat_error *err, const char *message, const char *name, size_t len)
{
    err->message = message;
    if (len >= MAX_NAME)
        len = MAX_NAME - 1;
    memcpy(err->name, name, len);
    err->name[len] = '\0';
    return 0;
}

/* Appends ".suffix" to name[0..len) and flattens the value at the stack top under it. */
static int flatten_child(lua_State *L, int out, char *name, size_t len, const char *suffix,
                         size_t slen, int depth, struct flat_error *err)
{
    if (len + 1 + slen >= MAX_NAME)
        return set_error(err, "parameter name too long", name, len);
    name[len] = '.';
    memcpy(name + len + 1, suffix, slen);
    return flatten_value(L, out, name, len + 1 + slen, depth + 1, err);
}

/* Flattens the value at the stack top (popping it) under name[0..len) into table out. */
static int flatten_value(lua_State *L, int out, char *name, size_t len, int depth,
                         struct flat_error *err)
{
    int t = lua_type(L, -1);
    int ok = 1;

    if (is_scalar(t)) {
        lua_pushlstring(L, name, len);
        lua_insert(L, -2);
        lua_rawset(L, out);
        return 1;
    }
    if (t != LUA_TTABLE) {
        lua_pop(L, 1);
        return set_error(err, "value must be a string, number, boolean or list", name, len);
    }
    if (depth >= MAX_DEPTH) {
        lua_pop(L, 1);
        return set_error(err, "lists nested too deeply", name, len);
    }
    luaL_checkstack(L, 4, "flatten");
    {
        int tab = lua_gettop(L);
        lua_Integer n = aliyun_table_kind(L, tab);
        if (n == -2) {
            lua_pop(L, 1);
            return set_error(err, "a list must have keys 1..n with no hole", name, len);
        }
        if (n >= 0) {
            lua_Integer i;
            for (i = 1; ok && i <= n; i++) {
                char idx[24];
                size_t ilen = aliyun_format_index(idx, i);
                lua_rawgeti(L, tab, (int)i);
                ok = flatten_child(L, out, name, len, idx, ilen, depth, err);
            }
        } else {
            lua_pushnil(L);
            while (ok && lua_next(L, tab) != 0) {
                size_t klen;
                const char *k = lua_tolstring(L, -2, &klen);
                ok = flatten_child(L, out, name, len, k, klen, depth, err);
            }
            if (!ok)
                lua_pop(L, 1); /* the key left by the interrupted lua_next */
        }
        lua_pop(L, 1);
    }
    return ok;
}

/*
 * core.flatten(params) -> flat | nil, message, parameter
 * params: table of API parameter name -> string | number | boolean | list | record.
 * flat: a new table of flat names (Name, Name.N, Name.N.Field) to the scalar values as
 * given. A hole in a list, a mix of list and record keys, a value of another type or
 * nesting deeper than 8 returns nil, a message and the offending (flat) parameter name.
 * Raises when params is not a table or has a non-string key.
 */
static int l_flatten(lua_State *L)
{
    char name[MAX_NAME];
    struct flat_error err;
    int ok = 1;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_createtable(L, 0, estimate_entries(L, 1));
    lua_pushnil(L);
    while (ok && lua_next(L, 1) != 0) {
        size_t klen;
        const char *k;
        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_error(L, "parameter names must be strings");
        k = lua_tolstring(L, -2, &klen);
        if (klen >= MAX_NAME)
            return luaL_error(L, "parameter name too long");
        memcpy(name, k, klen);
        ok = flatten_value(L, 2, name, klen, 0, &err);
    }
    if (!ok) {
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        lua_pushstring(L, err.name);
        return 3;
    }
    lua_settop(L, 2);
    return 1;
}

void aliyun_open_params(lua_State *L)
{
    lua_pushcfunction(L, l_flatten);
    lua_setfield(L, -2, "flatten");
}
