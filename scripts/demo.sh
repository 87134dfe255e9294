#!/usr/bin/env bash
# Build and run `sluice demo` on a fresh Debian machine.
#
# Installs the system packages the build needs (only those missing), checks
# for a Rust toolchain, then runs `cargo run -p sluice -- demo` from the
# repository root. Arguments are passed on to `sluice demo`, e.g.
#   ./scripts/demo.sh --listen 127.0.0.1:8081 --upstream-port 0
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/prerequisites.sh
. "$repo_root/scripts/lib/prerequisites.sh"

install_build_packages
require_rust

cd "$repo_root"
say "cargo run -p sluice -- demo $*"
exec cargo run -p sluice -- demo "$@"
