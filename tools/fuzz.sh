#!/bin/sh
# make fuzz: builds the libFuzzer targets of fuzz/ with clang (ASan + UBSan) and runs each
# for FUZZ_SECONDS (default 60) on its checked-in seeds (fuzz/corpus/<target>) plus the
# corpus it grows in build/fuzz/corpus/<target>. Prints executions and findings per target
# and one TAP line each; a finding is a file in build/fuzz/artifacts (crash, leak, timeout,
# out-of-memory), to be turned into a regression spec.
set -u
cd "$(dirname "$0")/.."
SECS=${FUZZ_SECONDS:-60}
OUT=build/fuzz
CC=${FUZZ_CC:-clang}
LUA_INC=/usr/include/lua5.4
SAN="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"
LIBS="-llua5.4 -lcurl -lcrypto -lexpat -lpthread -lm"
CURL_CFLAGS=$(pkg-config --cflags libcurl 2>/dev/null)

probe='int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return d == 0 && n; }'
if ! command -v "$CC" >/dev/null 2>&1 ||
   ! echo "$probe" | "$CC" -fsanitize=fuzzer -x c - -o "${TMPDIR:-/tmp}/fuzz-probe.$$" 2>/dev/null; then
    echo "# installing clang and libclang-rt-14-dev for libFuzzer"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
fi
rm -f "${TMPDIR:-/tmp}/fuzz-probe.$$"

build() {
    mkdir -p "$OUT/obj" || return 1
    for src in csrc/*.c; do
        # shellcheck disable=SC2086
        $CC $SAN -fsanitize=fuzzer-no-link -std=c99 -Wall -Wextra -Werror -fPIC \
            -D_POSIX_C_SOURCE=200809L -I"$LUA_INC" $CURL_CFLAGS \
            -c "$src" -o "$OUT/obj/$(basename "$src" .c).o" || return 1
    done
    for t in sign decode; do
        # shellcheck disable=SC2086
        $CC $SAN -fsanitize=fuzzer -std=c99 -Wall -Wextra -Werror -I"$LUA_INC" \
            -DHARNESS="\"$PWD/fuzz/$t.lua\"" fuzz/lua_harness.c "$OUT"/obj/*.o $LIBS \
            -o "$OUT/fuzz_$t" || return 1
    done
    # http.c is compiled into its target (fuzz_http.c includes it); the other objects but
    # the module entry provide what it uses from the rest of the core (the clock).
    others=$(ls "$OUT"/obj/*.o | grep -v -e '/http\.o$' -e '/core\.o$')
    # shellcheck disable=SC2086
    $CC $SAN -fsanitize=fuzzer -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L \
        -I"$LUA_INC" -Icsrc $CURL_CFLAGS fuzz/fuzz_http.c $others $LIBS -o "$OUT/fuzz_http"
}

if ! build; then
    echo "not ok - fuzz targets build"
    exit 0
fi
echo "ok - fuzz targets build"

mkdir -p "$OUT/artifacts"
for t in sign decode http; do
    mkdir -p "$OUT/corpus/$t"
    rm -f "$OUT/artifacts/$t-"*
    case $t in decode) maxlen=16384 ;; *) maxlen=4096 ;; esac
    "./$OUT/fuzz_$t" -max_total_time="$SECS" -max_len=$maxlen -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$t-" \
        "$OUT/corpus/$t" "fuzz/corpus/$t" > "$OUT/$t.log" 2>&1
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/$t.log" | tail -n 1)
    corpus=$(ls "$OUT/corpus/$t" | wc -l)
    findings=$(ls "$OUT/artifacts/$t-"* 2>/dev/null | wc -l)
    echo "# fuzz $t: ${runs:-0} executions in ${SECS}s, corpus $corpus inputs, $findings findings"
    if [ "$findings" -eq 0 ] && [ -n "$runs" ]; then
        echo "ok - fuzz $t"
    else
        grep -E 'ERROR|PROPERTY|SUMMARY|harness' "$OUT/$t.log" | head -n 20
        for a in "$OUT/artifacts/$t-"*; do [ -f "$a" ] && echo "# finding: $a"; done
        echo "not ok - fuzz $t (log: $OUT/$t.log)"
    fi
done
