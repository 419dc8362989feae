//! `emptcp flows`: the MPTCP connections the datapath tracks (FLOWS), each
//! with its token, its joined subflows (JOINS), its size, chain and stored
//! ADD_ADDR options (FLOW_ADDRS) and how far their delivery went.
//! Read-only.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{HashMap, Map, MapData};
use emptcp_common::{
    ADDR_SLOTS, AddrKey, FLOW_INITIAL_CLOSED, FLOW_RECOVER_PENDING, FlowKey, FlowState, JoinState,
    StoredAddAddr, VIA_AGENT, VIA_INSERT, VIA_KERNEL,
};
use serde::Serialize;

use crate::{layout::Layout, observe::Observed};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddAddr {
    pub id: u8,
    pub address: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Carries the truncated HMAC (false: an echo).
    pub hmac: bool,
    /// Delivered at least once.
    pub recovered: bool,
    /// The local stack acknowledged it (ADD_ADDR echo or MP_JOIN to it).
    pub confirmed: bool,
    /// The option as received, hex.
    pub raw: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Flow {
    /// The initial subflow (the connection's key).
    pub local: String,
    pub remote: String,
    /// The connection's token (hex), as MP_JOIN SYNs carry it.
    pub token: String,
    /// The joined subflows mapped to it, `local -> remote`.
    pub subflows: Vec<String>,
    /// The initial subflow closed; the joined ones carry the connection.
    pub initial_closed: bool,
    pub chain: String,
    /// Upload bytes acked + download bytes, as compared with the thresholds.
    pub bytes: u64,
    pub add_addrs: Vec<AddAddr>,
    pub add_addr_nopped: u16,
    pub add_addr_dropped: u16,
    pub add_addr_recovered: u16,
    /// Deliveries repeated because the previous one was not confirmed.
    pub add_addr_retried: u16,
    /// How stored options reached the local stack: "insert" (into a
    /// received packet), "kernel" (a duplicate ACK built in the kernel),
    /// "agent" (one forged by user space).
    pub recovered_via: Vec<&'static str>,
    pub recover_pending: bool,
}

/// The names of the `VIA_*` bits of `v`.
fn via_names(v: u8) -> Vec<&'static str> {
    [
        (VIA_INSERT, "insert"),
        (VIA_KERNEL, "kernel"),
        (VIA_AGENT, "agent"),
    ]
    .into_iter()
    .filter(|(bit, _)| v & bit != 0)
    .map(|(_, n)| n)
    .collect()
}

/// Decodes an ADD_ADDR option (RFC 8684 3.4.1): its length tells the
/// family, the port and the HMAC apart.
pub fn decode_add_addr(b: &[u8]) -> Option<(u8, IpAddr, Option<u16>, bool)> {
    if b.len() < 8 || b[0] != 30 || usize::from(b[1]) != b.len() || b[2] >> 4 != 3 {
        return None;
    }
    let id = b[3];
    let (v6, port, hmac) = match b.len() {
        8 => (false, false, false),
        10 => (false, true, false),
        16 => (false, false, true),
        18 => (false, true, true),
        20 => (true, false, false),
        22 => (true, true, false),
        28 => (true, false, true),
        30 => (true, true, true),
        _ => return None,
    };
    let (addr, next): (IpAddr, usize) = if v6 {
        let a: [u8; 16] = b[4..20].try_into().ok()?;
        (Ipv6Addr::from(a).into(), 20)
    } else {
        let a: [u8; 4] = b[4..8].try_into().ok()?;
        (Ipv4Addr::from(a).into(), 8)
    };
    let port = port.then(|| u16::from_be_bytes([b[next], b[next + 1]]));
    Some((id, addr, port, hmac))
}

fn endpoint(family: u8, addr: &[u8; 16], port: u16) -> String {
    if family == 6 {
        format!("[{}]:{port}", Ipv6Addr::from(*addr))
    } else {
        format!(
            "{}:{port}",
            Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])
        )
    }
}

fn open<K: aya::Pod, V: aya::Pod>(layout: &Layout, name: &str) -> Option<HashMap<MapData, K, V>> {
    let md = MapData::from_pin(layout.map(name)).ok()?;
    HashMap::try_from(Map::from_map_data(md).ok()?).ok()
}

/// The option stored in `slot` of the connection `key` (entry `f`), where
/// the datapath keeps it: the entry's own place (the first one stored,
/// `FlowState::held_addr`) or `FLOW_ADDRS` (`addrs`).
pub fn stored_option(
    key: &FlowKey,
    f: &FlowState,
    addrs: Option<&HashMap<MapData, AddrKey, StoredAddAddr>>,
    slot: u32,
) -> Option<StoredAddAddr> {
    if let Some(v) = f.held_addr(slot) {
        return Some(*v);
    }
    addrs?.get(&AddrKey { flow: *key, slot }, 0).ok()
}

/// Every tracked flow, sorted by local then remote endpoint.
pub fn list(layout: &Layout, o: &Observed) -> Vec<Flow> {
    let Some(flows) = open::<FlowKey, FlowState>(layout, "FLOWS") else {
        return Vec::new();
    };
    let addrs = open::<AddrKey, StoredAddAddr>(layout, "FLOW_ADDRS");
    // Joined subflows by connection (a mapping whose token no longer
    // matches belongs to a connection that ended).
    let mut joins: BTreeMap<FlowKey, Vec<String>> = BTreeMap::new();
    if let Some(m) = open::<FlowKey, JoinState>(layout, "JOINS") {
        for (k, j) in m.iter().flatten() {
            joins.entry(j.conn).or_default().push(format!(
                "{} -> {}",
                endpoint(k.family, &k.local, k.local_port),
                endpoint(k.family, &k.remote, k.remote_port)
            ));
        }
    }
    let mut out: BTreeMap<(String, String), Flow> = BTreeMap::new();
    for (k, f) in flows.iter().flatten() {
        let mut add_addrs = Vec::new();
        for slot in 0..ADDR_SLOTS {
            if f.stored & (1 << slot) == 0 {
                continue;
            }
            let Some(opt) = stored_option(&k, &f, addrs.as_ref(), slot) else {
                continue;
            };
            let raw = &opt.bytes[..usize::from(opt.len).min(opt.bytes.len())];
            if let Some((id, address, port, hmac)) = decode_add_addr(raw) {
                add_addrs.push(AddAddr {
                    id,
                    address,
                    port,
                    hmac,
                    recovered: f.recovered & (1 << slot) != 0,
                    confirmed: f.confirmed & (1 << slot) != 0,
                    raw: hex::encode(raw),
                });
            }
        }
        let local = endpoint(k.family, &k.local, k.local_port);
        let remote = endpoint(k.family, &k.remote, k.remote_port);
        let chain = o
            .entries
            .chains
            .get(&f.chain)
            .map(|c| c.name.clone())
            .unwrap_or_else(|| format!("#{}", f.chain));
        out.insert(
            (local.clone(), remote.clone()),
            Flow {
                local,
                remote,
                token: format!("{:08x}", f.token),
                subflows: joins.remove(&k).unwrap_or_default(),
                initial_closed: f.flags & FLOW_INITIAL_CLOSED != 0,
                chain,
                bytes: f.bytes,
                add_addrs,
                add_addr_nopped: f.add_addr_nopped,
                add_addr_dropped: f.add_addr_dropped,
                add_addr_recovered: f.add_addr_recovered,
                add_addr_retried: f.add_addr_retried,
                // Confirmed without a datapath delivery: the agent's (or
                // the peer's own retransmission, after remove_below).
                recovered_via: via_names(
                    f.recovered_via
                        | if f.confirmed & !f.recovered != 0 {
                            VIA_AGENT
                        } else {
                            0
                        },
                ),
                recover_pending: f.flags & FLOW_RECOVER_PENDING != 0,
            },
        );
    }
    out.into_values().collect()
}

pub fn render_text(flows: &[Flow]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if flows.is_empty() {
        s.push_str("no tracked connections\n");
        return s;
    }
    let _ = writeln!(
        s,
        "{:<24} {:<24} {:<8} {:<20} {:>12}  ADD_ADDR (stored / nopped / dropped / delivered)",
        "LOCAL", "REMOTE", "TOKEN", "CHAIN", "BYTES"
    );
    for f in flows {
        let stored: Vec<String> = f
            .add_addrs
            .iter()
            .map(|a| {
                let port = a.port.map(|p| format!(":{p}")).unwrap_or_default();
                let state = match (a.recovered, a.confirmed) {
                    (_, true) => " delivered",
                    (true, false) => " sent, unconfirmed",
                    _ => "",
                };
                format!("id {} {}{port}{state}", a.id, a.address)
            })
            .collect();
        let via = if f.recovered_via.is_empty() {
            String::new()
        } else {
            format!(" via {}", f.recovered_via.join("+"))
        };
        let _ = writeln!(
            s,
            "{:<24} {:<24} {:<8} {:<20} {:>12}  [{}] / {} / {} / {}{via}{}",
            f.local,
            f.remote,
            f.token,
            f.chain,
            f.bytes,
            stored.join(", "),
            f.add_addr_nopped,
            f.add_addr_dropped,
            f.add_addr_recovered,
            if f.recover_pending {
                "  (recovery pending)"
            } else {
                ""
            }
        );
        if f.initial_closed {
            let _ = writeln!(s, "  initial subflow closed");
        }
        for sub in &f.subflows {
            let _ = writeln!(s, "  + joined {sub}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_add_addr_form() {
        let v4 = [198, 51, 100, 2];
        let v6: [u8; 16] = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets();
        for (addr, port, hmac) in [
            (&v4[..], false, false),
            (&v4[..], true, false),
            (&v4[..], false, true),
            (&v4[..], true, true),
            (&v6[..], false, false),
            (&v6[..], true, false),
            (&v6[..], false, true),
            (&v6[..], true, true),
        ] {
            let mut b = vec![30, 0, if hmac { 0x30 } else { 0x31 }, 7];
            b.extend_from_slice(addr);
            if port {
                b.extend_from_slice(&5201u16.to_be_bytes());
            }
            if hmac {
                b.extend_from_slice(&[0xaa; 8]);
            }
            b[1] = b.len() as u8;
            let (id, a, p, h) = decode_add_addr(&b).unwrap();
            assert_eq!(id, 7);
            assert_eq!(a.is_ipv6(), addr.len() == 16);
            assert_eq!(p, port.then_some(5201));
            assert_eq!(h, hmac);
        }
        assert_eq!(decode_add_addr(&[30, 9, 0x30, 1, 1, 2, 3, 4, 5]), None);
        assert_eq!(decode_add_addr(&[30, 8, 0x50, 1, 1, 2, 3, 4]), None);
    }
}
