//! Request coalescing: identical requests of a route that arrive while the
//! first of them waits for its upstream's answer (the followers) go
//! upstream once. The first (the leader) hands the response it sends its
//! client to the followers as it goes, head then body chunks, without
//! holding the whole body: each follower may fall behind by at most the
//! route's buffer, and is cut off past it. A response that may not be
//! shared sends the followers upstream themselves, as does a leader that
//! takes longer than the route's wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderName, AUTHORIZATION, CACHE_CONTROL, COOKIE, PRAGMA, RANGE, SET_COOKIE, VARY,
};
use http::{Method, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora_cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use tokio::sync::mpsc;

use crate::config::{self, Diagnostics, KeyPath};

/// A route's compiled `coalesce`.
#[derive(Debug, Clone)]
pub struct CoalesceSpec {
    /// How long a follower waits for the leader's response head.
    pub wait: Duration,
    /// Request headers whose values are part of what makes requests
    /// identical, besides the method, host, path and query.
    pub headers: Vec<HeaderName>,
    /// How far a follower may fall behind the leader, in bytes.
    pub buffer: usize,
}

/// Compiles a route's `coalesce`.
pub fn compile(
    d: &mut Diagnostics,
    path: &KeyPath,
    written: &config::Coalesce,
) -> Option<CoalesceSpec> {
    let errors_before = d.error_count();
    let wait = d.duration(path.key("wait"), &written.wait);
    let mut headers = Vec::new();
    for (i, name) in written.headers.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => headers.push(name),
            Err(_) => d.error(
                path.key("headers").index(i),
                format!("{name:?} is not a header name"),
            ),
        }
    }
    if written.buffer.0 == 0 {
        d.error(path.key("buffer"), "must be at least 1 byte");
    }
    (d.error_count() == errors_before).then(|| CoalesceSpec {
        wait,
        headers,
        buffer: usize::try_from(written.buffer.0).unwrap_or(usize::MAX),
    })
}

/// What a request is besides its head: its route, whether it came over
/// TLS, its host and its routing key (two requests that differ in any of
/// these may get different answers).
pub struct RequestIdentity<'a> {
    /// The route's name.
    pub route: &'a str,
    /// Whether the client connected over TLS.
    pub tls: bool,
    /// The host the client asked for.
    pub host: &'a str,
    /// The routing key, as the route reads it.
    pub routing_key: Option<&'a str>,
}

impl CoalesceSpec {
    /// What makes `request` identical to others, or `None` when it may not
    /// be coalesced: only GET and HEAD requests without a body,
    /// credentials, a range, conditions or an upgrade, that do not ask to
    /// bypass caches.
    pub fn key(&self, identity: &RequestIdentity<'_>, request: &RequestHeader) -> Option<String> {
        if !matches!(request.method, Method::GET | Method::HEAD) {
            return None;
        }
        let headers = &request.headers;
        let private = [
            COOKIE,
            AUTHORIZATION,
            RANGE,
            http::header::IF_NONE_MATCH,
            http::header::IF_MODIFIED_SINCE,
            http::header::UPGRADE,
            http::header::CONTENT_LENGTH,
            http::header::TRANSFER_ENCODING,
        ];
        if private.iter().any(|name| headers.contains_key(name)) {
            return None;
        }
        let bypass = |name| {
            headers.get_all(name).iter().any(|value| {
                let value = value.as_bytes().to_ascii_lowercase();
                value.windows(8).any(|w| w == b"no-cache")
                    || value.windows(8).any(|w| w == b"no-store")
            })
        };
        if bypass(CACHE_CONTROL) || bypass(PRAGMA) {
            return None;
        }
        let target = request.uri.path_and_query().map_or("/", |p| p.as_str());
        let RequestIdentity {
            route,
            tls,
            host,
            routing_key,
        } = identity;
        let routing_key = routing_key.map_or(String::new(), |k| format!("+{k}"));
        let mut key = format!(
            "{route}\n{tls}\n{}\n{host}\n{target}\n{routing_key}",
            request.method
        );
        for name in &self.headers {
            key.push('\n');
            for value in headers.get_all(name) {
                key.push_str(&String::from_utf8_lossy(value.as_bytes()));
                key.push('\0');
            }
        }
        Some(key)
    }

    /// Whether a response may go to requests other than its own: a status
    /// caches may store, no `Set-Cookie`, `Cache-Control` not saying
    /// `no-store`, `private` or `no-cache`, and `Vary` naming only headers
    /// in the key.
    pub fn shareable(&self, response: &ResponseHeader) -> bool {
        let headers = &response.headers;
        if headers.contains_key(SET_COOKIE) {
            return false;
        }
        let control = CacheControl::from_resp_headers(response);
        let explicit = match control.as_ref().map(|c| (c.is_cacheable(), c.no_cache())) {
            Some((Cacheable::No, _)) | Some((_, true)) => return false,
            Some((Cacheable::Yes, _)) => true,
            _ => false,
        };
        if !explicit && !cacheable_by_default(response.status) {
            return false;
        }
        headers.get_all(VARY).iter().all(|value| {
            value.to_str().is_ok_and(|names| {
                names
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .all(|name| {
                        name != "*"
                            && self
                                .headers
                                .iter()
                                .any(|h| h.as_str().eq_ignore_ascii_case(name))
                    })
            })
        })
    }
}

/// The statuses a cache may store without explicit freshness (RFC 9110,
/// section 15.1).
fn cacheable_by_default(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// What a leader sends its followers.
#[derive(Debug)]
enum Message {
    /// The response head, as the leader's client got it.
    Head(Box<ResponseHeader>),
    /// The next body chunk.
    Chunk(Bytes),
    /// The body is complete.
    End,
    /// The response may not be shared: go upstream.
    GiveUp,
}

/// One follower, as its leader sees it.
struct Follower {
    sender: mpsc::UnboundedSender<Message>,
    /// Bytes sent and not yet taken.
    queued: Arc<AtomicUsize>,
}

/// The requests in flight that others may join, by key.
#[derive(Default)]
pub struct Coalescer {
    flights: Mutex<HashMap<String, Vec<Follower>>>,
}

/// What a request is to its identical ones.
pub enum Joined {
    /// The first: it goes upstream and shares what comes back.
    Leader(Leader),
    /// Another: it waits for the leader's response.
    Follower(FollowerStream),
}

impl Coalescer {
    /// Joins the request with `key` to the flight of its identical ones,
    /// or starts one.
    pub fn join(self: &Arc<Self>, key: String, buffer: usize) -> Joined {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(followers) = flights.get_mut(&key) {
            let (sender, receiver) = mpsc::unbounded_channel();
            let queued = Arc::new(AtomicUsize::new(0));
            followers.push(Follower {
                sender,
                queued: queued.clone(),
            });
            return Joined::Follower(FollowerStream { receiver, queued });
        }
        flights.insert(key.clone(), Vec::new());
        Joined::Leader(Leader {
            coalescer: self.clone(),
            key: Some(key),
            followers: Vec::new(),
            buffer,
        })
    }

    /// Flights waiting for their response head.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn close(&self, key: &str) -> Vec<Follower> {
        self.flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
            .unwrap_or_default()
    }
}

/// The request that goes upstream for its flight. Dropped before its
/// response head, it sends the followers upstream; dropped before the end
/// of the body, it cuts their responses short, as its own was.
pub struct Leader {
    coalescer: Arc<Coalescer>,
    /// The flight's key, until the head closes it to new followers.
    key: Option<String>,
    followers: Vec<Follower>,
    buffer: usize,
}

impl Leader {
    /// Closes the flight to new followers and hands them `head`, if it may
    /// be shared; otherwise sends them upstream. A `bodiless` response
    /// ends here. Returns how many followers got the head.
    pub fn head(&mut self, head: &ResponseHeader, shareable: bool, bodiless: bool) -> usize {
        let Some(key) = self.key.take() else {
            return 0;
        };
        let followers = self.coalescer.close(&key);
        if !shareable {
            for follower in followers {
                let _ = follower.sender.send(Message::GiveUp);
            }
            return 0;
        }
        self.followers = followers
            .into_iter()
            .filter(|f| f.sender.send(Message::Head(Box::new(head.clone()))).is_ok())
            .collect();
        if bodiless {
            self.end();
        }
        self.followers.len()
    }

    /// Hands the followers the next chunk of the body; cuts off those
    /// already `buffer` bytes behind.
    pub fn chunk(&mut self, chunk: &Bytes) {
        let buffer = self.buffer;
        self.followers.retain(|follower| {
            let queued = follower.queued.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len();
            queued <= buffer && follower.sender.send(Message::Chunk(chunk.clone())).is_ok()
        });
    }

    /// Ends the followers' bodies.
    pub fn end(&mut self) {
        for follower in self.followers.drain(..) {
            let _ = follower.sender.send(Message::End);
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            for follower in self.coalescer.close(&key) {
                let _ = follower.sender.send(Message::GiveUp);
            }
        }
        // Followers of an unfinished body see their channel close
        // without its end when `followers` drops.
    }
}

/// A follower's side of its flight.
pub struct FollowerStream {
    receiver: mpsc::UnboundedReceiver<Message>,
    queued: Arc<AtomicUsize>,
}

/// How a follower's body goes on.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Another chunk.
    Chunk(Bytes),
    /// The body is complete.
    End,
    /// The leader's response broke, or this follower fell too far behind.
    Broken,
}

impl FollowerStream {
    /// The leader's response head, if it comes within `wait` and may be
    /// shared; `None` sends the follower upstream itself.
    pub async fn head(&mut self, wait: Duration) -> Option<ResponseHeader> {
        match tokio::time::timeout(wait, self.receiver.recv()).await {
            Ok(Some(Message::Head(head))) => Some(*head),
            _ => None,
        }
    }

    /// The next part of the body.
    pub async fn next(&mut self) -> Next {
        match self.receiver.recv().await {
            Some(Message::Chunk(chunk)) => {
                self.queued.fetch_sub(chunk.len(), Ordering::Relaxed);
                Next::Chunk(chunk)
            }
            Some(Message::End) => Next::End,
            _ => Next::Broken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(headers: &[&str]) -> CoalesceSpec {
        CoalesceSpec {
            wait: Duration::from_secs(1),
            headers: headers
                .iter()
                .map(|h| HeaderName::from_bytes(h.as_bytes()).unwrap())
                .collect(),
            buffer: 10,
        }
    }

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut response = ResponseHeader::build(status, None).unwrap();
        for (name, value) in headers {
            response.append_header(name.to_string(), *value).unwrap();
        }
        response
    }

    #[test]
    fn only_plain_gets_and_heads_are_keyed_with_the_headers_asked_for() {
        let spec = spec(&["accept-encoding"]);
        let identity = |routing_key| RequestIdentity {
            route: "r",
            tls: false,
            host: "a.test",
            routing_key,
        };
        let key = |r: &RequestHeader| spec.key(&identity(None), r);
        // Tenants' requests, told apart by a routing key in a header, are
        // never each other's.
        let plain = request("GET", "/x", &[]);
        assert_ne!(
            spec.key(&identity(Some("acme")), &plain),
            spec.key(&identity(Some("globex")), &plain)
        );
        assert_ne!(spec.key(&identity(Some("acme")), &plain), key(&plain));
        let gzip = key(&request("GET", "/x?q=1", &[("accept-encoding", "gzip")])).unwrap();
        assert_ne!(gzip, key(&request("GET", "/x?q=1", &[])).unwrap());
        assert_ne!(
            gzip,
            key(&request("GET", "/x?q=2", &[("accept-encoding", "gzip")])).unwrap()
        );
        assert_ne!(
            gzip,
            key(&request("HEAD", "/x?q=1", &[("accept-encoding", "gzip")])).unwrap()
        );
        assert_eq!(
            key(&request(
                "GET",
                "/x?q=1",
                &[("x-other", "1"), ("accept-encoding", "gzip")]
            )),
            Some(gzip)
        );
        for refused in [
            request("POST", "/x", &[]),
            request("GET", "/x", &[("cookie", "session=1")]),
            request("GET", "/x", &[("authorization", "Bearer t")]),
            request("GET", "/x", &[("range", "bytes=0-1")]),
            request("GET", "/x", &[("cache-control", "no-cache")]),
            request("GET", "/x", &[("upgrade", "websocket")]),
        ] {
            assert_eq!(key(&refused), None, "{refused:?}");
        }
    }

    #[test]
    fn cookies_private_and_uncacheable_responses_are_not_shared() {
        let spec = spec(&["accept-encoding"]);
        assert!(spec.shareable(&response(200, &[])));
        assert!(spec.shareable(&response(200, &[("vary", "Accept-Encoding")])));
        assert!(spec.shareable(&response(302, &[("cache-control", "max-age=10")])));
        for refused in [
            response(200, &[("set-cookie", "a=1")]),
            response(200, &[("cache-control", "private")]),
            response(200, &[("cache-control", "no-store")]),
            response(200, &[("cache-control", "no-cache")]),
            response(200, &[("vary", "Cookie")]),
            response(200, &[("vary", "*")]),
            response(302, &[]),
            response(500, &[]),
        ] {
            assert!(!spec.shareable(&refused), "{refused:?}");
        }
    }

    #[tokio::test]
    async fn followers_get_the_head_and_chunks_and_laggards_are_cut_off() {
        let coalescer = Arc::new(Coalescer::default());
        let Joined::Leader(mut leader) = coalescer.join("k".into(), 10) else {
            panic!("the first request leads");
        };
        let Joined::Follower(mut reader) = coalescer.join("k".into(), 10) else {
            panic!("the second follows");
        };
        let Joined::Follower(mut laggard) = coalescer.join("k".into(), 10) else {
            panic!("the third follows");
        };
        assert_eq!(leader.head(&response(200, &[]), true, false), 2);
        // The head closed the flight: a new request leads its own.
        assert!(matches!(coalescer.join("k".into(), 10), Joined::Leader(_)));
        assert_eq!(
            reader.head(Duration::from_secs(1)).await.unwrap().status,
            200
        );
        assert!(laggard.head(Duration::from_secs(1)).await.is_some());
        leader.chunk(&Bytes::from_static(b"12345678"));
        assert_eq!(
            reader.next().await,
            Next::Chunk(Bytes::from_static(b"12345678"))
        );
        // The laggard has taken nothing: 8 + 8 bytes is past its 10.
        leader.chunk(&Bytes::from_static(b"abcdefgh"));
        leader.end();
        assert_eq!(
            reader.next().await,
            Next::Chunk(Bytes::from_static(b"abcdefgh"))
        );
        assert_eq!(reader.next().await, Next::End);
        assert_eq!(
            laggard.next().await,
            Next::Chunk(Bytes::from_static(b"12345678"))
        );
        assert_eq!(laggard.next().await, Next::Broken);
    }

    #[tokio::test]
    async fn an_unshareable_response_or_a_lost_leader_sends_followers_upstream() {
        let coalescer = Arc::new(Coalescer::default());
        let Joined::Leader(mut leader) = coalescer.join("k".into(), 10) else {
            panic!()
        };
        let Joined::Follower(mut follower) = coalescer.join("k".into(), 10) else {
            panic!()
        };
        leader.head(&response(200, &[("set-cookie", "a=1")]), false, false);
        assert!(follower.head(Duration::from_secs(1)).await.is_none());

        let Joined::Leader(leader) = coalescer.join("j".into(), 10) else {
            panic!()
        };
        let Joined::Follower(mut follower) = coalescer.join("j".into(), 10) else {
            panic!()
        };
        drop(leader);
        assert!(follower.head(Duration::from_secs(1)).await.is_none());
        assert_eq!(coalescer.waiting(), 0);
    }
}
