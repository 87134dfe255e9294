//! Configuration reload of 1,000 routes: compile alone, and end to end from
//! the file being replaced to the new snapshot being live, through the real
//! file watcher and its debounce.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sluice::control::metrics::ReloadMetrics;
use sluice::control::{watch, ConfigSource, Reloader};
use sluice::plugins::metrics::PluginMetrics;
use sluice::resilience::checker::HealthSupervisor;
use sluice::resilience::state::Registry;

fn reload(c: &mut Criterion) {
    let text = sluice_benches::large_config(1000, 10_000);
    let mut group = c.benchmark_group("reload_1000_routes");
    group.sample_size(20);

    let registry = Registry::default();
    group.bench_function("parse_and_compile", |b| {
        b.iter(|| {
            let loaded = sluice::config::parse(&text, "bench", &|_| None).unwrap();
            sluice::snapshot::compile(&loaded, "bench", &registry).unwrap()
        })
    });

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = std::env::temp_dir().join(format!("sluice-bench-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sluice.toml");
    std::fs::write(&path, &text).unwrap();
    let reloader = runtime
        .block_on(Reloader::start(
            ConfigSource::File(path.clone()),
            None,
            Arc::new(Registry::default()),
            ReloadMetrics::new(),
            Arc::new(PluginMetrics::new()),
            HealthSupervisor::new(runtime.handle().clone()),
        ))
        .unwrap();
    runtime.block_on(async { watch::spawn_triggers(reloader.clone(), Duration::from_secs(60)) });
    let live = reloader.live();
    let mut generation = 0u64;
    group.bench_function("file_change_to_swap", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                generation += 1;
                let changed = format!("{text}\n# generation {generation}\n");
                let temporary = path.with_extension("swp");
                std::fs::write(&temporary, &changed).unwrap();
                let before = live.load().version.clone();
                let started = Instant::now();
                std::fs::rename(&temporary, &path).unwrap();
                while live.load().version == before {
                    std::thread::sleep(Duration::from_micros(200));
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "the reload never happened"
                    );
                }
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, reload);
criterion_main!(benches);
