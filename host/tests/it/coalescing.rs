//! Request coalescing, seen from an upstream that counts what reaches it:
//! identical concurrent requests go upstream once and every client gets
//! the whole response; private requests and responses are never shared.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::common::Proxy;

/// An upstream that answers every request after `delay` with a 64 KiB
/// body and `headers`, counting the requests it receives.
async fn counting_upstream(
    delay: Duration,
    headers: &'static [(&'static str, &'static str)],
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        let mut response =
                            Response::new(Full::new(Bytes::from(vec![b'x'; 64 << 10])));
                        for (name, value) in headers {
                            response
                                .headers_mut()
                                .insert(*name, http::HeaderValue::from_static(value));
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, received)
}

fn coalescing_proxy(upstream: SocketAddr) -> Proxy {
    Proxy::start(&format!(
        "[placements.slow]\nendpoints = [{{ address = \"{upstream}\" }}]\n\
         [[routes]]\nname = \"slow\"\nplacement = \"slow\"\ncoalesce = {{ wait = \"10s\" }}\n"
    ))
}

/// Sends `n` identical GETs at once, with these headers; returns each
/// status with its body's length.
async fn at_once(
    proxy: &Proxy,
    n: usize,
    headers: &[(&'static str, &'static str)],
) -> Vec<(u16, usize)> {
    let client = crate::common::client();
    let requests = (0..n).map(|_| {
        let mut request = client.get(proxy.url("/resource?v=1"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.bytes().await.unwrap().len())
        }
    });
    futures_util::future::join_all(requests).await
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_identical_requests_reach_the_upstream_once() {
    let (upstream, received) = counting_upstream(Duration::from_secs(1), &[]).await;
    let proxy = coalescing_proxy(upstream);
    let answers = at_once(&proxy, 200, &[]).await;
    assert!(answers.iter().all(|a| *a == (200, 64 << 10)), "{answers:?}");
    assert_eq!(received.load(Ordering::SeqCst), 1);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("sluice_coalesced_requests_total{role=\"follower\",route=\"slow\"} 199"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_with_cookies_and_responses_with_set_cookie_are_not_shared() {
    let (upstream, received) = counting_upstream(Duration::from_millis(300), &[]).await;
    let proxy = coalescing_proxy(upstream);
    let answers = at_once(&proxy, 5, &[("cookie", "session=abc")]).await;
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    assert_eq!(received.load(Ordering::SeqCst), 5);

    let (upstream, received) =
        counting_upstream(Duration::from_millis(300), &[("set-cookie", "session=new")]).await;
    let proxy = coalescing_proxy(upstream);
    let answers = at_once(&proxy, 5, &[]).await;
    assert!(answers.iter().all(|a| *a == (200, 64 << 10)), "{answers:?}");
    assert_eq!(received.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_that_waits_past_its_wait_goes_upstream_itself() {
    let (upstream, received) = counting_upstream(Duration::from_millis(800), &[]).await;
    let proxy = Proxy::start(&format!(
        "[placements.slow]\nendpoints = [{{ address = \"{upstream}\" }}]\n\
         [[routes]]\nname = \"slow\"\nplacement = \"slow\"\ncoalesce = {{ wait = \"100ms\" }}\n"
    ));
    let answers = at_once(&proxy, 3, &[]).await;
    assert!(answers.iter().all(|a| *a == (200, 64 << 10)), "{answers:?}");
    assert_eq!(received.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_of_different_routing_keys_are_never_shared() {
    let (upstream, received) = counting_upstream(Duration::from_secs(1), &[]).await;
    let proxy = Proxy::start(&format!(
        "[placements.slow]\nendpoints = [{{ address = \"{upstream}\" }}]\n\
         [[routes]]\nname = \"tenants\"\ncoalesce = {{ wait = \"10s\" }}\n\
         routing = {{ key = {{ source = \"header\", name = \"X-Tenant\" }}, default = \"slow\" }}\n"
    ));
    let (acme, globex) = tokio::join!(
        at_once(&proxy, 5, &[("x-tenant", "acme")]),
        at_once(&proxy, 5, &[("x-tenant", "globex")]),
    );
    assert!(
        acme.iter().chain(&globex).all(|a| *a == (200, 64 << 10)),
        "{acme:?} {globex:?}"
    );
    // Each tenant's five went upstream once: two requests, not one.
    assert_eq!(received.load(Ordering::SeqCst), 2);
}
