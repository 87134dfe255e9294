//! Where ACME keeps what outlives an order: the account, the certificates
//! and their keys, the answers to pending HTTP-01 challenges, and the lock
//! that lets one instance at a time order a given certificate.
//!
//! [`AcmeStorage`] is the small interface every backend implements. The
//! state directory ([`FileStorage`]) is the default and serves one
//! instance; etcd ([`EtcdStorage`]) serves a fleet, whose instances share
//! the account and the certificates and take turns ordering.

mod etcd;
mod files;
mod sealing;

use std::any::Any;

use async_trait::async_trait;

use super::Issued;

pub use etcd::{locks_prefix, EtcdStorage, EtcdStorageSettings};
pub use files::FileStorage;
pub use sealing::{KeyProtection, ENCRYPTION_KEY_ENV};

/// The certificates another instance stores, as a backend sees them.
pub type OnStored = Box<dyn Fn(Issued) + Send + Sync>;

/// The storage of one instance's, or one fleet's, ACME state.
#[async_trait]
pub trait AcmeStorage: Send + Sync + 'static {
    /// Where the state is kept, for logs and errors.
    fn describe(&self) -> String;

    /// The stored certificate for `names` (in any order), if there is one.
    /// A store that cannot be reached may answer from a local copy.
    async fn load_certificate(&self, names: &[String]) -> anyhow::Result<Option<Issued>>;

    /// The stored certificate for `names`, from the store itself and never
    /// a copy, for deciding under the certificate's lock whether to order.
    async fn load_certificate_to_decide(&self, names: &[String]) -> anyhow::Result<Option<Issued>> {
        self.load_certificate(names).await
    }

    /// Stores `issued` as the certificate for `names`, if `lock` is still
    /// held and no newer certificate was stored meanwhile: the fencing
    /// check that keeps an instance which lost its lock from overwriting
    /// its successor's work.
    async fn save_certificate(
        &self,
        names: &[String],
        issued: &Issued,
        lock: &HeldLock,
    ) -> anyhow::Result<()>;

    /// The stored credentials (JSON) of the account at the CA `directory`.
    async fn load_account(&self, directory: &str) -> anyhow::Result<Option<Vec<u8>>>;

    /// Stores the credentials of the account at `directory`, under `lock`.
    async fn save_account(
        &self,
        directory: &str,
        credentials: &[u8],
        lock: &HeldLock,
    ) -> anyhow::Result<()>;

    /// Takes the lock `name`, waiting while another instance holds it.
    /// Dropping the [`HeldLock`] releases it.
    async fn lock(&self, name: &str) -> anyhow::Result<HeldLock>;

    /// Publishes the HTTP-01 answer for `token`, so that whichever
    /// instance the CA reaches serves it, for as long as `lock` is held.
    async fn publish_answer(
        &self,
        token: &str,
        answer: &str,
        lock: &HeldLock,
    ) -> anyhow::Result<()>;

    /// Withdraws the answer for `token` once its order is done.
    async fn withdraw_answer(&self, token: &str);

    /// Hands every certificate another instance stores to `on_stored`, for
    /// as long as the process runs; returns at once when nothing else
    /// writes to this storage.
    async fn follow(&self, on_stored: OnStored);
}

/// A lock one instance holds until this is dropped.
pub struct HeldLock {
    name: String,
    /// What the backend needs to check the lock is still held, and to
    /// release it on drop.
    backend: Box<dyn Any + Send + Sync>,
    /// Turns true if the lock is lost while held; `None` for a lock that
    /// cannot be.
    lost: Option<tokio::sync::watch::Receiver<bool>>,
}

impl HeldLock {
    /// A lock that is held until dropped, whatever happens.
    fn new(name: &str, backend: impl Any + Send + Sync) -> Self {
        Self {
            name: name.to_string(),
            backend: Box::new(backend),
            lost: None,
        }
    }

    /// A lock that can be lost while held, as `lost` says.
    fn losable(
        name: &str,
        backend: impl Any + Send + Sync,
        lost: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            lost: Some(lost),
            ..Self::new(name, backend)
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns once the lock is lost (its holder cut off from the store
    /// longer than the lock lasts); never, while it is held.
    pub async fn lost(&self) {
        match &self.lost {
            Some(lost) => {
                let _ = lost.clone().wait_for(|lost| *lost).await;
            }
            None => std::future::pending().await,
        }
    }

    fn backend<T: Any>(&self) -> anyhow::Result<&T> {
        self.backend
            .downcast_ref()
            .ok_or_else(|| anyhow::anyhow!("the lock {} belongs to another storage", self.name))
    }
}

/// The lock that guards ordering the certificate for `names`.
pub(super) fn certificate_lock(names: &[String]) -> String {
    format!("certificate:{}", certificate_id(names))
}

/// The lock that guards creating the account at `directory`.
pub(super) fn account_lock(directory: &str) -> String {
    format!("account:{}", account_id(directory))
}

/// One name for a certificate's names in any order and case: sorted,
/// lower-case, comma-separated.
fn certificate_id(names: &[String]) -> String {
    let mut names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    names.join(",")
}

/// One name per CA directory: its host and a hash of its URL.
fn account_id(directory: &str) -> String {
    let host = reqwest::Url::parse(directory)
        .ok()
        .and_then(|url| url.host_str().map(str::to_string))
        .unwrap_or_default();
    let hash = crate::support::files::content_version(directory.as_bytes());
    format!("{host}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_named_by_its_names_in_any_order_and_case() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            certificate_lock(&names(&["www.example.org", "A.example.org"])),
            certificate_lock(&names(&["a.example.org", "WWW.example.org"]))
        );
        assert_eq!(
            certificate_id(&names(&["*.example.org", "example.org"])),
            "*.example.org,example.org"
        );
    }

    #[test]
    fn each_directory_has_its_own_account() {
        let production = account_id(super::super::LETSENCRYPT_PRODUCTION);
        let staging = account_id(super::super::LETSENCRYPT_STAGING);
        assert_ne!(production, staging);
        assert!(production.starts_with("acme-v02.api.letsencrypt.org-"));
        assert_eq!(production, account_id(super::super::LETSENCRYPT_PRODUCTION));
    }
}
