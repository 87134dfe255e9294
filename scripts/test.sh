#!/usr/bin/env bash
# Run every check CI runs: formatting, clippy with warnings as errors, and the
# whole test suite. Installs what is missing first, so it works on a fresh
# Debian machine with Rust installed through rustup.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# shellcheck source=lib/prerequisites.sh
. "$repo_root/scripts/lib/prerequisites.sh"

# ---------------------------------------------------------------------------
# Prerequisites. Everything the build and the tests need is installed here,
# and only when missing. Add further packages in this function.
# ---------------------------------------------------------------------------
install_prerequisites() {
    # pebble: the ACME test CA (and pebble-challtestsrv) the ACME tests run against.
    # prometheus: promtool, which checks and unit-tests examples/monitoring's alert rules.
    # caddy: the Caddyfile import's differential test serves the same file with Caddy.
    # etcd-server: the fleet tests run a real etcd on loopback.
    install_build_packages pebble:pebble prometheus:promtool caddy:caddy etcd-server:etcd
    require_rust rustup
    rustup target list --installed | grep -q wasm32-wasip2 || rustup target add wasm32-wasip2
    rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed | grep -q '^clippy' || rustup component add clippy
}

install_prerequisites

cd "$repo_root"

say "cargo fmt --all -- --check"
cargo fmt --all -- --check

say "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

say "cargo test --workspace"
cargo test --workspace

say "all checks passed"
