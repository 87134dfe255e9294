//! A test-only plugin that reads a file on every request, so that its
//! component imports WASI's filesystem, which Sluice does not link: loading
//! it must fail with a reason that names the interface.

use sluice_plugin_sdk::prelude::*;

/// The plugin.
pub struct ReadsFiles;

impl Plugin for ReadsFiles {
    type Config = ();

    fn on_request(_config: &(), _request: &RequestView) -> RequestAction {
        let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        RequestChanges::new()
            .set_header("x-hostname", hostname.trim())
            .into()
    }
}

sluice_plugin_sdk::export!(ReadsFiles => on_request);
