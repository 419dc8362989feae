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
