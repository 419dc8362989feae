//! Reading the capture (`SUBFLOWS`: created and filled by the TC egress
//! program, completed by the XDP ingress capture) into what the
//! packet-copy runner needs per subflow.
use std::os::fd::{AsFd as _, OwnedFd};

use aya::maps::{HashMap, Map, MapData, MapError};
use emptcp_common::{
    FlowKey, FlowState, SF_ACK_SEEN, SF_CLOSED, SF_DATA_ACK_SEEN, SF_JOIN, SF_LOCAL_KEY,
    SF_PEER_TOKEN, SF_REMOTE_KEY, SF_SEQ_SEEN, SF_TS_SEEN, SubflowState,
};

use super::{forge::Captured, trigger::SubflowView};
use crate::{
    layout::Layout,
    packet::{DataAck, Timestamps},
};

fn open<K: aya::Pod, V: aya::Pod>(layout: &Layout, name: &str) -> Option<HashMap<MapData, K, V>> {
    let md = MapData::from_pin(layout.map(name)).ok()?;
    HashMap::try_from(Map::from_map_data(md).ok()?).ok()
}

/// The pair the runner needs for one captured subflow, or `None` while the
/// capture has not seen enough of it to forge a valid packet (no sent
/// segment with an ACK yet) or once it closed.
pub fn view(
    key: &FlowKey,
    s: &SubflowState,
    conn_bytes: Option<u64>,
) -> Option<(SubflowView, Captured)> {
    // A closed subflow's tombstone (`SF_CLOSED`) is never forged for.
    if s.flags & (SF_SEQ_SEEN | SF_ACK_SEEN) != SF_SEQ_SEEN | SF_ACK_SEEN
        || s.flags & SF_CLOSED != 0
    {
        return None;
    }
    let v = SubflowView {
        key: *key,
        conn: connection(s),
        chain: s.chain,
        ifindex: s.ifindex,
        last_activity_ns: last_activity_ns(s),
        conn_bytes,
    };
    let keys = (s.flags & (SF_LOCAL_KEY | SF_REMOTE_KEY) == SF_LOCAL_KEY | SF_REMOTE_KEY)
        .then_some((s.local_key, s.remote_key));
    let c = Captured {
        key: *key,
        mac: s.mac,
        vlan_tci: s.vlan_tci,
        snd_nxt: s.snd_nxt,
        ack: s.rcv_nxt,
        window: s.window,
        timestamps: (s.flags & SF_TS_SEEN != 0).then_some(Timestamps {
            tsval: s.tsval,
            tsecr: s.tsecr,
        }),
        // The low 32 bits: the receiver widens a 4-byte data ack from its
        // own state, while the high bits here are only right when the
        // capture saw 8-byte acks.
        data_ack: (s.flags & SF_DATA_ACK_SEEN != 0).then_some(DataAck::Ack32(s.data_ack as u32)),
        keys,
    };
    Some((v, c))
}

/// A closed subflow's tombstone whose last segment is older than
/// [`TOMBSTONE_TTL_NS`].
fn tombstone_expired(s: &SubflowState, now_ns: u64) -> bool {
    s.flags & SF_CLOSED != 0 && now_ns.saturating_sub(s.last_seen_ns) > TOMBSTONE_TTL_NS
}

/// Its SYN was captured, no ACK sent yet, not closed.
fn in_handshake(s: &SubflowState) -> bool {
    s.flags & (SF_SEQ_SEEN | SF_ACK_SEEN) == SF_SEQ_SEEN && s.flags & SF_CLOSED == 0
}

/// Which connection the subflow belongs to, as the token the peer knows it
/// by (with bit 32 set, so no id is 0), the same for every subflow whose
/// capture shows it: an initial subflow's peer key hashes to it, and the
/// MP_JOIN SYN the local end sent for a joined one carried it. 0 when
/// neither was captured (a subflow the peer joined, or one captured after
/// its handshake).
pub fn connection(s: &SubflowState) -> u64 {
    let token = if s.flags & SF_PEER_TOKEN != 0 {
        s.peer_token
    } else if s.flags & (SF_JOIN | SF_REMOTE_KEY) == SF_REMOTE_KEY {
        crate::packet::token(&s.remote_key.to_be_bytes())
    } else {
        return 0;
    };
    1 << 32 | token as u64
}

/// When the subflow last carried data either way: data sent (egress),
/// the sent ack number advancing (egress: data was received and
/// acknowledged), data received (ingress capture, on the interfaces of
/// the packet-copy rules). A subflow that never carried data counts from
/// when it was last seen sending (its handshake or pure ACKs).
pub fn last_activity_ns(s: &SubflowState) -> u64 {
    let data = s
        .last_data_tx_ns
        .max(s.last_ack_advance_ns)
        .max(s.last_rx_data_ns);
    if data == 0 { s.last_seen_ns } else { data }
}

/// The timestamps a forged packet sends `now_ns`, from those of the newest
/// segment the local end sent (`seen_ns`, the kernel's monotonic clock at
/// its egress): the tsval moves on by the whole milliseconds since. The
/// peer PAWS-drops a tsval older than the newest it took (RFC 7323 5.3),
/// and the local end may have sent newer segments between the capture and
/// the send (on a slow machine, several ms later: the forged packet was
/// then dropped, counted in the peer's TcpExtPAWSEstab). Linux's TS clock
/// runs on the same monotonic clock at 1 ms (or 1 us) per tick, so the
/// result is never ahead of the sender's clock: a tsval ahead of it would
/// make the peer drop the sender's real segments afterwards.
pub fn advance_tsval(ts: Timestamps, seen_ns: u64, now_ns: u64) -> Timestamps {
    let ms = now_ns.saturating_sub(seen_ns) / 1_000_000;
    Timestamps {
        tsval: ts.tsval.wrapping_add(ms.min(u32::MAX as u64) as u32),
        ..ts
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How long the task keeps a closed subflow's tombstone (`SF_CLOSED`, see
/// the datapath's `capture::close`) after its last segment: Linux's
/// TIME_WAIT (60 s), after which the local stack sends nothing more for
/// the connection, plus margin. Older tombstones are removed during the
/// walk: the LRU evicts only a full table, so under connection churn the
/// walk each round makes would grow to the table's capacity (two system
/// calls an entry) with entries nothing is ever sent for.
pub const TOMBSTONE_TTL_NS: u64 = 90_000_000_000;

/// The capture maps, opened once per resolve (an apply that resizes
/// `SUBFLOWS` replaces the pinned map; the next open follows it).
pub struct Capture {
    subflows: HashMap<MapData, FlowKey, SubflowState>,
    /// The same map, for the batched walk (aya reads one entry at a time).
    subflows_fd: OwnedFd,
    flows: Option<HashMap<MapData, FlowKey, FlowState>>,
}

impl Capture {
    /// `None` while no policy with an egress chain was applied.
    pub fn open(layout: &Layout) -> Option<Capture> {
        let md = MapData::from_pin(layout.map("SUBFLOWS")).ok()?;
        let subflows_fd = md.fd().as_fd().try_clone_to_owned().ok()?;
        Some(Capture {
            subflows: HashMap::try_from(Map::from_map_data(md).ok()?).ok()?,
            subflows_fd,
            flows: open(layout, "FLOWS"),
        })
    }

    /// Every captured subflow with enough state, with the connection size
    /// from `FLOWS` for initial subflows of the chains `sized` names (the
    /// chains of a rule that fires on the size: a lookup, one system call,
    /// per subflow; joins have none); and whether a
    /// subflow last seen at or after `since_ns` is still in its handshake
    /// (its SYN captured, no ACK sent yet): it has no view yet, and a round
    /// soon after shows it (else a connection shorter than a resolve period
    /// would close unseen, never counted as closed before its rule fired).
    /// An error of the walk is returned, never a partial list: a subflow
    /// missing from it would count as closed. Tombstones older than
    /// [`TOMBSTONE_TTL_NS`] at `now_ns` are removed after the walk.
    pub fn read_at(
        &mut self,
        since_ns: u64,
        now_ns: u64,
        sized: impl Fn(u32) -> bool,
    ) -> Result<(Vec<(SubflowView, Captured)>, bool), MapError> {
        let mut handshaking = false;
        let mut views = Vec::new();
        let mut expired = Vec::new();
        crate::sys::map_entries(
            self.subflows_fd.as_fd(),
            size_of::<FlowKey>(),
            size_of::<SubflowState>(),
            crate::sys::BATCH_ENTRIES,
            |k, v| {
                // SAFETY: both are plain-old-data of exactly these sizes.
                let (k, s) = unsafe {
                    (
                        std::ptr::read_unaligned(k.as_ptr().cast::<FlowKey>()),
                        std::ptr::read_unaligned(v.as_ptr().cast::<SubflowState>()),
                    )
                };
                if tombstone_expired(&s, now_ns) {
                    expired.push(k);
                    return Ok(true);
                }
                let bytes = if sized(s.chain) {
                    self.bytes(&k, &s)
                } else {
                    None
                };
                let v = view(&k, &s, bytes);
                handshaking |= v.is_none() && in_handshake(&s) && s.last_seen_ns >= since_ns;
                views.extend(v);
                Ok(true)
            },
        )
        .map_err(|io_error| {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_batch",
                io_error,
            })
        })?;
        // Removed after the walk, each checked again: a SYN on the same
        // 4-tuple may have started the entry over meanwhile.
        for k in expired {
            if self
                .subflows
                .get(&k, 0)
                .is_ok_and(|s| tombstone_expired(&s, now_ns))
            {
                let _ = self.subflows.remove(&k);
            }
        }
        Ok((views, handshaking))
    }

    /// One subflow's capture as it is now; `None` when it is gone (closed,
    /// or evicted) or not yet usable.
    pub fn get(&self, key: &FlowKey) -> Option<Captured> {
        let s = self.subflows.get(key, 0).ok()?;
        let (_, mut c) = view(key, &s, self.bytes(key, &s))?;
        c.timestamps = c
            .timestamps
            .map(|ts| advance_tsval(ts, s.last_seen_ns, monotonic_ns()));
        Some(c)
    }

    fn bytes(&self, key: &FlowKey, s: &SubflowState) -> Option<u64> {
        if s.flags & SF_JOIN != 0 {
            return None;
        }
        self.flows.as_ref()?.get(key, 0).ok().map(|f| f.bytes)
    }
}

#[cfg(test)]
mod tests {
    use emptcp_common::{SF_FIN, SF_PEER_FIN, SF_PEER_RST, SF_RST};

    use super::*;

    fn captured(tx: u64, ack: u64, rx: u64, seen: u64) -> SubflowState {
        SubflowState {
            flags: SF_SEQ_SEEN | SF_ACK_SEEN,
            last_data_tx_ns: tx,
            last_ack_advance_ns: ack,
            last_rx_data_ns: rx,
            last_seen_ns: seen,
            ..SubflowState::default()
        }
    }

    fn activity(s: &SubflowState) -> u64 {
        view(&FlowKey::default(), s, None)
            .unwrap()
            .0
            .last_activity_ns
    }

    #[test]
    fn only_a_subflow_between_its_syn_and_first_ack_is_in_its_handshake() {
        let syn = SubflowState {
            flags: SF_SEQ_SEEN,
            ..SubflowState::default()
        };
        assert!(in_handshake(&syn));
        assert!(
            view(&FlowKey::default(), &syn, None).is_none(),
            "no view yet"
        );
        let established = SubflowState {
            flags: SF_SEQ_SEEN | SF_ACK_SEEN,
            ..syn
        };
        assert!(!in_handshake(&established));
        let reset = SubflowState {
            flags: SF_SEQ_SEEN | SF_RST,
            ..syn
        };
        assert!(!in_handshake(&reset));
    }

    #[test]
    fn a_join_and_its_initial_subflow_name_one_connection() {
        // The token is SHA-256 of the key the peer sent; the local end's
        // MP_JOIN SYN carries that token.
        let peer_key: u64 = 0x0102_0304_0506_0708;
        let initial = SubflowState {
            flags: SF_SEQ_SEEN | SF_ACK_SEEN | SF_LOCAL_KEY | SF_REMOTE_KEY,
            local_key: 0xaaaa,
            remote_key: peer_key,
            ..SubflowState::default()
        };
        let join = SubflowState {
            flags: SF_SEQ_SEEN | SF_ACK_SEEN | SF_JOIN | SF_PEER_TOKEN,
            peer_token: crate::packet::token(&peer_key.to_be_bytes()),
            ..SubflowState::default()
        };
        assert_ne!(connection(&initial), 0);
        assert_eq!(connection(&initial), connection(&join));
        // Another connection's join, and a join the peer opened (no token
        // captured), are not grouped with it.
        let other = SubflowState {
            peer_token: join.peer_token ^ 1,
            ..join
        };
        assert_ne!(connection(&other), connection(&initial));
        let peer_opened = SubflowState {
            flags: SF_SEQ_SEEN | SF_ACK_SEEN | SF_JOIN,
            ..SubflowState::default()
        };
        assert_eq!(connection(&peer_opened), 0);
    }

    #[test]
    fn activity_is_the_newest_data_either_way() {
        // Sent data, acked data (the ack moved), received data: the newest.
        assert_eq!(activity(&captured(10, 20, 30, 40)), 30);
        assert_eq!(activity(&captured(50, 20, 30, 60)), 50);
        assert_eq!(activity(&captured(10, 70, 30, 80)), 70);
        // Only the ingress capture saw data: received counts alone.
        assert_eq!(activity(&captured(0, 0, 30, 40)), 30);
        // No data ever: from when the subflow was last seen.
        assert_eq!(activity(&captured(0, 0, 0, 40)), 40);
    }

    #[test]
    fn the_tsval_moves_on_by_whole_milliseconds_and_wraps() {
        let ts = Timestamps {
            tsval: 1000,
            tsecr: 7,
        };
        let at = |seen, now| advance_tsval(ts, seen, now);
        assert_eq!(at(5_000_000, 5_000_000), ts, "sent just now");
        assert_eq!(at(5_000_000, 5_999_999).tsval, 1000, "under 1 ms");
        assert_eq!(at(5_000_000, 8_500_000).tsval, 1003);
        assert_eq!(
            at(9_000_000, 5_000_000),
            ts,
            "a clock read before the capture"
        );
        assert_eq!(at(0, 2_000_000).tsecr, 7, "the echo stays");
        let high = Timestamps {
            tsval: u32::MAX,
            tsecr: 0,
        };
        assert_eq!(advance_tsval(high, 0, 2_000_000).tsval, 1);
    }

    #[test]
    fn a_closed_subflow_is_not_forgeable() {
        for how in [SF_FIN, SF_RST, SF_PEER_FIN, SF_PEER_RST] {
            let s = SubflowState {
                flags: SF_SEQ_SEEN | SF_ACK_SEEN | how,
                ..captured(1, 1, 1, 1)
            };
            assert!(view(&FlowKey::default(), &s, None).is_none(), "{how:#x}");
        }
    }

    #[test]
    fn a_subflow_without_a_sent_ack_is_not_forgeable() {
        let s = SubflowState {
            flags: SF_SEQ_SEEN,
            ..captured(1, 0, 1, 1)
        };
        assert!(view(&FlowKey::default(), &s, None).is_none());
    }
}
