//! The `sluice` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config;
use sluice::snapshot::Snapshot;

/// Sluice: an HTTP reverse proxy with two-level cell routing.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the proxy.
    Run {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and list every problem; exits non-zero on any.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start demo upstreams and the proxy on the bundled demo config, and show routed responses.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The first of three consecutive loopback ports for the demo upstreams (0: any free ports).
        #[arg(long, default_value_t = 9101)]
        upstream_port: u16,
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
        Command::Run { config } => match load(&config) {
            Ok(snapshot) => sluice::server::run(snapshot),
            Err(errors) => fail(&errors),
        },
        Command::Check { config } => match load(&config) {
            Ok(snapshot) => {
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
        Command::Demo {
            listen,
            upstream_port,
            config,
        } => demo(listen, upstream_port, config),
    }
}

fn load(path: &std::path::Path) -> Result<Snapshot, config::ConfigErrors> {
    let loaded = config::load_file(path)?;
    config::compile(&loaded, &path.display().to_string())
}

fn fail(errors: &config::ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    ExitCode::FAILURE
}

fn demo(listen: SocketAddr, upstream_port: u16, config_path: Option<PathBuf>) -> ExitCode {
    if let Err(e) = sluice::demo::start_upstreams(upstream_port) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    std::env::set_var("DEMO_LISTEN", listen.to_string());
    let (text, origin) = match &config_path {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => (text, path.display().to_string()),
            Err(e) => {
                eprintln!("cannot read {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => (
            sluice::demo::DEMO_CONFIG.to_string(),
            "examples/demo.toml".to_string(),
        ),
    };
    let snapshot = config::parse(&text, &origin, &|name| std::env::var(name).ok())
        .and_then(|loaded| config::compile(&loaded, &origin));
    match snapshot {
        Ok(snapshot) => {
            std::thread::spawn(move || sluice::demo::show_off(listen));
            sluice::server::run(snapshot)
        }
        Err(errors) => fail(&errors),
    }
}
