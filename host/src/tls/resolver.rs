//! Picks the certificate for each TLS handshake from the live snapshot.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::snapshot::Snapshot;

/// Resolves certificates by SNI from whatever snapshot is live, so a
/// reload (new or renewed certificates) applies to the next handshake
/// without touching open connections.
#[derive(Debug)]
pub struct SniResolver {
    live: Arc<ArcSwap<Snapshot>>,
}

impl SniResolver {
    /// A resolver over `live`.
    pub fn new(live: Arc<ArcSwap<Snapshot>>) -> Self {
        Self { live }
    }
}

impl ResolvesServerCert for SniResolver {
    /// The certificate for the client's server name, else the default one;
    /// `None` (no certificate) fails the handshake.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let found = self.live.load().certificates.lookup(hello.server_name());
        if found.is_none() {
            tracing::debug!(server_name = ?hello.server_name(), "no certificate for this name");
        }
        found
    }
}
