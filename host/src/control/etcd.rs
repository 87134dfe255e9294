//! The configuration in etcd: where it is (`etcd://host:2379,host2:2379/prefix`,
//! the config under the key `/prefix/config`), reading it, watching it so
//! that a change reloads at once, and pushing a new one with a
//! compare-and-swap on the revision last read.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use super::reload::Reloader;
use crate::support::etcd::{explain, reconnect_forever};
pub use crate::support::etcd::{EtcdConnection, EtcdTls};
pub use crate::tls::acme::storage::KeyProtection;

/// How long a lock outlives an instance that stopped renewing it, unless
/// set otherwise.
pub const DEFAULT_LOCK_LEASE: Duration = Duration::from_secs(30);

/// Where the configuration is kept in etcd, how to reach it, and how the
/// fleet's shared ACME state is kept beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSource {
    /// How to reach the cluster.
    pub connection: EtcdConnection,
    /// The prefix every key of this fleet is under, without a trailing `/`.
    pub prefix: String,
    /// How long the lock on an order outlives an instance that died
    /// holding it: the time another instance waits before taking over.
    pub lock_lease: Duration,
    /// How the ACME private keys are written.
    pub private_keys: KeyProtection,
}

impl std::fmt::Display for EtcdSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.connection, self.config_key())
    }
}

impl EtcdSource {
    /// Reads `etcd://host:port[,host:port...]/prefix`.
    pub fn parse(url: &str, tls: Option<EtcdTls>, user: Option<String>) -> Result<Self, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{url:?} is not an etcd:// URL"))?;
        let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(format!("{url:?} names no etcd endpoint"));
        }
        if let Some(bad) = endpoints.iter().find(|e| !e.contains(':')) {
            return Err(format!(
                "{url:?}: endpoint {bad:?} has no port, e.g. {bad}:2379"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            return Err(format!(
                "{url:?} names no key prefix, e.g. etcd://{}/sluice",
                endpoints[0]
            ));
        }
        Ok(Self {
            connection: EtcdConnection {
                endpoints,
                tls,
                user,
            },
            prefix: format!("/{prefix}"),
            lock_lease: DEFAULT_LOCK_LEASE,
            private_keys: KeyProtection::Plaintext,
        })
    }

    /// The key the configuration is kept under.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// Connects to the cluster.
    pub async fn connect(&self) -> Result<Client, String> {
        self.connection.connect().await
    }

    /// The configuration's text and the revision it was last changed at;
    /// `None` when no configuration was pushed yet.
    pub async fn read(&self, client: &mut Client) -> Result<Option<(String, i64)>, String> {
        let response = client
            .get(self.config_key(), None)
            .await
            .map_err(|e| format!("{self}: {}", explain(&e)))?;
        let Some(kv) = response.kvs().first() else {
            return Ok(None);
        };
        let text = kv
            .value_str()
            .map_err(|_| format!("{self}: the config is not UTF-8"))?;
        Ok(Some((text.to_string(), kv.mod_revision())))
    }

    /// Writes `text` as the configuration if it is still at `revision`
    /// (0: never pushed); returns the new revision.
    pub async fn compare_and_swap(
        &self,
        client: &mut Client,
        revision: i64,
        text: &str,
    ) -> Result<i64, String> {
        let key = self.config_key();
        let swap = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(key, text, None)]);
        let response = client
            .txn(swap)
            .await
            .map_err(|e| format!("{self}: {}", explain(&e)))?;
        if !response.succeeded() {
            let now = self.read(client).await?.map_or(0, |(_, revision)| revision);
            return Err(format!(
                "{self}: the config changed while this push was being made (revision {revision} \
                 read, {now} now); nothing was written: look at what is there and push again"
            ));
        }
        Ok(response.header().map_or(0, |header| header.revision()))
    }
}

/// Reloads whenever the configuration key changes, for as long as the
/// process runs. While etcd is unreachable the last config keeps serving;
/// each failed reconnection is a failed reload, in the status and the
/// metrics, and the wait before the next doubles up to thirty seconds.
/// Each time the watch starts, the key is read once, for changes made
/// before it.
pub async fn watch(reloader: Arc<Reloader>, source: EtcdSource) {
    reconnect_forever(|| {
        let (reloader, source) = (reloader.clone(), source.clone());
        async move {
            let (watched, error) = follow(&reloader, &source).await;
            if watched {
                tracing::warn!(source = %source, %error, "lost etcd; serving on the current config while reconnecting");
            }
            // The failed read is the source's error in the status and metrics.
            let _ = reloader.reload("etcd reconnect").await;
            watched
        }
    })
    .await
}

/// Watches the key until the watch breaks; returns whether it had been
/// established, and why it ended.
async fn follow(reloader: &Reloader, source: &EtcdSource) -> (bool, String) {
    let mut client = match source.connect().await {
        Ok(client) => client,
        Err(error) => return (false, error),
    };
    let mut stream = match client.watch(source.config_key(), None).await {
        Ok(stream) => stream,
        Err(e) => return (false, format!("{source}: cannot watch: {e}")),
    };
    // Read once the watch is on: a change made before it (between the
    // start's read and the watch, or while etcd was away) is not missed.
    let _ = reloader.reload("etcd watch started").await;
    loop {
        match stream.message().await {
            Ok(Some(response)) => {
                if !response.events().is_empty() {
                    let _ = reloader.reload("etcd watch").await;
                }
                if response.canceled() {
                    return (true, format!("{source}: the watch was cancelled"));
                }
            }
            Ok(None) => return (true, format!("{source}: the watch ended")),
            Err(e) => return (true, format!("{source}: the watch broke: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_endpoints_and_a_prefix() {
        let source =
            EtcdSource::parse("etcd://10.0.0.1:2379,10.0.0.2:2379/fleet/", None, None).unwrap();
        assert_eq!(
            source.connection.endpoints,
            ["10.0.0.1:2379", "10.0.0.2:2379"]
        );
        assert_eq!(source.config_key(), "/fleet/config");
        assert_eq!(
            source.to_string(),
            "etcd://10.0.0.1:2379,10.0.0.2:2379/fleet/config"
        );
        for bad in [
            "http://a:1/x",
            "etcd:///x",
            "etcd://a/x",
            "etcd://a:2379",
            "etcd://a:2379/",
        ] {
            assert!(EtcdSource::parse(bad, None, None).is_err(), "{bad}");
        }
    }
}
