#!/usr/bin/env bash
# Build and run `sluice demo` on a fresh Debian machine.
#
# Installs the system packages the build needs (only those missing), checks
# for a Rust toolchain, then runs `cargo run -p sluice -- demo` from the
# repository root. Arguments are passed on to `sluice demo`, e.g.
#   ./scripts/demo.sh --listen 127.0.0.1:8081 --upstream-port 0
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { printf '==> %s\n' "$*" >&2; }

# Runs a command as root: directly when root, else through sudo when present.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

# True when the Debian package is installed, or when its command is on PATH.
has_package() {
    local package="$1" command="${2:-}"
    if [ -n "$command" ] && command -v "$command" >/dev/null 2>&1; then
        return 0
    fi
    dpkg -s "$package" >/dev/null 2>&1
}

install_debian_packages() {
    [ "$#" -gt 0 ] || return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: missing packages ($*) and no apt-get to install them; install them by hand" >&2
        exit 1
    fi
    say "installing: $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

install_prerequisites() {
    local missing=()
    # cmake builds libz-ng-sys (a Pingora dependency).
    has_package cmake cmake || missing+=(cmake)
    if ! has_package build-essential && ! { command -v cc && command -v c++ && command -v make; } >/dev/null 2>&1; then
        missing+=(build-essential)
    fi
    has_package pkg-config pkg-config || missing+=(pkg-config)
    install_debian_packages "${missing[@]}"
}

require_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # rustup installed, but this shell has not picked up its PATH yet.
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        cat >&2 <<'MSG'
error: cargo not found. Install Rust with rustup:

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "$HOME/.cargo/env"

then run this script again.
MSG
        exit 1
    fi
}

install_prerequisites
require_cargo

cd "$repo_root"
say "cargo run -p sluice -- demo $*"
exec cargo run -p sluice -- demo "$@"
