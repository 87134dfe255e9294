//! Bodies stream through in both directions; HTTP/2 and WebSocket pass.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{client, upstreams, Proxy};

const BODY_SIZE: u64 = 100 * 1024 * 1024;

fn direct_config(address: std::net::SocketAddr) -> String {
    format!("[server]\nthreads = 1\n[placements.o]\nendpoints = [{{ address = \"{address}\" }}]\n[[routes]]\nplacement = \"o\"\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_megabytes_each_way_without_buffering() {
    let up = upstreams(&["origin"]).await;
    let proxy = Proxy::start(&direct_config(up[0].address));
    let baseline = proxy.peak_rss();

    // Upload: the upstream counts what arrives.
    let chunk = bytes::Bytes::from(vec![b'u'; 256 * 1024]);
    let chunks = (BODY_SIZE / chunk.len() as u64) as usize;
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let response = client()
        .post(proxy.url("/upload"))
        .header("content-length", BODY_SIZE)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["body_bytes"], BODY_SIZE);

    // Download: count what the proxy streams back.
    let response = client()
        .get(proxy.url(&format!("/bytes/{BODY_SIZE}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        received += chunk.unwrap().len() as u64;
    }
    assert_eq!(received, BODY_SIZE);

    let peak = proxy.peak_rss();
    assert!(
        peak < baseline + 32 * 1024 * 1024,
        "peak RSS grew from {} MiB to {} MiB while streaming 100 MiB each way",
        baseline >> 20,
        peak >> 20
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_downstream_reaches_an_http1_upstream() {
    let up = upstreams(&["origin"]).await;
    let proxy = Proxy::start(&direct_config(up[0].address));
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for path in ["/one", "/two"] {
        let response = h2
            .post(proxy.url(path))
            .body("hello over h2c")
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.headers()["x-routed-to"], "o");
        let echo: serde_json::Value = response.json().await.unwrap();
        assert_eq!(echo["path"], path);
        assert_eq!(echo["version"], "HTTP/1.1");
        assert_eq!(echo["body_bytes"], 14);
        assert_eq!(echo["headers"]["host"], proxy.address.to_string());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrade_passes_through() {
    let up = upstreams(&["origin"]).await;
    let proxy = Proxy::start(&direct_config(up[0].address));
    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.address))
            .await
            .unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-routed-to"], "o");
    for i in 0..20 {
        let text = format!("message {i}");
        socket.send(Message::text(text.clone())).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    socket
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    socket.close(None).await.unwrap();
}
