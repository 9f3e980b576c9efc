#!/bin/sh
# Runs every test step, keeps going after a failing step, and ends with one plain line
# "N passed, N failed" summed over all steps (CI reads that line, not busted's summary).
# Just above that line, every failing test is listed with its step ("lua5.4: not ok 12 - ...").
# Usage: tools/test.sh STEP...   where a STEP is one of the functions below.
set -u
LUA=${LUA:-lua5.4}
COUNTS=$(mktemp)
FAILS=$(mktemp)
trap 'rm -f "$COUNTS" "$FAILS"' EXIT

record() { # label passed failed
    echo "$1: $2 passed, $3 failed"
    echo "$2 $3" >> "$COUNTS"
}

# Keeps the failing tests of a step's TAP output for the closing list; a step that failed
# without a single "not ok" line (it died first) is listed by its label.
keep_failures() { # label tap-output-file failed-count
    grep '^not ok ' "$2" | sed "s/^/$1: /" >> "$FAILS"
    if [ "$3" -gt 0 ] && ! grep -q '^not ok ' "$2"; then
        echo "$1: not ok - the step reported no test (it died before reporting; see its output above)" >> "$FAILS"
    fi
}

# busted over TAP: every "ok"/"not ok" line is one test; a run that dies before reporting
# anything counts as one failure, so a broken spec file cannot pass silently.
busted_step() { # label lua spec-paths...
    label=$1; lua=$2; shift 2
    out=$(mktemp)
    ALIYUN_IOT_LUA=$lua LUA_PATH="lua/?.lua;lua/?/init.lua;;" \
        LUA_CPATH="${CORE_DIR:-build/$lua}/?.so;;" \
        busted --lua="$lua" -o TAP "$@" 2>&1 | tee "$out"
    pass=$(grep -c '^ok ' "$out"); fail=$(grep -c '^not ok ' "$out")
    [ "$pass" -eq 0 ] && [ "$fail" -eq 0 ] && fail=1
    keep_failures "$label" "$out" "$fail"
    rm -f "$out"
    record "$label" "$pass" "$fail"
}

# A command that prints its own "ok ..."/"not ok ..." lines (C tests, lint, examples).
tap_step() { # label command...
    label=$1; shift
    out=$(mktemp)
    "$@" 2>&1 | tee "$out"
    pass=$(grep -c '^ok ' "$out"); fail=$(grep -c '^not ok ' "$out")
    [ "$pass" -eq 0 ] && [ "$fail" -eq 0 ] && fail=1
    keep_failures "$label" "$out" "$fail"
    rm -f "$out"
    record "$label" "$pass" "$fail"
}

# Specs tagged #openresty (real nginx) run in their own step; #lua54only ones (the CLI,
# tools that need Lua 5.4) are left out of the other interpreters.
core() { busted_step "$LUA" "$LUA" --exclude-tags=openresty spec; }
openresty() { busted_step openresty lua5.4 --tags=openresty spec/openresty_spec.lua spec/openresty_credentials_spec.lua; }
ctests() { tap_step ctests sh spec/c/run.sh; }
rock() { tap_step rockspec sh tools/rock-check.sh; }
lint() { tap_step lint sh tools/lint.sh; }
# examples/: the example specs (the emulator in a user's suite; provision.lua run as a
# user runs it, against the emulator).
examples() { busted_step examples "$LUA" examples; }
# make check-asan: the suite (but the #openresty specs, whose nginx loads the LuaJIT build)
# on the sanitized core in build/asan, through tools/asan/lua (runtime preloaded for the Lua
# processes only). Every process writes its reports under build/asan/reports; each report
# is one more failure, so a report from a Lua child (the CLI) counts even when its spec
# only looked at the exit status.
asan() {
    rm -rf build/asan/reports && mkdir -p build/asan/reports
    ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=86:log_path=$PWD/build/asan/reports/asan" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87:log_path=$PWD/build/asan/reports/ubsan" \
        CORE_DIR=build/asan busted_step asan "$PWD/tools/asan/lua" --exclude-tags=openresty spec
    reports=$(find build/asan/reports -type f | wc -l)
    for f in build/asan/reports/*; do [ -f "$f" ] && cat "$f"; done
    if [ "$reports" -eq 0 ]; then record "sanitizer reports" 1 0; else
        find build/asan/reports -type f | sed 's/^/sanitizer reports: not ok - /' >> "$FAILS"
        record "sanitizer reports" 0 "$reports"
    fi
}
# make check-valgrind: the specs that drive the C core hardest, each in one Lua 5.4 process
# under memcheck (children such as nginx are not traced). Each spec's tests count as usual,
# plus one "valgrind <spec>" line: not ok on any memory error or definite leak.
VALGRIND_SPECS="spec/sign_spec.lua spec/decode_spec.lua spec/http_spec.lua spec/client_spec.lua
spec/batch_spec.lua"
valgrind_specs() {
    mkdir -p build/valgrind
    for spec in $VALGRIND_SPECS; do
        [ -f "$spec" ] || continue
        name=$(basename "$spec" .lua)
        out=$(mktemp)
        LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="build/lua5.4/?.so;;" ALIYUN_IOT_LUA=lua5.4 \
            valgrind -q --leak-check=full --show-leak-kinds=definite \
            --errors-for-leak-kinds=definite --error-exitcode=99 --num-callers=30 \
            --suppressions=tools/valgrind.supp --log-file="build/valgrind/$name.log" \
            lua5.4 /usr/bin/busted --ignore-lua -o TAP --exclude-tags=openresty "$spec" 2>&1 | tee "$out"
        pass=$(grep -c '^ok ' "$out"); fail=$(grep -c '^not ok ' "$out")
        [ "$pass" -eq 0 ] && [ "$fail" -eq 0 ] && fail=1
        if [ -s "build/valgrind/$name.log" ]; then
            cat "build/valgrind/$name.log"
            echo "not ok - valgrind $spec (build/valgrind/$name.log)" | tee -a "$out"
            fail=$((fail + 1))
        else
            echo "ok - valgrind $spec"; pass=$((pass + 1))
        fi
        keep_failures "valgrind $name" "$out" "$fail"
        rm -f "$out"
        record "valgrind $name" "$pass" "$fail"
    done
}
# make fuzz: every libFuzzer target for FUZZ_SECONDS (tools/fuzz.sh).
fuzz() { tap_step fuzz sh tools/fuzz.sh; }
# make soak: 200 fault jobs with their report (tools/soak.lua); not part of make test or CI.
soak() { tap_step soak lua5.4 tools/soak.lua; }
# The core suite under every interpreter; each prints "<interpreter>: N passed, N failed".
matrix() {
    for lua in lua5.1 lua5.2 lua5.3 lua5.4 luajit; do
        busted_step "$lua" "$lua" --exclude-tags=openresty,lua54only spec
    done
}

for step in "$@"; do "$step"; done
if [ -s "$FAILS" ]; then
    echo "Failing tests:"
    cat "$FAILS"
fi
awk '{p += $1; f += $2} END {printf "%d passed, %d failed\n", p, f; exit (f > 0)}' "$COUNTS"
