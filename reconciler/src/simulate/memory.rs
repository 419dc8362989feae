//! The replay's own memory: what a replay of a long capture must keep
//! bounded (by the connections it holds, not by the capture's length).
//! The process's lifetime peak would be the set-up's (loading and
//! verifying the object), so the peak is reset when the replay starts.

/// Resets the process's peak resident memory to its current value (Linux
/// `/proc/self/clear_refs` "5") and returns that value, in bytes. A kernel
/// without the reset leaves the lifetime peak, which only overstates.
pub fn reset_peak() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:") * 1024
}

/// The peak resident memory since [`reset_peak`], in bytes (`VmHWM`).
pub fn peak() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    parse_kib(&status, field).unwrap_or(0)
}

fn parse_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_reset_to_the_current_size_and_read_back() {
        let start = reset_peak();
        assert!(start > 0, "VmRSS read as 0");
        // 64 MiB touched: the peak must see it.
        let v = vec![1u8; 64 << 20];
        std::hint::black_box(&v);
        assert!(peak() >= start + (60 << 20), "{} vs {start}", peak());
        drop(v);
        assert_eq!(
            parse_kib("Name:\tx\nVmHWM:\t   1234 kB\n", "VmHWM:"),
            Some(1234)
        );
    }
}
