/*
 * Keyed HMAC contexts kept between calls (issue 16). OpenSSL 3's one-shot HMAC() fetches
 * the digest and the MAC algorithm, allocates a context and runs the key schedule on
 * every call: some 9 µs of a 140 µs keep-alive call on the bench machine. A client signs
 * every request with the same secret, so one context per digest keyed with the last key
 * seen is re-initialised with that key instead (EVP_MAC_init with a NULL key keeps it).
 * A different key (another client, refreshed STS credentials) rekeys the context. The key
 * bytes are kept only to recognise the key; both are wiped when the key changes and when
 * the owner (sign.c's per-state scratch) is collected. Before OpenSSL 3 the one-shot
 * HMAC() is used as it is: it fetches nothing there.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core.h"

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <openssl/core_names.h>
#include <openssl/params.h>

/* Whether the slot's key is part1 followed by part2 (part2 may be empty). */
static int same_key(const struct aliyun_mac *m, const char *part1, size_t len1,
                    const char *part2, size_t len2)
{
    return m->ctx != NULL && m->klen == len1 + len2 && memcmp(m->key, part1, len1) == 0 &&
           memcmp(m->key + len1, part2, len2) == 0;
}

/* Drops the context and wipes the key copy. */
static void forget(struct aliyun_mac *m)
{
    EVP_MAC_CTX_free(m->ctx);
    m->ctx = NULL;
    if (m->key != NULL) {
        OPENSSL_cleanse(m->key, m->klen);
        free(m->key);
    }
    m->key = NULL;
    m->klen = 0;
}

/* Keys the slot with part1 .. part2 for `digest`; 0 when OpenSSL or malloc fails. */
static int rekey(struct aliyun_mac *m, const char *digest, const char *part1, size_t len1,
                 const char *part2, size_t len2)
{
    OSSL_PARAM params[2];
    EVP_MAC *mac;
    forget(m);
    m->key = malloc(len1 + len2 + 1);
    if (m->key == NULL)
        return 0;
    memcpy(m->key, part1, len1);
    memcpy(m->key + len1, part2, len2);
    m->klen = len1 + len2;
    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    m->ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac); /* the context holds its own reference */
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (m->ctx == NULL || !EVP_MAC_init(m->ctx, (const unsigned char *)m->key, m->klen, params)) {
        forget(m);
        return 0;
    }
    return 1;
}

int aliyun_hmac_begin(struct aliyun_mac *m, int sha256, const char *part1, size_t len1,
                      const char *part2, size_t len2)
{
    if (same_key(m, part1, len1, part2, len2))
        return EVP_MAC_init(m->ctx, NULL, 0, NULL);
    return rekey(m, sha256 ? "SHA256" : "SHA1", part1, len1, part2, len2);
}

int aliyun_hmac_update(struct aliyun_mac *m, const char *data, size_t len)
{
    return EVP_MAC_update(m->ctx, (const unsigned char *)data, len);
}

size_t aliyun_hmac_end(struct aliyun_mac *m, unsigned char *out)
{
    size_t n = 0;
    if (!EVP_MAC_final(m->ctx, out, &n, EVP_MAX_MD_SIZE))
        return 0;
    return n;
}

size_t aliyun_hmac(struct aliyun_mac *m, int sha256, const char *part1, size_t len1,
                   const char *part2, size_t len2, const char *data, size_t dlen,
                   unsigned char *out)
{
    if (!aliyun_hmac_begin(m, sha256, part1, len1, part2, len2) ||
        !aliyun_hmac_update(m, data, dlen))
        return 0;
    return aliyun_hmac_end(m, out);
}

void aliyun_mac_free(struct aliyun_mac *m)
{
    forget(m);
}

#else

size_t aliyun_hmac(struct aliyun_mac *m, int sha256, const char *part1, size_t len1,
                   const char *part2, size_t len2, const char *data, size_t dlen,
                   unsigned char *out)
{
    unsigned int n = 0;
    unsigned char *key = malloc(len1 + len2 + 1);
    (void)m;
    if (key == NULL)
        return 0;
    memcpy(key, part1, len1);
    memcpy(key + len1, part2, len2);
    if (HMAC(sha256 ? EVP_sha256() : EVP_sha1(), key, (int)(len1 + len2),
             (const unsigned char *)data, dlen, out, &n) == NULL)
        n = 0;
    OPENSSL_cleanse(key, len1 + len2);
    free(key);
    return n;
}

void aliyun_mac_free(struct aliyun_mac *m)
{
    HMAC_CTX_free(m->ctx);
    m->ctx = NULL;
}

/* Streaming before OpenSSL 3: an HMAC_CTX keyed anew for every MAC (nothing is fetched). */
int aliyun_hmac_begin(struct aliyun_mac *m, int sha256, const char *part1, size_t len1,
                      const char *part2, size_t len2)
{
    unsigned char *key = malloc(len1 + len2 + 1);
    int ok;
    if (key == NULL)
        return 0;
    if (m->ctx == NULL && (m->ctx = HMAC_CTX_new()) == NULL) {
        free(key);
        return 0;
    }
    memcpy(key, part1, len1);
    memcpy(key + len1, part2, len2);
    ok = HMAC_Init_ex(m->ctx, key, (int)(len1 + len2), sha256 ? EVP_sha256() : EVP_sha1(), NULL);
    OPENSSL_cleanse(key, len1 + len2);
    free(key);
    return ok;
}

int aliyun_hmac_update(struct aliyun_mac *m, const char *data, size_t len)
{
    return HMAC_Update(m->ctx, (const unsigned char *)data, len);
}

size_t aliyun_hmac_end(struct aliyun_mac *m, unsigned char *out)
{
    unsigned int n = 0;
    if (!HMAC_Final(m->ctx, out, &n))
        return 0;
    return n;
}

#endif
