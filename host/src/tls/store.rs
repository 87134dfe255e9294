//! The certificates ACME issued, kept beside the snapshot's own.
//!
//! ACME certificates outlive reloads (a reload does not re-order them), so
//! they are not part of a [`Snapshot`](crate::snapshot::Snapshot): they live
//! here, replaced whole on each issue, and the
//! [`SniResolver`](super::resolver::SniResolver) consults them after the
//! snapshot's names and before its default certificate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

use super::acme::Issued;
use super::certificates::{Certificate, CertificateTable};

/// The ACME-issued certificates, by name. Cheap to clone; every clone sees
/// the same certificates.
#[derive(Debug, Clone, Default)]
pub struct AcmeCertificates {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// What handshakes read: rebuilt on each issue, never locked.
    table: ArcSwap<CertificateTable>,
    /// Every certificate, keyed by its sorted names, so a renewal replaces
    /// the certificate it renews.
    certificates: Mutex<BTreeMap<Vec<String>, Certificate>>,
}

impl AcmeCertificates {
    /// Serves `issued` for its names from the next handshake on, replacing
    /// an earlier certificate for the same names.
    pub fn insert(&self, issued: &Issued) -> Result<(), String> {
        let source = format!("the ACME certificate for {}", issued.names.join(", "));
        let certificate = Certificate::from_pem(
            issued.chain_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            issued.names.clone(),
            &source,
        )?;
        let mut key = issued.names.clone();
        key.sort();
        let mut certificates = self
            .inner
            .certificates
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        certificates.insert(key, certificate);
        let mut table = CertificateTable::default();
        for certificate in certificates.values() {
            table.insert(certificate.clone());
        }
        self.inner.table.store(Arc::new(table));
        Ok(())
    }

    /// The certificate for `server_name`: the exact name, then the wildcard
    /// one label up.
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.inner.table.load().lookup_named(server_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(names: &[&str]) -> Issued {
        let generated = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        Issued::from_pem(generated.cert.pem(), generated.signing_key.serialize_pem()).unwrap()
    }

    #[test]
    fn serves_issued_certificates_by_name_and_replaces_renewed_ones() {
        let store = AcmeCertificates::default();
        let handshakes = store.clone();
        assert!(handshakes.lookup(Some("a.example.org")).is_none());
        store
            .insert(&issued(&["a.example.org", "*.w.example.org"]))
            .unwrap();
        let first = handshakes.lookup(Some("A.example.org")).unwrap();
        let wildcard = handshakes.lookup(Some("x.w.example.org")).unwrap();
        assert!(Arc::ptr_eq(&first, &wildcard));
        assert!(handshakes.lookup(Some("other.example.org")).is_none());
        assert!(handshakes.lookup(None).is_none(), "no default certificate");

        // A renewal (same names, any order) replaces the certificate.
        store
            .insert(&issued(&["*.w.example.org", "a.example.org"]))
            .unwrap();
        let renewed = handshakes.lookup(Some("a.example.org")).unwrap();
        assert!(!Arc::ptr_eq(&first, &renewed));
        store.insert(&issued(&["b.example.org"])).unwrap();
        assert!(handshakes.lookup(Some("b.example.org")).is_some());
        // The renewal replaced the first certificate rather than adding one.
        assert_eq!(handshakes.inner.table.load().list().len(), 2);
    }

    #[test]
    fn a_broken_certificate_is_refused() {
        let mut broken = issued(&["a.example.org"]);
        broken.key_pem = issued(&["a.example.org"]).key_pem;
        let error = AcmeCertificates::default().insert(&broken).unwrap_err();
        assert!(
            error.contains("the ACME certificate for a.example.org does not match"),
            "{error}"
        );
    }
}
