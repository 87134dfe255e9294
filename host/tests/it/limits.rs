//! The `[server]` limits on what a client sends, seen from a real client.

use crate::common::{get, upstreams, Proxy};

#[tokio::test(flavor = "multi_thread")]
async fn request_heads_past_a_limit_get_414_or_431_and_never_reach_the_upstream() {
    let up = upstreams(&["a"]).await;
    let proxy = Proxy::start(&format!(
        "[placements.p]\nendpoints = [{{ address = \"{}\" }}]\n\n[[routes]]\nplacement = \"p\"\n",
        up[0].address
    ));
    // One 200 KB header: the probe nginx answers with 400 or 431.
    let huge = "a".repeat(200 << 10);
    let reply = get(&proxy, "a.test", "/", &[("x-huge", &huge)]).await;
    assert_eq!(reply.status, 431, "{}", reply.body);
    assert!(reply.body.contains("x-huge header"), "{}", reply.body);
    assert_eq!(reply.header("x-served-by"), "");
    // A target longer than the 8 KiB request line.
    let long = format!("/{}", "b".repeat(9 << 10));
    assert_eq!(get(&proxy, "a.test", &long, &[]).await.status, 414);
    // Forty 1 KiB headers: each line fits, the head does not (32 KiB).
    let value = "c".repeat(1 << 10);
    let names: Vec<String> = (0..40).map(|i| format!("x-h{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), value.as_str())).collect();
    let reply = get(&proxy, "a.test", "/", &headers).await;
    assert_eq!(reply.status, 431, "{}", reply.body);
    assert!(reply.body.contains("request head"), "{}", reply.body);
    // Within the limits, the request is proxied as before.
    let reply = get(&proxy, "a.test", "/", &headers[..20]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.served_by(), "a");

    let metrics = proxy.metrics().await;
    for (limit, count) in [("header_line", 1), ("request_line", 1), ("request_head", 1)] {
        let line = format!("sluice_request_heads_refused_total{{limit=\"{limit}\"}} {count}");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_head_limits_are_set_in_server() {
    let up = upstreams(&["a"]).await;
    let proxy = Proxy::start(&format!(
        "[server]\nmax_header_line = \"1KiB\"\nmax_request_head = \"128KiB\"\n\n[placements.p]\nendpoints = [{{ address = \"{}\" }}]\n\n[[routes]]\nplacement = \"p\"\n",
        up[0].address
    ));
    let over_a_kib = "d".repeat(1100);
    assert_eq!(
        get(&proxy, "a.test", "/", &[("x-a", &over_a_kib)])
            .await
            .status,
        431
    );
    let value = "c".repeat(1000);
    let names: Vec<String> = (0..40).map(|i| format!("x-h{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), value.as_str())).collect();
    assert_eq!(get(&proxy, "a.test", "/", &headers).await.status, 200);
}
