//! Certificates and keys on disk, written atomically.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

const CHAIN_FILE: &str = "fullchain.pem";
const KEY_FILE: &str = "key.pem";

/// A certificate and its private key, with what was read from the leaf.
/// Its `Debug` form leaves the key out.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The DNS names of the leaf's subject alternative names.
    pub names: Vec<String>,
    /// The leaf certificate followed by its intermediates (PEM).
    pub chain_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The serial number, in hex.
    pub serial: String,
    /// The start of the leaf's validity.
    pub not_before: SystemTime,
    /// The end of the leaf's validity.
    pub not_after: SystemTime,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("names", &self.names)
            .field("issuer", &self.issuer)
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Reads the leaf (the first certificate) of `chain_pem`.
    pub fn from_pem(chain_pem: String, key_pem: String) -> anyhow::Result<Self> {
        let pem = Pem::iter_from_buffer(chain_pem.as_bytes())
            .next()
            .context("the chain holds no PEM certificate")?
            .context("the chain is not valid PEM")?;
        let leaf = pem
            .parse_x509()
            .context("the leaf is not a valid X.509 certificate")?;
        let mut names = Vec::new();
        if let Some(san) = leaf
            .subject_alternative_name()
            .context("the leaf's subject alternative names are malformed")?
        {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(name) = name {
                    names.push(name.to_string());
                }
            }
        }
        let time = |t: x509_parser::time::ASN1Time| {
            UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
        };
        Ok(Self {
            names,
            issuer: leaf.issuer().to_string(),
            serial: leaf.raw_serial_as_string(),
            not_before: time(leaf.validity().not_before),
            not_after: time(leaf.validity().not_after),
            chain_pem,
            key_pem,
        })
    }

    /// Whether this certificate is for exactly `names`, in any order.
    pub fn covers(&self, names: &[String]) -> bool {
        let mut have: Vec<_> = self.names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let mut want: Vec<_> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        have.sort();
        have.dedup();
        want.sort();
        want.dedup();
        have == want
    }
}

/// `<state-dir>/certificates`.
pub(super) struct Store {
    root: PathBuf,
}

impl Store {
    pub(super) fn new(state_dir: &Path) -> Self {
        Self {
            root: state_dir.join("certificates"),
        }
    }

    /// The folder of the certificate whose first name is `names[0]`.
    fn folder(&self, names: &[String]) -> PathBuf {
        self.root.join(names[0].replace('*', "_"))
    }

    /// The stored certificate for `names`, if there is one.
    pub(super) fn load(&self, names: &[String]) -> anyhow::Result<Option<Issued>> {
        let folder = self.folder(names);
        let read = |file: &str| match std::fs::read_to_string(folder.join(file)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("cannot read {}", folder.join(file).display()))
            }
        };
        let (Some(chain), Some(key)) = (read(CHAIN_FILE)?, read(KEY_FILE)?) else {
            return Ok(None);
        };
        Issued::from_pem(chain, key)
            .map(Some)
            .with_context(|| format!("{}", folder.join(CHAIN_FILE).display()))
    }

    /// Stores `issued` as the certificate for `names`, the key first, so a
    /// crash between the two never pairs a new chain with an old key.
    pub(super) fn save(&self, names: &[String], issued: &Issued) -> anyhow::Result<()> {
        let folder = self.folder(names);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        write_atomic(&folder.join(KEY_FILE), issued.key_pem.as_bytes(), 0o600)?;
        write_atomic(&folder.join(CHAIN_FILE), issued.chain_pem.as_bytes(), 0o644)
    }
}

/// Writes `bytes` to `path` atomically with permissions `mode`.
pub(super) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    crate::support::files::write_atomically(path, bytes, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn self_signed(names: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        Issued::from_pem(cert.pem(), key.serialize_pem()).unwrap()
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sluice-acme-storage-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn reads_names_and_validity_from_the_leaf() {
        let issued = self_signed(&["example.com", "*.example.com"]);
        assert_eq!(issued.names, ["example.com", "*.example.com"]);
        assert!(issued.not_after > issued.not_before);
        assert!(issued.covers(&["*.example.com".into(), "EXAMPLE.com".into()]));
        assert!(!issued.covers(&["example.com".into()]));
        assert!(Issued::from_pem("nonsense".into(), String::new()).is_err());
        let debug = format!("{issued:?}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }

    #[test]
    fn saves_atomically_with_a_private_key_and_loads_back() {
        let dir = scratch();
        let store = Store::new(&dir);
        let names = vec!["*.example.com".to_string()];
        assert_eq!(store.load(&names).unwrap(), None);
        let issued = self_signed(&["*.example.com"]);
        store.save(&names, &issued).unwrap();
        let folder = dir.join("certificates/_.example.com");
        let mode = |file: &str| {
            std::fs::metadata(folder.join(file))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(KEY_FILE), 0o600);
        assert_eq!(mode(CHAIN_FILE), 0o644);
        assert_eq!(store.load(&names).unwrap(), Some(issued));
        let leftovers: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
