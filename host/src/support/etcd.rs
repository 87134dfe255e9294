//! Reaching etcd: the cluster's client endpoints, TLS and a user, and the
//! connection made from them, for everything Sluice keeps there; leases
//! kept alive for as long as they are held; and reconnecting after etcd is
//! lost.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// The longest wait between reconnections while etcd is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The environment variable holding the etcd user's password.
pub const PASSWORD_ENV: &str = "SLUICE_ETCD_PASSWORD";

/// How long connecting to etcd, each request, and the answer to a ping
/// may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// How often an idle connection to etcd is pinged.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// How to reach an etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConnection {
    /// The cluster's client endpoints, `host:port`.
    pub endpoints: Vec<String>,
    /// TLS to etcd, when its endpoints need it.
    pub tls: Option<EtcdTls>,
    /// The user to authenticate as; the password is read from
    /// [`PASSWORD_ENV`] when connecting, so it never sits in a config.
    pub user: Option<String>,
}

/// The files of TLS to etcd, as PEM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdTls {
    /// The CA that signed etcd's certificate; the system's roots otherwise.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, for etcd's client certificate auth.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Display for EtcdConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "etcd://{}", self.endpoints.join(","))
    }
}

impl EtcdConnection {
    /// Connects to the cluster, with TLS and the user when configured.
    /// Each request may take at most five seconds.
    pub async fn connect(&self) -> Result<Client, String> {
        self.connect_with(Some(TIMEOUT)).await
    }

    /// Connects for requests that wait as long as they must, such as
    /// taking a lock another instance holds; a lost connection still ends
    /// them, through the pings.
    pub async fn connect_for_waits(&self) -> Result<Client, String> {
        self.connect_with(None).await
    }

    async fn connect_with(&self, request_timeout: Option<Duration>) -> Result<Client, String> {
        // HTTP/2 pings find a connection a silent partition cut, which a
        // watch would otherwise wait on until TCP gives up.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(TIMEOUT)
            .with_keep_alive(KEEP_ALIVE, TIMEOUT)
            .with_keep_alive_while_idle(true);
        if let Some(timeout) = request_timeout {
            options = options.with_timeout(timeout);
        }
        if let Some(user) = &self.user {
            let password = std::env::var(PASSWORD_ENV)
                .map_err(|_| format!("{self}: the etcd user {user:?} needs ${PASSWORD_ENV}"))?;
            options = options.with_user(user, password);
        }
        let scheme = if let Some(tls) = &self.tls {
            let mut config = TlsOptions::new();
            if let Some(ca) = &tls.ca {
                let pem = std::fs::read(ca)
                    .map_err(|e| format!("{self}: cannot read the CA {}: {e}", ca.display()))?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &tls.identity {
                let read = |path: &PathBuf| {
                    std::fs::read(path)
                        .map_err(|e| format!("{self}: cannot read {}: {e}", path.display()))
                };
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(config);
            "https"
        } else {
            "http"
        };
        let endpoints: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect();
        Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| format!("{self}: cannot connect: {}", explain(&e)))
    }
}

/// `error`, with what to check when etcd was not reached at all: a
/// transport error says nothing of why, and the usual causes are the
/// endpoints and TLS.
pub fn explain(error: &etcd_client::Error) -> String {
    let text = error.to_string();
    // A status made on this side from a broken connection carries that
    // error as its source; one etcd sent does not.
    let unreached = match error {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => std::error::Error::source(status).is_some(),
        _ => false,
    };
    if unreached {
        format!(
            "{text}; etcd was not reached: check the endpoints, and whether it wants TLS \
             (--etcd-ca) or a client certificate (--etcd-cert, --etcd-key)"
        )
    } else {
        text
    }
}

/// Runs `session` again each time it ends, for as long as the process
/// runs: the wait before the next doubles from half a second up to thirty
/// seconds, and starts over after a session that had got going (`session`
/// says whether it had).
pub async fn reconnect_forever<F, Session>(mut session: F)
where
    F: FnMut() -> Session,
    Session: std::future::Future<Output = bool>,
{
    const FIRST_WAIT: Duration = Duration::from_millis(500);
    let mut wait = FIRST_WAIT;
    loop {
        if session().await {
            wait = FIRST_WAIT;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// A lease, renewed every third of its time to live until this is
/// dropped, and then revoked, so the keys it holds go at once rather than
/// when it runs out.
pub struct KeptLease {
    id: i64,
    /// The time to live etcd granted.
    ttl: Duration,
    client: Client,
    renewing: tokio::task::JoinHandle<()>,
    lost: tokio::sync::watch::Receiver<bool>,
}

impl KeptLease {
    /// Takes a lease of `ttl` (whole seconds, rounded up) and starts
    /// renewing it every third of what etcd granted. A failed renewal is
    /// tried again soon after. The lease counts as lost once etcd says it
    /// is gone, or once it has gone its whole time to live since the last
    /// renewal etcd acknowledged (counted from when that renewal was sent,
    /// as etcd counts it).
    pub async fn grant(client: &mut Client, ttl: Duration) -> Result<Self, etcd_client::Error> {
        let asked = i64::try_from(ttl.as_secs_f64().ceil() as u64)
            .unwrap_or(i64::MAX)
            .max(1);
        let sent = tokio::time::Instant::now();
        let granted = client.lease_grant(asked, None).await?;
        let (id, ttl) = (
            granted.id(),
            Duration::from_secs(u64::try_from(granted.ttl()).unwrap_or(1).max(1)),
        );
        let (lost, lost_receiver) = tokio::sync::watch::channel(false);
        let mut renewer = client.clone();
        let every = ttl / 3;
        let retry = (every / 4).max(Duration::from_millis(100));
        let renewing = tokio::spawn(async move {
            let mut renewed_at = sent;
            let mut next = sent + every;
            loop {
                let deadline = renewed_at + ttl;
                tokio::time::sleep_until(next.min(deadline)).await;
                let sent = tokio::time::Instant::now();
                if sent >= deadline {
                    break;
                }
                // Each renewal is one keep-alive on a stream of its own: a
                // stream a broken connection ended is not reused.
                match tokio::time::timeout_at(deadline, renewer.lease_keep_alive(id)).await {
                    Ok(Ok(_)) => {
                        renewed_at = sent;
                        next = sent + every;
                    }
                    // etcd's word that the lease has run out or was revoked.
                    Ok(Err(etcd_client::Error::LeaseKeepAliveError(reason)))
                        if reason == "lease not found" =>
                    {
                        break
                    }
                    Ok(Err(_)) => next = tokio::time::Instant::now() + retry,
                    Err(_past_deadline) => break,
                }
            }
            tracing::warn!(lease = %format!("{id:x}"), "an etcd lease was lost: the lock or the membership it held is gone");
            let _ = lost.send(true);
        });
        Ok(Self {
            id,
            ttl,
            client: client.clone(),
            renewing,
            lost: lost_receiver,
        })
    }

    /// The lease's id, for the keys put under it.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Whether the lease is lost already.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// What turns true once the lease is lost.
    pub fn lost_flag(&self) -> tokio::sync::watch::Receiver<bool> {
        self.lost.clone()
    }

    /// Returns once the lease is lost; never, while it is kept.
    pub async fn lost(&self) {
        let _ = self.lost.clone().wait_for(|lost| *lost).await;
    }
}

impl Drop for KeptLease {
    fn drop(&mut self) {
        self.renewing.abort();
        // An etcd that does not answer lets the lease run out instead.
        let (mut client, id, ttl) = (self.client.clone(), self.id, self.ttl);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(ttl, client.lease_revoke(id)).await;
            });
        }
    }
}
