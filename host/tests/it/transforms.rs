//! Header rules, path rewrites and forwarding headers, as the upstream and
//! the client see them.

use crate::common::{get, upstreams, Proxy};

#[tokio::test(flavor = "multi_thread")]
async fn header_rules_and_rewrites_reach_the_upstream() {
    let up = upstreams(&["origin"]).await;
    let config = format!(
        r#"[placements.origin]
endpoints = [{{ address = "{addr}" }}]

[placements.vhost]
host_header = "endpoint"
endpoints = [{{ address = "{addr}" }}]

[[routes]]
name = "strip"
path_prefix = "/api"
placement = "origin"
rewrite = {{ strip_prefix = "/api" }}
request_headers = {{ set = {{ "X-Env" = "prod" }}, add = {{ "X-Tag" = "sluice" }}, remove = ["X-Debug"] }}
response_headers = {{ set = {{ "Cache-Control" = "no-store" }}, add = {{ "X-Proxy" = "sluice" }}, remove = ["X-Served-By"] }}

[[routes]]
name = "replace"
path_prefix = "/old"
placement = "origin"
rewrite = {{ prefix = "/old", to = "/new/v2" }}

[[routes]]
name = "ipfs"
path_prefix = "/docs"
placement = "origin"
rewrite = {{ regex = "^(.*)$", to = "/ipfs/bafybeigdyrzt$1" }}

[[routes]]
name = "vhost"
path_prefix = "/vhost"
placement = "vhost"
explain = false
"#,
        addr = up[0].address
    );
    let proxy = Proxy::start(&config);

    let reply = get(
        &proxy,
        "shop.test",
        "/api/users?page=2",
        &[("x-debug", "1"), ("x-tag", "client")],
    )
    .await;
    assert_eq!(reply.status, 200);
    let echo = reply.echo();
    assert_eq!(echo["path"], "/users");
    assert_eq!(echo["query"], "page=2");
    assert_eq!(echo["headers"]["x-env"], "prod");
    assert_eq!(echo["headers"]["x-tag"], "client, sluice");
    assert!(echo["headers"].get("x-debug").is_none());
    assert_eq!(echo["headers"]["host"], "shop.test");
    assert_eq!(reply.header("cache-control"), "no-store");
    assert_eq!(reply.header("x-proxy"), "sluice");
    assert_eq!(reply.header("x-served-by"), "", "removed from the response");

    let reply = get(&proxy, "shop.test", "/old/items/7", &[]).await;
    assert_eq!(reply.echo()["path"], "/new/v2/items/7");

    let reply = get(&proxy, "shop.test", "/docs/readme.md?v=1", &[]).await;
    assert_eq!(reply.echo()["path"], "/ipfs/bafybeigdyrzt/docs/readme.md");
    assert_eq!(reply.echo()["query"], "v=1");

    let reply = get(&proxy, "shop.test", "/vhost", &[]).await;
    assert_eq!(reply.echo()["headers"]["host"], up[0].address.to_string());
    assert_eq!(
        reply.header("x-routed-to"),
        "",
        "explain = false hides routing headers"
    );
    assert_eq!(reply.header("x-upstream"), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_and_request_ids() {
    let up = upstreams(&["origin"]).await;
    let proxy = Proxy::start(&format!(
        "[placements.o]\nendpoints = [{{ address = \"{}\" }}]\n[[routes]]\nplacement = \"o\"\n",
        up[0].address
    ));
    let reply = get(
        &proxy,
        "shop.test:8443",
        "/",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "req-abc-1"),
        ],
    )
    .await;
    let headers = &reply.echo()["headers"];
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "shop.test:8443");
    assert_eq!(headers["x-request-id"], "req-abc-1");
    assert_eq!(reply.header("x-request-id"), "req-abc-1");

    let reply = get(
        &proxy,
        "shop.test",
        "/",
        &[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("te", "trailers"),
        ],
    )
    .await;
    let headers = &reply.echo()["headers"];
    let generated = headers["x-request-id"].as_str().unwrap();
    assert_eq!(generated.len(), 32);
    assert_eq!(reply.header("x-request-id"), generated);
    assert!(
        headers.get("x-secret").is_none(),
        "connection-nominated headers are hop-by-hop: {headers}"
    );
    assert!(headers.get("te").is_none(), "{headers}");
}
