//! The `sluice` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

mod scaffold;

use clap::{Parser, Subcommand};
use sluice::config;
use sluice::control::etcd::{EtcdSource, EtcdTls, KeyProtection};
use sluice::control::ConfigSource;
use sluice::resilience::state::Registry;
use sluice::server::RunOptions;
use sluice::snapshot::Snapshot;

// Pingora allocates and frees header maps, buffers and futures on every
// request. glibc's allocator spent about a sixth of the proxy's CPU time on
// them (consolidating fastbins among other things); with mimalloc's
// thread-local free lists a request costs about a fifth less CPU. Built
// without transparent huge pages: each thread's first 2 MiB page would
// otherwise count in full in the RSS of an idle proxy (25 MiB instead of 16).
// Entered through its plain functions where they give the alignment
// (`sluice::Mimalloc` says why).
#[global_allocator]
static GLOBAL: sluice::Mimalloc = sluice::Mimalloc;

/// Sluice: an HTTP reverse proxy with two-level cell routing.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the configuration comes from: a file, a URL that is polled, or
/// etcd.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct SourceArgs {
    /// The configuration file (watched for changes; SIGHUP also reloads it).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// An HTTP(S) URL serving the configuration, polled with ETag/If-None-Match;
    /// or etcd://HOST:PORT[,HOST:PORT...]/PREFIX, the key PREFIX/config, watched.
    #[arg(long)]
    config_url: Option<String>,
}

/// How to reach etcd: TLS and a user.
#[derive(clap::Args)]
struct EtcdArgs {
    /// Speak TLS to etcd, trusting this CA (PEM).
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// A client certificate (PEM) for etcd; implies TLS. Needs --etcd-key.
    #[arg(long, requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// The etcd user; the password is read from $SLUICE_ETCD_PASSWORD.
    #[arg(long)]
    etcd_user: Option<String>,
}

/// How a fleet on etcd keeps its shared ACME state.
#[derive(clap::Args)]
struct FleetAcmeArgs {
    /// How long the lock on a certificate order outlives an instance that
    /// died holding it; another instance takes over after it.
    #[arg(long, default_value = "30s", value_parser = lock_lease)]
    etcd_lock_lease: std::time::Duration,
    /// How ACME private keys are written to etcd: `plaintext` (for an etcd
    /// whose access control you trust) or `encrypted` with the key in
    /// $SLUICE_ETCD_ENCRYPTION_KEY.
    #[arg(long, default_value = "plaintext", value_parser = ["plaintext", "encrypted"])]
    etcd_private_keys: String,
}

impl FleetAcmeArgs {
    /// `source` with these settings, if its config is in etcd.
    fn apply(&self, source: ConfigSource) -> Result<ConfigSource, String> {
        let ConfigSource::Etcd(mut etcd) = source else {
            return Ok(source);
        };
        etcd.lock_lease = self.etcd_lock_lease;
        if self.etcd_private_keys == "encrypted" {
            etcd.private_keys = KeyProtection::encrypted_from_env()?;
        }
        Ok(ConfigSource::Etcd(etcd))
    }
}

impl EtcdArgs {
    fn source(&self, url: &str) -> Result<EtcdSource, String> {
        let tls = (self.etcd_ca.is_some() || self.etcd_cert.is_some()).then(|| EtcdTls {
            ca: self.etcd_ca.clone(),
            identity: self.etcd_cert.clone().zip(self.etcd_key.clone()),
        });
        EtcdSource::parse(url, tls, self.etcd_user.clone())
    }
}

impl SourceArgs {
    fn source(&self, etcd: &EtcdArgs) -> Result<ConfigSource, String> {
        Ok(match (&self.config, &self.config_url) {
            (Some(path), _) => ConfigSource::File(path.clone()),
            (None, Some(url)) if url.starts_with("etcd://") => {
                ConfigSource::Etcd(etcd.source(url)?)
            }
            (None, Some(url)) => ConfigSource::Url(url.clone()),
            (None, None) => unreachable!("clap requires one source"),
        })
    }
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file, then write it to etcd, where every instance
    /// watching it applies it. Refused if the config there changed meanwhile.
    Push {
        /// etcd://HOST:PORT[,HOST:PORT...]/PREFIX
        #[arg(long)]
        etcd: String,
        /// Write only if etcd's config is at this revision (the one you last
        /// read); by default, the one read when the push starts.
        #[arg(long)]
        expect_revision: Option<i64>,
        #[command(flatten)]
        connection: EtcdArgs,
        /// The configuration file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin crate that builds as it is.
    New {
        /// The plugin's name (its `.wasm` file stem).
        name: String,
        /// Where to create it; `./NAME` by default.
        #[arg(long)]
        path: Option<PathBuf>,
        /// The plugin SDK to depend on; by default, a copy of the one this
        /// binary was built with, written into the crate.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Load a `.wasm` plugin and list its hooks, or say why it cannot load.
    Check {
        /// The component.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Convert a Caddyfile; unsupported directives are listed on stderr with their line.
    Caddyfile {
        /// The Caddyfile.
        file: PathBuf,
        /// Where to write the Sluice config; stdout by default.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Write the config even when some directives have no equivalent,
        /// with a comment at each, and exit zero.
        #[arg(long)]
        allow_partial: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Start the proxy.
    Run {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        etcd: EtcdArgs,
        #[command(flatten)]
        fleet_acme: FleetAcmeArgs,
        /// Where the last known good config is kept, for starts on a broken source.
        #[arg(long, env = "SLUICE_STATE_DIR", default_value = "/var/lib/sluice")]
        state_dir: PathBuf,
        /// How often `--config-url` is polled.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        poll_interval: std::time::Duration,
        /// Take the listening sockets over from the running instance (zero-downtime
        /// upgrade): start the new process with this flag, then send SIGQUIT to the old one.
        #[arg(long)]
        upgrade: bool,
        /// This instance's name among the fleet's members (config in etcd);
        /// the host's name and the process id by default.
        #[arg(long, value_parser = instance_name)]
        instance_name: Option<String>,
    },
    /// Validate a configuration file and list every problem; exits non-zero on any.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Work with a configuration kept in etcd.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Convert another proxy's configuration into a Sluice config.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Work with plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Start demo upstreams and the proxy on the bundled demo config, and show routed responses.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The first of three consecutive loopback ports for the demo upstreams; the
        /// port after them serves the demo's stop/start control (0: any free ports).
        #[arg(long, default_value_t = 9101)]
        upstream_port: u16,
        /// Where the demo's admin API listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// A config to use instead of the bundled `examples/demo.toml`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            source,
            etcd,
            fleet_acme,
            state_dir,
            poll_interval,
            upgrade,
            instance_name,
        } => match source
            .source(&etcd)
            .and_then(|source| fleet_acme.apply(source))
        {
            Ok(source) => start(RunOptions {
                source,
                state_dir: Some(state_dir),
                poll_interval,
                upgrade,
                instance_name,
            }),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Config {
            command:
                ConfigCommand::Push {
                    etcd,
                    expect_revision,
                    connection,
                    file,
                },
        } => push(&etcd, &connection, expect_revision, &file),
        Command::Check { config } => match load(&config) {
            Ok(snapshot) => {
                for warning in &snapshot.warnings {
                    eprintln!("{}: warning: {warning}", config.display());
                }
                println!(
                    "{}: ok ({} listeners, {} routes, {} placements)",
                    config.display(),
                    snapshot.listeners.len(),
                    snapshot.routes.len(),
                    snapshot.placements.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => fail(&errors),
        },
        Command::Import {
            command:
                ImportCommand::Caddyfile {
                    file,
                    output,
                    allow_partial,
                },
        } => match sluice_import::run(&file, output.as_deref(), allow_partial) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Plugin { command } => plugin(command),
        Command::Demo {
            listen,
            upstream_port,
            admin,
            config,
        } => demo(listen, upstream_port, admin, config),
    }
}

/// Loads and checks a config as `run` would, plugins included.
fn load(path: &std::path::Path) -> Result<Snapshot, config::ConfigErrors> {
    check_text(&read_config(path)?, &path.display().to_string())
}

/// The text of the config file at `path`.
fn read_config(path: &std::path::Path) -> Result<String, config::ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        config::ConfigErrors::single(
            path.display().to_string(),
            config::ConfigError::new(
                config::KeyPath::root(),
                None,
                format!("cannot read file: {e}"),
            ),
        )
    })
}

/// Checks config `text` read from `origin` as `run` would load it.
fn check_text(text: &str, origin: &str) -> Result<Snapshot, config::ConfigErrors> {
    let plugins = std::sync::Arc::new(arc_swap::ArcSwapOption::empty());
    let metrics = std::sync::Arc::new(sluice::plugins::metrics::PluginMetrics::new());
    let registry = Registry::default();
    // Upstream names are looked up as `run` would: a name that does not
    // resolve is reported as a warning, not an error.
    let resolver = sluice::routing::names::NameResolver::new(registry.names().clone());
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(sluice::control::resolve_names(&resolver, text)),
        Err(e) => eprintln!("warning: cannot start the runtime to resolve upstream names: {e}"),
    }
    sluice::control::compile_text(text, origin, &registry, &plugins, &metrics)
}

fn plugin(command: PluginCommand) -> ExitCode {
    match command {
        PluginCommand::New { name, path, sdk } => {
            let directory = path.unwrap_or_else(|| PathBuf::from(&name));
            match scaffold::create(&name, &directory, sdk.as_deref()) {
                Ok(()) => {
                    println!("created {} ({name})", directory.display());
                    println!(
                        "build it:  cd {} && cargo build --release --target wasm32-wasip2",
                        directory.display()
                    );
                    println!("test it:   cargo test");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        PluginCommand::Check { file } => {
            let name = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("plugin")
                .to_string();
            let loaded = std::fs::read(&file)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| {
                    let engine = sluice::plugins::engine::PluginEngine::new(None)?;
                    sluice::plugins::runtime::LoadedPlugin::load(
                        &engine,
                        &name,
                        &bytes,
                        Default::default(),
                        std::sync::Arc::new(sluice::plugins::metrics::PluginMetrics::new()),
                    )
                });
            match loaded {
                Ok(plugin) => {
                    let hooks: Vec<_> = plugin
                        .hooks
                        .iter()
                        .map(|h| sluice::plugins::registry::hook_name(*h))
                        .collect();
                    println!(
                        "{}: plugin {name}, version {}, contract {}, hooks: {}",
                        file.display(),
                        plugin.version,
                        sluice::plugins::bindings::CONTRACT,
                        hooks.join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: cannot load: {e:#}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A lock lease: etcd counts leases in whole seconds, and a lock must
/// outlive at least one renewal.
fn lock_lease(text: &str) -> Result<std::time::Duration, String> {
    let lease = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if lease < std::time::Duration::from_secs(1) {
        return Err(format!(
            "{text} is too short for a lock's lease: at least 1s"
        ));
    }
    Ok(lease)
}

/// An instance name: the last part of an etcd key, so no `/`.
fn instance_name(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains('/') {
        return Err("an instance name is not empty and has no '/'".into());
    }
    Ok(name.to_string())
}

/// `sluice config push`: checks `file` as `sluice check` does, then
/// writes it to etcd if the config there is still at the revision read.
fn push(url: &str, connection: &EtcdArgs, expect: Option<i64>, file: &std::path::Path) -> ExitCode {
    let source = match connection.source(url) {
        Ok(source) => source,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // The text checked is the text pushed: the file is read once.
    let checked = read_config(file)
        .and_then(|text| check_text(&text, &file.display().to_string()).map(|_| text));
    let text = match checked {
        Ok(text) => text,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("nothing was pushed");
            return ExitCode::FAILURE;
        }
    };
    let pushed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime.block_on(async {
                let mut client = source.connect().await?;
                let current = source.read(&mut client).await?.map_or(0, |(_, r)| r);
                let base = expect.unwrap_or(current);
                if base != current {
                    return Err(format!(
                        "{source}: the config is at revision {current}, not {base}: it changed \
                         since you read it; nothing was written"
                    ));
                }
                source.compare_and_swap(&mut client, base, &text).await
            })
        });
    match pushed {
        Ok(revision) => {
            println!(
                "{}: pushed to {source} (revision {revision})",
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn start(options: RunOptions) -> ExitCode {
    match sluice::server::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn fail(errors: &config::ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    ExitCode::FAILURE
}

fn demo(
    listen: SocketAddr,
    upstream_port: u16,
    admin: SocketAddr,
    config_path: Option<PathBuf>,
) -> ExitCode {
    let upstreams = match sluice_demo::start_upstreams(upstream_port) {
        Ok(upstreams) => upstreams,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    std::env::set_var("DEMO_LISTEN", listen.to_string());
    std::env::set_var("DEMO_ADMIN", admin.to_string());
    let config_path = match config_path {
        Some(path) => path,
        None => {
            // One file for every demo: its text is the same each time (the
            // addresses come from the environment), so demos started one
            // after another leave a single file behind, not one each. It is
            // replaced by a rename, so a demo already running never reads
            // half of it.
            let path = std::env::temp_dir().join("sluice-demo.toml");
            let written = path.with_extension(format!("toml.{}", std::process::id()));
            if let Err(e) = std::fs::write(&written, sluice_demo::DEMO_CONFIG)
                .and_then(|()| std::fs::rename(&written, &path))
            {
                let _ = std::fs::remove_file(&written);
                eprintln!("cannot write the demo config to {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            path
        }
    };
    let control = upstreams.control;
    std::thread::spawn(move || sluice_demo::show_off(listen, control));
    start(RunOptions {
        source: ConfigSource::File(config_path),
        state_dir: None,
        poll_interval: std::time::Duration::from_secs(10),
        upgrade: false,
        instance_name: None,
    })
}
