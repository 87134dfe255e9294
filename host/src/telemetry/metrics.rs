//! Prometheus metrics.
//!
//! Counters and the duration histogram are updated by requests. Gauges that
//! describe live state (breaker state, endpoint health, in-flight counts,
//! certificate expiry) are read from the current snapshot when `/metrics` is
//! scraped, so the request path never pays for them.

use std::cell::RefCell;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pingora::protocols::http::v1::server::HeaderReadTimeout;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::control::fleet::FleetView;
use crate::control::metrics::ReloadMetrics;
use crate::plugins::metrics::PluginMetrics;
use crate::resilience::breaker::Transition;
use crate::routing::names::NameState;
use crate::snapshot::Snapshot;
use crate::support::resolved::with_resolved;

/// The phases of a request, as `sluice_panics_total` labels them.
pub const REQUEST_PHASES: [&str; 11] = [
    "request_filter",
    "request_body_filter",
    "upstream_peer",
    "fail_to_connect",
    "error_while_proxy",
    "upstream_request_filter",
    "upstream_response_filter",
    "response_filter",
    "response_body_filter",
    "fail_to_proxy",
    "logging",
];

/// The labels of a request series a worker thread resolved, and the
/// registry they belong to.
struct RequestSeriesKey {
    registry: u64,
    route: Box<str>,
    placement: Box<str>,
    status: Box<str>,
}

/// The counter and histogram a request series names.
type RequestSeries = (IntCounter, Histogram);

/// How many request series a worker thread keeps resolved: the first ones
/// it meets (see [`with_resolved`]); any past them costs a label lookup
/// each time. The series are never removed from the registry, so one
/// kept never goes stale.
const KEPT_REQUEST_SERIES: usize = 64;

thread_local! {
    static RESOLVED_REQUEST_SERIES: RefCell<Vec<(RequestSeriesKey, RequestSeries)>> =
        const { RefCell::new(Vec::new()) };
}

/// Every metric Sluice exports.
pub struct Metrics {
    registry: Registry,
    /// Tells this registry's series apart from another's in a worker
    /// thread's resolved series (tests make several).
    id: u64,
    /// `sluice_requests_total{route, placement, status}`.
    requests: IntCounterVec,
    /// `sluice_request_duration_seconds{route}`.
    duration: HistogramVec,
    /// `sluice_upstream_errors_total{placement, endpoint, kind}`.
    pub upstream_errors: IntCounterVec,
    /// `sluice_breaker_transitions_total{placement, endpoint, from, to}`.
    pub breaker_transitions: IntCounterVec,
    /// `sluice_failovers_total{from, to, reason}`.
    pub failovers: IntCounterVec,
    /// `sluice_rate_limited_total{route}`: requests refused by a route's
    /// rate limit.
    pub rate_limited: IntCounterVec,
    /// `sluice_coalesced_requests_total{route, role}`: requests of
    /// coalescing routes, by what they were to their identical ones.
    pub coalesced: IntCounterVec,
    /// The metrics of configuration reloads.
    pub reload: ReloadMetrics,
    /// The metrics plugins keep and are measured by.
    pub plugins: Arc<PluginMetrics>,
    /// `sluice_panics_total{phase}`: panics caught in a request's phase.
    pub panics: IntCounterVec,
    /// `sluice_responses_aborted_total{placement}`: responses cut short
    /// after their head had been sent.
    pub aborted_responses: IntCounterVec,
    /// `sluice_request_heads_refused_total{limit}`: request heads past a
    /// `[server]` limit.
    pub refused_heads: IntCounterVec,
    /// `sluice_client_connections`: client connections open.
    pub client_connections: IntGauge,
    /// `sluice_client_connections_shed_total{cap}`: client connections
    /// closed on accept at a `[server]` cap.
    pub shed_connections: IntCounterVec,
    /// Pingora's count of request heads past `[server] header_read_timeout`,
    /// copied into `refused_heads` when scraped.
    header_read_timeout: OnceLock<Arc<HeaderReadTimeout>>,
    /// The fleet this instance is a member of, read when scraped.
    fleet: OnceLock<Arc<FleetView>>,
    fleet_members: IntGaugeVec,
    fleet_locks: IntGaugeVec,
    fleet_connected: IntGauge,
    breaker_state: IntGaugeVec,
    endpoint_healthy: IntGaugeVec,
    endpoint_in_flight: IntGaugeVec,
    pool_requests: IntCounterVec,
    placement_in_flight: IntGaugeVec,
    breaker_open_seconds: GaugeVec,
    certificate_expiry: IntGaugeVec,
    name_address: IntGaugeVec,
    name_resolved_at: IntGaugeVec,
    name_failing: IntGaugeVec,
}

impl Metrics {
    /// Counts a request answered with `status` in `sluice_requests_total`
    /// and its time in `sluice_request_duration_seconds`.
    ///
    /// Each worker thread keeps the series it used, so a request pays a
    /// short search instead of hashing its labels and taking the vectors'
    /// locks, which both workers of a two-thread server would contend for.
    pub fn count_request(&self, route: &str, placement: &str, status: &str, elapsed: Duration) {
        RESOLVED_REQUEST_SERIES.with(|resolved| {
            let Ok(()) = with_resolved::<_, _, _, Infallible>(
                &mut resolved.borrow_mut(),
                KEPT_REQUEST_SERIES,
                |key| {
                    key.registry == self.id
                        && *key.status == *status
                        && *key.route == *route
                        && *key.placement == *placement
                },
                || RequestSeriesKey {
                    registry: self.id,
                    route: route.into(),
                    placement: placement.into(),
                    status: status.into(),
                },
                || {
                    Ok((
                        self.requests.with_label_values(&[route, placement, status]),
                        self.duration.with_label_values(&[route]),
                    ))
                },
                |(requests, duration)| {
                    requests.inc();
                    duration.observe(elapsed.as_secs_f64());
                },
            );
        });
    }

    /// Creates and registers every metric, plus process metrics (CPU, memory).
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let requests = counter(
            "sluice_requests_total",
            "Requests answered, by route, placement and status.",
            &["route", "placement", "status"],
        );
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_request_duration_seconds",
                "Time from request start to the end of the response.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("unique metric");
        let upstream_errors = counter(
            "sluice_upstream_errors_total",
            "Failed upstream attempts, by kind.",
            &["placement", "endpoint", "kind"],
        );
        let breaker_transitions = counter(
            "sluice_breaker_transitions_total",
            "Circuit breaker state changes.",
            &["placement", "endpoint", "from", "to"],
        );
        let refused_heads = counter(
            "sluice_request_heads_refused_total",
            "Requests refused for a request line, header line or head past its [server] limit.",
            &["limit"],
        );
        for limit in [
            "request_line",
            "header_line",
            "request_head",
            "header_read_timeout",
        ] {
            refused_heads.with_label_values(&[limit]);
        }
        let client_connections = IntGauge::new(
            "sluice_client_connections",
            "Client connections open, on every proxy listener.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(client_connections.clone()))
            .expect("unique metric");
        let shed_connections = counter(
            "sluice_client_connections_shed_total",
            "Client connections closed on accept at a [server] cap, by cap.",
            &["cap"],
        );
        for cap in ["total", "per_client"] {
            shed_connections.with_label_values(&[cap]);
        }
        let failovers = counter(
            "sluice_failovers_total",
            "Requests served by another placement than routed.",
            &["from", "to", "reason"],
        );
        let rate_limited = counter(
            "sluice_rate_limited_total",
            "Requests refused with 429 by a route's rate limit.",
            &["route"],
        );
        let coalesced = counter(
            "sluice_coalesced_requests_total",
            "Requests of coalescing routes: leader (went upstream for any identical ones), \
             follower (answered from a leader's response), alone (waited for one in vain, \
             then went upstream).",
            &["route", "role"],
        );
        let reload = ReloadMetrics::new();
        reload.register(&registry).expect("unique metric");
        let breaker_state = gauge(
            "sluice_breaker_state",
            "Breaker state: 0 closed, 1 open, 2 half-open.",
            &["placement", "endpoint"],
        );
        let endpoint_healthy = gauge(
            "sluice_endpoint_healthy",
            "1 when the endpoint is healthy.",
            &["placement", "endpoint"],
        );
        let endpoint_in_flight = gauge(
            "sluice_endpoint_in_flight",
            "Requests in flight to the endpoint.",
            &["placement", "endpoint"],
        );
        let pool_requests = counter(
            "sluice_pool_requests_total",
            "Upstream requests by whether they reused a pooled connection or a free HTTP/2 \
             stream (hit), or opened a connection (miss).",
            &["placement", "endpoint", "result"],
        );
        let placement_in_flight = gauge(
            "sluice_in_flight_requests",
            "Requests in flight, by placement.",
            &["placement"],
        );
        let breaker_open_seconds = GaugeVec::new(
            Opts::new(
                "sluice_breaker_open_seconds",
                "How long the breaker has been open without closing (0 when closed).",
            ),
            &["placement", "endpoint"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(breaker_open_seconds.clone()))
            .expect("unique metric");
        let name_address = gauge(
            "sluice_upstream_name_address",
            "1 for each address an upstream name resolves to.",
            &["name", "address"],
        );
        let name_resolved_at = gauge(
            "sluice_upstream_name_resolved_timestamp_seconds",
            "When an upstream name last resolved (0: never).",
            &["name"],
        );
        let name_failing = gauge(
            "sluice_upstream_name_failing",
            "1 when the last lookup of an upstream name failed.",
            &["name"],
        );
        let fleet_members = gauge(
            "sluice_fleet_member",
            "1 for each member of the fleet on etcd this instance sees, with its version and \
             the etcd revision of the config it applied.",
            &["member", "version", "config_revision"],
        );
        let fleet_locks = gauge(
            "sluice_fleet_lock_holder",
            "1 for each ACME lock of the fleet on etcd that is held, with its holder.",
            &["lock", "member"],
        );
        let fleet_connected = IntGauge::new(
            "sluice_fleet_connected",
            "1 while this instance is registered in its fleet on etcd.",
        )
        .expect("valid metric");
        let certificate_expiry = gauge(
            "sluice_certificate_expiry_timestamp_seconds",
            "When each certificate loaded from a file expires (Unix time).",
            &["file"],
        );
        let plugins = Arc::new(PluginMetrics::new());
        plugins.register(&registry).expect("unique metric");
        let panics = counter(
            "sluice_panics_total",
            "Panics caught in a request's phase; each failed its request with a 500 or a cut-short response.",
            &["phase"],
        );
        // Exported from 0, so a rate or an alert has a series before the first.
        for phase in REQUEST_PHASES {
            panics.with_label_values(&[phase]);
        }
        let aborted_responses = counter(
            "sluice_responses_aborted_total",
            "Responses cut short because they failed after their head had been sent.",
            &["placement"],
        );
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        static IDS: AtomicU64 = AtomicU64::new(0);
        Self {
            registry,
            id: IDS.fetch_add(1, Ordering::Relaxed),
            requests,
            duration,
            upstream_errors,
            breaker_transitions,
            failovers,
            rate_limited,
            coalesced,
            reload,
            plugins,
            panics,
            aborted_responses,
            refused_heads,
            client_connections,
            shed_connections,
            header_read_timeout: OnceLock::new(),
            fleet: OnceLock::new(),
            fleet_members,
            fleet_locks,
            fleet_connected,
            breaker_state,
            endpoint_healthy,
            endpoint_in_flight,
            pool_requests,
            placement_in_flight,
            breaker_open_seconds,
            certificate_expiry,
            name_address,
            name_resolved_at,
            name_failing,
        }
    }

    /// Counts a breaker transition and logs it.
    pub fn breaker_transition(&self, placement: &str, endpoint: &str, transition: Transition) {
        let (from, to) = (transition.from.as_str(), transition.to.as_str());
        self.breaker_transitions
            .with_label_values(&[placement, endpoint, from, to])
            .inc();
        tracing::warn!(%placement, %endpoint, from, to, "circuit breaker changed state");
    }

    /// Reports the request heads past `[server] header_read_timeout`, which
    /// Pingora counts in `timeout`, as `sluice_request_heads_refused_total`.
    pub fn follow_header_read_timeout(&self, timeout: Arc<HeaderReadTimeout>) {
        let _ = self.header_read_timeout.set(timeout);
    }

    /// Reports the members of `fleet` when scraped.
    pub fn set_fleet(&self, fleet: Arc<FleetView>) {
        if self.fleet.set(fleet).is_ok() {
            let _ = self
                .registry
                .register(Box::new(self.fleet_connected.clone()));
        }
    }

    /// The registry `/metrics` renders, for metrics kept elsewhere (ACME).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition, with live gauges read from
    /// `snapshot` and the upstream `names` it uses.
    pub fn render(&self, snapshot: &Snapshot, names: &[(String, NameState)]) -> Vec<u8> {
        if let Some(timeout) = self.header_read_timeout.get() {
            let counted = self
                .refused_heads
                .with_label_values(&["header_read_timeout"]);
            counted.inc_by(timeout.expired().saturating_sub(counted.get()));
        }
        if let Some(fleet) = self.fleet.get() {
            self.fleet_members.reset();
            for member in fleet.members() {
                let revision = member.config_revision.as_deref().unwrap_or("");
                self.fleet_members
                    .with_label_values(&[&member.name, &member.version, revision])
                    .set(1);
            }
            self.fleet_locks.reset();
            for held in fleet.locks() {
                self.fleet_locks
                    .with_label_values(&[&held.lock, &held.holder])
                    .set(1);
            }
            self.fleet_connected.set(i64::from(fleet.error().is_none()));
        }
        self.name_address.reset();
        self.name_resolved_at.reset();
        self.name_failing.reset();
        for (name, state) in names {
            for address in &state.addresses {
                self.name_address
                    .with_label_values(&[name, &address.to_string()])
                    .set(1);
            }
            self.name_resolved_at.with_label_values(&[name]).set(
                state
                    .resolved_at
                    .map_or(0, crate::support::time::unix_seconds),
            );
            self.name_failing
                .with_label_values(&[name])
                .set(i64::from(state.last_error.is_some()));
        }
        self.breaker_state.reset();
        self.endpoint_healthy.reset();
        self.endpoint_in_flight.reset();
        // Counted on the endpoint's live state, which outlives snapshots;
        // each scrape copies the counts of the endpoints still configured.
        self.pool_requests.reset();
        self.placement_in_flight.reset();
        self.breaker_open_seconds.reset();
        self.certificate_expiry.reset();
        for certificate in snapshot.certificates.list() {
            // `not_after` is the RFC 3339 text the admin status shows, read
            // from the leaf when the file loaded. Were it ever not to parse,
            // no sample is better than a 0, which would read as long expired.
            if let Ok(not_after) = humantime::parse_rfc3339(&certificate.not_after) {
                self.certificate_expiry
                    .with_label_values(&[&certificate.file])
                    .set(crate::support::time::unix_seconds(not_after));
            }
        }
        let now = Instant::now();
        for placement in &snapshot.placements {
            self.placement_in_flight
                .with_label_values(&[&placement.name])
                .set(i64::from(
                    placement
                        .state
                        .in_flight
                        .load(std::sync::atomic::Ordering::Relaxed),
                ));
            for endpoint in &placement.endpoints {
                let labels = [&*placement.name, &*endpoint.id];
                let state = &endpoint.state;
                self.breaker_state
                    .with_label_values(&labels)
                    .set(state.breaker.state(now).gauge());
                self.breaker_open_seconds.with_label_values(&labels).set(
                    state
                        .breaker
                        .open_since(now)
                        .map_or(0.0, |d| d.as_secs_f64()),
                );
                self.endpoint_healthy
                    .with_label_values(&labels)
                    .set(i64::from(state.health.is_healthy(now)));
                self.endpoint_in_flight
                    .with_label_values(&labels)
                    .set(i64::from(
                        state.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                    ));
                for (result, count) in [("hit", &state.pool.hits), ("miss", &state.pool.misses)] {
                    self.pool_requests
                        .with_label_values(&[&*placement.name, &*endpoint.id, result])
                        .inc_by(count.load(std::sync::atomic::Ordering::Relaxed));
                }
            }
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::breaker::{Admission, CircuitState};
    use crate::resilience::state::Registry as StateRegistry;
    use crate::tls::certificates::Certificate;

    /// Two placements of one endpoint each; `a` opens after one failure.
    fn snapshot() -> Snapshot {
        let text = r#"[[listeners]]
address = "127.0.0.1:8080"
[placements.a]
endpoints = [{ address = "127.0.0.1:1" }]
breaker = { consecutive_failures = 1, open_for = "1m" }
[placements.b]
endpoints = [{ address = "127.0.0.1:2" }]
[[routes]]
placement = "a"
"#;
        let loaded = crate::config::parse(text, "t", &|_| None).unwrap();
        crate::snapshot::compile(&loaded, "t", &StateRegistry::default()).unwrap()
    }

    /// The sample line of `series` (name and labels, as rendered) in `text`.
    fn sample<'a>(text: &'a str, series: &str) -> &'a str {
        text.lines()
            .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    }

    #[test]
    fn requests_count_in_their_own_registry_and_series() {
        let (first, second) = (Metrics::new(), Metrics::new());
        let snapshot = snapshot();
        let took = Duration::from_millis(3);
        for _ in 0..3 {
            first.count_request("shop", "a", "200", took);
        }
        first.count_request("shop", "a", "503", took);
        first.count_request("api", "b", "200", took);
        second.count_request("shop", "a", "200", took);
        let first = String::from_utf8(first.render(&snapshot, &[])).unwrap();
        let second = String::from_utf8(second.render(&snapshot, &[])).unwrap();
        let requests = |placement: &str, route: &str, status: &str| {
            format!(
                "sluice_requests_total{{placement=\"{placement}\",route=\"{route}\",status=\"{status}\"}}"
            )
        };
        assert!(sample(&first, &requests("a", "shop", "200")).ends_with(" 3"));
        assert!(sample(&first, &requests("a", "shop", "503")).ends_with(" 1"));
        assert!(sample(&first, &requests("b", "api", "200")).ends_with(" 1"));
        assert!(sample(&second, &requests("a", "shop", "200")).ends_with(" 1"));
        assert!(sample(
            &first,
            "sluice_request_duration_seconds_count{route=\"shop\"}"
        )
        .ends_with(" 4"));
    }

    #[test]
    fn requests_past_the_kept_series_still_count() {
        let metrics = Metrics::new();
        let took = Duration::from_millis(1);
        let routes: Vec<String> = (0..KEPT_REQUEST_SERIES + 2)
            .map(|i| format!("r{i}"))
            .collect();
        for _ in 0..2 {
            for route in &routes {
                metrics.count_request(route, "a", "200", took);
            }
        }
        let text = String::from_utf8(metrics.render(&snapshot(), &[])).unwrap();
        for route in [&routes[0], routes.last().unwrap()] {
            let series = format!(
                "sluice_requests_total{{placement=\"a\",route=\"{route}\",status=\"200\"}}"
            );
            assert!(sample(&text, &series).ends_with(" 2"), "{route}");
        }
    }

    #[test]
    fn breaker_gauges_follow_the_breaker_of_each_endpoint() {
        let metrics = Metrics::new();
        let snapshot = snapshot();
        let closed = String::from_utf8(metrics.render(&snapshot, &[])).unwrap();
        let series = |name: &str, placement: &str, port: u16| {
            format!("{name}{{endpoint=\"127.0.0.1:{port}\",placement=\"{placement}\"}}")
        };
        assert_eq!(
            sample(&closed, &series("sluice_breaker_state", "a", 1)),
            format!("{} 0", series("sluice_breaker_state", "a", 1))
        );
        assert!(sample(&closed, &series("sluice_breaker_open_seconds", "a", 1)).ends_with(" 0"));

        let breaker = &snapshot.placements[0].endpoints[0].state.breaker;
        let opened_at = Instant::now() - std::time::Duration::from_secs(2);
        breaker.record(Admission::Normal, false, opened_at);
        assert_eq!(breaker.state(Instant::now()), CircuitState::Open);
        let open = String::from_utf8(metrics.render(&snapshot, &[])).unwrap();
        assert!(sample(&open, &series("sluice_breaker_state", "a", 1)).ends_with(" 1"));
        let seconds: f64 = sample(&open, &series("sluice_breaker_open_seconds", "a", 1))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(seconds >= 2.0, "open for {seconds} s");
        assert!(sample(&open, &series("sluice_breaker_state", "b", 2)).ends_with(" 0"));
        assert!(sample(&open, &series("sluice_endpoint_healthy", "b", 2)).ends_with(" 1"));
    }

    #[test]
    fn certificates_from_files_export_their_expiry() {
        let dir = std::env::temp_dir().join(format!("sluice-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let (cert, key) = (dir.join("a.pem"), dir.join("a.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let mut snapshot = snapshot();
        let certificate = Certificate::load(&cert, &key, vec!["a.test".into()]).unwrap();
        let not_after = humantime::parse_rfc3339(&certificate.info.not_after).unwrap();
        Arc::get_mut(&mut snapshot.certificates)
            .expect("a fresh snapshot shares its certificates with nothing")
            .insert(certificate);
        std::fs::remove_dir_all(&dir).unwrap();

        let text = String::from_utf8(Metrics::new().render(&snapshot, &[])).unwrap();
        let series = format!(
            "sluice_certificate_expiry_timestamp_seconds{{file=\"{}\"}}",
            cert.display()
        );
        assert_eq!(
            sample(&text, &series),
            format!("{series} {}", crate::support::time::unix_seconds(not_after))
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_cpu_and_memory_are_exported() {
        let text = String::from_utf8(Metrics::new().render(&snapshot(), &[])).unwrap();
        let resident: f64 = sample(&text, "process_resident_memory_bytes")
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(resident > 0.0, "{text}");
        sample(&text, "process_cpu_seconds_total");
    }

    #[test]
    fn reload_results_are_exported_before_any_reload() {
        let text = String::from_utf8(Metrics::new().render(&snapshot(), &[])).unwrap();
        for result in ["applied", "unchanged", "failed"] {
            let series = format!("sluice_config_reloads_total{{result=\"{result}\"}}");
            assert_eq!(sample(&text, &series), format!("{series} 0"));
        }
    }
}
