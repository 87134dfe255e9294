//! Checks a config's plugin attachments against the loaded plugins:
//! unknown plugin names, hooks a plugin does not declare, and configuration
//! tables the plugin itself refuses are errors.

use super::bindings::sluice::plugin::types::Hook;
use super::registry::{hook_name, PluginMap};
use super::runtime::{CallError, LoadedPlugin};
use super::spec::AttachmentSpec;
use crate::config::{ConfigError, HookName, KeyPath, SourceMap};

/// Why a plugin cannot serve one attachment.
pub enum AttachmentProblem {
    /// It refused the attachment's configuration.
    Refused(CallError),
    /// The attachment runs it at `hooks[index]`, which it does not export.
    MissingHook {
        /// The position in the attachment's `hooks`.
        index: usize,
        /// The hook.
        hook: Hook,
    },
}

/// Everything that keeps `plugin` from serving `attachment`: a refused
/// configuration first, then each listed hook it does not export. Config
/// validation and the hot-swap check both ask this.
pub fn attachment_problems(
    plugin: &LoadedPlugin,
    attachment: &AttachmentSpec,
) -> Vec<AttachmentProblem> {
    let mut problems = Vec::new();
    if let Err(error) = plugin.check_config(&attachment.config) {
        problems.push(AttachmentProblem::Refused(error));
    }
    for (index, hook) in attachment.hooks.iter().flatten().enumerate() {
        let hook = hook_of(*hook);
        if !plugin.has(hook) {
            problems.push(AttachmentProblem::MissingHook { index, hook });
        }
    }
    problems
}

/// The config hook name of a WIT hook: [`hook_of`] the other way.
pub fn config_hook(hook: Hook) -> HookName {
    match hook {
        Hook::OnRequest => HookName::OnRequest,
        Hook::OnResponse => HookName::OnResponse,
        Hook::SelectPlacement => HookName::SelectPlacement,
        Hook::OnRequestBody => HookName::OnRequestBody,
        Hook::OnResponseBody => HookName::OnResponseBody,
    }
}

/// The WIT hook for a config hook name.
pub fn hook_of(name: HookName) -> Hook {
    match name {
        HookName::OnRequest => Hook::OnRequest,
        HookName::OnResponse => Hook::OnResponse,
        HookName::SelectPlacement => Hook::SelectPlacement,
        HookName::OnRequestBody => Hook::OnRequestBody,
        HookName::OnResponseBody => Hook::OnResponseBody,
    }
}

/// Every problem of the attachments of a config's routes (each route's
/// name and attachments, in order), with its line in `source`.
pub fn validate<'a>(
    routes: impl IntoIterator<Item = (&'a str, &'a [AttachmentSpec])>,
    source: &SourceMap,
    plugins: &PluginMap,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (r, (route, attachments)) in routes.into_iter().enumerate() {
        for (a, attachment) in attachments.iter().enumerate() {
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
            for problem in attachment_problems(plugin, attachment) {
                let (path, message) = match problem {
                    AttachmentProblem::Refused(error) => (
                        path.key("config"),
                        format!("plugin {} on route {route:?}: {error}", attachment.name),
                    ),
                    AttachmentProblem::MissingHook { index, hook } => {
                        let declared: Vec<&str> =
                            plugin.hooks.iter().map(|h| hook_name(*h)).collect();
                        (
                            path.key("hooks").index(index),
                            format!(
                                "plugin {} does not export {} (it exports: {})",
                                attachment.name,
                                hook_name(hook),
                                declared.join(", ")
                            ),
                        )
                    }
                };
                let line = source.line_of(&path);
                errors.push(ConfigError::new(path, line, message));
            }
        }
    }
    errors
}
