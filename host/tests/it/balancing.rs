//! Load balancing across a placement's endpoints.

use std::collections::HashMap;

use crate::common::{get, upstreams, Proxy};

async fn tally(proxy: &Proxy, requests: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..requests {
        let reply = get(proxy, "lb.test", "/", headers).await;
        assert_eq!(reply.status, 200);
        *counts.entry(reply.served_by().to_string()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_evenly() {
    let up = upstreams(&["a", "b", "c"]).await;
    let endpoints: Vec<_> = up
        .iter()
        .map(|u| format!("{{ address = \"{}\" }}", u.address))
        .collect();
    let proxy = Proxy::start(&format!(
        "[server]\nthreads = 1\n[placements.p]\nendpoints = [{}]\n[[routes]]\nplacement = \"p\"\n",
        endpoints.join(", ")
    ));
    let counts = tally(&proxy, 90, &[]).await;
    for name in ["a", "b", "c"] {
        let n = counts.get(name).copied().unwrap_or(0);
        assert!((27..=33).contains(&n), "{name}: {n} of 90 ({counts:?})");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn weighted_follows_weights() {
    let up = upstreams(&["heavy", "light"]).await;
    let proxy = Proxy::start(&format!(
        r#"[server]
threads = 1
[placements.p]
balance = "weighted"
endpoints = [{{ address = "{}", weight = 3 }}, {{ address = "{}", weight = 1 }}]
[[routes]]
placement = "p"
"#,
        up[0].address, up[1].address
    ));
    let counts = tally(&proxy, 200, &[]).await;
    let heavy = counts.get("heavy").copied().unwrap_or(0);
    assert!(
        (140..=160).contains(&heavy),
        "heavy got {heavy} of 200 ({counts:?})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hash_is_sticky_per_key() {
    let up = upstreams(&["a", "b", "c", "d"]).await;
    let endpoints: Vec<_> = up
        .iter()
        .map(|u| format!("{{ address = \"{}\" }}", u.address))
        .collect();
    let proxy = Proxy::start(&format!(
        r#"[placements.p]
balance = "consistent_hash"
endpoints = [{}]
[[routes]]
routing = {{ key = {{ source = "header", name = "x-user" }}, default = "p" }}
"#,
        endpoints.join(", ")
    ));
    let mut owners = HashMap::new();
    for user in 0..40 {
        let user = format!("user-{user}");
        let counts = tally(&proxy, 5, &[("x-user", &user)]).await;
        assert_eq!(
            counts.len(),
            1,
            "{user} moved between endpoints: {counts:?}"
        );
        owners.insert(user, counts.into_keys().next().unwrap());
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert!(
        distinct.len() >= 3,
        "keys should spread over the ring: {distinct:?}"
    );
}

/// Calls through a placement balanced by `policy` over two quick gRPC
/// servers and one twenty times slower, 30 at a time; returns how many the
/// slow one served of the 300.
async fn calls_served_by_the_slow_endpoint(policy: &str) -> usize {
    use std::time::Duration;

    let mut servers = Vec::new();
    for (name, delay) in [("quick-a", 5), ("quick-b", 5), ("slow", 100)] {
        let server = sluice_test_grpc_echo::serve(name, None).await;
        server.control.set_delay(Duration::from_millis(delay));
        servers.push(server);
    }
    let endpoints: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ address = \"{}\" }}", s.address))
        .collect();
    let proxy = Proxy::start(&format!(
        "[placements.lb]\nprotocol = \"h2c\"\nbalance = \"{policy}\"\nendpoints = [{}]\n\
         [[routes]]\nname = \"lb\"\nplacement = \"lb\"\n",
        endpoints.join(", ")
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let callers = (0..30).map(|_| {
        let mut client = sluice_test_grpc_echo::EchoClient::new(channel.clone());
        tokio::spawn(async move {
            let mut slow = 0;
            for _ in 0..10 {
                let reply = client
                    .unary(sluice_test_grpc_echo::EchoRequest::default())
                    .await
                    .unwrap();
                slow += usize::from(reply.get_ref().served_by == "slow");
            }
            slow
        })
    });
    let mut slow = 0;
    for caller in callers.collect::<Vec<_>>() {
        slow += caller.await.unwrap();
    }
    slow
}

#[tokio::test(flavor = "multi_thread")]
async fn least_request_sends_a_slow_endpoint_fewer_requests() {
    // Round robin gives every endpoint its turn, however slow.
    assert_eq!(calls_served_by_the_slow_endpoint("round_robin").await, 100);
    // Least request sees its calls pile up and sends it fewer: with 30 in
    // flight, one or two of them wait there against 14 on each quick one.
    let slow = calls_served_by_the_slow_endpoint("least_request").await;
    assert!(slow < 60, "the slow endpoint served {slow} of 300");
}
