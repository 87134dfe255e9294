#!/usr/bin/env bash
# The traffic benchmark: Sluice's upstream protocols and traffic control,
# each case against its own baseline in the same run (h2c against HTTP/1.1
# upstreams, request coalescing off and on, least-request against round
# robin). Writes docs/benchmarks-traffic.md.
#
# Installs what is missing (the build packages; nginx and wrk from Debian),
# builds Sluice and the runner (benches/traffic) in release mode, then runs
# it on CPU 0; it starts Sluice on CPU 1. Arguments are passed on to it,
# e.g. ./scripts/trafficbench.sh --runs 1 --only coalescing (`--help` lists
# them). Every process it starts is stopped when it ends.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/prerequisites.sh
. "$repo_root/scripts/lib/prerequisites.sh"

install_build_packages nginx:nginx wrk:wrk util-linux:taskset
require_rust rustup

cd "$repo_root"
say "cargo build --release --bins -p sluice -p sluice-trafficbench"
cargo build --release --bins -p sluice -p sluice-trafficbench

say "target/release/trafficbench $*"
exec taskset -c 0 "$repo_root/target/release/trafficbench" \
    --sluice "$repo_root/target/release/sluice" \
    --out "$repo_root/docs/benchmarks-traffic.md" \
    --command "./scripts/trafficbench.sh${*:+ $*}" \
    "$@"
