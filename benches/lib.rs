//! Fixtures shared by Sluice's criterion benchmarks.

use std::fmt::Write as _;

/// A config with `routes` routes and `keys` routing-table keys, in the shape
/// of a large cell-routed deployment: exact hosts with path prefixes,
/// wildcard hosts, host-less prefixes, and one two-level route per cell
/// domain whose tables hold the keys.
pub fn large_config(routes: usize, keys: usize) -> String {
    let placements = 20;
    let mut text = String::from("[[listeners]]\naddress = \"127.0.0.1:8080\"\n\n");
    for p in 0..placements {
        let _ = writeln!(
            text,
            "[placements.cell-{p}]\nendpoints = [{{ address = \"127.0.0.1:{}\" }}, {{ address = \"127.0.0.1:{}\" }}, {{ address = \"127.0.0.1:{}\" }}]\n",
            10000 + p * 3,
            10001 + p * 3,
            10002 + p * 3
        );
    }
    let keyed_routes = 10;
    let keys_per_route = keys / keyed_routes;
    for r in 0..keyed_routes {
        let _ = writeln!(
            text,
            "[[routes]]\nhosts = [\"*.region{r}.cells.example.com\"]\n[routes.routing]\nkey = {{ source = \"header\", name = \"x-tenant\" }}\ndefault = \"cell-0\"\n[routes.routing.table]"
        );
        for k in 0..keys_per_route {
            let _ = writeln!(
                text,
                "tenant-{} = \"cell-{}\"",
                r * keys_per_route + k,
                k % placements
            );
        }
        text.push('\n');
    }
    for i in 0..routes.saturating_sub(keyed_routes) {
        let placement = i % placements;
        let _ = match i % 10 {
            0..=5 => writeln!(
                text,
                "[[routes]]\nhosts = [\"svc{}.example.com\"]\npath_prefix = \"/v{}\"\nplacement = \"cell-{placement}\"\n",
                i / 3,
                i % 3
            ),
            6..=8 => writeln!(text, "[[routes]]\nhosts = [\"*.zone{i}.example.com\"]\nplacement = \"cell-{placement}\"\n"),
            _ => writeln!(text, "[[routes]]\npath_prefix = \"/static{i}/\"\nplacement = \"cell-{placement}\"\n"),
        };
    }
    text
}

/// Compiles a config text into a snapshot, panicking on errors.
pub fn compile(text: &str) -> sluice::snapshot::Snapshot {
    let loaded = sluice::config::parse(text, "bench", &|_| None).expect("bench config parses");
    sluice::snapshot::compile(
        &loaded,
        "bench",
        &sluice::resilience::state::Registry::default(),
    )
    .expect("bench config compiles")
}

/// The component built from a workspace plugin package, building the
/// first-party plugins for `wasm32-wasip2` when it is missing.
pub fn plugin_wasm(package: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root
        .join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    // Cargo rebuilds only what changed, so a stale component never gets
    // benchmarked against a newer host.
    {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                package,
            ])
            // Built where `path` looks, whatever CARGO_TARGET_DIR says.
            .arg("--target-dir")
            .arg(root.join("target"))
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building {package} for wasm32-wasip2 failed"
        );
    }
    path
}

#[cfg(test)]
mod tests {
    #[test]
    fn large_config_has_the_promised_size() {
        let snapshot = super::compile(&super::large_config(1000, 10_000));
        assert_eq!(snapshot.routes.len(), 1000);
        let keys: usize = snapshot
            .routes
            .iter()
            .map(|r| match &r.target {
                sluice::snapshot::RouteTarget::Keyed(k) => k.table.len(),
                sluice::snapshot::RouteTarget::Direct(_) => 0,
                sluice::snapshot::RouteTarget::Respond(_) => 0,
            })
            .sum();
        assert_eq!(keys, 10_000);
    }
}
