//! An issued certificate and its key, with what Sluice reads from its leaf.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

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

/// A self-signed certificate for `names`, for tests.
#[cfg(test)]
pub(crate) fn self_signed(names: &[&str]) -> Issued {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    Issued::from_pem(cert.pem(), key.serialize_pem()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
