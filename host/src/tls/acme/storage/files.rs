//! ACME state in the state directory, for one instance: each file written
//! atomically, private keys and account credentials readable only by the
//! owner.
//!
//! Layout:
//! - `acme/accounts/<ca host>-<hash of the URL>.json`: one account per CA (0600);
//! - `certificates/<first-name>/fullchain.pem` and `key.pem` (0600), with
//!   `*` written as `_` in the folder name.
//!
//! One process owns its state directory, and it orders each certificate
//! from one task, so its locks need not exclude anyone.

use std::path::{Path, PathBuf};

use anyhow::Context;
use async_trait::async_trait;

use super::{account_id, certificate_id, AcmeStorage, HeldLock, Issued, OnStored};
use crate::tls::acme::Http01Responses;

const CHAIN_FILE: &str = "fullchain.pem";
const KEY_FILE: &str = "key.pem";

/// ACME state under a state directory.
pub struct FileStorage {
    state_dir: PathBuf,
    http01: Http01Responses,
    /// Where the certificates' folders are.
    certificates: PathBuf,
    /// Whether a certificate's folder is named by all its names rather than
    /// by its first.
    by_all_names: bool,
}

/// What a lock on a state directory holds: nothing.
struct LocalLock;

impl FileStorage {
    /// State under `state_dir`; HTTP-01 answers are published in `http01`,
    /// which this instance's plain listeners serve.
    pub fn new(state_dir: &Path, http01: Http01Responses) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
            http01,
            certificates: state_dir.join("certificates"),
            by_all_names: false,
        }
    }

    /// The local copies of certificates kept in a shared store, in
    /// `etcd-certificates/<names, sorted, comma-separated>`: named by all
    /// their names, since the copies of certificates that share a first
    /// name, or come back with their names in another order, must not
    /// overwrite each other.
    pub(super) fn copies(state_dir: &Path, http01: Http01Responses) -> Self {
        Self {
            certificates: state_dir.join("etcd-certificates"),
            by_all_names: true,
            ..Self::new(state_dir, http01)
        }
    }

    /// The folder of the certificate for `names`.
    fn folder(&self, names: &[String]) -> PathBuf {
        let name = if self.by_all_names {
            certificate_id(names)
        } else {
            names[0].clone()
        };
        self.certificates.join(name.replace('*', "_"))
    }

    fn account_path(&self, directory: &str) -> PathBuf {
        self.state_dir
            .join("acme")
            .join("accounts")
            .join(format!("{}.json", account_id(directory)))
    }

    /// The stored certificate for `names`, if there is one.
    pub(in crate::tls::acme) fn load(&self, names: &[String]) -> anyhow::Result<Option<Issued>> {
        let folder = self.folder(names);
        let (Some(chain), Some(key)) = (
            read_if_present(&folder.join(CHAIN_FILE))?,
            read_if_present(&folder.join(KEY_FILE))?,
        ) else {
            return Ok(None);
        };
        let (chain, key) = (String::from_utf8(chain)?, String::from_utf8(key)?);
        Issued::from_pem(chain, key)
            .map(Some)
            .with_context(|| format!("{}", folder.join(CHAIN_FILE).display()))
    }

    /// Stores `issued` as the certificate for `names`, the key first, so a
    /// crash between the two never pairs a new chain with an old key.
    pub(in crate::tls::acme) fn save(
        &self,
        names: &[String],
        issued: &Issued,
    ) -> anyhow::Result<()> {
        let folder = self.folder(names);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        write_atomic(&folder.join(KEY_FILE), issued.key_pem.as_bytes(), 0o600)?;
        write_atomic(&folder.join(CHAIN_FILE), issued.chain_pem.as_bytes(), 0o644)
    }
}

#[async_trait]
impl AcmeStorage for FileStorage {
    fn describe(&self) -> String {
        self.state_dir.display().to_string()
    }

    async fn load_certificate(&self, names: &[String]) -> anyhow::Result<Option<Issued>> {
        self.load(names)
    }

    async fn save_certificate(
        &self,
        names: &[String],
        issued: &Issued,
        lock: &HeldLock,
    ) -> anyhow::Result<()> {
        lock.backend::<LocalLock>()?;
        self.save(names, issued)
    }

    async fn load_account(&self, directory: &str) -> anyhow::Result<Option<Vec<u8>>> {
        read_if_present(&self.account_path(directory))
    }

    async fn save_account(
        &self,
        directory: &str,
        credentials: &[u8],
        lock: &HeldLock,
    ) -> anyhow::Result<()> {
        lock.backend::<LocalLock>()?;
        let path = self.account_path(directory);
        let parent = path.parent().expect("credentials live in a folder");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        write_atomic(&path, credentials, 0o600)
    }

    async fn lock(&self, name: &str) -> anyhow::Result<HeldLock> {
        Ok(HeldLock::new(name, LocalLock))
    }

    async fn publish_answer(
        &self,
        token: &str,
        answer: &str,
        _lock: &HeldLock,
    ) -> anyhow::Result<()> {
        self.http01.insert(token.to_string(), answer.to_string());
        Ok(())
    }

    async fn withdraw_answer(&self, token: &str) {
        self.http01.remove(token);
    }

    async fn follow(&self, _on_stored: OnStored) {}
}

/// The bytes of `path`, or `None` if there is no such file.
fn read_if_present(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes `bytes` to `path` atomically with permissions `mode`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    crate::support::files::write_atomically(path, bytes, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::tls::acme::issued::self_signed;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sluice-acme-storage-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn saves_atomically_with_a_private_key_and_loads_back() {
        let dir = scratch();
        let store = FileStorage::new(&dir, Http01Responses::default());
        let names = vec!["*.example.com".to_string()];
        assert_eq!(store.load_certificate(&names).await.unwrap(), None);
        let issued = self_signed(&["*.example.com"]);
        let lock = store.lock("certificate").await.unwrap();
        store
            .save_certificate(&names, &issued, &lock)
            .await
            .unwrap();
        let folder = dir.join("certificates/_.example.com");
        assert_eq!(mode(&folder.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&folder.join(CHAIN_FILE)), 0o644);
        assert_eq!(store.load_certificate(&names).await.unwrap(), Some(issued));
        let leftovers: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn copies_are_named_by_all_their_names_in_any_order() {
        let dir = scratch();
        let copies = FileStorage::copies(&dir, Http01Responses::default());
        let both = self_signed(&["a.example.com", "www.a.example.com"]);
        let alone = self_signed(&["a.example.com"]);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        copies
            .save(&names(&["www.a.example.com", "a.example.com"]), &both)
            .unwrap();
        copies.save(&names(&["a.example.com"]), &alone).unwrap();
        assert_eq!(
            copies
                .load(&names(&["a.example.com", "WWW.a.example.com"]))
                .unwrap(),
            Some(both)
        );
        assert_eq!(
            copies.load(&names(&["a.example.com"])).unwrap(),
            Some(alone)
        );
        assert!(dir
            .join("etcd-certificates/a.example.com,www.a.example.com/key.pem")
            .exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn keeps_account_credentials_private_and_publishes_answers_locally() {
        let dir = scratch();
        let answers = Http01Responses::default();
        let store = FileStorage::new(&dir, answers.clone());
        let directory = "https://ca.example.org/directory";
        assert_eq!(store.load_account(directory).await.unwrap(), None);
        let lock = store.lock("account").await.unwrap();
        store.save_account(directory, b"{}", &lock).await.unwrap();
        assert_eq!(
            store.load_account(directory).await.unwrap().as_deref(),
            Some(&b"{}"[..])
        );
        assert_eq!(mode(&store.account_path(directory)), 0o600);

        store
            .publish_answer("tok", "tok.thumb", &lock)
            .await
            .unwrap();
        assert_eq!(answers.response("tok").as_deref(), Some("tok.thumb"));
        store.withdraw_answer("tok").await;
        assert_eq!(answers.response("tok"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
