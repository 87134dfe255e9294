//! Body hooks with the real `body-replace` and test plugins: bodies
//! rewritten both ways with their framing fixed, the buffering cap, the
//! failure policies, and the changes the host refuses from a plugin.

use crate::common::{client, get, send, upstreams, Proxy};
use crate::plugins::{placement, plugin_counter, plugin_dir, plugins_section};

/// A proxy with `plugins` loaded and one route `shop` to an echo upstream,
/// running `attachments` (TOML `[[routes.plugins]]` tables); the rest must
/// live as long as the proxy is used.
async fn proxy_with(
    plugins: &[(&str, &str)],
    attachments: &str,
) -> (
    Proxy,
    (Vec<sluice_demo::upstream::Upstream>, crate::common::Scratch),
) {
    let up = upstreams(&["origin"]).await;
    let dir = plugin_dir(plugins);
    let proxy = Proxy::start(&format!(
        "{}{}[[routes]]\nname = \"shop\"\nplacement = \"origin\"\n{attachments}",
        plugins_section(&dir),
        placement("origin", up[0].address, ""),
    ));
    (proxy, (up, dir))
}

/// POSTs `body` as `content_type` to the echo-body endpoint.
async fn post(
    proxy: &Proxy,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> crate::common::Reply {
    send(
        client()
            .post(proxy.url("/body"))
            .header("host", "shop.test")
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

const REPLACE: &str = r#"config.rules = [{ find = "old", replace = "brand-new" }, { regex = "v([0-9]+)", replace = "version $1" }]"#;

#[tokio::test(flavor = "multi_thread")]
async fn response_bodies_are_rewritten_and_reframed() {
    let attachment = format!(
        "[[routes.plugins]]\nname = \"body-replace\"\nhooks = [\"on_response_body\"]\n{REPLACE}\n"
    );
    let (proxy, _dir) = proxy_with(
        &[("body-replace", "sluice-plugin-body-replace")],
        &attachment,
    )
    .await;
    let reply = post(&proxy, "text/html", "<p>old v2</p>").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "<p>brand-new version 2</p>");
    // The request went up as the client framed it: no request hook runs.
    assert_eq!(reply.header("x-request-framing"), "length 13");
    assert_eq!(reply.header("content-length"), "");
    assert_eq!(reply.header("transfer-encoding"), "chunked");

    // A body of many chunks is gathered whole: a match across two of them
    // is still replaced, and every byte arrives.
    let large = "old ".repeat(50_000);
    let reply = post(&proxy, "text/plain", large).await;
    assert_eq!(reply.body.len(), "brand-new ".len() * 50_000);
    assert!(!reply.body.contains("old"));

    // Other content types stream untouched, their length kept.
    let reply = post(&proxy, "application/json", r#"{"v":"old"}"#).await;
    assert_eq!(reply.body, r#"{"v":"old"}"#);
    let metrics = proxy.metrics().await;
    assert_eq!(
        plugin_counter(&metrics, "body-replace", "body_replace_applied"),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_are_rewritten_before_they_go_upstream() {
    let attachment = format!(
        "[[routes.plugins]]\nname = \"body-replace\"\nhooks = [\"on_request_body\"]\n{REPLACE}\n"
    );
    let (proxy, _dir) = proxy_with(
        &[("body-replace", "sluice-plugin-body-replace")],
        &attachment,
    )
    .await;
    let reply = post(&proxy, "text/plain", "old v7").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // The upstream received the new body, framed chunked since its length
    // changed after the client's head was read.
    assert_eq!(reply.body, "brand-new version 7");
    assert_eq!(reply.header("x-request-framing"), "chunked");
    // A request without a body is not held at all.
    let reply = get(&proxy, "shop.test", "/", &[]).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_cap_get_413_or_the_failure_policy() {
    let attachment =
        format!("[[routes.plugins]]\nname = \"body-replace\"\nbody_limit = \"1KiB\"\n{REPLACE}\n");
    let (proxy, _dir) = proxy_with(
        &[("body-replace", "sluice-plugin-body-replace")],
        &attachment,
    )
    .await;
    // A request over the cap: 413, declared or streamed.
    let reply = post(&proxy, "text/plain", "old ".repeat(512)).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..8).map(|_| Ok("old ".repeat(64))).collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let reply = post(&proxy, "text/plain", streamed).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    // Under the cap both ways: rewritten.
    let reply = post(&proxy, "text/plain", "old").await;
    assert_eq!(reply.body, "brand-new");

    // A response over the cap of a fail-open attachment passes untouched.
    let open = "[[routes.plugins]]\nname = \"body-replace\"\nhooks = [\"on_response_body\"]\nbody_limit = \"1KiB\"\nconfig.rules = [{ find = \"old\", replace = \"new\" }]\n";
    let (proxy, _dir) = proxy_with(&[("body-replace", "sluice-plugin-body-replace")], open).await;
    let large = "old ".repeat(512);
    let reply = post(&proxy, "text/plain", large.clone()).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, large.as_str()));
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(r#"sluice_plugin_failures_total{hook="on_response_body",kind="body_limit",plugin="body-replace"} 1"#),
        "{metrics}"
    );

    // ...and one of a fail-closed attachment gets its status.
    let closed = format!("{open}failure = \"closed\"\nstatus = 502\n");
    let (proxy, _dir) =
        proxy_with(&[("body-replace", "sluice-plugin-body-replace")], &closed).await;
    let reply = post(&proxy, "text/plain", large).await;
    assert_eq!((reply.status, reply.body.as_str()), (502, ""));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_body_hook_is_skipped_or_answered_by_its_policy() {
    let trap = "[[routes.plugins]]\nname = \"hostile\"\nhooks = [\"on_request_body\"]\nconfig.mode = \"body-trap\"\n";
    let (proxy, _dir) = proxy_with(&[("hostile", "sluice-test-hostile")], trap).await;
    let reply = post(&proxy, "text/plain", "kept as it was").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "kept as it was"));
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(
            r#"sluice_plugin_failures_total{hook="on_request_body",kind="trap",plugin="hostile"} 1"#
        ),
        "{metrics}"
    );

    let closed = format!("{trap}failure = \"closed\"\nstatus = 503\n");
    let (proxy, _dir) = proxy_with(&[("hostile", "sluice-test-hostile")], &closed).await;
    let reply = post(&proxy, "text/plain", "never sent").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_the_host_refuses_are_plugin_failures() {
    for (mode, hook) in [
        ("bad-header", "on_request"),
        ("bad-status", "on_request"),
        ("bad-placement", "on_request"),
    ] {
        let open = format!("[[routes.plugins]]\nname = \"hostile\"\nhooks = [\"{hook}\"]\nconfig.mode = \"{mode}\"\n");
        let (proxy, _dir) = proxy_with(&[("hostile", "sluice-test-hostile")], &open).await;
        // Fail-open: the change is dropped and the request proxied as it was.
        let reply = get(&proxy, "shop.test", "/", &[]).await;
        assert_eq!(reply.status, 200, "{mode}: {}", reply.body);
        assert_eq!(reply.served_by(), "origin", "{mode}");
        let metrics = proxy.metrics().await;
        assert!(
            metrics.contains(&format!(
                r#"sluice_plugin_failures_total{{hook="{hook}",kind="refused",plugin="hostile"}} 1"#
            )),
            "{mode}: {metrics}"
        );
        let closed = format!("{open}failure = \"closed\"\nstatus = 502\n");
        let (proxy, _dir) = proxy_with(&[("hostile", "sluice-test-hostile")], &closed).await;
        let reply = get(&proxy, "shop.test", "/", &[]).await;
        assert_eq!(reply.status, 502, "{mode}: {}", reply.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_log_lines_are_escaped_and_rate_limited() {
    let attachments = "[[routes.plugins]]\nname = \"flood\"\nhooks = [\"on_request\"]\nconfig.mode = \"log-flood\"\n[[routes.plugins]]\nname = \"forger\"\nhooks = [\"on_request\"]\nconfig.mode = \"forged-log\"\n";
    let (proxy, _dir) = proxy_with(
        &[
            ("flood", "sluice-test-hostile"),
            ("forger", "sluice-test-hostile"),
        ],
        attachments,
    )
    .await;
    let reply = get(&proxy, "shop.test", "/", &[]).await;
    assert_eq!(reply.status, 200);
    let metrics = proxy.metrics().await;
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with(r#"sluice_plugin_log_lines_dropped_total{plugin="flood"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // The second boundary may fall inside the call: at most two seconds' worth got through.
    assert!(dropped >= 1000 - 2 * 50, "{dropped} dropped\n{metrics}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut log = proxy.stderr_text();
    while !log.contains("forged line") && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        log = proxy.stderr_text();
    }
    assert!(log.contains(r"ok\r\n2026-12-06T00:00:00Z"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-06T00:00:00Z")),
        "{log}"
    );
}
