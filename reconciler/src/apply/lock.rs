//! One apply at a time: an exclusive flock on the bpffs root directory.
//! (bpffs holds no regular files, but any directory can be flock'ed.) The
//! lock dies with the process, so a killed apply never leaves it stuck.
use std::{fs::File, path::Path};

use crate::{
    layout::Layout,
    privilege::{self, PrivilegeError},
};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("creating bpffs root {path} (is bpffs mounted on /sys/fs/bpf, and are you root?)")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "another emptcp apply holds the lock on {0}; wait for it, or find it with `fuser -v {0}`"
    )]
    Busy(String),
    /// The root or a layout directory belongs to someone else or is
    /// writable by others (privilege.rs says why that matters).
    #[error(transparent)]
    Unsafe(#[from] PrivilegeError),
    #[error("locking {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub struct Lock {
    _dir: File,
}

/// Creates the root (mode 0700) if needed and locks it without waiting.
/// Refuses, before creating or changing anything, a root or layout
/// directory that another user owns or could write to.
pub fn acquire(root: &Path) -> Result<Lock, LockError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let path = root.display().to_string();
    privilege::check_dir(root)?;
    if !root.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|source| LockError::Create {
                path: path.clone(),
                source,
            })?;
    }
    let dir = File::open(root).map_err(|source| LockError::Io {
        path: path.clone(),
        source,
    })?;
    // Checked again on the opened fd: what is locked is what was checked.
    let meta = dir.metadata().map_err(|source| LockError::Io {
        path: path.clone(),
        source,
    })?;
    privilege::check_meta(root, &meta)?;
    privilege::check_tree(&Layout::new(root))?;
    // flock(LOCK_EX | LOCK_NB) on Linux.
    match dir.try_lock() {
        Ok(()) => Ok(Lock { _dir: dir }),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Busy(path)),
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second apply on the same root is refused at once, naming the
    /// root; the lock is free again when the first one ends.
    #[test]
    fn one_apply_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let first = acquire(&root).expect("first lock");
        match acquire(&root) {
            Err(LockError::Busy(p)) => assert_eq!(p, root.display().to_string()),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("two locks on one root"),
        }
        drop(first);
        acquire(&root).expect("free again");
    }
}
