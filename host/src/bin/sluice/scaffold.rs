//! `sluice plugin new`: a plugin crate that builds as it is, wherever the
//! `sluice` binary is installed.
//!
//! The binary carries the plugin SDK it was built with (its sources and the
//! WIT contract) and writes it into the new crate under
//! `vendor/sluice-plugin-sdk`, so the plugin builds against the contract
//! this Sluice provides without the source tree or a registry. `--sdk PATH`
//! depends on another copy of the SDK instead.

use std::path::Path;

/// Where the new crate keeps its copy of the SDK.
const VENDORED_SDK: &str = "vendor/sluice-plugin-sdk";

/// An SDK file by its path in the SDK, with its text.
macro_rules! sdk_file {
    ($path:literal) => {
        (
            $path,
            include_str!(concat!("../../../../plugin-sdk/", $path)),
        )
    };
}

/// The SDK's files, as this binary was built with them.
const SDK_FILES: &[(&str, &str)] = &[
    sdk_file!("README.md"),
    sdk_file!("src/lib.rs"),
    sdk_file!("src/allocator.rs"),
    sdk_file!("src/changes.rs"),
    sdk_file!("src/glue.rs"),
    sdk_file!("src/header_changes.rs"),
    sdk_file!("src/headers.rs"),
    sdk_file!("src/host.rs"),
    sdk_file!("src/testing.rs"),
    sdk_file!("src/view.rs"),
    sdk_file!("wit/plugin.wit"),
];

/// The SDK's manifest, whose `[package]` inherits fields from the workspace.
const SDK_MANIFEST: &str = include_str!("../../../../plugin-sdk/Cargo.toml");

/// The workspace's manifest, with the values the SDK inherits.
const WORKSPACE_MANIFEST: &str = include_str!("../../../../Cargo.toml");

/// The SDK's manifest as a crate of its own: each field it inherits from the
/// workspace is written out with the workspace's value.
fn standalone_sdk_manifest() -> anyhow::Result<String> {
    let mut manifest: toml::Table = toml::from_str(SDK_MANIFEST)?;
    let workspace: toml::Table = toml::from_str(WORKSPACE_MANIFEST)?;
    let inherited = workspace
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(toml::Value::as_table)
        .ok_or_else(|| anyhow::anyhow!("the workspace manifest has no [workspace.package]"))?;
    let package = manifest
        .get_mut("package")
        .and_then(toml::Value::as_table_mut)
        .ok_or_else(|| anyhow::anyhow!("the SDK manifest has no [package]"))?;
    for (key, value) in package.iter_mut() {
        let from_workspace = value
            .as_table()
            .is_some_and(|t| t.get("workspace") == Some(&toml::Value::Boolean(true)));
        if from_workspace {
            *value = inherited
                .get(key)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("the workspace does not set package.{key}"))?;
        }
    }
    Ok(toml::to_string(&manifest)?)
}

/// Writes the embedded SDK into `directory`.
fn vendor_sdk(directory: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(directory)?;
    std::fs::write(directory.join("Cargo.toml"), standalone_sdk_manifest()?)?;
    for (path, text) in SDK_FILES {
        let path = directory.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// Writes a new plugin crate named `name` into `directory`, depending on the
/// SDK at `sdk`, or on a copy of the SDK this binary carries. Fails if the
/// directory exists and is not empty.
pub fn create(name: &str, directory: &Path, sdk: Option<&Path>) -> anyhow::Result<()> {
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
    let sdk = match sdk {
        Some(sdk) => std::fs::canonicalize(sdk)
            .map_err(|e| anyhow::anyhow!("the SDK at {}: {e}", sdk.display()))?
            .display()
            .to_string()
            .replace('\\', "/"),
        None => {
            vendor_sdk(&directory.join(VENDORED_SDK))?;
            VENDORED_SDK.to_string()
        }
    };
    std::fs::create_dir_all(directory.join("src"))?;
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
        assert_eq!(changes.headers.iter().collect::<Vec<_>>(), [HeaderChange::Set("x-greeting", "hello from web")]);
        assert_eq!(recorded().counters, vec![("greeted".to_string(), 1)]);
    }

    #[test]
    fn takes_its_configuration_as_sluice_hands_it_over() {
        configure::<Greeter>(r#"{"greeting": "hi"}"#).unwrap();
        let view = request("GET", "/").route("web").build();
        let changes = expect_continue(on_request::<Greeter>(&view));
        assert_eq!(changes.headers.iter().collect::<Vec<_>>(), [HeaderChange::Set("x-greeting", "hi from web")]);

        // Sluice refuses a config whose table the plugin does not accept.
        let error = configure::<Greeter>(r#"{"greting": "hi"}"#).unwrap_err();
        assert!(error.contains("unknown field `greting`"), "{error}");
    }
}
"##;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

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
        create("my-greeter", &dir, None).unwrap();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains(r#"name = "my-greeter""#), "{manifest}");
        assert!(
            manifest.contains(r#"sluice-plugin-sdk = { path = "vendor/sluice-plugin-sdk" }"#),
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
        let error = create("other", &dir, None).unwrap_err();
        assert!(error.to_string().contains("is not empty"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_vendored_sdk_is_a_crate_of_its_own() {
        let dir = scratch("vendored");
        create("tagger", &dir, None).unwrap();
        let sdk = dir.join(VENDORED_SDK);
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(sdk.join("Cargo.toml")).unwrap()).unwrap();
        let package = manifest["package"].as_table().unwrap();
        assert_eq!(package["name"].as_str(), Some("sluice-plugin-sdk"));
        assert_eq!(package["version"].as_str(), Some(env!("CARGO_PKG_VERSION")));
        assert!(package["edition"].is_str() && package["license"].is_str());
        assert!(!std::fs::read_to_string(sdk.join("Cargo.toml"))
            .unwrap()
            .contains("workspace"));
        assert!(manifest["dependencies"]
            .as_table()
            .unwrap()
            .contains_key("wit-bindgen"));
        assert!(std::fs::read_to_string(sdk.join("wit/plugin.wit"))
            .unwrap()
            .contains(sluice::plugins::bindings::CONTRACT));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_sdk_source_file_is_carried() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
        for directory in ["src", "wit"] {
            for entry in std::fs::read_dir(sdk.join(directory)).unwrap() {
                let name = format!(
                    "{directory}/{}",
                    entry.unwrap().file_name().to_string_lossy()
                );
                assert!(
                    SDK_FILES.iter().any(|(path, _)| *path == name),
                    "{name} is not in SDK_FILES: a scaffold would not build"
                );
            }
        }
    }

    #[test]
    fn depends_on_the_sdk_given() {
        let dir = scratch("given-sdk");
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
        create("tagger", &dir, Some(&sdk)).unwrap();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let expected = std::fs::canonicalize(&sdk).unwrap();
        assert!(
            manifest.contains(&format!("path = \"{}\"", expected.display())),
            "{manifest}"
        );
        assert!(!dir.join(VENDORED_SDK).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_names_that_are_not_crate_names() {
        let dir = scratch("bad-names");
        for name in ["", "Greeter", "1st", "-x", "a b", "a/b"] {
            let error = create(name, &dir, None).unwrap_err();
            assert!(
                error.to_string().contains("is not a plugin name"),
                "{name}: {error}"
            );
        }
        assert!(!dir.exists());
    }
}
