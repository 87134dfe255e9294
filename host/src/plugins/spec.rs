//! What a configuration asks of plugins: where they are loaded from and
//! their limits, and which plugins each route runs, with what config.

use std::sync::Arc;

use super::runtime::RuntimeLimits;
use crate::config::HookName;

/// A plugin attached to a route.
#[derive(Debug, Clone)]
pub struct AttachmentSpec {
    /// The plugin's name.
    pub name: Arc<str>,
    /// Its configuration, as JSON.
    pub config: Arc<str>,
    /// The status to answer when the plugin fails; `None` skips it (fail-open).
    pub fail_closed: Option<u16>,
    /// The hooks it runs at; `None` means all the plugin declares.
    pub hooks: Option<Vec<HookName>>,
    /// The largest body its body hooks buffer, in bytes.
    pub body_limit: u64,
}

impl AttachmentSpec {
    /// Whether this attachment runs at `hook`, given what the plugin declares.
    pub fn runs_at(&self, hook: HookName, declared: bool) -> bool {
        declared
            && self
                .hooks
                .as_ref()
                .is_none_or(|hooks| hooks.contains(&hook))
    }
}

/// Where plugins come from and their limits.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    /// The plugin directory.
    pub directory: std::path::PathBuf,
    /// The compiled-artifact cache.
    pub cache_dir: std::path::PathBuf,
    /// Per-call and per-instance limits.
    pub limits: RuntimeLimits,
}

/// One route's attachments, in the order they run.
#[derive(Debug, Clone)]
pub struct RouteAttachments {
    /// The route's name.
    pub route: Arc<str>,
    /// Its plugins.
    pub plugins: Vec<AttachmentSpec>,
}
