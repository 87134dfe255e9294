//! Route matching and two-level routing, seen by the client.

use crate::common::{get, upstreams, Proxy};

/// Request headers of a test case.
type Headers<'a> = &'a [(&'a str, &'a str)];

fn placements(addresses: &[std::net::SocketAddr]) -> String {
    addresses
        .iter()
        .enumerate()
        .map(|(i, a)| format!("[placements.p{i}]\nendpoints = [{{ address = \"{a}\" }}]\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_key_source_table_hit_and_default() {
    let up = upstreams(&["default", "cell-a"]).await;
    let addrs: Vec<_> = up.iter().map(|u| u.address).collect();
    let config = format!(
        r#"{}
[[routes]]
path_prefix = "/header"
routing = {{ key = {{ source = "header", name = "X-Tenant" }}, table = {{ acme = "p1" }}, default = "p0" }}

[[routes]]
path_prefix = "/cookie"
routing = {{ key = {{ source = "cookie", name = "tenant" }}, table = {{ acme = "p1" }}, default = "p0" }}

[[routes]]
path_prefix = "/query"
routing = {{ key = {{ source = "query", name = "tenant" }}, table = {{ acme = "p1" }}, default = "p0" }}

[[routes]]
hosts = ["*.tenants.test"]
routing = {{ key = {{ source = "host_label", index = 0 }}, table = {{ acme = "p1" }}, default = "p0" }}

[[routes]]
path_prefix = "/t/"
routing = {{ key = {{ source = "path_segment", index = 1 }}, table = {{ acme = "p1" }}, default = "p0" }}
"#,
        placements(&addrs)
    );
    let proxy = Proxy::start(&config);
    let cases: [(&str, &str, Headers); 5] = [
        ("any.test", "/header", &[("x-tenant", "acme")]),
        ("any.test", "/cookie", &[("cookie", "a=b; tenant=acme")]),
        ("any.test", "/query?x=1&tenant=acme", &[]),
        ("acme.tenants.test", "/", &[]),
        ("any.test", "/t/acme/items", &[]),
    ];
    for (host, path, headers) in &cases {
        let hit = get(&proxy, host, path, headers).await;
        assert_eq!(hit.status, 200, "{path}: {}", hit.body);
        assert_eq!(hit.served_by(), "cell-a", "{host}{path}");
        assert_eq!(hit.header("x-routed-to"), "p1");
        assert_eq!(hit.header("x-route-reason"), "table");
        assert_eq!(hit.header("x-upstream"), addrs[1].to_string());
    }
    // The same sources with an unknown key, and with no key: the default.
    let unknown = get(&proxy, "any.test", "/header", &[("x-tenant", "globex")]).await;
    assert_eq!(
        (unknown.served_by(), unknown.header("x-route-reason")),
        ("default", "default")
    );
    let missing = get(&proxy, "any.test", "/cookie", &[]).await;
    assert_eq!(
        (missing.served_by(), missing.header("x-route-reason")),
        ("default", "default")
    );
    let other_host = get(&proxy, "globex.tenants.test", "/", &[]).await;
    assert_eq!(other_host.served_by(), "default");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_key_is_400_when_required_and_unmatched_is_404() {
    let up = upstreams(&["a"]).await;
    let config = format!(
        r#"{}
[[routes]]
hosts = ["strict.test"]
routing = {{ key = {{ source = "header", name = "X-Tenant" }}, default = "p0", on_missing_key = "reject" }}
"#,
        placements(&[up[0].address])
    );
    let proxy = Proxy::start(&config);
    let refused = get(&proxy, "strict.test", "/", &[]).await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("routing key"), "{}", refused.body);
    assert_eq!(refused.header("x-request-id").len(), 32);
    let ok = get(&proxy, "strict.test", "/", &[("x-tenant", "anyone")]).await;
    assert_eq!((ok.status, ok.header("x-route-reason")), (200, "default"));
    let unmatched = get(&proxy, "elsewhere.test", "/", &[]).await;
    assert_eq!(unmatched.status, 404);
    assert!(unmatched.body.contains("no route"), "{}", unmatched.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn host_and_prefix_precedence() {
    let up = upstreams(&[
        "exact-root",
        "exact-api",
        "wild",
        "wild-deep",
        "any-root",
        "any-static",
    ])
    .await;
    let addrs: Vec<_> = up.iter().map(|u| u.address).collect();
    let config = format!(
        r#"{}
[[routes]]
placement = "p4"

[[routes]]
path_prefix = "/static"
placement = "p5"

[[routes]]
hosts = ["*.example.test"]
placement = "p2"

[[routes]]
hosts = ["*.deep.example.test"]
placement = "p3"

[[routes]]
hosts = ["api.example.test"]
placement = "p0"

[[routes]]
hosts = ["api.example.test"]
path_prefix = "/v1"
placement = "p1"
"#,
        placements(&addrs)
    );
    let proxy = Proxy::start(&config);
    let cases = [
        ("api.example.test", "/v1/users", "exact-api"),
        ("API.Example.Test:8080", "/v1/users", "exact-api"),
        ("api.example.test", "/v2", "exact-root"),
        ("api.example.test", "/static/x", "exact-root"),
        ("www.example.test", "/static/x", "wild"),
        ("x.deep.example.test", "/", "wild-deep"),
        ("other.test", "/static/logo.png", "any-static"),
        ("other.test", "/", "any-root"),
    ];
    for (host, path, expected) in cases {
        let reply = get(&proxy, host, path, &[]).await;
        assert_eq!(reply.served_by(), expected, "{host}{path}");
        assert_eq!(reply.header("x-route-reason"), "direct");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_bound_to_a_listener_answer_only_there_and_exact_paths_match_only_themselves() {
    let up = upstreams(&["site"]).await;
    let health_port = crate::common::free_port();
    let config = format!(
        r#"[[listeners]]
name = "health"
address = "127.0.0.1:{health_port}"

{}
[[routes]]
listeners = ["health"]
path = "/health"
respond = {{ body = "OK" }}

[[routes]]
placement = "p0"
"#,
        placements(&[up[0].address])
    );
    let mut proxy = Proxy::start(&config);
    let health: std::net::SocketAddr = format!("127.0.0.1:{health_port}").parse().unwrap();
    proxy.wait_accepting(health, std::time::Duration::from_secs(10));
    let on_health = |path: &str| {
        crate::common::client()
            .get(format!("http://{health}{path}"))
            .send()
    };
    let reply = on_health("/health").await.unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.text().await.unwrap(), "OK");
    // Neither a longer path nor the main listener reach the health route.
    let reply = on_health("/health/x").await.unwrap();
    assert_eq!(reply.headers()["x-served-by"], "site");
    let reply = get(&proxy, "any.test", "/health", &[]).await;
    assert_eq!(reply.served_by(), "site");
}
