/*
 * The floor of scenario 1 (issue 16): one bare HMAC-SHA1 over a string to sign, the least
 * any RPC signer must do. The key and the string come from a file written by bench/run.lua
 * (the 1,000-name BatchCheckDeviceNames string to sign that core.sign_rpc produced), so
 * both sides hash the same bytes. The fastest OpenSSL path: one HMAC context keyed once,
 * re-initialised with the same key for every signature (no algorithm fetch, no key
 * schedule per call), the MAC Base64-encoded as a signer must.
 *
 * Usage: hmac_floor FILE SECONDS
 *   FILE: the key, one newline, then the string to sign (to the end of the file).
 * Prints one JSON line: {"ops":N,"seconds":S,"rate":R,"bytes":B,"rss_kb":VmHWM}; CPU time
 * by clock(), as os.clock measures ours.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>

static long peak_rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

/* Reads the whole file into a NUL-terminated buffer; exits on failure. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    size_t cap = 0, n = 0, got;
    if (!f) {
        perror(path);
        exit(1);
    }
    do {
        if (n + 4096 + 1 > cap) {
            cap = (n + 4096 + 1) * 2;
            data = realloc(data, cap);
            if (!data)
                exit(1);
        }
        got = fread(data + n, 1, cap - n - 1, f);
        n += got;
    } while (got > 0);
    if (ferror(f) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    data[n] = '\0';
    *len = n;
    return data;
}

/* One signature: HMAC-SHA1 with the context's key, then Base64. 0 on failure. */
static int sign(EVP_MAC_CTX *ctx, const char *data, size_t len, char *out)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    if (!EVP_MAC_init(ctx, NULL, 0, NULL) ||
        !EVP_MAC_update(ctx, (const unsigned char *)data, len) ||
        !EVP_MAC_final(ctx, mac, &maclen, sizeof mac))
        return 0;
    return EVP_EncodeBlock((unsigned char *)out, mac, (int)maclen) > 0;
}

int main(int argc, char **argv)
{
    size_t len, klen;
    char *file, *sts, out[64];
    double budget, t0, t = 0;
    long n = 0;
    int i;
    EVP_MAC *mac;
    EVP_MAC_CTX *ctx;
    OSSL_PARAM params[2];

    if (argc != 3) {
        fprintf(stderr, "usage: hmac_floor FILE SECONDS\n");
        return 2;
    }
    budget = atof(argv[2]);
    file = slurp(argv[1], &len);
    sts = memchr(file, '\n', len);
    if (!sts) {
        fprintf(stderr, "hmac_floor: no newline after the key\n");
        return 2;
    }
    klen = (size_t)(sts - file);
    sts++;
    len -= klen + 1;

    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA1", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (!ctx || !EVP_MAC_init(ctx, (const unsigned char *)file, klen, params))
        return 1;
    for (i = 0; i < 1000; i++) /* warm-up */
        if (!sign(ctx, sts, len, out))
            return 1;
    t0 = (double)clock() / CLOCKS_PER_SEC;
    do {
        for (i = 0; i < 64; i++)
            if (!sign(ctx, sts, len, out))
                return 1;
        n += 64;
        t = (double)clock() / CLOCKS_PER_SEC - t0;
    } while (t < budget);
    printf("{\"ops\":%ld,\"seconds\":%.6f,\"rate\":%.1f,\"bytes\":%zu,\"signature\":\"%s\","
           "\"rss_kb\":%ld}\n", n, t, (double)n / t, len, out, peak_rss_kb());
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    free(file);
    return 0;
}
