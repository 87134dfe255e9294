//! The demo's control server: `POST /stop/NAME` and `POST /start/NAME` stop
//! and restart a demo upstream, to watch health checks and failover react.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::upstream::Upstream;

/// Serves the control API until the process ends.
pub async fn serve(listener: TcpListener, upstreams: Vec<Upstream>) {
    let upstreams = Arc::new(upstreams);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let upstreams = upstreams.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(upstreams.clone(), request));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    upstreams: Arc<Vec<Upstream>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    let answer = |status: StatusCode, text: String| {
        let mut response = Response::new(Full::new(Bytes::from(text + "\n")));
        *response.status_mut() = status;
        Ok(response)
    };
    let (action, name) = match (
        request.method(),
        path.strip_prefix("/stop/"),
        path.strip_prefix("/start/"),
    ) {
        (&Method::POST, Some(name), _) => ("stop", name),
        (&Method::POST, _, Some(name)) => ("start", name),
        _ => {
            return answer(
                StatusCode::NOT_FOUND,
                "use POST /stop/NAME or POST /start/NAME".into(),
            )
        }
    };
    let Some(upstream) = upstreams.iter().find(|u| u.name == name) else {
        return answer(
            StatusCode::NOT_FOUND,
            format!("no demo upstream named {name}"),
        );
    };
    if action == "stop" {
        upstream.stop();
        return answer(
            StatusCode::OK,
            format!("{name} stopped ({})", upstream.address),
        );
    }
    match upstream.restart().await {
        Ok(()) => answer(
            StatusCode::OK,
            format!("{name} started ({})", upstream.address),
        ),
        Err(e) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{name} cannot listen again: {e}"),
        ),
    }
}
