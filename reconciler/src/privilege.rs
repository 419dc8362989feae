//! Who may change the kernel, and whose bpffs root emptcp pins into.
//!
//! Two checks run before a mutating command (apply, destroy, watch, agent)
//! touches anything:
//! - [`require`]: the process holds CAP_BPF, CAP_NET_ADMIN and
//!   CAP_SYS_ADMIN in its effective set (read from /proc/self/status:
//!   euid 0 is not enough in a container or under a capability-dropping
//!   service manager). Without them an apply would get as far as creating
//!   the root and fail on the first map.
//! - [`check_tree`]: the bpffs root and every layout directory that exists
//!   is a real directory owned by this process's euid and not writable by
//!   group or others. Otherwise another user could unlink or replace a pin
//!   (a program, a link, a state map) between two applies.
//!
//! The kernel tests use [`missing`] too, so "can this run" is decided in
//! one place.
use std::{
    fmt,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::layout::Layout;

/// A capability emptcp needs (numbers from linux/capability.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// Attach XDP/TC programs, change interfaces.
    NetAdmin = 12,
    /// Enter network namespaces (setns), and what CAP_BPF covered
    /// before Linux 5.8.
    SysAdmin = 21,
    /// Create maps, load programs, pin and open pins.
    Bpf = 39,
}

impl Cap {
    pub const REQUIRED: [Cap; 3] = [Cap::Bpf, Cap::NetAdmin, Cap::SysAdmin];

    pub fn name(self) -> &'static str {
        match self {
            Cap::NetAdmin => "CAP_NET_ADMIN",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
            Cap::Bpf => "CAP_BPF",
        }
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The effective capability set of this process, from /proc/self/status.
pub fn effective() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_cap_eff(&status).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "/proc/self/status has no CapEff line",
        )
    })
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The highest capability this kernel knows; CAP_BPF exists from 5.8 on
/// (before that CAP_SYS_ADMIN covers it, so it is not asked for).
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(Cap::Bpf as u32)
}

/// The required capabilities missing from `effective` on a kernel whose
/// highest capability is `last_cap`.
fn missing_from(effective: u64, last_cap: u32) -> Vec<Cap> {
    Cap::REQUIRED
        .into_iter()
        .filter(|c| (*c as u32) <= last_cap)
        .filter(|c| effective & (1u64 << *c as u32) == 0)
        .collect()
}

/// The required capabilities this process lacks (all of them when
/// /proc/self/status cannot be read: nothing is assumed).
pub fn missing() -> Vec<Cap> {
    missing_from(effective().unwrap_or(0), last_cap())
}

fn names(caps: &[Cap]) -> String {
    caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "`emptcp {command}` needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN; this process (euid {euid}) lacks {missing}, so nothing was changed. Run it as root (sudo), or give the service these capabilities (systemd: AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_SYS_ADMIN)",
        missing = names(.missing)
    )]
    Missing {
        command: &'static str,
        euid: u32,
        missing: Vec<Cap>,
    },
    #[error(
        "refusing to use {path}: {problem} (owner uid {owner}, mode {mode:04o}; emptcp runs as uid {euid}). Another user could unlink or replace what emptcp pins there. Fix: check who made it and what it holds (`ls -la {path}`), then `chown {euid} {path} && chmod 0700 {path}`, or remove it if nothing of yours is pinned there"
    )]
    Unsafe {
        path: PathBuf,
        problem: &'static str,
        owner: u32,
        mode: u32,
        euid: u32,
    },
    #[error("checking {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Fails, naming what is missing, unless this process holds every
/// capability a mutating `command` needs.
pub fn require(command: &'static str) -> Result<(), PrivilegeError> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    Err(PrivilegeError::Missing {
        command,
        euid: euid(),
        missing,
    })
}

/// What is wrong with a directory of owner `owner` and `mode` (st_mode)
/// for a process of euid `euid`; None when emptcp may pin into it.
fn problem(owner: u32, mode: u32, euid: u32) -> Option<&'static str> {
    if mode & libc::S_IFMT != libc::S_IFDIR {
        Some("it is not a directory (a symlink or a file)")
    } else if owner != euid {
        Some("it is owned by another user")
    } else if mode & 0o022 != 0 {
        Some("it is writable by group or others")
    } else {
        None
    }
}

/// Checks one path without following a symlink; an absent path is fine
/// (emptcp creates it 0700).
pub fn check_dir(path: &Path) -> Result<(), PrivilegeError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(PrivilegeError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    check_meta(path, &meta)
}

/// Checks an already opened directory (the apply lock's fd): no window
/// between the check and the use.
pub fn check_meta(path: &Path, meta: &std::fs::Metadata) -> Result<(), PrivilegeError> {
    let euid = euid();
    match problem(meta.uid(), meta.mode(), euid) {
        None => Ok(()),
        Some(problem) => Err(PrivilegeError::Unsafe {
            path: path.to_path_buf(),
            problem,
            owner: meta.uid(),
            mode: meta.mode() & 0o7777,
            euid,
        }),
    }
}

/// Checks the root and every layout directory that exists.
pub fn check_tree(layout: &Layout) -> Result<(), PrivilegeError> {
    check_dir(&layout.root)?;
    for d in layout.all_dirs() {
        check_dir(&d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_parsed_from_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1fffeffffff));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn missing_names_each_absent_capability() {
        let all = (1u64 << 39) | (1 << 21) | (1 << 12);
        assert!(missing_from(all, 40).is_empty());
        assert_eq!(missing_from(0, 40), Cap::REQUIRED.to_vec());
        // Root with CAP_BPF dropped from its bounding set: euid 0 is not enough.
        assert_eq!(missing_from(all & !(1 << 39), 40), vec![Cap::Bpf]);
        // Before 5.8 there is no CAP_BPF to ask for.
        assert!(missing_from((1 << 21) | (1 << 12), 38).is_empty());
    }

    #[test]
    fn only_a_private_directory_of_ours_is_accepted() {
        let dir = libc::S_IFDIR;
        assert_eq!(problem(0, dir | 0o700, 0), None);
        assert_eq!(problem(0, dir | 0o755, 0), None);
        assert!(problem(0, dir | 0o777, 0).unwrap().contains("writable"));
        assert!(problem(0, dir | 0o1777, 0).unwrap().contains("writable"));
        assert!(problem(0, dir | 0o720, 0).unwrap().contains("writable"));
        assert!(
            problem(65534, dir | 0o700, 0)
                .unwrap()
                .contains("another user")
        );
        assert!(
            problem(0, libc::S_IFLNK | 0o777, 0)
                .unwrap()
                .contains("not a directory")
        );
    }
}
