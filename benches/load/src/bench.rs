//! One measurement of one proxy configuration: start it, load it, read its
//! memory, stop it.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::configs::{Proxy, Variant, PROXY_PORT, REQUEST_PATH, TLS_PORT};
use crate::fixed_rate::{self, FixedRate, LatencyReport};
use crate::idle::IdleConnections;
use crate::procs::{self, ProcGuard};
use crate::wrk;

/// How long after a proxy first answers its idle memory is read.
const IDLE_AFTER_READY: Duration = Duration::from_secs(2);

/// What the runner was asked to measure, and how hard.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seconds of each measured wrk and fixed-rate run.
    pub seconds: u64,
    /// wrk and fixed-rate connections.
    pub connections: u32,
    /// Idle keep-alive connection counts whose memory is read, ascending.
    pub idle: Vec<usize>,
    /// CPUs (a `taskset -c` list) for the proxy under test.
    pub proxy_cpus: String,
    /// CPUs for the load generators and the origin.
    pub load_cpus: String,
    /// The open-file limit the proxies inherit.
    pub nofile: u64,
}

/// A proxy in one configuration, ready to be started.
#[derive(Debug, Clone)]
pub struct Target {
    /// Which proxy.
    pub proxy: Proxy,
    /// Which configuration.
    pub variant: Variant,
    /// The config file written for it.
    pub config: PathBuf,
    /// The program to run.
    pub program: PathBuf,
    /// Why it is not measured, when it is not.
    pub skipped: Option<String>,
}

impl Target {
    /// `Sluice (plain proxy)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.proxy.name(), self.variant.describe())
    }

    /// A short key for file names and `--only`: `sluice-plain`.
    pub fn key(&self) -> String {
        format!(
            "{}-{}",
            self.proxy.name().to_ascii_lowercase(),
            self.variant.key()
        )
    }

    /// The most client connections the proxy's config admits at once, when
    /// it sets a limit below what is asked for.
    pub fn max_connections(&self, nofile: u64) -> Option<u64> {
        (self.proxy == Proxy::Haproxy).then(|| crate::configs::haproxy_maxconn(nofile))
    }

    /// Whether load goes over TLS.
    pub fn tls(&self) -> bool {
        self.variant == Variant::Tls
    }

    /// The address load is sent to.
    pub fn addr(&self) -> SocketAddr {
        let port = if self.tls() { TLS_PORT } else { PROXY_PORT };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The URL load is sent to.
    pub fn url(&self) -> String {
        let scheme = if self.tls() { "https" } else { "http" };
        format!("{scheme}://{}{REQUEST_PATH}", self.addr())
    }

    /// The command that runs the proxy in the foreground.
    pub fn command(&self, work: &Path) -> Command {
        let mut cmd = Command::new(&self.program);
        match self.proxy {
            Proxy::Nginx => {
                cmd.arg("-c")
                    .arg(&self.config)
                    .arg("-p")
                    .arg(work)
                    .arg("-e")
                    .arg(work.join("nginx-startup.log"));
            }
            Proxy::Haproxy => {
                cmd.arg("-db").arg("-f").arg(&self.config);
            }
            Proxy::Caddy => {
                cmd.args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(&self.config)
                    .env("GOMAXPROCS", "1")
                    .env("HOME", work)
                    .env("XDG_DATA_HOME", work.join("caddy-data"))
                    .env("XDG_CONFIG_HOME", work.join("caddy-config"));
            }
            Proxy::Pingora => {
                cmd.args(crate::configs::pingora_floor_args());
            }
            Proxy::Sluice => {
                cmd.arg("run")
                    .arg("--config")
                    .arg(&self.config)
                    .arg("--state-dir")
                    .arg(work.join(format!("state-{}", self.variant.key())))
                    .env("RUST_LOG", "warn");
            }
        }
        cmd
    }
}

/// A latency run at one fixed rate.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    /// The rate asked for, in requests per second.
    pub rate: u32,
    /// What the fixed-rate generator measured.
    pub report: LatencyReport,
}

/// The memory held with some idle keep-alive connections open.
#[derive(Debug, Clone)]
pub struct IdleMemory {
    /// Connections asked for.
    pub connections: usize,
    /// Resident memory of the proxy, KiB; `None` when they could not all
    /// be opened.
    pub rss_kib: Option<u64>,
    /// Connections still open when the memory was read.
    pub still_open: usize,
    /// Why the memory was not read, when it was not.
    pub note: Option<String>,
}

/// Everything measured for one target in one run.
#[derive(Debug, Clone)]
pub struct RunMetrics {
    /// Successful requests per second under closed-loop load (wrk).
    pub throughput: f64,
    /// What went wrong during the wrk run (socket errors, non-2xx).
    pub wrk_problems: Option<String>,
    /// CPU used by the proxy during the wrk run, in cores (1.0 = one core
    /// busy the whole time).
    pub proxy_cpu: f64,
    /// CPU used by processes that are not part of the benchmark, in cores:
    /// the larger of the averages over the wrk run and over the fixed-rate runs.
    /// Anything above a few hundredths competed with the measurement.
    pub other_cpu: f64,
    /// CPU stolen by the hypervisor, in cores, taken the same way.
    pub steal_cpu: f64,
    /// The fixed-rate latency runs.
    pub latency: Vec<LatencyRun>,
    /// Resident memory after start and one request, KiB.
    pub rss_idle_kib: u64,
    /// Largest resident memory seen during the wrk run, KiB.
    pub rss_load_kib: u64,
    /// Resident memory with idle keep-alive connections open.
    pub idle: Vec<IdleMemory>,
}

/// Everything a measurement needs besides the target.
pub struct Bench<'a> {
    /// Scratch directory for logs.
    pub work: &'a Path,
    /// Load and CPU settings.
    pub settings: &'a Settings,
    /// The wrk binary.
    pub wrk: &'a Path,
    /// TLS client settings that trust the run's certificate.
    pub tls_client: &'a Arc<rustls::ClientConfig>,
    /// The origin's process id, whose CPU time is ours, not other load.
    pub origin_pid: u32,
}

/// CPU time used by the whole machine, and by the processes of the
/// benchmark, at one moment; two of them tell how much other work competed.
struct CpuSnapshot {
    system: procs::SystemCpu,
    ours: f64,
}

impl CpuSnapshot {
    fn take(ctx: &Bench, proxy_pid: u32) -> CpuSnapshot {
        CpuSnapshot {
            system: procs::system_cpu(),
            ours: procs::tree_cpu_seconds(proxy_pid)
                + procs::tree_cpu_seconds(ctx.origin_pid)
                + procs::own_cpu_seconds(),
        }
    }

    /// Cores' worth of CPU used by processes outside the benchmark since
    /// `earlier`, and stolen by the hypervisor.
    fn others_since(&self, earlier: &CpuSnapshot, seconds: f64) -> (f64, f64) {
        let seconds = seconds.max(1e-3);
        let others =
            (self.system.processes - earlier.system.processes) - (self.ours - earlier.ours);
        let steal = self.system.steal - earlier.system.steal;
        ((others / seconds).max(0.0), (steal / seconds).max(0.0))
    }
}

/// Waits, up to `max`, until processes outside the benchmark have used
/// less than a fifth of a core for half a second (two quarter-second
/// windows in a row); returns what they used in the last window.
pub fn wait_for_quiet(ctx: &Bench, max: Duration) -> Result<f64> {
    let deadline = Instant::now() + max;
    let mut quiet_windows = 0;
    loop {
        let before = CpuSnapshot::take(ctx, ctx.origin_pid);
        let t = Instant::now();
        crate::sleep_checked(Duration::from_millis(250))?;
        let (busy, _) =
            CpuSnapshot::take(ctx, ctx.origin_pid).others_since(&before, t.elapsed().as_secs_f64());
        quiet_windows = if busy < 0.2 { quiet_windows + 1 } else { 0 };
        if quiet_windows >= 2 || Instant::now() >= deadline {
            return Ok(busy);
        }
    }
}

/// Starts `target`, measures it once (its latency at each of `rates`),
/// stops it.
pub fn measure(ctx: &Bench, target: &Target, run: usize, rates: &[u32]) -> Result<RunMetrics> {
    let log = ctx.work.join(format!("{}-run{run}.log", target.key()));
    let mut guard = ProcGuard::spawn(
        &target.proxy.name().to_ascii_lowercase(),
        &ctx.settings.proxy_cpus,
        &mut target.command(ctx.work),
        &log,
    )?;
    let addr = target.addr();
    guard.wait_ready(addr, REQUEST_PATH, target.tls(), Duration::from_secs(20))?;
    if target.tls() {
        // The readiness probe only connected; check real requests: two, on
        // one connection.
        let report = fixed_rate::run(&FixedRate {
            connections: 1,
            duration: Duration::from_millis(100),
            ..fixed_rate_spec(ctx, target, 20)
        })
        .with_context(|| format!("first HTTPS request to {}", target.url()))?;
        if report.ok_responses() == 0 {
            bail!(
                "no 200 over HTTPS from {}: {}",
                target.label(),
                report.problems().unwrap_or_default()
            );
        }
    }
    let pid = guard.pid();
    // Idle means settled: a proxy may still be finishing its start-up
    // (Sluice hands its start-up code back to the kernel a second after
    // its services start).
    thread::sleep(IDLE_AFTER_READY);
    let rss_idle_kib = procs::tree_rss_kib(pid);

    // Warm-up: fills connection pools and warm plugin instances.
    wrk_run(ctx, target, 1, &log, |_| {})?;
    guard.check_alive()?;

    let mut rss_load_kib = 0;
    let cpu_before = procs::tree_cpu_seconds(pid);
    let machine_before = CpuSnapshot::take(ctx, pid);
    let started = Instant::now();
    let report = wrk_run(ctx, target, ctx.settings.seconds, &log, |_| {
        rss_load_kib = rss_load_kib.max(procs::tree_rss_kib(pid));
    })?;
    let wall = started.elapsed().as_secs_f64();
    let proxy_cpu = (procs::tree_cpu_seconds(pid) - cpu_before) / wall;
    let (other_cpu, steal_cpu) = CpuSnapshot::take(ctx, pid).others_since(&machine_before, wall);
    guard.check_alive()?;
    let mut wrk_problems = Vec::new();
    if report.socket_errors > 0 {
        wrk_problems.push(format!("{} socket errors", report.socket_errors));
    }
    if report.non_2xx > 0 {
        wrk_problems.push(format!(
            "{} non-2xx/3xx of {}",
            report.non_2xx, report.requests
        ));
    }

    let mut latency = Vec::new();
    let latency_before = CpuSnapshot::take(ctx, pid);
    let latency_started = Instant::now();
    for &rate in rates {
        let report = fixed_rate::run(&fixed_rate_spec(ctx, target, rate))
            .with_context(|| format!("fixed rate of {rate} req/s"))?;
        latency.push(LatencyRun { rate, report });
        guard.check_alive()?;
    }
    let (latency_other, latency_steal) = CpuSnapshot::take(ctx, pid)
        .others_since(&latency_before, latency_started.elapsed().as_secs_f64());
    let other_cpu = other_cpu.max(latency_other);
    let steal_cpu = steal_cpu.max(latency_steal);

    let mut idle = Vec::new();
    // The memory idle connections hold hardly moves from run to run: when
    // every run measured it, the three runs of each proxy were within 1%
    // of each other, Caddy's (garbage-collected) within 10%. The first run
    // measures it; later ones save the time.
    if run == 1 {
        let mut conns = IdleConnections::default();
        for &n in &ctx.settings.idle {
            if let Some(limit) = target.max_connections(ctx.settings.nofile) {
                if n as u64 > limit {
                    idle.push(IdleMemory {
                        connections: n,
                        rss_kib: None,
                        still_open: 0,
                        note: Some(format!(
                            "not measured: with the open-file limit of {} HAProxy takes at most maxconn {limit} \
                             (it reserves two descriptors per connection); raise `ulimit -Hn` (root) to measure it",
                            ctx.settings.nofile
                        )),
                    });
                    continue;
                }
            }
            let tls = target.tls().then_some(ctx.tls_client);
            if let Err(e) = conns.grow_to(addr, tls, REQUEST_PATH, n) {
                idle.push(IdleMemory {
                    connections: n,
                    rss_kib: None,
                    still_open: conns.count_open(),
                    note: Some(format!("failed after {} connections: {e:#}", conns.len())),
                });
                break;
            }
            crate::sleep_checked(Duration::from_millis(500))?;
            idle.push(IdleMemory {
                connections: n,
                rss_kib: Some(procs::tree_rss_kib(pid)),
                still_open: conns.count_open(),
                note: None,
            });
        }
        conns.close();
    }
    guard.check_alive()?;
    guard.stop();
    Ok(RunMetrics {
        throughput: report.good_per_sec(),
        wrk_problems: (!wrk_problems.is_empty()).then(|| wrk_problems.join(", ")),
        proxy_cpu,
        other_cpu,
        steal_cpu,
        latency,
        rss_idle_kib,
        rss_load_kib,
        idle,
    })
}

fn wrk_run(
    ctx: &Bench,
    target: &Target,
    seconds: u64,
    log: &Path,
    on_tick: impl FnMut(Duration),
) -> Result<wrk::WrkReport> {
    let load = WrkLoad {
        threads: 1,
        cpus: &ctx.settings.load_cpus,
        url: target.url(),
    };
    run_wrk(ctx, &load, seconds, log, on_tick)
}

/// How a wrk run loads a proxy.
pub struct WrkLoad<'a> {
    /// wrk's threads.
    pub threads: u32,
    /// The CPUs wrk runs on.
    pub cpus: &'a str,
    /// The URL it requests.
    pub url: String,
}

/// Runs wrk as `load` says for `seconds`, over the settings' connections,
/// calling `on_tick` while it runs, and reads its report.
pub fn run_wrk(
    ctx: &Bench,
    load: &WrkLoad,
    seconds: u64,
    log: &Path,
    on_tick: impl FnMut(Duration),
) -> Result<wrk::WrkReport> {
    let mut cmd = Command::new(ctx.wrk);
    cmd.arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", ctx.settings.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("5s")
        .arg(&load.url);
    let out_path = log.with_extension(format!("wrk-{seconds}s.txt"));
    let out = procs::run_pinned(
        load.cpus,
        &mut cmd,
        Duration::from_secs(seconds + 20),
        log,
        &out_path,
        on_tick,
    )?;
    wrk::parse(&out).with_context(|| format!("parsing wrk output:\n{out}"))
}

/// A fixed-rate run of `rate` requests per second against `target`, as long
/// and over as many connections as the settings say.
fn fixed_rate_spec(ctx: &Bench, target: &Target, rate: u32) -> FixedRate {
    FixedRate {
        addr: target.addr(),
        path: REQUEST_PATH.to_string(),
        tls: target.tls().then(|| ctx.tls_client.clone()),
        rate,
        connections: ctx.settings.connections,
        duration: Duration::from_secs(ctx.settings.seconds),
    }
}

/// Writes `text` to `path`, creating its directory.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
