#!/bin/sh
# Builds and installs the rockspec offline into a private tree, then loads the installed
# modules from it with nothing of the checkout on the path. Prints TAP lines.
set -u
tree=build/rocktree
rm -rf "$tree"
if luarocks --lua-version=5.4 make --deps-mode=none --tree "$tree" aliyun-iot-*.rockspec \
    > build/rock-check.log 2>&1; then
    echo "ok - luarocks make --deps-mode=none builds and installs the rockspec"
else
    cat build/rock-check.log
    echo "not ok - luarocks make --deps-mode=none failed"
fi
rm -f csrc/*.o
# Every Lua module and C source of the checkout must be listed, or an installed tree
# would lack it while the checkout works.
missing=""
for f in $(find lua -name '*.lua' | sort) $(ls csrc/*.c); do
    grep -q "\"$f\"" aliyun-iot-*.rockspec || missing="$missing $f"
done
if [ -z "$missing" ]; then
    echo "ok - the rockspec lists every Lua module and C source"
else
    echo "not ok - the rockspec misses:$missing"
fi
for mod in aliyun.iot.core aliyun.iot aliyun.iot.emulator; do
    if (cd /tmp && LUA_PATH="$OLDPWD/$tree/share/lua/5.4/?.lua;$OLDPWD/$tree/share/lua/5.4/?/init.lua;/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua" \
        LUA_CPATH="$OLDPWD/$tree/lib/lua/5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so" \
        lua5.4 -e "require '$mod'") 2>&1; then
        echo "ok - require '$mod' from the installed tree"
    else
        echo "not ok - require '$mod' from the installed tree"
    fi
done
