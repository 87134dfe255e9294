#!/usr/bin/env bash
# The load benchmark: Sluice side by side with nginx, HAProxy and Caddy on
# this machine, over loopback. Writes docs/benchmarks.md and
# docs/benchmarks.svg.
#
# Installs what is missing (the build packages; nginx, haproxy, caddy, wrk
# and openssl from Debian; the wasm32-wasip2 target), builds Sluice, bare
# Pingora, the runner and the headers, rewrite and api-key plugins in
# release mode, then runs the runner (benches/load). Arguments are passed
# on to it, e.g.
#   ./scripts/loadbench.sh --runs 1 --only nginx-plain,sluice-plain
# (`--help` lists them). Every process it starts is stopped when it ends,
# also on an error or Ctrl-C. Needs 2 CPUs: the proxy gets CPU 1, the load
# generators and the origin CPU 0.
set -euo pipefail

started_at="$(date +%s)"
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/prerequisites.sh
. "$repo_root/scripts/lib/prerequisites.sh"

# ---------------------------------------------------------------------------
# Prerequisites, each installed only when missing.
# ---------------------------------------------------------------------------
# The proxies measured beside Sluice, and the tools of the run.
peers=(nginx:nginx haproxy:haproxy caddy:caddy wrk:wrk openssl:openssl util-linux:taskset python3:python3)
installed=()
for peer in "${peers[@]}"; do
    has_package "${peer%%:*}" "${peer#*:}" || installed+=("${peer%%:*}")
done
# One apt-get run for them and for what the build needs.
install_build_packages "${peers[@]}"
require_rust rustup
if ! rustup target list --installed | grep -q wasm32-wasip2; then
    rustup target add wasm32-wasip2
    installed+=(wasm32-wasip2)
fi

# The Debian packages start their services where an init system runs them;
# the benchmark needs none of them (it starts its own instances on ports
# 18000, 18080 and 18443), so nothing is stopped here.

install_time="$(elapsed "$started_at")"

# ---------------------------------------------------------------------------
# Builds.
# ---------------------------------------------------------------------------
cd "$repo_root"
builds_started="$(date +%s)"
# The plugins get a target directory of their own: the components in the
# workspace's target/wasm32-wasip2 are also written by the test suite and
# other builds, and one left there from an older WIT contract would be
# rejected by this Sluice. Being apart, they build beside the native
# binaries, which keeps both cores busy while the native build waits on
# its last few crates.
wasm_target="$repo_root/target/loadbench"
mkdir -p "$wasm_target"
wasm_log="$wasm_target/build.log"
say "cargo build --release --target wasm32-wasip2 -p sluice-plugin-headers -p sluice-plugin-rewrite -p sluice-plugin-api-key --target-dir $wasm_target (in the background, log in $wasm_log)"
cargo build --release --target wasm32-wasip2 -p sluice-plugin-headers -p sluice-plugin-rewrite \
    -p sluice-plugin-api-key --target-dir "$wasm_target" >"$wasm_log" 2>&1 &
wasm_build=$!
trap 'kill "$wasm_build" 2>/dev/null || true' EXIT
# Sluice and the runner; then bare Pingora as released (measured as the
# floor under Sluice's plain proxy), a workspace of its own so that Sluice's
# Pingora patches stay out of it, in the same target directory.
say "cargo build --release --bins -p sluice -p sluice-loadbench"
cargo build --release --bins -p sluice -p sluice-loadbench
# The linker script that lays out the functions a request runs
# (host/link/text-order.ld) names them with a hash of their crate's code:
# after changes to Sluice some names no longer match, and the memory
# measured is that of a binary partly laid out at random. With a tenth of
# the serving functions missing, an idle proxy held 2.6 MiB more. When
# more than 3% of them are missing from this build, or less than half a
# megabyte of serving code was laid out, the file is written again (and
# should be committed with the report).
serving_hex="$(readelf -SW target/release/sluice |
    sed -n 's/.*\.text\.sluice_serving *PROGBITS *[0-9a-f]* *[0-9a-f]* *\([0-9a-f]*\).*/\1/p')"
serving_found="$(PYTHONPATH="$repo_root/scripts/lib" python3 -c \
    'import sys, text_order; print(text_order.serving_found(*sys.argv[1:]))' \
    host/link/text-order.ld target/release/sluice)"
if [ "$(uname -m)" = x86_64 ] &&
    { (( 16#${serving_hex:-0} < 512 * 1024 )) || (( ${serving_found:-0} < 97 )); }; then
    say "host/link/text-order.ld is stale (serving code: $(( 16#${serving_hex:-0} )) bytes, ${serving_found:-0}% of its serving functions in this build); regenerating it"
    "$repo_root/scripts/text-order.sh"
    cargo build --release --bins -p sluice -p sluice-loadbench
fi
say "cargo build --release --manifest-path benches/pingora-floor/Cargo.toml --target-dir target"
cargo build --release --manifest-path benches/pingora-floor/Cargo.toml --target-dir target
plugin_args=()
if ! wait "$wasm_build"; then
    tail -n 30 "$wasm_log" >&2
    # Measure the rest; the report says why the plugin case is missing.
    say "warning: the plugins did not build; the plugin case is skipped"
    plugin_args=(--skip-plugins "the headers, rewrite and api-key plugins did not build (cargo build --target wasm32-wasip2 failed)")
fi
trap - EXIT
build_time="$(elapsed "$builds_started")"

# ---------------------------------------------------------------------------
# The run. The runner raises its open-file limit itself (10,000 idle
# connections need more than the usual 1,024).
# ---------------------------------------------------------------------------
say "target/release/loadbench $*"
exec "$repo_root/target/release/loadbench" \
    --sluice "$repo_root/target/release/sluice" \
    --wasm-dir "$wasm_target/wasm32-wasip2/release" \
    --out "$repo_root/docs" \
    --command "./scripts/loadbench.sh${*:+ $*}" \
    --since "$started_at" \
    "${plugin_args[@]}" \
    --note "**Setup before the runner**: installs ${install_time} (installed: ${installed[*]:-nothing, all present}); cargo builds of Sluice, the runner, the bare Pingora proxy and the three plugins ${build_time}" \
    "$@"
