//! `sluice check` and `sluice run` on broken configs.

use std::process::Command;

use crate::common::{scratch_dir, sluice_binary};

fn check(text: &str) -> (bool, String) {
    let dir = scratch_dir();
    let path = dir.join("broken.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(sluice_binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn check_lists_every_error_with_key_and_line() {
    let (ok, output) = check(
        r#"[[listeners]]
address = "127.0.0.1:8080"

[[listeners]]
address = "127.0.0.1:8080"

[placements.a]
endpoints = [{ address = "no-port-here" }]
timeouts = { read = "forever" }

[placements.b]
endpoints = []

[[routes]]
placement = "c"

[[routes]]
hosts = ["api.test"]
placement = "a"

[[routes]]
hosts = ["api.test"]
placement = "b"
"#,
    );
    assert!(!ok, "{output}");
    for expected in [
        "broken.toml:5: listeners[1].address: duplicate listener",
        "broken.toml:8: placements.a.endpoints[0].address",
        "broken.toml:9: placements.a.timeouts.read",
        "broken.toml:12: placements.b.endpoints",
        "broken.toml:15: routes[0].placement: unknown placement \"c\"",
        "broken.toml:22: routes[2].hosts[0]: duplicate route match",
    ] {
        assert!(
            output.contains(expected),
            "missing {expected:?} in:\n{output}"
        );
    }
    assert!(output.contains("6 errors"), "{output}");
}

#[test]
fn unknown_keys_and_types_name_key_and_line() {
    let (ok, output) = check("[[listeners]]\naddress = \"127.0.0.1:1\"\n\n[placements.a]\nendpoints = [{ address = \"127.0.0.1:2\" }]\nbalance = \"random\"\n");
    assert!(!ok);
    assert!(output.contains(":6: placements.a.balance"), "{output}");
    let (ok, output) = check("[[listeners]]\naddress = \"127.0.0.1:1\"\nh2 = true\n");
    assert!(!ok);
    assert!(
        output.contains(":3: listeners[0]") && output.contains("h2"),
        "{output}"
    );
}

#[test]
fn run_refuses_a_broken_config() {
    let dir = scratch_dir();
    let path = dir.join("broken.toml");
    std::fs::write(
        &path,
        "[[listeners]]\naddress = \"${SLUICE_TEST_UNSET_VARIABLE}\"\n",
    )
    .unwrap();
    let output = Command::new(sluice_binary())
        .args(["run", "--config"])
        .arg(&path)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(":2: listeners[0].address")
            && stderr.contains("SLUICE_TEST_UNSET_VARIABLE"),
        "{stderr}"
    );
}

#[test]
fn shipped_examples_pass_check() {
    // examples/plugins.toml reads its plugin directory from PLUGIN_DIR: give
    // it the five first-party plugins, compiled once into the shared cache.
    let plugins = crate::plugins::plugin_dir(&[
        ("headers", "sluice-plugin-headers"),
        ("rewrite", "sluice-plugin-rewrite"),
        ("traffic-split", "sluice-plugin-traffic-split"),
        ("shuffle-shard", "sluice-plugin-shuffle-shard"),
        ("api-key", "sluice-plugin-api-key"),
    ]);
    std::os::unix::fs::symlink(crate::plugins::shared_cache(), plugins.join(".cache")).unwrap();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let output = Command::new(sluice_binary())
                .args(["check", "--config"])
                .arg(&path)
                .env("PLUGIN_DIR", &plugins)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}
