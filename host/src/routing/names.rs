//! Upstream host names, resolved off the request path.
//!
//! An endpoint written as `name:port` contributes one endpoint per address
//! its name resolves to. [`Names`] holds what is known of every name the
//! config in force uses; compiling a snapshot reads it and never waits for
//! DNS. The [`NameResolver`] fills it: before a config is compiled it looks
//! up the names that config adds, within `[resolver] timeout`, and while the
//! proxy runs it asks again for each name when its answer expires (the
//! record's TTL, kept between `min_ttl` and `max_ttl`), and has the config
//! in force compiled again when a name's addresses change.
//!
//! A name that does not resolve is a warning, never a refusal: its
//! placement has no endpoint from it until it resolves. A name the DNS
//! says does not exist (or has no address records) loses its addresses; a
//! lookup that fails for another reason (a timeout, an unreachable server)
//! keeps the addresses last seen, since the backend behind them most likely
//! did not move, and is retried after `retry`.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use tokio::sync::watch;

use crate::config::AddressFamily;

/// The compiled `[resolver]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSpec {
    /// DNS servers; the system's (`/etc/resolv.conf`) when empty.
    pub nameservers: Vec<SocketAddr>,
    /// The shortest time an answer is kept.
    pub min_ttl: Duration,
    /// The longest time an answer is kept.
    pub max_ttl: Duration,
    /// How soon a failed lookup is tried again.
    pub retry: Duration,
    /// The longest one lookup may take.
    pub timeout: Duration,
    /// Which address records count.
    pub family: AddressFamily,
}

impl Default for ResolverSpec {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(300),
            retry: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            family: AddressFamily::Both,
        }
    }
}

/// What is known of one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameState {
    /// Its addresses, sorted; empty while it does not resolve.
    pub addresses: Vec<IpAddr>,
    /// When a lookup last succeeded.
    pub resolved_at: Option<SystemTime>,
    /// When it was last looked up.
    pub attempted_at: Option<SystemTime>,
    /// Why the last lookup failed; `None` after a success.
    pub last_error: Option<String>,
    /// When to look it up again.
    refresh_at: Option<Instant>,
}

/// The resolutions of every name the config in force uses: written by the
/// [`NameResolver`], read when a snapshot is compiled.
#[derive(Debug, Default)]
pub struct Names {
    entries: Mutex<BTreeMap<String, NameState>>,
}

/// How a lookup ended.
#[derive(Debug)]
enum Outcome {
    /// These addresses, valid until then.
    Resolved(Vec<IpAddr>, Instant),
    /// The DNS answered that the name has no address records.
    Absent(String),
    /// No answer: a timeout, an unreachable server, a malformed reply.
    Failed(String),
}

impl Names {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NameState>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is known of `name`; `None` when it was never looked up.
    pub fn get(&self, name: &str) -> Option<NameState> {
        self.lock().get(&name.to_ascii_lowercase()).cloned()
    }

    /// Every name with what is known of it, by name.
    pub fn all(&self) -> Vec<(String, NameState)> {
        self.lock()
            .iter()
            .map(|(name, state)| (name.clone(), state.clone()))
            .collect()
    }

    /// Sets `name`'s addresses as if a lookup had returned them, valid for
    /// `valid_for`: for configs compiled without a resolver, such as tests.
    pub fn insert(&self, name: &str, addresses: Vec<IpAddr>, valid_for: Duration) {
        self.record(
            name,
            Outcome::Resolved(addresses, Instant::now() + valid_for),
            valid_for,
        );
    }

    /// Records how a lookup of `name` ended; true when its addresses
    /// changed.
    fn record(&self, name: &str, outcome: Outcome, retry: Duration) -> bool {
        let now = Instant::now();
        let mut entries = self.lock();
        let state = entries.entry(name.to_ascii_lowercase()).or_default();
        let before = std::mem::take(&mut state.addresses);
        state.attempted_at = Some(SystemTime::now());
        match outcome {
            Outcome::Resolved(mut addresses, valid_until) => {
                addresses.sort_unstable();
                addresses.dedup();
                state.addresses = addresses;
                state.resolved_at = state.attempted_at;
                state.last_error = None;
                state.refresh_at = Some(valid_until.max(now + Duration::from_millis(100)));
            }
            Outcome::Absent(error) => {
                state.last_error = Some(error);
                state.refresh_at = Some(now + retry);
            }
            Outcome::Failed(error) => {
                state.addresses = before.clone();
                state.last_error = Some(error);
                state.refresh_at = Some(now + retry);
            }
        }
        state.addresses != before
    }

    /// Forgets every name not in `wanted`.
    fn retain(&self, wanted: &HashSet<String>) {
        self.lock().retain(|name, _| wanted.contains(name));
    }

    /// Of `wanted`, the names due for a lookup at `now`, and when the next
    /// of the others is.
    fn due(&self, wanted: &HashSet<String>, now: Instant) -> (Vec<String>, Option<Instant>) {
        let entries = self.lock();
        let mut due = Vec::new();
        let mut next = None::<Instant>;
        for name in wanted {
            match entries.get(name).and_then(|state| state.refresh_at) {
                Some(at) if at > now => next = Some(next.map_or(at, |n| n.min(at))),
                _ => due.push(name.clone()),
            }
        }
        (due, next)
    }
}

/// Looks names up, before a config is compiled and whenever their answers
/// expire.
pub struct NameResolver {
    names: Arc<Names>,
    dns: ArcSwap<(ResolverSpec, TokioResolver)>,
    wanted: watch::Sender<HashSet<String>>,
}

impl NameResolver {
    /// A resolver filling `names`, with the default `[resolver]` settings
    /// until [`NameResolver::configure`] is given a config's.
    pub fn new(names: Arc<Names>) -> Self {
        let spec = ResolverSpec::default();
        let dns = build(&spec);
        Self {
            names,
            dns: ArcSwap::from_pointee((spec, dns)),
            wanted: watch::Sender::new(HashSet::new()),
        }
    }

    /// The names this resolver fills.
    pub fn names(&self) -> &Arc<Names> {
        &self.names
    }

    /// Applies a config's `[resolver]` settings; answers already held stay
    /// until they expire.
    pub fn configure(&self, spec: &ResolverSpec) {
        if self.dns.load().0 != *spec {
            self.dns.store(Arc::new((spec.clone(), build(spec))));
        }
    }

    /// Looks up those of `names` never looked up before, all at once, each
    /// within `spec`'s timeout: the names a config adds, before it is
    /// compiled. `spec` is that config's `[resolver]`, which is not in
    /// force yet.
    pub async fn resolve_new(&self, spec: &ResolverSpec, names: &[String]) {
        let new: Vec<String> = names
            .iter()
            .map(|name| name.to_ascii_lowercase())
            .filter(|name| self.names.get(name).is_none())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if new.is_empty() {
            return;
        }
        let current = self.dns.load_full();
        let dns = if current.0 == *spec {
            current
        } else {
            Arc::new((spec.clone(), build(spec)))
        };
        self.resolve_all(&dns, new).await;
    }

    /// Looks up each of `names` concurrently; true when any one's addresses
    /// changed.
    async fn resolve_all(
        &self,
        dns: &Arc<(ResolverSpec, TokioResolver)>,
        names: Vec<String>,
    ) -> bool {
        let mut lookups = tokio::task::JoinSet::new();
        for name in names {
            let dns = dns.clone();
            lookups.spawn(async move {
                let outcome = lookup(&dns.0, &dns.1, &name).await;
                (name, outcome)
            });
        }
        let retry = dns.0.retry;
        let mut changed = false;
        while let Some(joined) = lookups.join_next().await {
            let Ok((name, outcome)) = joined else {
                continue;
            };
            match &outcome {
                Outcome::Resolved(addresses, _) => {
                    tracing::debug!(%name, ?addresses, "upstream name resolved")
                }
                Outcome::Absent(error) | Outcome::Failed(error) => {
                    tracing::warn!(%name, %error, "upstream name does not resolve")
                }
            }
            if self.names.record(&name, outcome, retry) {
                let addresses = self
                    .names
                    .get(&name)
                    .map(|s| s.addresses)
                    .unwrap_or_default();
                tracing::info!(%name, ?addresses, "upstream name resolves to new addresses");
                changed = true;
            }
        }
        changed
    }

    /// Sets the names the config in force uses: those kept fresh from now
    /// on. Names no longer used are forgotten.
    pub fn keep_fresh(&self, names: &[String]) {
        let wanted: HashSet<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        self.names.retain(&wanted);
        self.wanted.send_replace(wanted);
    }

    /// Runs for as long as the process: looks each name up again when its
    /// answer expires, and calls `changed` after a round of lookups changed
    /// some name's addresses.
    pub async fn refresh<F, Fut>(self: Arc<Self>, changed: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut wanted = self.wanted.subscribe();
        loop {
            let names = wanted.borrow_and_update().clone();
            let (due, next) = self.names.due(&names, Instant::now());
            if !due.is_empty() {
                let dns = self.dns.load_full();
                if self.resolve_all(&dns, due).await {
                    changed().await;
                }
                continue;
            }
            let sleep = match next {
                Some(at) => tokio::time::sleep_until(at.into()),
                None => tokio::time::sleep(Duration::from_secs(3600)),
            };
            tokio::select! {
                _ = sleep => {}
                result = wanted.changed() => {
                    if result.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// A hickory resolver for `spec`: its servers, or the system's.
fn build(spec: &ResolverSpec) -> TokioResolver {
    let provider = TokioConnectionProvider::default();
    let mut builder = if spec.nameservers.is_empty() {
        TokioResolver::builder_tokio().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the system's DNS configuration; using hickory's defaults");
            TokioResolver::builder_with_config(ResolverConfig::default(), provider.clone())
        })
    } else {
        let mut config = ResolverConfig::new();
        for server in &spec.nameservers {
            config.add_name_server(NameServerConfig::new(*server, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*server, Protocol::Tcp));
        }
        TokioResolver::builder_with_config(config, provider)
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.timeout = spec.timeout;
    options.attempts = 1;
    options.ip_strategy = match spec.family {
        AddressFamily::Both => LookupIpStrategy::Ipv4AndIpv6,
        AddressFamily::Ipv4 => LookupIpStrategy::Ipv4Only,
        AddressFamily::Ipv6 => LookupIpStrategy::Ipv6Only,
    };
    options.positive_min_ttl = Some(spec.min_ttl);
    options.positive_max_ttl = Some(spec.max_ttl);
    options.negative_max_ttl = Some(spec.retry);
    // Names in /etc/hosts (`localhost`, and what a container runtime
    // writes there) resolve as they would for any other program.
    options.use_hosts_file = ResolveHosts::Always;
    builder.build()
}

async fn lookup(spec: &ResolverSpec, dns: &TokioResolver, name: &str) -> Outcome {
    // hickory's own timeout covers one exchange; this bounds the whole
    // lookup, search domains and both families included.
    let bound = spec.timeout * 2;
    match tokio::time::timeout(bound, dns.lookup_ip(name)).await {
        Ok(Ok(found)) => {
            let addresses: Vec<IpAddr> = found.iter().collect();
            if addresses.is_empty() {
                Outcome::Absent("no address records".into())
            } else {
                Outcome::Resolved(addresses, found.valid_until())
            }
        }
        Ok(Err(e)) if e.is_nx_domain() => Outcome::Absent("no such name (NXDOMAIN)".into()),
        Ok(Err(e)) if e.is_no_records_found() => Outcome::Absent(match spec.family {
            AddressFamily::Both => "no A or AAAA records".into(),
            AddressFamily::Ipv4 => "no A records".into(),
            AddressFamily::Ipv6 => "no AAAA records".into(),
        }),
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(_) => Outcome::Failed(format!("no answer within {bound:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_change_of_addresses_is_reported_and_a_failed_lookup_keeps_the_last_ones() {
        let names = Names::default();
        let retry = Duration::from_secs(1);
        let later = Instant::now() + Duration::from_secs(30);
        let first = Outcome::Resolved(vec![ip("10.0.0.2"), ip("10.0.0.1")], later);
        assert!(names.record("API.internal", first, retry));
        let state = names.get("api.internal").unwrap();
        assert_eq!(state.addresses, vec![ip("10.0.0.1"), ip("10.0.0.2")]);
        assert!(state.resolved_at.is_some() && state.last_error.is_none());

        let same = Outcome::Resolved(vec![ip("10.0.0.1"), ip("10.0.0.2")], later);
        assert!(!names.record("api.internal", same, retry));

        let timeout = Outcome::Failed("no answer".into());
        assert!(!names.record("api.internal", timeout, retry));
        let state = names.get("api.internal").unwrap();
        assert_eq!(state.addresses.len(), 2);
        assert_eq!(state.last_error.as_deref(), Some("no answer"));

        let gone = Outcome::Absent("no record found".into());
        assert!(names.record("api.internal", gone, retry));
        assert!(names.get("api.internal").unwrap().addresses.is_empty());
    }

    #[test]
    fn names_are_due_when_never_looked_up_or_expired_and_unwanted_ones_are_forgotten() {
        let names = Names::default();
        let now = Instant::now();
        names.record(
            "fresh",
            Outcome::Resolved(vec![ip("10.0.0.1")], now + Duration::from_secs(60)),
            Duration::from_secs(1),
        );
        names.record(
            "stale",
            Outcome::Resolved(vec![ip("10.0.0.2")], now),
            Duration::from_secs(1),
        );
        let wanted: HashSet<String> = ["fresh", "stale", "new"].map(String::from).into();
        let (mut due, next) = names.due(&wanted, now + Duration::from_secs(1));
        due.sort();
        assert_eq!(due, vec!["new".to_string(), "stale".to_string()]);
        assert!(next.is_some_and(|at| at > now + Duration::from_secs(59)));

        names.retain(&["fresh".to_string()].into());
        assert!(names.get("stale").is_none());
        assert!(names.get("fresh").is_some());
    }
}
