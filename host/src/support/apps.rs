//! Pingora apps layered in front of others: serving a connection to its
//! end through the app behind.

use std::sync::Arc;

use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

/// Serves `stream` with `inner` until the connection ends, the connections
/// `inner` hands back for reuse included. A layer in front serves those
/// itself: handed back to Pingora, they would come through the layer again
/// (a second TLS handshake, a second admission under the connection caps).
pub async fn serve_to_end<A>(inner: &Arc<A>, stream: Stream, shutdown: &ShutdownWatch)
where
    A: ServerApp + Send + Sync + 'static,
{
    let mut next = inner.process_new(stream, shutdown).await;
    while let Some(stream) = next {
        next = inner.process_new(stream, shutdown).await;
    }
}
