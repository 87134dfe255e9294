//! A small HTTP server used as a demo upstream and as a real upstream in tests.
//!
//! It answers:
//! - `GET /health`: `200 ok`;
//! - `/bytes/N`: a streamed body of `N` bytes;
//! - `/delay/MS`: waits `MS` milliseconds, then echoes;
//! - `/ws`: a WebSocket echo;
//! - anything else: a JSON echo of the request (the upstream's name, method,
//!   path, query and headers, and the number of body bytes received; the
//!   body is counted while streaming, never held).
//!
//! Every response carries `X-Served-By` with the upstream's name.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, std::io::Error>;

/// A running upstream.
pub struct Upstream {
    /// Its name, as it reports it.
    pub name: String,
    /// Where it listens.
    pub address: SocketAddr,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Upstream {
    /// Closes its port and every open connection, as if the process died.
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }

    /// Whether it is serving.
    pub fn is_running(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Listens again on the same address after [`Upstream::stop`].
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop();
        let listener = TcpListener::bind(self.address).await?;
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(serve(listener, Arc::from(self.name.as_str())));
        Ok(())
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `address` (port 0 for an ephemeral port) and serves in the background
/// of the current Tokio runtime.
pub async fn spawn(name: &str, address: SocketAddr) -> std::io::Result<Upstream> {
    let listener = TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    let task = serve(listener, Arc::from(name));
    Ok(Upstream {
        name: name.to_string(),
        address,
        task: std::sync::Mutex::new(Some(task)),
    })
}

/// Accepts connections until aborted. Connections are owned by the accept
/// task, so aborting it closes them too.
fn serve(listener: TcpListener, name: Arc<str>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else {
                        continue;
                    };
                    let name = name.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |request| handle(name.clone(), peer, request));
                        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

async fn handle(
    name: Arc<str>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_string();
    let mut response = if path == "/health" {
        text(StatusCode::OK, "ok\n")
    } else if path == "/ws" {
        websocket(request)
    } else if path == "/body" {
        echo_body(request).await
    } else if let Some(size) = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse::<u64>().ok())
    {
        stream_bytes(size)
    } else {
        if let Some(ms) = path
            .strip_prefix("/delay/")
            .and_then(|n| n.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        echo(&name, peer, request).await
    };
    if let Ok(value) = name.parse() {
        response.headers_mut().insert("x-served-by", value);
    }
    Ok(response)
}

/// The request's body sent back as the response's, with its content type,
/// and how it was framed on the way in (`x-request-framing`).
async fn echo_body(request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let framing = match (
        parts.headers.get("transfer-encoding"),
        parts.headers.get("content-length"),
    ) {
        (Some(_), _) => "chunked".to_string(),
        (None, Some(length)) => format!("length {}", String::from_utf8_lossy(length.as_bytes())),
        (None, None) => "none".to_string(),
    };
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return text(StatusCode::BAD_REQUEST, "body read failed\n"),
    };
    let mut response = Response::new(Full::new(bytes).map_err(|e| match e {}).boxed());
    if let Some(content_type) = parts.headers.get("content-type") {
        response
            .headers_mut()
            .insert("content-type", content_type.clone());
    }
    if let Ok(framing) = framing.parse() {
        response.headers_mut().insert("x-request-framing", framing);
    }
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

async fn echo(name: &str, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let (parts, mut body) = request.into_parts();
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => return text(StatusCode::BAD_REQUEST, "body read failed\n"),
        }
    }
    let mut headers = serde_json::Map::new();
    for (key, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(key.as_str()) {
            Some(serde_json::Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(key.as_str().to_string(), value.into());
            }
        }
    }
    let document = json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "peer": peer.to_string(),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut body = serde_json::to_vec_pretty(&document).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn stream_bytes(size: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let chunks = futures_util::stream::unfold(size, move |remaining| {
        let chunk = chunk.clone();
        async move {
            if remaining == 0 {
                return None;
            }
            let take = remaining.min(CHUNK);
            Some((
                Ok::<_, std::io::Error>(Frame::data(chunk.slice(..take as usize))),
                remaining - take,
            ))
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    response
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(size));
    response
}

fn websocket(mut request: Request<Incoming>) -> Response<Body> {
    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        return text(StatusCode::BAD_REQUEST, "not a websocket handshake\n");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(&mut request).await else {
            return;
        };
        let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let (mut sink, mut stream) = socket.split();
        while let Some(Ok(message)) = stream.next().await {
            if message.is_close() {
                break;
            }
            if (message.is_text() || message.is_binary()) && sink.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = text(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    headers.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    if let Ok(accept) = accept.parse() {
        headers.insert("sec-websocket-accept", accept);
    }
    response
}
