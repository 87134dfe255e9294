//! HTTP/2 and gRPC upstreams: the four kinds of gRPC call through Sluice
//! over h2c and over TLS, with trailers; requests spread over a
//! placement's HTTP/2 connections; and the pool settings and connection
//! timeouts, each seen from the upstream's side, the kernel's or the pool
//! counters'.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_test_grpc_echo::{serve, EchoClient, EchoRequest, Server};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

use crate::common::{free_port, scratch_dir, upstreams, Proxy};

/// A client of the echo service through `proxy` on `address`, sending
/// `authority`: over h2c, or over TLS trusting `ca` (a PEM certificate).
async fn client(address: SocketAddr, authority: &str, ca: Option<&str>) -> EchoClient<Channel> {
    let scheme = if ca.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .unwrap()
        .origin(format!("{scheme}://{authority}").parse().unwrap())
        .timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        let host = authority.split(':').next().unwrap();
        endpoint = endpoint
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name(host),
            )
            .unwrap();
    }
    EchoClient::new(endpoint.connect().await.unwrap())
}

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.to_string(),
        ..Default::default()
    }
}

/// Makes each of the four kinds of call through `client` and checks what
/// comes back, as served by `upstream`.
async fn four_kinds_of_call(client: &mut EchoClient<Channel>, upstream: &str) {
    let reply = client.unary(request("hello")).await.unwrap().into_inner();
    assert_eq!(
        (reply.message.as_str(), reply.served_by.as_str()),
        ("hello", upstream)
    );

    let mut replies = client
        .server_stream(EchoRequest {
            message: "tick".into(),
            count: 3,
            end_with: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    while let Some(reply) = replies.message().await.unwrap() {
        messages.push(reply.message);
    }
    assert_eq!(messages, ["tick 0", "tick 1", "tick 2"]);

    // A status after the replies travels in the response's trailers.
    let mut replies = client
        .server_stream(EchoRequest {
            message: "tock".into(),
            count: 2,
            end_with: Code::ResourceExhausted as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replies.message().await.unwrap().unwrap().message, "tock 0");
    assert_eq!(replies.message().await.unwrap().unwrap().message, "tock 1");
    let end = replies.message().await.unwrap_err();
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert_eq!(
        end.metadata()
            .get("x-echo-end")
            .map(|v| v.to_str().unwrap()),
        Some("after-replies")
    );

    let sent = tokio_stream::iter(["a", "b", "c"].map(request));
    let reply = client.client_stream(sent).await.unwrap().into_inner();
    assert_eq!(reply.message, "a,b,c");

    // Each request waits for the reply to the one before: a proxy that
    // held either direction back would stall here.
    let (sender, outgoing) = mpsc::channel(1);
    let mut replies = client
        .bidi(ReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    for word in ["one", "two", "three"] {
        sender.send(request(word)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .expect("a bidirectional stream answers each request as it arrives")
            .unwrap()
            .unwrap();
        assert_eq!(reply.message, word);
    }
    drop(sender);
    assert!(replies.message().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_four_kinds_of_grpc_call_pass_through_over_h2c() {
    let upstream = serve("plain-upstream", None).await;
    let proxy = Proxy::start(&format!(
        "[placements.grpc]\nprotocol = \"h2c\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [[routes]]\nname = \"grpc\"\nplacement = \"grpc\"\n",
        upstream.address
    ));
    let mut client = client(proxy.address, "grpc.test", None).await;
    four_kinds_of_call(&mut client, "plain-upstream").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_four_kinds_of_grpc_call_pass_through_over_tls() {
    let dir = scratch_dir();
    let upstream_cert =
        rcgen::generate_simple_self_signed(vec!["grpc-upstream.test".into()]).unwrap();
    let upstream = serve(
        "tls-upstream",
        Some((
            upstream_cert.cert.pem().as_bytes(),
            upstream_cert.signing_key.serialize_pem().as_bytes(),
        )),
    )
    .await;
    let front = rcgen::generate_simple_self_signed(vec!["grpc.test".into()]).unwrap();
    std::fs::write(dir.join("front.pem"), front.cert.pem()).unwrap();
    std::fs::write(dir.join("front.key"), front.signing_key.serialize_pem()).unwrap();
    let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Proxy::start(&format!(
        "[[listeners]]\naddress = \"{tls}\"\ntls = true\n\
         [placements.grpc]\nprotocol = \"h2\"\n\
         endpoints = [{{ address = \"https://{}\", sni = \"grpc-upstream.test\", verify = false }}]\n\
         [[routes]]\nname = \"grpc\"\nhosts = [\"grpc.test\"]\nplacement = \"grpc\"\n\
         tls = {{ cert = \"{dir}/front.pem\", key = \"{dir}/front.key\" }}\n",
        upstream.address,
        dir = dir.display(),
    ));
    let _ = &proxy;
    let mut client = client(tls, "grpc.test", Some(&front.cert.pem())).await;
    four_kinds_of_call(&mut client, "tls-upstream").await;
}

/// A proxy in front of one h2c upstream, its placement's `pool` table
/// given.
async fn pooled(pool: &str) -> (Server, Proxy) {
    let upstream = serve("pooled", None).await;
    let proxy = Proxy::start(&format!(
        "[placements.grpc]\nprotocol = \"h2c\"\nendpoints = [{{ address = \"{}\" }}]\n\
         pool = {{ {pool} }}\n\
         [[routes]]\nname = \"grpc\"\nplacement = \"grpc\"\n",
        upstream.address
    ));
    (upstream, proxy)
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_spread_over_the_configured_number_of_http2_connections() {
    for (lanes, expected) in [(1, 1), (3, 3)] {
        let (upstream, proxy) = pooled(&format!("h2_connections = {lanes}")).await;
        let mut client = client(proxy.address, "grpc.test", None).await;
        for i in 0..12 {
            client.unary(request(&i.to_string())).await.unwrap();
        }
        assert_eq!(
            upstream.control.connections(),
            expected,
            "h2_connections = {lanes}"
        );
        // Twelve calls through one client connection took the upstream
        // connections in turn, not one per call.
        assert_eq!(upstream.control.calls(), 12);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_past_h2_max_streams_open_another_connection() {
    let (upstream, proxy) = pooled("h2_max_streams = 1").await;
    let mut client = client(proxy.address, "grpc.test", None).await;
    // Three bidirectional calls held open at once, each on a stream of
    // its own upstream connection.
    let mut open = Vec::new();
    for word in ["one", "two", "three"] {
        let (sender, outgoing) = mpsc::channel(1);
        let mut replies = client
            .bidi(ReceiverStream::new(outgoing))
            .await
            .unwrap()
            .into_inner();
        sender.send(request(word)).await.unwrap();
        assert_eq!(replies.message().await.unwrap().unwrap().message, word);
        open.push((sender, replies));
    }
    assert_eq!(upstream.control.connections(), 3);
    drop(open);
}

/// The pool counters `/metrics` reports for placement `grpc`, as (hits, misses).
async fn pool_counts(proxy: &Proxy, placement: &str) -> (u64, u64) {
    let metrics = proxy.metrics().await;
    let count = |result: &str| {
        metrics
            .lines()
            .filter(|line| {
                line.starts_with("sluice_pool_requests_total{")
                    && line.contains(&format!("placement=\"{placement}\""))
                    && line.contains(&format!("result=\"{result}\""))
            })
            .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    (count("hit"), count("miss"))
}

#[tokio::test(flavor = "multi_thread")]
async fn max_idle_keeps_that_many_connections_and_metrics_count_hits_and_misses() {
    let up = upstreams(&["web"]).await;
    // One worker: each worker thread keeps its own HTTP/1 connections, and
    // the cap bounds what one worker keeps.
    let proxy = Proxy::start(&format!(
        "[server]\nthreads = 1\n\
         [placements.web]\nendpoints = [{{ address = \"{}\" }}]\npool = {{ max_idle = 1 }}\n\
         [[routes]]\nname = \"web\"\nplacement = \"web\"\n",
        up[0].address
    ));
    let concurrent = |n: usize| {
        let proxy_address = proxy.address;
        async move {
            let client = crate::common::client();
            let calls = (0..n).map(|_| {
                client
                    .get(format!("http://{proxy_address}/delay/300"))
                    .send()
            });
            for response in futures_util::future::join_all(calls).await {
                assert_eq!(response.unwrap().status(), 200);
            }
        }
    };
    // Four at once open four connections; one of them is kept.
    concurrent(4).await;
    // The proxy gives a connection back after its response has gone out.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pool_counts(&proxy, "web").await, (0, 4));
    // Of the next two at once, one at most finds a kept connection (one,
    // unless the upstream closed it meanwhile); without the cap both would.
    concurrent(2).await;
    let (hits, misses) = pool_counts(&proxy, "web").await;
    assert_eq!(hits + misses, 6);
    assert!(hits <= 1, "{hits} requests found a pooled connection");
}

/// Two workers: each new client connection goes to a worker chosen at
/// random, often not the one whose accept loop took it, and must be served
/// from that worker's own I/O driver, through idle waits between requests.
/// Each worker takes back the upstream connections it released, watched
/// meanwhile on that worker, so a connection's requests after the first
/// find one.
#[tokio::test(flavor = "multi_thread")]
async fn two_workers_serve_each_connection_and_reuse_their_own_upstream_connections() {
    const CONNECTIONS: u64 = 8;
    const REQUESTS: u64 = 5;
    let up = upstreams(&["web"]).await;
    let proxy = Proxy::start(&format!(
        "[server]\nthreads = 2\n\
         [placements.web]\nendpoints = [{{ address = \"{}\" }}]\n\
         [[routes]]\nname = \"web\"\nplacement = \"web\"\n",
        up[0].address
    ));
    let proxy_address = proxy.address;
    let connections = (0..CONNECTIONS).map(|_| async move {
        // One client, whose requests in turn take its one connection.
        let client = crate::common::client();
        for _ in 0..REQUESTS {
            let response = client
                .get(format!("http://{proxy_address}/"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert!(!response.text().await.unwrap().is_empty());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    futures_util::future::join_all(connections).await;
    let (hits, misses) = pool_counts(&proxy, "web").await;
    assert_eq!(hits + misses, CONNECTIONS * REQUESTS);
    // A worker opens an upstream connection only for a request that finds
    // none of its own idle: at most one per client connection.
    assert!(
        misses <= CONNECTIONS,
        "{misses} upstream connections opened for {CONNECTIONS} client connections"
    );
}

/// Two workers: an HTTP/2 client connection's streams all run on the worker
/// serving the connection, each answered, many at once.
#[tokio::test(flavor = "multi_thread")]
async fn two_workers_answer_every_stream_of_an_http2_client_connection() {
    let upstream = serve("streams", None).await;
    let proxy = Proxy::start(&format!(
        "[server]\nthreads = 2\n\
         [placements.grpc]\nprotocol = \"h2c\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [[routes]]\nname = \"grpc\"\nplacement = \"grpc\"\n",
        upstream.address
    ));
    // One client connection, 32 calls on it at once; the proxy's listener
    // takes h2c with prior knowledge, as the client speaks it.
    let client = client(proxy.address, "grpc.test", None).await;
    let calls = (0..32).map(|i| {
        let mut client = client.clone();
        async move {
            let reply = client
                .unary(request(&format!("call {i}")))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(reply.message, format!("call {i}"));
        }
    });
    futures_util::future::join_all(calls).await;
    assert_eq!(upstream.control.calls(), 32);
}

/// Whether a TCP connection from any local port to `upstream` has its
/// keep-alive timer running, as `/proc/net/tcp` shows (timer kind 2).
fn keepalive_timer_to(upstream: SocketAddr) -> Vec<bool> {
    let port = format!(":{:04X}", upstream.port());
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local, remote, state (01 = established), then tr:when
            (fields[2].ends_with(&port) && fields[3] == "01").then(|| fields[5].starts_with("02:"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_keepalive_runs_on_upstream_connections_only_when_set() {
    for (keepalive, expected) in [("", false), ("tcp_keepalive = { idle = \"30s\" }", true)] {
        let (upstream, proxy) = pooled(keepalive).await;
        let mut client = client(proxy.address, "grpc.test", None).await;
        client.unary(request("probe me")).await.unwrap();
        // The kernel shows one timer per socket: while data it sent is
        // unacknowledged, the retransmission timer. Looked at a few times,
        // the connection once idle shows its keep-alive timer, if any.
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen = keepalive_timer_to(upstream.address);
            if seen == [true] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen, [expected], "{keepalive:?}");
    }
}

/// Calls `Unary` until it is served by `upstream`, for up to five seconds;
/// returns the reply's `x-failover-reason`.
async fn until_served_by(client: &mut EchoClient<Channel>, upstream: &str) -> Option<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(reply) = client.unary(request("which")).await {
            if reply.get_ref().served_by == upstream {
                return reply
                    .metadata()
                    .get("x-failover-reason")
                    .map(|v| v.to_str().unwrap().to_string());
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "calls never reached {upstream}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A proxy routing to placement `main`, which speaks `protocol` to the
/// endpoint written `endpoint` (plus the lines `extra`), and falls back to
/// an h2c placement of `standby`.
fn with_standby(protocol: &str, endpoint: &str, extra: &str, standby: &Server) -> Proxy {
    Proxy::start(&format!(
        "[placements.main]\nprotocol = \"{protocol}\"\nendpoints = [{{ {endpoint} }}]\n\
         fallback = \"standby\"\n{extra}\n\
         [placements.standby]\nprotocol = \"h2c\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [[routes]]\nname = \"grpc\"\nplacement = \"main\"\n",
        standby.address
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_statuses_in_failure_on_open_the_breaker_and_calls_fail_over() {
    let failing = serve("failing", None).await;
    let standby = serve("standby", None).await;
    let proxy = with_standby(
        "h2c",
        &format!("address = \"{}\"", failing.address),
        "breaker = { consecutive_failures = 2, open_for = \"30s\" }",
        &standby,
    );
    let mut client = client(proxy.address, "grpc.test", None).await;

    // A client's error is the call's business, not the endpoint's fault.
    failing.control.fail_with(Some(Code::NotFound));
    for _ in 0..3 {
        let status = client.unary(request("missing")).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    // A server fault passes through to the caller, and counts.
    failing.control.fail_with(Some(Code::Unavailable));
    for _ in 0..2 {
        let status = client.unary(request("down")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }
    assert_eq!(
        until_served_by(&mut client, "standby").await.as_deref(),
        Some("circuit_open")
    );
    assert_eq!(
        failing.control.calls(),
        5,
        "the open breaker keeps calls away"
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("sluice_upstream_errors_total{")
                && line.contains("kind=\"UNAVAILABLE\"")
                && line.ends_with(" 2")),
        "{metrics}"
    );
    assert!(!metrics.contains("kind=\"NOT_FOUND\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_status_in_the_trailers_counts_against_the_endpoint() {
    let streaming = serve("streaming", None).await;
    let standby = serve("standby", None).await;
    let proxy = with_standby(
        "h2c",
        &format!("address = \"{}\"", streaming.address),
        "breaker = { consecutive_failures = 1, open_for = \"30s\" }",
        &standby,
    );
    let mut client = client(proxy.address, "grpc.test", None).await;
    // Replies with status OK leave the breaker closed.
    let mut replies = client
        .server_stream(EchoRequest {
            message: "fine".into(),
            count: 2,
            end_with: 0,
        })
        .await
        .unwrap()
        .into_inner();
    while replies.message().await.unwrap().is_some() {}
    assert_eq!(
        client
            .unary(request("still"))
            .await
            .unwrap()
            .get_ref()
            .served_by,
        "streaming"
    );
    // Replies, then INTERNAL in the trailers: the call failed.
    let mut replies = client
        .server_stream(EchoRequest {
            message: "broken".into(),
            count: 2,
            end_with: Code::Internal as i32,
        })
        .await
        .unwrap()
        .into_inner();
    while let Ok(Some(_)) = replies.message().await {}
    assert_eq!(
        until_served_by(&mut client, "standby").await.as_deref(),
        Some("circuit_open")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_checks_take_a_not_serving_endpoint_out_and_back() {
    // Over h2c, and over TLS with the endpoint's own certificate.
    let certificate = rcgen::generate_simple_self_signed(vec!["checked.test".into()]).unwrap();
    let pem = (
        certificate.cert.pem(),
        certificate.signing_key.serialize_pem(),
    );
    for tls in [false, true] {
        let checked = serve(
            "checked",
            tls.then_some((pem.0.as_bytes(), pem.1.as_bytes())),
        )
        .await;
        let standby = serve("standby", None).await;
        let (protocol, endpoint) = if tls {
            (
                "h2",
                // An IP address without `sni`: the address names it.
                format!("address = \"https://{}\", verify = false", checked.address),
            )
        } else {
            ("h2c", format!("address = \"{}\"", checked.address))
        };
        let proxy = with_standby(
            protocol,
            &endpoint,
            "health = { kind = \"grpc\", service = \"sluice.test.Echo\", interval = \"100ms\", rise = 1, fall = 1 }",
            &standby,
        );
        let mut client = client(proxy.address, "grpc.test", None).await;
        assert_eq!(
            until_served_by(&mut client, "checked").await,
            None,
            "tls: {tls}"
        );
        checked.control.set_serving(false).await;
        assert_eq!(
            until_served_by(&mut client, "standby").await.as_deref(),
            Some("unhealthy"),
            "tls: {tls}"
        );
        checked.control.set_serving(true).await;
        assert_eq!(
            until_served_by(&mut client, "checked").await,
            None,
            "tls: {tls}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_match_a_grpc_service_and_one_of_its_methods() {
    let unary = serve("unary-only", None).await;
    let rest = serve("the-rest", None).await;
    let proxy = Proxy::start(&format!(
        "[placements.unary]\nprotocol = \"h2c\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [placements.rest]\nprotocol = \"h2c\"\nendpoints = [{{ address = \"{}\" }}]\n\
         [[routes]]\nname = \"unary\"\ngrpc_service = \"sluice.test.Echo\"\ngrpc_method = \"Unary\"\nplacement = \"unary\"\n\
         [[routes]]\nname = \"echo\"\ngrpc_service = \"sluice.test.Echo\"\nplacement = \"rest\"\n",
        unary.address, rest.address
    ));
    let mut client = client(proxy.address, "grpc.test", None).await;
    assert_eq!(
        client
            .unary(request("a"))
            .await
            .unwrap()
            .get_ref()
            .served_by,
        "unary-only"
    );
    let reply = client
        .client_stream(tokio_stream::iter([request("b")]))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().served_by, "the-rest");
    // The health service is neither route's: no route answers it.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        Endpoint::from_shared(format!("http://{}", proxy.address))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_connection_idle_past_timeouts_idle_is_not_reused() {
    let up = upstreams(&["web"]).await;
    for idle in ["200ms", "60s"] {
        let proxy = Proxy::start(&format!(
            "[placements.web]\nendpoints = [{{ address = \"{}\" }}]\ntimeouts = {{ idle = \"{idle}\" }}\n\
             [[routes]]\nname = \"web\"\nplacement = \"web\"\n",
            up[0].address
        ));
        for _ in 0..3 {
            assert_eq!(
                crate::common::get(&proxy, "a.test", "/", &[]).await.status,
                200
            );
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let (hits, misses) = pool_counts(&proxy, "web").await;
        assert_eq!(hits + misses, 3, "idle = {idle}");
        if idle == "200ms" {
            // Each connection was closed before the next request came.
            assert_eq!(hits, 0, "idle = {idle}");
        } else {
            // Kept, and found again; a connection the kernel or the upstream
            // happened to close may still be replaced, so not every time.
            assert!(hits >= 1, "idle = {idle}: {hits} hits, {misses} misses");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connect_past_timeouts_connect_is_answered_504() {
    // A listener that never accepts, its queue filled: the kernel drops
    // further connection attempts, which then wait as for a host that is
    // down.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let stalled = socket.local_addr().unwrap().as_socket().unwrap();
    let _queued: Vec<_> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&stalled, Duration::from_millis(200)).ok()
        })
        .collect();
    let proxy = Proxy::start(&format!(
        "[placements.stalled]\nendpoints = [{{ address = \"{stalled}\" }}]\ntimeouts = {{ connect = \"300ms\" }}\n\
         retry = {{ connect_attempts = 1 }}\n\
         [[routes]]\nname = \"stalled\"\nplacement = \"stalled\"\n"
    ));
    let started = std::time::Instant::now();
    let reply = crate::common::get(&proxy, "a.test", "/", &[]).await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("connecting to placement stalled timed out"),
        "{}",
        reply.body
    );
    // The configured 300 ms, not the default 5 s, ended the wait.
    assert!(started.elapsed() < Duration::from_secs(4));
}
