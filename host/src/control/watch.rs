//! Reload triggers: the config file changing, SIGHUP, remote polling, and
//! etcd's watch.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::reload::Reloader;
use super::source::ConfigSource;

/// How long the file must stay quiet after a change before it is reloaded,
/// so an editor's write-rename-chmod sequence causes one reload, on the
/// final content.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

/// The longest wait between remote polls while the source keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Starts every trigger that applies to the reloader's source on the
/// current Tokio runtime.
pub fn spawn_triggers(reloader: Arc<Reloader>, poll_interval: Duration) {
    tokio::spawn(reload_on_sighup(reloader.clone()));
    match reloader.source().clone() {
        ConfigSource::File(path) => {
            if let Err(e) = watch_file(reloader, path) {
                tracing::error!(error = %e, "cannot watch the config file; reload with SIGHUP or the admin API");
            }
        }
        ConfigSource::Url(_) => {
            tokio::spawn(poll(reloader, poll_interval));
        }
        ConfigSource::Etcd(source) => {
            tokio::spawn(super::etcd::watch(reloader, source));
        }
    }
}

async fn reload_on_sighup(reloader: Arc<Reloader>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::error!("cannot listen for SIGHUP");
        return;
    };
    while hangups.recv().await.is_some() {
        let _ = reloader.reload("SIGHUP").await;
    }
}

/// Watches the file's directory rather than the file, so a replace by
/// rename (what most editors and config managers do) is seen, and the new
/// file is watched from then on. When the path is a symlink, the target's
/// directory is watched too and re-resolved after every change, so both an
/// edit of the target and a swap of the link (Kubernetes ConfigMaps swap a
/// `..data` link) are seen every time.
fn watch_file(reloader: Arc<Reloader>, path: PathBuf) -> notify::Result<()> {
    let link_directory = parent(&path);
    let mut names: Vec<OsString> = path
        .file_name()
        .map(|n| vec![n.to_os_string()])
        .unwrap_or_default();
    let target = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    if let Some(name) = target.file_name() {
        names.push(name.to_os_string());
    }
    let (changed, mut changes) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        if event.kind.is_access() {
            return;
        }
        let concerns_config = event
            .paths
            .iter()
            .filter_map(|p| p.file_name())
            .any(|name| {
                names.iter().any(|n| n == name) || name.to_string_lossy().starts_with("..")
            });
        if concerns_config {
            let _ = changed.send(());
        }
    })?;
    watcher.watch(&link_directory, RecursiveMode::NonRecursive)?;
    let mut target_directory = parent(&target);
    if target_directory != link_directory {
        watcher.watch(&target_directory, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            // Debounce: wait until no change arrived for DEBOUNCE.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changes.recv()).await {}
            let _ = reloader.reload("file change").await;
            let resolved = parent(&std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone()));
            if resolved != target_directory {
                if target_directory != link_directory {
                    let _ = watcher.unwatch(&target_directory);
                }
                if resolved != link_directory {
                    if let Err(e) = watcher.watch(&resolved, RecursiveMode::NonRecursive) {
                        tracing::warn!(directory = %resolved.display(), error = %e, "cannot watch the config's new target directory");
                    }
                }
                target_directory = resolved;
            }
        }
    });
    Ok(())
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Polls a remote source. On failure, waits twice as long each time, up to
/// [`MAX_BACKOFF`]; the last known good config keeps serving meanwhile.
async fn poll(reloader: Arc<Reloader>, interval: Duration) {
    let mut wait = interval;
    loop {
        tokio::time::sleep(wait).await;
        wait = match reloader.reload("remote poll").await {
            Ok(_) => interval,
            Err(_) => (wait * 2).min(MAX_BACKOFF.max(interval)),
        };
    }
}

/// How often certificate files are checked for changes.
const CERTIFICATE_CHECK: Duration = Duration::from_secs(1);

/// Reloads when a certificate or key file of the live snapshot changes
/// (its modification time or size, through symlinks): renewed certificates
/// take effect on the next handshake. Polling a handful of files once a
/// second sees every way a certificate gets replaced (in place, by rename,
/// by a swapped link) without watching each file's directory. A reload
/// that fails to load the new files keeps the old certificates serving.
pub async fn reload_on_certificate_change(reloader: Arc<Reloader>) {
    let stamp = |files: &[PathBuf]| -> Vec<Option<(std::time::SystemTime, u64)>> {
        files
            .iter()
            .map(|f| {
                let meta = std::fs::metadata(f).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    };
    let live = reloader.live();
    let mut seen = (
        live.load().version.clone(),
        stamp(&live.load().certificate_files),
    );
    let mut interval = tokio::time::interval(CERTIFICATE_CHECK);
    loop {
        interval.tick().await;
        let snapshot = live.load_full();
        if snapshot.certificate_files.is_empty() {
            continue;
        }
        let now = (snapshot.version.clone(), stamp(&snapshot.certificate_files));
        if now.0 == seen.0 && now.1 != seen.1 {
            let _ = reloader.reload_unchanged("certificate change").await;
        }
        seen = (live.load().version.clone(), now.1);
    }
}
