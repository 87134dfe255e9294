//! Breakers, health, failover, limits and retries, driven by the fault upstream.

use std::time::{Duration, Instant};

use crate::common::{client, get, Proxy};
use crate::fault::{Behavior, FaultUpstream};

/// Placement `primary` on `primary`, with `settings` lines (and short
/// timeouts unless they set their own), falling back to placement `backup`
/// on `backup`; one route to `primary`.
fn failover_config(primary: &FaultUpstream, backup: &FaultUpstream, settings: &str) -> String {
    let timeouts = if settings.contains("timeouts") {
        ""
    } else {
        "timeouts = { read = \"400ms\", connect = \"400ms\" }"
    };
    format!(
        r#"[placements.primary]
endpoints = [{{ address = "{}" }}]
fallback = "backup"
{timeouts}
{settings}

[placements.backup]
endpoints = [{{ address = "{}" }}]

[[routes]]
placement = "primary"
"#,
        primary.address, backup.address
    )
}

async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, timeout: Duration, mut condition: F) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn breaker_opens_on_5xx_fails_over_and_closes_through_half_open() {
    let primary = FaultUpstream::start("primary").await;
    let backup = FaultUpstream::start("backup").await;
    let proxy = Proxy::start(&failover_config(
        &primary,
        &backup,
        "breaker = { consecutive_failures = 3, open_for = \"500ms\", half_open_probes = 1, close_after = 2 }\npassive = { failures = 0 }",
    ));
    primary.set(Behavior::Status(500));
    for i in 0..3 {
        let reply = get(&proxy, "x.test", "/", &[]).await;
        assert_eq!(reply.status, 500, "failure {i} passes through");
        assert_eq!(reply.served_by(), "primary");
        let expected = if i < 2 { "closed" } else { "open" };
        assert_eq!(
            reply.header("x-circuit-state"),
            expected,
            "after failure {i}"
        );
    }
    let reply = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.served_by(), "backup");
    assert_eq!(reply.header("x-routed-to"), "backup");
    assert_eq!(reply.header("x-failover-reason"), "circuit_open");
    assert_eq!(
        reply.header("x-circuit-state"),
        "closed",
        "the state of the endpoint actually used"
    );
    assert_eq!(
        primary.hits(),
        3,
        "an open breaker sends nothing to its endpoint"
    );

    primary.set(Behavior::Ok);
    tokio::time::sleep(Duration::from_millis(550)).await;
    let probe = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(
        probe.served_by(),
        "primary",
        "the first request after open_for is a probe"
    );
    assert_eq!(probe.header("x-circuit-state"), "half_open");
    let second = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(
        (second.served_by(), second.header("x-circuit-state")),
        ("primary", "closed")
    );
    assert_eq!(second.header("x-failover-reason"), "");

    let metrics = proxy.metrics().await;
    for transition in [
        r#"from="closed",placement="primary",to="open""#,
        r#"from="open",placement="primary",to="half_open""#,
        r#"from="half_open",placement="primary",to="closed""#,
    ] {
        assert!(
            metrics.lines().any(
                |l| l.starts_with("sluice_breaker_transitions_total") && l.contains(transition)
            ),
            "missing transition {transition}:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(
            r#"sluice_failovers_total{from="primary",reason="circuit_open",to="backup"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_probe_reopens_for_longer() {
    let primary = FaultUpstream::start("primary").await;
    let backup = FaultUpstream::start("backup").await;
    let proxy = Proxy::start(&failover_config(
        &primary,
        &backup,
        "breaker = { consecutive_failures = 1, open_for = \"300ms\", max_open_for = \"5s\" }\npassive = { failures = 0 }",
    ));
    primary.set(Behavior::Status(502));
    assert_eq!(get(&proxy, "x.test", "/", &[]).await.status, 502);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let probe = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(
        (probe.served_by(), probe.status),
        ("primary", 502),
        "the probe fails"
    );
    // Reopened for 600 ms now: 350 ms later it is still open.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        get(&proxy, "x.test", "/", &[])
            .await
            .header("x-failover-reason"),
        "circuit_open"
    );
    assert_eq!(primary.hits(), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    primary.set(Behavior::Ok);
    assert_eq!(get(&proxy, "x.test", "/", &[]).await.served_by(), "primary");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_failure_kind_counts() {
    let primary = FaultUpstream::start("primary").await;
    let backup = FaultUpstream::start("backup").await;
    let proxy = Proxy::start(&failover_config(
        &primary,
        &backup,
        "breaker = { consecutive_failures = 3, open_for = \"30s\" }\npassive = { failures = 0 }",
    ));
    primary.push(1, Behavior::Reset);
    primary.push(1, Behavior::Hang);
    primary.push(1, Behavior::Status(503));
    let reset = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(reset.status, 502, "{}", reset.body);
    let hang = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(hang.status, 504, "{}", hang.body);
    let unavailable = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(unavailable.status, 503);
    assert_eq!(unavailable.header("x-circuit-state"), "open");
    let failover = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(failover.header("x-failover-reason"), "circuit_open");
    let metrics = proxy.metrics().await;
    for kind in ["reset", "timeout", "5xx"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("sluice_upstream_errors_total")
                    && l.contains(&format!("kind=\"{kind}\""))),
            "no {kind} error counted:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_port_opens_the_breaker_with_connect_failures() {
    let primary = FaultUpstream::start("primary").await;
    let backup = FaultUpstream::start("backup").await;
    let proxy = Proxy::start(&failover_config(
        &primary,
        &backup,
        "breaker = { consecutive_failures = 2, open_for = \"300ms\", close_after = 1 }\npassive = { failures = 0 }",
    ));
    primary.stop();
    for _ in 0..2 {
        assert_eq!(get(&proxy, "x.test", "/", &[]).await.status, 502);
    }
    let reply = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(
        (reply.served_by(), reply.header("x-failover-reason")),
        ("backup", "circuit_open")
    );
    primary.restart().await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let back = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(
        (back.served_by(), back.header("x-circuit-state")),
        ("primary", "closed")
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("sluice_upstream_errors_total") && l.contains("kind=\"connect\"")
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn half_open_probe_bound_holds_under_concurrency() {
    let primary = FaultUpstream::start("primary").await;
    let backup = FaultUpstream::start("backup").await;
    let proxy = Proxy::start(&failover_config(
        &primary,
        &backup,
        "breaker = { consecutive_failures = 1, open_for = \"300ms\", half_open_probes = 2, close_after = 5 }\npassive = { failures = 0 }\ntimeouts = { read = \"5s\" }",
    ));
    primary.set(Behavior::Status(500));
    assert_eq!(get(&proxy, "x.test", "/", &[]).await.status, 500);
    let before = primary.hits();
    primary.set(Behavior::Delay(Duration::from_millis(800)));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let requests: Vec<_> = (0..12)
        .map(|_| {
            let url = proxy.url("/");
            tokio::spawn(async move {
                client().get(url).send().await.unwrap().headers()["x-served-by"]
                    .to_str()
                    .unwrap()
                    .to_string()
            })
        })
        .collect();
    let mut served = Vec::new();
    for request in requests {
        served.push(request.await.unwrap());
    }
    let to_primary = served.iter().filter(|s| *s == "primary").count();
    assert_eq!(
        to_primary, 2,
        "exactly half_open_probes requests reach the endpoint: {served:?}"
    );
    assert_eq!(primary.hits() - before, 2);
    assert_eq!(served.iter().filter(|s| *s == "backup").count(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn active_health_checks_fail_over_as_unhealthy_and_recover() {
    let primary = FaultUpstream::start("primary").await;
    let backup = FaultUpstream::start("backup").await;
    let proxy = Proxy::start(&failover_config(
        &primary,
        &backup,
        "health = { interval = \"100ms\", timeout = \"300ms\", rise = 2, fall = 2 }",
    ));
    assert_eq!(get(&proxy, "x.test", "/", &[]).await.served_by(), "primary");
    primary.set_healthy(false);
    wait_until(
        "failover on unhealthy",
        Duration::from_secs(5),
        async || {
            let reply = get(&proxy, "x.test", "/", &[]).await;
            reply.served_by() == "backup" && reply.header("x-failover-reason") == "unhealthy"
        },
    )
    .await;
    let (_, status) = proxy.admin("GET", "/status").await;
    let primary_status = status["placements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "primary")
        .unwrap()
        .clone();
    assert_eq!(primary_status["healthy"], false, "{status}");
    assert_eq!(
        primary_status["endpoints"][0]["down_reason"],
        "active_check"
    );
    assert!(proxy.metrics().await.contains(&format!(
        "sluice_endpoint_healthy{{endpoint=\"{}\",placement=\"primary\"}} 0",
        primary.address
    )));
    primary.set_healthy(true);
    wait_until(
        "traffic back on primary",
        Duration::from_secs(5),
        async || get(&proxy, "x.test", "/", &[]).await.served_by() == "primary",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn passive_health_marks_down_after_consecutive_failures() {
    let primary = FaultUpstream::start("primary").await;
    let backup = FaultUpstream::start("backup").await;
    let proxy = Proxy::start(&failover_config(
        &primary,
        &backup,
        "breaker = { consecutive_failures = 0, failure_rate = 0.0 }\npassive = { failures = 2, cooldown = \"400ms\" }",
    ));
    primary.set(Behavior::Status(500));
    get(&proxy, "x.test", "/", &[]).await;
    get(&proxy, "x.test", "/", &[]).await;
    let reply = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(
        (reply.served_by(), reply.header("x-failover-reason")),
        ("backup", "unhealthy")
    );
    primary.set(Behavior::Ok);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(get(&proxy, "x.test", "/", &[]).await.served_by(), "primary");
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_left_is_503_with_the_circuit_state() {
    let only = FaultUpstream::start("only").await;
    let proxy = Proxy::start(&format!(
        "[placements.only]\nendpoints = [{{ address = \"{}\" }}]\nbreaker = {{ consecutive_failures = 1, open_for = \"30s\" }}\n[[routes]]\nplacement = \"only\"\n",
        only.address
    ));
    only.set(Behavior::Status(500));
    assert_eq!(get(&proxy, "x.test", "/", &[]).await.status, 500);
    let reply = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("x-circuit-state"), "open");
    assert_eq!(reply.header("x-failover-reason"), "circuit_open");
    assert_eq!(reply.header("x-routed-to"), "only");
}

#[tokio::test(flavor = "multi_thread")]
async fn route_default_ends_the_fallback_chain() {
    let tenant = FaultUpstream::start("tenant").await;
    let shared = FaultUpstream::start("shared").await;
    let proxy = Proxy::start(&format!(
        r#"[placements.tenant]
endpoints = [{{ address = "{}" }}]
breaker = {{ consecutive_failures = 1, open_for = "30s" }}
[placements.shared]
endpoints = [{{ address = "{}" }}]
[[routes]]
routing = {{ key = {{ source = "header", name = "x-tenant" }}, table = {{ acme = "tenant" }}, default = "shared" }}
"#,
        tenant.address, shared.address
    ));
    tenant.set(Behavior::Status(500));
    get(&proxy, "x.test", "/", &[("x-tenant", "acme")]).await;
    let reply = get(&proxy, "x.test", "/", &[("x-tenant", "acme")]).await;
    assert_eq!(
        (reply.served_by(), reply.header("x-route-reason")),
        ("shared", "table")
    );
    assert_eq!(
        (
            reply.header("x-routed-to"),
            reply.header("x-failover-reason")
        ),
        ("shared", "circuit_open")
    );
}

async fn parallel_gets(proxy: &Proxy, n: usize) -> Vec<(u16, String, String)> {
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let url = proxy.url("/");
            tokio::spawn(async move {
                let response = client().get(url).send().await.unwrap();
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default()
                };
                (
                    response.status().as_u16(),
                    header("x-served-by"),
                    header("x-failover-reason"),
                )
            })
        })
        .collect();
    let mut results = Vec::new();
    for request in requests {
        results.push(request.await.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_limit_rejects_with_429_or_fails_over() {
    let primary = FaultUpstream::start("primary").await;
    let backup = FaultUpstream::start("backup").await;
    primary.set(Behavior::Delay(Duration::from_millis(600)));
    let proxy = Proxy::start(&failover_config(
        &primary,
        &backup,
        "limits = { max_concurrency = 2 }\ntimeouts = { read = \"5s\" }",
    ));
    let results = parallel_gets(&proxy, 6).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let limited = results.iter().filter(|r| r.0 == 429).count();
    assert_eq!((ok, limited), (2, 4), "{results:?}");
    // The permit is held until the body ends, then freed.
    assert_eq!(get(&proxy, "x.test", "/", &[]).await.status, 200);

    let proxy = Proxy::start(&failover_config(
        &primary,
        &backup,
        "limits = { max_concurrency = 2, on_limit = \"failover\" }\ntimeouts = { read = \"5s\" }",
    ));
    let results = parallel_gets(&proxy, 6).await;
    assert!(results.iter().all(|r| r.0 == 200), "{results:?}");
    let failed_over: Vec<_> = results.iter().filter(|r| r.1 == "backup").collect();
    assert_eq!(failed_over.len(), 4, "{results:?}");
    assert!(
        failed_over.iter().all(|r| r.2 == "concurrency_limit"),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_permit_is_held_until_the_body_ends() {
    let slow = FaultUpstream::start("slow").await;
    slow.set(Behavior::SlowBody(Duration::from_millis(150)));
    let proxy = Proxy::start(&format!(
        "[placements.p]\nendpoints = [{{ address = \"{}\" }}]\nlimits = {{ max_concurrency = 1 }}\n[[routes]]\nplacement = \"p\"\n",
        slow.address
    ));
    let url = proxy.url("/");
    let streaming = tokio::spawn(async move {
        let response = client().get(url).send().await.unwrap();
        (
            response.status().as_u16(),
            response.bytes().await.unwrap().len(),
        )
    });
    // The body takes 1.5 s; well inside it, the permit is still held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(second.status, 429, "{:?}", proxy.stdout_lines());
    assert_eq!(streaming.await.unwrap(), (200, 10));
    tokio::time::sleep(Duration::from_millis(50)).await;
    slow.set(Behavior::Ok);
    assert_eq!(get(&proxy, "x.test", "/", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn body_limit_from_content_length_and_while_streaming() {
    let upstream = FaultUpstream::start("upstream").await;
    let proxy = Proxy::start(&format!(
        "[placements.p]\nendpoints = [{{ address = \"{}\" }}]\nlimits = {{ max_body = \"1KiB\" }}\n[[routes]]\nplacement = \"p\"\n",
        upstream.address
    ));
    let small = client()
        .post(proxy.url("/"))
        .body(vec![b'a'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    let declared = client()
        .post(proxy.url("/"))
        .body(vec![b'a'; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 413);
    let hits = upstream.hits();
    // Chunked: no Content-Length, so the limit is enforced as the body streams.
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'c'; 512]))),
    );
    let chunked = client()
        .post(proxy.url("/"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(chunked.status(), 413);
    assert!(upstream.hits() <= hits + 1);
    let metrics = proxy.metrics().await;
    assert!(
        !metrics.contains("sluice_upstream_errors_total{"),
        "a client's oversized body is not an upstream failure:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_follow_the_method_and_the_configured_bound() {
    let first = FaultUpstream::start("first").await;
    let second = FaultUpstream::start("second").await;
    let proxy = Proxy::start(&format!(
        r#"[server]
threads = 1
[placements.p]
endpoints = [{{ address = "{}" }}, {{ address = "{}" }}]
retry = {{ attempts = 1 }}
passive = {{ failures = 0 }}
breaker = {{ consecutive_failures = 0, failure_rate = 0.0 }}
[[routes]]
placement = "p"
"#,
        first.address, second.address
    ));
    first.set(Behavior::Reset);
    for _ in 0..4 {
        let reply = get(&proxy, "x.test", "/", &[]).await;
        assert_eq!(
            (reply.status, reply.served_by()),
            (200, "second"),
            "a GET is retried on the other endpoint"
        );
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            client()
                .post(proxy.url("/"))
                .body("payload")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(
        statuses.contains(&502),
        "a POST with a body is never retried after a reset: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_with_nowhere_to_retry_stays_504() {
    let only = FaultUpstream::start("only").await;
    only.set(Behavior::Hang);
    let proxy = Proxy::start(&format!(
        "[placements.p]\nendpoints = [{{ address = \"{}\" }}]\ntimeouts = {{ read = \"300ms\" }}\nretry = {{ attempts = 2 }}\n[[routes]]\nplacement = \"p\"\n",
        only.address
    ));
    let reply = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(
        only.hits(),
        1,
        "no second attempt on the endpoint that timed out"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_fallback_reports_why_the_routed_placement_was_skipped() {
    let primary = FaultUpstream::start("primary").await;
    let backup = FaultUpstream::start("backup").await;
    primary.set(Behavior::Status(500));
    backup.set(Behavior::Delay(Duration::from_millis(800)));
    let proxy = Proxy::start(&format!(
        r#"[placements.primary]
endpoints = [{{ address = "{}" }}]
fallback = "backup"
breaker = {{ consecutive_failures = 1, open_for = "30s" }}
[placements.backup]
endpoints = [{{ address = "{}" }}]
limits = {{ max_concurrency = 1 }}
[[routes]]
placement = "primary"
"#,
        primary.address, backup.address
    ));
    assert_eq!(get(&proxy, "x.test", "/", &[]).await.status, 500);
    let url = proxy.url("/");
    let holding =
        tokio::spawn(async move { client().get(url).send().await.unwrap().status().as_u16() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let full = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(full.status, 429, "{}", full.body);
    assert_eq!(
        (full.header("x-routed-to"), full.header("x-failover-reason")),
        ("backup", "circuit_open")
    );
    assert_eq!(holding.await.unwrap(), 200);
}
