//! The Markdown report and the figures it is built from.

use std::fmt::Write as _;

use crate::bench::{RunMetrics, Target};
use crate::chart::{ChartData, Row};
use crate::configs::{Proxy, Variant};
use crate::stats::{fmt_mib, fmt_ms, fmt_rate, fmt_ratio, Summary};

/// All runs of one target.
pub struct Outcome {
    /// The target.
    pub target: Target,
    /// One entry per run, in run order: the metrics, or why that run
    /// failed. Empty when the target was skipped.
    pub runs: Vec<Result<RunMetrics, String>>,
    /// The config text, for the report.
    pub config_text: String,
    /// Remarks made while measuring (runs measured again).
    pub notes: Vec<String>,
}

impl Outcome {
    fn ok_runs(&self) -> impl Iterator<Item = &RunMetrics> {
        self.runs.iter().filter_map(|r| r.as_ref().ok())
    }

    /// One figure of every successful run, summarised.
    pub fn summary(&self, f: impl Fn(&RunMetrics) -> Option<f64>) -> Option<Summary> {
        let values: Vec<f64> = self.ok_runs().filter_map(f).collect();
        Summary::of(&values)
    }

    /// The throughput over the runs.
    pub fn throughput(&self) -> Option<Summary> {
        self.summary(|m| Some(m.throughput))
    }

    /// A percentile at one rate over the runs; `which` is 50, 99 or 999.
    pub fn latency(&self, rate: u32, which: u32) -> Option<Summary> {
        self.summary(|m| {
            let run = m.latency.iter().find(|l| l.rate == rate)?;
            Some(match which {
                50 => run.report.p50_ms,
                99 => run.report.p99_ms,
                _ => run.report.p999_ms,
            })
        })
    }

    /// Memory with `n` idle connections over the runs, KiB.
    pub fn idle_rss(&self, n: usize) -> Option<Summary> {
        self.summary(|m| {
            m.idle
                .iter()
                .find(|i| i.connections == n)
                .and_then(|i| i.rss_kib)
                .map(|kib| kib as f64)
        })
    }
}

/// Ratios of `outcome` to `baseline` taken run by run (both measured in
/// the same run), then summarised.
pub fn ratio(
    outcome: &Outcome,
    baseline: &Outcome,
    f: impl Fn(&RunMetrics) -> Option<f64>,
) -> Option<Summary> {
    let values: Vec<f64> = outcome
        .runs
        .iter()
        .zip(&baseline.runs)
        .filter_map(|(a, b)| {
            let (a, b) = (a.as_ref().ok()?, b.as_ref().ok()?);
            let (a, b) = (f(a)?, f(b)?);
            (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
        })
        .collect();
    Summary::of(&values)
}

/// The outcome that `outcome` is compared with: nginx in the same
/// variant for TLS, plain nginx otherwise.
pub fn baseline<'a>(outcomes: &'a [Outcome], outcome: &Outcome) -> Option<&'a Outcome> {
    let variant = if outcome.target.variant == Variant::Tls {
        Variant::Tls
    } else {
        Variant::Plain
    };
    outcomes
        .iter()
        .find(|o| o.target.proxy == Proxy::Nginx && o.target.variant == variant)
}

/// A short label for tables and the chart.
pub fn short_label(target: &Target) -> String {
    match target.variant {
        // Pingora is measured only bare, as the floor under Sluice.
        Variant::Plain if target.proxy == Proxy::Pingora => "Pingora (bare)".to_string(),
        Variant::Plain => target.proxy.name().to_string(),
        Variant::Routing => format!("{} routing+resilience", target.proxy.name()),
        Variant::Plugins => format!("{} 2 plugins", target.proxy.name()),
        Variant::Tls => format!("{} TLS", target.proxy.name()),
    }
}

fn cell(s: Option<Summary>, f: impl Fn(f64) -> String) -> String {
    s.map(|s| s.display(f)).unwrap_or_else(|| "—".to_string())
}

/// Everything the report says besides the outcomes.
pub struct ReportInput<'a> {
    /// The outcomes, in table order.
    pub outcomes: &'a [Outcome],
    /// Lines describing the machine and the software (`- **CPU**: ...`).
    pub machine: Vec<String>,
    /// The runs done.
    pub runs: usize,
    /// Seconds of each measured wrk and fixed-rate run.
    pub seconds: u64,
    /// wrk and fixed-rate connections.
    pub connections: u32,
    /// Fixed rates of the latency runs.
    pub rates: &'a [u32],
    /// Idle connection counts.
    pub idle: &'a [usize],
    /// The origin's nginx config.
    pub origin_config: String,
    /// How long the runner took, seconds.
    pub elapsed_secs: f64,
    /// How much of it went to waiting for other work on the machine to
    /// stop, seconds.
    pub waited_secs: f64,
    /// How long the whole job took (installs, builds, runner), seconds,
    /// when known.
    pub total_secs: Option<f64>,
    /// The command that produced the report.
    pub command: String,
    /// CPU lists: (proxy, load generator and origin).
    pub cpus: (String, String),
    /// What was changed to make Sluice faster and what each change bought
    /// (`docs/optimisations.md`), shown after the summary.
    pub optimisations: Option<String>,
    /// One worker against two, or why it was not measured.
    pub scaling: Result<&'a crate::scaling::Scaling, &'a str>,
}

/// Builds the chart's data from the outcomes.
pub fn chart_data(input: &ReportInput) -> ChartData {
    let skipped: Vec<String> = input
        .outcomes
        .iter()
        .filter(|o| o.throughput().is_none())
        .map(|o| short_label(&o.target))
        .collect();
    ChartData {
        footer: if skipped.is_empty() {
            String::new()
        } else {
            format!(
                "Not measured (see docs/benchmarks.md for why): {}.",
                skipped.join(", ")
            )
        },
        rows: input
            .outcomes
            .iter()
            .filter(|o| o.throughput().is_some())
            .map(|o| Row {
                label: short_label(&o.target),
                sluice: o.target.proxy == Proxy::Sluice,
                throughput: o.throughput(),
                p99: input.rates.iter().map(|&r| o.latency(r, 99)).collect(),
            })
            .collect(),
        rates: input.rates.to_vec(),
        subtitle: format!(
            "{} runs, medians; proxy on CPU {}, wrk, the fixed-rate generator and the nginx origin on CPU {}. docs/benchmarks.md has the details.",
            input.runs, input.cpus.0, input.cpus.1
        ),
    }
}

/// Writes the Markdown report.
pub fn markdown(input: &ReportInput) -> String {
    let outcomes = input.outcomes;
    let mut md = String::new();
    let _ = writeln!(md, "# Load benchmark: Sluice, nginx, HAProxy and Caddy\n");
    let waited = if input.waited_secs >= 1.0 {
        format!(
            " ({:.1} of them waiting for other work on the machine to stop)",
            input.waited_secs / 60.0
        )
    } else {
        String::new()
    };
    let total = input
        .total_secs
        .map(|t| {
            format!(
                ", {:.1} minutes with the installs and builds before it",
                t / 60.0
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        md,
        "Generated by `{}` (the `loadbench` runner in `benches/load/`); do not edit by hand, run it again. \
         The measurements took {:.1} minutes{waited}{total}.\n",
        input.command,
        input.elapsed_secs / 60.0
    );
    let _ = writeln!(
        md,
        "![throughput and p99 latency per proxy](benchmarks.svg)\n"
    );

    summary_lines(&mut md, input);
    crate::targets::section(&mut md, input.outcomes, input.scaling);
    if let Some(text) = &input.optimisations {
        let _ = writeln!(md, "## What was optimised\n");
        let _ = writeln!(
            md,
            "From [`optimisations.md`](optimisations.md), kept by hand: the profile, the changes made to the hot \
             path, and what each bought.\n"
        );
        let _ = writeln!(md, "{}\n", demote_headings(text.trim()));
    }

    let _ = writeln!(md, "## Machine\n");
    for line in &input.machine {
        let _ = writeln!(md, "{line}");
    }
    md.push('\n');

    method(&mut md, input);

    // Throughput.
    let _ = writeln!(md, "## Maximum throughput\n");
    let _ = writeln!(
        md,
        "Closed loop: `wrk -t1 -c{} -d{}s` after a 1 s warm-up. Successful (2xx/3xx) responses per second; \
         median of {} runs (min–max). *× nginx* is the ratio to nginx measured in the same run (TLS rows: to \
         nginx with TLS), median of the per-run ratios. *Proxy CPU* is the CPU time the proxy used during the \
         run divided by its length: 1.00 means its core was saturated. *Other load* is the CPU that processes \
         outside the benchmark used meanwhile, the larger of its averages over the wrk run and over the fixed-rate runs \
         (user and system time from `/proc/stat`, less the proxy, the origin, \
         wrk and the runner): near 0 the machine was quiet. CPU stolen by the hypervisor is listed under problems \
         when it reached 0.1 cores.\n",
        input.connections, input.seconds, input.runs
    );
    let _ = writeln!(
        md,
        "| proxy | configuration | req/s | × nginx | proxy CPU (cores) | other load (cores) |"
    );
    let _ = writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: |");
    for o in outcomes {
        if let Some(reason) = &o.target.skipped {
            let _ = writeln!(
                md,
                "| {} | {} | skipped: {} | | | |",
                o.target.proxy.name(),
                o.target.variant.describe(),
                md_escape(reason)
            );
            continue;
        }
        let vs = baseline(outcomes, o)
            .and_then(|b| ratio(o, b, |m| Some(m.throughput)))
            .map(|s| s.display(fmt_ratio))
            .unwrap_or_else(|| "—".into());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            o.target.proxy.name(),
            o.target.variant.describe(),
            cell(o.throughput(), fmt_rate),
            vs,
            cell(o.summary(|m| Some(m.proxy_cpu)), |v| format!("{v:.2}")),
            cell(o.summary(|m| Some(m.other_cpu)), |v| format!("{v:.2}")),
        );
    }
    md.push('\n');

    // Latency.
    let _ = writeln!(md, "## Latency at fixed rates\n");
    let _ = writeln!(
        md,
        "Open loop, from the runner's own generator (`benches/load/src/fixed_rate.rs`, one thread driving \
         every connection through epoll): for {} s, requests \
         fall due at the fixed rate and are spread over {} keep-alive connections, opened before the first. \
         A request that falls due while every connection still waits for an answer is timed from when it \
         fell due, so a stall is counted against the requests queued behind it (coordinated omission \
         corrected, as wrk2 and `oha --latency-correction` do). Milliseconds; median of {} \
         runs (min–max). *p99 × nginx* as above. A rate the proxy cannot sustain on one core shows up as \
         latencies that grow with the run's length.\n",
        input.seconds, input.connections, input.runs
    );
    let _ = writeln!(
        md,
        "| proxy | configuration | rate (req/s) | p50 | p99 | p99.9 | p99 × nginx |"
    );
    let _ = writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for o in outcomes {
        if o.target.skipped.is_some() {
            continue;
        }
        for &rate in input.rates {
            let vs = baseline(outcomes, o)
                .and_then(|b| {
                    ratio(o, b, |m| {
                        m.latency
                            .iter()
                            .find(|l| l.rate == rate)
                            .map(|l| l.report.p99_ms)
                    })
                })
                .map(|s| s.display(fmt_ratio))
                .unwrap_or_else(|| "—".into());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                o.target.proxy.name(),
                o.target.variant.describe(),
                fmt_rate(rate as f64),
                cell(o.latency(rate, 50), fmt_ms),
                cell(o.latency(rate, 99), fmt_ms),
                cell(o.latency(rate, 999), fmt_ms),
                vs
            );
        }
    }
    md.push('\n');

    // Memory.
    let _ = writeln!(md, "## Memory\n");
    let _ = writeln!(
        md,
        "Resident set size (`VmRSS` from `/proc/PID/status`) in MiB, summed over the proxy's processes: for \
         nginx the master and its one worker; HAProxy, Caddy and Sluice are one process each. *Idle*: after \
         start and one request. *Under load*: the largest value sampled every 200 ms during the wrk run. \
         *N idle conns*: after the load runs, with N client connections open, each having made one \
         keep-alive request, read 0.5 s after the last was opened, in the first run only (when every run \
         measured it, the runs of each proxy were within 1% of each other, Caddy's within 10%). Otherwise the median of {} runs (min–max).\n",
        input.runs
    );
    let idle_headers: Vec<String> = input
        .idle
        .iter()
        .map(|n| format!("{} idle conns", fmt_rate(*n as f64)))
        .collect();
    let _ = writeln!(
        md,
        "| proxy | configuration | idle | under load | {} |",
        idle_headers.join(" | ")
    );
    let _ = writeln!(
        md,
        "| --- | --- | ---: | ---: |{}",
        " ---: |".repeat(input.idle.len())
    );
    for o in outcomes {
        if o.target.skipped.is_some() {
            continue;
        }
        let idle_cells: Vec<String> = input
            .idle
            .iter()
            .map(|&n| cell(o.idle_rss(n), fmt_mib))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            o.target.proxy.name(),
            o.target.variant.describe(),
            cell(o.summary(|m| Some(m.rss_idle_kib as f64)), fmt_mib),
            cell(o.summary(|m| Some(m.rss_load_kib as f64)), fmt_mib),
            idle_cells.join(" | ")
        );
    }
    md.push('\n');

    problems(&mut md, input);
    configs(&mut md, input);
    md
}

fn summary_lines(md: &mut String, input: &ReportInput) {
    let outcomes = input.outcomes;
    let _ = writeln!(md, "## Summary\n");
    let rate = input.rates.iter().copied().max().unwrap_or(0);
    let sluice_plain = outcomes
        .iter()
        .find(|o| o.target.proxy == Proxy::Sluice && o.target.variant == Variant::Plain);
    for o in outcomes.iter().filter(|o| o.target.proxy == Proxy::Sluice) {
        if let Some(reason) = &o.target.skipped {
            let _ = writeln!(md, "- {}: skipped: {}", o.target.label(), reason);
            continue;
        }
        let mut line = format!(
            "- {}: {} req/s; p99 at {} req/s {} ms; RSS under load {} MiB",
            o.target.label(),
            cell(o.throughput().map(only_median), fmt_rate),
            fmt_rate(rate as f64),
            cell(o.latency(rate, 99).map(only_median), fmt_ms),
            cell(
                o.summary(|m| Some(m.rss_load_kib as f64)).map(only_median),
                fmt_mib
            ),
        );
        // TLS rows compare with nginx terminating TLS too, like the tables.
        if let Some(nginx) = baseline(outcomes, o) {
            let name = if nginx.target.variant == Variant::Tls {
                "nginx's with TLS"
            } else {
                "nginx's"
            };
            let thr = ratio(o, nginx, |m| Some(m.throughput));
            let p99 = ratio(o, nginx, |m| p99_at(m, rate));
            let _ = write!(
                line,
                ". Against {name}: throughput {}, p99 {}",
                cell(thr.map(only_median), fmt_ratio),
                cell(p99.map(only_median), fmt_ratio),
            );
        }
        if o.target.variant == Variant::Plain {
            if let Some(caddy) = outcomes
                .iter()
                .find(|c| c.target.proxy == Proxy::Caddy && c.target.variant == Variant::Plain)
            {
                let thr = ratio(o, caddy, |m| Some(m.throughput));
                let _ = write!(
                    line,
                    "; against Caddy's throughput {}",
                    cell(thr.map(only_median), fmt_ratio)
                );
            }
        }
        if o.target.variant == Variant::Plugins {
            if let Some(loss) = sluice_plain.and_then(|plain| plugin_loss_percent(o, plain)) {
                let _ = write!(
                    line,
                    "; throughput lost to the plugins against the plain proxy in the same run: {loss:.0}%"
                );
            }
        }
        line.push('.');
        let _ = writeln!(md, "{line}");
    }
    md.push('\n');
}

/// The median share of the plain proxy's throughput, in percent, that the
/// plugin case lost, runs paired as in [`ratio`].
pub fn plugin_loss_percent(plugins: &Outcome, plain: &Outcome) -> Option<f64> {
    ratio(plugins, plain, |m| Some(m.throughput)).map(|r| (1.0 - r.median) * 100.0)
}

/// The p99 at `rate` of one run, in milliseconds.
fn p99_at(metrics: &RunMetrics, rate: u32) -> Option<f64> {
    metrics
        .latency
        .iter()
        .find(|l| l.rate == rate)
        .map(|l| l.report.p99_ms)
}

fn only_median(s: Summary) -> Summary {
    Summary {
        median: s.median,
        min: s.median,
        max: s.median,
        count: 1,
    }
}

fn method(md: &mut String, input: &ReportInput) {
    let _ = writeln!(md, "## Method\n");
    let _ = writeln!(
        md,
        "- Everything runs on this one machine over loopback. The proxy under test is pinned to CPU {} \
         (`taskset -c {}`); the load generators (wrk, and the runner's fixed-rate generator and idle-connection client) and the \
         origin to CPU {}.",
        input.cpus.0, input.cpus.0, input.cpus.1
    );
    let _ = writeln!(
        md,
        "- The origin is nginx (one worker) answering every request with `return 200` and a {}-byte body. \
         Every request is `GET /acme/hello`.",
        crate::configs::ORIGIN_BODY.len()
    );
    let _ = writeln!(
        md,
        "- Every proxy is configured alike: one worker (nginx `worker_processes 1`, HAProxy `nbthread 1`, \
         Caddy `GOMAXPROCS=1`, Sluice `[server] threads = 1`), keep-alive to the origin with a pool of idle \
         connections, no access log, no limit on requests per client connection. The configs are at the end."
    );
    let _ = writeln!(
        md,
        "- One run measures every configuration in turn: start it, read its idle memory 2 s after it first answered, 1 s wrk warm-up, \
         wrk for throughput, the fixed-rate generator at each rate ({}), then, in the first run, the idle connections ({}); then stop it. \
         The {} runs are interleaved, so slow drift on the machine affects every proxy alike, and the \
         ratios to nginx are taken within a run.",
        input
            .rates
            .iter()
            .map(|r| format!("{} req/s", fmt_rate(*r as f64)))
            .collect::<Vec<_>>()
            .join(", "),
        input
            .idle
            .iter()
            .map(|n| fmt_rate(*n as f64))
            .collect::<Vec<_>>()
            .join(" then "),
        input.runs
    );
    let _ = writeln!(
        md,
        "- Sluice is measured in three configurations over plain HTTP: a plain proxy (`explain = false`, \
         `h2c = false`, like the others); two-level routing (routing key from the first path segment, a \
         1,001-key table, four placements on the origin with active HTTP health checks every second, passive \
         health, breakers, concurrency and body limits, fallback chains, and the explainability headers on); \
         and the plain proxy with a 2-plugin chain, `headers` (on_request and on_response) and `rewrite` \
         (on_request), three WebAssembly calls per request; a third plugin, `api-key`, is loaded but not \
         attached. Sluice logs at `RUST_LOG=warn`."
    );
    let _ = writeln!(
        md,
        "- Pingora is measured bare, as the floor under Sluice: `pingora-floor` (`benches/pingora-floor`) is \
         the smallest proxy Pingora runs, built with the same Pingora and allocator and configured as \
         Sluice is (one thread on a current-thread runtime, unbuffered listener reads), sending every \
         request to the origin with nothing on top."
    );
    let _ = writeln!(
        md,
        "- TLS termination: each proxy serves a self-signed ECDSA P-256 certificate (made with `openssl` for \
         the run) on its own port and forwards plain HTTP to the origin; the clients connect to 127.0.0.1, so \
         no server name is sent (Sluice serves its `[default_certificate]`). wrk and the fixed-rate \
         generator open their connections, handshakes included, before they measure and keep them open, so \
         the figures are for TLS record processing, not handshakes. The idle connections of a TLS case are TLS \
         connections, each after its handshake and one request.\n"
    );
}

fn problems(md: &mut String, input: &ReportInput) {
    let mut lines = Vec::new();
    for o in input.outcomes {
        if let Some(reason) = &o.target.skipped {
            lines.push(format!("- {}: skipped: {}", o.target.label(), reason));
        }
        for note in &o.notes {
            lines.push(format!("- {}: {}", o.target.label(), note));
        }
        for (i, run) in o.runs.iter().enumerate() {
            match run {
                Err(e) => lines.push(format!(
                    "- {}, run {}: failed: {}",
                    o.target.label(),
                    i + 1,
                    first_lines(e, 6)
                )),
                Ok(m) => {
                    if m.other_cpu >= 0.1 {
                        lines.push(format!(
                            "- {}, run {}: the machine was busy: other processes used {:.2} cores while it was measured",
                            o.target.label(),
                            i + 1,
                            m.other_cpu
                        ));
                    }
                    if m.steal_cpu >= 0.1 {
                        lines.push(format!(
                            "- {}, run {}: the hypervisor stole {:.2} cores while it was measured (the host is shared)",
                            o.target.label(),
                            i + 1,
                            m.steal_cpu
                        ));
                    }
                    if let Some(p) = &m.wrk_problems {
                        lines.push(format!("- {}, run {}: wrk: {}", o.target.label(), i + 1, p));
                    }
                    for l in &m.latency {
                        if let Some(p) = l.report.problems() {
                            lines.push(format!(
                                "- {}, run {}: at {} req/s: {} (of {})",
                                o.target.label(),
                                i + 1,
                                fmt_rate(l.rate as f64),
                                p,
                                l.report.total()
                            ));
                        }
                        if l.report.requests_per_sec < l.rate as f64 * 0.95 {
                            lines.push(format!(
                                "- {}, run {}: at {} req/s, only {} req/s were answered",
                                o.target.label(),
                                i + 1,
                                fmt_rate(l.rate as f64),
                                fmt_rate(l.report.requests_per_sec)
                            ));
                        }
                    }
                    for idle in &m.idle {
                        if let Some(note) = &idle.note {
                            lines.push(format!(
                                "- {}, run {}: {} idle connections: {}",
                                o.target.label(),
                                i + 1,
                                fmt_rate(idle.connections as f64),
                                note
                            ));
                        } else if idle.still_open < idle.connections {
                            lines.push(format!(
                                "- {}, run {}: of {} idle connections only {} were still open when memory was read",
                                o.target.label(),
                                i + 1,
                                fmt_rate(idle.connections as f64),
                                fmt_rate(idle.still_open as f64)
                            ));
                        }
                    }
                }
            }
        }
    }
    let _ = writeln!(md, "## Skipped cases and problems\n");
    if lines.is_empty() {
        let _ = writeln!(
            md,
            "None: every run of every case completed, with only 200 responses and every idle connection open.\n"
        );
    } else {
        for l in lines {
            let _ = writeln!(md, "{l}");
        }
        md.push('\n');
    }
}

fn configs(md: &mut String, input: &ReportInput) {
    let _ = writeln!(md, "## Configurations\n");
    let _ = writeln!(
        md,
        "Written by the runner into a scratch directory (`$WORK` below) for each run; Sluice's are checked \
         with `sluice check --config FILE` first.\n"
    );
    let mut block = |title: &str, lang: &str, text: &str| {
        let _ = writeln!(
            md,
            "<details><summary>{title}</summary>\n\n```{lang}\n{}\n```\n\n</details>\n",
            text.trim_end()
        );
    };
    block("origin (nginx)", "nginx", &input.origin_config);
    for o in input.outcomes {
        let lang = match o.target.proxy {
            Proxy::Nginx => "nginx",
            Proxy::Haproxy => "haproxy",
            Proxy::Caddy => "caddyfile",
            Proxy::Sluice => "toml",
            Proxy::Pingora => "sh",
        };
        let text = if o.target.variant == Variant::Routing {
            abbreviate_table(&o.config_text)
        } else {
            o.config_text.clone()
        };
        block(&o.target.label(), lang, &text);
    }
}

/// Shortens the 1,000 generated tenant lines of the routing config.
fn abbreviate_table(text: &str) -> String {
    let mut out = String::new();
    let mut skipped = 0;
    for line in text.lines() {
        if line.starts_with("tenant-") {
            skipped += 1;
            if skipped <= 3 {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if skipped > 3 {
        let _ = writeln!(
            out,
            "# ... {} more tenant-NNNN lines, cycling over cell-1..cell-4",
            skipped - 3
        );
    }
    out
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join(" / ")
}

/// `text` with every Markdown heading one level deeper and its top-level
/// title dropped, so it nests under a section of the report.
fn demote_headings(text: &str) -> String {
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.starts_with("# ") {
            continue;
        }
        if line.starts_with('#') {
            lines.push(format!("#{line}"));
        } else {
            lines.push(line.to_string());
        }
    }
    lines.join("\n").trim().to_string()
}

fn md_escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::{IdleMemory, LatencyRun};
    use crate::fixed_rate::LatencyReport;

    pub(crate) fn metrics(throughput: f64, p99: f64) -> RunMetrics {
        RunMetrics {
            throughput,
            wrk_problems: None,
            proxy_cpu: 1.0,
            other_cpu: 0.0,
            steal_cpu: 0.0,
            latency: vec![LatencyRun {
                rate: 10000,
                report: LatencyReport {
                    p50_ms: p99 / 4.0,
                    p99_ms: p99,
                    p999_ms: p99 * 2.0,
                    requests_per_sec: 10000.0,
                    status_counts: vec![(200, 40000)],
                    errors: vec![],
                },
            }],
            rss_idle_kib: 4096,
            rss_load_kib: 8192,
            idle: vec![IdleMemory {
                connections: 1000,
                rss_kib: Some(10240),
                still_open: 1000,
                note: None,
            }],
        }
    }

    pub(crate) fn outcome(
        proxy: Proxy,
        variant: Variant,
        runs: Vec<Result<RunMetrics, String>>,
    ) -> Outcome {
        Outcome {
            target: Target {
                proxy,
                variant,
                config: "/tmp/x".into(),
                program: "/bin/true".into(),
                skipped: None,
            },
            runs,
            config_text: String::new(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn ratios_pair_runs_and_skip_failed_ones() {
        let nginx = outcome(
            Proxy::Nginx,
            Variant::Plain,
            vec![
                Ok(metrics(100.0, 1.0)),
                Ok(metrics(200.0, 1.0)),
                Err("x".into()),
            ],
        );
        let sluice = outcome(
            Proxy::Sluice,
            Variant::Plain,
            vec![
                Ok(metrics(50.0, 2.0)),
                Ok(metrics(150.0, 3.0)),
                Ok(metrics(1.0, 1.0)),
            ],
        );
        let r = ratio(&sluice, &nginx, |m| Some(m.throughput)).unwrap();
        assert_eq!(r.count, 2);
        assert_eq!(r.min, 0.5);
        assert_eq!(r.max, 0.75);
        assert_eq!(r.median, 0.625);
    }

    #[test]
    fn tls_rows_compare_with_nginx_tls() {
        let outcomes = vec![
            outcome(Proxy::Nginx, Variant::Plain, vec![]),
            outcome(Proxy::Nginx, Variant::Tls, vec![]),
        ];
        let caddy_tls = outcome(Proxy::Caddy, Variant::Tls, vec![]);
        let sluice_plugins = outcome(Proxy::Sluice, Variant::Plugins, vec![]);
        assert_eq!(
            baseline(&outcomes, &caddy_tls).unwrap().target.variant,
            Variant::Tls
        );
        assert_eq!(
            baseline(&outcomes, &sluice_plugins).unwrap().target.variant,
            Variant::Plain
        );
    }

    #[test]
    fn markdown_has_the_tables_and_the_skip_line() {
        let mut tls = outcome(Proxy::Sluice, Variant::Tls, vec![]);
        tls.target.skipped = Some("sluice check rejected the config: unknown field `tls`".into());
        let outcomes = vec![
            outcome(Proxy::Nginx, Variant::Plain, vec![Ok(metrics(100.0, 1.0))]),
            outcome(Proxy::Sluice, Variant::Plain, vec![Ok(metrics(80.0, 2.0))]),
            tls,
        ];
        let input = ReportInput {
            outcomes: &outcomes,
            machine: vec!["- **CPU**: test".into()],
            runs: 1,
            seconds: 4,
            connections: 64,
            rates: &[10000],
            idle: &[1000],
            origin_config: "events {}".into(),
            elapsed_secs: 60.0,
            waited_secs: 0.0,
            total_secs: None,
            command: "./scripts/loadbench.sh".into(),
            cpus: ("1".into(), "0".into()),
            optimisations: Some("# Optimisations\n\n## mimalloc\n\nA fifth less CPU.\n".into()),
            scaling: Err("not measured in this test"),
        };
        let md = markdown(&input);
        assert!(
            md.contains("## What was optimised\n")
                && md.contains("\n### mimalloc\n\nA fifth less CPU."),
            "{md}"
        );
        assert!(!md.contains("# Optimisations"), "{md}");
        assert!(
            md.contains("| Sluice | plain proxy | 80 | 0.80× | 1.00 | 0.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| Sluice | TLS termination | skipped: sluice check rejected the config")
        );
        assert!(
            md.contains("| Sluice | plain proxy | 10,000 | 0.500 | 2.00 | 4.00 | 2.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| nginx | plain proxy | 4.0 | 8.0 | 10.0 |"),
            "{md}"
        );
        assert!(
            md.contains("Against nginx's: throughput 0.80×, p99 2.00×"),
            "{md}"
        );
        let chart = chart_data(&input);
        assert_eq!(chart.rows.len(), 2);
        assert_eq!(chart.rows[1].label, "Sluice");
        assert!(chart.footer.contains("Sluice TLS"), "{}", chart.footer);
    }

    #[test]
    fn summary_compares_tls_with_nginx_tls_and_plugins_with_plain_sluice() {
        let outcomes = vec![
            outcome(Proxy::Nginx, Variant::Plain, vec![Ok(metrics(400.0, 1.0))]),
            outcome(Proxy::Nginx, Variant::Tls, vec![Ok(metrics(200.0, 1.0))]),
            outcome(Proxy::Caddy, Variant::Plain, vec![Ok(metrics(50.0, 1.0))]),
            outcome(Proxy::Sluice, Variant::Plain, vec![Ok(metrics(100.0, 2.0))]),
            outcome(
                Proxy::Sluice,
                Variant::Plugins,
                vec![Ok(metrics(75.0, 2.0))],
            ),
            outcome(Proxy::Sluice, Variant::Tls, vec![Ok(metrics(100.0, 2.0))]),
        ];
        let mut md = String::new();
        summary_lines(
            &mut md,
            &ReportInput {
                outcomes: &outcomes,
                machine: vec![],
                runs: 1,
                seconds: 4,
                connections: 64,
                rates: &[10000],
                idle: &[1000],
                origin_config: String::new(),
                elapsed_secs: 0.0,
                waited_secs: 0.0,
                total_secs: None,
                command: String::new(),
                cpus: ("1".into(), "0".into()),
                optimisations: None,
                scaling: Err("not measured in this test"),
            },
        );
        let tls = md.lines().find(|l| l.contains("TLS termination")).unwrap();
        assert!(
            tls.contains("Against nginx's with TLS: throughput 0.50×"),
            "{tls}"
        );
        let plain = md.lines().find(|l| l.contains("(plain proxy)")).unwrap();
        assert!(plain.contains("throughput 0.25×"), "{plain}");
        assert!(
            plain.contains("against Caddy's throughput 2.00×"),
            "{plain}"
        );
        let plugins = md.lines().find(|l| l.contains("2-plugin chain")).unwrap();
        assert!(
            plugins.contains("against the plain proxy in the same run: 25%"),
            "{plugins}"
        );
    }

    #[test]
    fn routing_table_is_abbreviated() {
        let text = "a = 1\ntenant-0000 = \"cell-1\"\ntenant-0001 = \"cell-2\"\ntenant-0002 = \"cell-3\"\ntenant-0003 = \"cell-4\"\n";
        let short = abbreviate_table(text);
        assert!(short.contains("tenant-0002"));
        assert!(!short.contains("tenant-0003"));
        assert!(short.contains("1 more tenant-NNNN lines"));
    }
}
