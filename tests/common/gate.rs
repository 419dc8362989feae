//! The one gate of every real-kernel test: run, fail, or (only when asked)
//! skip and be counted.
//!
//! A kernel test needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN (the same
//! probe as `emptcp apply`: the effective set, not euid 0). Without them
//! the test FAILS, so a run that could not test the kernel is never
//! green. With `EMPTCP_ALLOW_SKIP=1` it returns false instead, and appends
//! "test<TAB>reason" to the file named by `EMPTCP_SKIP_LOG`, which
//! scripts/test.sh counts and prints at the end (the harness hides a
//! passing test's stderr).
//!
//! Included by tests/common and tests/datapath_common (`#[path]`), so
//! every test binary uses this one copy.
use std::io::Write as _;

pub const ALLOW_SKIP_ENV: &str = "EMPTCP_ALLOW_SKIP";
pub const SKIP_LOG_ENV: &str = "EMPTCP_SKIP_LOG";
pub const RETRY_LOG_ENV: &str = "EMPTCP_RETRY_LOG";
pub const STAND_IN_LOG_ENV: &str = "EMPTCP_STAND_IN_LOG";

/// Why kernel tests cannot run here; None when they can.
fn why_not() -> Option<String> {
    let missing = emptcp::privilege::missing();
    if missing.is_empty() {
        return None;
    }
    let names: Vec<&str> = missing.iter().map(|c| c.name()).collect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    Some(format!(
        "this process lacks {} (euid {euid}, kernel {})",
        names.join(", "),
        kernel.trim()
    ))
}

/// "binary::test": the harness names each test's thread after the test.
fn label(fallback: &str) -> String {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.rsplit_once('-').map_or(s.clone(), |(b, _)| b.to_string()))
        .unwrap_or_default();
    let current = std::thread::current();
    let test = current.name().filter(|n| *n != "main").unwrap_or(fallback);
    format!("{bin}::{test}")
}

/// True when `test` can use the kernel. Otherwise panics (the default),
/// or with the opt-out records the skip and returns false.
/// `test` names it where the harness thread has no name (one test thread).
pub fn kernel_or_skip(test: &str) -> bool {
    match why_not() {
        None => true,
        Some(reason) => {
            skip_or_fail(test, &reason);
            false
        }
    }
}

/// A test that cannot run here for `reason`: panics, unless
/// `EMPTCP_ALLOW_SKIP=1`, then records the skip (for scripts/test.sh's
/// count) and returns, so the caller returns too.
pub fn skip_or_fail(test: &str, reason: &str) {
    let test = label(test);
    if std::env::var(ALLOW_SKIP_ENV).as_deref() != Ok("1") {
        panic!(
            "{test} cannot run here: {reason}. Fix that (kernel tests: run as root, \
             sudo ./scripts/test.sh), or set {ALLOW_SKIP_ENV}=1 to skip it (counted)"
        );
    }
    eprintln!("SKIPPED {test}: {reason}");
    append(SKIP_LOG_ENV, &test, reason);
}

/// A step of a test repeated once after a fault of the kernel that the
/// test recognised (never after one of emptcp): recorded like a skip, in
/// the file named by `EMPTCP_RETRY_LOG`, which scripts/test.sh prints at
/// the end, so a green run shows what it retried.
pub fn record_retry(test: &str, reason: &str) {
    let test = label(test);
    eprintln!("RETRIED {test}: {reason}");
    append(RETRY_LOG_ENV, &test, reason);
}

/// A control the running kernel cannot build, replaced by a stand-in the
/// test names: recorded like a retry, in the file named by
/// `EMPTCP_STAND_IN_LOG`, which scripts/test.sh prints at the end, so a
/// green run shows which controls were not the real one.
pub fn record_stand_in(test: &str, reason: &str) {
    let test = label(test);
    eprintln!("STAND-IN {test}: {reason}");
    append(STAND_IN_LOG_ENV, &test, reason);
}

/// Appends "test<TAB>reason" to the file named by `env`, if set.
fn append(env: &str, test: &str, reason: &str) {
    let Ok(path) = std::env::var(env) else {
        return;
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{env}={path}: {e}"));
    // One short write per line: O_APPEND keeps lines of parallel tests
    // whole.
    f.write_all(format!("{test}\t{reason}\n").as_bytes())
        .unwrap_or_else(|e| panic!("{env}={path}: {e}"));
}
