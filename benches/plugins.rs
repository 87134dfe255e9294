//! Plugin hook calls on warm instances, and the cold start of a cached
//! plugin (deserialize, link, first call), with the real first-party
//! components.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora_http::{RequestHeader, ResponseHeader};
use sluice::plugins::bindings::sluice::plugin::types::CandidateState;
use sluice::plugins::engine::PluginEngine;
use sluice::plugins::host::{Candidate, RequestContext, ResponseContext};
use sluice::plugins::metrics::PluginMetrics;
use sluice::plugins::runtime::{LoadedPlugin, RuntimeLimits};

/// A request with `count` headers, as Pingora would hold it.
fn request_with_headers(count: usize) -> RequestHeader {
    let mut request = RequestHeader::build("GET", b"/api/v1/orders/42?expand=items", None).unwrap();
    for i in 0..count {
        request
            .insert_header(format!("x-header-{i}"), format!("value number {i}"))
            .unwrap();
    }
    request
}

fn context(header: &RequestHeader) -> RequestContext<'_> {
    RequestContext {
        header,
        authority: "shop.example.com",
        client: Some([192, 0, 2, 10].into()),
        route: "shop",
        routing_key: Some("tenant-42"),
        request_id: "0123456789abcdef0123456789abcdef",
    }
}

/// The runtime limits, with a deadline no scheduling hiccup on a busy
/// machine reaches: the bench measures calls, not the deadline.
fn limits() -> sluice::plugins::runtime::SharedLimits {
    Arc::new(arc_swap::ArcSwap::from_pointee(RuntimeLimits {
        deadline: std::time::Duration::from_secs(1),
        ..RuntimeLimits::default()
    }))
}

fn plugins(c: &mut Criterion) {
    let cache =
        std::env::temp_dir().join(format!("sluice-bench-plugin-cache-{}", std::process::id()));
    let engine = PluginEngine::new(Some(cache.clone())).unwrap();
    let metrics = Arc::new(PluginMetrics::new());
    let load = |package: &str| {
        let bytes = std::fs::read(sluice_benches::plugin_wasm(package)).unwrap();
        LoadedPlugin::load(&engine, package, &bytes, limits(), metrics.clone()).unwrap()
    };
    let plugin = load("sluice-plugin-headers");
    let shard = load("sluice-plugin-shuffle-shard");
    let mut group = c.benchmark_group("plugins");

    let config: Arc<str> = Arc::from(
        r#"{"request":{"set":{"x-real-host":"{host}","x-request":"{request_id}"},"add":{"via":"sluice"},"remove":["x-header-3"]}}"#,
    );
    let twenty = request_with_headers(20);
    let request = context(&twenty);
    group.bench_function("headers_on_request_20_headers_warm", |b| {
        b.iter(|| black_box(plugin.on_request(&config, &request).unwrap()))
    });

    // The fixed cost of a call: a hook that reads nothing and changes
    // nothing, then one that sets one header (the test plugin's modes).
    let fixed = load("sluice-test-hostile");
    let nothing_config: Arc<str> = Arc::from(r#"{"mode":"nothing"}"#);
    group.bench_function("hook_that_does_nothing", |b| {
        b.iter(|| black_box(fixed.on_request(&nothing_config, &request).unwrap()))
    });
    let fixed_config: Arc<str> = Arc::from(r#"{"mode":"ok"}"#);
    group.bench_function("fixed_cost_one_header_set", |b| {
        b.iter(|| black_box(fixed.on_request(&fixed_config, &request).unwrap()))
    });

    let candidates: Vec<Candidate> = (0..8)
        .map(|i| Candidate {
            name: Arc::from(format!("cell-{i}")),
            state: CandidateState {
                healthy_endpoints: if i == 3 { 0 } else { 3 },
                total_endpoints: 3,
                open_breakers: 0,
                half_open_breakers: 0,
                in_flight: 10,
                limit: Some(1000),
                weight: 3,
            },
        })
        .collect();
    let shard_config: Arc<str> = Arc::from(r#"{"shard_size":2}"#);
    group.bench_function("shuffle_shard_select_placement_8_candidates", |b| {
        b.iter(|| {
            black_box(
                shard
                    .select_placement(&shard_config, &request, &candidates)
                    .unwrap(),
            )
        })
    });

    // The load benchmark's chain, call for call: headers and rewrite on the
    // request, headers on the response, with the same configurations.
    let rewrite = load("sluice-plugin-rewrite");
    let chain_headers: Arc<str> = Arc::from(
        r#"{"request":{"set":{"x-real-host":"{host}"},"add":{"via":"sluice"},"remove":["x-debug"]},"response":{"set":{"x-served-by":"{upstream}"},"remove":["server"]}}"#,
    );
    let chain_rewrite: Arc<str> = Arc::from(r#"{"rules":[{"regex":"^/acme/(.*)$","to":"/$1"}]}"#);
    let mut wrk_request = RequestHeader::build("GET", b"/acme/hello", None).unwrap();
    wrk_request
        .insert_header("host", "127.0.0.1:18080")
        .unwrap();
    let wrk_context = context(&wrk_request);
    let mut origin_response = ResponseHeader::build(200, None).unwrap();
    for (name, value) in [
        ("server", "nginx"),
        ("content-type", "text/plain"),
        ("content-length", "22"),
        ("connection", "keep-alive"),
    ] {
        origin_response.insert_header(name, value).unwrap();
    }
    let served = ResponseContext {
        header: &origin_response,
        placement: "origin",
        endpoint: "127.0.0.1:18000",
    };
    group.bench_function("load_benchmark_chain_three_calls", |b| {
        b.iter(|| {
            black_box(plugin.on_request(&chain_headers, &wrk_context).unwrap());
            black_box(rewrite.on_request(&chain_rewrite, &wrk_context).unwrap());
            black_box(
                plugin
                    .on_response(&chain_headers, &wrk_context, &served)
                    .unwrap(),
            );
        })
    });

    // A string replaced in a 4 KiB text body: the whole body crosses into
    // the plugin and the rewritten one back.
    let replace = load("sluice-plugin-body-replace");
    let replace_config: Arc<str> = Arc::from(r#"{"rules":[{"find":"origin","replace":"edge"}]}"#);
    let mut text_response = ResponseHeader::build(200, None).unwrap();
    text_response
        .insert_header("content-type", "text/html; charset=utf-8")
        .unwrap();
    let text = ResponseContext {
        header: &text_response,
        placement: "origin",
        endpoint: "127.0.0.1:18000",
    };
    let line = "<p>served by the origin, one line of many</p>\n";
    let mut body = line.repeat(4096 / line.len() + 1).into_bytes();
    body.truncate(4096);
    group.bench_function("body_replace_4k_body", |b| {
        b.iter(|| {
            let replaced = replace
                .on_response_body(&replace_config, &request, &text, &body)
                .unwrap();
            black_box(replaced.expect("the body had matches"))
        })
    });

    let bytes = std::fs::read(sluice_benches::plugin_wasm("sluice-plugin-headers")).unwrap();
    group.bench_function("cold_start_of_a_cached_plugin", |b| {
        b.iter(|| {
            let plugin =
                LoadedPlugin::load(&engine, "headers", &bytes, limits(), metrics.clone()).unwrap();
            assert!(plugin.from_cache);
            black_box(plugin)
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&cache);
}

criterion_group!(benches, plugins);
criterion_main!(benches);
