//! The upstreams of `sluice demo`: three echo servers and the control
//! server that stops and starts them, for the proxy the binary runs on
//! `examples/demo.toml`.
//!
//! The upstreams start first, on loopback; their addresses reach the config
//! through the `DEMO_*` environment variables it interpolates. Once the proxy
//! answers, the demo sends the requests it suggests and prints what came back,
//! so a new user sees routed responses without opening a second terminal.
//!
//! [`upstream`] is the small echo server behind the demo; the integration
//! tests and benchmarks proxy to it too.

mod control;
pub mod upstream;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The demo configuration, as shipped in `examples/demo.toml`.
pub const DEMO_CONFIG: &str = include_str!("../../../examples/demo.toml");

/// The demo upstreams' names, in port order.
pub const UPSTREAM_NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

/// The running demo upstreams and the address of their control server.
pub struct DemoUpstreams {
    /// `POST /stop/NAME` and `POST /start/NAME` stop and restart an upstream.
    pub control: SocketAddr,
}

/// Starts the demo upstreams on `first_port` and the two ports after it, and
/// their control server on the third port after it, on a background
/// runtime (`first_port` 0: free ports). Exports the upstreams' addresses as
/// `DEMO_ALPHA`, `DEMO_BETA` and `DEMO_GAMMA` for the config to use.
pub fn start_upstreams(first_port: u16) -> anyhow::Result<DemoUpstreams> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut upstreams = Vec::new();
    for (i, name) in UPSTREAM_NAMES.iter().enumerate() {
        let port = if first_port == 0 {
            0
        } else {
            first_port + i as u16
        };
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let upstream = runtime
            .block_on(upstream::spawn(name, address))
            .map_err(|e| anyhow::anyhow!("demo upstream {name} cannot listen on {address}: {e}"))?;
        std::env::set_var(
            format!("DEMO_{}", name.to_uppercase()),
            upstream.address.to_string(),
        );
        upstreams.push(upstream);
    }
    let control_port = if first_port == 0 {
        0
    } else {
        first_port + UPSTREAM_NAMES.len() as u16
    };
    let control_address = SocketAddr::from(([127, 0, 0, 1], control_port));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(control_address))
        .map_err(|e| {
            anyhow::anyhow!("demo control server cannot listen on {control_address}: {e}")
        })?;
    let control = listener.local_addr()?;
    std::thread::spawn(move || runtime.block_on(control::serve(listener, upstreams)));
    Ok(DemoUpstreams { control })
}

/// One suggested request: what it shows, and its headers.
pub struct Suggestion {
    /// What the request demonstrates.
    pub title: &'static str,
    /// Path and query.
    pub path: &'static str,
    /// Extra request headers.
    pub headers: &'static [(&'static str, &'static str)],
}

/// The requests the demo suggests and sends.
pub const SUGGESTIONS: &[Suggestion] = &[
    Suggestion {
        title: "no routing key: the default placement (blue), round robin over alpha and beta",
        path: "/hello",
        headers: &[],
    },
    Suggestion {
        title: "routing key acme from the X-Tenant header: table → placement green",
        path: "/hello",
        headers: &[("X-Tenant", "acme")],
    },
    Suggestion {
        title: "an unknown routing key: the default placement",
        path: "/hello",
        headers: &[("X-Tenant", "unknown-co")],
    },
    Suggestion {
        title: "the /api route: direct to green, /api stripped, a header added upstream",
        path: "/api/users?page=2",
        headers: &[],
    },
];

/// The `curl` command line for a suggestion against `listen`.
pub fn curl_command(listen: SocketAddr, suggestion: &Suggestion) -> String {
    let mut command = String::from("curl -si");
    for (name, value) in suggestion.headers {
        command.push_str(&format!(" -H '{name}: {value}'"));
    }
    command.push_str(&format!(" 'http://{listen}{}'", suggestion.path));
    command
}

/// Waits for the proxy on `listen`, then prints each suggestion, its curl
/// command, and the status line and routing headers of its response; then
/// shows a failover by stopping and restarting gamma through `control`.
pub fn show_off(listen: SocketAddr, control: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            eprintln!("the proxy did not start listening on {listen}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    out.push_str(&format!(
        "\nSluice demo: proxy on http://{listen}, upstreams alpha, beta and gamma on loopback.\n"
    ));
    out.push_str("Try these (the demo just sent each once; the answers are below them):\n");
    for suggestion in SUGGESTIONS {
        out.push_str(&format!(
            "\n# {}\n{}\n",
            suggestion.title,
            curl_command(listen, suggestion)
        ));
        show(&mut out, fetch(listen, suggestion));
    }
    let tenant = &SUGGESTIONS[1];
    out.push_str(
        "\n# Failover: stop gamma, the only endpoint of placement green. Its health check\n",
    );
    out.push_str("# marks it down within a second, and green's traffic fails over to blue.\n");
    out.push_str(&format!("curl -s -X POST http://{control}/stop/gamma\n"));
    out.push_str(&format!("{}\n", curl_command(listen, tenant)));
    let _ = control_request(control, "/stop/gamma");
    std::thread::sleep(Duration::from_millis(1200));
    show(
        &mut out,
        fetch_until(listen, tenant, |summary| {
            summary.contains("x-failover-reason: unhealthy")
        }),
    );
    out.push_str("\n# Start gamma again: the health check sees it and traffic comes back.\n");
    out.push_str(&format!("curl -s -X POST http://{control}/start/gamma\n"));
    out.push_str(&format!("{}\n", curl_command(listen, tenant)));
    let _ = control_request(control, "/start/gamma");
    show(
        &mut out,
        fetch_until(listen, tenant, |summary| {
            !summary.contains("x-failover-reason")
        }),
    );
    out.push_str("\nPress Ctrl-C to stop.\n");
    print!("{out}");
    let _ = std::io::stdout().flush();
}

fn show(out: &mut String, summary: std::io::Result<String>) {
    match summary {
        Ok(summary) => {
            for line in summary.lines() {
                out.push_str(&format!("  | {line}\n"));
            }
        }
        Err(e) => out.push_str(&format!("  | request failed: {e}\n")),
    }
}

/// Repeats a suggestion (for up to five seconds) until its summary passes `done`.
fn fetch_until(
    listen: SocketAddr,
    suggestion: &Suggestion,
    done: impl Fn(&str) -> bool,
) -> std::io::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let summary = fetch(listen, suggestion);
        match &summary {
            Ok(text) if done(text) => return summary,
            _ if Instant::now() > deadline => return summary,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn control_request(control: SocketAddr, path: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&control, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("POST {path} HTTP/1.1\r\nHost: {control}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(())
}

/// Sends one suggestion over a plain HTTP/1.1 connection and summarises the
/// answer: status line, routing headers, and the upstream's name and path.
fn fetch(listen: SocketAddr, suggestion: &Suggestion) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&listen, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n",
        suggestion.path
    );
    for (name, value) in suggestion.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let mut summary = lines.next().unwrap_or_default().to_string();
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if [
            "x-routed-to",
            "x-route-reason",
            "x-failover-reason",
            "x-upstream",
            "x-served-by",
        ]
        .iter()
        .any(|h| lower.starts_with(h))
        {
            summary.push('\n');
            summary.push_str(line);
        }
    }
    if let Ok(echo) = serde_json::from_str::<serde_json::Value>(body) {
        summary.push_str(&format!(
            "\nupstream saw: {} {}{}",
            echo["method"].as_str().unwrap_or("?"),
            echo["path"].as_str().unwrap_or("?"),
            echo["query"]
                .as_str()
                .map(|q| format!("?{q}"))
                .unwrap_or_default(),
        ));
    }
    Ok(summary)
}
