//! Membership of a fleet on etcd: each instance registers itself under a
//! lease (its name, listeners, Sluice's version and the config revision it
//! has applied), so that a dead instance drops out once its lease expires;
//! and each keeps a view of every member and of who holds each of the
//! fleet's ACME locks, watched, for the admin API's status and the metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};

use super::etcd::EtcdSource;
use super::reload::Reloader;
use crate::support::etcd::KeptLease;
use crate::tls::acme::storage::locks_prefix;

/// How long a member stays listed after its instance stops renewing.
const LEASE: Duration = Duration::from_secs(10);

/// How often the member's record is brought up to date.
const REFRESH: Duration = Duration::from_secs(3);

/// What an instance says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its name, unique in the fleet.
    pub name: String,
    /// Where it listens.
    pub listeners: Vec<String>,
    /// The Sluice version it runs.
    pub version: String,
    /// The etcd revision of the config it has applied.
    pub config_revision: Option<String>,
}

/// A lock of the fleet, and the member holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockHolder {
    /// The lock, such as `certificate:example.com,www.example.com`.
    pub lock: String,
    /// The name of the member holding it.
    pub holder: String,
}

/// The members this instance sees, the holders of the fleet's locks, and
/// whether it sees etcd.
#[derive(Debug, Default)]
pub struct FleetView {
    state: Mutex<FleetState>,
}

#[derive(Debug, Default, Clone)]
struct FleetState {
    members: BTreeMap<String, Member>,
    locks: Vec<LockHolder>,
    error: Option<String>,
}

impl FleetView {
    /// The members, by name, as last seen.
    pub fn members(&self) -> Vec<Member> {
        self.lock().members.values().cloned().collect()
    }

    /// The locks held now, by name, and their holders.
    pub fn locks(&self) -> Vec<LockHolder> {
        self.lock().locks.clone()
    }

    /// Why etcd cannot be reached now, if it cannot.
    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FleetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// This instance's name: `--instance-name`, or the host's name and the
/// process id.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "sluice".into());
    format!("{host}-{}", std::process::id())
}

/// Registers this instance and follows the membership, for as long as the
/// process runs, reconnecting with a backoff when etcd is lost.
pub async fn run(reloader: Arc<Reloader>, source: EtcdSource, name: String, view: Arc<FleetView>) {
    crate::support::etcd::reconnect_forever(|| {
        let (reloader, source, name, view) =
            (reloader.clone(), source.clone(), name.clone(), view.clone());
        async move {
            let (registered, error) = serve(&reloader, &source, &name, &view).await;
            tracing::warn!(member = %name, %error, "fleet membership lost; retrying");
            let mut state = view.lock();
            // Who held which lock is unknown until etcd is back.
            state.locks.clear();
            state.error = Some(error);
            registered
        }
    })
    .await
}

fn members_prefix(source: &EtcdSource) -> String {
    format!("{}/members/", source.prefix)
}

/// One session: registers, then renews and watches until something
/// breaks. Returns whether the registration was made, and why it ended.
async fn serve(
    reloader: &Reloader,
    source: &EtcdSource,
    name: &str,
    view: &FleetView,
) -> (bool, String) {
    let mut client = match source.connect().await {
        Ok(client) => client,
        Err(error) => return (false, error),
    };
    let key = format!("{}{name}", members_prefix(source));
    let lease = match KeptLease::grant(&mut client, LEASE).await {
        Ok(lease) => lease,
        Err(e) => return (false, format!("{source}: cannot take a lease: {e}")),
    };
    let me = |reloader: &Reloader| Member {
        name: name.to_string(),
        listeners: reloader
            .live()
            .load()
            .listeners
            .iter()
            .map(|l| l.address.to_string())
            .collect(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        config_revision: reloader.source_revision(),
    };
    let mut registered = me(reloader);
    if let Err(error) = register(&mut client, &key, lease.id(), &registered).await {
        return (false, error);
    }
    let mut watch = match client
        .watch(
            members_prefix(source),
            Some(WatchOptions::new().with_prefix()),
        )
        .await
    {
        Ok(stream) => stream,
        Err(e) => return (true, format!("{source}: cannot watch the members: {e}")),
    };
    let mut lock_watch = match client
        .watch(
            locks_prefix(&source.prefix),
            Some(WatchOptions::new().with_prefix()),
        )
        .await
    {
        Ok(stream) => stream,
        Err(e) => return (true, format!("{source}: cannot watch the locks: {e}")),
    };
    if let Err(error) = refresh(&mut client, source, view).await {
        return (true, error);
    }
    if let Err(error) = refresh_locks(&mut client, source, view).await {
        return (true, error);
    }
    let mut tick = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            // Without a renewal for a lease's time, etcd has dropped this
            // member: start over rather than report it connected.
            () = lease.lost() => {
                return (true, format!("{source}: the membership's lease was not renewed in time"));
            }
            _ = tick.tick() => {
                let now = me(reloader);
                if now != registered {
                    if let Err(error) = register(&mut client, &key, lease.id(), &now).await {
                        return (true, error);
                    }
                    registered = now;
                }
            }
            event = watch.message() => match event {
                Ok(Some(response)) => {
                    let mut state = view.lock();
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        let member = kv.key_str().ok().and_then(|k| k.rsplit('/').next()).map(str::to_string);
                        match (event.event_type(), member) {
                            (EventType::Put, _) => {
                                if let Ok(member) = serde_json::from_slice::<Member>(kv.value()) {
                                    state.members.insert(member.name.clone(), member);
                                }
                            }
                            (EventType::Delete, Some(member)) => {
                                state.members.remove(&member);
                            }
                            _ => {}
                        }
                    }
                }
                Ok(None) => return (true, format!("{source}: the members' watch ended")),
                Err(e) => return (true, format!("{source}: the members' watch broke: {e}")),
            },
            event = lock_watch.message() => match event {
                Ok(Some(_)) => {
                    if let Err(error) = refresh_locks(&mut client, source, view).await {
                        return (true, error);
                    }
                }
                Ok(None) => return (true, format!("{source}: the locks' watch ended")),
                Err(e) => return (true, format!("{source}: the locks' watch broke: {e}")),
            },
        }
    }
}

async fn register(
    client: &mut Client,
    key: &str,
    lease: i64,
    member: &Member,
) -> Result<(), String> {
    let value = serde_json::to_vec(member).map_err(|e| e.to_string())?;
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await
        .map(drop)
        .map_err(|e| format!("cannot register {key}: {e}"))
}

/// Reads every member afresh into `view`.
async fn refresh(client: &mut Client, source: &EtcdSource, view: &FleetView) -> Result<(), String> {
    let response = client
        .get(
            members_prefix(source),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .map_err(|e| format!("{source}: cannot list the members: {e}"))?;
    let members = response
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Member>(kv.value()).ok())
        .map(|member| (member.name.clone(), member))
        .collect();
    let mut state = view.lock();
    state.members = members;
    state.error = None;
    Ok(())
}

/// Reads afresh who holds each lock into `view`. A lock is an etcd
/// election: each waiting instance has a key `<lock>/<lease>` whose value
/// is its name, and the key created first is the holder's.
async fn refresh_locks(
    client: &mut Client,
    source: &EtcdSource,
    view: &FleetView,
) -> Result<(), String> {
    let prefix = locks_prefix(&source.prefix);
    let response = client
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("{source}: cannot list the locks: {e}"))?;
    let mut first: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for kv in response.kvs() {
        let Some((lock, _lease)) = kv
            .key_str()
            .ok()
            .and_then(|key| key.strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.rsplit_once('/'))
        else {
            continue;
        };
        let holder = String::from_utf8_lossy(kv.value()).into_owned();
        let entry = first
            .entry(lock.to_string())
            .or_insert((kv.create_revision(), holder.clone()));
        if kv.create_revision() < entry.0 {
            *entry = (kv.create_revision(), holder);
        }
    }
    view.lock().locks = first
        .into_iter()
        .map(|(lock, (_, holder))| LockHolder { lock, holder })
        .collect();
    Ok(())
}
