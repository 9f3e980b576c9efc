#!/bin/sh
# Installs the Debian packages that building, testing, the demo and the emulator need,
# only those that are missing, so a second run costs a few dpkg queries.
# OpenResty's lua-resty-core needs libluajit2 (OpenResty's LuaJIT branch), which conflicts
# with Debian's plain libluajit-5.1-dev, so LuaJIT comes as luajit2/libluajit2-5.1-dev.
set -eu
# `deps.sh demo` (make demo): only what building the core, the client and the emulator
# need; none of the test tooling (other interpreters, busted, linters, valgrind, the
# locale, Node.js and its packages, LDoc).
MODE=${1:-all}
PKGS="make gcc pkg-config lua5.4 liblua5.4-dev lua5.3 liblua5.3-dev lua5.2 liblua5.2-dev
lua5.1 liblua5.1-0-dev luajit2 libluajit2-5.1-dev lua-cjson lua-busted lua-check
lua-luaossl luarocks libcurl4-openssl-dev libssl-dev libexpat1-dev openssl
nginx libnginx-mod-http-lua lua-resty-core lua-socket locales curl
cppcheck clang-tidy valgrind lua-ldoc lua-markdown"
if [ "$MODE" = demo ]; then
    PKGS="make gcc pkg-config lua5.4 liblua5.4-dev lua-cjson lua-luaossl lua-socket
libcurl4-openssl-dev libssl-dev libexpat1-dev openssl nginx libnginx-mod-http-lua lua-resty-core"
fi
missing=""
for p in $PKGS; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
# Node may come from a non-Debian package that conflicts with Debian's npm.
if [ "$MODE" != demo ] && ! command -v node >/dev/null 2>&1; then
    for p in nodejs npm; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
fi
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing >/dev/null
fi
# A non-C collation for the locale spec (signatures must not depend on it).
if [ "$MODE" != demo ] && ! locale -a 2>/dev/null | grep -qi '^de_DE\.utf8$'; then
    sed -i 's/^# *de_DE.UTF-8 UTF-8/de_DE.UTF-8 UTF-8/' /etc/locale.gen
    grep -q '^de_DE.UTF-8 UTF-8' /etc/locale.gen || echo 'de_DE.UTF-8 UTF-8' >> /etc/locale.gen
    locale-gen >/dev/null
fi
# The official Node.js SDKs that spec/official_sdk_spec.lua drives against the emulator, into
# the git-ignored tools/node/node_modules; again only when missing or older than the lock file.
NODE_DIR=$(dirname "$0")/node
if [ "$MODE" != demo ] && command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    if [ ! -d "$NODE_DIR/node_modules" ] || [ "$NODE_DIR/package-lock.json" -nt "$NODE_DIR/node_modules" ]; then
        echo "deps: npm ci --prefix $NODE_DIR"
        npm ci --prefix "$NODE_DIR" --no-audit --no-fund >/dev/null && touch "$NODE_DIR/node_modules"
    fi
fi
