//! What the host gives a plugin instance: an empty WASI context (no
//! preopened directories, no sockets, no environment), a memory cap, the
//! `sluice:plugin/host` imports (logging and metrics labelled with the
//! plugin's name), and the `request`, `response`, `body` and `candidates`
//! imports through which a hook reads and changes what its call was lent.
//!
//! A hook's changes are checked as it hands them over and collected in
//! [`Changes`]; the chain applies them once the call returns. A change the
//! host refuses is remembered, and fails the call.

use std::net::IpAddr;
use std::ptr::NonNull;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::sluice::plugin::host::{Host, Level};
use super::bindings::sluice::plugin::types::{self, CandidateState, Hook};
use super::bindings::sluice::plugin::{body, candidates, request, response};
use super::header_changes;
use super::log::LogBudget;
use super::metrics::PluginMetrics;
use crate::support::resolved::with_resolved;
use crate::transform::headers::MAX_MESSAGE_HEADERS;

/// The state of one plugin instance's store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The memory cap, and whether the instance hit it.
    pub memory: MemoryCap,
    plugin: Arc<str>,
    /// The configuration the instance last took through `configure`.
    pub config: Option<Arc<str>>,
    /// What is lent to the call in progress.
    lent: LentContext,
    /// What the call in progress asked to change.
    pub(super) changes: Changes,
    metrics: Arc<PluginMetrics>,
    /// The series `counter-add` and `histogram-observe` reached, by name,
    /// so a plugin counting on every call pays for one label lookup.
    series: Series,
    /// The header names the plugin changed before, as it sent them and
    /// parsed: parsing one (copying it, for a name that is not a standard
    /// one) cost the host more than the rest of taking the change over.
    names: Vec<(Box<[u8]>, HeaderName)>,
    logs: Arc<LogBudget>,
}

/// How many header names an instance keeps parsed: a plugin that changes
/// more (or makes names up per call) pays a parse per name past them.
const KNOWN_NAMES: usize = 16;

/// The name `bytes` parse to, kept in `known` from an earlier call when
/// there was one.
fn known_name(
    known: &mut Vec<(Box<[u8]>, HeaderName)>,
    bytes: &[u8],
) -> Result<HeaderName, http::header::InvalidHeaderName> {
    try_resolved(known, bytes, KNOWN_NAMES, || HeaderName::from_bytes(bytes))
}

/// A plugin's counter and histogram series, resolved once per instance.
#[derive(Default)]
struct Series {
    counters: Vec<(Box<str>, prometheus::IntCounter)>,
    histograms: Vec<(Box<str>, prometheus::Histogram)>,
}

/// How many names an instance keeps resolved: a plugin with more (or one
/// that makes names up per call) still counts, at a lookup per call.
const RESOLVED_SERIES: usize = 32;

/// The series named `name` in `resolved`, resolved with `resolve` the first
/// time it is asked for.
fn resolved<T: Clone>(
    resolved: &mut Vec<(Box<str>, T)>,
    name: &str,
    resolve: impl FnOnce() -> T,
) -> T {
    match try_resolved(resolved, name, RESOLVED_SERIES, || {
        Ok::<_, std::convert::Infallible>(resolve())
    }) {
        Ok(series) => series,
        Err(never) => match never {},
    }
}

/// What `key` resolves to: from `resolved` when it was resolved before,
/// else from `resolve`, kept while `resolved` holds fewer than `keep`. A
/// plugin asks for the same few names on every call.
fn try_resolved<K, T, E>(
    resolved: &mut Vec<(Box<K>, T)>,
    key: &K,
    keep: usize,
    resolve: impl FnOnce() -> Result<T, E>,
) -> Result<T, E>
where
    K: PartialEq + ?Sized,
    T: Clone,
    for<'a> Box<K>: From<&'a K>,
{
    with_resolved(
        resolved,
        keep,
        |known| **known == *key,
        || key.into(),
        resolve,
        T::clone,
    )
}

impl HostState {
    /// State for an instance of `plugin`, with linear memory capped at
    /// `memory` bytes and log lines drawn from `logs`.
    pub fn new(
        plugin: Arc<str>,
        memory: usize,
        metrics: Arc<PluginMetrics>,
        logs: Arc<LogBudget>,
    ) -> Self {
        Self {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            memory: MemoryCap {
                max: memory,
                exceeded: false,
            },
            plugin,
            config: None,
            lent: LentContext::default(),
            changes: Changes::default(),
            metrics,
            series: Series::default(),
            names: Vec::new(),
            logs,
        }
    }

    /// Lends the call's context to the instance, until
    /// [`HostState::take_back`]. The caller must take it back before the
    /// borrows end, which [`super::runtime`] does around every call.
    pub(super) fn lend(&mut self, call: &CallContext<'_>) {
        self.lent = LentContext {
            hook: call.hook,
            request: call.request.map(|r| NonNull::from(r).cast()),
            response: call.response.map(|r| NonNull::from(r).cast()),
            body: call.body.map(NonNull::from),
            candidates: call.candidates.map(NonNull::from),
        };
        self.changes = Changes::default();
    }

    /// Ends the loan made by [`HostState::lend`].
    pub(super) fn take_back(&mut self) {
        self.lent = LentContext::default();
    }

    fn request(&self) -> Option<&RequestContext<'_>> {
        // SAFETY: the pointer is set by `lend` from a reference the runtime
        // holds for the whole synchronous call, and cleared by `take_back`
        // before that call returns. Host functions run only inside such a
        // call, on the same thread, while nothing mutates what it points to.
        self.lent
            .request
            .map(|p| unsafe { p.cast::<RequestContext<'_>>().as_ref() })
    }

    fn response(&self) -> Option<&ResponseContext<'_>> {
        // SAFETY: as for `request`.
        self.lent
            .response
            .map(|p| unsafe { p.cast::<ResponseContext<'_>>().as_ref() })
    }

    fn body(&self) -> &[u8] {
        // SAFETY: as for `request`.
        self.lent
            .body
            .map(|p| unsafe { p.as_ref() })
            .map_or(&[], |b| b)
    }

    fn candidates(&self) -> &[Candidate] {
        // SAFETY: as for `request`.
        self.lent
            .candidates
            .map(|p| unsafe { p.as_ref() })
            .map_or(&[], |c| c)
    }

    /// Remembers the first change refused in this call.
    fn refuse(&mut self, reason: impl FnOnce() -> String) {
        if self.changes.refused.is_none() {
            self.changes.refused = Some(reason());
        }
    }

    /// Whether the call in progress is `hook`; otherwise the change named
    /// `what` is refused.
    fn in_hook(&mut self, hook: Hook, what: &str) -> bool {
        if self.lent.hook == Some(hook) {
            return true;
        }
        let (hook_name, during) = (super::registry::hook_name(hook), self.lent.hook);
        self.refuse(|| {
            format!(
                "{what} is taken in {hook_name} only, not in {}",
                during.map_or("configure", super::registry::hook_name)
            )
        });
        false
    }

    /// Collects the header changes `encoded` as the contract frames
    /// them, checking each name and value. The values stay slices of the
    /// one buffer the changes crossed in.
    fn header_changes(&mut self, encoded: Vec<u8>) {
        let encoded = bytes::Bytes::from(encoded);
        for change in header_changes::decode(&encoded) {
            let change = match change {
                Ok(change) => change,
                Err(malformed) => return self.refuse(|| malformed.to_string()),
            };
            if self.changes.headers.len() == MAX_MESSAGE_HEADERS {
                return self.refuse(|| format!("more than {MAX_MESSAGE_HEADERS} header changes"));
            }
            let Some(name) = self.header_name(&encoded[change.name]) else {
                return;
            };
            let value = match change.op {
                HeaderOp::Remove => None,
                HeaderOp::Set | HeaderOp::Append => {
                    let Some(value) = self.header_value(&name, encoded.slice(change.value)) else {
                        return;
                    };
                    Some(value)
                }
            };
            self.changes.headers.push(HeaderChange {
                op: change.op,
                name,
                value,
            });
        }
    }

    /// `name` as a header name the host lets a plugin change.
    fn header_name(&mut self, name: &[u8]) -> Option<HeaderName> {
        match known_name(&mut self.names, name) {
            Ok(header) if is_framing(&header) => {
                self.refuse(|| format!("header {header} belongs to the message's framing"));
                None
            }
            Ok(header) => Some(header),
            Err(_) => {
                self.refuse(|| format!("invalid header name {:?}", String::from_utf8_lossy(name)));
                None
            }
        }
    }

    /// `value` as a value of header `name`, or refused: what
    /// `HeaderValue::from_bytes` accepts, keeping `value`'s buffer rather
    /// than copying it.
    fn header_value(&mut self, name: &HeaderName, value: bytes::Bytes) -> Option<HeaderValue> {
        // What `HeaderValue::from_bytes` accepts: tab, and every byte from
        // space up but DEL. Every byte is looked at, without stopping at
        // the first bad one, so the compiler checks many at a time: values
        // are valid nearly always.
        let valid = value.iter().fold(true, |valid, &b| {
            valid & ((b == b'\t') | ((b >= b' ') & (b != 0x7f)))
        });
        if !valid {
            self.refuse(|| {
                format!(
                    "invalid value {:?} for header {name}",
                    String::from_utf8_lossy(&value)
                )
            });
            return None;
        }
        // SAFETY: every byte was checked just above as `HeaderValue`
        // checks them (the unit tests compare the two on the same inputs).
        Some(unsafe { HeaderValue::from_maybe_shared_unchecked(value) })
    }
}

/// Headers that frame a message: the host keeps them right, and a plugin
/// that could set them could make the proxy and the upstream disagree on
/// where one message ends.
fn is_framing(name: &HeaderName) -> bool {
    name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING
}

/// What a hook call reads of the request, borrowed from the proxy for the
/// length of the call.
#[derive(Clone, Copy)]
pub struct RequestContext<'a> {
    /// The request as it stands: method, URI and headers.
    pub header: &'a RequestHeader,
    /// The `Host` header or `:authority`.
    pub authority: &'a str,
    /// The client's address.
    pub client: Option<IpAddr>,
    /// The matched route's name.
    pub route: &'a str,
    /// The routing key, if any.
    pub routing_key: Option<&'a str>,
    /// The request's id.
    pub request_id: &'a str,
}

/// What a hook call reads of the response.
#[derive(Clone, Copy)]
pub struct ResponseContext<'a> {
    /// The response as it stands: status and headers.
    pub header: &'a ResponseHeader,
    /// The placement that served it (empty if none).
    pub placement: &'a str,
    /// The endpoint that served it (empty if none).
    pub endpoint: &'a str,
}

/// A placement a policy may choose, with its live state.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The placement's name.
    pub name: Arc<str>,
    /// Its live state.
    pub state: CandidateState,
}

/// What one call is lent: the hook it runs, and the messages it reads.
#[derive(Clone, Copy, Default)]
pub struct CallContext<'a> {
    /// The hook called; `None` for `configure` and `hooks`.
    pub hook: Option<Hook>,
    /// The request, for every hook.
    pub request: Option<&'a RequestContext<'a>>,
    /// The response, for `on-response` and `on-response-body`.
    pub response: Option<&'a ResponseContext<'a>>,
    /// The buffered body, for the body hooks.
    pub body: Option<&'a [u8]>,
    /// The candidate placements, for `select-placement`.
    pub candidates: Option<&'a [Candidate]>,
}

/// The context lent to an instance for one call. Lending instead of
/// copying keeps a call's cost independent of the message: a plugin pays
/// only for the fields and headers it reads.
#[derive(Default)]
struct LentContext {
    hook: Option<Hook>,
    request: Option<NonNull<()>>,
    response: Option<NonNull<()>>,
    body: Option<NonNull<[u8]>>,
    candidates: Option<NonNull<[Candidate]>>,
}

// SAFETY: the pointers are only dereferenced during the call that lent
// them, on the thread that holds the borrows; between calls they are None.
// The store moves between threads only between calls (through the pool).
unsafe impl Send for LentContext {}

/// What one hook call asked to change, checked as it was asked.
#[derive(Debug, Default)]
pub struct Changes {
    /// Header changes, in the order they were made.
    pub headers: Vec<HeaderChange>,
    /// A new path and query for the upstream request.
    pub path: Option<http::uri::PathAndQuery>,
    /// A new routing key.
    pub routing_key: Option<String>,
    /// A placement for the request, not yet checked against the route's.
    pub placement: Option<String>,
    /// An answer instead of proxying.
    pub respond: Option<Answer>,
    /// A new response status.
    pub status: Option<StatusCode>,
    /// A new body.
    pub body: Option<Vec<u8>>,
    /// The first change the host refused, and why.
    pub refused: Option<String>,
}

/// One header change.
#[derive(Debug)]
pub struct HeaderChange {
    /// What to do.
    pub op: HeaderOp,
    /// The header.
    pub name: HeaderName,
    /// The value, for set and append.
    pub value: Option<HeaderValue>,
}

/// What a header change does: the contract's own operations.
pub use super::header_changes::Op as HeaderOp;

/// A response a plugin answered with, checked.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Its body.
    pub body: Vec<u8>,
}

/// Caps an instance's linear memory. Growing past the cap traps (rather
/// than failing the allocation quietly) and is remembered, so the host can
/// tell a memory bomb from any other trap.
pub struct MemoryCap {
    max: usize,
    /// Set when a growth past the cap was refused.
    pub exceeded: bool,
}

impl MemoryCap {
    /// The cap, in bytes.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// The most table elements an instance may have.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.exceeded = true;
            wasmtime::bail!(
                "the plugin's memory would grow to {desired} bytes, over its cap of {} bytes",
                self.max
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

fn first_value(map: &HeaderMap, name: &str) -> Option<String> {
    map.get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

fn values(map: &HeaderMap, name: &str) -> Vec<String> {
    map.get_all(name)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect()
}

fn entries(map: &HeaderMap) -> types::Headers {
    map.iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The numbers `candidates.states` gives for each candidate.
const STATE_FIELDS: usize = 8;

/// `state` as `candidates.states` lists it: its fields in order, the
/// optional limit as a flag and a value.
fn state_fields(state: &CandidateState) -> [u32; STATE_FIELDS] {
    [
        state.healthy_endpoints,
        state.total_endpoints,
        state.open_breakers,
        state.half_open_breakers,
        state.in_flight,
        u32::from(state.limit.is_some()),
        state.limit.unwrap_or(0),
        state.weight,
    ]
}

/// Whether `status` may be a plugin's final answer.
fn final_status(status: u16) -> Option<StatusCode> {
    (200..=599)
        .contains(&status)
        .then(|| StatusCode::from_u16(status).ok())
        .flatten()
}

impl request::Host for HostState {
    fn method(&mut self) -> String {
        self.request()
            .map(|r| r.header.method.as_str().to_string())
            .unwrap_or_default()
    }

    fn path(&mut self) -> String {
        self.request()
            .map(|r| r.header.uri.path().to_string())
            .unwrap_or_default()
    }

    fn query(&mut self) -> Option<String> {
        self.request()?.header.uri.query().map(str::to_string)
    }

    fn authority(&mut self) -> String {
        self.request()
            .map(|r| r.authority.to_string())
            .unwrap_or_default()
    }

    fn client_address(&mut self) -> String {
        self.request()
            .and_then(|r| r.client)
            .map(|ip| ip.to_string())
            .unwrap_or_default()
    }

    fn route(&mut self) -> String {
        self.request()
            .map(|r| r.route.to_string())
            .unwrap_or_default()
    }

    fn routing_key(&mut self) -> Option<String> {
        self.request()?.routing_key.map(str::to_string)
    }

    fn request_id(&mut self) -> String {
        self.request()
            .map(|r| r.request_id.to_string())
            .unwrap_or_default()
    }

    fn header(&mut self, name: String) -> Option<String> {
        first_value(&self.request()?.header.headers, &name)
    }

    fn header_values(&mut self, name: String) -> Vec<String> {
        self.request()
            .map(|r| values(&r.header.headers, &name))
            .unwrap_or_default()
    }

    fn all_headers(&mut self) -> types::Headers {
        self.request()
            .map(|r| entries(&r.header.headers))
            .unwrap_or_default()
    }

    fn apply(&mut self, changes: types::RequestChanges) {
        if !self.in_hook(Hook::OnRequest, "a request change") {
            return;
        }
        self.header_changes(changes.headers);
        if let Some(path) = changes.path {
            match path.parse::<http::uri::PathAndQuery>() {
                Ok(parsed) if parsed.path().starts_with('/') => self.changes.path = Some(parsed),
                _ => self.refuse(|| format!("invalid path {path:?}")),
            }
        }
        if let Some(key) = changes.routing_key {
            self.changes.routing_key = Some(key);
        }
        if let Some(placement) = changes.placement {
            self.changes.placement = Some(placement);
        }
    }

    fn respond(&mut self, response: types::ImmediateResponse) {
        if !self.in_hook(Hook::OnRequest, "an immediate response") {
            return;
        }
        let Some(status) = final_status(response.status) else {
            return self.refuse(|| format!("invalid status {}", response.status));
        };
        if response.headers.len() > MAX_MESSAGE_HEADERS {
            return self.refuse(|| format!("more than {MAX_MESSAGE_HEADERS} headers"));
        }
        let mut headers = Vec::with_capacity(response.headers.len());
        for (name, value) in response.headers {
            let Some(header) = self.header_name(name.as_bytes()) else {
                return;
            };
            let Some(value) = self.header_value(&header, bytes::Bytes::from(value.into_bytes()))
            else {
                return;
            };
            headers.push((header, value));
        }
        self.changes.respond = Some(Answer {
            status,
            headers,
            body: response.body,
        });
    }
}

impl response::Host for HostState {
    fn status(&mut self) -> u16 {
        self.response()
            .map(|r| r.header.status.as_u16())
            .unwrap_or_default()
    }

    fn placement(&mut self) -> String {
        self.response()
            .map(|r| r.placement.to_string())
            .unwrap_or_default()
    }

    fn endpoint(&mut self) -> String {
        self.response()
            .map(|r| r.endpoint.to_string())
            .unwrap_or_default()
    }

    fn header(&mut self, name: String) -> Option<String> {
        first_value(&self.response()?.header.headers, &name)
    }

    fn header_values(&mut self, name: String) -> Vec<String> {
        self.response()
            .map(|r| values(&r.header.headers, &name))
            .unwrap_or_default()
    }

    fn all_headers(&mut self) -> types::Headers {
        self.response()
            .map(|r| entries(&r.header.headers))
            .unwrap_or_default()
    }

    fn apply(&mut self, changes: types::ResponseChanges) {
        if !self.in_hook(Hook::OnResponse, "a response change") {
            return;
        }
        self.header_changes(changes.headers);
        if let Some(status) = changes.status {
            match final_status(status) {
                Some(status) => self.changes.status = Some(status),
                None => self.refuse(|| format!("invalid status {status}")),
            }
        }
    }
}

impl body::Host for HostState {
    fn len(&mut self) -> u64 {
        self.body().len() as u64
    }

    fn bytes(&mut self) -> Vec<u8> {
        self.body().to_vec()
    }

    fn replace(&mut self, bytes: Vec<u8>) {
        if matches!(
            self.lent.hook,
            Some(Hook::OnRequestBody | Hook::OnResponseBody)
        ) {
            self.changes.body = Some(bytes);
        } else {
            self.refuse(|| "a body is replaced in the body hooks only".to_string());
        }
    }
}

impl candidates::Host for HostState {
    fn len(&mut self) -> u32 {
        self.candidates().len() as u32
    }

    fn names(&mut self) -> String {
        let candidates = self.candidates();
        let mut names =
            String::with_capacity(candidates.iter().map(|c| c.name.len() + 1).sum::<usize>());
        for candidate in candidates {
            names.push_str(&candidate.name);
            names.push('\n');
        }
        names
    }

    fn states(&mut self) -> Vec<u32> {
        let mut states = Vec::with_capacity(self.candidates().len() * STATE_FIELDS);
        for candidate in self.candidates() {
            states.extend(state_fields(&candidate.state));
        }
        states
    }

    fn choose(&mut self, name: String) {
        if !self.in_hook(Hook::SelectPlacement, "a placement choice") {
            return;
        }
        if self.candidates().iter().any(|c| *c.name == *name) {
            self.changes.placement = Some(name);
        } else {
            self.refuse(|| format!("placement {name:?} is not a candidate"));
        }
    }
}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let Some(message) = self.logs.admit(&self.metrics, &self.plugin, &message) else {
            return;
        };
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(%plugin, "{message}"),
            Level::Debug => tracing::debug!(%plugin, "{message}"),
            Level::Info => tracing::info!(%plugin, "{message}"),
            Level::Warn => tracing::warn!(%plugin, "{message}"),
            Level::Error => tracing::error!(%plugin, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, value: u64) {
        let (metrics, plugin) = (&self.metrics, &self.plugin);
        resolved(&mut self.series.counters, &name, || {
            metrics.counter.with_label_values(&[plugin, &name])
        })
        .inc_by(value);
    }

    fn histogram_observe(&mut self, name: String, value: f64) {
        let (metrics, plugin) = (&self.metrics, &self.plugin);
        resolved(&mut self.series.histograms, &name, || {
            metrics.histogram.with_label_values(&[plugin, &name])
        })
        .observe(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> HostState {
        HostState::new(
            Arc::from("test"),
            1 << 20,
            Arc::new(PluginMetrics::new()),
            Arc::new(LogBudget::default()),
        )
    }

    #[test]
    fn known_names_parse_as_header_name_does_and_stop_growing() {
        let mut known = Vec::new();
        for bytes in [
            &b"X-Real-Host"[..],
            b"x-real-host",
            b"content-type",
            b"bad name",
            b"",
        ] {
            for _ in 0..2 {
                assert_eq!(
                    known_name(&mut known, bytes).ok(),
                    HeaderName::from_bytes(bytes).ok(),
                    "{bytes:?}"
                );
            }
        }
        assert_eq!(known.len(), 3, "invalid names are not kept");
        for i in 0..2 * KNOWN_NAMES {
            let name = format!("x-made-up-{i}");
            assert_eq!(
                known_name(&mut known, name.as_bytes()).unwrap(),
                name.as_str()
            );
        }
        assert_eq!(known.len(), KNOWN_NAMES);
    }

    #[test]
    fn a_changed_value_is_checked_as_header_value_checks_it() {
        let name = HeaderName::from_static("x-test");
        let values: [&[u8]; 8] = [
            b"plain",
            b"with\ttab",
            b"",
            b" spaced ",
            b"a\r\nforged: yes",
            "caf\u{e9}".as_bytes(),
            b"\x7f",
            b"latin-1 \xe9",
        ];
        for value in values {
            let mut host = state();
            let expected = HeaderValue::from_bytes(value).ok();
            assert_eq!(
                host.header_value(&name, bytes::Bytes::copy_from_slice(value)),
                expected,
                "{value:?}"
            );
            let refusal = format!(
                "invalid value {:?} for header x-test",
                String::from_utf8_lossy(value)
            );
            assert_eq!(
                host.changes.refused,
                expected.is_none().then_some(refusal),
                "{value:?}"
            );
        }
    }

    #[test]
    fn candidate_states_list_each_field_in_the_contract_order() {
        let state = CandidateState {
            healthy_endpoints: 1,
            total_endpoints: 2,
            open_breakers: 3,
            half_open_breakers: 4,
            in_flight: 5,
            limit: Some(6),
            weight: 7,
        };
        assert_eq!(state_fields(&state), [1, 2, 3, 4, 5, 1, 6, 7]);
        let unlimited = CandidateState {
            limit: None,
            ..state
        };
        assert_eq!(state_fields(&unlimited), [1, 2, 3, 4, 5, 0, 0, 7]);
    }

    #[test]
    fn header_changes_refuse_framing_headers_bad_values_and_bad_framing() {
        use header_changes::encode;
        use HeaderOp as Op;
        let encoded = |changes: &[(Op, &str, &str)]| {
            let mut encoded = Vec::new();
            for (op, name, value) in changes {
                encode(&mut encoded, *op, name.as_bytes(), value.as_bytes());
            }
            encoded
        };
        let refused = |host: &HostState| host.changes.refused.clone().unwrap_or_default();
        let mut host = state();
        host.header_changes(encoded(&[
            (Op::Set, "x-a", "1"),
            (Op::Remove, "x-b", "ignored\r\n"),
            (Op::Append, "x-c", "2"),
        ]));
        assert_eq!(host.changes.refused, None);
        let applied: Vec<_> = host
            .changes
            .headers
            .iter()
            .map(|c| {
                (
                    c.op,
                    c.name.as_str(),
                    c.value.as_ref().map(|v| v.as_bytes()),
                )
            })
            .collect();
        assert_eq!(
            applied,
            [
                (HeaderOp::Set, "x-a", Some(&b"1"[..])),
                (HeaderOp::Remove, "x-b", None),
                (HeaderOp::Append, "x-c", Some(&b"2"[..])),
            ]
        );
        host.header_changes(encoded(&[(Op::Set, "content-length", "1")]));
        assert!(refused(&host).contains("framing"), "{}", refused(&host));
        let mut host = state();
        host.header_changes(encoded(&[(Op::Append, "x-a", "a\nb")]));
        assert!(
            refused(&host).contains("invalid value"),
            "{}",
            refused(&host)
        );
        let mut host = state();
        host.header_changes(encoded(&[(Op::Set, "bad name", "1")]));
        assert_eq!(refused(&host), "invalid header name \"bad name\"");
        let mut host = state();
        let mut cut = encoded(&[(Op::Set, "x-a", "1")]);
        cut.pop();
        host.header_changes(cut);
        assert_eq!(refused(&host), "the header change at byte 0 is cut short");
        let mut host = state();
        let too_many: Vec<_> = (0..=MAX_MESSAGE_HEADERS)
            .map(|_| (Op::Append, "x-a", "1"))
            .collect();
        host.header_changes(encoded(&too_many));
        assert!(
            refused(&host).starts_with("more than"),
            "{}",
            refused(&host)
        );
    }
}
