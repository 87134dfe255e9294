//! Reload triggers: the config file changing, SIGHUP, and remote polling.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::reload::{ConfigSource, Reloader};

/// How long the file must stay quiet after a change before it is reloaded,
/// so an editor's write-rename-chmod sequence causes one reload, on the
/// final content.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// The longest wait between remote polls while the source keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Starts every trigger that applies to the reloader's source on the
/// current Tokio runtime. The returned watcher must be kept alive.
pub fn spawn_triggers(
    reloader: Arc<Reloader>,
    poll_interval: Duration,
) -> Option<notify::RecommendedWatcher> {
    tokio::spawn(reload_on_sighup(reloader.clone()));
    match reloader.source().clone() {
        ConfigSource::File(path) => match watch_file(reloader, path) {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the config file; reload with SIGHUP or the admin API");
                None
            }
        },
        ConfigSource::Url(_) => {
            tokio::spawn(poll(reloader, poll_interval));
            None
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
/// file is watched from then on.
fn watch_file(
    reloader: Arc<Reloader>,
    path: PathBuf,
) -> notify::Result<notify::RecommendedWatcher> {
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let directory = path
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let file_name = path.file_name().map(|n| n.to_os_string());
    let (changed, mut changes) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        if event.kind.is_access() {
            return;
        }
        let concerns_file = event
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
        if concerns_file {
            let _ = changed.send(());
        }
    })?;
    watcher.watch(&directory, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            // Debounce: wait until no change arrived for DEBOUNCE.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changes.recv()).await {}
            let _ = reloader.reload("file change").await;
        }
    });
    Ok(watcher)
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
