//! The certificates of one snapshot, looked up by server name.
//!
//! A lookup is one or two hash probes whatever the number of certificates:
//! the exact name, then the wildcard one label up (`a.example.com` →
//! `*.example.com`), then the default certificate if one is configured.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Serialize;

/// A certificate chain and its key, ready for handshakes.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The chain and signing key.
    pub key: Arc<CertifiedKey>,
    /// What the admin status shows of it.
    pub info: CertificateInfo,
}

/// A certificate as the admin status lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The names it is served for (route hosts, or `*` for the default).
    pub names: Vec<String>,
    /// The certificate file.
    pub file: String,
    /// The leaf's issuer, as a distinguished name.
    pub issuer: String,
    /// The leaf's expiry, RFC 3339.
    pub not_after: String,
}

impl Certificate {
    /// Loads the PEM chain at `cert` and the PEM key at `key`; the error
    /// names the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path, names: Vec<String>) -> Result<Self, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{} is not a PEM certificate chain: {e}", cert.display()))?;
        let private = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("{} holds no usable private key: {e}", key.display()))?;
        Self::assemble(
            chain,
            private,
            names,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    /// Reads a PEM chain and a PEM key held in memory (an ACME-issued
    /// certificate, say); `source` names them in errors and in the admin
    /// status.
    pub fn from_pem(
        chain_pem: &[u8],
        key_pem: &[u8],
        names: Vec<String>,
        source: &str,
    ) -> Result<Self, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{source} is not a PEM certificate chain: {e}"))?;
        let private = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| format!("the key of {source} is not a usable private key: {e}"))?;
        Self::assemble(
            chain,
            private,
            names,
            source,
            &format!("the key of {source}"),
        )
    }

    /// Checks that `chain` is not empty and matches `private`, and reads
    /// the leaf; `cert` and `key` name them in errors.
    fn assemble(
        chain: Vec<CertificateDer<'static>>,
        private: PrivateKeyDer<'static>,
        names: Vec<String>,
        cert: &str,
        key: &str,
    ) -> Result<Self, String> {
        if chain.is_empty() {
            return Err(format!("{cert} holds no certificate"));
        }
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(private)
            .map_err(|e| format!("{key}: unsupported private key: {e}"))?;
        let certified = CertifiedKey::new(chain, signing);
        certified
            .keys_match()
            .map_err(|e| format!("{cert} does not match the key in {key}: {e}"))?;
        let (issuer, not_after) =
            describe(&certified.cert[0]).map_err(|e| format!("{cert}: {e}"))?;
        Ok(Self {
            key: Arc::new(certified),
            info: CertificateInfo {
                names,
                file: cert.to_string(),
                issuer,
                not_after,
            },
        })
    }
}

/// The issuer and expiry of a DER certificate.
fn describe(der: &CertificateDer<'_>) -> Result<(String, String), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("the leaf certificate does not parse: {e}"))?;
    let not_after = SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(parsed.validity().not_after.timestamp().max(0) as u64);
    Ok((
        parsed.issuer().to_string(),
        humantime::format_rfc3339_seconds(not_after).to_string(),
    ))
}

/// Every certificate of a snapshot, by name.
#[derive(Debug, Default)]
pub struct CertificateTable {
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    listed: Vec<CertificateInfo>,
}

impl CertificateTable {
    /// Serves `certificate` for each of its names; a name given twice keeps
    /// the first certificate.
    pub fn insert(&mut self, certificate: Certificate) {
        for name in &certificate.info.names {
            let name = name.to_ascii_lowercase();
            let (map, key) = match name.strip_prefix("*.") {
                Some(parent) => (&mut self.wildcard, parent.to_string()),
                None => (&mut self.exact, name),
            };
            map.entry(key.into_boxed_str())
                .or_insert_with(|| certificate.key.clone());
        }
        self.listed.push(certificate.info);
    }

    /// Serves `certificate` when no name matches.
    pub fn set_default(&mut self, mut certificate: Certificate) {
        certificate.info.names = vec!["*".to_string()];
        self.default = Some(certificate.key);
        self.listed.push(certificate.info);
    }

    /// The certificate for `server_name` (any case), else the default.
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.lookup_named(server_name)
            .or_else(|| self.default_certificate())
    }

    /// The certificate for `server_name` (any case): the exact name, then
    /// the wildcard one label up; never the default.
    pub fn lookup_named(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = server_name?;
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        self.exact
            .get(name)
            .or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
            .cloned()
    }

    /// The default certificate, if one is set.
    pub fn default_certificate(&self) -> Option<Arc<CertifiedKey>> {
        self.default.clone()
    }

    /// Whether the table serves nothing at all.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    /// The certificates, as the admin status lists them.
    pub fn list(&self) -> &[CertificateInfo] {
        &self.listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names`, written to a temporary
    /// directory.
    pub(crate) fn self_signed(names: &[&str]) -> (tempdir::Dir, Certificate) {
        let dir = tempdir::Dir::new();
        let generated = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = dir.path.join("cert.pem");
        let key = dir.path.join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let names = names.iter().map(|n| n.to_string()).collect();
        let certificate = Certificate::load(&cert, &key, names).unwrap();
        (dir, certificate)
    }

    mod tempdir {
        /// A directory removed on drop.
        pub struct Dir {
            pub path: std::path::PathBuf,
        }

        impl Dir {
            pub fn new() -> Self {
                static NEXT: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path =
                    std::env::temp_dir().join(format!("sluice-certs-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&path).unwrap();
                Self { path }
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let (_a_dir, a) = self_signed(&["a.test"]);
        let (_w_dir, wild) = self_signed(&["*.wild.test"]);
        let (_d_dir, default) = self_signed(&["default.test"]);
        let (a_key, wild_key, default_key) = (a.key.clone(), wild.key.clone(), default.key.clone());
        let mut table = CertificateTable::default();
        table.insert(a);
        table.insert(wild);
        assert!(Arc::ptr_eq(&table.lookup(Some("a.test")).unwrap(), &a_key));
        assert!(Arc::ptr_eq(&table.lookup(Some("A.Test")).unwrap(), &a_key));
        assert!(Arc::ptr_eq(
            &table.lookup(Some("x.wild.test")).unwrap(),
            &wild_key
        ));
        // A wildcard covers one label only.
        assert!(table.lookup(Some("y.x.wild.test")).is_none());
        assert!(table.lookup(Some("wild.test")).is_none());
        assert!(table.lookup(None).is_none());
        table.set_default(default);
        assert!(Arc::ptr_eq(
            &table.lookup(Some("other.test")).unwrap(),
            &default_key
        ));
        assert!(Arc::ptr_eq(&table.lookup(None).unwrap(), &default_key));
        assert_eq!(table.list().len(), 3);
        assert_eq!(table.list()[2].names, vec!["*"]);
    }

    #[test]
    fn bad_files_are_named() {
        let (dir, _) = self_signed(&["a.test"]);
        let cert = dir.path.join("cert.pem");
        let key = dir.path.join("key.pem");
        let missing = dir.path.join("missing.pem");
        let error = Certificate::load(&missing, &key, vec![]).unwrap_err();
        assert!(error.contains("missing.pem"), "{error}");
        std::fs::write(dir.path.join("empty.pem"), "").unwrap();
        let error = Certificate::load(&dir.path.join("empty.pem"), &key, vec![]).unwrap_err();
        assert!(error.contains("holds no certificate"), "{error}");
        let error = Certificate::load(&cert, &cert, vec![]).unwrap_err();
        assert!(error.contains("no usable private key"), "{error}");
        let (other_dir, _) = self_signed(&["b.test"]);
        let error = Certificate::load(&cert, &other_dir.path.join("key.pem"), vec![]).unwrap_err();
        assert!(error.contains("does not match the key"), "{error}");
    }
}
