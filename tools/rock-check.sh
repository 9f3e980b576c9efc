#!/bin/sh
# Builds and installs the rockspec offline into a private tree, then uses the installed rock
# as a user would, with nothing of the checkout on the path: the modules load, the installed
# command runs with an empty environment (cron, systemd), and README's busted command runs a
# user's spec against the tree. Prints TAP lines.
set -u
root=$PWD
tree=$root/build/rocktree
rm -rf "$tree"
mkdir -p build
user=$(mktemp -d) # a user's project folder, away from the checkout
trap 'rm -rf "$user"' EXIT
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
    if (cd "$user" && LUA_PATH="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua;;" \
        LUA_CPATH="$tree/lib/lua/5.4/?.so;;" lua5.4 -e "require '$mod'") 2>&1; then
        echo "ok - require '$mod' from the installed tree"
    else
        echo "not ok - require '$mod' from the installed tree"
    fi
done

# The installed command with an empty environment, from a folder outside the checkout: the
# LuaRocks wrapper, the script it runs, and the checkout's own bin/aliyun-iot. "--version"
# prints the version of the core it loaded ("unknown" when it found none).
version=$(sed -n 's/^version = "\([^-]*\)-.*/\1/p' aliyun-iot-*.rockspec)
run_empty() { # label command
    out=$(cd "$user" && env -i "$2" --version 2>&1)
    case $out in
        "aliyun-iot $version "*) echo "ok - $1 runs with an empty environment" ;;
        *) echo "$out" | sed 's/^/# /'; echo "not ok - $1 with an empty environment: $(echo "$out" | head -n 1)" ;;
    esac
}
run_empty "the installed aliyun-iot (LuaRocks wrapper)" "$tree/bin/aliyun-iot"
run_empty "the installed aliyun-iot script itself" \
    "$(ls "$tree"/lib/luarocks/rocks-5.4/aliyun-iot/*/bin/aliyun-iot 2>/dev/null | head -n 1)"
if [ -f build/lua5.4/aliyun/iot/core.so ]; then
    run_empty "the checkout's bin/aliyun-iot" "$root/bin/aliyun-iot"
fi

# README's busted command ("Testing your code with the rock"), taken from README itself so
# that the two cannot drift apart, run in the user's folder on a spec of theirs. TREE= is
# pointed at the private tree; LUA_PATH and LUA_CPATH are unset, as README asks.
mkdir -p "$user/spec"
cat > "$user/spec/user_spec.lua" <<'LUA'
describe("a user's spec", function()
  it("loads aliyun-iot from the installed tree under Lua 5.4", function()
    assert.are.equal("Lua 5.4", _VERSION)
    local tree = assert(os.getenv("ROCK_TREE"))
    local iot = require "aliyun.iot"
    local core = require "aliyun.iot.core"
    assert.is_truthy(package.searchpath("aliyun.iot", package.path):find(tree, 1, true))
    assert.is_truthy(package.searchpath("aliyun.iot.core", package.cpath):find(tree, 1, true))
    assert.is_truthy(iot.new{access_key_id = "testid", access_key_secret = "testsecret"})
    local sig = core.sign_rpc("GET", {AccessKeyId = "testid", Action = "DescribeRegions",
      Format = "XML", SignatureMethod = "HMAC-SHA1", SignatureVersion = "1.0",
      SignatureNonce = "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
      Timestamp = "2016-02-23T12:46:24Z", Version = "2014-05-26"}, "testsecret")
    assert.are.equal("OLeaidS1JvxuMvnyHOwuJ+uX5qY=", sig)
  end)
end)
LUA
block=$(awk '/<!-- rock-check: busted -->/ {f = 1; next}
    f && /^```sh$/ {on = 1; next}
    on && /^```$/ {exit}
    on {print}' README.md | sed "s|^TREE=.*|TREE='$tree'|")
if [ -z "$block" ]; then
    echo "not ok - README's busted command (no block after <!-- rock-check: busted -->)"
elif out=$(cd "$user" && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 \
        ROCK_TREE="$tree" sh -ec "$block" 2>&1); then
    echo "ok - README's busted command runs a user's spec against the installed rock"
else
    echo "$block" | sed 's/^/# /'
    echo "$out" | sed 's/^/# /'
    echo "not ok - README's busted command fails on a user's spec"
fi
