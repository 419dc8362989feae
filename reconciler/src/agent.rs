//! The recovery agent: delivers stored ADD_ADDR options that the datapath
//! could not re-insert because no received packet had room for them (a pure
//! download: every server segment carries timestamps and a full DSS).
//!
//! `recover_add_addr` reports such a flow on the `EVENTS` ring buffer. The
//! agent reads the flow's newest state from `FLOWS` (the client's rcv_nxt,
//! the ack, window, timestamps and MACs of the newest server segment), forges
//! the duplicate ACK the server would have sent with the option in it
//! (`packet::build_control`), and hands it to the local stack as if the
//! flow's interface had received it (`packet::Ingress`: BPF_PROG_RUN of a
//! TC program that clones the frame's skb into that device's receive
//! path).
//!
//! The client takes a segment only when its sequence number lies between
//! the last point it acknowledged (rcv_wup) and the right edge of the window
//! it advertised. `rcv_nxt` from `FLOWS` is the newest the datapath saw, but
//! a download keeps running while the agent reads it and injects the frame:
//! on a fast path the client has often acknowledged past that point when
//! the frame arrives and drops it as old (`TcpExtTCPACKSkippedSeq`). The
//! first attempt for an address uses `rcv_nxt` itself (right for a slow or
//! stalled flow, whose window may be small); the next ones place the
//! sequence number ahead of it by doubling amounts ([`AHEAD`]), so that one
//! lands inside the window however far the client got meanwhile. A
//! zero-length segment ahead of rcv_nxt but inside the window is processed
//! for its options (`tcp_data_queue` hands it to MPTCP before it drops an
//! empty segment) and changes no receive state; one that misses only makes
//! the client send a duplicate ACK.
//!
//! Runs inside `emptcp watch`, or alone as `emptcp agent`.
use std::{
    collections::BTreeMap,
    io,
    os::fd::AsRawFd as _,
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
    packet::{
        ControlAck, Flow, Ingress, Signal, StoredOption, Timestamps, Transmit, build_control,
    },
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
    #[error("loading the injector program (a TC classifier: needs CAP_BPF and CAP_NET_ADMIN)")]
    Injector(#[source] io::Error),
}

/// How far past the newest `rcv_nxt` attempt `n` (mod 8) for one stored
/// address places its sequence number, in bytes. Doubling from 4 KiB: when
/// the client processed X bytes past the frame's `rcv_nxt` before it
/// arrived, the first amount >= X is less than 2X, inside any window of
/// at least X (a client that takes X bytes in an agent's reaction time
/// advertises more). 256 KiB covers ~2 ms of a 1 Gbit/s download.
pub const AHEAD: [u32; 8] = [
    0,
    4 << 10,
    8 << 10,
    16 << 10,
    32 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
];

/// Attempts so far per (flow, slot), for [`AHEAD`]. Bounded: cleared when
/// it holds `ATTEMPTS_TRACKED` entries (a flow then starts over at 0,
/// which is still a valid attempt).
#[derive(Debug, Default)]
pub struct Attempts(BTreeMap<(FlowKey, u32), u8>);

const ATTEMPTS_TRACKED: usize = 1 << 16;

impl Attempts {
    /// The offset of the next attempt at `slot` of `key`, counted.
    pub fn next_ahead(&mut self, key: &FlowKey, slot: u32) -> u32 {
        if self.0.len() >= ATTEMPTS_TRACKED {
            self.0.clear();
        }
        let n = self.0.entry((*key, slot)).or_insert(0);
        let ahead = AHEAD[usize::from(*n) % AHEAD.len()];
        *n = n.wrapping_add(1);
        ahead
    }

    /// Forgets a flow that is gone.
    pub fn forget(&mut self, key: &FlowKey) {
        self.0.retain(|(k, _), _| k != key);
    }
}

/// Why a recovery event got no frame.
#[derive(Debug, PartialEq, Eq)]
pub enum NoFrame {
    /// The flow or its stored option is gone (closed or evicted).
    Stale,
    /// The option does not fit a frame.
    Unbuildable,
}

/// The frame answering recovery event `ev`, built from the newest state in
/// `FLOWS` and the stored option (`flows::stored_option`), this attempt counted in
/// `attempts`; with the flow's state (its interface, its size). The agent
/// and `emptcp simulate` both answer through it.
pub fn answer(
    flows: &HashMap<MapData, FlowKey, FlowState>,
    addrs: &HashMap<MapData, AddrKey, StoredAddAddr>,
    attempts: &mut Attempts,
    ev: &RecoverEvent,
) -> Result<(FlowState, Vec<u8>), NoFrame> {
    let Ok(flow) = flows.get(&ev.key, 0) else {
        attempts.forget(&ev.key);
        return Err(NoFrame::Stale);
    };
    let opt =
        crate::flows::stored_option(&ev.key, &flow, Some(addrs), ev.slot).ok_or(NoFrame::Stale)?;
    let option = &opt.bytes[..usize::from(opt.len).min(opt.bytes.len())];
    let ahead = attempts.next_ahead(&ev.key, ev.slot);
    let frame = frame_for(&ev.key, &flow, option, ahead).ok_or(NoFrame::Unbuildable)?;
    Ok((flow, frame))
}

/// Builds the frame for one stored option of one flow, as the peer would
/// have sent it: from remote to local, seq = the client's rcv_nxt plus
/// `ahead` ([`AHEAD`]), the newest segment's timestamps when they fit
/// beside the option.
pub fn frame_for(key: &FlowKey, f: &FlowState, option: &[u8], ahead: u32) -> Option<Vec<u8>> {
    let ip = |a: &[u8; 16]| -> std::net::IpAddr {
        if key.family == 6 {
            std::net::Ipv6Addr::from(*a).into()
        } else {
            std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).into()
        }
    };
    let flow = Flow {
        dst_mac: f.mac[..6].try_into().expect("6 bytes"),
        src_mac: f.mac[6..].try_into().expect("6 bytes"),
        src: ip(&key.remote),
        dst: ip(&key.local),
        sport: key.remote_port,
        dport: key.local_port,
        vlan_tci: (f.vlan_tci != 0).then_some(f.vlan_tci),
        // Always Ethernet, whatever the link: the test run makes the skb
        // through eth_type_trans() on every device, and on a raw-IP device
        // (no link-layer header) the redirect takes the header off again.
        // On such a link no MACs are recorded; the all-zero destination
        // equals the device's (zero) address: sent to this host.
        raw_ip: false,
        ttl: 64,
    };
    let ack = ControlAck {
        seq: f.rcv_nxt.wrapping_add(ahead),
        ack: f.ack,
        window: f.window,
        // Timestamps help PAWS accept it.
        timestamps: (f.flags & FLOW_TS_SEEN != 0).then_some(Timestamps {
            tsval: f.tsval,
            tsecr: f.tsecr,
        }),
        data_ack: None,
        signal: Some(Signal::Stored(StoredOption::new(option)?)),
    };
    build_control(&flow, &ack).ok()
}

/// The agent, sending its frames through `T` (`Ingress` in the product).
pub struct Agent<T = Ingress> {
    events: RingBuf<MapData>,
    flows: HashMap<MapData, FlowKey, FlowState>,
    addrs: HashMap<MapData, AddrKey, StoredAddAddr>,
    transmit: T,
    attempts: Attempts,
    pub stats: Arc<AgentStats>,
}

fn open(layout: &Layout, name: &str) -> Result<Map, AgentError> {
    let md = MapData::from_pin(layout.map(name)).map_err(|e| AgentError::Map(name.into(), e))?;
    Map::from_map_data(md).map_err(|e| AgentError::Map(name.into(), e))
}

/// The pinned maps the agent reads.
struct Maps {
    events: RingBuf<MapData>,
    flows: HashMap<MapData, FlowKey, FlowState>,
    addrs: HashMap<MapData, AddrKey, StoredAddAddr>,
}

impl Maps {
    fn open(layout: &Layout) -> Result<Maps, AgentError> {
        fn err(n: &'static str) -> impl Fn(aya::maps::MapError) -> AgentError {
            move |e| AgentError::Map(n.to_string(), e)
        }
        Ok(Maps {
            events: RingBuf::try_from(open(layout, "EVENTS")?).map_err(err("EVENTS"))?,
            flows: HashMap::try_from(open(layout, "FLOWS")?).map_err(err("FLOWS"))?,
            addrs: HashMap::try_from(open(layout, "FLOW_ADDRS")?).map_err(err("FLOW_ADDRS"))?,
        })
    }
}

impl Agent<Ingress> {
    /// The agent of the datapath under `layout`, injecting on the receive
    /// path.
    /// The maps first: before an apply they are missing, and the agent
    /// thread retries without loading an injector each time.
    pub fn open(layout: &Layout) -> Result<Agent, AgentError> {
        let maps = Maps::open(layout)?;
        let ingress = Ingress::new().map_err(AgentError::Injector)?;
        Ok(Agent::from_maps(maps, ingress))
    }
}

impl<T: Transmit> Agent<T> {
    /// The agent of the datapath under `layout`, sending through `transmit`.
    pub fn with_transmit(layout: &Layout, transmit: T) -> Result<Agent<T>, AgentError> {
        Ok(Agent::from_maps(Maps::open(layout)?, transmit))
    }

    fn from_maps(m: Maps, transmit: T) -> Agent<T> {
        Agent {
            events: m.events,
            flows: m.flows,
            addrs: m.addrs,
            transmit,
            attempts: Attempts::default(),
            stats: Arc::default(),
        }
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

    fn handle(&mut self, ev: &RecoverEvent) {
        let (flow, frame) = match answer(&self.flows, &self.addrs, &mut self.attempts, ev) {
            Ok(v) => v,
            Err(NoFrame::Stale) => {
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(NoFrame::Unbuildable) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        match self.transmit.transmit(flow.ifindex, &frame) {
            Ok(()) => {
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

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    fn flow() -> (FlowKey, FlowState) {
        let mut key = FlowKey {
            family: 4,
            local_port: 40000,
            remote_port: 5201,
            ..FlowKey::default()
        };
        key.local[..4].copy_from_slice(&[192, 0, 2, 1]);
        key.remote[..4].copy_from_slice(&[192, 0, 2, 2]);
        let f = FlowState {
            mac: [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2],
            rcv_nxt: 1000,
            ack: 2000,
            window: 502,
            tsval: 7,
            tsecr: 9,
            flags: FLOW_TS_SEEN,
            ..FlowState::default()
        };
        (key, f)
    }

    /// (src, dst, seq, ack, options) by etherparse.
    fn parse(frame: &[u8]) -> (String, String, u32, u32, Vec<u8>) {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(NetSlice::Ipv4(ip)) = p.net else {
            panic!("not IPv4")
        };
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("not TCP")
        };
        (
            ip.header().source_addr().to_string(),
            ip.header().destination_addr().to_string(),
            t.sequence_number(),
            t.acknowledgment_number(),
            t.options().to_vec(),
        )
    }

    #[test]
    fn the_stored_option_comes_from_the_peer_with_its_timestamps() {
        let (key, f) = flow();
        let option = [30, 16, 0x30, 2, 198, 51, 100, 2, 1, 2, 3, 4, 5, 6, 7, 8];
        let frame = frame_for(&key, &f, &option, 0).unwrap();
        assert_eq!(
            &frame[..12],
            &f.mac,
            "destination then source MAC as stored"
        );
        let (src, dst, seq, ack, o) = parse(&frame);
        assert_eq!((src.as_str(), dst.as_str()), ("192.0.2.2", "192.0.2.1"));
        assert_eq!((seq, ack), (1000, 2000), "seq = the client's rcv_nxt");
        assert_eq!(&o[..12], &[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
        assert_eq!(&o[12..], &option);
    }

    #[test]
    fn timestamps_that_do_not_fit_beside_the_option_are_left_out() {
        let (key, f) = flow();
        // An ADD_ADDR of 30 bytes (IPv6, port, HMAC): 12 + 30 > 40.
        let mut option = [0u8; 30];
        option[..2].copy_from_slice(&[30, 30]);
        let (.., o) = parse(&frame_for(&key, &f, &option, 0).unwrap());
        assert_eq!(&o[..30], &option);
        assert_eq!(&o[30..], &[1, 1], "NOP padding only");
        assert!(frame_for(&key, &f, &[1; 41], 0).is_none());
    }

    #[test]
    fn attempts_start_at_rcv_nxt_then_move_ahead_by_doubling_amounts() {
        let (key, f) = flow();
        let option = [30, 16, 0x30, 2, 198, 51, 100, 2, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut a = Attempts::default();
        let seqs: Vec<u32> = (0..9)
            .map(|_| {
                let ahead = a.next_ahead(&key, 3);
                parse(&frame_for(&key, &f, &option, ahead).unwrap()).2
            })
            .collect();
        let kib = |n: u32| 1000 + n * 1024;
        assert_eq!(
            seqs,
            [
                1000,
                kib(4),
                kib(8),
                kib(16),
                kib(32),
                kib(64),
                kib(128),
                kib(256),
                1000
            ],
            "exact first, then ahead, cycling"
        );
        // Another slot, or the same slot of another flow, starts at 0.
        assert_eq!(a.next_ahead(&key, 4), 0);
        let mut other = key;
        other.local_port += 1;
        assert_eq!(a.next_ahead(&other, 3), 0);
        a.forget(&key);
        assert_eq!(a.next_ahead(&key, 3), 0, "a forgotten flow starts over");
    }

    #[test]
    fn the_sequence_number_wraps() {
        let (key, mut f) = flow();
        f.rcv_nxt = u32::MAX - 100;
        let option = [30, 16, 0x30, 2, 198, 51, 100, 2, 1, 2, 3, 4, 5, 6, 7, 8];
        let (_, _, seq, ..) = parse(&frame_for(&key, &f, &option, 4096).unwrap());
        assert_eq!(seq, 4096 - 101);
    }
}
