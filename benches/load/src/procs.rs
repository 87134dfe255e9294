//! Child processes that are always cleaned up, and what `/proc` says about
//! them (resident memory, CPU time).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// A process started in a process group of its own; dropping the guard
/// stops the whole group (SIGTERM, then SIGKILL 300 ms later), so
/// nginx's workers go with their master and nothing outlives the runner,
/// even when a measurement fails half way.
pub struct ProcGuard {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ProcGuard {
    /// Starts `cmd` pinned to `cpus` (a `taskset -c` list such as `"1"`),
    /// its standard output and error appended to `log`.
    pub fn spawn(name: &str, cpus: &str, cmd: &mut Command, log: &Path) -> Result<ProcGuard> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let program = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let mut pinned = Command::new("taskset");
        pinned.arg("-c").arg(cpus).arg(&program).args(&args);
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => pinned.env(key, v),
                None => pinned.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            pinned.current_dir(dir);
        }
        pinned
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = pinned
            .spawn()
            .with_context(|| format!("starting {name}: taskset -c {cpus} {program:?}"))?;
        Ok(ProcGuard {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// The process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Fails with the end of the log if the process has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited ({status}); end of its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 15)
                );
            }
        }
        Ok(())
    }

    /// Waits until `addr` answers `GET path` with 200, for at most
    /// `timeout`; `tls` only waits for the port to accept connections.
    pub fn wait_ready(
        &mut self,
        addr: SocketAddr,
        path: &str,
        tls: bool,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("not tried");
        while Instant::now() < deadline {
            self.check_alive()?;
            crate::check_interrupted()?;
            let probe = if tls {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .map(|_| 200)
                    .map_err(anyhow::Error::from)
            } else {
                http_get_status(addr, path)
            };
            match probe {
                Ok(200) => return Ok(()),
                Ok(status) => last = format!("status {status}"),
                Err(e) => last = e.to_string(),
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} did not answer GET {path} on {addr} with 200 within {timeout:?} (last: {last}); end of its log:\n{}",
            self.name,
            tail(&self.log, 15)
        )
    }

    /// Stops the process group and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals a process group; it
        // has no memory-safety preconditions.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        // A short grace: nginx, HAProxy and Caddy exit at once on SIGTERM;
        // Sluice would serve its grace period first, which a benchmark
        // does not need.
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = child.wait();
        // Wait for the rest of the group (nginx workers) to be gone.
        let deadline = Instant::now() + Duration::from_secs(3);
        // SAFETY: signal 0 only checks whether the group exists.
        while unsafe { libc::kill(-pgid, 0) } == 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd` pinned to `cpus` to completion, in a process group that is
/// killed if it runs past `timeout` or the runner is interrupted; calls
/// `on_tick` with the time elapsed about every 200 ms while it runs, and
/// returns its standard output, which is also kept in `out_path`; standard
/// error is appended to `log`.
pub fn run_pinned(
    cpus: &str,
    cmd: &mut Command,
    timeout: Duration,
    log: &Path,
    out_path: &Path,
    mut on_tick: impl FnMut(Duration),
) -> Result<String> {
    let _ = fs::remove_file(out_path);
    let name = format!("{:?}", cmd.get_program());
    // Standard output goes to its own file; standard error to the log.
    let mut guard = {
        let stdout = fs::File::create(out_path)?;
        let err = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let program = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let child = Command::new("taskset")
            .arg("-c")
            .arg(cpus)
            .arg(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {program:?}"))?;
        ProcGuard {
            name: name.clone(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    };
    let started = Instant::now();
    let mut next_tick = started;
    let status = loop {
        if let Some(status) = guard
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            break status;
        }
        if started.elapsed() > timeout {
            guard.stop();
            bail!("{name} ran past {timeout:?} and was killed");
        }
        crate::check_interrupted()?;
        if Instant::now() >= next_tick {
            on_tick(started.elapsed());
            next_tick += Duration::from_millis(200);
        }
        thread::sleep(Duration::from_millis(10));
    };
    guard.child = None;
    let output = fs::read_to_string(out_path).unwrap_or_default();
    if !status.success() {
        bail!(
            "{name} failed ({status}); stdout:\n{}\nstderr (end of {}):\n{}",
            truncate(&output, 2000),
            log.display(),
            tail(log, 15)
        );
    }
    Ok(output)
}

/// Sends `GET path` over a fresh HTTP/1.1 connection and returns the status.
pub fn http_get_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    parse_status(&response)
}

/// Reads the status code from the start of an HTTP/1.x response.
pub fn parse_status(response: &[u8]) -> Result<u16> {
    let line_end = response
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(|| anyhow!("no status line in response"))?;
    let line = std::str::from_utf8(&response[..line_end])?;
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code.parse()?),
        _ => bail!("not an HTTP/1.x status line: {line:?}"),
    }
}

/// Every live process whose parent chain leads to `root`, `root` included.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some(fields) = stat_fields(&stat) {
                    if let Some(ppid) = fields.get(1).and_then(|f| f.parse::<u32>().ok()) {
                        parents.push((pid, ppid));
                    }
                }
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for &(pid, ppid) in &parents {
            if ppid == parent && !tree.contains(&pid) {
                tree.push(pid);
            }
        }
        i += 1;
    }
    tree
}

/// The fields of `/proc/PID/stat` after the command name: state, ppid, ...
pub fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let close = stat.rfind(')')?;
    Some(stat[close + 1..].split_whitespace().collect())
}

/// `VmRSS` of one process in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vmrss(&status)
}

/// Reads `VmRSS:` (KiB) from the text of `/proc/PID/status`.
pub fn parse_vmrss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Resident memory of `root` and all its descendants, in KiB.
pub fn tree_rss_kib(root: u32) -> u64 {
    process_tree(root).into_iter().filter_map(rss_kib).sum()
}

/// CPU time the whole machine has spent since boot, in seconds: running
/// processes (user, nice, system), and stolen by the hypervisor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SystemCpu {
    /// User, nice and system time of all CPUs. Interrupt and softirq time
    /// (much of it the benchmark's own loopback traffic) is left out.
    pub processes: f64,
    /// Time the hypervisor ran something else while a CPU wanted to run.
    pub steal: f64,
}

/// The machine's CPU time so far, from `/proc/stat`.
pub fn system_cpu() -> SystemCpu {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks = clock_ticks();
    let raw = parse_system_cpu(&stat).unwrap_or(SystemCpu {
        processes: 0.0,
        steal: 0.0,
    });
    SystemCpu {
        processes: raw.processes / ticks,
        steal: raw.steal / ticks,
    }
}

/// Clock ticks from the `cpu` line of the text of `/proc/stat`: user + nice
/// + system, and steal (guest time is already in user).
pub fn parse_system_cpu(stat: &str) -> Option<SystemCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    Some(SystemCpu {
        processes: f.first()? + f.get(1)? + f.get(2)?,
        steal: *f.get(7)?,
    })
}

/// CPU time of this process and of its waited-for children, in seconds.
pub fn own_cpu_seconds() -> f64 {
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage writes into the zeroed struct it is given.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(who, &mut usage);
            usage
        };
        for tv in [usage.ru_utime, usage.ru_stime] {
            total += tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        }
    }
    total
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// User plus system CPU time of `root` and its descendants, in seconds.
pub fn tree_cpu_seconds(root: u32) -> f64 {
    let ticks = clock_ticks();
    process_tree(root)
        .into_iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let fields = stat_fields(&stat)?;
            // After the name: state(0) ppid(1) ... utime(11) stime(12).
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .sum()
}

/// Raises the open-file limit of this process (and so of its children) as
/// far as allowed: to `want` when root may raise the hard limit, else to
/// the hard limit. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to and read from a valid rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let raised = libc::rlimit {
            rlim_cur: want as libc::rlim_t,
            rlim_max: (want as libc::rlim_t).max(lim.rlim_max),
        };
        if lim.rlim_cur < want as libc::rlim_t && libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0
        {
            let soft = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmrss_is_read_from_status() {
        let status = "Name:\tnginx\nVmPeak:\t   12 kB\nVmRSS:\t    8392 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vmrss(status), Some(8392));
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
    }

    #[test]
    fn stat_fields_skip_names_with_spaces_and_parens() {
        let stat = "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 100 0 0 0 250 30 0 0";
        let f = stat_fields(stat).unwrap();
        assert_eq!(f[0], "S");
        assert_eq!(f[1], "4241");
        assert_eq!(f[11], "250");
        assert_eq!(f[12], "30");
    }

    #[test]
    fn status_line() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n\r\n").unwrap(), 200);
        assert_eq!(
            parse_status(b"HTTP/1.0 404 Not Found\r\nx: y\r\n\r\n").unwrap(),
            404
        );
        assert!(parse_status(b"SSH-2.0\r\n").is_err());
        assert!(parse_status(b"").is_err());
    }

    #[test]
    fn system_cpu_counts_process_time_and_steal() {
        let stat = "cpu  100 5 50 1000 20 3 2 7 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        assert_eq!(
            parse_system_cpu(stat),
            Some(SystemCpu {
                processes: 155.0,
                steal: 7.0
            })
        );
        assert_eq!(parse_system_cpu("intr 1 2 3\n"), None);
        assert!(system_cpu().processes > 0.0);
        assert!(own_cpu_seconds() >= 0.0);
    }

    #[test]
    fn own_process_is_in_its_tree_and_has_memory() {
        let me = std::process::id();
        assert!(process_tree(me).contains(&me));
        assert!(tree_rss_kib(me) > 0);
        assert!(tree_cpu_seconds(me) >= 0.0);
    }
}
