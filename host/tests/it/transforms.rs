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

/// Writes `request` as it is on a new connection to `address` and returns
/// the first bytes of the answer, as text.
async fn send_raw(address: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
    client.write_all(request.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 4096];
    let n = client.read(&mut response).await.unwrap();
    String::from_utf8_lossy(&response[..n]).into_owned()
}

/// An upstream that answers every request on every connection with an
/// empty 200 and hands each request head it reads to the receiver.
async fn upstream_recording_every_head() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (heads_tx, heads_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let heads_tx = heads_tx.clone();
            tokio::spawn(async move {
                let mut buffered = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buffered.drain(..end + 4).collect();
                        let _ = heads_tx.send(String::from_utf8(head).unwrap());
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(n) if n > 0 => buffered.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
            });
        }
    });
    (address, heads_rx)
}

/// The next request head the upstream of [`upstream_recording_every_head`]
/// read, exactly as it arrived.
async fn next_head(heads: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(5), heads.recv())
        .await
        .expect("the upstream saw the request")
        .expect("the upstream is still listening")
}

/// Each hop-by-hop field is kept from the upstream when it is the only one
/// a request carries, and a request that carries none goes upstream with
/// all of its fields: the proxy looks for them in one pass over the names
/// and strips them only when it finds one (Pingora patch 14).
#[tokio::test(flavor = "multi_thread")]
async fn each_hop_by_hop_field_alone_stays_off_the_upstream() {
    let (upstream, mut heads) = upstream_recording_every_head().await;
    let proxy = Proxy::start(&format!(
        "[placements.o]\nendpoints = [{{ address = \"{upstream}\" }}]\n\
         [[routes]]\nplacement = \"o\"\n"
    ));
    let fields = [
        None,
        Some("Keep-Alive: timeout=5"),
        Some("Proxy-Connection: keep-alive"),
        Some("Proxy-Authenticate: Basic"),
        Some("Proxy-Authorization: Basic Zm9vOmJhcg=="),
        Some("TE: trailers"),
        Some("Trailer: X-Checksum"),
        Some("HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
        // Only a WebSocket upgrade is forwarded (Pingora's default policy).
        Some("Upgrade: h2c"),
        Some("Connection: X-Nominated"),
    ];
    for field in fields {
        let mut request = String::from("GET /hop HTTP/1.1\r\nHost: shop.test\r\n");
        if let Some(field) = field {
            request.push_str(field);
            request.push_str("\r\n");
        }
        request.push_str("X-Nominated: 1\r\nX-Kept: yes\r\n\r\n");
        let response = send_raw(proxy.address, &request).await;
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{field:?}: {response}"
        );
        let head = next_head(&mut heads).await;
        let lines: Vec<String> = head.split("\r\n").map(str::to_ascii_lowercase).collect();
        assert!(lines.contains(&"x-kept: yes".to_string()), "{head}");
        match field {
            None => assert!(lines.contains(&"x-nominated: 1".to_string()), "{head}"),
            Some(field) => {
                let name = field.split(':').next().unwrap().to_ascii_lowercase();
                assert!(
                    !lines
                        .iter()
                        .any(|line| line.starts_with(&format!("{name}:"))),
                    "{field} went upstream: {head}"
                );
                if name == "connection" {
                    assert!(
                        !lines.iter().any(|line| line.starts_with("x-nominated:")),
                        "a field Connection nominates went upstream: {head}"
                    );
                }
            }
        }
    }
}

/// The names a client wrote keep their case on the way upstream, beside
/// the forwarding headers and the header rules' additions, each once:
/// the head Sluice builds from the client's has room for what it adds,
/// and the names it adds are inserted already parsed.
#[tokio::test(flavor = "multi_thread")]
async fn forwarded_head_keeps_client_case_and_adds_each_header_once() {
    let (upstream, mut heads) = upstream_recording_every_head().await;
    let proxy = Proxy::start(&format!(
        "[placements.o]\nendpoints = [{{ address = \"{upstream}\" }}]\n\
         [[routes]]\nplacement = \"o\"\n\
         request_headers = {{ set = {{ \"X-Tenant\" = \"acme\" }}, add = {{ \"via\" = \"sluice\" }} }}\n"
    ));
    let mut request =
        String::from("GET /case HTTP/1.1\r\nHost: shop.test\r\nX-Client-Case: One\r\n");
    for i in 0..20 {
        request.push_str(&format!("X-Extra-{i}: {i}\r\n"));
    }
    // Longer than the room left in the buffer the upstream head is written
    // into, which then grows in the middle of a line (Pingora patch 15).
    let long = "v".repeat(700);
    request.push_str(&format!("X-Long: {long}\r\nX-After-Long: 1\r\n"));
    request.push_str("\r\n");
    let response = send_raw(proxy.address, &request).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let head = next_head(&mut heads).await;
    let lines: Vec<&str> = head.split("\r\n").collect();
    let long_line = format!("X-Long: {long}");
    for expected in [
        "Host: shop.test",
        "X-Client-Case: One",
        "X-Extra-0: 0",
        "X-Extra-19: 19",
        &long_line,
        "X-After-Long: 1",
    ] {
        assert!(lines.contains(&expected), "{expected:?} in {head}");
    }
    for added in [
        "x-forwarded-for: 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: shop.test",
        "via: sluice",
    ] {
        let name = added.split(':').next().unwrap();
        let with_name: Vec<&&str> = lines
            .iter()
            .filter(|line| line.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .collect();
        assert_eq!(with_name, [&added], "{head}");
    }
    let tenant: Vec<&&str> = lines
        .iter()
        .filter(|line| line.to_ascii_lowercase().starts_with("x-tenant:"))
        .collect();
    assert_eq!(tenant.len(), 1, "{head}");
    assert!(tenant[0].ends_with(": acme"), "{head}");
    let request_ids = lines
        .iter()
        .filter(|line| line.starts_with("x-request-id: "))
        .count();
    assert_eq!(request_ids, 1, "{head}");
}
