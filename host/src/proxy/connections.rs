//! Admits each client connection under the caps of the serving snapshot
//! (see [`crate::resilience::connections`]) and counts it while it is open.
//!
//! A connection past a cap is closed as soon as it is accepted, before a
//! byte is read from it (nginx does the same at its connection limits), so
//! shedding costs no more than the accept; the connections already open
//! keep being served. The caps are read from the serving snapshot on every
//! accept, so a reload changes them for the connections that follow.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use prometheus::IntCounterVec;

use super::LiveSnapshot;
use crate::resilience::connections::OpenConnections;

/// A Pingora app in front of `A` that admits each client connection under
/// the caps of the serving snapshot and counts it while it is open.
pub struct ClientConnections<A> {
    inner: Arc<A>,
    live: LiveSnapshot,
    open: Arc<OpenConnections>,
    /// `sluice_client_connections_shed_total{cap}`.
    shed: IntCounterVec,
}

impl<A> ClientConnections<A> {
    /// Admits connections for `inner`; `open` is shared by every service,
    /// so that the caps hold across listeners.
    pub fn new(
        inner: A,
        live: LiveSnapshot,
        open: Arc<OpenConnections>,
        shed: IntCounterVec,
    ) -> Self {
        Self {
            inner: Arc::new(inner),
            live,
            open,
            shed,
        }
    }
}

#[async_trait]
impl<A> ServerApp for ClientConnections<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let client = stream
            .get_socket_digest()
            .and_then(|digest| digest.peer_addr().and_then(|a| a.as_inet()).copied())
            .map(|address| address.ip());
        let caps = self.live.load().connection_caps;
        let _admitted = match self.open.admit(client, caps) {
            Ok(admitted) => admitted,
            Err(shed) => {
                self.shed.with_label_values(&[shed.label()]).inc();
                tracing::debug!(?client, cap = shed.label(), "connection shed at its cap");
                return None;
            }
        };
        // A connection Pingora hands back for reuse is served here, so that
        // it stays counted and is not admitted twice.
        let mut next = self.inner.process_new(stream, shutdown).await;
        while let Some(stream) = next {
            next = self.inner.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
