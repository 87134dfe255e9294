//! Checks a snapshot's plugin attachments against the loaded plugins:
//! unknown plugin names, hooks a plugin does not declare, and configuration
//! tables the plugin itself refuses are errors.

use super::bindings::sluice::plugin::types::Hook;
use super::registry::{hook_name, PluginMap};
use crate::config::{ConfigError, HookName, KeyPath, SourceMap};
use crate::snapshot::Snapshot;

/// The WIT hook for a config hook name.
pub fn hook_of(name: HookName) -> Hook {
    match name {
        HookName::OnRequest => Hook::OnRequest,
        HookName::OnResponse => Hook::OnResponse,
        HookName::SelectPlacement => Hook::SelectPlacement,
    }
}

/// Every attachment problem in `snapshot`, with its line in `source`.
pub fn validate(snapshot: &Snapshot, source: &SourceMap, plugins: &PluginMap) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (r, route) in snapshot.routes.iter().enumerate() {
        for (a, attachment) in route.plugins.iter().enumerate() {
            let path = KeyPath::root()
                .key("routes")
                .index(r)
                .key("plugins")
                .index(a);
            let Some(plugin) = plugins.get(&*attachment.name) else {
                let mut known: Vec<&str> = plugins.keys().map(String::as_str).collect();
                known.sort_unstable();
                let path = path.key("name");
                let line = source.line_of(&path);
                errors.push(ConfigError::new(
                    path,
                    line,
                    format!(
                        "unknown plugin {:?} (loaded: {})",
                        attachment.name,
                        known.join(", ")
                    ),
                ));
                continue;
            };
            if let Err(error) = plugin.check_config(&attachment.config) {
                let path = path.key("config");
                let line = source.line_of(&path);
                errors.push(ConfigError::new(
                    path,
                    line,
                    format!("plugin {}: {error}", attachment.name),
                ));
            }
            for (h, hook) in attachment.hooks.iter().flatten().enumerate() {
                if !plugin.has(hook_of(*hook)) {
                    let declared: Vec<&str> = plugin.hooks.iter().map(|h| hook_name(*h)).collect();
                    let path = path.key("hooks").index(h);
                    let line = source.line_of(&path);
                    errors.push(ConfigError::new(
                        path,
                        line,
                        format!(
                            "plugin {} does not export {} (it exports: {})",
                            attachment.name,
                            hook_name(hook_of(*hook)),
                            declared.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    errors
}
