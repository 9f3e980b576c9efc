#!/bin/sh
# Runs the example provisioning endpoint (nginx.conf beside this script) in the foreground,
# from a new temporary prefix folder that holds its configuration, logs, pid and temporary
# files, so nothing is written into the checkout. Ctrl-C (or SIGTERM) stops nginx and
# removes the folder. Needs `make LUA=luajit` first (the C core for nginx's LuaJIT).
#
#   PROVISION_PORT  port on 127.0.0.1 to listen on (default 18081)
#   RESOLVER        DNS servers for cosockets, space-separated addresses (default: the
#                   nameservers of /etc/resolv.conf, else 127.0.0.1)
#   NGINX           the nginx binary (default nginx; OpenResty: openresty, and drop the two
#                   load_module lines of nginx.conf, which name Debian's module files)
# The client's own variables pass through to nginx's workers: ALIBABA_CLOUD_ACCESS_KEY_ID,
# ALIBABA_CLOUD_ACCESS_KEY_SECRET, ALIBABA_CLOUD_SECURITY_TOKEN, ALIYUN_IOT_REGION and
# ALIYUN_IOT_ENDPOINT (see nginx.conf's env lines).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${PROVISION_PORT:-18081}
case $port in
    ''|*[!0-9]*) echo "run.sh: PROVISION_PORT must be a port number, not '$port'" >&2; exit 2 ;;
esac
resolver=${RESOLVER:-$(awk '$1 == "nameserver" && $2 != "" {
    a = $2; sub(/%.*/, "", a); if (a ~ /:/) a = "[" a "]"; printf "%s ", a }' /etc/resolv.conf 2>/dev/null || true)}
resolver=$(echo $resolver) # one line, single spaces
[ -n "$resolver" ] || resolver=127.0.0.1
case $resolver in
    *[!0-9A-Za-z.:\[\]\ ]*) echo "run.sh: RESOLVER must be addresses, not '$resolver'" >&2; exit 2 ;;
esac
[ -f "$root/build/luajit/aliyun/iot/core.so" ] ||
    echo "run.sh: build/luajit/aliyun/iot/core.so is missing: run make LUA=luajit first" >&2

prefix=$(mktemp -d)
pid=""
stop() {
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$prefix"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir "$prefix/logs"
sed -e "s|@ROOT@|$root|g" -e "s|@PORT@|$port|g" -e "s|@RESOLVER@|$resolver|g" \
    "$here/nginx.conf" > "$prefix/nginx.conf"
# As root, nginx's workers would run as nobody, who may not read a checkout under /root;
# a real deployment gives nginx a user of its own instead.
user=""
[ "$(id -u)" -eq 0 ] && user="user root;"
echo "run.sh: http://127.0.0.1:$port/provision (prefix $prefix; Ctrl-C stops it)" >&2
# In the background so that the traps run at once: a shell waiting on a foreground child
# runs them only after it ends.
"${NGINX:-nginx}" -p "$prefix" -c nginx.conf -e logs/error.log -g "daemon off; $user" &
pid=$!
status=0
wait "$pid" || status=$?
pid=""
[ "$status" -eq 0 ] || cat "$prefix/logs/error.log" >&2 2>/dev/null || true
exit "$status"
