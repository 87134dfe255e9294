//! WebAssembly plugins, loaded from real `.wasm` files built from the
//! workspace's plugin crates.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{client, get, scratch_dir, upstreams, Proxy};

/// Builds the plugin packages for wasm32-wasip2 once per test run, and
/// returns the path of `package`'s component.
fn plugin_wasm(package: &str) -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !*built {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                "sluice-plugin-headers",
                "-p",
                "sluice-test-hostile",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "building the test plugins failed");
        *built = true;
    }
    let file = package.replace('-', "_");
    root.join("target/wasm32-wasip2/release")
        .join(format!("{file}.wasm"))
}

/// A plugin directory with `(file stem, package)` copies.
fn plugin_dir(plugins: &[(&str, &str)]) -> PathBuf {
    let dir = scratch_dir().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for (stem, package) in plugins {
        std::fs::copy(plugin_wasm(package), dir.join(format!("{stem}.wasm"))).unwrap();
    }
    dir
}

/// Replaces a plugin file the way a deploy does: write aside, then rename.
fn replace(dir: &Path, stem: &str, bytes: &[u8]) {
    let temporary = dir.join(format!("{stem}.wasm.tmp"));
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, dir.join(format!("{stem}.wasm"))).unwrap();
}

async fn plugin_status(proxy: &Proxy, name: &str) -> serde_json::Value {
    let (_, status) = proxy.admin("GET", "/status").await;
    status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no plugin {name} in {status}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_plugin_changes_the_request_and_the_response() {
    let up = upstreams(&["origin"]).await;
    let dir = plugin_dir(&[("headers", "sluice-plugin-headers")]);
    let proxy = Proxy::start(&format!(
        r#"[plugins]
directory = "{}"
deadline = "250ms"
[placements.o]
endpoints = [{{ address = "{}" }}]
[[routes]]
name = "web"
placement = "o"
[[routes.plugins]]
name = "headers"
config.request = {{ set = {{ "x-real-host" = "{{host}}", "x-route" = "{{route}}" }}, remove = ["x-debug"] }}
config.response = {{ set = {{ "x-upstream-was" = "{{upstream}}" }}, remove = ["x-served-by"] }}
"#,
        dir.display(),
        up[0].address
    ));
    let reply = get(&proxy, "shop.test", "/cart", &[("x-debug", "1")]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo = reply.echo();
    assert_eq!(echo["headers"]["x-real-host"], "shop.test");
    assert_eq!(echo["headers"]["x-route"], "web");
    assert!(echo["headers"].get("x-debug").is_none());
    assert_eq!(reply.header("x-upstream-was"), up[0].address.to_string());
    assert_eq!(reply.header("x-served-by"), "");
    let status = plugin_status(&proxy, "headers").await;
    assert_eq!(
        status["hooks"],
        serde_json::json!(["on_request", "on_response"])
    );
    assert!(status["version"].as_str().unwrap().len() == 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_plugins_are_contained_and_the_proxy_keeps_serving() {
    let up = upstreams(&["origin"]).await;
    let dir = plugin_dir(&[
        ("looper", "sluice-test-hostile"),
        ("bomb", "sluice-test-hostile"),
        ("trapper", "sluice-test-hostile"),
        ("friendly", "sluice-test-hostile"),
    ]);
    let route = |prefix: &str, plugin: &str, mode: &str, failure: &str| {
        format!(
            "[[routes]]\npath_prefix = \"{prefix}\"\nplacement = \"o\"\n[[routes.plugins]]\nname = \"{plugin}\"\nconfig = {{ mode = \"{mode}\" }}\n{failure}\n"
        )
    };
    let proxy = Proxy::start(&format!(
        "[plugins]\ndirectory = \"{}\"\ndeadline = \"20ms\"\nmemory = \"8MiB\"\n[placements.o]\nendpoints = [{{ address = \"{}\" }}]\n{}{}{}{}{}",
        dir.display(),
        up[0].address,
        route("/loop-open", "looper", "loop", ""),
        route("/loop-closed", "looper", "loop", "failure = \"closed\"\nstatus = 503"),
        route("/memory", "bomb", "memory", "failure = \"closed\""),
        route("/trap", "trapper", "trap", ""),
        route("/ok", "friendly", "ok", ""),
    ));
    let started = Instant::now();
    let open = get(&proxy, "x.test", "/loop-open", &[]).await;
    assert_eq!(
        open.status, 200,
        "fail-open skips the plugin: {}",
        open.body
    );
    assert!(open.echo()["headers"].get("x-hostile").is_none());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the deadline stopped the loop"
    );
    let closed = get(&proxy, "x.test", "/loop-closed", &[]).await;
    assert_eq!(closed.status, 503, "{}", closed.body);
    let memory = get(&proxy, "x.test", "/memory", &[]).await;
    assert_eq!(memory.status, 500, "{}", memory.body);
    for _ in 0..3 {
        assert_eq!(get(&proxy, "x.test", "/trap", &[]).await.status, 200);
    }
    let ok = get(&proxy, "x.test", "/ok", &[]).await;
    assert_eq!(
        ok.echo()["headers"]["x-hostile"],
        "ok",
        "other plugins keep serving"
    );

    let metrics = proxy.metrics().await;
    for (plugin, kind) in [
        ("looper", "deadline"),
        ("bomb", "memory"),
        ("trapper", "trap"),
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("sluice_plugin_failures_total")
                    && l.contains(&format!("plugin=\"{plugin}\""))
                    && l.contains(&format!("kind=\"{kind}\""))),
            "no {kind} failure counted for {plugin}:\n{metrics}"
        );
    }
    assert_eq!(
        plugin_status(&proxy, "trapper").await["pooled"],
        0,
        "trapped instances are discarded"
    );
    assert_eq!(plugin_status(&proxy, "looper").await["pooled"], 0);
    assert!(
        plugin_status(&proxy, "friendly").await["pooled"]
            .as_u64()
            .unwrap()
            >= 1,
        "healthy instances are reused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_wasm_is_rejected_and_hot_swaps_lose_no_request() {
    let up = upstreams(&["origin"]).await;
    let dir = plugin_dir(&[("marker", "sluice-test-hostile")]);
    let proxy = Proxy::start(&format!(
        "[plugins]\ndirectory = \"{}\"\n# Generous: a loaded test machine must not turn into deadline failures.\ndeadline = \"250ms\"\n[placements.o]\nendpoints = [{{ address = \"{}\" }}]\n[[routes]]\nplacement = \"o\"\n[[routes.plugins]]\nname = \"marker\"\nfailure = \"closed\"\n",
        dir.display(),
        up[0].address
    ));
    let first = plugin_status(&proxy, "marker").await["version"].clone();
    replace(&dir, "marker", b"\0asm this is not a component");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = plugin_status(&proxy, "marker").await;
        if let Some(error) = status["last_error"].as_str() {
            assert!(error.contains("marker.wasm"), "{error}");
            assert_eq!(status["version"], first, "the old version keeps serving");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the malformed file was never reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&proxy, "x.test", "/", &[]).await.echo()["headers"]["x-hostile"],
        "ok"
    );

    // Swap between two builds of the plugin under a bounded load.
    let versions = [
        std::fs::read(plugin_wasm("sluice-test-hostile")).unwrap(),
        std::fs::read(plugin_wasm("sluice-plugin-headers")).unwrap(),
    ];
    let url = proxy.url("/");
    let load = tokio::spawn(async move {
        let client = client();
        let mut failures = Vec::new();
        for _ in 0..600 {
            match client.get(&url).send().await {
                Ok(response) if response.status() == 200 => {}
                Ok(response) => failures.push(response.status().to_string()),
                Err(e) => failures.push(e.to_string()),
            }
        }
        failures
    });
    for i in 0..8 {
        replace(&dir, "marker", &versions[i % 2]);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let failures = load.await.unwrap();
    let log: Vec<String> = proxy
        .stderr_text()
        .lines()
        .filter(|l| l.contains("plugin"))
        .map(str::to_string)
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        log.join("\n")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while plugin_status(&proxy, "marker").await["version"] == first {
        assert!(Instant::now() < deadline, "the last swap never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_plugins_are_cached_across_restarts() {
    let up = upstreams(&["origin"]).await;
    let dir = plugin_dir(&[("headers", "sluice-plugin-headers")]);
    let body = format!(
        "[plugins]\ndirectory = \"{}\"\n# Generous: a loaded test machine must not turn into deadline failures.\ndeadline = \"250ms\"\n[placements.o]\nendpoints = [{{ address = \"{}\" }}]\n[[routes]]\nplacement = \"o\"\n[[routes.plugins]]\nname = \"headers\"\n",
        dir.display(),
        up[0].address
    );
    let first = Proxy::start(&body);
    assert_eq!(plugin_status(&first, "headers").await["from_cache"], false);
    drop(first);
    let second = Proxy::start(&body);
    assert_eq!(plugin_status(&second, "headers").await["from_cache"], true);
    assert_eq!(get(&second, "x.test", "/", &[]).await.status, 200);
}

#[test]
fn unknown_plugins_and_undeclared_hooks_are_config_errors() {
    let dir = plugin_dir(&[("headers", "sluice-plugin-headers")]);
    let scratch = scratch_dir();
    let config = scratch.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[plugins]\ndirectory = \"{}\"\n# Generous: a loaded test machine must not turn into deadline failures.\ndeadline = \"250ms\"\n[placements.o]\nendpoints = [{{ address = \"127.0.0.1:2\" }}]\n[[routes]]\nplacement = \"o\"\n[[routes.plugins]]\nname = \"nope\"\n[[routes.plugins]]\nname = \"headers\"\nhooks = [\"select_placement\"]\n",
            dir.display()
        ),
    )
    .unwrap();
    for command in ["check", "run"] {
        let mut sluice = std::process::Command::new(crate::common::sluice_binary());
        sluice.args([command, "--config"]).arg(&config);
        if command == "run" {
            sluice.arg("--state-dir").arg(scratch.join("state"));
        }
        let output = sluice.output().unwrap();
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{command}: {text}");
        assert!(
            text.contains(":12: routes[0].plugins[0].name: unknown plugin \"nope\""),
            "{command}: {text}"
        );
        assert!(text.contains(":15: routes[0].plugins[1].hooks[0]: plugin headers does not export select_placement"), "{command}: {text}");
    }
}
