//! `watch_config = true`: reload when the configuration file changes, besides SIGHUP.
//!
//! Polls the file's metadata rather than using inotify: polling the path sees a file
//! that an editor replaced (rename over it) or that a config-management tool rewrote,
//! on any filesystem, with no extra dependency; half a second of delay is fine for a
//! configuration file.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use std::sync::Arc;

use super::command::Commands;
use crate::snapshot::Shared;

const POLL: Duration = Duration::from_millis(500);

/// What tells one version of the file from the next.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// Watches `path` until shutdown; acts only while the running configuration says
/// `watch_config = true`.
pub(super) async fn run(shared: Arc<Shared>, commands: Commands, path: PathBuf) {
    let shutdown = shared.shutdown.clone();
    tokio::select! {
        () = poll(&shared, &commands, &path) => {}
        () = shutdown.cancelled() => {}
    }
}

async fn poll(shared: &Shared, commands: &Commands, path: &PathBuf) {
    let mut seen = stamp(path);
    loop {
        tokio::time::sleep(POLL).await;
        let now = stamp(path);
        if now == seen || now.is_none() {
            continue;
        }
        // Debounce: wait until the file stops changing, so a reload never reads a
        // half-written file.
        let mut settled = now;
        loop {
            tokio::time::sleep(POLL / 2).await;
            let again = stamp(path);
            if again == settled {
                break;
            }
            settled = again;
        }
        // Gone while it settled (deleted, or between an editor's unlink and its
        // rename): wait for the file that takes its place.
        if settled.is_none() {
            continue;
        }
        seen = settled;
        if shared.snapshot.load().config.global.watch_config {
            tracing::info!(config = %path.display(), "file changed: reloading");
            let _ = commands.reload().await;
        }
    }
}
