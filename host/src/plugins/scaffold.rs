//! `sluice plugin new`: a plugin crate that builds as it is.

use std::path::{Path, PathBuf};

/// The SDK this binary was built with, for the scaffold's path dependency.
pub fn bundled_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("plugin-sdk")
}

/// Writes a new plugin crate named `name` into `directory`, depending on the
/// SDK at `sdk`. Fails if the directory exists and is not empty.
pub fn create(name: &str, directory: &Path, sdk: &Path) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_lowercase());
    if !valid {
        anyhow::bail!("{name:?} is not a plugin name: use lowercase letters, digits, '-' and '_', starting with a letter");
    }
    if directory.exists() && directory.read_dir()?.next().is_some() {
        anyhow::bail!("{} already exists and is not empty", directory.display());
    }
    let sdk = std::fs::canonicalize(sdk)
        .map_err(|e| anyhow::anyhow!("the SDK at {}: {e}", sdk.display()))?;
    std::fs::create_dir_all(directory.join("src"))?;
    let sdk = sdk.display().to_string().replace('\\', "/");
    std::fs::write(
        directory.join("Cargo.toml"),
        format!(
            r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

# A plugin is its own workspace, wherever it is created.
[workspace]

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
sluice-plugin-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
opt-level = "s"
strip = true
"#
        ),
    )?;
    std::fs::write(
        directory.join("src").join("lib.rs"),
        LIB_RS.replace("{name}", name),
    )?;
    std::fs::write(directory.join(".gitignore"), "target/\n")?;
    Ok(())
}

const LIB_RS: &str = r#"//! The `{name}` Sluice plugin: adds a greeting header to each request.
//!
//! Build: `cargo build --release --target wasm32-wasip2`, then copy
//! `target/wasm32-wasip2/release/*.wasm` to your plugin directory as
//! `{name}.wasm` and attach it to a route:
//!
//! ```toml
//! [[routes.plugins]]
//! name = "{name}"
//! config = { greeting = "hello" }
//! ```

use serde::Deserialize;
use sluice_plugin_sdk::prelude::*;

/// The plugin's configuration: the route's `config` table.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The value of the `x-greeting` header.
    pub greeting: String,
}

impl Default for Config {
    fn default() -> Self {
        Self { greeting: "hello".into() }
    }
}

/// The plugin.
pub struct Greeter;

impl Plugin for Greeter {
    type Config = Config;

    fn on_request(config: &Config, request: &RequestView) -> RequestAction {
        host::counter_add("greeted", 1);
        RequestChanges::new()
            .set_header("x-greeting", &format!("{} from {}", config.greeting, request.route))
            .into()
    }
}

sluice_plugin_sdk::export!(Greeter => on_request);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::testing::{expect_continue, recorded, request};

    #[test]
    fn greets_every_request() {
        let view = request("GET", "/").route("web").build();
        let changes = expect_continue(Greeter::on_request(&Config::default(), &view));
        assert_eq!(changes.headers.set, vec![("x-greeting".to_string(), "hello from web".to_string())]);
        assert_eq!(recorded().counters, vec![("greeted".to_string(), 1)]);
    }
}
"#;
