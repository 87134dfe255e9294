#!/usr/bin/env bash
# Writes host/link/text-order.ld: the order in which the release `sluice`
# binary lays out its functions (see host/build.rs for why).
#
# Runs the release binary under valgrind's callgrind twice, as a plain proxy
# and with the load benchmark's plugins (compiled afresh), each through
# start-up and then a few seconds of wrk load against an nginx origin on
# loopback, and lists the functions each phase ran, in this order: a plain
# proxy's requests, requests through plugins (the section
# .text.sluice_serving), a plain proxy's start-up, loading plugins,
# compiling plugins (.text.sluice_startup, which the proxy hands back to the
# kernel once it serves: host/src/support/code.rs). Run it again after
# changing Sluice's code, a dependency or the Rust toolchain: mangled names
# carry a hash of their crate's code, so a stale file matches little and
# loses the effect (an idle proxy then keeps about 6 MiB more code
# resident). Needs valgrind, nginx, wrk, curl and python3; takes a minute
# or three after the builds.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/prerequisites.sh
. "$repo_root/scripts/lib/prerequisites.sh"

install_build_packages valgrind:valgrind nginx:nginx wrk:wrk curl:curl python3:python3
require_rust rustup
rustup target list --installed | grep -q wasm32-wasip2 || rustup target add wasm32-wasip2

cd "$repo_root"
say "cargo build --release --bin sluice, and the headers, rewrite and api-key plugins"
cargo build --release -p sluice --bin sluice
cargo build --release --target wasm32-wasip2 -p sluice-plugin-headers -p sluice-plugin-rewrite \
    -p sluice-plugin-api-key
sluice="$repo_root/target/release/sluice"

work="$(mktemp -d)"
origin_pid=""
proxy_pid=""
cleanup() {
    [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null || true
    [ -n "$origin_pid" ] && kill "$origin_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/plugins" "$work/tmp"
for plugin in headers rewrite api-key; do
    cp "target/wasm32-wasip2/release/sluice_plugin_${plugin//-/_}.wasm" "$work/plugins/$plugin.wasm"
done
cat >"$work/origin.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/origin.pid;
error_log $work/origin-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/tmp/body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;
    server {
        listen 127.0.0.1:18000;
        location / { return 200 "hello from the origin\n"; }
    }
}
EOF
# The load benchmark's configs (benches/load), whose idle memory it reports.
config() {
    cat <<EOF
[server]
threads = 1
access_log = false
grace_period = "1s"
upgrade_socket = "$work/upgrade-$1.sock"

[[listeners]]
address = "127.0.0.1:18080"
h2c = false

[placements.origin]
endpoints = [{ address = "127.0.0.1:18000" }]

[[routes]]
name = "all"
placement = "origin"
explain = false
EOF
}
config plain >"$work/plain.toml"
{
    config plugins
    cat <<EOF

[plugins]
directory = "$work/plugins"
cache_dir = "$work/plugin-cache"

[[routes.plugins]]
name = "headers"
config.request = { set = { "x-real-host" = "{host}" }, add = { "via" = "sluice" }, remove = ["x-debug"] }
config.response = { set = { "x-served-by" = "{upstream}" }, remove = ["server"] }

[[routes.plugins]]
name = "rewrite"
config = { rules = [{ regex = "^/acme/(.*)$", to = "/\$1" }] }
EOF
} >"$work/plugins.toml"

nginx -c "$work/origin.conf" -p "$work" &
origin_pid=$!

# profile NAME: callgrind dumps profile-NAME.1 (start-up, up to the first
# answer) and profile-NAME.2 (three seconds of requests), names left mangled.
profile() {
    local name="$1"
    say "profiling the $name proxy under callgrind"
    mkdir -p "$work/state-$name"
    valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/profile-$name" \
        "$sluice" run --config "$work/$name.toml" --state-dir "$work/state-$name" \
        >"$work/$name.log" 2>&1 &
    proxy_pid=$!
    local tries=0
    until curl -sf -o /dev/null http://127.0.0.1:18080/acme/hello; do
        tries=$((tries + 1))
        if [ "$tries" -gt 300 ] || ! kill -0 "$proxy_pid" 2>/dev/null; then
            tail -n 20 "$work/$name.log" >&2
            echo "error: the $name proxy did not answer under callgrind" >&2
            exit 1
        fi
        sleep 1
    done
    callgrind_control -d "$proxy_pid" >/dev/null
    wrk -t1 -c4 -d3s http://127.0.0.1:18080/acme/hello >/dev/null
    callgrind_control -d "$proxy_pid" >/dev/null
    kill "$proxy_pid"
    wait "$proxy_pid" 2>/dev/null || true
    proxy_pid=""
}
profile plain
profile plugins

nm --defined-only "$sluice" | awk '$2 ~ /^[tTwW]$/ { print $1, $3 }' >"$work/symbols"
PYTHONPATH="$repo_root/scripts/lib" python3 - "$work" "$repo_root/host/link/text-order.ld" <<'EOF'
import re, sys

from text_order import entry, section_name

work, out = sys.argv[1], sys.argv[2]
# Functions merged as identical share an address under several names, and
# the profile names one of them; the linker knows the section by another.
names_at, address_of = {}, {}
for line in open(f"{work}/symbols"):
    address, name = line.split()
    names_at.setdefault(address, []).append(name)
    address_of[name] = address
symbols = set(address_of)

def ran(*dumps):
    """The binary's functions that ran in these dumps, in first-seen order."""
    seen, order = set(), []
    for dump in dumps:
        for line in open(f"{work}/profile-{dump}"):
            # A name is spelled out where a dump first mentions it, as the
            # function itself or as one called; `'N` marks a recursion depth.
            found = re.match(r"c?fn=\(\d+\) (\S+?)(?:'\d+)?$", line)
            if found and found[1] in symbols and found[1] not in seen:
                seen.add(found[1])
                order.append(found[1])
    return order

def compiles(name):
    return "cranelift" in name[:60] or "regalloc2" in name[:60]

loading = ran("plugins.1", "plugins")
groups = [
    ran("plain.2"),
    ran("plugins.2"),
    ran("plain.1", "plain"),
    [f for f in loading if not compiles(f)],
    [f for f in loading if compiles(f)],
]
placed, serving, startup = set(), [], []
for index, group in enumerate(groups):
    for function in group:
        for name in names_at[address_of[function]]:
            name = section_name(name)
            if name not in placed:
                placed.add(name)
                (serving if index < 2 else startup).append(entry(name))
with open(out, "w") as f:
    f.write(
        "/* Written by scripts/text-order.sh: the release sluice binary's functions\n"
        "   in the order they run (host/build.rs says why). Do not edit. */\n"
        "SECTIONS\n{\n  .text.sluice_serving :\n  {\n"
        + "".join(serving)
        + "  }\n  .text.sluice_startup :\n  {\n"
        + "".join(startup)
        + "  }\n}\nINSERT BEFORE .text;\n"
    )
lines = serving + startup
print(f"{len(lines)} functions placed: " + ", ".join(str(len(g)) for g in groups), file=sys.stderr)
EOF
say "wrote host/link/text-order.ld; rebuild with cargo build --release to use it"
