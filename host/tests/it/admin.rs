//! The admin API: a bearer token guards every endpoint, and the API answers
//! only on its own listener, never on a proxy listener.

use crate::common::{client, upstreams, Proxy};

const TOKEN: &str = "admin-token-7c41e9";

/// A proxy whose admin API needs [`TOKEN`], sending everything to `up`.
fn guarded_proxy(up: std::net::SocketAddr) -> Proxy {
    // The body starts inside the `[admin]` table the harness writes.
    Proxy::start(&format!(
        "token = \"{TOKEN}\"\n\n[placements.p]\nendpoints = [{{ address = \"{up}\" }}]\n[[routes]]\nplacement = \"p\"\n"
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_wrong_bearer_token_gets_401_on_every_endpoint() {
    let up = upstreams(&["app"]).await;
    let proxy = guarded_proxy(up[0].address);
    let endpoints = [
        ("GET", "/status"),
        ("GET", "/config"),
        ("GET", "/metrics"),
        ("POST", "/reload"),
        ("GET", "/nowhere"),
    ];
    let refused = [
        None,
        Some("Bearer wrong-token".to_string()),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
    ];
    for (method, path) in endpoints {
        let url = format!("http://{}{path}", proxy.admin);
        for authorization in &refused {
            let mut request = match method {
                "POST" => client().post(&url),
                _ => client().get(&url),
            };
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                401,
                "{method} {path} with {authorization:?}"
            );
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "a valid bearer token is required");
        }
    }
    for (method, path, expected) in [
        ("GET", "/status", 200),
        ("GET", "/config", 200),
        ("GET", "/metrics", 200),
        ("POST", "/reload", 200),
        ("GET", "/nowhere", 404),
    ] {
        let url = format!("http://{}{path}", proxy.admin);
        let request = match method {
            "POST" => client().post(&url),
            _ => client().get(&url),
        };
        let response = request.bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(
            response.status(),
            expected,
            "{method} {path} with the token"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_never_answers_on_a_proxy_listener() {
    let up = upstreams(&["app"]).await;
    let proxy = guarded_proxy(up[0].address);
    for (method, path) in [
        ("GET", "/status"),
        ("GET", "/config"),
        ("GET", "/metrics"),
        ("POST", "/reload"),
    ] {
        let request = match method {
            "POST" => client().post(proxy.url(path)),
            _ => client().get(proxy.url(path)),
        };
        let response = request.bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
        assert_eq!(
            response.headers()["x-served-by"],
            "app",
            "{method} {path} on the proxy listener went to the upstream"
        );
        let echo: serde_json::Value = response.json().await.unwrap();
        assert_eq!(echo["path"], path, "the upstream saw the request as sent");
    }
    // And the admin listener never proxies: a path no admin endpoint has
    // is its own 404, whatever the Host.
    let response = client()
        .get(format!("http://{}/hello", proxy.admin))
        .header("host", "app.test")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers().get("x-served-by").is_none());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not found");
}
