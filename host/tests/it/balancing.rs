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
