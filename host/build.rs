//! Links the release `sluice` binary so that an idle proxy keeps little of
//! its own code resident.
//!
//! The binary holds 25 MB of code, of which a proxy runs a few: the kernel
//! maps a file's code 64 KiB around every page first touched, so functions
//! run together but laid out far apart each bring in their neighbours.
//! `link/text-order.ld` (written by `scripts/text-order.sh` from a profile
//! of the real binary) places the functions that serve requests in
//! `.text.sluice_serving`, and those that start-up, reloads and plugin
//! loading run in `.text.sluice_startup`, which the proxy hands back to the
//! kernel once it serves (`src/support/code.rs`). Where it names functions
//! this toolchain no longer emits (another Rust release mangles them
//! differently) it moves nothing and costs nothing.
//!
//! Relative relocations are packed (`-z pack-relative-relocs`) when the C
//! library is new enough to apply them (glibc 2.36): the usual table is
//! 1.7 MB that the loader reads once at start-up and the process keeps.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link/text-order.ld");
    println!("cargo:rerun-if-changed=build.rs");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    // The names are the x86-64 Linux release build's; debug builds, run by
    // the tests, gain nothing from it.
    if env("PROFILE") != "release" || env("TARGET") != "x86_64-unknown-linux-gnu" {
        return;
    }
    let order = std::path::Path::new(&env("CARGO_MANIFEST_DIR")).join("link/text-order.ld");
    println!("cargo:rustc-link-arg-bin=sluice=-Wl,-T,{}", order.display());
    if glibc_applies_packed_relocations() {
        println!("cargo:rustc-link-arg-bin=sluice=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this machine's glibc, which the binary will load with, is 2.36
/// or later.
fn glibc_applies_packed_relocations() -> bool {
    let Ok(output) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.trim().strip_prefix("glibc ").unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 36)
}
