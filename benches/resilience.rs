//! The resilience bookkeeping one request pays on the hot path: concurrency
//! permit, health check, breaker admission, endpoint pick, outcome recording
//! on breaker and passive health, and the permits' release.

use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sluice::resilience::admission::{self, Outcome};

const CONFIG: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"

[placements.cell]
endpoints = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }, { address = "127.0.0.1:9003" }]
fallback = "spare"
limits = { max_concurrency = 10000 }
breaker = { consecutive_failures = 5, failure_rate = 0.5, min_requests = 20 }
passive = { failures = 5 }

[placements.spare]
endpoints = [{ address = "127.0.0.1:9004" }]

[[routes]]
placement = "cell"
"#;

fn bookkeeping(c: &mut Criterion) {
    let snapshot = sluice_benches::compile(CONFIG);
    c.bench_function("resilience/admit_record_release", |b| {
        b.iter(|| {
            let now = Instant::now();
            let granted =
                admission::admit(&snapshot.placements, 0, None, None, now, &mut |_, _, _| {})
                    .unwrap();
            let placement = &snapshot.placements[granted.placement];
            let endpoint = &placement.endpoints[granted.endpoint];
            let recorded = admission::record(
                placement,
                endpoint,
                granted.admission,
                Outcome::Success,
                now,
            );
            black_box((recorded, granted));
        })
    });
}

criterion_group!(benches, bookkeeping);
criterion_main!(benches);
