//! Process lifecycle: SIGTERM drain, zero-downtime upgrade, access log.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{client, get, scratch_dir, upstreams, Proxy, Reply};
use crate::fault::{Behavior, FaultUpstream};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_and_exits_when_the_last_one_ends() {
    let slow = FaultUpstream::start("slow").await;
    slow.set(Behavior::Delay(Duration::from_secs(1)));
    let proxy = Proxy::start(&format!(
        "[server]\ngrace_period = \"30s\"\n\n[placements.p]\nendpoints = [{{ address = \"{}\" }}]\n\n[[routes]]\nplacement = \"p\"\n",
        slow.address
    ));
    let url = proxy.url("/slow");
    let request =
        tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    // The request has reached the upstream, and is in flight, when TERM comes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while slow.hits() == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let terminated = Instant::now();
    proxy.signal("TERM");

    let status = request.await.unwrap();
    assert_eq!(
        status.as_ref().ok(),
        Some(&200),
        "the in-flight request was not drained: {status:?}"
    );
    // Well before the 30 s grace period: once the request has ended.
    let answered = Instant::now();
    let (exited, proxy) = exit_within(proxy, Duration::from_secs(1)).await;
    assert!(
        exited,
        "sluice did not exit within 1 s of its last request ending:\n{}",
        proxy.stderr_text()
    );
    assert!(answered.elapsed() < Duration::from_secs(1));
    assert!(terminated.elapsed() < Duration::from_secs(3));
}

/// Waits up to `within` for `proxy` to exit, off the async runtime;
/// whether it did, and the proxy for its log.
async fn exit_within(mut proxy: Proxy, within: Duration) -> (bool, Proxy) {
    tokio::task::spawn_blocking(move || (proxy.wait_exit(within), proxy))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_proxy_exits_within_a_second_of_sigterm() {
    let up = upstreams(&["a"]).await;
    let proxy = Proxy::start(&format!(
        "[placements.p]\nendpoints = [{{ address = \"{}\" }}]\n\n[[routes]]\nplacement = \"p\"\n",
        up[0].address
    ));
    // A keep-alive client that has made its request and now waits.
    let kept_alive = client();
    assert_eq!(get(&proxy, "a.test", "/", &[]).await.status, 200);
    let response = kept_alive.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let terminated = Instant::now();
    proxy.signal("TERM");
    let (exited, proxy) = exit_within(proxy, Duration::from_secs(1)).await;
    assert!(
        exited,
        "an idle sluice did not exit within 1 s of SIGTERM (grace period 30 s):\n{}",
        proxy.stderr_text()
    );
    assert!(terminated.elapsed() < Duration::from_millis(1500));
    drop(kept_alive);
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_hands_over_the_sockets_without_failed_requests() {
    let up = upstreams(&["origin"]).await;
    let scratch = scratch_dir();
    let socket = scratch.join("upgrade.sock");
    let mut old = Proxy::start(&format!(
        "[server]\ngrace_period = \"1s\"\nupgrade_socket = \"{}\"\n\n[placements.p]\nendpoints = [{{ address = \"{}\" }}]\n\n[[routes]]\nplacement = \"p\"\n",
        socket.display(),
        up[0].address
    ));
    assert_eq!(get(&old, "any.test", "/", &[]).await.status, 200);

    // A client that opens a new connection per request: a connection is
    // accepted by one process and served by it. (An idle keep-alive
    // connection to the old process may be closed under the client, which
    // HTTP clients retry; that is not what this test measures.)
    const MAX_REQUESTS: usize = 50_000;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
        let url = old.url("/upgrade");
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            while !stop.load(Ordering::SeqCst) && sent.fetch_add(1, Ordering::SeqCst) < MAX_REQUESTS
            {
                let outcome = match client.get(&url).header("connection", "close").send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.bytes().await {
                            Ok(_) if status == 200 => Ok(()),
                            Ok(_) => Err(format!("status {status}")),
                            Err(e) => Err(format!("body: {e}")),
                        }
                    }
                    Err(e) => Err(format!("transport: {e:?}")),
                };
                if let Err(failure) = outcome {
                    failures.lock().unwrap().push(failure);
                }
                // A light pace, so the test does not run out of ephemeral ports.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new process waits on the upgrade socket for the listening sockets.
    let new = Proxy::spawn(
        old.address,
        old.admin,
        old.config_path.clone(),
        scratch.join("state-new"),
        &["--upgrade"],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the new process never opened {}:\n{}",
            socket.display(),
            new.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let served_by_old = old.stdout_lines().len();
    old.signal("QUIT");

    // The old process hands over its sockets, drains and exits.
    let old = tokio::task::spawn_blocking(move || {
        let exited = old.wait_exit(Duration::from_secs(30));
        (exited, old)
    })
    .await
    .unwrap();
    assert!(
        old.0,
        "the old process did not exit after SIGQUIT:\n{}",
        old.1.stderr_text()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }

    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}\nold:\n{}\nnew:\n{}",
        failures.len(),
        sent.load(Ordering::SeqCst),
        &failures[..failures.len().min(5)],
        old.1.stderr_text(),
        new.stderr_text()
    );
    assert!(
        old.1.stdout_lines().len() > served_by_old,
        "the old process served nothing after SIGQUIT"
    );
    assert!(
        !new.stdout_lines().is_empty(),
        "the new process served nothing"
    );
    let reply = get(&new, "any.test", "/", &[]).await;
    assert_eq!((reply.status, reply.served_by()), (200, "origin"));
    let (status, _) = new.admin("GET", "/status").await;
    assert_eq!(status, 200, "the admin listener was handed over too");
}

/// Polls the proxy's stdout until it has `count` lines (5 s at most).
async fn wait_lines(proxy: &Proxy, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = proxy.stdout_lines();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} access-log lines, expected {count}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_has_one_json_line_per_request_and_no_secrets() {
    let up = upstreams(&["origin"]).await;
    let body = |server: &str| {
        format!(
            "{server}[placements.p]\nendpoints = [{{ address = \"{}\" }}]\n\n[[routes]]\nname = \"main\"\nplacement = \"p\"\n",
            up[0].address
        )
    };
    let proxy = Proxy::start(&body(""));
    let before = std::time::SystemTime::now();
    let plain = get(&proxy, "logs.test", "/plain", &[]).await;
    assert_eq!(plain.status, 200);
    let secret = get(
        &proxy,
        "logs.test",
        "/secret?token=topsecret-query&page=2",
        &[("authorization", "Bearer topsecret-token")],
    )
    .await;
    assert_eq!(secret.status, 200);
    assert_eq!(
        secret.echo()["headers"]["authorization"],
        "Bearer topsecret-token",
        "the upstream still gets it"
    );
    let third = get(&proxy, "logs.test", "/third", &[]).await;
    assert_eq!(third.status, 200);
    let after = std::time::SystemTime::now();

    let lines = wait_lines(&proxy, 3).await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let records: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // A line is written after its response is sent, so the next request
    // can be logged first: each reply finds its line by request id.
    let line_of = |reply: &Reply| {
        records
            .iter()
            .find(|record| record["request_id"] == reply.header("x-request-id"))
            .unwrap_or_else(|| {
                panic!(
                    "no line for {:?}: {records:#?}",
                    reply.header("x-request-id")
                )
            })
    };
    for reply in [&plain, &secret, &third] {
        let record = line_of(reply);
        for field in [
            "time",
            "method",
            "host",
            "path",
            "status",
            "duration_ms",
            "bytes_out",
            "placement",
            "endpoint",
            "route_reason",
            "failover_reason",
            "request_id",
        ] {
            assert!(record.get(field).is_some(), "no {field} in {record}");
        }
        assert_eq!(record["method"], "GET");
        assert_eq!(record["host"], "logs.test");
        assert_eq!(record["status"], 200);
        assert!(record["duration_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(record["bytes_out"], reply.body.len());
        assert_eq!(record["placement"], "p");
        assert_eq!(record["endpoint"], up[0].address.to_string());
        assert_eq!(record["route_reason"], "direct");
        assert!(record["failover_reason"].is_null());
        assert_eq!(record["request_id"], reply.header("x-request-id"));
        assert!(record["time"].as_str().unwrap().ends_with('Z'), "{record}");
        // When the request started, to the millisecond it is written in.
        let started = humantime::parse_rfc3339(record["time"].as_str().unwrap()).unwrap();
        assert!(
            started + Duration::from_millis(1) >= before && started <= after,
            "{record}"
        );
    }
    assert_eq!(line_of(&secret)["path"], "/secret", "no query string");
    for text in [lines.join("\n"), proxy.stderr_text()] {
        assert!(!text.contains("topsecret"), "a secret leaked:\n{text}");
    }

    // Switched off: no lines.
    let quiet = Proxy::start(&body("[server]\naccess_log = false\n\n"));
    for _ in 0..3 {
        assert_eq!(get(&quiet, "logs.test", "/", &[]).await.status, 200);
    }
    // The log line is written after the response; give it time to appear.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        quiet.stdout_lines().is_empty(),
        "{:#?}",
        quiet.stdout_lines()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_requests_do_not_leak_secrets_into_the_logs() {
    let broken = FaultUpstream::start("broken").await;
    broken.set(Behavior::Reset);
    let proxy = Proxy::start(&format!(
        "[placements.p]\nendpoints = [{{ address = \"{}\" }}]\n\n[[routes]]\nplacement = \"p\"\n",
        broken.address
    ));
    let reply = get(
        &proxy,
        "logs.test",
        "/secret?token=topsecret-query",
        &[("authorization", "Bearer topsecret-token")],
    )
    .await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    let lines = wait_lines(&proxy, 1).await;
    let record: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        (record["status"].as_u64(), record["path"].as_str()),
        (Some(502), Some("/secret"))
    );
    // The proxy's own error log about the failure is written around the
    // access-log line; wait for it before looking.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !proxy.stderr_text().contains("Fail to proxy") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for text in [proxy.stdout_lines().join("\n"), proxy.stderr_text()] {
        assert!(!text.contains("topsecret"), "a secret leaked:\n{text}");
    }
}
