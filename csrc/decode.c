/*
 * Response decoding: JSON through lua-cjson with exact integers and no nulls, XML through
 * expat into the "every child is a list" tree that shape.lua types per action.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>

#include "core.h"

/* ------------------------------------------------------------------------------------ */
/* JSON                                                                                 */
/* ------------------------------------------------------------------------------------ */

/*
 * cjson turns every number into a double (Debian's build even under Lua 5.4), which rounds
 * ids beyond 2^53 and makes ApplyId 4415 come back as 4415.0. So before cjson sees the
 * text, every integer literal outside strings is rewritten into a string that starts with
 * MARK (a byte that never occurs in UTF-8) followed by 'i'; after decoding, a walk turns
 * those strings back into integers read from the literal's own digits. Numbers no Lua
 * number can hold (an integer beyond int64, a float beyond a double such as 1e400) must
 * not sink a whole answer over a field nobody reads: they are marked 't' and come back as
 * their literal text; floats that may be that large (decimal exponent 308 and up) are
 * marked 'f' and decoded on their own, text again when the result is not finite. cjson
 * does not validate UTF-8, so a genuine string may start with MARK: the pre-pass escapes
 * it as MARK 's' + original, and the walk strips the two bytes again. Nothing is
 * ambiguous.
 */
#define MARK '\xff'
#define MARK_INT 'i'
#define MARK_TEXT 't'
#define MARK_BIGFLOAT 'f'
#define MARK_STR 's'

/* Nesting bound for cjson and for the walk below (recursive, so it must be bounded). */
#define JSON_MAX_DEPTH 512

#define REG_CJSON_DECODE "aliyun.iot.core.cjson_decode"

/* A UTF-8 byte order mark, which some servers put before the document. */
#define BOM "\xEF\xBB\xBF"

/*
 * Parses an integer literal (optional '-', decimal digits, no leading zero) into *out.
 * Returns 0 when it is outside int64.
 */
static int parse_int64(const char *s, size_t len, int64_t *out)
{
    int neg = (len > 0 && s[0] == '-');
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    size_t i;
    for (i = (size_t)neg; i < len; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (limit - d) / 10u)
            return 0;
        v = v * 10u + d;
    }
    if (neg)
        *out = v == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return 1;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static size_t skip_digits(const char *s, size_t i, size_t len)
{
    while (i < len && is_digit(s[i]))
        i++;
    return i;
}

/*
 * Reads the JSON number at s[i] (a '-' or a digit) by RFC 8259's grammar. Returns its end
 * and sets *mark to what the pre-pass does with it: MARK_INT, MARK_TEXT, MARK_BIGFLOAT,
 * or 0 (an ordinary float for cjson, or a malformed number left unchanged for cjson to
 * reject).
 */
static size_t scan_number(const char *s, size_t i, size_t len, char *mark)
{
    size_t start = i, int_start, int_end, frac_start = 0, frac_end = 0;
    long exp10 = 0, magnitude;
    int64_t v;
    *mark = 0;
    if (s[i] == '-')
        i++;
    int_start = i;
    i = (i < len && s[i] == '0') ? i + 1 : skip_digits(s, i, len);
    int_end = i;
    if (int_end == int_start)
        goto malformed;
    if (i < len && s[i] == '.') {
        frac_start = i + 1;
        i = frac_end = skip_digits(s, frac_start, len);
        if (frac_end == frac_start)
            goto malformed;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        int neg = 0;
        size_t d;
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            neg = s[i++] == '-';
        for (d = i; i < len && is_digit(s[i]); i++)
            if (exp10 < 100000)
                exp10 = exp10 * 10 + (s[i] - '0');
        if (i == d)
            goto malformed;
        if (neg)
            exp10 = -exp10;
    } else if (frac_start == 0) {
        if (i < len && strchr("0123456789.eE+-", s[i]) != NULL)
            goto malformed;
        *mark = parse_int64(s + start, i - start, &v) ? MARK_INT : MARK_TEXT;
        return i;
    }
    if (i < len && strchr("0123456789.eE+-", s[i]) != NULL)
        goto malformed;
    /* The decimal exponent of the first significant digit; zero never overflows. */
    if (s[int_start] != '0') {
        magnitude = (long)(int_end - int_start) - 1 + exp10;
    } else {
        size_t k = frac_start;
        while (k < frac_end && s[k] == '0')
            k++;
        if (k >= frac_end)
            return i;
        magnitude = -(long)(k - frac_start) - 1 + exp10;
    }
    if (magnitude >= 308)
        *mark = MARK_BIGFLOAT;
    return i;
malformed:
    while (i < len && strchr("0123456789.eE+-", s[i]) != NULL)
        i++;
    return i;
}

/*
 * The index just past the closing quote of a string whose content starts at i (len when
 * the text ends first): the next '"' that a backslash does not escape, i.e. that follows
 * an even run of backslashes. memchr does the scanning: strings (names, secrets) are most
 * of an answer's bytes.
 */
static size_t string_end(const char *s, size_t i, size_t len)
{
    while (i < len) {
        const char *q = memchr(s + i, '"', len - i);
        size_t at, run;
        if (q == NULL)
            return len;
        at = (size_t)(q - s);
        run = at;
        while (run > i && s[run - 1] == '\\')
            run--;
        i = at + 1;
        if (((at - run) & 1) == 0)
            return i;
    }
    return len;
}

/*
 * Copies text into b with integer literals and oversized numbers marked (see MARK).
 * Malformed numbers are copied unchanged for cjson to reject.
 */
static void mark_numbers(luaL_Buffer *b, const char *s, size_t len)
{
    size_t i = 0, flushed = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') {
            i++;
            if (i < len && s[i] == MARK) {
                luaL_addlstring(b, s + flushed, i - flushed);
                luaL_addchar(b, MARK);
                luaL_addchar(b, MARK_STR);
                flushed = i;
            }
            i = string_end(s, i, len);
        } else if (c == '-' || is_digit((char)c)) {
            size_t start = i;
            char mark;
            i = scan_number(s, i, len, &mark);
            if (mark == 0)
                continue;
            luaL_addlstring(b, s + flushed, start - flushed);
            luaL_addchar(b, '"');
            luaL_addchar(b, MARK);
            luaL_addchar(b, mark);
            luaL_addlstring(b, s + start, i - start);
            luaL_addchar(b, '"');
            flushed = i;
        } else {
            i++;
        }
    }
    if (flushed < len)
        luaL_addlstring(b, s + flushed, len - flushed);
}

/* What decoding s needs beyond cjson (see json_needs). */
enum { JSON_MARKS, JSON_NULLS, JSON_PLAIN };

/*
 * Reads s as mark_numbers would, without copying: JSON_MARKS when the pre-pass would
 * rewrite something (an integer literal, an oversized number, a string starting with
 * MARK), else JSON_NULLS when a null may occur outside strings (the walk must remove it),
 * else JSON_PLAIN: cjson's result of the text as it is needs neither the pre-pass nor the
 * walk (its numbers are ordinary finite floats). Many answers (statuses, lists of names,
 * errors) have no number at all; most of their cost was the copy and the walk.
 */
static int json_needs(const char *s, size_t len)
{
    size_t i = 0;
    int nulls = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') {
            i++;
            if (i < len && s[i] == MARK)
                return JSON_MARKS;
            while (i < len && s[i] != '"')
                i += (s[i] == '\\') ? 2 : 1;
            i++;
        } else if (c == '-' || is_digit((char)c)) {
            char mark;
            i = scan_number(s, i, len, &mark);
            if (mark != 0)
                return JSON_MARKS;
        } else {
            if (c == 'n')
                nulls = 1;
            i++;
        }
    }
    return nulls ? JSON_NULLS : JSON_PLAIN;
}

/*
 * Pushes a literal (ending where a non-number character or the string ends) as the nearest
 * Lua float, +-HUGE_VAL beyond a double: core.json_decode(text, true), where a caller must
 * tell a number from a string whatever its size.
 */
static void push_as_float(lua_State *L, const char *s)
{
    lua_pushnumber(L, (lua_Number)strtod(s, NULL));
}

/*
 * Pushes the integer literal s[0..len) (already validated) as the Lua value it stands for
 * (with `numbers`, never as text).
 */
static void push_integer_literal(lua_State *L, const char *s, size_t len, int numbers)
{
    int64_t v = 0;
    parse_int64(s, len, &v);
#if COMPAT_HAS_INTEGERS
    (void)numbers; /* int64 fits a Lua integer */
    lua_pushinteger(L, (lua_Integer)v);
#else
    /* No integer subtype: doubles are exact up to 2^53; beyond, the digits travel as text. */
    if (v <= ((int64_t)1 << 53) && v >= -((int64_t)1 << 53))
        lua_pushnumber(L, (lua_Number)v);
    else if (numbers)
        push_as_float(L, s);
    else
        lua_pushlstring(L, s, len);
#endif
}

static int is_json_null(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

static void push_cjson_decode(lua_State *L);

/*
 * Pushes a number that may be beyond a double (marked MARK_BIGFLOAT): cjson's own reading
 * of the literal when it is finite, the literal's text when not.
 */
static void push_big_float(lua_State *L, const char *s, size_t len)
{
    push_cjson_decode(L);
    lua_pushlstring(L, s, len);
    lua_call(L, 1, 1);
    if (lua_type(L, -1) != LUA_TNUMBER || !isfinite((double)lua_tonumber(L, -1))) {
        lua_pop(L, 1);
        lua_pushlstring(L, s, len);
    }
}

/*
 * Replaces a decoded scalar at the stack top by its final form (marked strings unmarked;
 * with `numbers`, a number no Lua number holds exactly as a float, see push_as_float),
 * setting *changed when it did. Returns an error message or NULL.
 */
static const char *fix_scalar(lua_State *L, int *changed, int numbers)
{
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        if (len >= 2 && s[0] == MARK) {
            if (s[1] == MARK_INT)
                push_integer_literal(L, s + 2, len - 2, numbers);
            else if (numbers && (s[1] == MARK_BIGFLOAT || s[1] == MARK_TEXT))
                push_as_float(L, s + 2);
            else if (s[1] == MARK_BIGFLOAT)
                push_big_float(L, s + 2, len - 2);
            else
                lua_pushlstring(L, s + 2, len - 2);
            lua_replace(L, -2);
            *changed = 1;
        }
    } else if (lua_type(L, -1) == LUA_TNUMBER) {
        if (!isfinite((double)lua_tonumber(L, -1)))
            return "number out of range";
    }
    return NULL;
}

static const char *fix_value(lua_State *L, int depth, int *changed, int numbers);

/*
 * Array (cjson gives 1..n without holes, nulls as lightuserdata): a null keeps its place
 * as false, so the elements after it keep their indexes and the list has no hole. Only a
 * value that changed is stored again (tables are fixed in place).
 */
static const char *fix_array(lua_State *L, int t, size_t n, int depth, int numbers)
{
    size_t i;
    for (i = 1; i <= n; i++) {
        const char *err;
        int changed = 1;
        lua_rawgeti(L, t, (int)i);
        if (is_json_null(L, -1)) {
            lua_pop(L, 1);
            lua_pushboolean(L, 0);
        } else if ((err = fix_value(L, depth + 1, &changed, numbers)) != NULL) {
            return err;
        }
        if (changed)
            lua_rawseti(L, t, (int)i);
        else
            lua_pop(L, 1);
    }
    return NULL;
}

/*
 * Object: drop null members, fix values in place (allowed during lua_next; only a value
 * that changed is stored again), unmark keys.
 */
static const char *fix_object(lua_State *L, int t, int depth, int numbers)
{
    int marked_keys = 0;
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        size_t klen = 0;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &klen) : NULL;
        if (klen >= 1 && k[0] == MARK) {
            if (klen < 2 || k[1] != MARK_STR)
                return "Expected object key string but found number";
            marked_keys++;
        }
        if (is_json_null(L, -1)) {
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, t);
            continue;
        }
        {
            int changed = 0;
            const char *err = fix_value(L, depth + 1, &changed, numbers);
            if (err != NULL)
                return err;
            if (!changed) {
                lua_pop(L, 1);
                continue;
            }
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, t);
    }
    if (marked_keys > 0) {
        /* Rare (invalid UTF-8 keys starting with MARK): move them in a second pass. */
        int moves;
        lua_newtable(L);
        moves = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, t) != 0) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
            if (k[0] == MARK) {
                lua_pushvalue(L, -2);
                lua_insert(L, -2);
                lua_rawset(L, moves);
            } else {
                lua_pop(L, 1);
            }
        }
        lua_pushnil(L);
        while (lua_next(L, moves) != 0) {
            size_t klen;
            const char *k = lua_tolstring(L, -2, &klen);
            lua_pushlstring(L, k + 2, klen - 2);
            lua_insert(L, -2);
            lua_rawset(L, t);
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, t);
        }
        lua_pop(L, 1);
    }
    return NULL;
}

/*
 * Replaces the decoded value at the stack top by its final form, setting *changed when it
 * is another value (a table is fixed in place); error message or NULL.
 */
static const char *fix_value(lua_State *L, int depth, int *changed, int numbers)
{
    int t;
    size_t n;
    *changed = 0;
    if (lua_type(L, -1) != LUA_TTABLE)
        return fix_scalar(L, changed, numbers);
    if (depth > JSON_MAX_DEPTH)
        return "JSON nested too deeply";
    luaL_checkstack(L, 6, "JSON nested too deeply");
    t = lua_gettop(L);
    n = lua_rawlen(L, t);
    /* JSON object keys are strings, so a table with a border > 0 is an array. */
    return n > 0 ? fix_array(L, t, n, depth, numbers) : fix_object(L, t, depth, numbers);
}

/*
 * Pushes the decode function of a private cjson.safe instance (its settings must not
 * touch the application's cjson): no NaN/Infinity/hex literals, bounded depth.
 */
static void push_cjson_decode(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, REG_CJSON_DECODE);
    if (!lua_isnil(L, -1))
        return;
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson.safe");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "new");
    if (lua_isfunction(L, -1)) {
        lua_call(L, 0, 1);
        lua_replace(L, -2);
        lua_getfield(L, -1, "decode_invalid_numbers");
        lua_pushboolean(L, 0);
        lua_call(L, 1, 0);
        lua_getfield(L, -1, "decode_max_depth");
        lua_pushinteger(L, JSON_MAX_DEPTH);
        lua_call(L, 1, 0);
    } else {
        lua_pop(L, 1); /* an old cjson without new(): use the shared instance as it is */
    }
    lua_getfield(L, -1, "decode");
    luaL_checktype(L, -1, LUA_TFUNCTION);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, REG_CJSON_DECODE);
    lua_replace(L, -2);
}

/*
 * The fast path: most answers (every page of devices) are objects, arrays, strings
 * without escapes, integers and true/false/null. Those are decoded here in one pass,
 * straight into tables made at their final size; anything else (an escape, a control
 * character in a string, a float, a number beyond int64, nesting deeper than
 * FAST_MAX_DEPTH, a syntax error, a document that is null) makes the fast path give up,
 * and the document goes the general way (cjson, above), which alone decides what such a
 * text is and says what is wrong with it. For the texts it takes, the fast path gives
 * what the general way gives: integers through push_integer_literal, null members
 * removed (a later duplicate key still wins), null elements false, bytes kept as they
 * are.
 */
#define FAST_MAX_DEPTH 32
#define FAST_BATCH 32 /* items held on the stack before they go into their table */

struct fast {
    lua_State *L;
    int numbers;
    const char *s;
    size_t i, len;
};

enum { FAST_FAIL = 0, FAST_VALUE, FAST_NULL };

static void fast_ws(struct fast *f)
{
    while (f->i < f->len) {
        char c = f->s[f->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        f->i++;
    }
}

/* Pushes the string at f->i (its opening quote); 0 when it needs the general way. */
static int fast_string(struct fast *f)
{
    size_t start = f->i + 1, j;
    for (j = start; j < f->len; j++) {
        unsigned char c = (unsigned char)f->s[j];
        if (c == '"')
            break;
        if (c == '\\' || c < 0x20)
            return 0;
    }
    if (j >= f->len)
        return 0;
    lua_pushlstring(f->L, f->s + start, j - start);
    f->i = j + 1;
    return 1;
}

static int fast_value(struct fast *f, int depth);

/*
 * Moves the n items (values, or key/value pairs when pairs is set) above index base into
 * the container's table, made at first with room for them (*t is 0 until then).
 */
static void fast_flush(lua_State *L, int base, int *t, int n, int pairs, int *next_index)
{
    int k;
    if (*t == 0) {
        lua_createtable(L, pairs ? 0 : n, pairs ? n : 0);
        lua_insert(L, base);
        *t = base;
    }
    for (k = 0; k < n; k++) {
        if (pairs) {
            lua_pushvalue(L, *t + 1 + 2 * k);
            lua_pushvalue(L, *t + 2 + 2 * k);
            lua_rawset(L, *t);
        } else {
            lua_pushvalue(L, *t + 1 + k);
            lua_rawseti(L, *t, (*next_index)++);
        }
    }
    lua_settop(L, *t);
}

/* An object or array at f->i (its opening bracket). */
static int fast_container(struct fast *f, int depth)
{
    lua_State *L = f->L;
    int is_object = f->s[f->i] == '{';
    char close = is_object ? '}' : ']';
    int base = lua_gettop(L) + 1, t = 0, n = 0, next_index = 1;
    if (depth > FAST_MAX_DEPTH || !lua_checkstack(L, 2 * FAST_BATCH + 8))
        return 0;
    f->i++;
    fast_ws(f);
    if (f->i < f->len && f->s[f->i] == close) {
        f->i++;
        lua_createtable(L, 0, 0);
        return 1;
    }
    for (;;) {
        int got;
        if (is_object) {
            if (f->i >= f->len || f->s[f->i] != '"' || !fast_string(f))
                return 0;
            fast_ws(f);
            if (f->i >= f->len || f->s[f->i] != ':')
                return 0;
            f->i++;
            fast_ws(f);
        }
        got = fast_value(f, depth + 1);
        if (got == FAST_FAIL)
            return 0;
        if (got == FAST_NULL) {
            if (is_object)
                lua_pushnil(L); /* removes the member (a later duplicate still wins) */
            else
                lua_pushboolean(L, 0);
        }
        if (++n == FAST_BATCH) {
            fast_flush(L, base, &t, n, is_object, &next_index);
            base = t + 1;
            n = 0;
        }
        fast_ws(f);
        if (f->i >= f->len)
            return 0;
        if (f->s[f->i] == ',') {
            f->i++;
            fast_ws(f);
            continue;
        }
        if (f->s[f->i] != close)
            return 0;
        f->i++;
        break;
    }
    if (n > 0 || t == 0)
        fast_flush(L, base, &t, n, is_object, &next_index);
    return 1;
}

/* Pushes the value at f->i: FAST_VALUE, FAST_NULL (nothing pushed) or FAST_FAIL. */
static int fast_value(struct fast *f, int depth)
{
    const char *s = f->s;
    size_t left = f->len - f->i;
    char c;
    if (left == 0)
        return FAST_FAIL;
    c = s[f->i];
    if (c == '"')
        return fast_string(f) ? FAST_VALUE : FAST_FAIL;
    if (c == '{' || c == '[')
        return fast_container(f, depth) ? FAST_VALUE : FAST_FAIL;
    if (c == '-' || is_digit(c)) {
        char mark;
        size_t end = scan_number(s, f->i, f->len, &mark);
        if (mark != MARK_INT)
            return FAST_FAIL;
        push_integer_literal(f->L, s + f->i, end - f->i, f->numbers);
        f->i = end;
        return FAST_VALUE;
    }
    if (left >= 4 && memcmp(s + f->i, "true", 4) == 0) {
        lua_pushboolean(f->L, 1);
        f->i += 4;
        return FAST_VALUE;
    }
    if (left >= 5 && memcmp(s + f->i, "false", 5) == 0) {
        lua_pushboolean(f->L, 0);
        f->i += 5;
        return FAST_VALUE;
    }
    if (left >= 4 && memcmp(s + f->i, "null", 4) == 0) {
        f->i += 4;
        return FAST_NULL;
    }
    return FAST_FAIL;
}

/* Pushes the document's value and returns 1, or leaves the stack as it was and returns 0. */
static int fast_decode(lua_State *L, const char *text, size_t len, int numbers)
{
    struct fast f;
    int top = lua_gettop(L);
    f.L = L;
    f.numbers = numbers;
    f.s = text;
    f.i = 0;
    f.len = len;
    fast_ws(&f);
    if (fast_value(&f, 0) == FAST_VALUE) {
        fast_ws(&f);
        if (f.i == f.len)
            return 1;
    }
    lua_settop(L, top);
    return 0;
}

/*
 * core.json_decode(text [, numbers]) -> value | nil, message
 * Decodes a JSON document through lua-cjson. Integer literals (no fraction, no exponent)
 * come back exact: Lua integers over the whole int64 range on 5.3/5.4; on 5.1/5.2/LuaJIT
 * numbers when |v| <= 2^53 and decimal strings beyond. A number no Lua number holds (an
 * integer literal beyond int64, a float that overflows a double such as 1e400) comes back
 * as its literal text, a string, so a field nobody reads cannot sink the answer (whoever
 * reads it type-checks it); with `numbers` true it comes back as the nearest float instead
 * (+-inf beyond a double), so that a caller wanting strings (a manifest) refuses it as a
 * number rather than take its digits for a name. null object members are removed; a null
 * array element becomes false, keeping the indexes after it; so no cjson.null ever
 * reaches a caller. A
 * document that is null itself is an error. A UTF-8 byte order mark before the document
 * is skipped. Malformed or truncated text, nesting beyond 512 levels -> nil, message.
 * Raises only when text is not a string.
 */
static int l_json_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    int numbers = lua_toboolean(L, 2);
    const char *err;
    int needs;
    luaL_Buffer b;

    lua_settop(L, 1);
    if (len >= 3 && memcmp(text, BOM, 3) == 0) {
        /* replaced, so that error positions count from the document's first character */
        lua_pushlstring(L, text + 3, len - 3);
        lua_replace(L, 1);
        text = lua_tolstring(L, 1, &len);
    }
    if (fast_decode(L, text, len, numbers))
        return 1;
    push_cjson_decode(L); /* 2 */
    needs = json_needs(text, len);
    if (needs == JSON_MARKS) {
#if LUA_VERSION_NUM >= 502
        /* sized once for the usual answer (a few marks), not grown by doubling */
        luaL_buffinitsize(L, &b, len + len / 8 + 64);
#else
        luaL_buffinit(L, &b);
#endif
        mark_numbers(&b, text, len);
        luaL_pushresult(&b); /* 3 */
    } else {
        lua_pushvalue(L, 1); /* 3: nothing to rewrite */
    }
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_call(L, 1, 2); /* 4, 5 */
    if (lua_isnil(L, 4) && !lua_isnil(L, 5)) {
        /* cjson's message counts characters of the rewritten text: ask again on the
           original so positions are the caller's (the failure does not depend on the
           rewriting, but keep our message if the original somehow decodes). */
        lua_pushvalue(L, 2);
        lua_pushvalue(L, 1);
        lua_call(L, 1, 2); /* 6, 7 */
        lua_pushnil(L);
        lua_pushvalue(L, lua_isnil(L, 6) && !lua_isnil(L, 7) ? 7 : 5);
        return 2;
    }
    lua_settop(L, 4);
    if (is_json_null(L, 4)) {
        lua_pushnil(L);
        lua_pushliteral(L, "JSON document is null");
        return 2;
    }
    err = NULL;
    if (needs != JSON_PLAIN) {
        int changed;
        err = fix_value(L, 0, &changed, numbers);
    }
    if (err != NULL) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_settop(L, 4);
    return 1;
}

/* ------------------------------------------------------------------------------------ */
/* XML                                                                                  */
/* ------------------------------------------------------------------------------------ */

/* Nesting bound: API responses are a handful of levels deep. */
#define XML_MAX_DEPTH 64

/*
 * Parse state. The Lua stack holds, per open element, two slots: its name and either
 * its children table or false (no child yet). Text is only kept for elements without
 * children, so one buffer, reset at every tag, is enough.
 */
struct xml_state {
    lua_State *L;
    XML_Parser parser;
    int base;          /* stack index just below the first element's slots */
    int depth;         /* open elements */
    char *text;
    size_t text_len, text_cap;
    const char *error; /* our reason for stopping the parser, if any */
};

static void xml_fail(struct xml_state *st, const char *why)
{
    if (st->error == NULL) {
        st->error = why;
        XML_StopParser(st->parser, XML_FALSE);
    }
}

static void XMLCALL xml_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct xml_state *st = ud;
    lua_State *L = st->L;
    (void)atts; /* the API carries nothing in attributes */
    if (st->error != NULL)
        return;
    if (st->depth >= XML_MAX_DEPTH) {
        xml_fail(st, "XML nested too deeply");
        return;
    }
    if (st->depth > 0) {
        int parent = st->base + 2 * st->depth; /* the parent's table-or-false slot */
        if (!lua_istable(L, parent)) {
            lua_newtable(L);
            lua_replace(L, parent);
        }
    }
    lua_pushstring(L, name);
    lua_pushboolean(L, 0);
    st->depth++;
    st->text_len = 0;
}

static void XMLCALL xml_end(void *ud, const XML_Char *name)
{
    struct xml_state *st = ud;
    lua_State *L = st->L;
    (void)name;
    if (st->error != NULL)
        return;
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_pushlstring(L, st->text != NULL ? st->text : "", st->text_len);
    }
    st->text_len = 0;
    st->depth--;
    if (st->depth > 0) {
        int parent = st->base + 2 * st->depth;
        size_t n;
        /* stack: ..., parent table, name, value */
        lua_pushvalue(L, -2);
        lua_rawget(L, parent);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_newtable(L);
            lua_pushvalue(L, -3);
            lua_pushvalue(L, -2);
            lua_rawset(L, parent);
        }
        n = lua_rawlen(L, -1);
        lua_insert(L, -2);
        lua_rawseti(L, -2, (int)n + 1);
        lua_pop(L, 2);
    }
    /* the root's name and value stay on the stack as the result */
}

static void XMLCALL xml_text(void *ud, const XML_Char *s, int len)
{
    struct xml_state *st = ud;
    size_t need;
    if (st->error != NULL || st->depth == 0 || lua_istable(st->L, -1))
        return; /* text beside child elements is layout */
    need = st->text_len + (size_t)len;
    if (need > st->text_cap) {
        size_t cap = st->text_cap ? st->text_cap : 256;
        char *p;
        while (cap < need)
            cap *= 2;
        p = realloc(st->text, cap);
        if (p == NULL) {
            xml_fail(st, "not enough memory");
            return;
        }
        st->text = p;
        st->text_cap = cap;
    }
    memcpy(st->text + st->text_len, s, (size_t)len);
    st->text_len = need;
}

/* Entities declared in a DTD are how "billion laughs" starts: no DTD at all. */
static void XMLCALL xml_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                                const XML_Char *pubid, int has_internal_subset)
{
    (void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
    xml_fail(ud, "XML DOCTYPE not allowed");
}

/* Runs the parse under lua_pcall, so a Lua memory error cannot leak the parser. */
static int xml_parse_protected(lua_State *L)
{
    struct xml_state *st = lua_touserdata(L, 1);
    size_t len;
    const char *text = lua_tolstring(L, 2, &len);
    lua_settop(L, 0);
    luaL_checkstack(L, 2 * XML_MAX_DEPTH + 8, "XML nested too deeply");
    st->L = L;
    st->base = 0;
    if (XML_Parse(st->parser, text, (int)len, XML_TRUE) == XML_STATUS_ERROR || st->error) {
        lua_settop(L, 0);
        lua_pushnil(L);
        lua_pushfstring(L, "%s at line %d, column %d",
                        st->error ? st->error : XML_ErrorString(XML_GetErrorCode(st->parser)),
                        (int)XML_GetCurrentLineNumber(st->parser),
                        (int)XML_GetCurrentColumnNumber(st->parser) + 1);
        return 2;
    }
    return 2; /* root name, root value */
}

/*
 * core.xml_decode(text) -> root_name, tree | nil, message
 * Decodes an XML document with expat. An element with child elements becomes a table
 * mapping each child's name to the array of its occurrences' values (always an array,
 * even for one occurrence); an element without child elements is its text (CDATA
 * included; "" when empty). Attributes, comments and text beside child elements are
 * ignored. A UTF-8 byte order mark before the document is skipped (expat reads it).
 * Malformed or truncated XML, a DOCTYPE, or nesting beyond 64 levels -> nil, message
 * with the line and column. Raises only when text is not a string.
 */
static int l_xml_decode(lua_State *L)
{
    size_t len;
    struct xml_state st;
    int status;
    luaL_checklstring(L, 1, &len);
    if (len > (size_t)INT32_MAX) {
        lua_pushnil(L);
        lua_pushliteral(L, "XML document too large");
        return 2;
    }
    memset(&st, 0, sizeof st);
    st.parser = XML_ParserCreate("UTF-8");
    if (st.parser == NULL)
        return luaL_error(L, "not enough memory");
    XML_SetUserData(st.parser, &st);
    XML_SetElementHandler(st.parser, xml_start, xml_end);
    XML_SetCharacterDataHandler(st.parser, xml_text);
    XML_SetStartDoctypeDeclHandler(st.parser, xml_doctype);
    lua_settop(L, 1);
    lua_pushcfunction(L, xml_parse_protected);
    lua_pushlightuserdata(L, &st);
    lua_pushvalue(L, 1);
    status = lua_pcall(L, 2, 2, 0);
    XML_ParserFree(st.parser);
    free(st.text);
    if (status != 0)
        return lua_error(L);
    return 2;
}

void aliyun_open_decode(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"json_decode", l_json_decode},
        {"xml_decode", l_xml_decode},
        {NULL, NULL},
    };
    luaL_setfuncs(L, funcs, 0);
}
