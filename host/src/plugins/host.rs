//! What the host gives a plugin instance: an empty WASI context (no
//! preopened directories, no sockets, no environment), a memory cap, and
//! the `sluice:plugin/host` imports (logging and metrics labelled with the
//! plugin's name), and the `request` and `response` handles a hook reads.

use std::net::IpAddr;
use std::ptr::NonNull;
use std::sync::Arc;

use http::HeaderMap;
use pingora::http::{RequestHeader, ResponseHeader};
use wasmtime::component::Resource;

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::sluice::plugin::host::{Host, Level};
use super::bindings::sluice::plugin::types;
use super::metrics::PluginMetrics;

/// The state of one plugin instance's store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The memory cap, and whether the instance hit it.
    pub memory: MemoryCap,
    plugin: Arc<str>,
    /// The configuration the instance last took through `configure`.
    pub config: Option<Arc<str>>,
    /// The request and response of the call in progress.
    lent: LentContext,
    metrics: Arc<PluginMetrics>,
}

impl HostState {
    /// State for an instance of `plugin`, with linear memory capped at `memory` bytes.
    pub fn new(plugin: Arc<str>, memory: usize, metrics: Arc<PluginMetrics>) -> Self {
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
            metrics,
        }
    }

    /// Lends the call's request and response to the instance, until
    /// [`HostState::take_back`]. The caller must take them back before the
    /// borrows end, which [`super::runtime`] does around every call.
    pub(super) fn lend(&mut self, call: &CallContext<'_>) {
        self.lent = LentContext {
            request: call.request.map(|r| NonNull::from(r).cast()),
            response: call.response.map(|r| NonNull::from(r).cast()),
        };
    }

    /// Ends the loan made by [`HostState::lend`].
    pub(super) fn take_back(&mut self) {
        self.lent = LentContext::default();
    }

    /// The handles every call passes: one of each per instance, created
    /// once, since they only name "the request (response) of this call".
    pub(super) fn handles(
        &mut self,
    ) -> wasmtime::Result<(Resource<LentRequest>, Resource<LentResponse>)> {
        Ok((
            self.table.push(LentRequest)?,
            self.table.push(LentResponse)?,
        ))
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

/// The request and response a call lends to the plugin.
#[derive(Clone, Copy, Default)]
pub struct CallContext<'a> {
    /// The request, for every hook.
    pub request: Option<&'a RequestContext<'a>>,
    /// The response, for `on-response`.
    pub response: Option<&'a ResponseContext<'a>>,
}

/// The request and response lent to an instance for one call. Lending
/// instead of copying keeps a call's cost independent of the message: a
/// plugin pays only for the fields and headers it reads.
#[derive(Default)]
struct LentContext {
    request: Option<NonNull<()>>,
    response: Option<NonNull<()>>,
}

// SAFETY: the pointers are only dereferenced during the call that lent
// them, on the thread that holds the borrows; between calls they are None.
// The store moves between threads only between calls (through the pool).
unsafe impl Send for LentContext {}

/// The `request` handle: always the request of the call in progress.
pub struct LentRequest;

/// The `response` handle: always the response of the call in progress.
pub struct LentResponse;

/// Caps an instance's linear memory. Growing past the cap traps (rather
/// than failing the allocation quietly) and is remembered, so the host can
/// tell a memory bomb from any other trap.
pub struct MemoryCap {
    max: usize,
    /// Set when a growth past the cap was refused.
    pub exceeded: bool,
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

impl types::HostRequest for HostState {
    fn method(&mut self, _: Resource<LentRequest>) -> String {
        self.request()
            .map(|r| r.header.method.as_str().to_string())
            .unwrap_or_default()
    }

    fn path(&mut self, _: Resource<LentRequest>) -> String {
        self.request()
            .map(|r| r.header.uri.path().to_string())
            .unwrap_or_default()
    }

    fn query(&mut self, _: Resource<LentRequest>) -> Option<String> {
        self.request()?.header.uri.query().map(str::to_string)
    }

    fn authority(&mut self, _: Resource<LentRequest>) -> String {
        self.request()
            .map(|r| r.authority.to_string())
            .unwrap_or_default()
    }

    fn client_address(&mut self, _: Resource<LentRequest>) -> String {
        self.request()
            .and_then(|r| r.client)
            .map(|ip| ip.to_string())
            .unwrap_or_default()
    }

    fn route(&mut self, _: Resource<LentRequest>) -> String {
        self.request()
            .map(|r| r.route.to_string())
            .unwrap_or_default()
    }

    fn routing_key(&mut self, _: Resource<LentRequest>) -> Option<String> {
        self.request()?.routing_key.map(str::to_string)
    }

    fn request_id(&mut self, _: Resource<LentRequest>) -> String {
        self.request()
            .map(|r| r.request_id.to_string())
            .unwrap_or_default()
    }

    fn header(&mut self, _: Resource<LentRequest>, name: String) -> Vec<String> {
        self.request()
            .map(|r| values(&r.header.headers, &name))
            .unwrap_or_default()
    }

    fn headers(&mut self, _: Resource<LentRequest>) -> types::Headers {
        self.request()
            .map(|r| entries(&r.header.headers))
            .unwrap_or_default()
    }

    fn drop(&mut self, handle: Resource<LentRequest>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl types::HostResponse for HostState {
    fn status(&mut self, _: Resource<LentResponse>) -> u16 {
        self.response()
            .map(|r| r.header.status.as_u16())
            .unwrap_or_default()
    }

    fn placement(&mut self, _: Resource<LentResponse>) -> String {
        self.response()
            .map(|r| r.placement.to_string())
            .unwrap_or_default()
    }

    fn endpoint(&mut self, _: Resource<LentResponse>) -> String {
        self.response()
            .map(|r| r.endpoint.to_string())
            .unwrap_or_default()
    }

    fn header(&mut self, _: Resource<LentResponse>, name: String) -> Vec<String> {
        self.response()
            .map(|r| values(&r.header.headers, &name))
            .unwrap_or_default()
    }

    fn headers(&mut self, _: Resource<LentResponse>) -> types::Headers {
        self.response()
            .map(|r| entries(&r.header.headers))
            .unwrap_or_default()
    }

    fn drop(&mut self, handle: Resource<LentResponse>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) {
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
        self.metrics
            .counter
            .with_label_values(&[&self.plugin, &name])
            .inc_by(value);
    }

    fn histogram_observe(&mut self, name: String, value: f64) {
        self.metrics
            .histogram
            .with_label_values(&[&self.plugin, &name])
            .observe(value);
    }
}
