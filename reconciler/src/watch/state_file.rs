//! The daemon's status file: what `emptcp status` shows about the daemon
//! (last reconcile, outcome, last error with file/line/column, policy hash,
//! decider state). One JSON file per bpffs root under the state directory
//! (default `/run/emptcp`), replaced atomically (write beside + rename), so a
//! reader never sees half a file.
use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Default state directory (systemd's `RuntimeDirectory=emptcp`).
pub const DEFAULT_STATE_DIR: &str = "/run/emptcp";
/// Format version of the file (bumped on incompatible changes).
pub const STATE_VERSION: u32 = 1;

/// The file of the daemon that manages `bpffs_root`: a readable name made
/// from the path plus a short hash of it (two roots never share a file).
pub fn path_for(state_dir: &Path, bpffs_root: &Path) -> PathBuf {
    let root = std::path::absolute(bpffs_root).unwrap_or_else(|_| bpffs_root.to_path_buf());
    let text = root.to_string_lossy();
    let text = text.trim_end_matches('/');
    let readable: String = text
        .trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let short = &hex::encode(Sha256::digest(text.as_bytes()))[..8];
    state_dir.join(format!("watch-{readable}-{short}.json"))
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// One located problem (a policy error has file, line and column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Why a reconcile did not converge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// `policy` (parse/semantic), `unsupported` (not in this build's object),
    /// `plan` (e.g. a foreign program), `observe`, `apply`, `lock`.
    pub kind: String,
    /// One-line summary.
    pub message: String,
    /// Every problem, located when it has a place in a file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<ErrorDetail>,
    /// When it was seen (Unix seconds).
    pub at: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyState {
    /// `file` or `dir`.
    pub kind: String,
    pub path: String,
    /// Hash of the newest read of the policy (all drop-in files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_hash: Option<String>,
    /// Hash of the newest valid policy: the one the daemon converges to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_hash: Option<String>,
    /// Hash of the policy the kernel was last converged to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
    /// False while the newest read is invalid (the last good one stays live).
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileState {
    pub at: f64,
    /// What started it: `startup`, `file`, `drift`, `link`, `decider`,
    /// `sighup`, `retry`.
    pub trigger: String,
    /// `applied`, `noop`, `policy_error`, `plan_error`, `apply_error`,
    /// `observe_error`, `lock_busy`, `no_policy`.
    pub outcome: String,
    pub steps: usize,
    pub duration_ms: f64,
    /// The datapath is converged to the target policy (a second plan is empty).
    pub converged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeciderState {
    pub chain: String,
    /// `cpu_usage`.
    pub kind: String,
    pub busy: bool,
    /// CPU usage over the newest interval, percent of all cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usage_percent: Option<f64>,
    pub interval_ms: u64,
    pub busy_above_percent: f64,
    /// Busy ends when usage falls below this (busy_above minus the hysteresis).
    pub calm_below_percent: f64,
    pub recover_at: u64,
    pub busy_recover_at: u64,
    /// The recover_at written to the threshold map now.
    pub recover_at_in_force: u64,
    /// When `busy` last changed (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Reconciles by outcome.
    pub reconciles: BTreeMap<String, u64>,
    pub drift_corrections: u64,
    pub policy_errors: u64,
    pub decider_changes: u64,
}

/// Everything the daemon publishes about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonState {
    pub version: u32,
    pub pid: u32,
    /// False once the daemon has stopped cleanly.
    pub running: bool,
    pub started_at: f64,
    pub updated_at: f64,
    pub bpffs_root: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    pub drift_interval_ms: u64,
    pub debounce_ms: u64,
    pub policy: PolicyState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconcile: Option<ReconcileState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<f64>,
    /// Policy interfaces that do not exist (yet): attached when they appear.
    #[serde(default)]
    pub missing_interfaces: Vec<String>,
    /// Facts the newest plan reported without a step.
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(default)]
    pub deciders: Vec<DeciderState>,
    /// packet_copy rules: armed or not (and why), fired, sent, failures.
    #[serde(default)]
    pub packet_copy: Vec<crate::copy::runner::RuleStatus>,
    pub counters: Counters,
}

/// Writes `state` to `path` atomically (temp file in the same directory,
/// fsync-free rename: /run is tmpfs and a reader only needs atomicity).
pub fn write(path: &Path, state: &DaemonState) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut f, state)?;
        f.write_all(b"\n")?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Reads the daemon's file; `Ok(None)` when there is none.
pub fn read(path: &Path) -> Result<Option<DaemonState>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: not a daemon status file: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Held for the daemon's life: one `emptcp watch` per bpffs root (two
/// would fight over the datapath and the status file).
pub struct DaemonLock {
    _file: std::fs::File,
}

/// Takes the daemon lock beside the status file (`<file>.lock`, flock).
/// `Err(Some(msg))`: another daemon holds it; `Err(None)`: the lock file
/// cannot be created (e.g. a read-only state directory).
pub fn lock_daemon(status_file: &Path) -> Result<DaemonLock, Option<String>> {
    use std::os::unix::fs::DirBuilderExt as _;
    if let Some(dir) = status_file.parent() {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir);
    }
    let path = status_file.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|_| None)?;
    // flock(LOCK_EX | LOCK_NB): it dies with the process.
    if file.try_lock().is_err() {
        let holder = read(status_file)
            .ok()
            .flatten()
            .map(|s| format!(" (pid {})", s.pid))
            .unwrap_or_default();
        return Err(Some(format!(
            "another emptcp watch{holder} manages this bpffs root (lock {} is held); stop it first",
            path.display()
        )));
    }
    Ok(DaemonLock { _file: file })
}

/// True when a process with this pid exists (signal 0 probe).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // No signal: only checks that the process exists (EPERM: it does,
    // owned by someone else).
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// `2024-05-01T12:00:00Z` from Unix seconds (UTC; no time zone database).
pub fn fmt_utc(secs: f64) -> String {
    let s = secs.max(0.0) as i64;
    let (days, rem) = (s.div_euclid(86_400), s.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_readable_and_distinct() {
        let a = path_for(Path::new("/run/emptcp"), Path::new("/sys/fs/bpf/emptcp"));
        let b = path_for(Path::new("/run/emptcp"), Path::new("/sys/fs/bpf/emptcp/"));
        let c = path_for(Path::new("/run/emptcp"), Path::new("/sys/fs/bpf/emptcp-2"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("watch-sys-fs-bpf-emptcp-"), "{name}");
        assert!(name.ends_with(".json"));
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(fmt_utc(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_utc(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(fmt_utc(1_714_564_800.5), "2024-05-01T12:00:00Z");
    }

    #[test]
    fn write_is_atomic_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/watch.json");
        assert_eq!(read(&p).unwrap(), None);
        let s = DaemonState {
            version: STATE_VERSION,
            pid: 1,
            running: true,
            started_at: 1.0,
            updated_at: 2.0,
            bpffs_root: "/sys/fs/bpf/emptcp".into(),
            netns: None,
            metrics_addr: None,
            drift_interval_ms: 30_000,
            debounce_ms: 100,
            policy: PolicyState {
                kind: "dir".into(),
                path: "/etc/emptcp/policy.d".into(),
                read_hash: None,
                target_hash: None,
                applied_hash: None,
                valid: true,
                error: None,
            },
            last_reconcile: None,
            last_success_at: None,
            missing_interfaces: vec![],
            notes: vec![],
            deciders: vec![],
            packet_copy: vec![],
            counters: Counters::default(),
        };
        write(&p, &s).unwrap();
        assert_eq!(read(&p).unwrap(), Some(s));
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }
}
