//! Picks the certificate for each TLS handshake from the certificates of
//! the config serving and the ACME-issued ones.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certificates::CertificateTable;
use super::store::AcmeCertificates;

/// The certificates of the config serving, replaced on each reload.
pub type LiveCertificates = Arc<ArcSwap<CertificateTable>>;

/// Resolves certificates by SNI from whatever certificates are live, so a
/// reload (new or renewed certificates) applies to the next handshake
/// without touching open connections. ACME-issued certificates apply the
/// same way, from the next handshake after they are issued.
#[derive(Debug)]
pub struct SniResolver {
    live: LiveCertificates,
    acme: AcmeCertificates,
}

impl SniResolver {
    /// A resolver over `live` and the ACME certificates in `acme`.
    pub fn new(live: LiveCertificates, acme: AcmeCertificates) -> Self {
        Self { live, acme }
    }
}

impl ResolvesServerCert for SniResolver {
    /// The config's certificate for the client's server name (exact, then
    /// wildcard), else an ACME certificate for it, else the default one;
    /// `None` (no certificate) fails the handshake.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        let certificates = self.live.load();
        let found = certificates
            .lookup_named(name)
            .or_else(|| self.acme.lookup(name))
            .or_else(|| certificates.default_certificate());
        if found.is_none() {
            tracing::debug!(server_name = ?name, "no certificate for this name");
        }
        found
    }
}
