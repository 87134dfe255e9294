//! One routing decision: route match, routing-key extraction, table lookup and
//! endpoint pick, on a snapshot with 1,000 routes and 10,000 table keys.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use sluice::routing::{decide, RequestView};

fn routing_decision(c: &mut Criterion) {
    let snapshot = sluice_benches::compile(&sluice_benches::large_config(1000, 10_000));
    let mut group = c.benchmark_group("routing_decision");

    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", "tenant-4321".parse().unwrap());
    headers.insert("user-agent", "bench/1.0".parse().unwrap());
    headers.insert("accept", "*/*".parse().unwrap());
    group.bench_function("keyed_table_hit", |b| {
        b.iter(|| {
            let view = RequestView {
                host: black_box("acme.region4.cells.example.com"),
                path: black_box("/api/v1/items"),
                query: None,
                headers: &headers,
                listener: None,
            };
            let decision = decide(&snapshot.index, &snapshot.routes, &view).unwrap();
            let placement = &snapshot.placements[decision.placement];
            let key = decision.key.as_deref().map(str::as_bytes);
            black_box(placement.balancer.pick(key, |_| 0, |_| true))
        })
    });

    let empty = HeaderMap::new();
    group.bench_function("exact_host_prefix", |b| {
        b.iter(|| {
            let view = RequestView {
                host: black_box("svc150.example.com:443"),
                path: black_box("/v1/orders/42"),
                query: None,
                headers: &empty,
                listener: None,
            };
            let decision = decide(&snapshot.index, &snapshot.routes, &view).unwrap();
            black_box(
                snapshot.placements[decision.placement]
                    .balancer
                    .pick(None, |_| 0, |_| true),
            )
        })
    });

    group.bench_function("wildcard_host", |b| {
        b.iter(|| {
            let view = RequestView {
                host: black_box("api.zone507.example.com"),
                path: black_box("/"),
                query: None,
                headers: &empty,
                listener: None,
            };
            let decision = decide(&snapshot.index, &snapshot.routes, &view).unwrap();
            black_box(
                snapshot.placements[decision.placement]
                    .balancer
                    .pick(None, |_| 0, |_| true),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, routing_decision);
criterion_main!(benches);
