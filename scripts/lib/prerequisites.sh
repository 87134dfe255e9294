# Shared by scripts/demo.sh and scripts/test.sh: installs what building
# Sluice needs on a Debian machine, only when it is missing, and finds the
# Rust toolchain. Sourced, not run.

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

# The Debian packages the build needs, plus any named as arguments
# (`has_package` style: PACKAGE or PACKAGE:COMMAND).
install_build_packages() {
    local missing=()
    # cmake builds libz-ng-sys (a Pingora dependency).
    has_package cmake cmake || missing+=(cmake)
    if ! has_package build-essential && ! { command -v cc && command -v c++ && command -v make; } >/dev/null 2>&1; then
        missing+=(build-essential)
    fi
    has_package pkg-config pkg-config || missing+=(pkg-config)
    # protoc generates the etcd client's gRPC code (etcd-client's build script).
    has_package protobuf-compiler protoc || missing+=(protobuf-compiler)
    local extra
    for extra in "$@"; do
        has_package "${extra%%:*}" "${extra#*:}" || missing+=("${extra%%:*}")
    done
    install_debian_packages "${missing[@]}"
}

# Makes `cargo` (and, with `rustup` as argument, `rustup`) available, or
# explains how to install Rust and exits.
require_rust() {
    local tools=(cargo "$@")
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # rustup installed, but this shell has not picked up its PATH yet.
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    local tool
    for tool in "${tools[@]}"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            cat >&2 <<MSG
error: $tool not found. Install Rust with rustup:

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "\$HOME/.cargo/env"

then run this script again.
MSG
            exit 1
        fi
    done
}
