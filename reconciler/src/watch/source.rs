//! The policy source of the daemon: one file or a drop-in directory, its
//! content hash, and the inotify watch that says when to read it again.
//!
//! The DIRECTORY is watched, not recursive, never the files: editors save by
//! renaming a new file over the old one (the old inode, and a watch on it,
//! is gone), and a Kubernetes ConfigMap swaps its `..data` symlink. Both
//! show up as events in the directory. Reading the files raises IN_OPEN
//! (`EventKind::Access`) events in notify 8: they are dropped here, or the
//! daemon's own reads would wake it forever.
use std::{
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::policy::{self, Policy, PolicyErrors};

/// Where the policy comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Dir(PathBuf),
}

/// One read of the source: the hash of what was read and the result of
/// loading it.
#[derive(Debug)]
pub struct Read {
    pub hash: String,
    pub result: Result<Policy, PolicyErrors>,
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::File(_) => "file",
            Source::Dir(_) => "dir",
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Source::File(p) | Source::Dir(p) => p,
        }
    }

    /// The directory whose events matter: the drop-in directory itself, or
    /// the directory holding the file.
    pub fn watch_dir(&self) -> PathBuf {
        match self {
            Source::Dir(d) => d.clone(),
            Source::File(f) => match f.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
        }
    }

    /// Whether an event on `path` can change what [`Source::read`] returns.
    /// `..data` and the timestamped `..2024_...` directories of a ConfigMap
    /// are relevant; editor swap and backup files are not.
    pub fn is_relevant(&self, path: &Path) -> bool {
        let dir = self.watch_dir();
        if path == dir {
            return true; // the directory itself was removed, moved, ...
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        if name.starts_with("..") {
            return true;
        }
        match self {
            Source::Dir(_) => {
                !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
            }
            Source::File(f) => f.file_name().and_then(|n| n.to_str()) == Some(name),
        }
    }

    /// Hash of everything the loader would read: for a directory, the name
    /// and bytes of each drop-in file in lexical order (a removed file
    /// changes it like an edited one); for a file, its bytes. An unreadable
    /// source hashes to its error, so a fix is a change.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        match self {
            Source::File(f) => hash_file(&mut h, f),
            Source::Dir(d) => match drop_in_files(d) {
                Ok(files) => {
                    for f in files {
                        h.update(f.file_name().unwrap_or_default().as_encoded_bytes());
                        h.update([0]);
                        hash_file(&mut h, &f);
                    }
                }
                Err(e) => h.update(format!("unreadable directory: {e}").as_bytes()),
            },
        }
        hex::encode(h.finalize())
    }

    /// Reads the source: hash FIRST, then load. A change that lands between
    /// the two is newer than the hash, so its event makes the next read
    /// differ and converge to it (the other order could record the new hash
    /// with the old content and then skip the change).
    pub fn read(&self) -> Read {
        let hash = self.hash();
        let result = match self {
            Source::File(f) => policy::load_file(f),
            Source::Dir(d) => policy::load_dir(d),
        };
        Read { hash, result }
    }

    /// Identity (device, inode) of the watched directory, to notice that the
    /// path now names another directory (a symlink above it was swapped, or
    /// it was removed and re-created) and the watch must be renewed.
    pub fn watch_dir_identity(&self) -> Option<(u64, u64)> {
        std::fs::metadata(self.watch_dir())
            .ok()
            .map(|m| (m.dev(), m.ino()))
    }
}

fn hash_file(h: &mut Sha256, path: &Path) {
    let limit = policy::MAX_FILE_BYTES + 1;
    // Non-blocking: a FIFO named like a drop-in file would block the open
    // (and the daemon) until a writer came; `policy::load_dir` names it.
    match policy::open_nonblocking(path).and_then(|f| {
        if f.metadata()?.is_file() {
            Ok(f)
        } else {
            Err(std::io::ErrorKind::InvalidInput.into())
        }
    }) {
        Ok(f) => {
            let mut bytes = Vec::new();
            match f.take(limit).read_to_end(&mut bytes) {
                Ok(_) => {
                    h.update((bytes.len() as u64).to_le_bytes());
                    h.update(&bytes);
                }
                Err(e) => h.update(format!("unreadable: {}", e.kind()).as_bytes()),
            }
        }
        Err(e) => h.update(format!("unreadable: {}", e.kind()).as_bytes()),
    }
}

/// The files `policy::load_dir` reads (same rule: visible `*.yaml`/`*.yml`,
/// symlinks followed, directories skipped), sorted by name.
fn drop_in_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        files.push(path);
    }
    files.sort();
    Ok(files)
}

/// What the watch reports to the daemon's loop.
#[derive(Debug)]
pub enum FsSignal {
    /// Something relevant changed (or the kernel queue overflowed).
    Changed,
    /// The watch itself failed (e.g. the directory was removed).
    Error(String),
}

/// A live inotify watch on the source's directory.
pub struct FsWatch {
    _watcher: RecommendedWatcher,
    identity: Option<(u64, u64)>,
}

impl FsWatch {
    /// Watches `source`'s directory, non-recursive. Events are filtered on
    /// the notify thread and forwarded without blocking: a full channel
    /// already holds a pending "changed", so dropping is lossless.
    pub fn start(source: &Source, tx: mpsc::Sender<FsSignal>) -> notify::Result<FsWatch> {
        let filter = source.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                match res {
                    Ok(ev) => {
                        if matches!(ev.kind, EventKind::Access(_)) {
                            return; // our own reads (IN_OPEN / IN_CLOSE_NOWRITE)
                        }
                        if ev.need_rescan() || ev.paths.iter().any(|p| filter.is_relevant(p)) {
                            let _ = tx.try_send(FsSignal::Changed);
                        }
                    }
                    Err(e) => {
                        let _ = tx.try_send(FsSignal::Error(e.to_string()));
                    }
                }
            })?;
        let dir = source.watch_dir();
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(FsWatch {
            _watcher: watcher,
            identity: source.watch_dir_identity(),
        })
    }

    /// False when the watched path no longer names the watched directory.
    pub fn still_valid(&self, source: &Source) -> bool {
        self.identity.is_some() && self.identity == source.watch_dir_identity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "version: 1\nchains: [{name: a, actions: [count]}]\n";

    #[test]
    fn relevance_of_paths() {
        let d = Source::Dir(PathBuf::from("/etc/emptcp/policy.d"));
        for p in [
            "/etc/emptcp/policy.d",
            "/etc/emptcp/policy.d/10-a.yaml",
            "/etc/emptcp/policy.d/x.yml",
            "/etc/emptcp/policy.d/..data",
            "/etc/emptcp/policy.d/..2024_05_01_12_00_00.1",
        ] {
            assert!(d.is_relevant(Path::new(p)), "{p}");
        }
        for p in [
            "/etc/emptcp/policy.d/.10-a.yaml.swp",
            "/etc/emptcp/policy.d/10-a.yaml~",
            "/etc/emptcp/policy.d/4913",
            "/etc/emptcp/policy.d/.hidden.yaml",
        ] {
            assert!(!d.is_relevant(Path::new(p)), "{p}");
        }
        let f = Source::File(PathBuf::from("/etc/emptcp/policy.yaml"));
        assert_eq!(f.watch_dir(), PathBuf::from("/etc/emptcp"));
        assert!(f.is_relevant(Path::new("/etc/emptcp/policy.yaml")));
        assert!(f.is_relevant(Path::new("/etc/emptcp/..data")));
        assert!(!f.is_relevant(Path::new("/etc/emptcp/other.yaml")));
        assert_eq!(
            Source::File(PathBuf::from("p.yaml")).watch_dir(),
            PathBuf::from(".")
        );
    }

    #[test]
    fn hash_covers_names_content_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let s = Source::Dir(dir.path().to_path_buf());
        let empty = s.hash();
        std::fs::write(dir.path().join("10-a.yaml"), A).unwrap();
        let one = s.hash();
        assert_ne!(one, empty);
        // Files the loader ignores do not change the hash.
        std::fs::write(dir.path().join(".10-a.yaml.swp"), "junk").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "junk").unwrap();
        assert_eq!(s.hash(), one);
        // A rename is a change (same bytes, other name: other merge order).
        std::fs::rename(dir.path().join("10-a.yaml"), dir.path().join("20-a.yaml")).unwrap();
        assert_ne!(s.hash(), one);
        std::fs::remove_file(dir.path().join("20-a.yaml")).unwrap();
        assert_eq!(s.hash(), empty);
        let missing = Source::Dir(dir.path().join("nope"));
        assert_ne!(missing.hash(), empty);
    }

    #[test]
    fn read_loads_what_it_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.yaml");
        std::fs::write(&f, A).unwrap();
        let s = Source::File(f.clone());
        let r = s.read();
        assert_eq!(r.hash, s.hash());
        assert_eq!(r.result.unwrap().chains[0].name, "a");
        std::fs::write(&f, "version: 1\nchains: [{name: a, actions: [nope]}]\n").unwrap();
        let r = s.read();
        let e = r.result.unwrap_err();
        assert_eq!(e.0[0].line, Some(2), "{e}");
    }

    #[test]
    fn a_fifo_in_the_drop_in_directory_neither_blocks_nor_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10-a.yaml"), A).unwrap();
        let fifo = dir.path().join("20-pipe.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR).unwrap();
        let s = Source::Dir(dir.path().to_path_buf());
        // A blocking open of the FIFO would wait for a writer forever.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(s.read()));
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading the drop-in directory blocked on a FIFO");
        let e = r.result.unwrap_err();
        assert!(e.0.iter().any(|e| e.file == fifo), "{e}");
    }
}
