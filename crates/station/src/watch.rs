//! Picks up edits of the config file while the daemon runs.
//!
//! The file's folder is watched (not the file: editors save by writing a new file and renaming
//! it over the old one, which ends a watch on the file itself). After a burst of changes has
//! settled, the file is loaded again, with the files it names ([`Settings::load`]). Valid
//! settings are published on a `tokio::sync::watch` channel, for the next iPad to use (the
//! daemon reads no file again), and logged; an invalid edit is refused with the reason logged
//! and the previous settings stay in force.
//!
//! Only the config file itself is watched: a new password in `wifi.password_file` or a new
//! identity is read at the next edit of the config file (or restart), not on its own.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::config::ConfigError;
use crate::settings::Settings;

/// How long changes must have settled before the file is read again (an editor's save is
/// several events). The timer exists only after an event: an idle station has none.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Settings the daemon reads once at start; a change to them is logged as needing a restart.
const RESTART_SECTIONS: [&str; 2] = ["state_dir", "usbmuxd"];

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the config file {0} has no folder to watch")]
    NoFolder(PathBuf),
    #[error("cannot watch {path} for changes: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// Watches a config file; dropping it stops the watch.
pub struct ConfigWatcher {
    // Kept for its Drop, which stops the kernel watch (inotify, FSEvents, kqueue: its thread
    // sleeps until the kernel has an event; notify's debouncer thread polled every ~75 ms).
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
    current: watch::Receiver<Arc<Settings>>,
    refused: watch::Receiver<Option<Arc<ConfigError>>>,
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatcher")
            .field("path", &self.current.borrow().config.path)
            .finish_non_exhaustive()
    }
}

/// The SHA-256 of the file's bytes, or `None` when it cannot be read now.
fn content_hash(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

impl ConfigWatcher {
    /// Starts watching the file `initial` was loaded from, with `initial` as the settings in
    /// force. Needs a tokio runtime (the reloads run on it).
    pub fn start(initial: Settings) -> Result<ConfigWatcher, WatchError> {
        let path = initial.config.path.clone();
        let (folder, file_name) = split(&path).ok_or_else(|| WatchError::NoFolder(path.clone()))?;
        let (tx, rx) = watch::channel(Arc::new(initial));
        let (refused_tx, refused_rx) = watch::channel(None);

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let handler_path = path.clone();
        let mut watcher = notify::recommended_watcher(
            move |result: notify::Result<notify::Event>| match result {
                Ok(event) => {
                    // Only changes: reading the file (our own reload) is an access event, and
                    // reacting to it re-read the file every SETTLE for ever.
                    let changes = matches!(
                        event.kind,
                        notify::EventKind::Create(_)
                            | notify::EventKind::Modify(_)
                            | notify::EventKind::Remove(_)
                    );
                    if changes
                        && event
                            .paths
                            .iter()
                            .any(|p| p.file_name() == Some(file_name.as_os_str()))
                    {
                        let _ = events_tx.send(());
                    }
                }
                Err(e) => {
                    warn!(path = %handler_path.display(), error = %e, "watching the config file")
                }
            },
        )
        .map_err(|source| WatchError::Watch {
            path: folder.clone(),
            source,
        })?;
        watcher
            .watch(&folder, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch {
                path: folder.clone(),
                source,
            })?;
        // The bytes in force now (read before any event can be missed).
        let last = content_hash(&path);
        let task = tokio::spawn(follow(path, last, events_rx, tx, refused_tx));
        Ok(ConfigWatcher {
            _watcher: watcher,
            task,
            current: rx,
            refused: refused_rx,
        })
    }

    /// A receiver of the settings in force; `changed()` wakes on each accepted reload.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Settings>> {
        self.current.clone()
    }

    /// The settings in force now.
    pub fn current(&self) -> Arc<Settings> {
        Arc::clone(&self.current.borrow())
    }

    /// Why the latest edit was refused, until an edit is accepted (for `cartprep status`).
    pub fn refused(&self) -> watch::Receiver<Option<Arc<ConfigError>>> {
        self.refused.clone()
    }
}

/// Reloads after each burst of events has settled, unless the file holds the same bytes as at
/// the last load (an editor that saves without a change, a `touch`).
async fn follow(
    path: PathBuf,
    mut last: Option<[u8; 32]>,
    mut events: mpsc::UnboundedReceiver<()>,
    tx: watch::Sender<Arc<Settings>>,
    refused: watch::Sender<Option<Arc<ConfigError>>>,
) {
    while events.recv().await.is_some() {
        // Settle: wait until no event has come for SETTLE.
        loop {
            match tokio::time::timeout(SETTLE, events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let (p, tx2, refused2) = (path.clone(), tx.clone(), refused.clone());
        let seen = last;
        let read = tokio::task::spawn_blocking(move || {
            let now = content_hash(&p);
            if now.is_some() && now == seen {
                debug!(path = %p.display(), "config file touched, same bytes");
                return seen;
            }
            // Only bytes that loaded are remembered: after a refusal (say, a password file that
            // could not be read) saving the same text again must try again.
            if reload(&p, &tx2, &refused2) {
                now
            } else {
                seen
            }
        })
        .await;
        if let Ok(hash) = read {
            last = hash;
        }
    }
}

/// The folder to watch and the file name to look for in its events.
fn split(path: &Path) -> Option<(PathBuf, OsString)> {
    let file_name = path.file_name()?.to_owned();
    let folder = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
        Some(p) => p.to_owned(),
        None => return None,
    };
    Some((folder, file_name))
}

/// Loads the file again and publishes the outcome; `true` when the settings loaded.
fn reload(
    path: &Path,
    tx: &watch::Sender<Arc<Settings>>,
    refused: &watch::Sender<Option<Arc<ConfigError>>>,
) -> bool {
    match Settings::load(path) {
        Ok(new) => {
            let old = Arc::clone(&tx.borrow());
            let changed = new.config.changed_sections(&old.config);
            if changed.is_empty() {
                debug!(path = %path.display(), "config file touched, settings unchanged");
                refused.send_replace(None);
                return true;
            }
            info!(
                path = %path.display(),
                "config reloaded: {} changed; applies from the next iPad",
                changed.join(", ")
            );
            let restart: Vec<_> = changed
                .iter()
                .filter(|s| RESTART_SECTIONS.contains(s))
                .collect();
            if !restart.is_empty() {
                warn!(
                    "config change to {} takes effect only after a restart",
                    restart
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            // Publish first, then clear the refusal: whoever sees "no refusal" must also see
            // the settings that ended it.
            tx.send_replace(Arc::new(new));
            refused.send_replace(None);
            true
        }
        // A file that is briefly missing mid-save (delete then create) is not an edit to refuse
        // loudly; the create that follows triggers another reload.
        Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            debug!(path = %path.display(), "config file momentarily missing");
            false
        }
        Err(e) => {
            warn!("config change refused, keeping the previous settings: {e}");
            refused.send_replace(Some(Arc::new(e)));
            false
        }
    }
}
