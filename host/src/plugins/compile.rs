//! Compiles the `[plugins]` table and each route's attachments into what
//! the runtime and the registry are given.

use std::sync::Arc;

use super::runtime::RuntimeLimits;
use super::spec::{AttachmentSpec, PluginSpec};
use crate::config::{self, Diagnostics, KeyPath};

/// The `[plugins]` table: the plugin directory, the compiled-artifact cache and the per-call limits.
pub fn plugin_settings(d: &mut Diagnostics, settings: &config::PluginSettings) -> PluginSpec {
    let path = KeyPath::root().key("plugins");
    let directory = std::path::PathBuf::from(&settings.directory);
    if !directory.is_dir() {
        d.error(
            path.key("directory"),
            format!("{:?} is not a directory", settings.directory),
        );
    }
    let deadline = d.duration(path.key("deadline"), &settings.deadline);
    if settings.recycle_after == 0 {
        d.error(path.key("recycle_after"), "must be at least 1");
    }
    PluginSpec {
        cache_dir: settings
            .cache_dir
            .as_ref()
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| directory.join(".cache")),
        directory,
        limits: RuntimeLimits {
            deadline,
            memory: usize::try_from(settings.memory.0).unwrap_or(usize::MAX),
            recycle_after: settings.recycle_after.max(1),
            pool_size: settings.pool_size,
        },
    }
}

/// A route's `[[routes.plugins]]` at `path`; plugins must be configured for any to be attached.
pub fn attachments(
    d: &mut Diagnostics,
    path: &KeyPath,
    attachments: &[config::Attachment],
    plugins_configured: bool,
) -> Vec<AttachmentSpec> {
    if !attachments.is_empty() && !plugins_configured {
        d.error(
            path.clone(),
            "plugins are attached but there is no [plugins] directory",
        );
    }
    attachments
        .iter()
        .enumerate()
        .map(|(i, attachment)| {
            let path = path.index(i);
            if !(400..=599).contains(&attachment.status) {
                d.error(
                    path.key("status"),
                    "must be an error status (400-599), e.g. 500 or 503",
                );
            }
            let config = serde_json::to_string(&attachment.config).unwrap_or_else(|e| {
                d.error(path.key("config"), format!("cannot be passed as JSON: {e}"));
                String::new()
            });
            AttachmentSpec {
                name: Arc::from(attachment.name.as_str()),
                config: Arc::from(config),
                fail_closed: (attachment.failure == config::FailurePolicy::Closed)
                    .then_some(attachment.status),
                hooks: attachment.hooks.clone(),
                body_limit: attachment.body_limit.0,
            }
        })
        .collect()
}
