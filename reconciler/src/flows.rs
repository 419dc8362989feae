//! `emptcp flows`: the MPTCP connections the datapath tracks (FLOWS), with
//! their size, chain and stored ADD_ADDR options (FLOW_ADDRS). Read-only.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{HashMap, Map, MapData};
use emptcp_common::{ADDR_SLOTS, AddrKey, FLOW_RECOVER_PENDING, FlowKey, FlowState, StoredAddAddr};
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
    pub recovered: bool,
    /// The option as received, hex.
    pub raw: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Flow {
    pub local: String,
    pub remote: String,
    pub chain: String,
    /// Upload bytes acked + download bytes, as compared with the thresholds.
    pub bytes: u64,
    pub add_addrs: Vec<AddAddr>,
    pub add_addr_nopped: u16,
    pub add_addr_dropped: u16,
    pub add_addr_recovered: u16,
    pub recover_pending: bool,
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

/// Every tracked flow, sorted by local then remote endpoint.
pub fn list(layout: &Layout, o: &Observed) -> Vec<Flow> {
    let Some(flows) = open::<FlowKey, FlowState>(layout, "FLOWS") else {
        return Vec::new();
    };
    let addrs = open::<AddrKey, StoredAddAddr>(layout, "FLOW_ADDRS");
    let mut out: BTreeMap<(String, String), Flow> = BTreeMap::new();
    for (k, f) in flows.iter().flatten() {
        let mut add_addrs = Vec::new();
        for slot in 0..ADDR_SLOTS {
            if f.stored & (1 << slot) == 0 {
                continue;
            }
            let key = AddrKey { flow: k, slot };
            let Some(opt) = addrs.as_ref().and_then(|m| m.get(&key, 0).ok()) else {
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
                chain,
                bytes: f.bytes,
                add_addrs,
                add_addr_nopped: f.add_addr_nopped,
                add_addr_dropped: f.add_addr_dropped,
                add_addr_recovered: f.add_addr_recovered,
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
        s.push_str("no tracked flows\n");
        return s;
    }
    let _ = writeln!(
        s,
        "{:<24} {:<24} {:<20} {:>12}  ADD_ADDR (stored / nopped / dropped / recovered)",
        "LOCAL", "REMOTE", "CHAIN", "BYTES"
    );
    for f in flows {
        let stored: Vec<String> = f
            .add_addrs
            .iter()
            .map(|a| {
                let port = a.port.map(|p| format!(":{p}")).unwrap_or_default();
                let state = if a.recovered { " recovered" } else { "" };
                format!("id {} {}{port}{state}", a.id, a.address)
            })
            .collect();
        let _ = writeln!(
            s,
            "{:<24} {:<24} {:<20} {:>12}  [{}] / {} / {} / {}{}",
            f.local,
            f.remote,
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
