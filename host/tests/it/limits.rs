//! The `[server]` limits on what a client sends, seen from a real client.

use crate::common::{get, upstreams, Proxy};
use sluice_demo::upstream::Upstream;

/// A proxy with these `[server]` keys, sending every request to one echo
/// upstream, named `a`, which is returned to be kept alive.
async fn proxy_with(server: &str) -> (Proxy, Vec<Upstream>) {
    let up = upstreams(&["a"]).await;
    let proxy = Proxy::start(&format!(
        "[server]\n{server}\n[placements.p]\nendpoints = [{{ address = \"{}\" }}]\n\n[[routes]]\nplacement = \"p\"\n",
        up[0].address
    ));
    (proxy, up)
}

#[tokio::test(flavor = "multi_thread")]
async fn request_heads_past_a_limit_get_414_or_431_and_never_reach_the_upstream() {
    let (proxy, _up) = proxy_with("").await;
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
    let (proxy, _up) =
        proxy_with("max_header_line = \"1KiB\"\nmax_request_head = \"128KiB\"\n").await;
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

/// Sends `request` on `stream` and reads one response head, returning it.
async fn exchange(stream: &mut tokio::net::TcpStream, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut read = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&read)
        );
        read.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&read).into_owned();
        // The echo's JSON body is short and sent whole with its head.
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if read.len() >= end + 4 + length {
                return text[..end].to_string();
            }
        }
    }
}

/// Whether the server closes `stream` within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buffer)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_is_closed_after_the_keepalive_timeout_and_after_its_request_cap() {
    let (proxy, _up) =
        proxy_with("keepalive_timeout = \"1s\"\nmax_requests_per_connection = 2\n").await;
    let request = "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";

    // Kept open after a request, then closed once idle for the timeout.
    let mut idle = tokio::net::TcpStream::connect(proxy.address).await.unwrap();
    assert!(exchange(&mut idle, request)
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(!closed_within(&mut idle, std::time::Duration::from_millis(500)).await);
    assert!(closed_within(&mut idle, std::time::Duration::from_secs(2)).await);

    // The second request of a connection is its last.
    let mut busy = tokio::net::TcpStream::connect(proxy.address).await.unwrap();
    assert!(exchange(&mut busy, request)
        .await
        .starts_with("HTTP/1.1 200"));
    let last = exchange(&mut busy, request).await;
    assert!(last.starts_with("HTTP/1.1 200"), "{last}");
    assert!(
        closed_within(&mut busy, std::time::Duration::from_millis(500)).await,
        "the connection stayed open after its last request:\n{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_sending_its_body_loses_the_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (proxy, _up) = proxy_with("body_read_timeout = \"1s\"\n").await;
    let mut stream = tokio::net::TcpStream::connect(proxy.address).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\nonly part")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the proxy kept waiting for the body");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request body stopped arriving"), "{answer}");
}

/// Writes `bytes` to `stream` one at a time, `pause` apart; `false` as soon
/// as the server has closed the connection.
async fn dribble(
    stream: &mut tokio::net::TcpStream,
    bytes: &[u8],
    pause: std::time::Duration,
) -> bool {
    use tokio::io::AsyncWriteExt;
    for byte in bytes {
        if stream.write_all(&[*byte]).await.is_err() {
            return false;
        }
        tokio::time::sleep(pause).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_must_arrive_within_the_header_read_timeout() {
    use std::time::Duration;
    let (proxy, _up) =
        proxy_with("header_read_timeout = \"1s\"\nkeepalive_timeout = \"10s\"\n").await;

    // A head sent a byte every 100 ms: each read is quick, the head is not.
    let mut slow = tokio::net::TcpStream::connect(proxy.address).await.unwrap();
    let started = std::time::Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let finished = dribble(&mut slow, head, Duration::from_millis(100)).await;
    assert!(
        !finished || closed_within(&mut slow, Duration::from_millis(100)).await,
        "a head that took {:?} was read in full",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A connection that never starts a request is closed after the same time.
    let mut silent = tokio::net::TcpStream::connect(proxy.address).await.unwrap();
    assert!(!closed_within(&mut silent, Duration::from_millis(500)).await);
    assert!(closed_within(&mut silent, Duration::from_secs(2)).await);

    // A head arriving in pieces within the time is served, and so is the
    // next request of a connection idle for longer than the header timeout
    // but within its keep-alive timeout.
    let mut pieces = tokio::net::TcpStream::connect(proxy.address).await.unwrap();
    assert!(
        dribble(
            &mut pieces,
            b"GET / HTTP/1.1\r\nHost: a.test\r\n",
            Duration::from_millis(10)
        )
        .await
    );
    assert!(exchange(&mut pieces, "\r\n")
        .await
        .starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = exchange(&mut pieces, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");

    let metrics = proxy.metrics().await;
    let line = "sluice_request_heads_refused_total{limit=\"header_read_timeout\"} 2";
    assert!(metrics.contains(line), "{line} missing:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_each_answered_on_a_kept_alive_connection() {
    let (proxy, _up) = proxy_with("").await;
    let mut stream = tokio::net::TcpStream::connect(proxy.address).await.unwrap();
    let first = exchange(
        &mut stream,
        "GET /one HTTP/1.1\r\nHost: a.test\r\n\r\nGET /two HTTP/1.1\r\nHost: a.test\r\n\r\n",
    )
    .await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // The second request was read with the first: nothing more is sent.
    let second = exchange(&mut stream, "").await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}

/// Connects to `proxy` from the loopback address `from` and makes one
/// request; the connection, kept alive, or `None` if it was closed first.
async fn connected_from(proxy: &Proxy, from: [u8; 4]) -> Option<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    let mut stream = socket.connect(proxy.address).await.ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .ok()?;
    let mut buffer = [0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("the proxy neither answered nor closed")
        .ok()?;
    (n > 0 && buffer.starts_with(b"HTTP/1.1 200")).then_some(stream)
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_a_cap_are_shed_while_the_open_ones_keep_serving() {
    let (proxy, _up) = proxy_with("max_connections = 3\nmax_connections_per_client = 2\n").await;
    let request = "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";

    let mut first = connected_from(&proxy, [127, 0, 0, 1]).await.expect("first");
    let mut second = connected_from(&proxy, [127, 0, 0, 1])
        .await
        .expect("second");
    // A third from the same client is past its cap of two.
    assert!(connected_from(&proxy, [127, 0, 0, 1]).await.is_none());
    // Another client still gets in, up to the cap of three in all.
    let mut other = connected_from(&proxy, [127, 0, 0, 2])
        .await
        .expect("other client");
    assert!(connected_from(&proxy, [127, 0, 0, 3]).await.is_none());

    // The open ones keep serving.
    for stream in [&mut first, &mut second, &mut other] {
        assert!(exchange(stream, request).await.starts_with("HTTP/1.1 200"));
    }
    // Once one closes, a new connection gets its place.
    drop(first);
    let mut admitted = None;
    for _ in 0..50 {
        admitted = connected_from(&proxy, [127, 0, 0, 3]).await;
        if admitted.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        admitted.is_some(),
        "no place freed after a connection closed"
    );

    let metrics = proxy.metrics().await;
    for line in [
        "sluice_client_connections_shed_total{cap=\"per_client\"} 1",
        "sluice_client_connections 3",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(
        !metrics.contains("sluice_client_connections_shed_total{cap=\"total\"} 0"),
        "{metrics}"
    );
}

/// A proxy whose one route has this `rate_limit`, in front of upstream `a`.
async fn rate_limited(limit: &str) -> (Proxy, Vec<Upstream>) {
    let up = upstreams(&["a"]).await;
    let proxy = Proxy::start(&format!(
        "[placements.p]\nendpoints = [{{ address = \"{}\" }}]\n\n\
         [[routes]]\nname = \"limited\"\nplacement = \"p\"\nrate_limit = {limit}\n",
        up[0].address
    ));
    (proxy, up)
}

/// The statuses of `n` GETs through `proxy` from loopback address `from`,
/// with these headers.
async fn statuses_from(
    proxy: &Proxy,
    from: [u8; 4],
    n: usize,
    headers: &[(&str, &str)],
) -> Vec<u16> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from(from))
        .build()
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..n {
        let mut request = client.get(proxy.url("/"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        statuses.push(request.send().await.unwrap().status().as_u16());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_per_client_answers_429_with_retry_after_and_counts_per_route() {
    let (proxy, _up) = rate_limited("{ requests = 3, per = \"1m\" }").await;
    let statuses = statuses_from(&proxy, [127, 0, 0, 1], 5, &[]).await;
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // Another client address has its own allowance.
    let statuses = statuses_from(&proxy, [127, 0, 0, 2], 4, &[]).await;
    assert_eq!(statuses, [200, 200, 200, 429]);

    let refused = get(&proxy, "a.test", "/", &[]).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(
        refused.body.contains("more than 3 requests per 1m"),
        "{}",
        refused.body
    );
    assert_eq!(
        refused.header("x-served-by"),
        "",
        "a refused request never goes upstream"
    );
    let retry_after: u64 = refused.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("sluice_rate_limited_total{route=\"limited\"} 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_keyed_on_an_api_key_header_counts_each_key_apart() {
    let (proxy, _up) =
        rate_limited("{ requests = 2, per = \"1m\", key = \"header\", name = \"X-Api-Key\" }")
            .await;
    let localhost = [127, 0, 0, 1];
    let alice = statuses_from(&proxy, localhost, 3, &[("x-api-key", "alice")]).await;
    let bob = statuses_from(&proxy, localhost, 3, &[("x-api-key", "bob")]).await;
    assert_eq!((alice, bob), (vec![200, 200, 429], vec![200, 200, 429]));
    // Requests without the key share one allowance.
    assert_eq!(
        statuses_from(&proxy, localhost, 3, &[]).await,
        [200, 200, 429]
    );
}
