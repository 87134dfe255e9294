//! `trafficbench`: measures Sluice's upstream protocols and traffic
//! control side by side, each case against its own baseline in the same
//! run, and writes `docs/benchmarks-traffic.md`.
//!
//! - **h2c upstream**: wrk's 64 connections through Sluice to one nginx
//!   origin, over HTTP/1.1 (a connection per request in flight) and over
//!   h2c (the same requests as streams on 4 connections).
//! - **Coalescing**: 100 clients asking for one resource that takes 50 ms
//!   to answer, with the route's `coalesce` off and on; what counts is how
//!   many requests reach the upstream per request answered.
//! - **Least request**: 32 clients through a placement of three endpoints,
//!   one ten times slower than the others, each serving four requests at a
//!   time; `round_robin` against `least_request`.
//!
//! Sluice runs with one worker on CPU 1; the load, the origin and the
//! in-process upstreams on CPU 0 (`scripts/trafficbench.sh` pins this
//! process there). Every process it starts is stopped when it ends.

mod load;
mod upstream;

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use upstream::Upstream;

const USAGE: &str = "\
trafficbench: Sluice's upstream protocols and traffic control, each against its baseline

USAGE: trafficbench [OPTIONS]

OPTIONS:
  --runs N        runs of every case, interleaved (default 3)
  --seconds N     length of each measured run (default 3)
  --sluice PATH   the sluice binary (default target/release/sluice)
  --out FILE      the report (default docs/benchmarks-traffic.md)
  --only LIST     measure only these cases: h2c, coalescing, least-request
  --command TEXT  the command named in the report
  -h, --help      this text
";

struct Options {
    runs: usize,
    seconds: u64,
    sluice: PathBuf,
    out: PathBuf,
    only: Option<Vec<String>>,
    command: String,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn parse_options() -> Result<Options> {
    let root = repo_root();
    let mut options = Options {
        runs: 3,
        seconds: 3,
        sluice: root.join("target/release/sluice"),
        out: root.join("docs/benchmarks-traffic.md"),
        only: None,
        command: format!(
            "trafficbench {}",
            std::env::args().skip(1).collect::<Vec<_>>().join(" ")
        )
        .trim()
        .to_string(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => options.runs = value()?.parse()?,
            "--seconds" => options.seconds = value()?.parse()?,
            "--sluice" => options.sluice = value()?.into(),
            "--out" => options.out = value()?.into(),
            "--only" => {
                options.only = Some(value()?.split(',').map(|s| s.trim().to_string()).collect())
            }
            "--command" => options.command = value()?,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    if options.runs == 0 || options.seconds == 0 {
        bail!("--runs and --seconds must be at least 1");
    }
    Ok(options)
}

impl Options {
    fn wants(&self, case: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|c| c == case))
    }
}

fn say(message: impl AsRef<str>) {
    eprintln!("==> {}", message.as_ref());
}

/// A process this run started; killed when dropped.
struct Running {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Running {
    /// Starts `program` with `args` on `cpu`, its output in `log`.
    fn start(
        name: &str,
        cpu: &str,
        program: &Path,
        args: &[&str],
        log: PathBuf,
    ) -> Result<Running> {
        let output = std::fs::File::create(&log)?;
        let child = Command::new("taskset")
            .args(["-c", cpu])
            .arg(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(output.try_clone()?)
            .stderr(output)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Running {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Waits until `address` accepts connections.
    fn wait_accepting(&mut self, address: SocketAddr) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(address).is_err() {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status}:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("{} does not accept connections on {address}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The scratch directory of one run.
struct Work(PathBuf);

impl Work {
    fn new() -> Result<Work> {
        let dir = std::env::temp_dir().join(format!("sluice-trafficbench-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tmp"))?;
        Ok(Work(dir))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts Sluice on CPU 1 with `body` below a one-worker `[server]` and a
/// listener on a free port; returns it with its address.
fn start_sluice(
    options: &Options,
    work: &Work,
    name: &str,
    body: &str,
) -> Result<(Running, SocketAddr)> {
    let address = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let config = format!(
        "[server]\nthreads = 1\naccess_log = false\ngrace_period = \"1s\"\n\
         upgrade_socket = \"{upgrade}\"\n\n[[listeners]]\naddress = \"{address}\"\nh2c = false\n\n{body}",
        upgrade = work.path(&format!("{name}.sock")).display(),
    );
    let path = work.path(&format!("{name}.toml"));
    std::fs::write(&path, config)?;
    let state = work.path(&format!("{name}-state"));
    let mut sluice = Running::start(
        &format!("sluice ({name})"),
        "1",
        &options.sluice,
        &[
            "run",
            "--config",
            &path.display().to_string(),
            "--state-dir",
            &state.display().to_string(),
        ],
        work.path(&format!("{name}.log")),
    )?;
    sluice.wait_accepting(address)?;
    Ok((sluice, address))
}

/// The median of `values`.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Finds `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A case's outcome for the report: its table, and its target's row.
struct Outcome {
    title: &'static str,
    method: String,
    table: String,
    target: (String, String, bool),
}

/// h2c against HTTP/1.1 to one nginx origin, 64 connections of wrk.
fn h2c_case(options: &Options, work: &Work) -> Result<Outcome> {
    let (nginx, wrk) = (
        which("nginx").ok_or_else(|| anyhow!("nginx is not installed"))?,
        which("wrk").ok_or_else(|| anyhow!("wrk is not installed"))?,
    );
    let (h1_port, h2c_port) = (free_port()?, free_port()?);
    let temp = work.path("tmp").display().to_string();
    let origin = format!(
        "worker_processes 1;\ndaemon off;\npid {work}/origin.pid;\nerror_log {work}/origin-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 300s;\n\
           client_body_temp_path {temp}/body;\n  proxy_temp_path {temp}/proxy;\n  fastcgi_temp_path {temp}/fastcgi;\n\
           uwsgi_temp_path {temp}/uwsgi;\n  scgi_temp_path {temp}/scgi;\n\
           server {{ listen 127.0.0.1:{h1_port}; location / {{ return 200 \"hello from the origin\\n\"; }} }}\n\
           server {{ listen 127.0.0.1:{h2c_port} http2; location / {{ return 200 \"hello from the origin\\n\"; }} }}\n}}\n",
        work = work.0.display(),
    );
    let origin_path = work.path("origin.conf");
    std::fs::write(&origin_path, origin)?;
    let mut origin = Running::start(
        "nginx origin",
        "0",
        &nginx,
        &[
            "-c",
            &origin_path.display().to_string(),
            "-p",
            &work.0.display().to_string(),
        ],
        work.path("origin.log"),
    )?;
    origin.wait_accepting(SocketAddr::from(([127, 0, 0, 1], h1_port)))?;
    origin.wait_accepting(SocketAddr::from(([127, 0, 0, 1], h2c_port)))?;
    let placements = [
        (
            "http1",
            format!("[placements.origin]\nendpoints = [{{ address = \"127.0.0.1:{h1_port}\" }}]\n"),
        ),
        (
            "h2c",
            format!(
                "[placements.origin]\nprotocol = \"h2c\"\nendpoints = [{{ address = \"127.0.0.1:{h2c_port}\" }}]\n\
                 pool = {{ h2_connections = 4 }}\n"
            ),
        ),
    ];
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for run in 0..options.runs {
        for (i, (name, placement)) in placements.iter().enumerate() {
            let body = format!("{placement}\n[[routes]]\nname = \"all\"\nplacement = \"origin\"\nexplain = false\n");
            let (_sluice, address) = start_sluice(options, work, name, &body)?;
            let url = format!("http://{address}/");
            // A second of warm-up opens the connections and pools.
            wrk_rate(&wrk, &url, 1)?;
            let rate = wrk_rate(&wrk, &url, options.seconds)?;
            say(format!("h2c case, run {}: {name} {rate:.0} req/s", run + 1));
            rates[i].push(rate);
        }
    }
    let runs = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let h1 = median(&mut rates[0].clone());
    let h2c = median(&mut rates[1].clone());
    let ratio = h2c / h1;
    let mut table = String::from("| upstream | req/s, median | runs |\n| --- | ---: | --- |\n");
    let _ = writeln!(
        table,
        "| HTTP/1.1, a connection per request in flight | {h1:.0} | {} |",
        runs(&rates[0])
    );
    let _ = writeln!(
        table,
        "| h2c, 4 connections | {h2c:.0} | {} |",
        runs(&rates[1])
    );
    let _ = writeln!(table, "| h2c ÷ HTTP/1.1 | {ratio:.2} | |");
    drop(origin);
    Ok(Outcome {
        title: "h2c upstream against HTTP/1.1",
        method: format!(
            "`wrk -t2 -c64` for {s} s (after 1 s of warm-up) through Sluice (one worker, CPU 1) to \
             one nginx worker on CPU 0, with wrk; the placement speaks HTTP/1.1 to its port or h2c \
             with `h2_connections = 4` to a second, `http2` one. Runs alternate.",
            s = options.seconds
        ),
        table,
        target: (
            "h2c upstream, 64 client requests over 4 connections: ≥ 0.85× HTTP/1.1's throughput"
                .into(),
            format!("{ratio:.2}×"),
            ratio >= 0.85,
        ),
    })
}

/// wrk's requests per second against `url`, two threads, 64 connections.
fn wrk_rate(wrk: &Path, url: &str, seconds: u64) -> Result<f64> {
    let output = Command::new("taskset")
        .args(["-c", "0"])
        .arg(wrk)
        .args(["-t2", "-c64", &format!("-d{seconds}s"), url])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw errors:\n{text}");
    }
    text.lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk's output:\n{text}"))
}

/// 100 clients for one 50 ms resource, coalescing off and on.
async fn coalescing_case(options: &Options, work: &Work) -> Result<Outcome> {
    let upstream = Upstream::start(Duration::from_millis(50), 10_000).await?;
    let mut per_request: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut answered: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for run in 0..options.runs {
        for (i, coalesce) in ["", "coalesce = { wait = \"5s\" }\n"].iter().enumerate() {
            let name = if coalesce.is_empty() {
                "coalesce-off"
            } else {
                "coalesce-on"
            };
            let body = format!(
                "[placements.slow]\nendpoints = [{{ address = \"{}\" }}]\n\n\
                 [[routes]]\nname = \"slow\"\nplacement = \"slow\"\nexplain = false\n{coalesce}",
                upstream.address
            );
            let (_sluice, address) = start_sluice(options, work, name, &body)?;
            let before = upstream.received();
            let load = load::closed_loop(
                address,
                "/resource",
                100,
                Duration::from_secs(options.seconds),
            )
            .await;
            let reached = upstream.received() - before;
            if load.failed > 0 {
                bail!("{name}: {} requests failed", load.failed);
            }
            say(format!(
                "coalescing case, run {}: {name} {} answered, {reached} upstream",
                run + 1,
                load.answered
            ));
            per_request[i].push(reached as f64 / load.answered as f64);
            answered[i].push(load.throughput());
        }
    }
    let off = median(&mut per_request[0].clone());
    let on = median(&mut per_request[1].clone());
    let fall = off / on;
    let mut table =
        String::from("| coalescing | upstream requests per answered request | answered req/s |\n| --- | ---: | ---: |\n");
    let _ = writeln!(
        table,
        "| off | {off:.3} | {:.0} |",
        median(&mut answered[0])
    );
    let _ = writeln!(table, "| on | {on:.4} | {:.0} |", median(&mut answered[1]));
    let _ = writeln!(table, "| off ÷ on | {fall:.0}× | |");
    Ok(Outcome {
        title: "Request coalescing",
        method: format!(
            "100 keep-alive clients, each asking for `/resource` again as soon as it is answered, \
             for {s} s through Sluice to an upstream that answers after 50 ms; the route's \
             `coalesce` off, then on. Medians of {runs} runs each.",
            s = options.seconds,
            runs = options.runs
        ),
        table,
        target: (
            "Coalescing, 100 clients, one 50 ms resource: upstream requests fall ≥ 50×".into(),
            format!("{fall:.0}×"),
            fall >= 50.0,
        ),
    })
}

/// 32 clients over three endpoints, one ten times slower, by policy.
async fn least_request_case(options: &Options, work: &Work) -> Result<Outcome> {
    let endpoints = [
        Upstream::start(Duration::from_millis(1), 4).await?,
        Upstream::start(Duration::from_millis(1), 4).await?,
        Upstream::start(Duration::from_millis(10), 4).await?,
    ];
    let written: Vec<String> = endpoints
        .iter()
        .map(|e| format!("{{ address = \"{}\" }}", e.address))
        .collect();
    let policies = ["round_robin", "least_request"];
    let mut p99: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut p50: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut rate: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut slow_share: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for run in 0..options.runs {
        for (i, policy) in policies.iter().enumerate() {
            let body = format!(
                "[placements.three]\nbalance = \"{policy}\"\nendpoints = [{}]\n\n\
                 [[routes]]\nname = \"three\"\nplacement = \"three\"\nexplain = false\n",
                written.join(", ")
            );
            let (_sluice, address) = start_sluice(options, work, policy, &body)?;
            let before: Vec<u64> = endpoints.iter().map(Upstream::received).collect();
            let load =
                load::closed_loop(address, "/", 32, Duration::from_secs(options.seconds)).await;
            if load.failed > 0 {
                bail!("{policy}: {} requests failed", load.failed);
            }
            let reached: Vec<u64> = endpoints
                .iter()
                .zip(&before)
                .map(|(e, b)| e.received() - b)
                .collect();
            let share = reached[2] as f64 / reached.iter().sum::<u64>().max(1) as f64;
            say(format!(
                "least-request case, run {}: {policy} p99 {:.1} ms, {:.0} req/s, slow endpoint {:.1}%",
                run + 1,
                load.quantile_ms(0.99),
                load.throughput(),
                share * 100.0
            ));
            p99[i].push(load.quantile_ms(0.99));
            p50[i].push(load.quantile_ms(0.5));
            rate[i].push(load.throughput());
            slow_share[i].push(share * 100.0);
        }
    }
    let mut table = String::from(
        "| balance | p50 | p99 | req/s | the slow endpoint's share |\n| --- | ---: | ---: | ---: | ---: |\n",
    );
    let mut p99_medians = [0.0; 2];
    for (i, policy) in policies.iter().enumerate() {
        p99_medians[i] = median(&mut p99[i]);
        let _ = writeln!(
            table,
            "| `{policy}` | {:.1} ms | {:.1} ms | {:.0} | {:.1}% |",
            median(&mut p50[i]),
            p99_medians[i],
            median(&mut rate[i]),
            median(&mut slow_share[i])
        );
    }
    let gain = p99_medians[0] / p99_medians[1];
    Ok(Outcome {
        title: "Least-request balancing",
        method: format!(
            "32 keep-alive clients, each sending its next request as soon as it is answered, for \
             {s} s through a placement of three upstreams that serve four requests at a time (the \
             rest queue), in 1 ms, 1 ms and 10 ms; `round_robin`, then `least_request`. Medians of \
             {runs} runs each.",
            s = options.seconds,
            runs = options.runs
        ),
        table,
        target: (
            "Least request, one of three endpoints 10× slower: p99 better than round robin's"
                .into(),
            format!(
                "{:.1} ms against {:.1} ms ({gain:.1}× better)",
                p99_medians[1], p99_medians[0]
            ),
            gain > 1.0,
        ),
    })
}

fn report(options: &Options, outcomes: &[Outcome], skipped: &[(String, String)]) -> String {
    // The machine's CPUs, not the one this process is pinned to.
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let nproc = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_string(), |(_, v)| v.trim().to_string());
    let revision = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut out = String::from(
        "# Upstream protocols and traffic control: benchmarks\n\n\
         Written by `./scripts/trafficbench.sh` (`benches/traffic`); each case is measured \
         against its own baseline in the same run, because this machine is noisy.\n\n",
    );
    let _ = writeln!(out, "- **Command**: `{}`", options.command);
    let _ = writeln!(out, "- **Machine**: {nproc} CPUs, {cpu}");
    let _ = writeln!(out, "- **Sluice**: {revision}\n");
    out.push_str("## Targets\n\n| target | measured | |\n| --- | --- | --- |\n");
    for outcome in outcomes {
        let (target, measured, met) = &outcome.target;
        let _ = writeln!(
            out,
            "| {target} | {measured} | {} |",
            if *met { "met" } else { "**missed**" }
        );
    }
    for (case, why) in skipped {
        let _ = writeln!(out, "| {case} | not measured: {why} | |");
    }
    for outcome in outcomes {
        let _ = write!(
            out,
            "\n## {}\n\n{}\n\n{}",
            outcome.title, outcome.method, outcome.table
        );
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("trafficbench: error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let options = parse_options()?;
    if !options.sluice.is_file() {
        bail!(
            "no sluice binary at {}; build it with cargo build --release",
            options.sluice.display()
        );
    }
    let work = Work::new()?;
    let mut outcomes = Vec::new();
    let mut skipped = Vec::new();
    if options.wants("h2c") {
        match h2c_case(&options, &work) {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => skipped.push(("h2c upstream".to_string(), format!("{e:#}"))),
        }
    }
    if options.wants("coalescing") {
        outcomes.push(coalescing_case(&options, &work).await?);
    }
    if options.wants("least-request") {
        outcomes.push(least_request_case(&options, &work).await?);
    }
    let text = report(&options, &outcomes, &skipped);
    std::fs::write(&options.out, &text)
        .with_context(|| format!("writing {}", options.out.display()))?;
    say(format!("wrote {}", options.out.display()));
    print!("{text}");
    Ok(())
}
