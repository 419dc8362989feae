//! The two-path MPTCP testbed (tests/mptcp/testbed.sh) as a Rust fixture:
//! `up` in new, uniquely named namespaces, `down` on drop (also on failure).
//!
//!   emptcp-cli<ID>                      emptcp-srv<ID>
//!   cli0 192.0.2.1    <== path A ==>  srv0 192.0.2.2     (first subflow)
//!   cli1 198.51.100.1 <== path B ==>  srv1 198.51.100.2  (announced with ADD_ADDR)
#![allow(dead_code)]

mod deadlock;
pub use deadlock::kernel_receive_deadlock;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Output},
    thread::JoinHandle,
};

pub struct Testbed {
    pub id: String,
    pub cli: String,
    pub srv: String,
    script: PathBuf,
    /// testbed.sh options (LINK_A, LINK_B, IPV6) given to every verb: `xfer`
    /// picks its address family and `down` finds the TUN forwarders by them.
    options: Vec<(String, String)>,
}

impl Testbed {
    pub fn up(tag: &str) -> Testbed {
        Testbed::up_with(tag, &[])
    }

    /// A testbed with testbed.sh options, e.g. `[("LINK_A", "tun"), ("IPV6", "1")]`.
    pub fn up_with(tag: &str, options: &[(&str, &str)]) -> Testbed {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/mptcp/testbed.sh");
        let id = format!("-{tag}");
        let tb = Testbed {
            cli: format!("emptcp-cli{id}"),
            srv: format!("emptcp-srv{id}"),
            id,
            script,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        tb.run(&["up"]);
        // Receivers verify TCP checksums only with TX offload off on the sender.
        tb.run(&["csum-offload", "off"]);
        tb
    }

    /// testbed.sh with this testbed's id and options.
    fn command(&self) -> Command {
        let mut c = Command::new(&self.script);
        c.env("LAB_ID", &self.id).envs(self.options.iter().cloned());
        c
    }

    #[track_caller]
    pub fn run(&self, args: &[&str]) -> String {
        let o = self.command().args(args).output().expect("testbed.sh");
        assert!(
            o.status.success(),
            "testbed.sh {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Absolute MPTcpExt / Tcp counters of the client or the server.
    pub fn counters(&self, side: &str) -> BTreeMap<String, u64> {
        self.run(&["counters", side, "."])
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_string(), it.next()?.parse().ok()?))
            })
            .collect()
    }

    /// One client connection (mptcp_xfer.py client args) that must
    /// succeed; returns its JSON.
    #[track_caller]
    pub fn xfer(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["xfer"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        last_report(&out).unwrap_or_else(|e| panic!("xfer output {out:?}: {e}"))
    }

    /// One client connection that may fail: its JSON report (with `rc`
    /// and, for a stall, the sockets) and what testbed.sh printed on
    /// stderr (the server's sockets after a failure). Panics only when
    /// the client printed no report at all.
    #[track_caller]
    pub fn xfer_report(&self, args: &[&str]) -> (serde_json::Value, String) {
        let o = self
            .command()
            .arg("xfer")
            .args(args)
            .output()
            .expect("testbed.sh");
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        match last_report(&out) {
            Ok(res) => (res, err),
            Err(e) => panic!(
                "testbed.sh xfer {args:?} ({}): no report ({e}): {out}{err}",
                o.status
            ),
        }
    }

    /// One client connection run on its own thread while the test acts on
    /// the live flow; join the handle for the process output.
    pub fn xfer_in_background(&self, args: &[&str]) -> JoinHandle<Output> {
        let mut c = self.command();
        c.arg("xfer").args(args);
        std::thread::spawn(move || c.output().expect("testbed.sh xfer"))
    }
}

/// The client's JSON report: the last line mptcp_xfer.py prints.
fn last_report(out: &str) -> serde_json::Result<serde_json::Value> {
    serde_json::from_str(out.lines().last().unwrap_or_default())
}

/// mptcp_xfer.py client args that hold an upload until the server has
/// announced its addresses: one NOP exchange, then 0.3 s idle, then
/// `payload`. The server's path manager announces from a kernel worker
/// once the connection is fully established; an upload started at once
/// can pass remove_below (1 MiB, under 1 ms here) before that worker ran
/// on a loaded machine, and the announcement then passes unstripped: right
/// for a long connection, but there is nothing left to recover. Not for
/// downloads: the pause made the kernel's receive deadlock
/// (deadlock.rs) several times likelier (2 retries in one suite run and a
/// double, i.e. a failure, in the next, against 1 retry in 6 runs without).
pub fn settled<'a>(payload: &[&'a str]) -> Vec<&'a str> {
    ["--idle-before", "0.3"]
        .into_iter()
        .chain(payload.iter().copied())
        .collect()
}

/// mptcp_xfer.py client args of a long (20 MB) upload that then waits up
/// to `timeout` s for `joins` extra subflows.
pub fn long_upload<'a>(joins: &'a str, timeout: &'a str) -> [&'a str; 6] {
    [
        "--upload",
        "20M",
        "--wait-subflows",
        joins,
        "--wait-timeout",
        timeout,
    ]
}

/// mptcp_xfer.py client args of a short (100 KB) download that gives the
/// server's announcement time to be joined, `joins` extra subflows at most:
/// one NOP exchange, a wait of up to 2 s for the joins, the download, then
/// up to 1 s more. Without the first wait a control is racy under load:
/// the server shuts its side down right after the 100 KB (about 1 ms here),
/// and the kernel opens no subflow for a connection that is no longer
/// established (`__mptcp_subflow_connect` checks
/// `mptcp_is_fully_established`), so an announcement its path manager's
/// worker handled after the server's DATA_FIN was never joined. With emptcp
/// the same connection stays open the same 3 s, so a stripped address that
/// leaked would be joined within it.
pub fn short_download(joins: &str) -> [&str; 10] {
    [
        "--download",
        "100K",
        "--wait-subflows-before",
        joins,
        "--wait-before-timeout",
        "2",
        "--wait-subflows",
        joins,
        "--wait-timeout",
        "1",
    ]
}

/// mptcp_xfer.py client args of a paced request/response connection:
/// `rounds` rounds of 64 KiB each way, 50 ms apart (about 2 s for 40), so
/// the server is still sending while the test changes something under
/// the live connection; `extra` args follow.
pub fn paced<'a>(rounds: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--reqresp",
        rounds,
        "--rr-size",
        "64K",
        "--rr-pause",
        "0.05",
    ];
    args.extend_from_slice(extra);
    args
}

impl Drop for Testbed {
    /// Tears the testbed down; its run directory (testbed.sh's `RUN`: the
    /// server's and the forwarders' logs) goes too, unless the test failed,
    /// when it is kept and named for the reader.
    fn drop(&mut self) {
        let _ = self.command().arg("down").output();
        let tmp = std::env::var_os("TMPDIR")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "/tmp".into());
        let run = PathBuf::from(tmp).join(format!("emptcp-testbed{}", self.id));
        if std::thread::panicking() {
            eprintln!("testbed logs kept in {}", run.display());
        } else {
            let _ = std::fs::remove_dir_all(run);
        }
    }
}

/// A testbed, a private bpffs root and a temp dir for policies: what an
/// end-to-end test needs, removed on drop (also on failure).
pub struct Lab {
    pub tb: Testbed,
    pub root: crate::common::BpfRoot,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new(name: &str) -> Lab {
        Lab::with(name, &[])
    }
    /// A lab whose testbed has testbed.sh options (`Testbed::up_with`).
    pub fn with(name: &str, options: &[(&str, &str)]) -> Lab {
        let t = crate::common::tag(name);
        Lab {
            tb: Testbed::up_with(&t, options),
            root: crate::common::BpfRoot::new(&t),
            dir: tempfile::tempdir().unwrap(),
        }
    }
    /// `emptcp apply` of `policy_text` in the client namespace.
    pub fn apply(&self, policy_text: &str) {
        let f = crate::common::policy_file(&self.dir, "p.yaml", policy_text);
        crate::common::emptcp_ok(
            &self.root.path,
            Some(&self.tb.cli),
            &["apply", "-f", f.to_str().unwrap()],
            0,
        );
    }
    pub fn destroy(&self) {
        crate::common::emptcp_ok(&self.root.path, Some(&self.tb.cli), &["destroy"], 0);
    }
    pub fn root(&self) -> &std::path::Path {
        &self.root.path
    }
}

/// Client counters the end-to-end tests read.
pub const FALLBACK: &str = "MPTcpExtMPCapableDataFallback";
pub const CSUM: &str = "TcpInCsumErrors";

/// Runs one client connection: asserts the data was verified and nothing
/// fell back, returns its JSON and the client counter deltas.
#[track_caller]
pub fn run(lab: &Lab, args: &[&str]) -> (serde_json::Value, impl Fn(&str) -> i64 + use<>) {
    let mut before = lab.tb.counters("cli");
    let (mut res, mut server) = lab.tb.xfer_report(args);
    // The kernel's receive deadlock (deadlock.rs), recognised by every
    // sign of it in the stall report: the transfer once more, counted.
    if let Some(why) = kernel_receive_deadlock(&res) {
        crate::common::record_retry(
            "transfer",
            &format!("{args:?}: kernel MPTCP receive deadlock: {why}"),
        );
        before = lab.tb.counters("cli");
        (res, server) = lab.tb.xfer_report(args);
    }
    let after = lab.tb.counters("cli");
    assert_eq!(
        res["rc"], 0,
        "transfer {args:?} failed or data corrupted: {res}\n{server}"
    );
    assert_eq!(
        res["mptcp_info"]["fallback"], false,
        "connection fell back to TCP: {res}"
    );
    (res, move |n: &str| delta(&before, &after, n))
}

/// No fallback to TCP and no TCP checksum error on the client.
pub fn no_damage(d: &impl Fn(&str) -> i64) {
    assert_eq!(d(FALLBACK), 0, "MPTCP fell back to TCP");
    assert_eq!(d(CSUM), 0, "the client saw TCP checksum errors");
}

/// `after - before` for one counter.
pub fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) -> i64 {
    after.get(name).copied().unwrap_or(0) as i64 - before.get(name).copied().unwrap_or(0) as i64
}

/// Every counter that moved between two snapshots, `name +n` each: what a
/// failure message shows, so a kernel that dropped the packet for another
/// reason (PAWS, a bad checksum, an old ACK) says which.
pub fn moved(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    after
        .keys()
        .filter_map(|n| {
            let d = delta(before, after, n);
            (d != 0).then(|| format!("{n} {d:+}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The flags the client's `--subflow-flags` reported for the subflow whose
/// local address starts with `local`.
pub fn reported_flags<'a>(res: &'a serde_json::Value, local: &str) -> &'a str {
    res["subflow_flags"]
        .as_object()
        .unwrap_or_else(|| panic!("no subflow_flags: {res}"))
        .iter()
        .find(|(k, _)| k.starts_with(local))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no subflow from {local} in subflow_flags: {res}"))
}

/// Linux >= 6.18 re-sends an unechoed ADD_ADDR after about one RTO
/// (adaptive ADD_ADDR retransmission); once a connection is past
/// remove_below that copy passes, and a control would join by the
/// server's own doing. `add_addr_timeout=0` turns those retransmissions
/// off in the server namespace, so only emptcp can deliver the address.
pub fn no_server_add_addr_retransmissions(lab: &Lab) {
    crate::common::must(&format!(
        "ip netns exec {} sysctl -qw net.mptcp.add_addr_timeout=0",
        lab.tb.srv
    ));
}

/// Where an announcement went, for the message of a failed join: the
/// server's ADD_ADDR counters since `srv_before` and the client's (`d`).
pub fn add_addr_trace(
    lab: &Lab,
    srv_before: &BTreeMap<String, u64>,
    d: &impl Fn(&str) -> i64,
) -> String {
    let srv_after = lab.tb.counters("srv");
    let server = [
        "MPTcpExtAddAddrTx",
        "MPTcpExtAddAddrTxDrop",
        "MPTcpExtEchoAdd",
    ]
    .map(|n| format!("{n} {}", delta(srv_before, &srv_after, n)));
    let client = [
        "MPTcpExtAddAddr",
        "MPTcpExtAddAddrDrop",
        "MPTcpExtMPJoinSynTx",
    ]
    .map(|n| format!("{n} {}", d(n)));
    format!(
        "server: {}; client: {}",
        server.join(", "),
        client.join(", ")
    )
}

/// What the datapath counted (status `datapath_events`).
pub fn datapath_event(lab: &Lab, name: &str) -> u64 {
    let s = crate::common::status_json(lab.root(), &lab.tb.cli);
    s["datapath_events"][name].as_u64().unwrap_or(0)
}

/// Kernel log lines that report an skb whose CHECKSUM_COMPLETE sum was
/// wrong ("hw csum failure"), machine-wide.
pub fn hw_csum_failures() -> usize {
    crate::common::must("dmesg")
        .matches("hw csum failure")
        .count()
}

/// Takes the in-kernel recovery away, as on an interface where it cannot
/// run: each client interface's TC ingress link is detached at once
/// (BPF_LINK_DETACH) and its pin removed. Removing the pin alone releases
/// the link from a kernel workqueue, which a machine with every core busy
/// ran late: the download that followed was still recovered in the
/// kernel, and the agent got no event.
pub fn remove_kernel_recovery(lab: &Lab) {
    for dev in ["cli0", "cli1"] {
        let pin = lab.root().join("links/tc-ingress").join(dev);
        let fd = emptcp::sys::obj_get(&pin).unwrap_or_else(|e| panic!("{}: {e}", pin.display()));
        emptcp::sys::link_detach(&fd).unwrap_or_else(|e| panic!("detach {}: {e}", pin.display()));
        std::fs::remove_file(&pin).unwrap_or_else(|e| panic!("{}: {e}", pin.display()));
    }
}

/// [`run`], once more (counted, `step` names it) when the address was not
/// held back: on a loaded machine the server's path manager (a kernel
/// worker) can announce after the download passed remove_below (1 MiB:
/// 1-7 ms here); the address then passes unstripped, as it should for a
/// long connection, and the run proves nothing. (A pause before the
/// download avoids it but made the kernel receive deadlock several times
/// likelier.)
pub fn run_with_the_address_held(
    lab: &Lab,
    args: &[&str],
    step: &str,
) -> (serde_json::Value, impl Fn(&str) -> i64 + use<>) {
    let stored = datapath_event(lab, "add_addr_stored");
    let (mut res, mut d) = run(lab, args);
    let held = datapath_event(lab, "add_addr_stored");
    if held == stored {
        crate::common::record_retry(
            step,
            &format!("{args:?}: the announcement came after remove_below"),
        );
        (res, d) = run(lab, args);
        let again = datapath_event(lab, "add_addr_stored");
        assert!(again > held, "{step}: the announcement came late twice");
    }
    (res, d)
}

/// A pure download (`args`) recovered by `emptcp agent` alone: the
/// in-kernel recovery is taken away first. The agent got the datapath's
/// event and injected without failure, the kernel path delivered nothing,
/// and the client joined during the download (the subflow count is read
/// right after the last byte, before the client closes).
pub fn agent_recovers_download(lab: &Lab, args: &[&str]) {
    remove_kernel_recovery(lab);
    let kernel = datapath_event(lab, "add_addr_recovered_kernel");
    let agent = Agent::start(lab);
    // Nothing would be left for the agent (seen once in CI: no event).
    let (res, d) = run_with_the_address_held(lab, args, "agent");
    let stats = agent.stop();
    eprintln!("agent: {stats}");
    let count = |k: &str| stats[k].as_u64().unwrap_or_else(|| panic!("{k}: {stats}"));
    assert!(
        count("events") >= 1,
        "the agent got no event: {stats}; datapath: {} packets without room, {} inserted",
        datapath_event(lab, "recover_pending_no_room"),
        datapath_event(lab, "add_addr_recovered")
    );
    assert!(
        count("injected") >= 1,
        "the agent injected nothing: {stats}"
    );
    assert_eq!(count("failed"), 0, "injections failed: {stats}");
    assert_eq!(
        datapath_event(lab, "add_addr_recovered_kernel"),
        kernel,
        "a kernel delivery without the link"
    );
    let subflows = res["mptcp_info"]["subflows"].as_u64().unwrap_or(0);
    assert_eq!(subflows, 1, "agent: no join during the download: {res}");
    assert_eq!(
        d("MPTcpExtMPJoinSynAckRx"),
        1,
        "agent: second subflow not established: {res}"
    );
    no_damage(&d);
}

/// A background `emptcp agent` in the client namespace, killed on drop
/// even when the test fails. Its log (stderr, JSON lines) is collected by
/// a reader thread.
pub struct Agent {
    child: Option<std::process::Child>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    /// Starts it and waits until it says it runs ("recovery agent
    /// running": its maps are open and it polls the ring buffer; an event
    /// raised before that waits in the ring and is drained at the first
    /// poll). No fixed sleep: with every core busy, start-up took longer
    /// than the 300 ms once assumed, and a 100 MB download was over before
    /// the agent looked. 30 s: only a broken agent takes that long.
    pub fn start(lab: &Lab) -> Agent {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(crate::common::emptcp_bin())
            .args(["--bpffs-root", lab.root().to_str().unwrap()])
            .args(["--netns", &lab.tb.cli, "--log-format", "json", "agent"])
            .env("EMPTCP_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let lines = log.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("recovery agent running") {
                    let _ = ready_tx.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let agent = Agent {
            child: Some(child),
            log,
            reader: Some(reader),
        };
        if ready
            .recv_timeout(std::time::Duration::from_secs(30))
            .is_err()
        {
            panic!(
                "the agent did not start within 30 s:\n{}",
                agent.log.lock().unwrap().join("\n")
            );
        }
        agent
    }

    /// Stops it with SIGTERM and returns its own counters (the fields of
    /// its "recovery agent stopped" line: events, injected, failed, stale).
    pub fn stop(mut self) -> serde_json::Value {
        let mut child = self.child.take().unwrap();
        crate::common::must(&format!("kill -TERM {}", child.id()));
        let _ = child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let log = self.log.lock().unwrap().join("\n");
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["fields"]["message"] == "recovery agent stopped")
            .map(|l| l["fields"].clone())
            .unwrap_or_else(|| panic!("the agent did not report its counters:\n{log}"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
