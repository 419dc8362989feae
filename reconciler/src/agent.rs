//! The recovery agent: delivers stored ADD_ADDR options that the datapath
//! could not re-insert because no received packet had room for them (a pure
//! download: every server segment carries timestamps and a full DSS).
//!
//! `recover_add_addr` reports such a flow on the `EVENTS` ring buffer. The
//! agent reads the flow's newest state from `FLOWS` (the client's rcv_nxt,
//! the ack, window, timestamps and MACs of the newest server segment), forges
//! the duplicate ACK the server would have sent with the option in it
//! (`packet::build_ack`), and hands it to the local stack with
//! BPF_PROG_RUN live frames: an XDP_PASS program run on the frame with
//! `ingress_ifindex` = the flow's interface injects it as if received there.
//! The client accepts it when its seq is exactly rcv_nxt, hence "newest".
//!
//! Runs inside `emptcp watch`, or alone as `emptcp agent`.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData, RingBuf};
use emptcp_common::{AddrKey, FLOW_TS_SEEN, FlowKey, FlowState, RecoverEvent, StoredAddAddr};

use crate::{
    layout::Layout,
    packet::{ACK, AckSpec, build_ack},
    sys,
};

/// What the agent did, for status and metrics.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub events: AtomicU64,
    pub injected: AtomicU64,
    pub failed: AtomicU64,
    /// Events for flows that were gone (closed or evicted) by then.
    pub stale: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("opening pinned map {0}: is the datapath applied under this bpffs root?")]
    Map(String, #[source] aya::maps::MapError),
    #[error("loading the live-frame injector program")]
    Injector(#[source] io::Error),
}

/// Builds the frame for one stored option of one flow, as the peer would
/// have sent it: from remote to local, seq = the client's rcv_nxt.
pub fn frame_for(key: &FlowKey, f: &FlowState, option: &[u8]) -> Option<Vec<u8>> {
    let ip = |a: &[u8; 16]| -> std::net::IpAddr {
        if key.family == 6 {
            std::net::Ipv6Addr::from(*a).into()
        } else {
            std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()
        }
    };
    let mut options = Vec::with_capacity(40);
    // Timestamps help PAWS accept it; only when they fit beside the option.
    if f.flags & FLOW_TS_SEEN != 0 && option.len() + 12 <= 40 {
        options.extend_from_slice(&[1, 1, 8, 10]);
        options.extend_from_slice(&f.tsval.to_be_bytes());
        options.extend_from_slice(&f.tsecr.to_be_bytes());
    }
    options.extend_from_slice(option);
    let mut dst_mac = [0u8; 6];
    let mut src_mac = [0u8; 6];
    dst_mac.copy_from_slice(&f.mac[..6]);
    src_mac.copy_from_slice(&f.mac[6..]);
    build_ack(&AckSpec {
        src_mac,
        dst_mac,
        src: ip(&key.remote),
        dst: ip(&key.local),
        sport: key.remote_port,
        dport: key.local_port,
        seq: f.rcv_nxt,
        ack: f.ack,
        window: f.window,
        options,
        ttl: 64,
        vlan_tci: (f.vlan_tci != 0).then_some(f.vlan_tci),
        flags: ACK,
        payload: Vec::new(),
    })
    .ok()
}

pub struct Agent {
    events: RingBuf<MapData>,
    flows: HashMap<MapData, FlowKey, FlowState>,
    addrs: HashMap<MapData, AddrKey, StoredAddAddr>,
    injector: OwnedFd,
    pub stats: Arc<AgentStats>,
}

fn open(layout: &Layout, name: &str) -> Result<Map, AgentError> {
    let md = MapData::from_pin(layout.map(name)).map_err(|e| AgentError::Map(name.into(), e))?;
    Map::from_map_data(md).map_err(|e| AgentError::Map(name.into(), e))
}

impl Agent {
    pub fn open(layout: &Layout) -> Result<Agent, AgentError> {
        fn err(n: &'static str) -> impl Fn(aya::maps::MapError) -> AgentError {
            move |e| AgentError::Map(n.to_string(), e)
        }
        Ok(Agent {
            events: RingBuf::try_from(open(layout, "EVENTS")?).map_err(err("EVENTS"))?,
            flows: HashMap::try_from(open(layout, "FLOWS")?).map_err(err("FLOWS"))?,
            addrs: HashMap::try_from(open(layout, "FLOW_ADDRS")?).map_err(err("FLOW_ADDRS"))?,
            injector: sys::load_xdp_pass("emptcp_inject").map_err(AgentError::Injector)?,
            stats: Arc::default(),
        })
    }

    /// Handles every queued event; returns how many.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        loop {
            let ev = {
                let Some(item) = self.events.next() else {
                    break;
                };
                n += 1;
                if item.len() < std::mem::size_of::<RecoverEvent>() {
                    continue;
                }
                // SAFETY: the datapath writes a RecoverEvent (repr(C), Pod).
                unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<RecoverEvent>()) }
            };
            self.stats.events.fetch_add(1, Ordering::Relaxed);
            self.handle(&ev);
        }
        n
    }

    fn handle(&self, ev: &RecoverEvent) {
        let Ok(flow) = self.flows.get(&ev.key, 0) else {
            self.stats.stale.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok(opt) = self.addrs.get(
            &AddrKey {
                flow: ev.key,
                slot: ev.slot,
            },
            0,
        ) else {
            self.stats.stale.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let option = &opt.bytes[..usize::from(opt.len).min(opt.bytes.len())];
        let Some(frame) = frame_for(&ev.key, &flow, option) else {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match sys::test_run_xdp(
            self.injector.as_fd(),
            &frame,
            flow.ifindex,
            1,
            sys::BPF_F_TEST_XDP_LIVE_FRAMES,
        ) {
            Ok(_) => {
                self.stats.injected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    ifindex = flow.ifindex,
                    slot = ev.slot,
                    "injected a stored ADD_ADDR"
                );
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(ifindex = flow.ifindex, error = %e, "injecting a stored ADD_ADDR failed");
            }
        }
    }

    /// Blocks on the ring buffer until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let fd = self.events.as_raw_fd();
        while !stop.load(Ordering::Relaxed) {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, 200) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.drain();
        }
        Ok(())
    }
}

/// Runs the agent on its own thread until `stop` is set (used by `watch`).
pub fn spawn(layout: Layout, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut backoff = Duration::from_millis(200);
        while !stop.load(Ordering::Relaxed) {
            match Agent::open(&layout) {
                Ok(mut a) => {
                    if let Err(e) = a.run(&stop) {
                        tracing::warn!(error = %e, "recovery agent stopped; restarting");
                    }
                }
                Err(e) => {
                    // Nothing applied yet (or an older object without EVENTS).
                    tracing::debug!(error = %e, "recovery agent waiting for the datapath");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    })
}
