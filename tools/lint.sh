#!/bin/sh
# Static checks (make lint; a step of make test): cppcheck and clang-tidy on csrc/ (config
# in .clang-tidy), luacheck on the Lua code (config in .luacheckrc). Prints one TAP line per
# tool ("ok - cppcheck" / "not ok - cppcheck") after the tool's own findings.
set -u
cd "$(dirname "$0")/.."
LUA_INC=/usr/include/lua5.4
CURL_CFLAGS=$(pkg-config --cflags libcurl 2>/dev/null)

report() { # status name
    if [ "$1" -eq 0 ]; then echo "ok - $2"; else echo "not ok - $2"; fi
}

need() { # command
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "# $1 is missing (make deps installs it)"
    return 1
}

# cppcheck: the Lua, libcurl, OpenSSL and POSIX library models, once per Lua API level the
# core is written against (5.4 integers, 5.1/LuaJIT compat paths). curl_strnequalCalled is
# suppressed: cppcheck's libcurl model predicts the removal of curl_strnequal, but it is
# still public, documented libcurl API.
cppcheck_run() {
    need cppcheck || return 1
    rc=0
    for v in 504 501; do
        cppcheck -q --std=c99 --enable=warning,style,performance,portability --inline-suppr \
            --error-exitcode=1 --library=lua --library=libcurl --library=openssl \
            --library=posix --suppress=missingIncludeSystem --suppress=curl_strnequalCalled \
            -I csrc -D_POSIX_C_SOURCE=200809L -DLUA_VERSION_NUM=$v csrc/ || rc=1
    done
    return $rc
}

# clang-tidy: .clang-tidy makes every finding an error. lua_lint.h tells it two facts about
# Lua's headers (see that file).
clang_tidy_run() {
    need clang-tidy || return 1
    # shellcheck disable=SC2086
    clang-tidy --quiet csrc/*.c -- -std=c99 -D_POSIX_C_SOURCE=200809L \
        -include tools/lint/lua_lint.h -I"$LUA_INC" $CURL_CFLAGS 2>&1 |
        grep -v -e '^[0-9]* warnings generated\.$' -e '^Suppressed [0-9]* warnings' \
                -e '^Use -header-filter' -e 'NOLINT' | tee /dev/stderr | grep -q . && return 1
    return 0
}

luacheck_run() {
    need luacheck || return 1
    dirs=""
    for d in lua spec examples bin fuzz; do [ -e "$d" ] && dirs="$dirs $d"; done
    # bin/aliyun-iot has no .lua suffix: name the files so luacheck reads them all.
    # shellcheck disable=SC2086
    luacheck --no-color -q $dirs $(ls bin/* 2>/dev/null)
}

cppcheck_run; report $? cppcheck
clang_tidy_run; report $? clang-tidy
luacheck_run; report $? luacheck
