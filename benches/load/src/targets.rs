//! The report's "Targets" section: Sluice's budget, each target against
//! what this run measured, by how much it is met or missed, and what the
//! measurements say stands in the way.

use std::fmt::Write as _;

use crate::configs::{Proxy, Variant};
use crate::report::{plugin_loss_percent, ratio, Outcome};
use crate::scaling::Scaling;
use crate::stats::{fmt_mib, fmt_ms, fmt_rate, fmt_ratio};

/// The fixed rate the latency targets are set at, req/s.
const TARGET_RATE: u32 = 10_000;

/// How far a latency run's rate may be from the rate a target names (half
/// of a maximum) and still stand for it: the runner adds half of the first
/// run's maximum, and the median maximum over the runs moves by up to a
/// fifth on this machine.
const RATE_TOLERANCE: f64 = 0.25;

/// Idle keep-alive connections the memory-under-connections target is set at.
const TARGET_CONNECTIONS: usize = 1_000;

/// Idle keep-alive connections the per-connection memory target is set at.
const MANY_CONNECTIONS: usize = 10_000;

/// One line of the section's table.
#[derive(Debug, PartialEq)]
pub struct TargetRow {
    /// The target, as the budget states it.
    pub target: &'static str,
    /// What this run measured (medians over the runs).
    pub measured: String,
    /// "met", "missed by ...", or why it was not measured.
    pub verdict: String,
    /// What the measurements point at.
    pub cause: String,
}

fn find(outcomes: &[Outcome], proxy: Proxy, variant: Variant) -> Option<&Outcome> {
    outcomes
        .iter()
        .find(|o| o.target.proxy == proxy && o.target.variant == variant && !o.runs.is_empty())
}

fn not_measured(target: &'static str, why: &str) -> TargetRow {
    TargetRow {
        target,
        measured: "—".into(),
        verdict: format!("not measured: {why}"),
        cause: String::new(),
    }
}

/// A verdict for "at least `goal`", measured `value`.
fn at_least(value: f64, goal: f64, show: impl Fn(f64) -> String) -> String {
    if value >= goal {
        "met".into()
    } else {
        format!(
            "missed by {} ({} short)",
            fmt_ratio(goal / value),
            show(goal - value)
        )
    }
}

/// A verdict for "at most `goal`", measured `value`.
fn at_most(value: f64, goal: f64, show: impl Fn(f64) -> String) -> String {
    if value <= goal {
        "met".into()
    } else {
        format!(
            "missed by {} ({} over)",
            fmt_ratio(value / goal),
            show(value - goal)
        )
    }
}

fn kib_to_mb(kib: f64) -> f64 {
    kib * 1024.0 / 1e6
}

fn mb(kib: f64) -> String {
    format!("{} MiB ({:.1} MB)", fmt_mib(kib), kib_to_mb(kib))
}

/// How loaded the proxy is at the target rate: the rate as a share of its
/// closed-loop maximum in this run.
fn queueing(outcome: &Outcome, rate: u32) -> String {
    match outcome.throughput() {
        Some(t) if t.median > 0.0 => {
            let share = f64::from(rate) / t.median * 100.0;
            if share >= 100.0 {
                format!(
                    "{} req/s is above its maximum of {} req/s on one core, so requests queue without bound",
                    fmt_rate(f64::from(rate)),
                    fmt_rate(t.median)
                )
            } else {
                format!(
                    "{} req/s is {share:.0}% of its maximum of {} req/s on one core, so requests queue behind each other",
                    fmt_rate(f64::from(rate)),
                    fmt_rate(t.median)
                )
            }
        }
        _ => String::new(),
    }
}

fn p99_row(target: &'static str, goal_ms: f64, outcome: Option<&Outcome>) -> TargetRow {
    let Some(outcome) = outcome else {
        return not_measured(target, "the case was not run");
    };
    let Some(p99) = outcome.latency(TARGET_RATE, 99) else {
        return not_measured(target, "no latency run at 10,000 req/s");
    };
    TargetRow {
        target,
        measured: format!("{} ms", fmt_ms(p99.median)),
        verdict: at_most(p99.median, goal_ms, |v| format!("{} ms", fmt_ms(v))),
        cause: queueing(outcome, TARGET_RATE),
    }
}

/// A row for "`outcome`'s throughput is at least `goal` times `baseline`'s",
/// the ratio taken run by run.
fn throughput_ratio_row(
    target: &'static str,
    goal: f64,
    (outcome, baseline): (Option<&Outcome>, Option<&Outcome>),
    cause: String,
) -> TargetRow {
    let (Some(outcome), Some(baseline)) = (outcome, baseline) else {
        return not_measured(target, "one of the two cases was not run");
    };
    match ratio(outcome, baseline, |m| Some(m.throughput)) {
        Some(r) => TargetRow {
            target,
            measured: fmt_ratio(r.median),
            verdict: at_least(r.median, goal, fmt_ratio),
            cause,
        },
        None => not_measured(target, "no run measured both"),
    }
}

/// What holds the plain proxy's throughput back, from the bare Pingora
/// proxy's throughput when the run measured it.
fn floor_cause(
    floor: Option<&Outcome>,
    nginx: Option<&Outcome>,
    plain: Option<&Outcome>,
) -> String {
    let profile = "Pingora's HTTP/1 path, Tokio and the kernel (see What was optimised)";
    let Some(floor) = floor else {
        return profile.into();
    };
    let of_nginx = nginx.and_then(|nginx| ratio(floor, nginx, |m| Some(m.throughput)));
    let sluice_of_floor = plain.and_then(|plain| ratio(plain, floor, |m| Some(m.throughput)));
    match (of_nginx, sluice_of_floor) {
        (Some(of_nginx), Some(sluice_of_floor)) => format!(
            "{profile}: Pingora with nothing on top (`pingora-floor`) reaches {} of nginx's throughput, \
             and Sluice's routing, forwarding headers, request ids and metrics keep {} of Pingora's",
            fmt_ratio(of_nginx.median),
            fmt_ratio(sluice_of_floor.median)
        ),
        _ => profile.into(),
    }
}

/// "p99 ≤ 2 ms at half of nginx's maximum rate", from the run's fixed rate
/// nearest to half of nginx's median closed-loop throughput, when one is
/// within [`RATE_TOLERANCE`] of it.
fn p99_at_half_nginx_row(plain: Option<&Outcome>, nginx: Option<&Outcome>) -> TargetRow {
    const TARGET: &str = "p99 ≤ 2 ms at half of nginx's maximum rate, plain proxy";
    let (Some(plain), Some(nginx)) = (plain, nginx) else {
        return not_measured(TARGET, "one of the two cases was not run");
    };
    let Some(half) = nginx.throughput().map(|t| t.median / 2.0) else {
        return not_measured(TARGET, "nginx's throughput was not measured");
    };
    let Some(rate) = rate_near(plain, half) else {
        return not_measured(
            TARGET,
            &format!(
                "no fixed rate within 25% of {} req/s; pass it with --rates",
                fmt_rate(half)
            ),
        );
    };
    match plain.latency(rate, 99) {
        Some(p99) => TargetRow {
            target: TARGET,
            measured: format!(
                "{} ms at {} req/s",
                fmt_ms(p99.median),
                fmt_rate(f64::from(rate))
            ),
            verdict: at_most(p99.median, 2.0, |v| format!("{} ms", fmt_ms(v))),
            cause: format!(
                "{}; the target follows the throughput target: at 0.6× nginx's throughput this rate would \
                 be 83% of the maximum",
                queueing(plain, rate)
            ),
        },
        None => not_measured(TARGET, "no latency run at that rate"),
    }
}

/// The fixed rate `outcome` was measured at that is nearest `want`, when
/// one is within [`RATE_TOLERANCE`] of it.
fn rate_near(outcome: &Outcome, want: f64) -> Option<u32> {
    outcome
        .runs
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|m| m.latency.iter().map(|l| l.rate))
        .min_by_key(|rate| (f64::from(*rate) - want).abs() as u64)
        .filter(|rate| (f64::from(*rate) - want).abs() <= want * RATE_TOLERANCE)
}

/// The chain's p99 against the plain proxy's, both at half of the plain
/// proxy's maximum rate.
fn chain_p99_at_half_plain_row(plugins: Option<&Outcome>, plain: Option<&Outcome>) -> TargetRow {
    const TARGET: &str =
        "2-plugin chain: p99 at half of the plain proxy's maximum rate ≤ 1.2× the plain proxy's";
    let (Some(plugins), Some(plain)) = (plugins, plain) else {
        return not_measured(TARGET, "one of the two cases was not run");
    };
    let Some(half) = plain.throughput().map(|t| t.median / 2.0) else {
        return not_measured(TARGET, "the plain proxy's throughput was not measured");
    };
    let measured = rate_near(plugins, half).and_then(|rate| {
        Some((
            rate,
            plugins.latency(rate, 99)?.median,
            plain.latency(rate, 99)?.median,
        ))
    });
    let Some((rate, chain, alone)) = measured.filter(|(_, _, alone)| *alone > 0.0) else {
        return not_measured(
            TARGET,
            &format!(
                "no fixed rate within 25% of {} req/s measured for both; pass it with --rates",
                fmt_rate(half)
            ),
        );
    };
    TargetRow {
        target: TARGET,
        measured: format!(
            "{} ms against {} ms at {} req/s: {}",
            fmt_ms(chain),
            fmt_ms(alone),
            fmt_rate(f64::from(rate)),
            fmt_ratio(chain / alone)
        ),
        verdict: at_most(chain / alone, 1.2, fmt_ratio),
        cause: queueing(plugins, rate),
    }
}

/// "10,000 idle keep-alive clients at ≤ 8 KiB each, ≤ 100 MB in all", with
/// nginx's, Caddy's and bare Pingora's figures beside Sluice's.
fn many_connections_row(outcomes: &[Outcome], plain: Option<&Outcome>) -> TargetRow {
    const TARGET: &str = "10,000 idle keep-alive clients: ≤ 8 KiB per connection, RSS ≤ 100 MB";
    let per_connection = |o: &Outcome| {
        let held = o.idle_rss(MANY_CONNECTIONS)?.median;
        let idle = o.summary(|m| Some(m.rss_idle_kib as f64))?.median;
        Some((held, (held - idle) / MANY_CONNECTIONS as f64))
    };
    let Some((held, each)) = plain.and_then(per_connection) else {
        return not_measured(TARGET, "no 10,000-connection run of the plain proxy");
    };
    let beside: Vec<String> = [
        (Proxy::Nginx, "nginx"),
        (Proxy::Caddy, "Caddy"),
        (Proxy::Pingora, "bare Pingora"),
    ]
    .into_iter()
    .filter_map(|(proxy, name)| {
        let (held, each) = per_connection(find(outcomes, proxy, Variant::Plain)?)?;
        Some(format!("{name} {} ({each:.1} KiB each)", mb(held)))
    })
    .collect();
    let verdict = if each <= 8.0 && kib_to_mb(held) <= 100.0 {
        "met".to_string()
    } else if each > 8.0 {
        at_most(each, 8.0, |v| format!("{v:.1} KiB"))
    } else {
        at_most(kib_to_mb(held), 100.0, |v| format!("{v:.1} MB"))
    };
    TargetRow {
        target: TARGET,
        measured: if beside.is_empty() {
            format!("{} in all, {each:.1} KiB per connection", mb(held))
        } else {
            format!(
                "{} in all, {each:.1} KiB per connection (beside it: {})",
                mb(held),
                beside.join("; ")
            )
        },
        verdict,
        cause: "the connection's stream, task and keep-alive timer, and allocator rounding".into(),
    }
}

/// Two workers against one: the estimate from the CPU each request cost,
/// with the throughput both reached on the shared cores beside it.
fn scaling_row(scaling: Result<&Scaling, &str>) -> TargetRow {
    const TARGET: &str = "two workers on two cores ≥ 1.7× one worker";
    let measured = scaling.map_err(str::to_string).and_then(|s| {
        match (s.estimate(), s.cpu_per_request(), s.throughput()) {
            (Some(estimate), Some((cpu1, cpu2)), Some((one, two))) => {
                Ok((estimate, cpu1, cpu2, one, two))
            }
            _ => Err("no run of one worker and two completed".to_string()),
        }
    });
    let (estimate, cpu1, cpu2, one, two) = match measured {
        Ok(m) => m,
        Err(why) => return not_measured(TARGET, &why),
    };
    TargetRow {
        target: TARGET,
        measured: format!(
            "{} estimated: {:.1} µs of CPU per request with two workers, {:.1} µs with one, both on the \
             machine's two cores beside the load generator (which caps their throughput there: {} and {} req/s)",
            fmt_ratio(estimate),
            cpu2.median,
            cpu1.median,
            fmt_rate(two.median),
            fmt_rate(one.median),
        ),
        verdict: at_least(estimate, 1.7, |v| format!("{v:.2}×")),
        cause: "each request costs two workers more CPU than one: they share the machine's two \
                cores with the load generator and the origin, each handles fewer events per \
                wake-up, and the estimate moves by about 0.1 from run to run. The workers no \
                longer wake each other (see Workers keep their connections)"
            .into(),
    }
}

/// The rows, from the run's outcomes.
pub fn rows(outcomes: &[Outcome], scaling: Result<&Scaling, &str>) -> Vec<TargetRow> {
    let nginx = find(outcomes, Proxy::Nginx, Variant::Plain);
    let caddy = find(outcomes, Proxy::Caddy, Variant::Plain);
    let plain = find(outcomes, Proxy::Sluice, Variant::Plain);
    let plugins = find(outcomes, Proxy::Sluice, Variant::Plugins);
    let floor = find(outcomes, Proxy::Pingora, Variant::Plain);
    let mut rows = vec![
        throughput_ratio_row(
            "plain proxy throughput per core ≥ nginx's (goal 1.2×)",
            1.0,
            (plain, nginx),
            floor_cause(floor, nginx, plain),
        ),
        throughput_ratio_row(
            "plain proxy throughput ≥ 4× Caddy's",
            4.0,
            (plain, caddy),
            "as above: the per-request cost of the proxy underneath".into(),
        ),
        throughput_ratio_row(
            "plain proxy throughput ≥ 0.6× nginx's, one worker on one core",
            0.6,
            (plain, nginx),
            floor_cause(floor, nginx, plain),
        ),
        throughput_ratio_row(
            "plain proxy throughput ≥ 1.1× bare, unpatched Pingora 0.9 (`pingora-floor`)",
            1.1,
            (plain, floor),
            "fewer instructions than bare Pingora but more time: under callgrind 77,500 a \
             request against Pingora's 78,700, since the Pingora patches and the allocator's \
             plain entry points take out more than Sluice's filters (routing, forwarding \
             headers, request ids, metrics) add, about 10,500; side by side on one core Sluice \
             used 1.06 to 1.09 times Pingora's CPU a request, writing a request id on every \
             response and forwarding headers on every request, and this VM exposes no hardware \
             counters to say where the cycles go. Pingora's own throughput moves by a third \
             from run to run, and the ratio has read 0.93× to 1.13× from report to report \
             (see What still costs)"
                .into(),
        ),
        p99_at_half_nginx_row(plain, nginx),
        scaling_row(scaling),
        many_connections_row(outcomes, plain),
        p99_row("p99 ≤ 1 ms at 10,000 req/s, plain proxy", 1.0, plain),
        p99_row("p99 ≤ 1.5 ms at 10,000 req/s, 2-plugin chain", 1.5, plugins),
        chain_p99_at_half_plain_row(plugins, plain),
    ];

    const IDLE: &str = "RSS idle ≤ 15 MB with plugins loaded";
    rows.push(
        match plugins.and_then(|p| p.summary(|m| Some(m.rss_idle_kib as f64))) {
            Some(idle) => {
                let base = plain.and_then(|p| p.summary(|m| Some(m.rss_idle_kib as f64)));
                TargetRow {
                    target: IDLE,
                    measured: format!("{} (three plugins, two attached)", mb(idle.median)),
                    verdict: at_most(kib_to_mb(idle.median), 15.0, |v| format!("{v:.1} MB")),
                    cause: base
                        .map(|base| {
                            format!(
                                "the plain proxy alone holds {}; loading the plugins (wasmtime's code, the \
                                 compiled components, a warm instance each) adds {} MiB",
                                mb(base.median),
                                fmt_mib(idle.median - base.median)
                            )
                        })
                        .unwrap_or_default(),
                }
            }
            None => not_measured(IDLE, "the plugin case was not run"),
        },
    );

    const PLUGIN_SHARE: &str =
        "RSS idle, three plugins loaded and two attached: ≤ the plain proxy's + 4 MiB";
    let idle_of =
        |case: Option<&Outcome>| case.and_then(|c| c.summary(|m| Some(m.rss_idle_kib as f64)));
    rows.push(match (idle_of(plugins), idle_of(plain)) {
        (Some(with_plugins), Some(base)) => {
            let share = with_plugins.median - base.median;
            TargetRow {
                target: PLUGIN_SHARE,
                measured: format!(
                    "{} MiB over the plain proxy's {}",
                    fmt_mib(share),
                    mb(base.median)
                ),
                verdict: at_most(share / 1024.0, 4.0, |v| format!("{v:.1} MiB")),
                cause: "the two attached components, read nearly whole by loading and the first calls; \
                        the warm instances' memory; wasmtime's call path"
                    .into(),
            }
        }
        _ => not_measured(PLUGIN_SHARE, "the plain or the plugin case was not run"),
    });

    const CONNECTIONS: &str = "RSS ≤ 40 MB with 1,000 connections";
    rows.push(
        match plain.and_then(|p| Some((p, p.idle_rss(TARGET_CONNECTIONS)?))) {
            Some((plain, held)) => {
                let idle = plain.summary(|m| Some(m.rss_idle_kib as f64));
                let loaded = plain.summary(|m| Some(m.rss_load_kib as f64));
                TargetRow {
                    target: CONNECTIONS,
                    measured: format!(
                        "{} with 1,000 idle keep-alive connections{}",
                        mb(held.median),
                        loaded
                            .map(|l| format!("; {} under the closed-loop load", mb(l.median)))
                            .unwrap_or_default()
                    ),
                    verdict: at_most(kib_to_mb(held.median), 40.0, |v| format!("{v:.1} MB")),
                    cause: idle
                        .map(|idle| {
                            format!(
                                "about {:.0} KiB of the proxy's memory per open connection while it waits \
                                 for its next request",
                                (held.median - idle.median) / TARGET_CONNECTIONS as f64
                            )
                        })
                        .unwrap_or_default(),
                }
            }
            None => not_measured(CONNECTIONS, "no 1,000-connection run of the plain proxy"),
        },
    );

    const CHAIN: &str = "2-plugin chain: ≤ 10% throughput loss against the plain proxy";
    rows.push(match (plugins, plain) {
        (Some(plugins), Some(plain)) => match plugin_loss_percent(plugins, plain) {
            Some(loss) => TargetRow {
                target: CHAIN,
                measured: format!("{loss:.0}% lost"),
                verdict: at_most(loss, 10.0, |v| format!("{v:.0} points")),
                cause: "three WebAssembly calls per request, under half of the chain's extra CPU \
                        time; the rest is the work of the changes they make and the costs around \
                        a slower request (see What still costs)"
                    .into(),
            },
            None => not_measured(CHAIN, "no run measured both"),
        },
        _ => not_measured(CHAIN, "the plain or plugin Sluice case was not run"),
    });
    rows
}

/// Writes the section.
pub fn section(md: &mut String, outcomes: &[Outcome], scaling: Result<&Scaling, &str>) {
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(
        md,
        "Sluice's budget for this benchmark, against this run's medians (ratios taken within each run).\n"
    );
    let _ = writeln!(
        md,
        "| target | measured | verdict | what stands in the way |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- |");
    for row in rows(outcomes, scaling) {
        let cause = if row.verdict == "met" { "" } else { &row.cause };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            row.target, row.measured, row.verdict, cause
        );
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{metrics, outcome};

    fn row<'a>(rows: &'a [TargetRow], prefix: &str) -> &'a TargetRow {
        rows.iter().find(|r| r.target.starts_with(prefix)).unwrap()
    }

    /// Two runs of `proxy`'s plain case at these throughputs and p99.
    fn plain_runs(proxy: Proxy, throughputs: [f64; 2], p99_ms: f64) -> Outcome {
        outcome(
            proxy,
            Variant::Plain,
            throughputs
                .iter()
                .map(|&throughput| Ok(metrics(throughput, p99_ms)))
                .collect(),
        )
    }

    #[test]
    fn verdicts_say_by_how_much() {
        assert_eq!(at_least(1.3, 1.0, fmt_ratio), "met");
        assert_eq!(
            at_least(0.5, 1.0, fmt_ratio),
            "missed by 2.00× (0.50× short)"
        );
        assert_eq!(at_most(0.8, 1.0, |v| format!("{v} ms")), "met");
        assert_eq!(
            at_most(3.0, 1.5, |v| format!("{v} ms")),
            "missed by 2.00× (1.5 ms over)"
        );
    }

    #[test]
    fn rows_come_from_the_runs() {
        let outcomes = vec![
            plain_runs(Proxy::Nginx, [40_000.0, 30_000.0], 1.0),
            plain_runs(Proxy::Caddy, [5_000.0, 5_000.0], 9.0),
            plain_runs(Proxy::Sluice, [20_000.0, 15_000.0], 0.5),
        ];
        let rows = rows(&outcomes, Err("not measured here"));
        let nginx = row(&rows, "plain proxy throughput per core");
        assert_eq!(nginx.measured, "0.50×");
        assert_eq!(nginx.verdict, "missed by 2.00× (0.50× short)");
        let caddy = row(&rows, "plain proxy throughput ≥ 4×");
        assert_eq!(caddy.measured, "3.50×");
        let p99 = row(&rows, "p99 ≤ 1 ms");
        assert_eq!(p99.verdict, "met");
        assert!(p99.cause.contains("57% of its maximum"), "{}", p99.cause);
        let held = row(&rows, "RSS ≤ 40 MB");
        assert!(
            held.cause
                .contains("about 6 KiB of the proxy's memory per open connection"),
            "{}",
            held.cause
        );
        assert_eq!(held.verdict, "met");
        assert!(row(&rows, "2-plugin chain")
            .verdict
            .starts_with("not measured"));
        assert!(row(&rows, "RSS idle").verdict.starts_with("not measured"));
        assert!(!nginx.cause.contains("pingora-floor"), "{}", nginx.cause);
    }

    #[test]
    fn the_chain_p99_is_set_against_the_plain_proxy_at_half_its_maximum() {
        let plugins = |p99_ms| {
            outcome(
                Proxy::Sluice,
                Variant::Plugins,
                vec![Ok(metrics(15_000.0, p99_ms)), Ok(metrics(15_000.0, p99_ms))],
            )
        };
        // Half of the plain proxy's 20,000 req/s is the 10,000 req/s both ran at.
        let plain = || plain_runs(Proxy::Sluice, [20_000.0, 20_000.0], 1.0);
        let slow = rows(&[plain(), plugins(1.5)], Err("not measured here"));
        let slow = row(&slow, "2-plugin chain: p99 at half");
        assert_eq!(
            slow.measured,
            "1.50 ms against 1.00 ms at 10,000 req/s: 1.50×"
        );
        assert!(
            slow.verdict.starts_with("missed by 1.25×"),
            "{}",
            slow.verdict
        );
        assert!(slow.cause.contains("67% of its maximum"), "{}", slow.cause);
        let close = rows(&[plain(), plugins(1.1)], Err("not measured here"));
        assert_eq!(row(&close, "2-plugin chain: p99 at half").verdict, "met");
        // At 40,000 req/s, half is 20,000, where no latency run was made.
        let faster = plain_runs(Proxy::Sluice, [40_000.0, 40_000.0], 1.0);
        let unmeasured = rows(&[faster, plugins(1.1)], Err("not measured here"));
        assert!(row(&unmeasured, "2-plugin chain: p99 at half")
            .verdict
            .starts_with("not measured: no fixed rate within 25% of 20,000 req/s"));
    }

    #[test]
    fn the_plain_proxy_is_set_against_bare_pingora_when_it_ran() {
        let outcomes = vec![
            plain_runs(Proxy::Nginx, [40_000.0, 30_000.0], 1.0),
            plain_runs(Proxy::Pingora, [24_000.0, 18_000.0], 1.0),
            plain_runs(Proxy::Sluice, [20_000.0, 15_000.0], 0.5),
        ];
        let rows = rows(&outcomes, Err("not measured here"));
        let nginx = row(&rows, "plain proxy throughput per core");
        assert!(
            nginx
                .cause
                .contains("(`pingora-floor`) reaches 0.60× of nginx's throughput"),
            "{}",
            nginx.cause
        );
        assert!(
            nginx.cause.contains("keep 0.83× of Pingora's"),
            "{}",
            nginx.cause
        );
    }
}
