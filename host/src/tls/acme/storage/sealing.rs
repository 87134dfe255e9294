//! How private keys are kept in a shared store: as they are, for a store
//! whose access control is trusted, or sealed with AES-256-GCM under a key
//! from the environment, so that reading the store is not enough to
//! impersonate a site.
//!
//! A sealed value is `sealed:v1:` and the base64 of a fresh 12-byte nonce
//! followed by the ciphertext. The key the value is stored under is the
//! associated data, so a sealed value moved to another key does not open.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// The environment variable holding the encryption key: 32 bytes in
/// base64, as `openssl rand -base64 32` prints.
pub const ENCRYPTION_KEY_ENV: &str = "SLUICE_ETCD_ENCRYPTION_KEY";

const SEALED_PREFIX: &str = "sealed:v1:";

/// How private keys are written to a shared store.
#[derive(Clone, Default)]
pub enum KeyProtection {
    /// As PEM: anyone who can read the store can read them.
    #[default]
    Plaintext,
    /// Sealed with this key.
    Encrypted(SealingKey),
}

impl std::fmt::Debug for KeyProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyProtection::Plaintext => "Plaintext",
            KeyProtection::Encrypted(_) => "Encrypted",
        })
    }
}

impl PartialEq for KeyProtection {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (KeyProtection::Plaintext, KeyProtection::Plaintext) => true,
            (KeyProtection::Encrypted(a), KeyProtection::Encrypted(b)) => a.raw == b.raw,
            _ => false,
        }
    }
}

impl Eq for KeyProtection {}

/// An AES-256-GCM key. Its `Debug` form is never printed.
#[derive(Clone)]
pub struct SealingKey {
    raw: [u8; 32],
}

impl KeyProtection {
    /// Encryption with the key in [`ENCRYPTION_KEY_ENV`].
    pub fn encrypted_from_env() -> Result<Self, String> {
        let value = std::env::var(ENCRYPTION_KEY_ENV).map_err(|_| {
            format!(
                "encrypted private keys need ${ENCRYPTION_KEY_ENV}: 32 random bytes in base64 \
                 (openssl rand -base64 32), the same on every instance"
            )
        })?;
        Self::encrypted_with(&value)
    }

    /// Encryption with `base64`, 32 bytes in base64.
    pub fn encrypted_with(base64: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(base64.trim())
            .map_err(|e| format!("${ENCRYPTION_KEY_ENV} is not base64: {e}"))?;
        let raw: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            format!(
                "${ENCRYPTION_KEY_ENV} holds {} bytes; it must hold 32 (openssl rand -base64 32)",
                bytes.len()
            )
        })?;
        Ok(KeyProtection::Encrypted(SealingKey { raw }))
    }

    /// `secret` as it is written under `key`.
    pub(super) fn seal(&self, key: &str, secret: &str) -> anyhow::Result<String> {
        let KeyProtection::Encrypted(sealing) = self else {
            return Ok(secret.to_string());
        };
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("no randomness for a nonce"))?;
        let mut sealed = secret.as_bytes().to_vec();
        sealing
            .cipher()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| anyhow::anyhow!("cannot encrypt the value of {key}"))?;
        let mut framed = nonce.to_vec();
        framed.extend_from_slice(&sealed);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(framed)))
    }

    /// The secret written under `key` as `stored`, sealed or not.
    pub(super) fn open(&self, key: &str, stored: &str) -> anyhow::Result<String> {
        let Some(sealed) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_string());
        };
        let KeyProtection::Encrypted(sealing) = self else {
            anyhow::bail!(
                "{key} is encrypted; run with --etcd-private-keys encrypted and ${ENCRYPTION_KEY_ENV}"
            );
        };
        let framed = STANDARD
            .decode(sealed)
            .map_err(|e| anyhow::anyhow!("{key} is not valid sealed base64: {e}"))?;
        anyhow::ensure!(framed.len() > NONCE_LEN, "{key} is too short to be sealed");
        let (nonce, ciphertext) = framed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| anyhow::anyhow!("{key} has a malformed nonce"))?;
        let mut opened = ciphertext.to_vec();
        let plain = sealing
            .cipher()
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut opened)
            .map_err(|_| {
                anyhow::anyhow!(
                    "{key} does not open with ${ENCRYPTION_KEY_ENV}: another key sealed it, or it was altered"
                )
            })?;
        String::from_utf8(plain.to_vec()).map_err(|_| anyhow::anyhow!("{key} opens to non-UTF-8"))
    }
}

impl SealingKey {
    fn cipher(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &self.raw).expect("32 bytes is an AES-256 key"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "q3J1c2ljZS1zZWFsaW5nLWtleS1mb3ItdGVzdHMhIT0=";

    #[test]
    fn sealed_values_open_only_with_the_key_and_under_their_own_name() {
        let protection = KeyProtection::encrypted_with(KEY).unwrap();
        let sealed = protection
            .seal("/f/acme/certificates/a", "-----BEGIN PRIVATE KEY")
            .unwrap();
        assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
        assert!(!sealed.contains("PRIVATE KEY"));
        assert_ne!(
            sealed,
            protection
                .seal("/f/acme/certificates/a", "-----BEGIN PRIVATE KEY")
                .unwrap(),
            "each seal has its own nonce"
        );
        assert_eq!(
            protection.open("/f/acme/certificates/a", &sealed).unwrap(),
            "-----BEGIN PRIVATE KEY"
        );
        let moved = protection
            .open("/f/acme/certificates/b", &sealed)
            .unwrap_err();
        assert!(moved.to_string().contains("does not open"), "{moved}");
        let other = KeyProtection::encrypted_with(&STANDARD.encode([7u8; 32])).unwrap();
        assert!(other.open("/f/acme/certificates/a", &sealed).is_err());
        let plaintext = KeyProtection::Plaintext
            .open("/f/acme/certificates/a", &sealed)
            .unwrap_err();
        assert!(
            plaintext
                .to_string()
                .contains("--etcd-private-keys encrypted"),
            "{plaintext}"
        );
    }

    #[test]
    fn plaintext_is_written_as_is_and_read_either_way() {
        assert_eq!(KeyProtection::Plaintext.seal("k", "pem").unwrap(), "pem");
        let protection = KeyProtection::encrypted_with(KEY).unwrap();
        assert_eq!(protection.open("k", "pem").unwrap(), "pem");
    }

    #[test]
    fn a_bad_key_is_named() {
        let short = KeyProtection::encrypted_with("c2hvcnQ=").unwrap_err();
        assert!(short.contains("holds 5 bytes"), "{short}");
        assert!(KeyProtection::encrypted_with("not base64!").is_err());
    }
}
