//! ACME state in etcd, shared by a fleet: every instance serves the same
//! certificates, and one at a time orders each of them.
//!
//! Keys, under the fleet's prefix:
//! - `acme/accounts/<ca host>-<hash of the URL>`: one account per CA;
//! - `acme/certificates/<names, sorted, comma-separated>`: JSON with the
//!   chain and the key;
//! - `acme/http01/<token>`: a pending HTTP-01 answer, under its orderer's
//!   lease, so that any instance the CA reaches answers it;
//! - `acme/locks/<lock>`: an etcd election per lock, whose leader's value
//!   is the holding instance's name.
//!
//! A lock lives as long as its lease, which the holder renews; if the
//! holder dies, the lease runs out and the next waiter takes over. Every
//! write made under a lock is a transaction that first checks the lock is
//! still held (the leader key's creation revision) and, for a certificate,
//! that nothing was stored since it was read: a partitioned instance never
//! overwrites newer state.
//!
//! Certificates are also kept in the state directory
//! (`etcd-certificates/<names>/`), so an instance that restarts while etcd
//! is away still serves them.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaderKey, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use serde::{Deserialize, Serialize};

use super::{
    account_id, certificate_id, AcmeStorage, FileStorage, HeldLock, Issued, KeyProtection, OnStored,
};
use crate::support::etcd::{reconnect_forever, EtcdConnection, KeptLease};
use crate::tls::acme::Http01Responses;

/// How long a published HTTP-01 answer is given to reach every instance's
/// watch before the CA is told to look: milliseconds on a healthy cluster.
const ANSWER_SPREAD: Duration = Duration::from_millis(250);

/// How long after a failed connection requests fail at once rather than
/// each wait for a connection of their own: an instance starting while
/// etcd is down loads all its certificates from the local copy at once.
const RECONNECT_AFTER: Duration = Duration::from_secs(5);

/// Where a fleet's ACME state is, and how it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdStorageSettings {
    /// How to reach the cluster.
    pub connection: EtcdConnection,
    /// The fleet's key prefix, such as `/sluice`.
    pub prefix: String,
    /// This instance's name, written as the holder of its locks.
    pub instance: String,
    /// How long a lock outlives a holder that stopped renewing it.
    pub lock_lease: Duration,
    /// How private keys are written.
    pub keys: KeyProtection,
}

/// ACME state in etcd, with a copy of the certificates in the state
/// directory.
pub struct EtcdStorage {
    settings: EtcdStorageSettings,
    local: FileStorage,
    http01: Http01Responses,
    /// Connected on first use, then shared: the client reconnects itself.
    connection: tokio::sync::Mutex<Connection>,
}

/// The shared client, or why and when connecting last failed.
#[derive(Default)]
struct Connection {
    client: Option<Client>,
    failed: Option<(tokio::time::Instant, String)>,
}

/// A lock held in etcd: the election's leader key, and the lease that
/// keeps it; dropping it revokes the lease, releasing the lock at once
/// rather than when the lease runs out.
struct Leadership {
    leader: LeaderKey,
    lease: KeptLease,
}

/// A certificate as stored: its chain, and its key as [`KeyProtection`]
/// writes it.
#[derive(Serialize, Deserialize)]
struct StoredCertificate {
    chain: String,
    key: String,
}

impl EtcdStorage {
    /// State in etcd as `settings` say; the certificates' copy in
    /// `state_dir`; HTTP-01 answers served from `http01`.
    pub fn new(
        settings: EtcdStorageSettings,
        state_dir: &std::path::Path,
        http01: Http01Responses,
    ) -> Self {
        Self {
            settings,
            local: FileStorage::copies(state_dir, http01.clone()),
            http01,
            connection: tokio::sync::Mutex::default(),
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/acme/{rest}", self.settings.prefix)
    }

    fn certificate_key(&self, names: &[String]) -> String {
        self.key(&format!("certificates/{}", certificate_id(names)))
    }

    fn account_key(&self, directory: &str) -> String {
        self.key(&format!("accounts/{}", account_id(directory)))
    }

    fn answer_key(&self, token: &str) -> String {
        self.key(&format!("http01/{token}"))
    }

    async fn client(&self) -> anyhow::Result<Client> {
        let mut connection = self.connection.lock().await;
        if let Some(client) = &connection.client {
            return Ok(client.clone());
        }
        if let Some((at, error)) = &connection.failed {
            if at.elapsed() < RECONNECT_AFTER {
                anyhow::bail!("{error}");
            }
        }
        match self.settings.connection.connect().await {
            Ok(client) => {
                connection.failed = None;
                Ok(connection.client.insert(client).clone())
            }
            Err(error) => {
                connection.failed = Some((tokio::time::Instant::now(), error.clone()));
                anyhow::bail!("{error}")
            }
        }
    }

    /// The value of `key` and the revision it was last written at (0 if
    /// there is none).
    async fn get(&self, key: &str) -> anyhow::Result<(Option<Vec<u8>>, i64)> {
        let response = self
            .client()
            .await?
            .get(key, None)
            .await
            .with_context(|| format!("{}: cannot read {key}", self.settings.connection))?;
        Ok(match response.kvs().first() {
            Some(kv) => (Some(kv.value().to_vec()), kv.mod_revision()),
            None => (None, 0),
        })
    }

    fn decode(&self, key: &str, value: &[u8]) -> anyhow::Result<Issued> {
        let stored: StoredCertificate =
            serde_json::from_slice(value).with_context(|| format!("{key} is not a certificate"))?;
        let key_pem = self.settings.keys.open(key, &stored.key)?;
        Issued::from_pem(stored.chain, key_pem).with_context(|| key.to_string())
    }

    fn encode(&self, key: &str, issued: &Issued) -> anyhow::Result<Vec<u8>> {
        Ok(serde_json::to_vec(&StoredCertificate {
            chain: issued.chain_pem.clone(),
            key: self.settings.keys.seal(key, &issued.key_pem)?,
        })?)
    }

    /// Writes `put` if `lock` is still held and every compare in `also`
    /// holds; says which lock was lost otherwise.
    async fn fenced(
        &self,
        lock: &HeldLock,
        also: Vec<Compare>,
        put: TxnOp,
        what: &str,
    ) -> anyhow::Result<()> {
        let leadership = lock.backend::<Leadership>()?;
        let mut compares = vec![Compare::create_revision(
            leadership.leader.key(),
            CompareOp::Equal,
            leadership.leader.rev(),
        )];
        compares.extend(also);
        let response = self
            .client()
            .await?
            .txn(Txn::new().when(compares).and_then([put]))
            .await
            .with_context(|| format!("{}: cannot write {what}", self.settings.connection))?;
        anyhow::ensure!(
            response.succeeded(),
            "{what} was not written: this instance lost the lock {}, or another instance \
             stored newer state meanwhile",
            lock.name()
        );
        Ok(())
    }

    /// Keeps `issued` in the state directory too, for starts without etcd.
    fn keep_locally(&self, names: &[String], issued: &Issued) {
        if let Err(error) = self.local.save(names, issued) {
            tracing::warn!(names = ?names, error = %format!("{error:#}"), "cannot keep a local copy of the certificate");
        }
    }

    /// One session of [`AcmeStorage::follow`]: reads what is stored, then
    /// follows changes until the watch breaks. Returns whether it had got
    /// going.
    async fn follow_once(&self, on_stored: &OnStored) -> bool {
        let mut client = match self.client().await {
            Ok(client) => client,
            Err(error) => return fail(error, false),
        };
        let prefix = self.key("");
        let mut stream = match client
            .watch(prefix.clone(), Some(WatchOptions::new().with_prefix()))
            .await
        {
            Ok(stream) => stream,
            Err(e) => return fail(anyhow::anyhow!("cannot watch {prefix}: {e}"), false),
        };
        // Read once the watch is on, so nothing stored before it is missed.
        let listed = match client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
        {
            Ok(listed) => listed,
            Err(e) => return fail(anyhow::anyhow!("cannot list {prefix}: {e}"), false),
        };
        for kv in listed.kvs() {
            self.stored(kv.key(), kv.value(), EventType::Put, on_stored);
        }
        loop {
            match stream.message().await {
                Ok(Some(response)) => {
                    for event in response.events() {
                        if let Some(kv) = event.kv() {
                            self.stored(kv.key(), kv.value(), event.event_type(), on_stored);
                        }
                    }
                    if response.canceled() {
                        return fail(anyhow::anyhow!("the watch of {prefix} was cancelled"), true);
                    }
                }
                Ok(None) => return fail(anyhow::anyhow!("the watch of {prefix} ended"), true),
                Err(e) => return fail(anyhow::anyhow!("the watch of {prefix} broke: {e}"), true),
            }
        }
    }

    /// Applies one stored key: a certificate goes to `on_stored` and to the
    /// local copy; an HTTP-01 answer is served or withdrawn.
    fn stored(&self, key: &[u8], value: &[u8], event: EventType, on_stored: &OnStored) {
        let Ok(key) = std::str::from_utf8(key) else {
            return;
        };
        if let Some(token) = key.strip_prefix(&self.answer_key("")) {
            match event {
                EventType::Put => self.http01.insert(
                    token.to_string(),
                    String::from_utf8_lossy(value).into_owned(),
                ),
                EventType::Delete => self.http01.remove(token),
            }
        } else if key.starts_with(&self.key("certificates/")) && event == EventType::Put {
            match self.decode(key, value) {
                Ok(issued) => {
                    self.keep_locally(&issued.names, &issued);
                    on_stored(issued);
                }
                Err(error) => {
                    tracing::warn!(key, error = %format!("{error:#}"), "ignoring a stored certificate")
                }
            }
        }
    }
}

/// Where the fleet under `prefix` keeps its locks, one etcd election each:
/// every waiting instance has a key `<lock>/<lease>` whose value is its
/// name, and the key created first is the holder's.
pub fn locks_prefix(prefix: &str) -> String {
    format!("{prefix}/acme/locks/")
}

/// Logs why a watch session ended; returns `established`.
fn fail(error: anyhow::Error, established: bool) -> bool {
    tracing::warn!(error = %format!("{error:#}"), "lost the ACME state in etcd; retrying");
    established
}

#[async_trait]
impl AcmeStorage for EtcdStorage {
    fn describe(&self) -> String {
        format!("{}{}", self.settings.connection, self.key(""))
    }

    async fn load_certificate(&self, names: &[String]) -> anyhow::Result<Option<Issued>> {
        match self.load_certificate_to_decide(names).await {
            Ok(Some(issued)) => {
                self.keep_locally(names, &issued);
                Ok(Some(issued))
            }
            Ok(None) => Ok(None),
            Err(error) => {
                tracing::warn!(names = ?names, error = %format!("{error:#}"), "etcd is unreachable; using the local copy of the certificate");
                self.local.load(names)
            }
        }
    }

    async fn load_certificate_to_decide(&self, names: &[String]) -> anyhow::Result<Option<Issued>> {
        let key = self.certificate_key(names);
        let (value, _) = self.get(&key).await?;
        value.map(|value| self.decode(&key, &value)).transpose()
    }

    async fn save_certificate(
        &self,
        names: &[String],
        issued: &Issued,
        lock: &HeldLock,
    ) -> anyhow::Result<()> {
        let key = self.certificate_key(names);
        let (stored, revision) = self.get(&key).await?;
        if let Some(stored) = stored.and_then(|value| self.decode(&key, &value).ok()) {
            anyhow::ensure!(
                stored.not_after <= issued.not_after,
                "{key} holds a certificate newer than this one; it stays"
            );
        }
        let value = self.encode(&key, issued)?;
        self.fenced(
            lock,
            vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )],
            TxnOp::put(key.clone(), value, None),
            &key,
        )
        .await?;
        self.keep_locally(names, issued);
        Ok(())
    }

    async fn load_account(&self, directory: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let key = self.account_key(directory);
        let (Some(value), _) = self.get(&key).await? else {
            return Ok(None);
        };
        let stored = String::from_utf8(value).with_context(|| format!("{key} is not UTF-8"))?;
        Ok(Some(self.settings.keys.open(&key, &stored)?.into_bytes()))
    }

    async fn save_account(
        &self,
        directory: &str,
        credentials: &[u8],
        lock: &HeldLock,
    ) -> anyhow::Result<()> {
        let key = self.account_key(directory);
        let credentials = std::str::from_utf8(credentials).context("credentials are JSON")?;
        let value = self.settings.keys.seal(&key, credentials)?;
        self.fenced(
            lock,
            vec![Compare::create_revision(key.clone(), CompareOp::Equal, 0)],
            TxnOp::put(key.clone(), value, None),
            &key,
        )
        .await
    }

    async fn lock(&self, name: &str) -> anyhow::Result<HeldLock> {
        let connection = &self.settings.connection;
        let mut client = connection
            .connect_for_waits()
            .await
            .map_err(anyhow::Error::msg)?;
        // From here on, dropping `lease` (this future cancelled, or an
        // error) revokes it, withdrawing this instance from the queue.
        let lease = KeptLease::grant(&mut client, self.settings.lock_lease)
            .await
            .with_context(|| format!("{connection}: cannot take a lease for the lock {name}"))?;
        let election = format!("{}{name}", locks_prefix(&self.settings.prefix));
        // Waits, in the order the instances asked, until this one is
        // elected; the renewals keep its place meanwhile.
        let leader = client
            .campaign(election.clone(), self.settings.instance.clone(), lease.id())
            .await
            .with_context(|| format!("{connection}: cannot take the lock {election}"))?
            .take_leader()
            .with_context(|| format!("{connection}: etcd elected no leader for {election}"))?;
        // A lease that ran out during a long wait leaves a leader key etcd
        // has already deleted.
        anyhow::ensure!(
            !lease.is_lost(),
            "{connection}: the lease of the lock {election} ran out while waiting for it"
        );
        let lost = lease.lost_flag();
        Ok(HeldLock::losable(name, Leadership { leader, lease }, lost))
    }

    async fn publish_answer(
        &self,
        token: &str,
        answer: &str,
        lock: &HeldLock,
    ) -> anyhow::Result<()> {
        self.http01.insert(token.to_string(), answer.to_string());
        let lease = lock.backend::<Leadership>()?.lease.id();
        let key = self.answer_key(token);
        self.fenced(
            lock,
            Vec::new(),
            TxnOp::put(
                key.clone(),
                answer,
                Some(PutOptions::new().with_lease(lease)),
            ),
            &key,
        )
        .await?;
        tokio::time::sleep(ANSWER_SPREAD).await;
        Ok(())
    }

    async fn withdraw_answer(&self, token: &str) {
        self.http01.remove(token);
        let key = self.answer_key(token);
        if let Ok(mut client) = self.client().await {
            if let Err(error) = client.delete(key.clone(), None).await {
                tracing::warn!(key, %error, "cannot withdraw an HTTP-01 answer; it goes with its lease");
            }
        }
    }

    async fn follow(&self, on_stored: OnStored) {
        let on_stored = &on_stored;
        reconnect_forever(|| self.follow_once(on_stored)).await
    }
}
