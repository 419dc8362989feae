//! Encoding of `state` entries into the `#[repr(C)]` map types of
//! emptcp-common, and back. The only place that knows both.
use std::net::IpAddr;

use emptcp_common::{
    Action, CHAIN_NAME_LEN, ChainDef, ChainStep, DIR_LOCAL, DIR_REMOTE, IFACE_CAPTURE,
    IFACE_RAW_IP, IFACE_SKB, IFACE_TRACK, IFNAME_LEN, INLINE_PORTS, IfaceChains, LPM_FIXED_BITS,
    LpmV4, LpmV6, MAX_CHAINS_PER_IFACE, MAX_STEPS, PortKey, Thresholds,
};
use ipnet::IpNet;

use crate::state::{
    ChainEntry, Dir, IfaceEntry, IfaceFilter, PortEntry, PrefixEntry, StepEntry, ThresholdEntry,
};

fn put_name<const N: usize>(s: &str) -> [u8; N] {
    let mut b = [0u8; N];
    let n = s.len().min(N - 1);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    b
}

fn get_name(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

pub fn dir_byte(d: Dir) -> u8 {
    match d {
        Dir::Remote => DIR_REMOTE,
        Dir::Local => DIR_LOCAL,
    }
}

fn dir_of(b: u8) -> Dir {
    if b == DIR_LOCAL {
        Dir::Local
    } else {
        Dir::Remote
    }
}

pub fn action_id(name: &str) -> u32 {
    Action::ALL
        .iter()
        .find(|a| a.name() == name)
        .map(|a| *a as u32)
        .unwrap_or(0)
}

pub fn action_name(id: u32) -> String {
    Action::from_u32(id)
        .map(|a| a.name().to_string())
        .unwrap_or_else(|| format!("unknown({id})"))
}

pub fn chain_to_kernel(c: &ChainEntry) -> ChainDef {
    let mut steps = [ChainStep::default(); MAX_STEPS];
    for (slot, s) in steps.iter_mut().zip(&c.steps) {
        *slot = ChainStep {
            action: action_id(&s.action),
            arg: s.arg,
        };
    }
    ChainDef {
        len: c.steps.len().min(MAX_STEPS) as u32,
        _pad: 0,
        steps,
        name: put_name::<CHAIN_NAME_LEN>(&c.name),
    }
}

/// An empty `CHAINS` slot (the map is an array; `len == 0` = no chain).
pub const NO_CHAIN: ChainDef = ChainDef {
    len: 0,
    _pad: 0,
    steps: [ChainStep { action: 0, arg: 0 }; MAX_STEPS],
    name: [0; CHAIN_NAME_LEN],
};

/// The chains held by the `CHAINS` array map: id -> definition.
pub fn chains_in<T: std::borrow::Borrow<aya::maps::MapData>>(
    a: &aya::maps::Array<T, ChainDef>,
) -> Result<std::collections::BTreeMap<u32, ChainDef>, aya::maps::MapError> {
    let mut out = std::collections::BTreeMap::new();
    for (id, d) in a.iter().enumerate() {
        let d = d?;
        if d.len != 0 {
            out.insert(id as u32, d);
        }
    }
    Ok(out)
}

pub fn chain_from_kernel(d: &ChainDef) -> ChainEntry {
    let n = (d.len as usize).min(MAX_STEPS);
    ChainEntry {
        name: get_name(&d.name),
        steps: d.steps[..n]
            .iter()
            .map(|s| StepEntry {
                action: action_name(s.action),
                arg: s.arg,
            })
            .collect(),
    }
}

pub fn thresholds_to_kernel(t: &ThresholdEntry) -> Thresholds {
    Thresholds {
        remove_below: t.remove_below,
        recover_at: t.recover_at,
    }
}

pub fn thresholds_from_kernel(t: &Thresholds) -> ThresholdEntry {
    ThresholdEntry {
        remove_below: t.remove_below,
        recover_at: t.recover_at,
    }
}

pub fn iface_to_kernel(ifindex: u32, i: &IfaceEntry) -> IfaceChains {
    let mut chains = [0u32; MAX_CHAINS_PER_IFACE];
    for (slot, c) in chains.iter_mut().zip(&i.chains) {
        *slot = *c;
    }
    let mut chain_flags = [0u32; MAX_CHAINS_PER_IFACE];
    for (slot, f) in chain_flags.iter_mut().zip(&i.filter.chain_flags) {
        *slot = *f;
    }
    let mut ports = [[0u16; 2 * INLINE_PORTS]; MAX_CHAINS_PER_IFACE];
    for (slot, p) in ports.iter_mut().zip(&i.filter.inline_ports) {
        for (d, s) in slot.iter_mut().zip(p) {
            *d = *s;
        }
    }
    IfaceChains {
        n_chains: i.chains.len().min(MAX_CHAINS_PER_IFACE) as u32,
        ifindex,
        ports,
        v4: per_chain(&i.filter.inline_v4),
        v4_alt: per_chain(&i.filter.inline_v4_alt),
        require: i.filter.require,
        flags: [
            (i.capture, IFACE_CAPTURE),
            (i.raw_ip, IFACE_RAW_IP),
            (i.skb, IFACE_SKB),
            (i.track, IFACE_TRACK),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |f, (_, bit)| f | bit),
        chains,
        chain_flags,
        remote_ports: i.filter.remote_ports,
        local_ports: i.filter.local_ports,
        name: put_name::<IFNAME_LEN>(&i.name),
    }
}

/// A per-chain list as the kernel's fixed array (zeros past its end).
fn per_chain(list: &[[u32; 4]]) -> [[u32; 4]; MAX_CHAINS_PER_IFACE] {
    let mut out = [[0u32; 4]; MAX_CHAINS_PER_IFACE];
    for (slot, v) in out.iter_mut().zip(list) {
        *slot = *v;
    }
    out
}

pub fn iface_from_kernel(i: &IfaceChains) -> IfaceEntry {
    let n = (i.n_chains as usize).min(MAX_CHAINS_PER_IFACE);
    // Empty when none is inline, as plan writes them.
    let inline = i.v4[..n].iter().any(|v| *v != [0; 4]);
    let inline_only = |v: &[[u32; 4]]| if inline { v[..n].to_vec() } else { Vec::new() };
    IfaceEntry {
        name: get_name(&i.name),
        chains: i.chains[..n].to_vec(),
        filter: IfaceFilter {
            chain_flags: i.chain_flags[..n].to_vec(),
            inline_ports: i.ports[..n].iter().map(|p| p.to_vec()).collect(),
            inline_v4: inline_only(&i.v4),
            inline_v4_alt: inline_only(&i.v4_alt),
            require: i.require,
            remote_ports: i.remote_ports,
            local_ports: i.local_ports,
        },
        capture: i.flags & IFACE_CAPTURE != 0,
        raw_ip: i.flags & IFACE_RAW_IP != 0,
        skb: i.flags & IFACE_SKB != 0,
        track: i.flags & IFACE_TRACK != 0,
    }
}

pub fn port_to_kernel(p: &PortEntry) -> PortKey {
    PortKey {
        chain: p.chain,
        port: p.port,
        dir: dir_byte(p.dir),
        _pad: 0,
    }
}

pub fn port_from_kernel(k: &PortKey) -> PortEntry {
    PortEntry {
        chain: k.chain,
        dir: dir_of(k.dir),
        port: k.port,
    }
}

/// An LPM key: (prefix length in bits, key data).
pub enum LpmKey {
    V4(u32, LpmV4),
    V6(u32, LpmV6),
}

pub fn prefix_to_kernel(p: &PrefixEntry) -> LpmKey {
    let chain = p.chain.to_be_bytes();
    let dir = dir_byte(p.dir);
    match p.prefix {
        IpNet::V4(n) => LpmKey::V4(
            LPM_FIXED_BITS + u32::from(n.prefix_len()),
            LpmV4 {
                dir,
                chain,
                addr: n.network().octets(),
                _pad: [0; 3],
            },
        ),
        IpNet::V6(n) => LpmKey::V6(
            LPM_FIXED_BITS + u32::from(n.prefix_len()),
            LpmV6 {
                dir,
                chain,
                addr: n.network().octets(),
                _pad: [0; 3],
            },
        ),
    }
}

pub fn prefix_v4_from_kernel(plen: u32, k: &LpmV4) -> Option<PrefixEntry> {
    let len = plen.checked_sub(LPM_FIXED_BITS)? as u8;
    let prefix = IpNet::new(IpAddr::from(k.addr), len).ok()?;
    Some(PrefixEntry {
        chain: u32::from_be_bytes(k.chain),
        dir: dir_of(k.dir),
        prefix,
    })
}

pub fn prefix_v6_from_kernel(plen: u32, k: &LpmV6) -> Option<PrefixEntry> {
    let len = plen.checked_sub(LPM_FIXED_BITS)? as u8;
    let prefix = IpNet::new(IpAddr::from(k.addr), len).ok()?;
    Some(PrefixEntry {
        chain: u32::from_be_bytes(k.chain),
        dir: dir_of(k.dir),
        prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_round_trip() {
        let c = ChainEntry {
            name: "keep-short".into(),
            steps: vec![
                StepEntry {
                    action: "count".into(),
                    arg: 0,
                },
                StepEntry {
                    action: "set_backup".into(),
                    arg: 1,
                },
            ],
        };
        assert_eq!(chain_from_kernel(&chain_to_kernel(&c)), c);
    }

    #[test]
    fn prefix_round_trip() {
        for net in ["192.0.2.0/24", "2001:db8::/32", "0.0.0.0/0"] {
            let p = PrefixEntry {
                chain: 7,
                dir: Dir::Local,
                prefix: net.parse().unwrap(),
            };
            let back = match prefix_to_kernel(&p) {
                LpmKey::V4(l, k) => prefix_v4_from_kernel(l, &k),
                LpmKey::V6(l, k) => prefix_v6_from_kernel(l, &k),
            };
            assert_eq!(back, Some(p));
        }
    }
}
