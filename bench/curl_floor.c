/*
 * The floor of scenario 2: the least a program can do to make the same sequential calls.
 * One libcurl easy handle (keep-alive), the same POST form body as a signed
 * QueryBatchRegisterDeviceStatus call minus the signature, the response kept in memory
 * and not decoded.
 *
 * Usage: curl_floor URL WARMUP COUNT
 * Prints one JSON line: {"calls":COUNT,"seconds":S,"rate":R,"cpu_seconds":C,
 * "cpu_us_per_call":U,"rss_kb":VmHWM}; C is the process's user + system CPU over the calls.
 * Exits 1 on any failed call or non-200 status.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

struct sink {
    size_t len;
};

/* Counts the body and drops it: the floor keeps nothing, as the clients must keep it. */
static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct sink *s = ud;
    (void)data;
    s->len += size * n;
    return size * n;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Peak resident set size in kB, from /proc (VmHWM), or -1. */
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

/* Writes i as 8 decimal digits at p, without a terminating NUL (p is inside the body). */
static void put_digits(char *p, int i)
{
    int k;
    for (k = 7; k >= 0; k--) {
        p[k] = (char)('0' + i % 10);
        i /= 10;
    }
}

/* One call; nonce points into the body, where a fresh nonce goes as a client must send. */
static int call(CURL *h, char *nonce, int i)
{
    struct sink s = {0};
    long status = 0;
    CURLcode rc;

    put_digits(nonce, i);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
        fprintf(stderr, "curl_floor: %s\n", curl_easy_strerror(rc));
        return -1;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 || s.len == 0) {
        fprintf(stderr, "curl_floor: HTTP %ld, %zu bytes\n", status, s.len);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    CURL *h;
    struct curl_slist *headers = NULL;
    int warmup, count, i;
    double t0, t, c0, c;
    char body[512];
    char *nonce;
    int n;

    if (argc != 4) {
        fprintf(stderr, "usage: curl_floor URL WARMUP COUNT\n");
        return 2;
    }
    warmup = atoi(argv[2]);
    count = atoi(argv[3]);
    n = snprintf(body, sizeof body,
                 "AccessKeyId=testid&Action=QueryBatchRegisterDeviceStatus&ApplyId=100000"
                 "&Format=JSON&ProductKey=a1TestPK001&RegionId=cn-shanghai"
                 "&SignatureMethod=HMAC-SHA1&SignatureNonce=%s&SignatureVersion=1.0"
                 "&Timestamp=2024-01-01T00%%3A00%%3A00Z&Version=2018-01-20",
                 "00000000-0000-4000-8000-000000000000");
    if (n < 0 || (size_t)n >= sizeof body)
        return 2;
    nonce = strstr(body, "SignatureNonce=") + strlen("SignatureNonce=");

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    h = curl_easy_init();
    if (!h)
        return 1;
    headers = curl_slist_append(headers, "Content-Type: application/x-www-form-urlencoded");
    curl_easy_setopt(h, CURLOPT_URL, argv[1]);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)n);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);

    for (i = 0; i < warmup; i++)
        if (call(h, nonce, i) != 0)
            return 1;
    t0 = now();
    c0 = (double)clock() / CLOCKS_PER_SEC;
    for (i = 0; i < count; i++)
        if (call(h, nonce, i) != 0)
            return 1;
    t = now() - t0;
    c = (double)clock() / CLOCKS_PER_SEC - c0; /* user + system CPU of this process */
    printf("{\"calls\":%d,\"seconds\":%.6f,\"rate\":%.1f,\"cpu_seconds\":%.6f,"
           "\"cpu_us_per_call\":%.3f,\"rss_kb\":%ld}\n", count, t, (double)count / t, c,
           c / count * 1e6, peak_rss_kb());

    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    curl_global_cleanup();
    return 0;
}
