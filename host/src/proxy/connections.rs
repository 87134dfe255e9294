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
    admission: Admission,
}

/// What every proxy service admits its connections by: the serving
/// snapshot's caps, the open connections (shared, so that the caps hold
/// across listeners), and the metric of those shed.
#[derive(Clone)]
pub struct Admission {
    /// The snapshot whose caps apply.
    pub live: LiveSnapshot,
    /// The connections open on every proxy service.
    pub open: Arc<OpenConnections>,
    /// `sluice_client_connections_shed_total{cap}`.
    pub shed: IntCounterVec,
}

impl<A> ClientConnections<A> {
    /// Admits connections for `inner` under `admission`.
    pub fn new(inner: A, admission: Admission) -> Self {
        Self {
            inner: Arc::new(inner),
            admission,
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
        let caps = self.admission.live.load().connection_caps;
        let _admitted = match self.admission.open.admit(client, caps) {
            Ok(admitted) => admitted,
            Err(shed) => {
                self.admission.shed.with_label_values(&[shed.label()]).inc();
                tracing::debug!(?client, cap = shed.label(), "connection shed at its cap");
                return None;
            }
        };
        crate::support::apps::serve_to_end(&self.inner, stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
