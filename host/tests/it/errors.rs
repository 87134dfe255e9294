//! Failures answered with clear responses, not hangs.

use std::time::{Duration, Instant};

use crate::common::{closed_address, get, upstreams, Proxy};

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_placement_is_502() {
    let proxy = Proxy::start(&format!(
        "[placements.gone]\nendpoints = [{{ address = \"{}\" }}]\n[[routes]]\nplacement = \"gone\"\n",
        closed_address()
    ));
    let reply = get(&proxy, "x.test", "/", &[]).await;
    assert_eq!(reply.status, 502);
    assert!(reply.body.contains("gone"), "{}", reply.body);
    assert_eq!(reply.header("x-routed-to"), "gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_connect_is_retried_on_another_endpoint() {
    let up = upstreams(&["alive"]).await;
    let proxy = Proxy::start(&format!(
        "[server]\nthreads = 1\n[placements.p]\nendpoints = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n[[routes]]\nplacement = \"p\"\n",
        closed_address(),
        up[0].address
    ));
    for _ in 0..6 {
        let reply = get(&proxy, "x.test", "/", &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.served_by(), "alive");
        assert_eq!(reply.header("x-upstream"), up[0].address.to_string());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_upstream_is_504_after_the_read_timeout() {
    let up = upstreams(&["slow"]).await;
    let proxy = Proxy::start(&format!(
        "[placements.slow]\nendpoints = [{{ address = \"{}\" }}]\ntimeouts = {{ read = \"300ms\" }}\n[[routes]]\nplacement = \"slow\"\n",
        up[0].address
    ));
    let started = Instant::now();
    let reply = get(&proxy, "x.test", "/delay/5000", &[]).await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered only after {:?}",
        started.elapsed()
    );
    let fast = get(&proxy, "x.test", "/delay/10", &[]).await;
    assert_eq!(fast.status, 200);
}
