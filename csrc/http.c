/*
 * Transport over libcurl: a Session owns a multi handle (whose connection cache keeps
 * connections alive across calls), a small pool of easy handles and a share object for
 * TLS sessions. perform() and perform_many() run through the same multi loop, so both
 * reuse the same connections. No Lua code runs while transfers are in flight.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "core.h"

#ifndef ALIYUN_IOT_VERSION
#define ALIYUN_IOT_VERSION "0.1.0"
#endif

#define SESSION_MT "aliyun.iot.core.Session"
#define TRANSFERS_MT "aliyun.iot.core.Transfers"

#define DEFAULT_CONNECT_TIMEOUT 5.0            /* seconds */
#define DEFAULT_TIMEOUT 30.0                   /* seconds, whole request */
#define DEFAULT_MAX_RESPONSE (16.0 * 1024 * 1024) /* bytes, headers and body */
#define MAX_TIMEOUT 1e6                        /* seconds: keeps every timeout finite */
#define MAX_CONCURRENCY 1000

/* ------------------------------------------------------------------------------------ */
/* Process-wide libcurl initialisation                                                  */
/* ------------------------------------------------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

/* curl_global_init is not thread-safe before 7.84 and must run once, before any handle;
   global cleanup would break other sessions (and other libraries), so it never runs. */
static void curl_init_once(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ------------------------------------------------------------------------------------ */
/* Session                                                                              */
/* ------------------------------------------------------------------------------------ */

struct session {
    CURLM *multi;     /* NULL once closed */
    CURLSH *share;
    CURL **handles;   /* pool; handles[0] serves perform() */
    int nhandles;
    char *user_agent;
    struct transfers *one; /* perform()'s transfer and its buffers, kept between calls */
    int one_busy;          /* while its response is being pushed (a finalizer may call in) */
};

static void transfers_free(struct transfers *ts);

static void session_close(struct session *s)
{
    int i;
    for (i = 0; i < s->nhandles; i++)
        curl_easy_cleanup(s->handles[i]);
    free(s->handles);
    s->handles = NULL;
    s->nhandles = 0;
    if (s->multi != NULL)
        curl_multi_cleanup(s->multi);
    s->multi = NULL;
    if (s->share != NULL)
        curl_share_cleanup(s->share);
    s->share = NULL;
    free(s->user_agent);
    s->user_agent = NULL;
    /* perform() may be pushing its result from s->one (a finalizer closed the session):
       it frees the transfer itself once done. */
    if (s->one != NULL && !s->one_busy) {
        transfers_free(s->one);
        free(s->one);
        s->one = NULL;
    }
}

static struct session *check_session(lua_State *L)
{
    struct session *s = luaL_checkudata(L, 1, SESSION_MT);
    if (s->multi == NULL)
        luaL_error(L, "attempt to use a closed " SESSION_MT);
    return s;
}

/* Grows the pool to at least n easy handles; raises when libcurl cannot allocate. */
static void ensure_handles(lua_State *L, struct session *s, int n)
{
    CURL **grown;
    if (s->nhandles >= n)
        return;
    grown = realloc(s->handles, (size_t)n * sizeof *grown);
    if (grown == NULL)
        luaL_error(L, "not enough memory");
    s->handles = grown;
    while (s->nhandles < n) {
        CURL *e = curl_easy_init();
        if (e == NULL)
            luaL_error(L, "curl_easy_init failed");
        s->handles[s->nhandles++] = e;
    }
    /* Idle connections kept alive: one per handle is what a next batch can use. */
    curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)(n < 4 ? 4 : n));
}

/*
 * core.session([opts]) -> Session
 * opts: {user_agent = string} (default "aliyun-iot/<version> libcurl/<version> Lua/<version>").
 * A Session keeps connections alive between requests (HTTP/1.1 keep-alive, TLS session
 * reuse). It is closed by close(), by <close> (Lua 5.4) or by the garbage collector.
 * Raises on a wrong option, or when libcurl cannot be initialised.
 */
static int l_session(lua_State *L)
{
    struct session *s;
    const char *ua = NULL;
    char dflt[160];

    pthread_once(&curl_once, curl_init_once);
    if (curl_init_result != CURLE_OK)
        return luaL_error(L, "curl_global_init failed: %s", curl_easy_strerror(curl_init_result));
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 1) != 0) {
            lua_pop(L, 1);
            if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "user_agent") != 0)
                return luaL_error(L, "unknown session option '%s'",
                                  lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                                 : luaL_typename(L, -1));
        }
        lua_getfield(L, 1, "user_agent");
        if (!lua_isnil(L, -1)) {
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_error(L, "session option 'user_agent' must be a string");
            ua = lua_tostring(L, -1);
            if (strpbrk(ua, "\r\n") != NULL)
                return luaL_error(L, "session option 'user_agent' contains CR or LF");
        }
    }
    if (ua == NULL) {
        const char *lua_release = LUA_RELEASE;
        if (strncmp(lua_release, "Lua ", 4) == 0)
            lua_release += 4;
        snprintf(dflt, sizeof dflt, "aliyun-iot/%s libcurl/%s Lua/%s", ALIYUN_IOT_VERSION,
                 curl_version_info(CURLVERSION_NOW)->version, lua_release);
        ua = dflt;
    }

    s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    luaL_getmetatable(L, SESSION_MT);
    lua_setmetatable(L, -2);
    s->user_agent = malloc(strlen(ua) + 1);
    s->multi = curl_multi_init();
    s->share = curl_share_init();
    if (s->user_agent == NULL || s->multi == NULL || s->share == NULL) {
        session_close(s);
        return luaL_error(L, "not enough memory");
    }
    strcpy(s->user_agent, ua);
    /* Lets every handle of the pool resume TLS sessions the others negotiated. */
    curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    ensure_handles(L, s, 1);
    return 1;
}

/* Session:close() frees the handles and drops the connections; calling it again is a no-op. */
static int l_session_close(lua_State *L)
{
    session_close(luaL_checkudata(L, 1, SESSION_MT));
    return 0;
}

/* __gc: no perform() can be running (it holds the session on its stack), so whatever a
   raise in an earlier one left busy is freed too. */
static int l_session_gc(lua_State *L)
{
    struct session *s = luaL_checkudata(L, 1, SESSION_MT);
    s->one_busy = 0;
    session_close(s);
    return 0;
}

static int l_session_tostring(lua_State *L)
{
    struct session *s = luaL_checkudata(L, 1, SESSION_MT);
    lua_pushfstring(L, SESSION_MT ": %p%s", (void *)s, s->multi == NULL ? " (closed)" : "");
    return 1;
}

/* ------------------------------------------------------------------------------------ */
/* Transfers                                                                            */
/* ------------------------------------------------------------------------------------ */

struct buf {
    char *data;
    size_t len, cap;
};

enum { PENDING, RUNNING, DONE };

struct transfer {
    /* request, read from Lua; strings point into the request table (anchored on the
       stack; libcurl copies all but the body, and no Lua code runs meanwhile) */
    const char *method, *url, *body, *ca_file, *proxy;
    size_t body_len;
    int has_body, fresh_connect;
    long timeout_ms, connect_timeout_ms;
    curl_off_t max_size;
    double not_before;
    struct curl_slist *headers;
    /* progress and result */
    int state;
    CURL *easy;
    int sent, too_large, out_of_memory;
    CURLcode result;
    long status;
    const char *local_code; /* a failure found before any network activity */
    struct buf head, resp;
    char errbuf[CURL_ERROR_SIZE];
};

struct transfers {
    int n;
    struct transfer t[1];
};

static void transfers_free(struct transfers *ts)
{
    int i;
    for (i = 0; i < ts->n; i++) {
        curl_slist_free_all(ts->t[i].headers);
        ts->t[i].headers = NULL;
        free(ts->t[i].head.data);
        ts->t[i].head.data = NULL;
        free(ts->t[i].resp.data);
        ts->t[i].resp.data = NULL;
    }
}

/* The transfers live in a userdata so that a Lua error at any point frees them. */
static int l_transfers_gc(lua_State *L)
{
    transfers_free(luaL_checkudata(L, 1, TRANSFERS_MT));
    return 0;
}

static struct transfers *new_transfers(lua_State *L, int n)
{
    size_t size = sizeof(struct transfers) + (size_t)(n > 0 ? n - 1 : 0) * sizeof(struct transfer);
    struct transfers *ts = lua_newuserdatauv(L, size, 0);
    memset(ts, 0, size);
    luaL_getmetatable(L, TRANSFERS_MT);
    lua_setmetatable(L, -2);
    ts->n = n;
    return ts;
}

/* Appends to a buffer counting against the transfer's response cap; 0 aborts the transfer. */
static size_t buf_add(struct transfer *t, struct buf *b, const char *p, size_t len)
{
    if ((curl_off_t)(t->head.len + t->resp.len + len) > t->max_size) {
        t->too_large = 1;
        return 0;
    }
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *grown;
        while (cap < b->len + len)
            cap *= 2;
        grown = realloc(b->data, cap);
        if (grown == NULL) {
            t->out_of_memory = 1;
            return 0;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, len);
    b->len += len;
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct transfer *t = ud;
    return buf_add(t, &t->resp, p, size * n);
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct transfer *t = ud;
    size_t len = size * n;
    /* A status line starts a new response (after 100 Continue): keep the final one. */
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
        t->head.len = 0;
    return buf_add(t, &t->head, p, len);
}

#if LIBCURL_VERSION_NUM >= 0x075000
/* Called right before the request goes out on a new or reused connection. */
static int on_prereq(void *ud, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    (void)primary_ip, (void)local_ip, (void)primary_port, (void)local_port;
    ((struct transfer *)ud)->sent = 1;
    return CURL_PREREQFUNC_OK;
}
#endif

/* ---- reading a request table (raises on misuse, before anything is sent) ----------- */

static const char *opt_string(lua_State *L, int req, const char *name, size_t *len)
{
    const char *s = NULL;
    lua_getfield(L, req, name);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "request field '%s' must be a string", name);
        s = lua_tolstring(L, -1, len);
    }
    lua_pop(L, 1); /* still anchored by the request table */
    return s;
}

static double opt_number(lua_State *L, int req, const char *name, double dflt, double max)
{
    double v = dflt;
    lua_getfield(L, req, name);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "request field '%s' must be a number", name);
        v = (double)lua_tonumber(L, -1);
        if (!(v > 0 && v <= max))
            luaL_error(L, "request field '%s' out of range", name);
    }
    lua_pop(L, 1);
    return v;
}

static int is_token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Adds "Name: value" to t->headers; raises on a name or value that could split headers. */
static void add_header(lua_State *L, struct transfer *t, int *has_expect)
{
    size_t nlen, vlen, i;
    const char *name, *value;
    struct curl_slist *l;
    luaL_Buffer b;
    if (lua_type(L, -2) != LUA_TSTRING)
        luaL_error(L, "header names must be strings");
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "header '%s' must be a string or a number", lua_tostring(L, -2));
    name = lua_tolstring(L, -2, &nlen);
    lua_pushvalue(L, -1); /* a number converts on a copy, never on the traversed key */
    value = lua_tolstring(L, -1, &vlen);
    if (nlen == 0)
        luaL_error(L, "empty header name");
    for (i = 0; i < nlen; i++)
        if (!is_token_char((unsigned char)name[i]))
            luaL_error(L, "invalid character in header name '%s'", name);
    for (i = 0; i < vlen; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
            luaL_error(L, "header '%s' contains CR, LF or NUL", name);
    if (nlen == 6 && curl_strnequal(name, "expect", 6))
        *has_expect = 1;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, name, nlen);
    /* "Name;" is libcurl's spelling of a header sent with an empty value. */
    if (vlen == 0) {
        luaL_addchar(&b, ';');
    } else {
        luaL_addlstring(&b, ": ", 2);
        luaL_addlstring(&b, value, vlen);
    }
    luaL_pushresult(&b);
    l = curl_slist_append(t->headers, lua_tostring(L, -1));
    if (l == NULL)
        luaL_error(L, "not enough memory");
    t->headers = l;
    lua_pop(L, 3); /* the line, the value's copy, the value: the key stays for lua_next */
}

static void read_request(lua_State *L, int req, struct transfer *t)
{
    size_t len, i;
    int has_expect = 0;
    FILE *f;

    luaL_checkstack(L, 8, NULL);
    if (lua_type(L, req) != LUA_TTABLE)
        luaL_error(L, "request must be a table");
    t->method = opt_string(L, req, "method", &len);
    if (t->method == NULL)
        t->method = "GET";
    else if (len == 0 || len > 16)
        luaL_error(L, "invalid request method");
    for (i = 0; t->method[i] != '\0'; i++)
        if (t->method[i] < 'A' || t->method[i] > 'Z')
            luaL_error(L, "invalid request method '%s'", t->method);
    t->url = opt_string(L, req, "url", &len);
    if (t->url == NULL)
        luaL_error(L, "request field 'url' is required");
    if (strlen(t->url) != len || strpbrk(t->url, "\r\n ") != NULL)
        luaL_error(L, "request url contains a space, CR, LF or NUL");
    lua_getfield(L, req, "body");
    /* A signed core.rpc_request object is sent from its own buffer (no Lua string): the
       request table holds it until perform returns, and no Lua code runs meanwhile. */
    t->body = aliyun_rpcreq_body(L, -1, &t->body_len);
    lua_pop(L, 1);
    if (t->body == NULL)
        t->body = opt_string(L, req, "body", &t->body_len);
    t->has_body = t->body != NULL;
    if (t->has_body && (strcmp(t->method, "GET") == 0 || strcmp(t->method, "HEAD") == 0))
        luaL_error(L, "a %s request cannot carry a body", t->method);
    t->ca_file = opt_string(L, req, "ca_file", &len);
    t->proxy = opt_string(L, req, "proxy", &len);
    t->timeout_ms = (long)ceil(opt_number(L, req, "timeout", DEFAULT_TIMEOUT, MAX_TIMEOUT) * 1000);
    t->connect_timeout_ms = (long)ceil(
        opt_number(L, req, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, MAX_TIMEOUT) * 1000);
    t->max_size = (curl_off_t)opt_number(L, req, "max_response_size", DEFAULT_MAX_RESPONSE, 1e15);
    lua_getfield(L, req, "not_before");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "request field 'not_before' must be a number (a core.now() value)");
        t->not_before = (double)lua_tonumber(L, -1);
    }
    lua_getfield(L, req, "fresh_connect");
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TBOOLEAN)
        luaL_error(L, "request field 'fresh_connect' must be a boolean");
    t->fresh_connect = lua_toboolean(L, -1);
    lua_pop(L, 2);

    lua_getfield(L, req, "headers");
    if (!lua_isnil(L, -1)) {
        int h = lua_gettop(L);
        if (!lua_istable(L, h))
            luaL_error(L, "request field 'headers' must be a table");
        lua_pushnil(L);
        while (lua_next(L, h) != 0)
            add_header(L, t, &has_expect);
    }
    lua_pop(L, 1);
    /* libcurl would send "Expect: 100-continue" for larger bodies and wait for a server
       that may never answer it: small API bodies go out at once. */
    if (!has_expect) {
        struct curl_slist *l = curl_slist_append(t->headers, "Expect:");
        if (l == NULL)
            luaL_error(L, "not enough memory");
        t->headers = l;
    }

    /* A CA file that cannot be read is a configuration error, reported before any
       network activity and never answered by falling back to an unverified peer. */
    if (t->ca_file != NULL && (f = fopen(t->ca_file, "rb")) == NULL) {
        snprintf(t->errbuf, sizeof t->errbuf, "cannot read CA file '%s': %s", t->ca_file,
                 strerror(errno));
        t->local_code = "TLSError";
        t->state = DONE;
    } else if (t->ca_file != NULL) {
        fclose(f);
    }
}

/* ---- running ------------------------------------------------------------------------ */

/* Sets every option of the request on a reset handle; returns the first setopt failure. */
static CURLcode configure(struct session *s, struct transfer *t)
{
    CURL *e = t->easy;
    CURLcode rc = CURLE_OK;
#define SET(opt, val) do { if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); } while (0)
    /* reset clears whatever the previous request set (method, body, headers...) while
       keeping live connections and TLS sessions. */
    curl_easy_reset(e);
    t->errbuf[0] = '\0';
    SET(CURLOPT_ERRORBUFFER, t->errbuf);
    SET(CURLOPT_PRIVATE, (void *)t);
    SET(CURLOPT_SHARE, s->share);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_URL, t->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_USERAGENT, s->user_agent);
    SET(CURLOPT_HTTPHEADER, t->headers);
    SET(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    if (strcmp(t->method, "GET") == 0) {
        SET(CURLOPT_HTTPGET, 1L);
    } else if (strcmp(t->method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(t->method, "POST") != 0)
            SET(CURLOPT_CUSTOMREQUEST, t->method);
        if (t->has_body || strcmp(t->method, "POST") == 0) {
            SET(CURLOPT_POST, 1L);
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(t->has_body ? t->body_len : 0));
            SET(CURLOPT_POSTFIELDS, t->has_body ? t->body : "");
        }
    }
    SET(CURLOPT_TIMEOUT_MS, t->timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, t->connect_timeout_ms);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    if (t->ca_file != NULL)
        SET(CURLOPT_CAINFO, t->ca_file);
    /*
     * Without a proxy option libcurl honours the usual *_proxy environment variables. With
     * one (the Lua transport always gives one, "" for none, having read HTTPS_PROXY and
     * NO_PROXY itself), libcurl's own reading of NO_PROXY must not apply either: an empty
     * CURLOPT_NOPROXY makes the given proxy hold for every host.
     */
    if (t->proxy != NULL) {
        SET(CURLOPT_PROXY, t->proxy);
        SET(CURLOPT_NOPROXY, "");
    }
    /*
     * libcurl silently re-sends a request when a reused keep-alive connection turns out
     * to be dead, with the same nonce and even after the server acted on the first copy
     * (seen with Debian's libcurl 7.88 against a server that closes after acting). A fresh
     * connection cannot be stale, so non-idempotent calls ask for one.
     */
    if (t->fresh_connect)
        SET(CURLOPT_FRESH_CONNECT, 1L);
    SET(CURLOPT_MAXFILESIZE_LARGE, t->max_size); /* early stop on a large Content-Length */
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, (void *)t);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)t);
#if LIBCURL_VERSION_NUM >= 0x075000
    SET(CURLOPT_PREREQFUNCTION, on_prereq);
    SET(CURLOPT_PREREQDATA, (void *)t);
#endif
#undef SET
    return rc;
}

static void finish(struct transfer *t, CURLcode rc)
{
    t->state = DONE;
    t->result = rc;
    if (rc == CURLE_OK)
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
#if LIBCURL_VERSION_NUM < 0x075000
    if (!t->sent) {
        /* Older libcurl: the request may be on its way once the transfer phase began. */
        curl_off_t pre = 0;
        curl_easy_getinfo(t->easy, CURLINFO_PRETRANSFER_TIME_T, &pre);
        t->sent = pre > 0;
    }
#endif
    t->easy = NULL;
}

/* The multi handle itself failed (out of memory): every transfer left fails; a running
   one may have reached the server. */
static void fail_all(struct session *s, struct transfers *ts)
{
    int i;
    for (i = 0; i < ts->n; i++) {
        struct transfer *t = &ts->t[i];
        if (t->state == RUNNING) {
            curl_multi_remove_handle(s->multi, t->easy);
            finish(t, CURLE_OUT_OF_MEMORY);
            t->sent = 1; /* unknown, so assume the worst */
        } else if (t->state == PENDING) {
            t->state = DONE;
            t->result = CURLE_OUT_OF_MEMORY;
        }
    }
}

/*
 * Runs the transfers over the session's multi handle, at most maxc at a time, none before
 * its not_before. Pure C: nothing here raises, so handles always leave the multi.
 */
static void run(struct session *s, struct transfers *ts, int maxc)
{
    int i, running = 0, done = 0;
    int idle[MAX_CONCURRENCY]; /* indices of free pool handles */
    int nidle = maxc;
    for (i = 0; i < maxc; i++)
        idle[i] = i;
    for (i = 0; i < ts->n; i++)
        if (ts->t[i].state == DONE)
            done++;

    while (done < ts->n) {
        double now = aliyun_now(), next_start = HUGE_VAL;
        int still, queued, progressed = 0;
        long wait_ms;
        CURLMsg *msg;

        for (i = 0; i < ts->n && nidle > 0; i++) {
            struct transfer *t = &ts->t[i];
            CURLcode rc;
            if (t->state != PENDING)
                continue;
            if (t->not_before > now) {
                if (t->not_before < next_start)
                    next_start = t->not_before;
                continue;
            }
            t->easy = s->handles[idle[--nidle]];
            rc = configure(s, t);
            if (rc == CURLE_OK && curl_multi_add_handle(s->multi, t->easy) != CURLM_OK)
                rc = CURLE_FAILED_INIT;
            if (rc != CURLE_OK) {
                for (queued = 0; queued < s->nhandles; queued++)
                    if (s->handles[queued] == t->easy)
                        idle[nidle++] = queued;
                finish(t, rc);
                done++;
                progressed = 1;
                continue;
            }
            t->state = RUNNING;
            running++;
        }

        if (curl_multi_perform(s->multi, &still) != CURLM_OK) {
            fail_all(s, ts);
            return;
        }
        while ((msg = curl_multi_info_read(s->multi, &queued)) != NULL) {
            char *priv = NULL;
            CURL *e = msg->easy_handle;
            int h;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
            finish((struct transfer *)priv, msg->data.result);
            curl_multi_remove_handle(s->multi, e);
            for (h = 0; h < s->nhandles; h++)
                if (s->handles[h] == e)
                    idle[nidle++] = h;
            running--;
            done++;
            progressed = 1;
        }
        if (done == ts->n || progressed)
            continue; /* a free slot may start the next request at once */

        /* libcurl shortens the wait to its own timers; not_before may shorten it more. */
        wait_ms = 1000;
        if (next_start != HUGE_VAL && (next_start - now) * 1000 < wait_ms)
            wait_ms = (long)ceil((next_start - now) * 1000);
        curl_multi_poll(s->multi, NULL, 0, (int)(wait_ms > 0 ? wait_ms : 0), NULL);
    }
}

/* ---- results ------------------------------------------------------------------------ */

static const char *error_code(const struct transfer *t)
{
    if (t->local_code != NULL)
        return t->local_code;
    if (t->too_large)
        return "ResponseTooLarge";
    switch (t->result) {
    case CURLE_FILESIZE_EXCEEDED:
        return "ResponseTooLarge";
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
        return "ConnectFailed";
    case CURLE_OPERATION_TIMEDOUT:
        return "Timeout";
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return "ConnectionReset";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED:
        return "TLSError";
    default:
        return "TransportError";
    }
}

/* Pushes err = {code=, message=, sent=} for a failed transfer. */
static void push_error(lua_State *L, const struct transfer *t)
{
    const char *code = error_code(t);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    if (t->local_code != NULL)
        lua_pushstring(L, t->errbuf);
    else if (strcmp(code, "ResponseTooLarge") == 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "response larger than max_response_size (%" CURL_FORMAT_CURL_OFF_T
                 " bytes)", t->max_size);
        lua_pushstring(L, msg);
    }
    else if (t->out_of_memory)
        lua_pushliteral(L, "not enough memory for the response");
    else
        lua_pushstring(L, t->errbuf[0] != '\0' ? t->errbuf : curl_easy_strerror(t->result));
    lua_setfield(L, -2, "message");
    lua_pushboolean(L, t->sent);
    lua_setfield(L, -2, "sent");
}

/* Pushes the final response's headers as {lower-case name = value}; repeats joined by ", ". */
static void push_headers(lua_State *L, struct buf *head)
{
    size_t i = 0, n = head->len;
    char *d = head->data;
    lua_newtable(L);
    while (i < n) {
        size_t start = i, colon = 0, end;
        while (i < n && d[i] != '\n')
            i++;
        end = i > start && d[i - 1] == '\r' ? i - 1 : i;
        i++;
        if (start == 0 || d[start] == ' ' || d[start] == '\t')
            continue; /* the status line; obsolete line folding (unused by our servers) */
        for (colon = start; colon < end && d[colon] != ':'; colon++)
            d[colon] = (char)(d[colon] >= 'A' && d[colon] <= 'Z' ? d[colon] + 32 : d[colon]);
        if (colon == end || colon == start)
            continue; /* the blank line, garbage */
        {
            size_t vs = colon + 1, ve = end;
            while (vs < ve && (d[vs] == ' ' || d[vs] == '\t'))
                vs++;
            while (ve > vs && (d[ve - 1] == ' ' || d[ve - 1] == '\t'))
                ve--;
            lua_pushlstring(L, d + start, colon - start);
            lua_pushvalue(L, -1);
            lua_rawget(L, -3);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_pushlstring(L, d + vs, ve - vs);
            } else {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, d + vs, ve - vs);
                lua_concat(L, 3);
            }
            lua_rawset(L, -3);
        }
    }
}

/* Pushes res = {status=, headers=, body=}. */
static void push_response(lua_State *L, struct transfer *t)
{
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)t->status);
    lua_setfield(L, -2, "status");
    push_headers(L, &t->head);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, t->resp.data != NULL ? t->resp.data : "", t->resp.len);
    lua_setfield(L, -2, "body");
}

/* Buffers larger than this are not kept between perform() calls. */
#define KEEP_BUFFER ((size_t)64 * 1024)

/*
 * perform()'s transfer, kept in the session with its header and body buffers: a fresh
 * userdata with a finalizer and two buffers grown from 1 KiB on every call cost more than
 * libcurl's own request setup (issue 16). Whatever a previous call left (headers of a
 * request that raised) is freed first; the buffers are emptied, not freed.
 */
static struct transfers *session_transfer(lua_State *L, struct session *s)
{
    struct buf head, resp;
    struct transfer *t;
    if (s->one == NULL) {
        s->one = calloc(1, sizeof *s->one);
        if (s->one == NULL)
            luaL_error(L, "not enough memory");
    }
    t = &s->one->t[0];
    curl_slist_free_all(t->headers);
    head = t->head;
    resp = t->resp;
    memset(s->one, 0, sizeof *s->one);
    s->one->n = 1;
    t->head.data = head.data;
    t->head.cap = head.cap;
    t->resp.data = resp.data;
    t->resp.cap = resp.cap;
    return s->one;
}

/* Empties a kept transfer's buffers, freeing the ones a large response grew. */
static void keep_buffers(struct transfer *t)
{
    struct buf *b[2];
    int i;
    b[0] = &t->head;
    b[1] = &t->resp;
    for (i = 0; i < 2; i++) {
        b[i]->len = 0;
        if (b[i]->cap > KEEP_BUFFER) {
            free(b[i]->data);
            b[i]->data = NULL;
            b[i]->cap = 0;
        }
    }
}

static int failed(const struct transfer *t)
{
    return t->local_code != NULL || t->result != CURLE_OK;
}

/*
 * Session:perform(req) -> res | nil, err
 * req = {method= ("GET" default; "POST", ...), url=, headers= {name = string|number},
 *        body= (string, or a signed core.rpc_request object, sent from its buffer),
 *        timeout= [s, default 30, whole request], connect_timeout= [s,
 *        default 5], max_response_size= [bytes, default 16 MiB, headers and body],
 *        ca_file= (path), proxy= (URL), fresh_connect= (bool), not_before= (core.now()
 *        value; the request starts no earlier)}
 * res = {status= (integer), headers= {lower-case name = value}, body= (string)}
 * err = {code= "ConnectFailed"|"Timeout"|"ConnectionReset"|"TLSError"|"ResponseTooLarge"|
 *        "TransportError", message=, sent= (true once a request byte may have reached
 *        the server)}
 * TLS peer and host verification are always on. Raises on a malformed request (wrong
 * types, a header with CR/LF, a body on GET) and on a closed session.
 */
static int l_perform(lua_State *L)
{
    struct session *s = check_session(L);
    struct transfers *ts;
    struct transfer *t;
    int pushed;
    lua_settop(L, 2);
    if (s->one_busy) {
        ts = new_transfers(L, 1); /* 3: a call from inside a previous one's pushing */
    } else {
        ts = session_transfer(L, s);
    }
    t = &ts->t[0];
    read_request(L, 2, t);
    run(s, ts, 1);
    curl_slist_free_all(t->headers);
    t->headers = NULL;
    s->one_busy = ts == s->one;
    if (failed(t)) {
        lua_pushnil(L);
        push_error(L, t);
        pushed = 2;
    } else {
        push_response(L, t);
        pushed = 1;
    }
    if (ts == s->one) {
        s->one_busy = 0;
        if (s->multi == NULL) { /* closed meanwhile (see session_close) */
            transfers_free(ts);
            free(ts);
            s->one = NULL;
        } else {
            keep_buffers(t);
        }
    } else {
        transfers_free(ts);
    }
    return pushed;
}

/*
 * Session:perform_many(reqs, max_concurrency) -> responses, errors
 * reqs: an array of requests as for perform (not_before paces them); max_concurrency:
 * 1..1000 transfers at once (default 8). For each i exactly one of responses[i], errors[i]
 * is set, in request order. Connections are kept alive across calls (the session's
 * multi handle holds them; its pool keeps max_concurrency easy handles).
 */
static int l_perform_many(lua_State *L)
{
    struct session *s = check_session(L);
    struct transfers *ts;
    int n, i, maxc;
    luaL_checktype(L, 2, LUA_TTABLE);
    maxc = (int)luaL_optinteger(L, 3, 8);
    luaL_argcheck(L, maxc >= 1 && maxc <= MAX_CONCURRENCY, 3, "must be in 1..1000");
    lua_settop(L, 3);
    n = (int)lua_rawlen(L, 2);
    ts = new_transfers(L, n); /* 4 */
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        read_request(L, 5, &ts->t[i]);
        lua_pop(L, 1);
    }
    if (maxc > n)
        maxc = n > 0 ? n : 1;
    ensure_handles(L, s, maxc);
    run(s, ts, maxc);
    lua_createtable(L, n, 0); /* 5 responses */
    lua_createtable(L, 0, 0); /* 6 errors */
    for (i = 0; i < n; i++) {
        struct transfer *t = &ts->t[i];
        curl_slist_free_all(t->headers);
        t->headers = NULL;
        if (failed(t)) {
            push_error(L, t);
            lua_rawseti(L, 6, i + 1);
        } else {
            push_response(L, t);
            lua_rawseti(L, 5, i + 1);
            free(t->resp.data); /* its copy is in Lua: no need to hold every body at once */
            t->resp.data = NULL;
        }
    }
    transfers_free(ts);
    return 2;
}

void aliyun_open_http(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"perform", l_perform},
        {"perform_many", l_perform_many},
        {"close", l_session_close},
        {NULL, NULL},
    };
    static const luaL_Reg funcs[] = {
        {"session", l_session},
        {NULL, NULL},
    };
    static const luaL_Reg session_meta[] = {
        {"__gc", l_session_gc},
        {"__close", l_session_close},
        {"__tostring", l_session_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg transfers_meta[] = {{"__gc", l_transfers_gc}, {NULL, NULL}};
    aliyun_newclass(L, SESSION_MT, methods, session_meta);
    aliyun_newclass(L, TRANSFERS_MT, NULL, transfers_meta);
    luaL_setfuncs(L, funcs, 0);
}
