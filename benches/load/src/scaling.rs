//! Whether Sluice's workers scale: the plain proxy with one worker thread
//! and with two, each run on every core of the machine together with the
//! load generator and the origin.
//!
//! Two workers cannot have two cores to themselves on a two-core machine
//! that also runs the load, so their throughput there is capped by the
//! cores they share. What the two runs do show, side by side under the
//! same sharing, is the CPU each request costs: when two workers cost what
//! one does per request, two cores of their own serve twice the requests.
//! The estimate is that ratio, `2 × (one worker's CPU per request) / (two
//! workers' CPU per request)`; contention between the workers (locks,
//! shared counters, cross-thread wake-ups) raises the second and lowers it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::bench::{run_wrk, Bench, WrkLoad};
use crate::configs::{PROXY_PORT, REQUEST_PATH};
use crate::procs::{self, ProcGuard};
use crate::stats::Summary;
use crate::wrk;

/// One measured run of Sluice; which worker count is which list of
/// [`Scaling`] it is in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerRun {
    /// Successful requests per second.
    pub throughput: f64,
    /// Microseconds of the proxy's CPU time per request served.
    pub cpu_us_per_request: f64,
}

/// The runs of one worker and of two, interleaved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scaling {
    /// The runs with one worker thread.
    pub one: Vec<WorkerRun>,
    /// The runs with two.
    pub two: Vec<WorkerRun>,
}

impl Scaling {
    /// The medians of one worker's and two workers' CPU per request.
    pub fn cpu_per_request(&self) -> Option<(Summary, Summary)> {
        let of = |runs: &[WorkerRun]| {
            Summary::of(
                &runs
                    .iter()
                    .map(|r| r.cpu_us_per_request)
                    .collect::<Vec<_>>(),
            )
        };
        Some((of(&self.one)?, of(&self.two)?))
    }

    /// The medians of one worker's and two workers' throughput.
    pub fn throughput(&self) -> Option<(Summary, Summary)> {
        let of = |runs: &[WorkerRun]| {
            Summary::of(&runs.iter().map(|r| r.throughput).collect::<Vec<_>>())
        };
        Some((of(&self.one)?, of(&self.two)?))
    }

    /// What two workers on two cores of their own would serve, as a
    /// multiple of one worker on one core (see the module's doc).
    pub fn estimate(&self) -> Option<f64> {
        let (one, two) = self.cpu_per_request()?;
        (two.median > 0.0).then(|| 2.0 * one.median / two.median)
    }
}

/// Sluice's plain-proxy config `config` with `threads` workers instead of
/// the one it names.
pub fn with_threads(config: &str, threads: usize) -> Result<String> {
    if !config.contains("\nthreads = 1\n") {
        bail!("the plain config names no `threads = 1` to replace");
    }
    Ok(config.replacen("\nthreads = 1\n", &format!("\nthreads = {threads}\n"), 1))
}

/// Runs Sluice with `config` (`threads` workers) on `cpus`, loads it with a
/// two-thread wrk on the same CPUs, and reads the CPU it used.
pub fn measure(
    ctx: &Bench,
    sluice: &Path,
    config: &Path,
    threads: usize,
    cpus: &str,
) -> Result<WorkerRun> {
    let log = ctx.work.join(format!("sluice-{threads}-workers.log"));
    let mut cmd = Command::new(sluice);
    cmd.arg("run").arg("--config").arg(config);
    let mut guard = ProcGuard::spawn("sluice", cpus, &mut cmd, &log)?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], PROXY_PORT));
    guard.wait_ready(addr, REQUEST_PATH, false, Duration::from_secs(20))?;
    let pid = guard.pid();
    wrk_run(ctx, cpus, 1, &log)?;
    let cpu_before = procs::tree_cpu_seconds(pid);
    let report = wrk_run(ctx, cpus, ctx.settings.seconds, &log)?;
    let cpu = procs::tree_cpu_seconds(pid) - cpu_before;
    guard.check_alive()?;
    guard.stop();
    if report.socket_errors > 0 || report.non_2xx > 0 {
        bail!(
            "{threads} workers: {} socket errors, {} non-2xx of {} requests",
            report.socket_errors,
            report.non_2xx,
            report.requests
        );
    }
    let served = report.requests as f64;
    if served < 1.0 {
        bail!("{threads} workers served no request");
    }
    Ok(WorkerRun {
        throughput: report.good_per_sec(),
        cpu_us_per_request: cpu / served * 1e6,
    })
}

fn wrk_run(ctx: &Bench, cpus: &str, seconds: u64, log: &Path) -> Result<wrk::WrkReport> {
    let load = WrkLoad {
        threads: 2,
        cpus,
        url: format!("http://127.0.0.1:{PROXY_PORT}{REQUEST_PATH}"),
    };
    run_wrk(ctx, &load, seconds, log, |_| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(throughput: f64, cpu_us_per_request: f64) -> WorkerRun {
        WorkerRun {
            throughput,
            cpu_us_per_request,
        }
    }

    #[test]
    fn equal_cost_per_request_scales_twofold() {
        let s = Scaling {
            one: vec![run(20_000.0, 40.0), run(21_000.0, 42.0)],
            two: vec![run(22_000.0, 41.0), run(23_000.0, 41.0)],
        };
        let estimate = s.estimate().unwrap();
        assert!((estimate - 2.0).abs() < 1e-9, "{estimate}");
    }

    #[test]
    fn contention_shows_as_a_lower_estimate() {
        let s = Scaling {
            one: vec![run(20_000.0, 40.0)],
            two: vec![run(22_000.0, 50.0)],
        };
        assert!((s.estimate().unwrap() - 1.6).abs() < 1e-9);
        assert_eq!(Scaling::default().estimate(), None);
    }

    #[test]
    fn the_thread_count_is_replaced_once() {
        let config = "[server]\nthreads = 1\naccess_log = false\n";
        assert_eq!(
            with_threads(config, 2).unwrap(),
            "[server]\nthreads = 2\naccess_log = false\n"
        );
        assert!(with_threads("[server]\n", 2).is_err());
    }
}
