//! Prometheus metrics of the daemon (`--metrics ADDR`): the daemon's own
//! series are recorded as things happen (through the `metrics` facade);
//! the datapath's counters are read from the pinned per-CPU maps when
//! scraped, so an idle daemon with nobody scraping does no map I/O.
//!
//! The HTTP side is deliberately tiny (HTTP/1.0-style, one request per
//! connection): `GET /metrics`, `GET /healthz`, `GET /readyz`. The listener
//! is bound before the daemon enters `--netns`, so it lives in the network
//! namespace emptcp was started in.
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData, PerCpuArray};
use emptcp_common::{ChainCounters, ChainDef, FLOW_STAT_NAMES, FLOW_STATS_LEN, FlowStat};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    codec,
    layout::Layout,
    table_fill::{self, TableFill},
};

pub const RECONCILES: &str = "emptcp_reconciles_total";
pub const RECONCILE_SECONDS: &str = "emptcp_reconcile_duration_seconds";
pub const LAST_RECONCILE: &str = "emptcp_last_reconcile_timestamp_seconds";
pub const LAST_SUCCESS: &str = "emptcp_last_successful_reconcile_timestamp_seconds";
pub const CONVERGED: &str = "emptcp_converged";
pub const DRIFT: &str = "emptcp_drift_corrections_total";
pub const POLICY_ERRORS: &str = "emptcp_policy_errors_total";
pub const POLICY_VALID: &str = "emptcp_policy_valid";
pub const POLICY_READS: &str = "emptcp_policy_reads_total";
pub const POLICY_INFO: &str = "emptcp_policy_info";
pub const MISSING_IFACES: &str = "emptcp_interfaces_missing";
pub const DECIDER_BUSY: &str = "emptcp_decider_busy";
pub const DECIDER_USAGE: &str = "emptcp_decider_cpu_usage_percent";
pub const DECIDER_RECOVER_AT: &str = "emptcp_decider_recover_at_bytes";
pub const DECIDER_CHANGES: &str = "emptcp_decider_changes_total";
pub const PACKETS: &str = "emptcp_datapath_packets_total";
pub const CHAIN_PACKETS: &str = "emptcp_chain_packets_total";
pub const CHAIN_BYTES: &str = "emptcp_chain_bytes_total";
pub const FLOWS: &str = "emptcp_flows_tracked";
pub const TABLE_ENTRIES: &str = "emptcp_connection_table_entries";
pub const TABLE_CAPACITY: &str = "emptcp_connection_table_capacity";
pub const EVENTS: &str = "emptcp_datapath_events_total";
pub const STRIPPED: &str = "emptcp_add_addr_stripped_total";
pub const RECOVERED: &str = "emptcp_add_addr_recovered_total";
pub const BUILD_INFO: &str = "emptcp_build_info";
pub const EGRESS_EVENTS: &str = "emptcp_egress_events_total";
pub const COPY_SENT: &str = "emptcp_packet_copy_sent_total";
pub const COPY_FAILURES: &str = "emptcp_packet_copy_send_failures_total";
pub const COPY_FIRED: &str = "emptcp_packet_copy_fired_total";
pub const COPY_CLOSED: &str = "emptcp_packet_copy_closed_before_firing_total";
pub const COPY_RATE_LIMITED: &str = "emptcp_packet_copy_rate_limited_total";

/// Installs the global recorder; returns the handle that renders it.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(RECONCILE_SECONDS.into()),
            &[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        )?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Counters exist (at 0) from the start, so rate() and alerts work
    // before the first event.
    for outcome in [
        "applied",
        "noop",
        "policy_error",
        "plan_error",
        "apply_error",
        "observe_error",
        "lock_busy",
        "lock_error",
        "no_policy",
    ] {
        counter!(RECONCILES, "outcome" => outcome).increment(0);
    }
    counter!(DRIFT).increment(0);
    counter!(POLICY_ERRORS).increment(0);
    counter!(DECIDER_CHANGES).increment(0);
    Ok(handle)
}

fn describe() {
    describe_counter!(
        EGRESS_EVENTS,
        "Egress hook events (captures, MP_PRIO inserts and skips, events_lost: SUBFLOW_EVENTS was full)."
    );
    describe_counter!(
        COPY_FIRED,
        "packet_copy rule firings (a subflow met the rule's condition)."
    );
    describe_counter!(
        COPY_SENT,
        "Forged control packets sent through AF_XDP, per packet_copy rule."
    );
    describe_counter!(
        COPY_FAILURES,
        "Forged control packets that could not be built or sent, per packet_copy rule."
    );
    describe_counter!(
        COPY_CLOSED,
        "Subflows whose connection closed before their packet_copy rule fired (nothing was sent for them)."
    );
    describe_counter!(
        COPY_RATE_LIMITED,
        "packet_copy firings held back by the per-rule send budget."
    );
    describe_counter!(
        RECONCILES,
        "Reconciles by outcome (applied, noop, policy_error, plan_error, apply_error, observe_error, lock_busy, no_policy)."
    );
    describe_histogram!(
        RECONCILE_SECONDS,
        Unit::Seconds,
        "Duration of reconciles that reached the kernel (observe + plan + apply + verify)."
    );
    describe_gauge!(
        LAST_RECONCILE,
        Unit::Seconds,
        "Unix time of the newest reconcile."
    );
    describe_gauge!(
        LAST_SUCCESS,
        Unit::Seconds,
        "Unix time of the newest reconcile that left the datapath converged."
    );
    describe_gauge!(
        CONVERGED,
        "1 when the datapath is converged to the target policy, else 0."
    );
    describe_counter!(
        DRIFT,
        "Reconciles that changed the kernel although neither the policy nor a decider had changed (drift healed)."
    );
    describe_counter!(
        POLICY_ERRORS,
        "Reads of a new policy that failed to parse or validate (the last good policy stays live)."
    );
    describe_gauge!(
        POLICY_VALID,
        "0 while the newest policy read is invalid, else 1."
    );
    describe_counter!(
        POLICY_READS,
        "Reads of the policy source, by whether its hash changed."
    );
    describe_gauge!(
        POLICY_INFO,
        "1 for the hash (sha256 prefix) of the policy being converged to, 0 for earlier ones."
    );
    describe_gauge!(MISSING_IFACES, "Policy interfaces that do not exist (yet).");
    describe_gauge!(
        DECIDER_BUSY,
        "1 while a cpu_usage decider holds its chain at busy_recover_at."
    );
    describe_gauge!(
        DECIDER_USAGE,
        "CPU usage over the decider's newest interval, percent."
    );
    describe_gauge!(
        DECIDER_RECOVER_AT,
        Unit::Bytes,
        "recover_at in force for the chain."
    );
    describe_counter!(DECIDER_CHANGES, "Busy/calm flips of the deciders.");
    describe_counter!(
        PACKETS,
        "Packets per eBPF program and outcome (STATS map, summed over CPUs)."
    );
    describe_counter!(
        CHAIN_PACKETS,
        "Packets counted per chain (CHAIN_STATS map)."
    );
    describe_counter!(
        CHAIN_BYTES,
        Unit::Bytes,
        "Bytes counted per chain (CHAIN_STATS map)."
    );
    describe_gauge!(
        FLOWS,
        "Flows in the FLOWS table (0 without one); counted at most every 30 s."
    );
    describe_gauge!(
        TABLE_ENTRIES,
        "Entries of each connection table (FLOWS, TOKENS, JOINS, FLOW_ADDRS); counted at most every 30 s."
    );
    describe_gauge!(
        TABLE_CAPACITY,
        "Capacity (max_entries) of each connection table; near it the LRU evicts tracked connections."
    );
    describe_counter!(
        EVENTS,
        "Datapath events (FLOW_STATS map, summed over CPUs)."
    );
    describe_counter!(
        STRIPPED,
        "ADD_ADDR options stripped (overwritten with NOPs or dropped with their pure ACK)."
    );
    describe_counter!(RECOVERED, "Stored ADD_ADDR options re-inserted.");
    describe_gauge!(BUILD_INFO, "Build information.");
}

/// Liveness and readiness, shared by the loop, the watchdog and the HTTP
/// server. The loop only blocks inside a converge; a converge that takes
/// longer than `max_converge` counts as hung.
#[derive(Debug)]
pub struct Health {
    /// Set after the first converge attempt.
    pub ready: AtomicBool,
    /// Unix seconds when the running converge started; 0 when idle.
    busy_since: AtomicU64,
    max_converge: Duration,
}

impl Health {
    pub fn new(max_converge: Duration) -> Health {
        Health {
            ready: AtomicBool::new(false),
            busy_since: AtomicU64::new(0),
            max_converge,
        }
    }
    pub fn busy(&self, busy: bool) {
        let v = if busy {
            (super::state_file::now_unix() as u64).max(1)
        } else {
            0
        };
        self.busy_since.store(v, Ordering::Relaxed);
    }
    /// False when a converge has been running for too long.
    pub fn alive(&self) -> bool {
        let since = self.busy_since.load(Ordering::Relaxed);
        let now = super::state_file::now_unix() as u64;
        since == 0 || now.saturating_sub(since) <= self.max_converge.as_secs()
    }
}

/// The connection tables' fill, counted at most every
/// [`TABLE_FILL_MAX_AGE`] (a count reads every entry).
#[derive(Default)]
struct TableFillCache {
    at: Option<Instant>,
    tables: Vec<TableFill>,
}

const TABLE_FILL_MAX_AGE: Duration = Duration::from_secs(30);

fn open(layout: &Layout, name: &str) -> Option<Map> {
    let md = MapData::from_pin(layout.map(name)).ok()?;
    Map::from_map_data(md).ok()
}

fn sum_row(m: &PerCpuArray<MapData, u64>, idx: u32) -> u64 {
    m.get(&idx, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

/// Reads the datapath counters into the registry. Blocking (map syscalls).
fn collect_datapath(layout: &Layout, flows: &Mutex<TableFillCache>) {
    for (prog, outcomes) in crate::counters::program_counters(layout) {
        for (outcome, v) in outcomes {
            counter!(PACKETS, "program" => prog.clone(), "outcome" => outcome).absolute(v);
        }
    }
    let names: BTreeMap<u32, String> = open(layout, "CHAINS")
        .and_then(|m| Array::<MapData, ChainDef>::try_from(m).ok())
        .and_then(|a| codec::chains_in(&a).ok())
        .map(|m| {
            m.into_iter()
                .map(|(id, def)| (id, codec::chain_from_kernel(&def).name))
                .collect()
        })
        .unwrap_or_default();
    if let Some(m) = open(layout, "CHAIN_STATS")
        .and_then(|m| PerCpuArray::<MapData, ChainCounters>::try_from(m).ok())
    {
        for (id, name) in &names {
            let (p, b) = m
                .get(id, 0)
                .map(|v| {
                    v.iter()
                        .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes))
                })
                .unwrap_or((0, 0));
            counter!(CHAIN_PACKETS, "chain" => name.clone()).absolute(p);
            counter!(CHAIN_BYTES, "chain" => name.clone()).absolute(b);
        }
    }
    if let Some(m) = open(layout, "FLOW_STATS").and_then(|m| PerCpuArray::try_from(m).ok()) {
        let mut v = [0u64; FLOW_STATS_LEN as usize];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = sum_row(&m, i as u32);
            counter!(EVENTS, "event" => FLOW_STAT_NAMES[i]).absolute(*slot);
        }
        counter!(STRIPPED).absolute(
            v[FlowStat::AddAddrNopped as usize] + v[FlowStat::AddAddrDroppedPureAck as usize],
        );
        counter!(RECOVERED).absolute(v[FlowStat::AddAddrRecovered as usize]);
    } else {
        counter!(STRIPPED).absolute(0);
        counter!(RECOVERED).absolute(0);
    }
    // Egress hook: captures, inserts, and `events_lost` (SUBFLOW_EVENTS full).
    for (name, v) in crate::counters::egress_counters(layout) {
        counter!(EGRESS_EVENTS, "event" => name).absolute(v);
    }
    let mut fc = flows.lock().unwrap_or_else(|e| e.into_inner());
    if fc.at.is_none_or(|t| t.elapsed() >= TABLE_FILL_MAX_AGE) {
        // An unreadable table shows as absent until the next count.
        fc.tables = table_fill::connection_tables(layout).unwrap_or_default();
        fc.at = Some(Instant::now());
    }
    let flows_tracked = fc.tables.iter().find(|t| t.name == "FLOWS");
    gauge!(FLOWS).set(flows_tracked.map_or(0.0, |t| t.entries as f64));
    for t in &fc.tables {
        gauge!(TABLE_ENTRIES, "table" => t.name.clone()).set(t.entries as f64);
        gauge!(TABLE_CAPACITY, "table" => t.name.clone()).set(f64::from(t.capacity));
    }
}

/// Serves `/metrics`, `/healthz`, `/readyz` on `listener` until the task is
/// dropped.
pub async fn serve(
    listener: std::net::TcpListener,
    handle: PrometheusHandle,
    layout: Layout,
    health: Arc<Health>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|_| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics listener unusable");
            return;
        }
    };
    let flows = Arc::new(Mutex::new(TableFillCache::default()));
    // At most a few scrapes at once: a slow client cannot pile up tasks.
    let slots = Arc::new(tokio::sync::Semaphore::new(4));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream); // busy: the scraper retries
            continue;
        };
        let (handle, layout, health, flows) = (
            handle.clone(),
            layout.clone(),
            health.clone(),
            flows.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                respond(stream, handle, layout, health, flows),
            )
            .await;
        });
    }
}

async fn respond(
    mut stream: tokio::net::TcpStream,
    handle: PrometheusHandle,
    layout: Layout,
    health: Arc<Health>,
    flows: Arc<Mutex<TableFillCache>>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 8192 {
            return reply(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return reply(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
        )
        .await;
    }
    let (status, ctype, body) = match path {
        "/metrics" => {
            let l = layout.clone();
            let f = flows.clone();
            let _ = tokio::task::spawn_blocking(move || collect_datapath(&l, &f)).await;
            handle.run_upkeep();
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                handle.render(),
            )
        }
        "/healthz" => {
            if health.alive() {
                ("200 OK", "text/plain", "ok\n".to_string())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "a converge has been running for too long\n".to_string(),
                )
            }
        }
        "/readyz" => {
            if health.ready.load(Ordering::Relaxed) {
                ("200 OK", "text/plain", "ready\n".to_string())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "starting\n".to_string(),
                )
            }
        }
        "/" => (
            "200 OK",
            "text/plain",
            "emptcp watch: /metrics /healthz /readyz\n".to_string(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let body = if method == "HEAD" {
        String::new()
    } else {
        body
    };
    reply(&mut stream, status, ctype, &body).await
}

async fn reply(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The packet-copy rules' counters (from the packet-copy thread's report).
pub fn packet_copy(rules: &[crate::copy::runner::RuleStatus]) {
    for r in rules {
        counter!(COPY_FIRED, "rule" => r.name.clone()).absolute(r.fired);
        counter!(COPY_SENT, "rule" => r.name.clone()).absolute(r.sent);
        counter!(COPY_FAILURES, "rule" => r.name.clone()).absolute(r.send_failures);
        counter!(COPY_CLOSED, "rule" => r.name.clone()).absolute(r.closed_before_firing);
        counter!(COPY_RATE_LIMITED, "rule" => r.name.clone()).absolute(r.rate_limited);
    }
}
