//! Picks the certificate for each TLS handshake from the live snapshot and
//! the ACME-issued certificates.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::store::AcmeCertificates;
use crate::snapshot::Snapshot;

/// Resolves certificates by SNI from whatever snapshot is live, so a
/// reload (new or renewed certificates) applies to the next handshake
/// without touching open connections. ACME-issued certificates apply the
/// same way, from the next handshake after they are issued.
#[derive(Debug)]
pub struct SniResolver {
    live: Arc<ArcSwap<Snapshot>>,
    acme: AcmeCertificates,
}

impl SniResolver {
    /// A resolver over `live` and the ACME certificates in `acme`.
    pub fn new(live: Arc<ArcSwap<Snapshot>>, acme: AcmeCertificates) -> Self {
        Self { live, acme }
    }
}

impl ResolvesServerCert for SniResolver {
    /// The snapshot's certificate for the client's server name (exact, then
    /// wildcard), else an ACME certificate for it, else the default one;
    /// `None` (no certificate) fails the handshake.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        let snapshot = self.live.load();
        let found = snapshot
            .certificates
            .lookup_named(name)
            .or_else(|| self.acme.lookup(name))
            .or_else(|| snapshot.certificates.default_certificate());
        if found.is_none() {
            tracing::debug!(server_name = ?name, "no certificate for this name");
        }
        found
    }
}
