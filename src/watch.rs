//! Reload on file change, besides SIGHUP: the config file and every file it reads
//! (`file:` secrets and certificates, the Server Action manifest — [`Config::files`]).
//!
//! NOTE: directories are watched, not the files: Kubernetes updates a mounted
//! ConfigMap or Secret by swapping a `..data` symlink in the directory, so the file's
//! own inode never changes and a watch on it would never fire. An event only marks the
//! set dirty; what decides is the files' contents (SHA-256 of each) and what each path
//! leads to, so a touched but unchanged file, or our own reads, never reload, and a burst
//! of writes reloads once. Only regular files of bounded size are read (a swap to
//! `/dev/zero` or a FIFO is refused, not read).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::state::Shared;

/// Quiet time after the last event before the files are read: an editor's or a
/// deployment tool's several writes make one reload, not a refused half-written one.
pub const SETTLE: Duration = Duration::from_millis(200);

/// The files a configuration depends on and the directories to watch for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSet {
    /// The config file, then the files it read, without repeats.
    pub files: Vec<PathBuf>,
    /// Their directories, without repeats.
    pub dirs: BTreeSet<PathBuf>,
}

impl WatchSet {
    /// The set for `config`, loaded from `config_path`.
    pub fn of(config_path: &Path, config: &Config) -> WatchSet {
        let mut files: Vec<PathBuf> = Vec::new();
        for f in std::iter::once(config_path).chain(config.files.iter().map(PathBuf::as_path)) {
            if !files.iter().any(|x| x == f) {
                files.push(f.to_path_buf());
            }
        }
        let dirs = files
            .iter()
            .map(|f| match f.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        WatchSet { files, dirs }
    }

    /// True when a change to `path` may change one of the files: a file of the set by
    /// name, or a `..`-named entry (Kubernetes' `..data` swap) in one of the dirs.
    pub fn concerns(&self, path: &Path) -> bool {
        let Some(name) = path.file_name() else {
            return false;
        };
        if name.to_string_lossy().starts_with("..") {
            return true;
        }
        self.files.iter().any(|f| f.file_name() == Some(name))
    }

    /// The files' fingerprint: for each, the identity of what the path leads to
    /// (device, inode: a swap to another file shows even when neither can be read) and
    /// the SHA-256 of its contents when it is a readable regular file.
    pub fn fingerprint(&self) -> Vec<Fingerprint> {
        use std::os::unix::fs::MetadataExt;
        self.files
            .iter()
            .map(|f| {
                let id = std::fs::metadata(f).ok().map(|m| (m.dev(), m.ino()));
                let hash = crate::config::read_bounded(f, crate::config::MAX_FILE_BYTES)
                    .ok()
                    .map(|b| {
                        ring::digest::digest(&ring::digest::SHA256, &b)
                            .as_ref()
                            .to_vec()
                    });
                (id, hash)
            })
            .collect()
    }
}

/// One file's fingerprint: what the path leads to, and its contents' hash.
pub type Fingerprint = (Option<(u64, u64)>, Option<Vec<u8>>);

/// True for the events that can mean new contents (not opens and reads, ours included).
pub fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watches the files of the configuration in force and reloads `shared` when their
/// contents change, until `stop` turns true. Returns at once (with a logged warning)
/// when the platform's watcher cannot start; SIGHUP still reloads.
pub async fn run(shared: Arc<Shared>, config_path: PathBuf, mut stop: watch::Receiver<bool>) {
    let dirty = Arc::new(Notify::new());
    let set = Arc::new(std::sync::Mutex::new(WatchSet::of(
        &config_path,
        &shared.current().config,
    )));
    let mut watcher = {
        let dirty = dirty.clone();
        let set = set.clone();
        match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            let set = set.lock().unwrap_or_else(|e| e.into_inner());
            if is_change(&ev.kind) && ev.paths.iter().any(|p| set.concerns(p)) {
                dirty.notify_one();
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config files; reload with SIGHUP");
                return;
            }
        }
    };
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    let mut current = lock(&set).clone();
    rewatch(&mut watcher, &mut watched, &current.dirs);
    let mut last = fingerprint(&current).await;
    loop {
        tokio::select! {
            _ = dirty.notified() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() { return; }
                continue;
            }
        }
        // let a burst of writes settle
        loop {
            tokio::select! {
                _ = dirty.notified() => {}
                _ = tokio::time::sleep(SETTLE) => break,
            }
        }
        let now = fingerprint(&current).await;
        if now == last {
            continue;
        }
        tracing::info!("a config file changed; reloading");
        // errors are logged and counted by reload itself; the old config stays
        let _ = shared.reload().await;
        let next = WatchSet::of(&config_path, &shared.current().config);
        if next != current {
            *lock(&set) = next.clone();
            rewatch(&mut watcher, &mut watched, &next.dirs);
            current = next;
            last = fingerprint(&current).await;
        } else {
            // what the reload read (or refused): the next change reloads again
            last = now;
        }
    }
}

fn lock(set: &std::sync::Mutex<WatchSet>) -> std::sync::MutexGuard<'_, WatchSet> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

async fn fingerprint(set: &WatchSet) -> Vec<Fingerprint> {
    let set = set.clone();
    tokio::task::spawn_blocking(move || set.fingerprint())
        .await
        .unwrap_or_default()
}

fn rewatch(
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut BTreeSet<PathBuf>,
    dirs: &BTreeSet<PathBuf>,
) {
    for gone in watched.difference(dirs).cloned().collect::<Vec<_>>() {
        let _ = watcher.unwatch(&gone);
        watched.remove(&gone);
    }
    for dir in dirs.difference(&watched.clone()) {
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watched.insert(dir.clone());
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch this directory; its files reload on SIGHUP only")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concerns_its_files_and_kubernetes_swaps_only() {
        let set = WatchSet {
            files: vec![
                PathBuf::from("/etc/r/rotagate.toml"),
                PathBuf::from("/run/s/key"),
            ],
            dirs: [PathBuf::from("/etc/r"), PathBuf::from("/run/s")].into(),
        };
        assert!(set.concerns(Path::new("/etc/r/rotagate.toml")));
        assert!(set.concerns(Path::new("/run/s/key")));
        assert!(set.concerns(Path::new("/etc/r/..data")));
        assert!(set.concerns(Path::new("/etc/r/..2026_12_03_10_00_00.123")));
        assert!(!set.concerns(Path::new("/etc/r/rotagate.toml.swp")));
        assert!(!set.concerns(Path::new("/etc/r/other")));
    }

    #[test]
    fn reads_are_not_changes() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Modify(
            notify::event::ModifyKind::Any
        )));
        assert!(is_change(&EventKind::Create(
            notify::event::CreateKind::File
        )));
    }
}
