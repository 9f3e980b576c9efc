#!/bin/sh
# Builds and runs the C-level tests against the Lua 5.4 build of the core; each prints TAP.
set -u
out=build/ctests
mkdir -p "$out"
objs=$(ls build/lua5.4/obj/*.o)
for src in spec/c/*.c; do
    name=$(basename "$src" .c)
    if ! cc -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -I/usr/include/lua5.4 \
        -o "$out/$name" "$src" $objs -llua5.4 -lcurl -lcrypto -lexpat -lpthread -lm; then
        echo "not ok - $name does not compile"
        continue
    fi
    "./$out/$name" || echo "not ok - $name exited with status $?"
done
