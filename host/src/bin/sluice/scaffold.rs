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

const LIB_RS: &str = r##"//! The `{name}` Sluice plugin: adds a greeting header to each request.
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
            .set_header("x-greeting", &format!("{} from {}", config.greeting, request.route()))
            .into()
    }
}

sluice_plugin_sdk::export!(Greeter => on_request);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_plugin_sdk::testing::{clear, configure, expect_continue, on_request, recorded, request};

    #[test]
    fn greets_every_request() {
        clear();
        let view = request("GET", "/").route("web").build();
        let changes = expect_continue(Greeter::on_request(&Config::default(), &view));
        assert_eq!(changes.headers.set, vec![("x-greeting".to_string(), "hello from web".to_string())]);
        assert_eq!(recorded().counters, vec![("greeted".to_string(), 1)]);
    }

    #[test]
    fn takes_its_configuration_as_sluice_hands_it_over() {
        configure::<Greeter>(r#"{"greeting": "hi"}"#).unwrap();
        let view = request("GET", "/").route("web").build();
        let changes = expect_continue(on_request::<Greeter>(&view));
        assert_eq!(changes.headers.set, vec![("x-greeting".to_string(), "hi from web".to_string())]);

        // Sluice refuses a config whose table the plugin does not accept.
        let error = configure::<Greeter>(r#"{"greting": "hi"}"#).unwrap_err();
        assert!(error.contains("unknown field `greting`"), "{error}");
    }
}
"##;

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sluice-scaffold-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn writes_a_crate_on_the_current_sdk_api() {
        let dir = scratch("greeter");
        create("my-greeter", &dir, &bundled_sdk()).unwrap();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains(r#"name = "my-greeter""#), "{manifest}");
        assert!(
            manifest.contains("sluice-plugin-sdk = { path = "),
            "{manifest}"
        );
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("The `my-greeter` Sluice plugin"));
        assert!(lib.contains(r#"name = "my-greeter""#));
        assert!(!lib.contains("{name}"));
        // The hooks read the request through the view's methods, and the
        // test runs the plugin through `configure` as Sluice does.
        assert!(lib.contains("request.route()"));
        assert!(lib.contains("configure::<Greeter>"));
        assert_eq!(
            std::fs::read_to_string(dir.join(".gitignore")).unwrap(),
            "target/\n"
        );
        // A directory that is not empty is left alone.
        let error = create("other", &dir, &bundled_sdk()).unwrap_err();
        assert!(error.to_string().contains("is not empty"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_names_that_are_not_crate_names() {
        let dir = scratch("bad-names");
        for name in ["", "Greeter", "1st", "-x", "a b", "a/b"] {
            let error = create(name, &dir, &bundled_sdk()).unwrap_err();
            assert!(
                error.to_string().contains("is not a plugin name"),
                "{name}: {error}"
            );
        }
        assert!(!dir.exists());
    }
}
