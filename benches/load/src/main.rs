//! `loadbench`: compares Sluice with nginx, HAProxy and Caddy on this one
//! machine, over loopback, and writes `docs/benchmarks.md` and
//! `docs/benchmarks.svg`.
//!
//! It starts an nginx origin, then each proxy in turn, pinned to its own
//! core, and measures maximum throughput (wrk), latency at fixed rates with
//! coordinated omission corrected (its own generator, `fixed_rate`), and
//! resident memory idle, under load and with many idle keep-alive
//! connections. `scripts/loadbench.sh`
//! installs what it needs, builds Sluice and the plugins, and runs it; see
//! `loadbench --help` for the options.

mod bench;
mod chart;
mod configs;
mod fixed_rate;
mod http1;
mod idle;
mod procs;
mod report;
mod scaling;
mod stats;
mod targets;
mod wrk;

use std::env;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use bench::{Settings, Target};
use configs::{Paths, Proxy, Variant};
use procs::ProcGuard;
use report::{Outcome, ReportInput};

const USAGE: &str = "\
loadbench: Sluice vs nginx, HAProxy and Caddy over loopback

USAGE: loadbench [OPTIONS]

OPTIONS:
  --runs N            runs of every case (default 3)
  --seconds N         length of each measured wrk and fixed-rate run (default 2)
  --connections N     wrk and fixed-rate connections (default 64)
  --rates LIST        fixed rates for the latency runs, req/s (default 2000,10000);
                      half of nginx's maximum is added once its first run measured it
  --idle LIST         idle keep-alive connection counts (default 1000,10000)
  --sluice PATH       the sluice binary (default target/release/sluice)
  --pingora-floor PATH  the bare Pingora proxy measured as Sluice's floor (default
                      target/release/pingora-floor; the case is skipped when missing)
  --wasm-dir DIR      where sluice_plugin_{headers,rewrite,api_key}.wasm are
                      (default target/loadbench/wasm32-wasip2/release, where
                      scripts/loadbench.sh builds them)
  --skip-plugins WHY  do not measure the plugin case, saying why (e.g. the plugins did not build)
  --out DIR           where benchmarks.md and benchmarks.svg go (default docs)
  --only LIST         measure only these cases, e.g. nginx-plain,sluice-plain
                      (keys: nginx|haproxy|caddy|sluice - plain|routing|plugins|tls,
                      pingora-plain; sluice-scaling: one worker against two);
                      haproxy-tls and caddy-tls are measured only when named here
  --work DIR          scratch directory (default: a new one under $TMPDIR); kept with --keep
  --keep              keep the scratch directory (configs and logs)
  --max-wait SECS     longest total wait for other work on the machine to stop before the
                      cases (default 180); after that they are measured anyway, and flagged
  --tls-peers         measure nginx, HAProxy and Caddy with TLS even when Sluice's TLS
                      config is rejected (by default the TLS case waits for Sluice)
  --note TEXT         a line for the report's notes (repeatable), e.g. how long installs took
  --command TEXT      the command named in the report (default: this one)
  --since EPOCH       when the whole job (installs, builds) started, Unix seconds, for the
                      total time in the report
  -h, --help          this text
";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Fails once SIGINT or SIGTERM has been received, so that the guards of
/// every running process are dropped on the way out.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, waking early to fail if the runner is interrupted.
pub fn sleep_checked(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupted()?;
        thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    Ok(())
}

/// The runner's options.
struct Options {
    runs: usize,
    seconds: u64,
    connections: u32,
    rates: Vec<u32>,
    idle: Vec<usize>,
    sluice: PathBuf,
    pingora_floor: PathBuf,
    wasm_dir: PathBuf,
    out: PathBuf,
    only: Option<Vec<String>>,
    work: Option<PathBuf>,
    keep: bool,
    tls_peers: bool,
    max_wait: u64,
    skip_plugins: Option<String>,
    notes: Vec<String>,
    command: String,
    since: Option<u64>,
}

impl Options {
    /// Whether the run measures what `key` names (a case's key, or
    /// `sluice-scaling`): named in `--only`, or `by_default` without it.
    fn wants(&self, key: &str, by_default: bool) -> bool {
        match &self.only {
            Some(only) => only.iter().any(|k| k == key),
            None => by_default,
        }
    }
}

fn repo_root() -> PathBuf {
    // benches/load -> the repository root.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn parse_list<T: std::str::FromStr>(text: &str) -> Result<Vec<T>> {
    text.split(',')
        .map(|s| s.trim().replace('_', "").parse::<T>())
        .collect::<Result<Vec<T>, _>>()
        .map_err(|_| anyhow!("not a list of numbers: {text:?}"))
}

fn parse_options() -> Result<Options> {
    let root = repo_root();
    let mut o = Options {
        runs: 3,
        seconds: 2,
        connections: 64,
        rates: vec![2000, 10000],
        idle: vec![1000, 10000],
        sluice: root.join("target/release/sluice"),
        pingora_floor: root.join("target/release/pingora-floor"),
        wasm_dir: root.join("target/loadbench/wasm32-wasip2/release"),
        out: root.join("docs"),
        only: None,
        work: None,
        keep: false,
        tls_peers: false,
        max_wait: 180,
        skip_plugins: None,
        notes: Vec::new(),
        command: format!(
            "loadbench {}",
            env::args().skip(1).collect::<Vec<_>>().join(" ")
        )
        .trim()
        .to_string(),
        since: None,
    };
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => o.runs = value()?.parse()?,
            "--seconds" => o.seconds = value()?.parse()?,
            "--connections" => o.connections = value()?.parse()?,
            "--rates" => o.rates = parse_list(&value()?)?,
            "--idle" => {
                o.idle = parse_list(&value()?)?;
                o.idle.sort_unstable();
            }
            "--sluice" => o.sluice = value()?.into(),
            "--pingora-floor" => o.pingora_floor = value()?.into(),
            "--wasm-dir" => o.wasm_dir = value()?.into(),
            "--out" => o.out = value()?.into(),
            "--only" => o.only = Some(value()?.split(',').map(|s| s.trim().to_string()).collect()),
            "--work" => o.work = Some(value()?.into()),
            "--keep" => o.keep = true,
            "--tls-peers" => o.tls_peers = true,
            "--max-wait" => o.max_wait = value()?.parse()?,
            "--skip-plugins" => o.skip_plugins = Some(value()?),
            "--note" => o.notes.push(value()?),
            "--command" => o.command = value()?,
            "--since" => o.since = Some(value()?.parse()?),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    if o.runs == 0 || o.seconds == 0 || o.connections == 0 {
        bail!("--runs, --seconds and --connections must be at least 1");
    }
    Ok(o)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("loadbench: error: {e:#}");
        std::process::exit(1);
    }
}

fn say(msg: impl AsRef<str>) {
    eprintln!("==> {}", msg.as_ref());
}

/// Finds a program on PATH (or in ~/.cargo/bin).
fn which(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.push("/usr/sbin".into());
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn require(name: &str) -> Result<PathBuf> {
    which(name).ok_or_else(|| {
        anyhow!(
            "{name} not found on PATH; ./scripts/loadbench.sh installs it (apt-get install {name})"
        )
    })
}

/// The version of `package` that the workspace's `Cargo.lock` pins.
fn locked_version(root: &Path, package: &str) -> Option<String> {
    let lock = fs::read_to_string(root.join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    lines.find(|line| *line == format!("name = \"{package}\""))?;
    let version = lines.next()?.strip_prefix("version = \"")?;
    Some(version.trim_end_matches('"').to_string())
}

/// The first line a command prints (on stdout or stderr), for versions.
fn version_of(program: &Path, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            text.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("unknown")
                .trim()
                .to_string()
        }
        Err(e) => format!("unknown ({e})"),
    }
}

fn machine_lines(nproc: usize, tools: &[(&str, String)]) -> Vec<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let os = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut lines = vec![
        format!("- **CPUs** (`nproc`): {nproc}"),
        format!("- **CPU model**: {model}"),
        format!("- **Memory**: {:.1} GiB", mem_kib / 1024.0 / 1024.0),
        format!("- **Kernel**: Linux {}", kernel.trim()),
        format!("- **OS**: {os}"),
    ];
    for (name, version) in tools {
        lines.push(format!("- **{name}**: {version}"));
    }
    lines
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "unknown".into())
}

fn git_revision(root: &Path) -> String {
    let rev = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let dirty = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    match rev {
        Some(rev) if dirty => format!("{rev} with uncommitted changes"),
        Some(rev) => rev,
        None => "unknown".into(),
    }
}

fn check_port_free(port: u16) -> Result<()> {
    TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .with_context(|| format!("127.0.0.1:{port} is in use; stop whatever listens there (a proxy left over from an earlier run?)"))
}

/// Pins this process (and so, unless told otherwise, its children) to
/// `cpu`.
fn pin_self(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity are given a pointer to it and its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn make_cert(paths: &Paths, log: &Path) -> Result<()> {
    let subject_alt = "subjectAltName=DNS:localhost,IP:127.0.0.1";
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "7",
        ])
        .args(["-subj", "/CN=localhost", "-addext", subject_alt])
        // A leaf, not a CA: the fixed-rate generator's rustls client trusts
        // it as itself, and refuses a CA certificate used as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&paths.key)
        .arg("-out")
        .arg(&paths.cert)
        .output()
        .context("running openssl to make a self-signed certificate")?;
    fs::write(log, &out.stderr)?;
    if !out.status.success() {
        bail!("openssl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let combined = format!(
        "{}{}",
        fs::read_to_string(&paths.cert)?,
        fs::read_to_string(&paths.key)?
    );
    fs::write(&paths.combined, combined)?;
    Ok(())
}

/// Runs `sluice check`; `Err` carries its complaint.
fn sluice_check(sluice: &Path, config: &Path) -> Result<Result<String, String>> {
    let out = Command::new(sluice)
        .arg("check")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("running {} check", sluice.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(if out.status.success() {
        Ok(text.trim().to_string())
    } else {
        Err(text.trim().to_string())
    })
}

/// The first error `sluice check` reports, as `line N: key: message`, or
/// its last line when no error names a line.
fn check_detail(complaint: &str, config: &Path) -> String {
    let prefix = format!("{}:", config.display());
    complaint
        .lines()
        .map(str::trim)
        .find_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            rest.starts_with(|c: char| c.is_ascii_digit())
                .then(|| format!("line {rest}"))
        })
        .or_else(|| {
            complaint
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "rejected".to_string())
}

/// Removes the scratch directory unless asked to keep it.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("==> kept scratch directory {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn run() -> Result<()> {
    let started = Instant::now();
    let opts = parse_options()?;
    let load_before = loadavg();
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let root = repo_root();

    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (proxy_cpus, load_cpus) = if cpus >= 2 {
        ("1".to_string(), "0".to_string())
    } else {
        say("only one CPU: the proxy and the load generators share it");
        ("0".to_string(), "0".to_string())
    };
    pin_self(0);
    let nofile = procs::raise_nofile(1 << 17);
    let max_idle = opts.idle.iter().copied().max().unwrap_or(0) as u64;
    if nofile < max_idle + 200 {
        bail!("the open-file limit is {nofile}, too low for {max_idle} idle connections; raise it (ulimit -n) or lower --idle");
    }

    let wrk = require("wrk")?;
    let nginx = require("nginx")?;
    let haproxy = require("haproxy")?;
    let caddy = require("caddy")?;
    require("taskset")?;
    require("openssl")?;
    if !opts.sluice.is_file() {
        bail!(
            "{} not found; build it with cargo build --release -p sluice",
            opts.sluice.display()
        );
    }
    for port in [configs::ORIGIN_PORT, configs::PROXY_PORT, configs::TLS_PORT] {
        check_port_free(port)?;
    }

    let work_path = match &opts.work {
        Some(dir) => dir.clone(),
        None => env::temp_dir().join(format!("sluice-loadbench-{}", std::process::id())),
    };
    let _ = fs::remove_dir_all(&work_path);
    fs::create_dir_all(work_path.join("tmp"))?;
    let work_path = work_path.canonicalize()?;
    let work = WorkDir {
        path: work_path.clone(),
        keep: opts.keep,
    };
    say(format!("scratch directory {}", work.path.display()));
    let paths = Paths {
        work: work_path.clone(),
        plugin_dir: work_path.join("plugins"),
        cert: work_path.join("tls/cert.pem"),
        key: work_path.join("tls/key.pem"),
        combined: work_path.join("tls/combined.pem"),
    };
    fs::create_dir_all(work_path.join("tls"))?;
    make_cert(&paths, &work_path.join("openssl.log"))?;
    let tls_client = fixed_rate::trusting(&paths.cert)?;
    fs::create_dir_all(&paths.plugin_dir)?;
    let mut plugins_missing = opts.skip_plugins.clone();
    // The budget speaks of an idle proxy with three plugins loaded: api-key
    // is loaded beside the two the chain attaches.
    for name in ["headers", "rewrite", "api-key"] {
        if plugins_missing.is_some() {
            break;
        }
        let built = opts
            .wasm_dir
            .join(format!("sluice_plugin_{}.wasm", name.replace('-', "_")));
        if let Err(e) = fs::copy(&built, paths.plugin_dir.join(format!("{name}.wasm"))) {
            plugins_missing = Some(format!(
                "{} is missing ({e}); build it with cargo build --release --target wasm32-wasip2 -p sluice-plugin-{name}",
                built.display()
            ));
        }
    }

    let tools = vec![
        (
            "Sluice",
            format!(
                "{} (git {})",
                version_of(&opts.sluice, &["--version"]),
                git_revision(&root)
            ),
        ),
        (
            "Pingora",
            format!(
                "pingora {} as released (Sluice's patches not applied), under `pingora-floor` (`benches/pingora-floor`)",
                locked_version(&root.join("benches/pingora-floor"), "pingora")
                    .unwrap_or_else(|| "of unknown version".into())
            ),
        ),
        ("nginx", version_of(&nginx, &["-v"])),
        ("HAProxy", version_of(&haproxy, &["-v"])),
        ("Caddy", version_of(&caddy, &["version"])),
        ("wrk", version_of(&wrk, &["-v"])),
        ("rustc", version_of(Path::new("rustc"), &["--version"])),
    ];
    for (name, v) in &tools {
        say(format!("{name}: {v}"));
    }

    // The targets, in report order.
    let mut targets = Vec::new();
    let mut config_texts = Vec::new();
    // The cases, and whether a run without --only measures them. HAProxy
    // and Caddy with TLS are left out of the default run, to keep it short
    // on a fresh machine: Sluice's TLS case is set against nginx's.
    let plan = [
        (Proxy::Nginx, Variant::Plain, true),
        (Proxy::Haproxy, Variant::Plain, true),
        (Proxy::Caddy, Variant::Plain, true),
        (Proxy::Pingora, Variant::Plain, true),
        (Proxy::Sluice, Variant::Plain, true),
        (Proxy::Sluice, Variant::Routing, true),
        (Proxy::Sluice, Variant::Plugins, true),
        (Proxy::Nginx, Variant::Tls, true),
        (Proxy::Haproxy, Variant::Tls, false),
        (Proxy::Caddy, Variant::Tls, false),
        (Proxy::Sluice, Variant::Tls, true),
    ];
    for (proxy, variant, by_default) in plan {
        let (program, ext, text) = match proxy {
            Proxy::Nginx => (
                &nginx,
                "conf",
                configs::nginx(&paths, variant == Variant::Tls),
            ),
            Proxy::Haproxy => (
                &haproxy,
                "cfg",
                configs::haproxy(&paths, variant == Variant::Tls, nofile),
            ),
            Proxy::Caddy => (
                &caddy,
                "Caddyfile",
                configs::caddy(&paths, variant == Variant::Tls),
            ),
            Proxy::Sluice => (&opts.sluice, "toml", configs::sluice(&paths, variant)),
            Proxy::Pingora => (
                &opts.pingora_floor,
                "args",
                format!(
                    "pingora-floor {}\n",
                    configs::pingora_floor_args().join(" ")
                ),
            ),
        };
        let mut target = Target {
            proxy,
            variant,
            config: PathBuf::new(),
            program: program.clone(),
            skipped: None,
        };
        if !opts.wants(&target.key(), by_default) {
            continue;
        }
        target.config = work_path.join(format!("{}.{ext}", target.key()));
        bench::write_file(&target.config, &text)?;
        if proxy == Proxy::Pingora && !opts.pingora_floor.is_file() {
            let reason = format!(
                "{} not found; build it with cargo build --release -p sluice-benches --bin pingora-floor",
                opts.pingora_floor.display()
            );
            say(format!("{}: skipped: {reason}", target.label()));
            target.skipped = Some(reason);
        }
        if proxy == Proxy::Sluice {
            if variant == Variant::Plugins {
                if let Some(missing) = &plugins_missing {
                    target.skipped = Some(missing.clone());
                }
            }
            if target.skipped.is_none() {
                say(format!("sluice check --config {}", target.config.display()));
                match sluice_check(&opts.sluice, &target.config)? {
                    Ok(msg) => say(msg),
                    Err(complaint) => {
                        let detail = check_detail(&complaint, &target.config);
                        let reason = if variant == Variant::Tls {
                            format!("Sluice has no TLS listener yet: `sluice check` rejects the config ({detail})")
                        } else {
                            format!("`sluice check` rejects the config ({detail})")
                        };
                        say(format!("{}: skipped: {reason}", target.label()));
                        target.skipped = Some(reason);
                    }
                }
            }
        }
        let shown = text.replace(&work_path.display().to_string(), "$WORK");
        config_texts.push(shown);
        targets.push(target);
    }
    if targets.is_empty() && !opts.wants(SCALING_KEY, false) {
        bail!("--only matched no case");
    }
    // The TLS case compares Sluice with the others; until Sluice can
    // terminate TLS, the others' TLS runs are left out to keep the run short.
    let sluice_tls_skipped = targets
        .iter()
        .find(|t| t.proxy == Proxy::Sluice && t.variant == Variant::Tls)
        .map(|t| t.skipped.is_some())
        .unwrap_or(true);
    if sluice_tls_skipped && !opts.tls_peers {
        for t in targets.iter_mut() {
            if t.variant == Variant::Tls && t.proxy != Proxy::Sluice {
                t.skipped = Some(
                    "the TLS case is measured once Sluice terminates TLS (see the Sluice row); \
                     `--tls-peers` measures the others anyway"
                        .to_string(),
                );
            }
        }
    }

    // The origin.
    let origin_text = configs::origin_nginx(&paths);
    let origin_conf = work_path.join("origin.conf");
    bench::write_file(&origin_conf, &origin_text)?;
    let mut origin_cmd = Command::new(&nginx);
    origin_cmd
        .arg("-c")
        .arg(&origin_conf)
        .arg("-p")
        .arg(&work_path)
        .arg("-e")
        .arg(work_path.join("origin-startup.log"));
    let mut origin = ProcGuard::spawn(
        "origin nginx",
        &load_cpus,
        &mut origin_cmd,
        &work_path.join("origin.log"),
    )?;
    origin.wait_ready(
        std::net::SocketAddr::from(([127, 0, 0, 1], configs::ORIGIN_PORT)),
        configs::REQUEST_PATH,
        false,
        Duration::from_secs(10),
    )?;
    say(format!(
        "origin nginx on 127.0.0.1:{}",
        configs::ORIGIN_PORT
    ));

    let settings = Settings {
        seconds: opts.seconds,
        connections: opts.connections,
        idle: opts.idle.clone(),
        proxy_cpus: proxy_cpus.clone(),
        load_cpus: load_cpus.clone(),
        nofile,
    };
    let ctx = bench::Bench {
        work: &work_path,
        settings: &settings,
        wrk: &wrk,
        tls_client: &tls_client,
        origin_pid: origin.pid(),
    };
    // Other work on the machine (a build, a test suite) skews every figure;
    // before each case wait for it to calm down, within a bounded total.
    let mut quiet_budget = Duration::from_secs(opts.max_wait);
    let mut quiet_waited = Duration::ZERO;
    let mut outcomes: Vec<Outcome> = targets
        .into_iter()
        .zip(config_texts)
        .map(|(target, config_text)| Outcome {
            target,
            runs: Vec::new(),
            config_text,
            notes: Vec::new(),
        })
        .collect();
    // The fixed rates, and half of nginx's and of Sluice's plain maximum
    // once their first runs have measured them.
    let mut rates = opts.rates.clone();
    for run in 1..=opts.runs {
        for outcome in outcomes.iter_mut() {
            if outcome.target.skipped.is_some() {
                continue;
            }
            check_interrupted()?;
            origin.check_alive()?;
            // Measure; when other work competed and there is time left to
            // wait for it, measure again (twice at most).
            let mut result;
            let mut attempt = 0;
            let mut t;
            loop {
                let waited = Instant::now();
                let busy = bench::wait_for_quiet(&ctx, quiet_budget)?;
                quiet_budget = quiet_budget.saturating_sub(waited.elapsed());
                quiet_waited += waited.elapsed();
                if busy >= 0.2 {
                    say(format!(
                        "the machine is busy with other work ({busy:.2} cores used by other processes); measuring anyway"
                    ));
                } else if waited.elapsed() > Duration::from_secs(2) {
                    say(format!(
                        "waited {:.0} s for other work on the machine to stop",
                        waited.elapsed().as_secs_f64()
                    ));
                }
                t = Instant::now();
                result = bench::measure(&ctx, &outcome.target, run, &rates);
                check_interrupted()?;
                let other = result.as_ref().map(|m| m.other_cpu).unwrap_or(0.0);
                if other >= 0.15 && attempt < 2 && !quiet_budget.is_zero() {
                    attempt += 1;
                    let note = format!(
                        "run {run} measured again: other processes used {other:.2} cores during an earlier try"
                    );
                    say(format!(
                        "{}: {note} [{:.0} s]",
                        outcome.target.label(),
                        t.elapsed().as_secs_f64()
                    ));
                    outcome.notes.push(note);
                    continue;
                }
                break;
            }
            check_interrupted()?;
            match &result {
                Ok(m) => say(format!(
                    "run {run}/{}: {}: {:.0} req/s (proxy CPU {:.2}, others {:.2}), p99 {} ms, RSS idle/load {:.1}/{:.1} MiB [{:.0} s]",
                    opts.runs,
                    outcome.target.label(),
                    m.throughput,
                    m.proxy_cpu,
                    m.other_cpu,
                    m.latency
                        .iter()
                        .map(|l| format!("{}@{}", stats::fmt_ms(l.report.p99_ms), l.rate))
                        .collect::<Vec<_>>()
                        .join(" "),
                    m.rss_idle_kib as f64 / 1024.0,
                    m.rss_load_kib as f64 / 1024.0,
                    t.elapsed().as_secs_f64()
                )),
                Err(e) => say(format!("run {run}/{}: {}: FAILED: {e:#}", opts.runs, outcome.target.label())),
            }
            // Latency targets are set at half of nginx's maximum rate and
            // at half of Sluice's plain proxy's (the chain's).
            if let (1, Variant::Plain, Ok(m)) = (run, outcome.target.variant, &result) {
                let half = match outcome.target.proxy {
                    Proxy::Nginx | Proxy::Sluice => half_rate(m.throughput, &rates),
                    _ => None,
                };
                if let Some(half) = half {
                    say(format!(
                        "half of {}'s maximum: {half} req/s, measured from here on",
                        outcome.target.label()
                    ));
                    rates.push(half);
                    rates.sort_unstable();
                }
            }
            outcome.runs.push(result.map_err(|e| format!("{e:#}")));
        }
    }
    let scaling = measure_scaling(&ctx, &opts, &paths, cpus, &mut origin)?;
    origin.stop();

    let mut machine = machine_lines(cpus, &tools);
    machine.push(format!(
        "- **Load average** (1, 5, 15 min) when the runner started: {load_before}; when it ended: {} \
         (the runner's own processes count; anything else running competes with them)",
        loadavg()
    ));
    for note in &opts.notes {
        machine.push(format!("- {note}"));
    }
    let input = ReportInput {
        outcomes: &outcomes,
        machine,
        runs: opts.runs,
        seconds: opts.seconds,
        connections: opts.connections,
        rates: &rates,
        idle: &opts.idle,
        origin_config: origin_text.replace(&work_path.display().to_string(), "$WORK"),
        elapsed_secs: started.elapsed().as_secs_f64(),
        waited_secs: quiet_waited.as_secs_f64(),
        total_secs: opts.since.map(|since| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            now - since as f64
        }),
        command: opts.command.clone(),
        cpus: (proxy_cpus, load_cpus),
        optimisations: std::fs::read_to_string(repo_root().join("docs/optimisations.md")).ok(),
        scaling: scaling.as_ref().map_err(String::as_str),
    };
    fs::create_dir_all(&opts.out)?;
    let md_path = opts.out.join("benchmarks.md");
    let svg_path = opts.out.join("benchmarks.svg");
    chart::draw(&report::chart_data(&input), &svg_path)?;
    bench::write_file(&md_path, &report::markdown(&input))?;
    say(format!(
        "wrote {} and {}",
        md_path.display(),
        svg_path.display()
    ));
    drop(work);
    Ok(())
}

/// Half of `maximum`, rounded down to 500 req/s, when no rate of `rates` is
/// within 15% of it already.
fn half_rate(maximum: f64, rates: &[u32]) -> Option<u32> {
    let half = maximum / 2.0;
    let close = rates
        .iter()
        .any(|&r| (f64::from(r) - half).abs() <= half * 0.15);
    let rounded = (half / 500.0).floor() as u32 * 500;
    (!close && rounded > 0).then_some(rounded)
}

/// The `--only` key of the one-worker-against-two measurement.
const SCALING_KEY: &str = "sluice-scaling";

/// One worker against two (see `scaling`), when the run measures Sluice's
/// plain proxy (or `--only` names `sluice-scaling`): the runs interleaved,
/// on every core. `Err` says why it was not measured.
fn measure_scaling(
    ctx: &bench::Bench,
    opts: &Options,
    paths: &configs::Paths,
    cpus: usize,
    origin: &mut ProcGuard,
) -> Result<std::result::Result<scaling::Scaling, String>> {
    if !opts.wants(SCALING_KEY, true) {
        return Ok(Err(
            "not asked for (`--only` without `sluice-scaling`)".into()
        ));
    }
    if cpus < 2 {
        return Ok(Err("the machine has one CPU".into()));
    }
    let all_cpus = format!("0-{}", cpus - 1);
    let plain = configs::sluice(paths, Variant::Plain);
    let mut configs = Vec::new();
    for threads in [1, 2] {
        let path = ctx.work.join(format!("sluice-{threads}-workers.toml"));
        bench::write_file(&path, &scaling::with_threads(&plain, threads)?)?;
        configs.push((threads, path));
    }
    let mut measured = scaling::Scaling::default();
    for run in 1..=opts.runs {
        for (threads, path) in &configs {
            check_interrupted()?;
            origin.check_alive()?;
            bench::wait_for_quiet(ctx, Duration::from_secs(5))?;
            match scaling::measure(ctx, &opts.sluice, path, *threads, &all_cpus) {
                Ok(r) => {
                    say(format!(
                        "run {run}/{}: Sluice with {threads} worker(s) on CPUs {all_cpus}: {:.0} req/s, {:.1} µs of CPU per request",
                        opts.runs, r.throughput, r.cpu_us_per_request
                    ));
                    if *threads == 1 {
                        measured.one.push(r);
                    } else {
                        measured.two.push(r);
                    }
                }
                Err(e) => {
                    say(format!("Sluice with {threads} worker(s): FAILED: {e:#}"));
                    return Ok(Err(format!("a run failed: {e:#}")));
                }
            }
        }
    }
    Ok(Ok(measured))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_of_nginx_is_added_unless_a_rate_is_close() {
        assert_eq!(half_rate(65_740.0, &[2000, 10000, 25000]), Some(32_500));
        assert_eq!(half_rate(52_000.0, &[2000, 10000, 25000]), None);
        assert_eq!(half_rate(600.0, &[]), None);
    }

    #[test]
    fn locked_versions_come_from_the_workspace_lock_file() {
        let pingora = locked_version(&repo_root(), "pingora").unwrap();
        assert!(pingora.starts_with("0.9."), "{pingora}");
        assert_eq!(locked_version(&repo_root(), "no-such-package"), None);
    }

    #[test]
    fn check_detail_finds_the_first_located_error() {
        let out = "INFO plugin loaded\n/w/s.toml: 2 errors\n  /w/s.toml:10: listeners[0].tls: unknown field `tls`\n  /w/s.toml:12: x: y\n";
        assert_eq!(
            check_detail(out, Path::new("/w/s.toml")),
            "line 10: listeners[0].tls: unknown field `tls`"
        );
        assert_eq!(check_detail("boom\n\n", Path::new("/w/s.toml")), "boom");
        assert_eq!(check_detail("", Path::new("/w/s.toml")), "rejected");
    }
}
