//! `--netns NAME`: move this process into the network namespace
//! `/run/netns/NAME` (only the network namespace: the host's bpffs stays
//! visible, unlike `ip netns exec` which remounts /sys).
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path} (does `ip netns list` show it?)")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("entering network namespace {path} (needs CAP_SYS_ADMIN)")]
    Enter { path: PathBuf, source: nix::Error },
}

/// Must run before any thread is spawned: setns applies to the calling
/// thread only.
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let path = if name.contains('/') {
        PathBuf::from(name)
    } else {
        PathBuf::from("/run/netns").join(name)
    };
    let f = std::fs::File::open(&path).map_err(|source| NetnsError::Open {
        path: path.clone(),
        source,
    })?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|source| NetnsError::Enter { path, source })
}

/// The inode number of this thread's network namespace (what `ip netns
/// identify` and `ls -l /proc/PID/ns/net` show as `net:[N]`). Unique among
/// the namespaces that exist.
pub fn current_inode() -> std::io::Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino() as u32)
}

/// Whether a network namespace with inode `inode` still exists: held by a
/// process or by a name under /run/netns (a namespace nothing holds is
/// gone, and the kernel may give its number to a new one).
pub fn exists(inode: u32) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let is = |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.ino() as u32 == inode);
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| is(&e.path()));
    named
        || std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .any(|e| is(&e.path().join("ns/net")))
}
