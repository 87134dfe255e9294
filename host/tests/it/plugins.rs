//! WebAssembly plugins, loaded from real `.wasm` files built from the
//! workspace's plugin crates.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{client, get, scratch_dir, upstreams, Proxy, Scratch};

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
                "-p",
                "sluice-plugin-rewrite",
                "-p",
                "sluice-plugin-traffic-split",
                "-p",
                "sluice-plugin-shuffle-shard",
                "-p",
                "sluice-plugin-api-key",
                "-p",
                "sluice-plugin-body-replace",
                "-p",
                "sluice-test-contract-0-1",
                "-p",
                "sluice-test-contract-0-2",
                "-p",
                "sluice-test-contract-0-3",
                "-p",
                "sluice-test-reads-files",
            ])
            // The components are looked up under this workspace's `target/`,
            // whatever CARGO_TARGET_DIR says, so a checkout never loads
            // components another checkout built from another WIT.
            .arg("--target-dir")
            .arg(root.join("target"))
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
pub(crate) fn plugin_dir(plugins: &[(&str, &str)]) -> Scratch {
    let dir = scratch_dir();
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
            "[[routes]]\npath_prefix = \"{prefix}\"\nplacement = \"o\"\n[[routes.plugins]]\nname = \"{plugin}\"\nhooks = [\"on_request\"]\nconfig = {{ mode = \"{mode}\" }}\n{failure}\n"
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
    // The log says what trapped and where, not only that it did.
    let log = proxy.stderr_text();
    assert!(
        log.lines().any(|line| line.contains("plugin call failed")
            && line.contains(
                "trapped: wasm `unreachable` instruction executed, in <sluice_test_hostile::Hostile as sluice_plugin_sdk::Plugin>::on_request"
            )),
        "{log}"
    );
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
    let error = wait_for_error(&proxy, "marker").await;
    assert!(error.contains("marker.wasm"), "{error}");
    assert_eq!(
        plugin_status(&proxy, "marker").await["version"],
        first,
        "the old version keeps serving"
    );
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
async fn a_version_the_serving_config_cannot_use_is_not_swapped_in() {
    let up = upstreams(&["origin"]).await;
    let dir = plugin_dir(&[("rewrite", "sluice-plugin-rewrite")]);
    let proxy = Proxy::start(&format!(
        "{}{}[[routes]]\nplacement = \"o\"\n[[routes.plugins]]\nname = \"rewrite\"\nhooks = [\"on_request\"]\nconfig.rules = [{{ regex = '^/old/(.*)$', to = '/new/$1' }}]\n",
        plugins_section(&dir),
        placement("o", up[0].address, "")
    ));
    let serving = plugin_status(&proxy, "rewrite").await["version"].clone();

    // The headers plugin under the rewrite plugin's name: it refuses a
    // configuration with `rules`.
    replace(
        &dir,
        "rewrite",
        &std::fs::read(plugin_wasm("sluice-plugin-headers")).unwrap(),
    );
    let error = wait_for_error(&proxy, "rewrite").await;
    assert!(error.contains("rewrite.wasm"), "{error}");
    assert!(
        error.contains("the config serving cannot use this version")
            && error.contains("(plugins[0])")
            && error.contains("refused its configuration"),
        "{error}"
    );
    assert_eq!(
        plugin_status(&proxy, "rewrite").await["version"],
        serving,
        "the old version keeps serving"
    );
    let reply = get(&proxy, "x.test", "/old/page", &[]).await;
    assert_eq!(reply.echo()["path"], "/new/page");

    // A placement policy under that name lacks the hook the route runs.
    replace(
        &dir,
        "rewrite",
        &std::fs::read(plugin_wasm("sluice-plugin-shuffle-shard")).unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let error = wait_for_error(&proxy, "rewrite").await;
        if error.contains("runs it at on_request, which this version does not export") {
            break;
        }
        assert!(Instant::now() < deadline, "{error}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(plugin_status(&proxy, "rewrite").await["version"], serving);

    // A file that fixes the problem is swapped in as usual.
    replace(
        &dir,
        "rewrite",
        &std::fs::read(plugin_wasm("sluice-plugin-rewrite")).unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !plugin_status(&proxy, "rewrite").await["last_error"].is_null() {
        assert!(
            Instant::now() < deadline,
            "the good file never cleared the error"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(plugin_status(&proxy, "rewrite").await["version"], serving);
}

/// Waits until the admin status reports an error loading `name`.
async fn wait_for_error(proxy: &Proxy, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(error) = plugin_status(proxy, name).await["last_error"].as_str() {
            return error.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no error was reported for {name}"
        );
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

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_no_route_attaches_is_parked_until_a_reload_attaches_it() {
    let up = upstreams(&["origin"]).await;
    let dir = plugin_dir(&[
        ("headers", "sluice-plugin-headers"),
        ("api-key", "sluice-plugin-api-key"),
    ]);
    let base = format!(
        "{}{}",
        plugins_section(&dir),
        placement("o", up[0].address, "")
    );
    let headers_only = format!(
        "{base}[[routes]]\nplacement = \"o\"\n[[routes.plugins]]\nname = \"headers\"\nconfig.request = {{ set = {{ \"x-tag\" = \"on\" }} }}\n"
    );
    let proxy = Proxy::start(&headers_only);
    assert_eq!(get(&proxy, "x.test", "/", &[]).await.status, 200);
    assert_eq!(plugin_status(&proxy, "headers").await["mapped"], true);
    let parked = plugin_status(&proxy, "api-key").await;
    assert_eq!(parked["mapped"], false, "{parked}");
    assert_eq!(parked["pooled"], 0, "{parked}");
    assert!(parked["version"].is_string(), "still loaded: {parked}");

    // Attaching it maps its code again: the new config is checked against
    // it, and it answers.
    let (_, config) = proxy.admin("GET", "/config").await;
    let version = config["version"].as_str().unwrap().to_string();
    proxy.rewrite(&format!(
        "{base}[[routes]]\nplacement = \"o\"\n[[routes.plugins]]\nname = \"api-key\"\nfailure = \"closed\"\nconfig = {{ keys = [{{ id = \"ci\", key = \"sk_test_parked_1234\" }}] }}\n"
    ));
    proxy.wait_version_change(&version).await;
    assert_eq!(get(&proxy, "x.test", "/", &[]).await.status, 401);
    let reply = get(
        &proxy,
        "x.test",
        "/",
        &[("x-api-key", "sk_test_parked_1234")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(plugin_status(&proxy, "api-key").await["mapped"], true);
    assert_eq!(plugin_status(&proxy, "headers").await["mapped"], false);
}

#[test]
fn unknown_plugins_undeclared_hooks_and_refused_configs_are_config_errors() {
    let dir = plugin_dir(&[
        ("headers", "sluice-plugin-headers"),
        ("rewrite", "sluice-plugin-rewrite"),
    ]);
    let scratch = scratch_dir();
    let config = scratch.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[plugins]\ndirectory = \"{}\"\n# Generous: a loaded test machine must not turn into deadline failures.\ndeadline = \"250ms\"\n[placements.o]\nendpoints = [{{ address = \"127.0.0.1:2\" }}]\n[[routes]]\nplacement = \"o\"\n[[routes.plugins]]\nname = \"nope\"\n[[routes.plugins]]\nname = \"headers\"\nhooks = [\"select_placement\"]\n[[routes.plugins]]\nname = \"rewrite\"\nconfig.rules = [{{ regex = \"(\", to = \"/\" }}]\n[[routes.plugins]]\nname = \"rewrite\"\nconfig.rules = [{{ regex = '^/\\p{{Greek}}+$', to = \"/\" }}]\n",
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
        // The plugin's own reason, at the line of its table.
        assert!(
            text.contains(":18: routes[0].plugins[2].config: plugin rewrite on route \"route-0\": refused its configuration: rewrite rule `(`: invalid regex"),
            "{command}: {text}"
        );
        // The component is built without Unicode class tables.
        assert!(
            text.contains(":21: routes[0].plugins[3].config: plugin rewrite on route \"route-0\": refused its configuration: rewrite rule `^/\\p{Greek}+$`: invalid regex"),
            "{command}: {text}"
        );
    }
}

#[test]
fn a_scaffolded_plugin_builds_tests_and_loads() {
    let scratch = scratch_dir();
    let crate_dir = scratch.join("greeter");
    // Run as an installed binary would be: a copy outside the source tree,
    // which carries the SDK it writes into the crate.
    let installed = scratch.join("bin/sluice");
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::copy(crate::common::sluice_binary(), &installed).unwrap();
    let output = std::process::Command::new(&installed)
        .current_dir(&scratch)
        .args(["plugin", "new", "greeter", "--path"])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(crate_dir
        .join("vendor/sluice-plugin-sdk/wit/plugin.wit")
        .exists());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // A target directory of its own: the scaffold is its own workspace.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold-test");
    for args in [
        &["test", "--quiet"][..],
        &["build", "--release", "--target", "wasm32-wasip2"][..],
    ] {
        let status = std::process::Command::new(&cargo)
            .current_dir(&crate_dir)
            .env("CARGO_TARGET_DIR", &target)
            // The crate a user gets must build without a warning.
            .env("RUSTFLAGS", "-D warnings")
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "cargo {args:?} failed in the scaffold");
    }
    let wasm = target.join("wasm32-wasip2/release/greeter.wasm");
    let output = std::process::Command::new(crate::common::sluice_binary())
        .args(["plugin", "check"])
        .arg(&wasm)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("hooks: on_request"), "{text}");
    let output = std::process::Command::new(crate::common::sluice_binary())
        .args(["plugin", "check"])
        .arg(crate_dir.join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot load"));
}

/// A compiled-plugin cache shared by the tests below and kept across runs
/// (artifacts are keyed by content and engine), warmed once by `sluice
/// check`: a debug build compiles the larger plugins more slowly than a
/// proxy is given to start listening.
pub(crate) fn shared_cache() -> PathBuf {
    static WARM: Mutex<bool> = Mutex::new(false);
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-cache-it");
    let mut warm = WARM.lock().unwrap_or_else(|p| p.into_inner());
    if !*warm {
        let dir = plugin_dir(&[
            ("headers", "sluice-plugin-headers"),
            ("rewrite", "sluice-plugin-rewrite"),
            ("traffic-split", "sluice-plugin-traffic-split"),
            ("shuffle-shard", "sluice-plugin-shuffle-shard"),
            ("api-key", "sluice-plugin-api-key"),
        ]);
        let scratch = scratch_dir();
        let config = scratch.join("warm.toml");
        std::fs::write(
            &config,
            format!(
                "[[listeners]]\naddress = \"127.0.0.1:1\"\n[plugins]\ndirectory = \"{}\"\ncache_dir = \"{}\"\n[placements.o]\nendpoints = [{{ address = \"127.0.0.1:2\" }}]\n[[routes]]\nplacement = \"o\"\n",
                dir.display(),
                cache.display()
            ),
        )
        .unwrap();
        let output = std::process::Command::new(crate::common::sluice_binary())
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "warming the plugin cache: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        *warm = true;
    }
    cache
}

/// `[plugins]` on `dir` with the shared cache, and a deadline generous
/// enough that a loaded test machine does not turn into deadline failures.
pub(crate) fn plugins_section(dir: &Path) -> String {
    format!(
        "[plugins]\ndirectory = \"{}\"\ncache_dir = \"{}\"\ndeadline = \"250ms\"\n",
        dir.display(),
        shared_cache().display()
    )
}

/// `[placements.NAME]` with one endpoint and `settings` lines.
pub(crate) fn placement(name: &str, address: std::net::SocketAddr, settings: &str) -> String {
    format!("[placements.{name}]\nendpoints = [{{ address = \"{address}\" }}]\n{settings}\n")
}

/// The value of the counter `name` kept by `plugin`; 0 when never counted.
pub(crate) fn plugin_counter(metrics: &str, plugin: &str, name: &str) -> u64 {
    let (plugin, name) = (format!("plugin=\"{plugin}\""), format!("name=\"{name}\""));
    metrics
        .lines()
        .filter(|l| l.starts_with("sluice_plugin_counter_total{"))
        .find(|l| l.contains(&plugin) && l.contains(&name))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |value| value.parse::<f64>().unwrap() as u64)
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrite_plugin_rewrites_the_upstream_path_with_captures() {
    let up = upstreams(&["origin"]).await;
    let dir = plugin_dir(&[("rewrite", "sluice-plugin-rewrite")]);
    // `${section}` is written `$${section}`: `${...}` is also the config's
    // environment interpolation, which runs on plugin configs too.
    let routes = r#"
[[routes]]
name = "legacy"
placement = "o"
[[routes.plugins]]
name = "rewrite"
failure = "closed"
config.rules = [
  { regex = '^/old/(?P<section>[a-z]+)/([0-9]+)$', to = '/new/$${section}/item-$2' },
  { regex = '^/users/([0-9]+)$', to = '/api/users?id=$1&from={path}' },
  { regex = '^/v1/', to = '/v2/', continue = true },
  { regex = '^/v2/(.*)$', to = '/api/$1' },
]
"#;
    let proxy = Proxy::start(&format!(
        "{}{}{routes}",
        plugins_section(&dir),
        placement("o", up[0].address, "")
    ));
    // (request, upstream path, upstream query)
    let cases: [(&str, &str, Option<&str>); 6] = [
        // Named and numbered captures; the query is kept.
        (
            "/old/books/42?sort=asc&page=2",
            "/new/books/item-42",
            Some("sort=asc&page=2"),
        ),
        ("/old/books/42", "/new/books/item-42", None),
        // A `to` with a query replaces the client's.
        ("/users/7?lang=en", "/api/users", Some("id=7&from=/users/7")),
        // `continue` runs the next rules on the result.
        ("/v1/things?x=1", "/api/things", Some("x=1")),
        // A regex that matches nothing leaves the request alone.
        ("/static/app.js?v=3", "/static/app.js", Some("v=3")),
        ("/old/books/not-a-number", "/old/books/not-a-number", None),
    ];
    for (request, path, query) in cases {
        let reply = get(&proxy, "legacy.test", request, &[]).await;
        assert_eq!(reply.status, 200, "{request}: {}", reply.body);
        let echo = reply.echo();
        assert_eq!(echo["path"], path, "{request}");
        assert_eq!(echo["query"], serde_json::json!(query), "{request}");
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        plugin_counter(&metrics, "rewrite", "rewrite_applied"),
        4,
        "only requests that changed count:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_split_is_weighted_and_sticky_by_header() {
    let up = upstreams(&["blue", "green"]).await;
    let dir = plugin_dir(&[("traffic-split", "sluice-plugin-traffic-split")]);
    let routes = r#"
[[routes]]
name = "shop"
placement = "blue"
placements = ["green"]
[[routes.plugins]]
name = "traffic-split"
failure = "closed"
config = { splits = [{ placement = "blue", weight = 80 }, { placement = "green", weight = 20 }], sticky = { source = "header", name = "x-user" } }
"#;
    let proxy = Proxy::start(&format!(
        "{}{}{}{routes}",
        plugins_section(&dir),
        placement("blue", up[0].address, ""),
        placement("green", up[1].address, ""),
    ));
    const USERS: usize = 200;
    let mut landed = Vec::with_capacity(USERS);
    for user in 0..USERS {
        let user = format!("user-{user}");
        let reply = get(&proxy, "shop.test", "/cart", &[("x-user", &user)]).await;
        assert_eq!(reply.status, 200, "{user}: {}", reply.body);
        let routed = reply.header("x-routed-to").to_string();
        assert!(routed == "blue" || routed == "green", "{user}: {routed}");
        assert_eq!(reply.served_by(), routed, "{user}");
        assert_eq!(reply.header("x-route-reason"), "policy", "{user}");
        landed.push(routed);
    }
    let green = landed.iter().filter(|p| *p == "green").count();
    // 20% of 200 is 40; the hash is stable, so this is not a coin toss
    // from run to run, but any sane hash lands well within this band.
    assert!(
        (24..=56).contains(&green),
        "{green} of {USERS} users on green, expected about 40"
    );
    // Sticky: every user lands where it landed before, twice more.
    for round in 0..2 {
        for (user, first) in landed.iter().enumerate() {
            let user = format!("user-{user}");
            let reply = get(&proxy, "shop.test", "/cart", &[("x-user", &user)]).await;
            assert_eq!(
                reply.header("x-routed-to"),
                first,
                "{user} moved in round {round}"
            );
            assert_eq!(reply.served_by(), first, "{user}");
        }
    }
    // Without the sticky header, each request is split on its request id.
    let mut unsticky_green = 0;
    for _ in 0..60 {
        let reply = get(&proxy, "shop.test", "/cart", &[]).await;
        assert_eq!(reply.header("x-route-reason"), "policy");
        if reply.served_by() == "green" {
            unsticky_green += 1;
        }
    }
    assert!(
        (1..60).contains(&unsticky_green),
        "{unsticky_green} of 60 requests without x-user on green"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        plugin_counter(&metrics, "traffic-split", "traffic_split_green"),
        (3 * green + unsticky_green) as u64,
        "{metrics}"
    );
    assert_eq!(
        plugin_counter(&metrics, "traffic-split", "traffic_split_blue"),
        (3 * (USERS - green) + 60 - unsticky_green) as u64,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shuffle_shard_keeps_a_tenant_in_its_shard_and_steers_around_an_open_breaker() {
    use crate::fault::{Behavior, FaultUpstream};
    const NAMES: [&str; 4] = ["cell-0", "cell-1", "cell-2", "cell-3"];
    let mut cells = Vec::new();
    for name in NAMES {
        cells.push(FaultUpstream::start(name).await);
    }
    let dir = plugin_dir(&[("shuffle-shard", "sluice-plugin-shuffle-shard")]);
    // One failure opens a placement's breaker, for longer than the test.
    let settings =
        "breaker = { consecutive_failures = 1, open_for = \"30s\" }\npassive = { failures = 0 }";
    let mut body = plugins_section(&dir);
    for (i, cell) in cells.iter().enumerate() {
        body.push_str(&placement(&format!("p{i}"), cell.address, settings));
    }
    // The candidates: the default and every placement of the table.
    body.push_str(
        r#"
[[routes]]
name = "tenants"
routing = { key = { source = "header", name = "x-tenant" }, table = { pinned-1 = "p1", pinned-2 = "p2", pinned-3 = "p3" }, default = "p0" }
[[routes.plugins]]
name = "shuffle-shard"
failure = "closed"
config = { shard_size = 2 }
"#,
    );
    let proxy = Proxy::start(&body);
    let cell_of = |reply: &crate::common::Reply| -> usize {
        let routed = reply.header("x-routed-to");
        let index = NAMES
            .iter()
            .position(|n| *n == reply.served_by())
            .unwrap_or_else(|| panic!("served by {:?}: {}", reply.served_by(), reply.body));
        assert_eq!(routed, format!("p{index}"), "routed and served agree");
        index
    };

    // Each tenant stays on one placement; tenants spread over the cells.
    let tenants: Vec<String> = (0..24).map(|t| format!("tenant-{t}")).collect();
    let mut home = Vec::new();
    for tenant in &tenants {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let reply = get(&proxy, "t.test", "/", &[("x-tenant", tenant)]).await;
            assert_eq!(reply.status, 200, "{tenant}: {}", reply.body);
            assert_eq!(reply.header("x-route-reason"), "policy", "{tenant}");
            seen.insert(cell_of(&reply));
        }
        assert_eq!(seen.len(), 1, "{tenant} moved between {seen:?}");
        home.push(*seen.first().unwrap());
    }
    let used: std::collections::BTreeSet<_> = home.iter().collect();
    assert!(used.len() >= 3, "24 tenants share only cells {used:?}");

    // The first tenant's cell fails once: its breaker opens, and the policy
    // sends the tenant to the other placement of its shard.
    let (tenant, first) = (&tenants[0], home[0]);
    cells[first].set(Behavior::Status(500));
    let failed = get(&proxy, "t.test", "/", &[("x-tenant", tenant)]).await;
    assert_eq!((failed.status, cell_of(&failed)), (500, first));
    assert_eq!(failed.header("x-circuit-state"), "open");
    let hits = cells[first].hits();
    let mut second = None;
    for _ in 0..5 {
        let reply = get(&proxy, "t.test", "/", &[("x-tenant", tenant)]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("x-route-reason"), "policy");
        assert_eq!(
            reply.header("x-failover-reason"),
            "",
            "the policy chose around the open breaker, no failover was needed"
        );
        let cell = cell_of(&reply);
        assert_ne!(cell, first, "sent to the placement whose breaker is open");
        assert_eq!(*second.get_or_insert(cell), cell, "the tenant moved twice");
    }
    let second = second.unwrap();
    assert_eq!(
        cells[first].hits(),
        hits,
        "nothing reaches the open breaker"
    );
    // Tenants homed elsewhere do not move; tenants homed on the broken cell
    // move off it.
    for (tenant, home) in tenants.iter().zip(&home).skip(1) {
        let reply = get(&proxy, "t.test", "/", &[("x-tenant", tenant)]).await;
        assert_eq!(reply.status, 200, "{tenant}: {}", reply.body);
        let cell = cell_of(&reply);
        if *home == first {
            assert_ne!(cell, first, "{tenant}");
        } else {
            assert_eq!(cell, *home, "{tenant} moved though its cell is healthy");
        }
    }

    // The second placement of the shard fails too: with `spill = false` the
    // policy never picks a third placement, it defers to the routing table.
    cells[second].set(Behavior::Status(500));
    let failed = get(&proxy, "t.test", "/", &[("x-tenant", tenant)]).await;
    assert_eq!((failed.status, cell_of(&failed)), (500, second));
    let deferred = get(&proxy, "t.test", "/", &[("x-tenant", tenant)]).await;
    assert_eq!(deferred.header("x-route-reason"), "default");
    assert_eq!(deferred.header("x-routed-to"), "p0");
    if [first, second].contains(&0) {
        assert_eq!(deferred.status, 503, "{}", deferred.body);
    } else {
        assert_eq!((deferred.status, deferred.served_by()), (200, "cell-0"));
    }

    let metrics = proxy.metrics().await;
    assert!(
        plugin_counter(&metrics, "shuffle-shard", "shuffle_shard_failover") >= 5,
        "{metrics}"
    );
    assert_eq!(
        plugin_counter(&metrics, "shuffle-shard", "shuffle_shard_exhausted"),
        1,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_key_fail_closed_rejects_strips_and_never_logs_the_key() {
    const KEY: &str = "sk_live_Zq81uVh3LmW0pQe7xK";
    const WRONG: &str = "sk_live_WRONGkey4471bYt";
    let up = upstreams(&["origin"]).await;
    let dir = plugin_dir(&[("api-key", "sluice-plugin-api-key")]);
    let routes = format!(
        r#"
[[routes]]
name = "private"
placement = "o"
[[routes.plugins]]
name = "api-key"
failure = "closed"
config = {{ keys = [{{ id = "ci", key = "{KEY}" }}], query = "api_key" }}
"#
    );
    let proxy = Proxy::start(&format!(
        "{}{}{routes}",
        plugins_section(&dir),
        placement("o", up[0].address, "")
    ));
    let bearer_wrong = format!("Bearer {WRONG}");
    let rejected: [(&str, Vec<(&str, &str)>); 5] = [
        ("/data", vec![]),
        ("/data", vec![("x-api-key", WRONG)]),
        ("/data", vec![("authorization", bearer_wrong.as_str())]),
        ("/data", vec![("x-api-key-id", "ci")]),
        ("/data?api_key=nope", vec![]),
    ];
    for (path, headers) in &rejected {
        let reply = get(&proxy, "api.test", path, headers).await;
        assert_eq!(reply.status, 401, "{path} {headers:?}: {}", reply.body);
        assert_eq!(reply.header("www-authenticate"), "ApiKey");
        assert_eq!(reply.served_by(), "", "a rejected request goes nowhere");
        assert!(!reply.body.contains(KEY) && !reply.body.contains(WRONG));
    }

    let reply = get(
        &proxy,
        "api.test",
        "/data?x=1",
        &[("x-api-key", KEY), ("x-api-key-id", "admin")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo = reply.echo();
    assert!(
        echo["headers"].get("x-api-key").is_none(),
        "the key header is stripped: {echo}"
    );
    assert_eq!(
        echo["headers"]["x-api-key-id"], "ci",
        "the id replaces what the client sent"
    );
    assert_eq!(echo["query"], "x=1");

    let bearer = format!("Bearer {KEY}");
    let reply = get(
        &proxy,
        "api.test",
        "/data",
        &[("authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.echo()["headers"].get("authorization").is_none());

    let reply = get(&proxy, "api.test", &format!("/data?a=1&api_key={KEY}"), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo = reply.echo();
    assert_eq!(echo["path"], "/data");
    assert_eq!(echo["query"], "a=1", "the key parameter is stripped");

    // Every request was logged; none of the log names a key.
    let requests = rejected.len() + 3;
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.stdout_lines().len() < requests {
        assert!(
            Instant::now() < deadline,
            "{} access-log lines, expected {requests}",
            proxy.stdout_lines().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (stdout, stderr) = (proxy.stdout_lines().join("\n"), proxy.stderr_text());
    for secret in [KEY, WRONG] {
        assert!(!stdout.contains(secret), "stdout has {secret}:\n{stdout}");
        assert!(!stderr.contains(secret), "stderr has {secret}:\n{stderr}");
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        plugin_counter(&metrics, "api-key", "api_key_rejected"),
        rejected.len() as u64
    );
    assert_eq!(plugin_counter(&metrics, "api-key", "api_key_accepted"), 3);
    assert!(!metrics.contains(KEY));

    // A configuration the plugin refuses is refused at load, and the
    // error quotes no key.
    let scratch = scratch_dir();
    let config = scratch.join("refused.toml");
    let refused = format!(
        "[[listeners]]\naddress = \"127.0.0.1:1\"\n{}{}[[routes]]\nplacement = \"o\"\n[[routes.plugins]]\nname = \"api-key\"\nconfig = {{ keys = [{{ id = \"ci\", key = \"{KEY}\", scope = \"all\" }}] }}\n",
        plugins_section(&dir),
        placement("o", up[0].address, "")
    );
    std::fs::write(&config, refused).unwrap();
    let output = std::process::Command::new(crate::common::sluice_binary())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("routes[0].plugins[0].config: plugin api-key on route \"")
            && text.contains("\": refused its configuration"),
        "{text}"
    );
    assert!(!text.contains(KEY), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_plugin_fills_response_placeholders() {
    use crate::fault::{Behavior, FaultUpstream};
    let origin = FaultUpstream::start("origin").await;
    let dir = plugin_dir(&[("headers", "sluice-plugin-headers")]);
    let routes = r#"
[[routes]]
name = "web"
placement = "o"
[[routes.plugins]]
name = "headers"
failure = "closed"
config.response = { set = { "x-upstream-was" = "{upstream}", "x-status-was" = "{status}", "x-where" = "{placement}/{route}", "x-unknown" = "{nope}" }, add = { "x-trace" = "{method} {path}" } }
"#;
    let proxy = Proxy::start(&format!(
        "{}{}{routes}",
        plugins_section(&dir),
        placement("o", origin.address, "passive = { failures = 0 }")
    ));
    for (behavior, status) in [
        (Behavior::Ok, 200),
        (Behavior::Status(404), 404),
        (Behavior::Status(503), 503),
        (Behavior::Ok, 200),
    ] {
        origin.set(behavior);
        let reply = get(&proxy, "www.test", "/page", &[]).await;
        assert_eq!(reply.status, status, "{}", reply.body);
        assert_eq!(reply.header("x-status-was"), status.to_string());
        assert_eq!(reply.header("x-upstream-was"), origin.address.to_string());
        assert_eq!(reply.header("x-where"), "o/web");
        assert_eq!(reply.header("x-trace"), "GET /page");
        assert_eq!(
            reply.header("x-unknown"),
            "{nope}",
            "unknown placeholders stay as written"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_runs_in_attachment_order_and_each_plugin_sees_the_last_changes() {
    let up = upstreams(&["origin"]).await;
    let dir = plugin_dir(&[
        ("headers", "sluice-plugin-headers"),
        ("rewrite", "sluice-plugin-rewrite"),
    ]);
    let attach = |prefix: &str, attachments: &[&str]| {
        let mut route = format!("[[routes]]\npath_prefix = \"{prefix}\"\nplacement = \"o\"\n");
        for attachment in attachments {
            route.push_str("[[routes.plugins]]\nfailure = \"closed\"\n");
            route.push_str(attachment);
            route.push('\n');
        }
        route
    };
    let set_first = "name = \"headers\"\nconfig.request = { set = { \"x-order\" = \"first\" } }";
    let add_second = "name = \"headers\"\nconfig.request = { add = { \"x-order\" = \"second\" } }";
    let set_second = "name = \"headers\"\nconfig.request = { set = { \"x-order\" = \"second\" } }";
    let rewrite = "name = \"rewrite\"\nconfig.rules = [{ regex = '^/(rw|pre)/old/(.*)$', to = '/$1/new/$2' }]";
    let seen = "name = \"headers\"\nconfig.request = { set = { \"x-seen-path\" = \"{path}\", \"x-seen-uri\" = \"{uri}\" } }";
    let request_only = "name = \"headers\"\nhooks = [\"on_request\"]\nconfig.request = { set = { \"x-req\" = \"yes\" } }\nconfig.response = { set = { \"x-resp\" = \"yes\" } }";
    let proxy = Proxy::start(&format!(
        "{}{}{}{}{}{}{}",
        plugins_section(&dir),
        placement("o", up[0].address, ""),
        attach("/append", &[set_first, add_second]),
        attach("/replace", &[set_first, set_second]),
        attach("/rw", &[rewrite, seen]),
        attach("/pre", &[seen, rewrite]),
        attach("/hooks", &[request_only]),
    ));

    // The same plugin twice: the second appends to what the first set...
    let reply = get(&proxy, "x.test", "/append", &[("x-order", "client")]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.echo()["headers"]["x-order"], "first, second");
    // ...or replaces it.
    let reply = get(&proxy, "x.test", "/replace", &[]).await;
    assert_eq!(reply.echo()["headers"]["x-order"], "second");

    // After a rewrite, a later plugin sees the rewritten path...
    let reply = get(&proxy, "x.test", "/rw/old/a?q=1", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let echo = reply.echo();
    assert_eq!(echo["path"], "/rw/new/a");
    assert_eq!(echo["headers"]["x-seen-path"], "/rw/new/a");
    assert_eq!(echo["headers"]["x-seen-uri"], "/rw/new/a?q=1");
    // ...and an earlier one the original.
    let reply = get(&proxy, "x.test", "/pre/old/b?q=2", &[]).await;
    let echo = reply.echo();
    assert_eq!(echo["path"], "/pre/new/b");
    assert_eq!(echo["headers"]["x-seen-path"], "/pre/old/b");
    assert_eq!(echo["headers"]["x-seen-uri"], "/pre/old/b?q=2");

    // `hooks` limits an attachment to the hooks listed.
    let reply = get(&proxy, "x.test", "/hooks", &[]).await;
    assert_eq!(reply.echo()["headers"]["x-req"], "yes");
    assert_eq!(reply.header("x-resp"), "", "on_response is not attached");
}

#[test]
fn a_plugin_built_against_the_old_contract_or_reading_files_is_refused_by_name() {
    let check = |package: &str| {
        std::process::Command::new(crate::common::sluice_binary())
            .args(["plugin", "check"])
            .arg(plugin_wasm(package))
            .output()
            .unwrap()
    };
    for (package, version) in [
        ("sluice-test-contract-0-1", "0.1.0"),
        ("sluice-test-contract-0-2", "0.2.0"),
        ("sluice-test-contract-0-3", "0.3.0"),
    ] {
        let output = check(package);
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{text}");
        assert!(
            text.contains(&format!(
                "built against sluice:plugin@{version} and this Sluice provides sluice:plugin@0.4.0"
            )),
            "{text}"
        );
    }
    // One that reads files is refused by name: plugins get no files.
    let output = check("sluice-test-reads-files");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("it imports wasi:filesystem/")
            && text.contains("plugins get no files and no network"),
        "{text}"
    );
    // A current one loads, and says which contract it was checked against.
    let output = check("sluice-plugin-body-replace");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("contract sluice:plugin@0.4.0, hooks: on_request_body, on_response_body"),
        "{text}"
    );
}
