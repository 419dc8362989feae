//! The entry phase: chain ids (kept by name, new chains take the lowest
//! free id), what every configuration map holds under the policy (chains,
//! thresholds, selectors, prefixes, ports, interface chain lists), and the
//! puts and deletes from what is live to that.
use std::collections::{BTreeMap, BTreeSet};

use emptcp_common::MAX_CHAINS;

use super::{PlanError, Planning, Step, Steps, links::generic_complete};
use crate::{
    desired::Desired,
    layout::TcHook,
    netdev::Framing,
    observe::Observed,
    state::{Entries, IfaceEntry, IfaceFilter, PortEntry},
};

/// Chain ids, the desired entries and the steps to them from the live
/// entries (those of maps being replaced count as empty).
pub(super) fn converge_entries(
    d: &Desired,
    o: &Observed,
    retired: &BTreeSet<&str>,
    p: &mut Planning,
) {
    let ids = match allocate_ids(d, o) {
        Ok(ids) => ids,
        Err(e) => {
            p.errors.push(e);
            BTreeMap::new()
        }
    };
    let want = desired_entries(d, o, &ids, &mut p.notes);
    let have = effective_entries(o, retired);
    diff_entries(&want, &have, &ids, &mut p.steps);
}

/// Keeps the id of every chain that exists by name; new chains take the
/// lowest free ids in policy order.
fn allocate_ids(d: &Desired, o: &Observed) -> Result<BTreeMap<String, u32>, PlanError> {
    let mut ids = BTreeMap::new();
    let mut used = BTreeSet::new();
    for (id, c) in &o.entries.chains {
        if d.chains.contains_key(&c.name) && !ids.contains_key(&c.name) {
            ids.insert(c.name.clone(), *id);
        }
        used.insert(*id);
    }
    let mut next = 0u32;
    for name in &d.chain_order {
        if ids.contains_key(name) {
            continue;
        }
        // Ids of chains being deleted are not reused in the same plan, so
        // a packet never sees a new chain with an old chain's entries.
        while used.contains(&next) {
            next += 1;
        }
        if next >= MAX_CHAINS {
            return Err(PlanError::TooManyChains { max: MAX_CHAINS });
        }
        ids.insert(name.clone(), next);
        used.insert(next);
    }
    Ok(ids)
}

/// What the configuration maps hold under the policy.
fn desired_entries(
    d: &Desired,
    o: &Observed,
    ids: &BTreeMap<String, u32>,
    notes: &mut Vec<String>,
) -> Entries {
    let mut e = Entries::default();
    chain_entries(d, ids, &mut e);
    iface_entries(d, o, ids, notes, &mut e);
    e
}

/// The chains' entries: the chain itself, its thresholds, selector parts,
/// prefixes and ports, under the chain's id.
fn chain_entries(d: &Desired, ids: &BTreeMap<String, u32>, e: &mut Entries) {
    for (name, c) in &d.chains {
        let Some(&id) = ids.get(name) else { continue };
        e.chains.insert(
            id,
            crate::state::ChainEntry {
                name: name.clone(),
                steps: c.steps.clone(),
            },
        );
        if let Some(t) = c.thresholds {
            e.thresholds.insert(id, t);
        }
        e.selectors.insert(id, c.selector_flags);
        for (dir, net) in &c.prefixes {
            e.prefixes.insert(crate::state::PrefixEntry {
                chain: id,
                dir: *dir,
                prefix: *net,
            });
        }
        for (dir, port) in &c.ports {
            e.ports.insert(PortEntry {
                chain: id,
                dir: *dir,
                port: *port,
            });
        }
    }
}

/// Each existing policy interface's chain list (ingress, read by the XDP
/// or the TC ingress entry, and TC egress), with
/// the filter summarising its chains' selectors (already in `e`); a missing
/// interface is noted.
fn iface_entries(
    d: &Desired,
    o: &Observed,
    ids: &BTreeMap<String, u32>,
    notes: &mut Vec<String>,
    e: &mut Entries,
) {
    for (name, iface) in &d.interfaces {
        let Some(dev) = o.netdevs.get(name) else {
            notes.push(format!(
                "interface {name} does not exist (yet): nothing to attach; it is attached by the first apply after it appears"
            ));
            continue;
        };
        let entry = |names: &[String], e: &Entries| {
            let chains: Vec<u32> = names.iter().filter_map(|c| ids.get(c).copied()).collect();
            IfaceEntry {
                name: name.clone(),
                filter: iface_filter(&chains, e),
                chains,
                capture: false,
                raw_ip: dev.framing() == Ok(Framing::RawIp),
                skb: generic_complete(iface.mode, dev),
                track: false,
            }
        };
        if iface.wants_xdp() || iface.chains_on_tc() {
            let mut v = entry(&iface.chains, e);
            // The generic-XDP checksum caveat is XDP's: the TC insert keeps
            // a CHECKSUM_COMPLETE skb's sum right (insert.rs, after_mac).
            v.skb &= iface.wants_xdp();
            if iface.capture {
                v.capture = true;
                // The capture looks every TCP packet up before selecting
                // (ingress_capture has no prefilter), and the entry tests
                // the flag only after its prefilter: that one must pass.
                v.filter.require = 0;
            }
            e.ifaces.insert(dev.ifindex, v);
        }
        if iface.wants_tc(TcHook::Egress) {
            let mut v = entry(&iface.egress_chains, e);
            v.track = iface.track;
            e.egress_ifaces.insert(dev.ifindex, v);
        }
    }
}

/// The entry program's summary of an interface's chains (`chains`, with
/// their selectors and ports already in `e`): each chain's selector parts,
/// the parts every chain has, and the port filters.
pub fn iface_filter(chains: &[u32], e: &Entries) -> IfaceFilter {
    use emptcp_common::{INLINE_PORTS, SEL_LOCAL_PORTS_INLINE, SEL_REMOTE_PORTS_INLINE};
    let mut chain_flags = Vec::new();
    let mut inline_ports = Vec::new();
    let mut inline_v4 = Vec::new();
    let mut inline_v4_alt = Vec::new();
    for id in chains {
        let mut flags = e.selectors.get(id).copied().unwrap_or(0);
        let mut inline = vec![0u16; 2 * INLINE_PORTS];
        for (half, dir, bit) in [
            (0, crate::state::Dir::Remote, SEL_REMOTE_PORTS_INLINE),
            (1, crate::state::Dir::Local, SEL_LOCAL_PORTS_INLINE),
        ] {
            let ports: Vec<u16> = e
                .ports
                .iter()
                .filter(|p| p.chain == *id && p.dir == dir)
                .map(|p| p.port)
                .collect();
            if (1..=INLINE_PORTS).contains(&ports.len()) {
                flags |= bit;
                let out = &mut inline[half * INLINE_PORTS..(half + 1) * INLINE_PORTS];
                for (k, slot) in out.iter_mut().enumerate() {
                    *slot = ports[k.min(ports.len() - 1)];
                }
            }
        }
        let (v4, alt, v4_flags) = inline_v4_prefixes(*id, e);
        flags |= v4_flags;
        chain_flags.push(flags);
        inline_ports.push(inline);
        inline_v4.push(v4);
        inline_v4_alt.push(alt);
    }
    if inline_v4.iter().all(|v| *v == [0; 4]) {
        inline_v4.clear();
        inline_v4_alt.clear();
    }
    let require = if chain_flags.is_empty() {
        0
    } else {
        chain_flags.iter().fold(u32::MAX, |a, f| a & f)
    };
    let mut f = IfaceFilter {
        chain_flags,
        inline_ports,
        inline_v4,
        inline_v4_alt,
        require,
        ..IfaceFilter::default()
    };
    for p in e.ports.iter().filter(|p| chains.contains(&p.chain)) {
        let b = emptcp_common::port_bucket(p.port) as usize;
        let words = match p.dir {
            crate::state::Dir::Remote => &mut f.remote_ports,
            crate::state::Dir::Local => &mut f.local_ports,
        };
        words[b / 64] |= 1 << (b % 64);
    }
    f
}

/// Chain `id`'s inline IPv4 prefixes (`IfaceChains::v4`, `v4_alt`) and
/// their `SEL_*_V4_INLINE` bits: a direction with one or two IPv4
/// prefixes is compared inline by the entry program (the second slot
/// repeats a lone prefix; the `SEL_V4` entries stay, for nothing else
/// changes in the trie); three or more stay in the trie alone.
pub fn inline_v4_prefixes(id: u32, e: &Entries) -> ([u32; 4], [u32; 4], u32) {
    use emptcp_common::{SEL_LOCAL_V4_INLINE, SEL_REMOTE_V4_INLINE};
    let mut v4 = [0u32; 4];
    let mut alt = [0u32; 4];
    let mut flags = 0;
    for (half, dir, bit) in [
        (0, crate::state::Dir::Remote, SEL_REMOTE_V4_INLINE),
        (1, crate::state::Dir::Local, SEL_LOCAL_V4_INLINE),
    ] {
        let nets: Vec<ipnet::Ipv4Net> = e
            .prefixes
            .iter()
            .filter(|p| p.chain == id && p.dir == dir)
            .filter_map(|p| match p.prefix {
                ipnet::IpNet::V4(n) => Some(n),
                ipnet::IpNet::V6(_) => None,
            })
            .collect();
        let (first, second) = match nets[..] {
            [net] => (net, net),
            [a, b] => (a, b),
            _ => continue,
        };
        flags |= bit;
        for (slot, net) in [(&mut v4, first), (&mut alt, second)] {
            slot[2 * half] = u32::from_ne_bytes(net.network().octets());
            slot[2 * half + 1] = u32::from_ne_bytes(net.netmask().octets());
        }
    }
    (v4, alt, flags)
}

/// Observed entries, minus those of maps being replaced (they start empty).
fn effective_entries(o: &Observed, retired: &BTreeSet<&str>) -> Entries {
    let mut e = o.entries.clone();
    let gone = |m: &str| retired.contains(m) || !o.maps.contains_key(m);
    if gone("CHAINS") {
        e.chains.clear();
    }
    if gone("THRESHOLDS") {
        e.thresholds.clear();
    }
    if gone("SELECTORS") {
        e.selectors.clear();
    }
    if gone("SEL_V4") {
        e.prefixes.retain(|p| !p.prefix.addr().is_ipv4());
    }
    if gone("SEL_V6") {
        e.prefixes.retain(|p| !p.prefix.addr().is_ipv6());
    }
    if gone("PORTS") {
        e.ports.clear();
    }
    if gone("IFACES") {
        e.ifaces.clear();
    }
    if gone("EGRESS_IFACES") {
        e.egress_ifaces.clear();
    }
    e
}

fn chain_name(ids: &BTreeMap<String, u32>, have: &Entries, id: u32) -> String {
    ids.iter()
        .find(|(_, v)| **v == id)
        .map(|(k, _)| k.clone())
        .or_else(|| have.chains.get(&id).map(|c| c.name.clone()))
        .unwrap_or_else(|| format!("#{id}"))
}

/// The steps from the entries `have` to `want`.
fn diff_entries(want: &Entries, have: &Entries, ids: &BTreeMap<String, u32>, s: &mut Steps) {
    let name = |id: u32| chain_name(ids, have, id);
    put_chain_entries(want, have, &name, s);
    put_iface_entries(want, have, s);
    delete_unwanted_entries(want, have, &name, s);
}

/// Chain entries that are new or changed: thresholds, chains, prefixes,
/// ports, then the selectors that make the chain match.
fn put_chain_entries(want: &Entries, have: &Entries, name: &dyn Fn(u32) -> String, s: &mut Steps) {
    for (id, t) in &want.thresholds {
        let before = have.thresholds.get(id).copied();
        if before != Some(*t) {
            s.puts.push(Step::PutThresholds {
                id: *id,
                chain: name(*id),
                before,
                after: *t,
            });
        }
    }
    for (id, c) in &want.chains {
        let before = have.chains.get(id).cloned();
        if before.as_ref() != Some(c) {
            s.puts.push(Step::PutChain {
                id: *id,
                before,
                after: c.clone(),
            });
        }
    }
    for p in want.prefixes.difference(&have.prefixes) {
        s.puts.push(Step::PutPrefix {
            chain: name(p.chain),
            entry: p.clone(),
        });
    }
    for (chain, entries) in group_ports(want.ports.difference(&have.ports)) {
        s.puts.push(Step::PutPorts {
            chain: name(chain),
            entries,
        });
    }
    for (id, f) in &want.selectors {
        let before = have.selectors.get(id).copied();
        if before != Some(*f) {
            s.selectors.push(Step::PutSelector {
                id: *id,
                chain: name(*id),
                before,
                after: *f,
            });
        }
    }
}

/// Interface chain lists that are new or changed (after every chain they
/// name is complete).
fn put_iface_entries(want: &Entries, have: &Entries, s: &mut Steps) {
    for (ifindex, i) in &want.ifaces {
        let before = have.ifaces.get(ifindex).cloned();
        if before.as_ref() != Some(i) {
            s.ifaces.push(Step::PutIface {
                ifindex: *ifindex,
                before,
                after: i.clone(),
            });
        }
    }
    for (ifindex, i) in &want.egress_ifaces {
        let before = have.egress_ifaces.get(ifindex).cloned();
        if before.as_ref() != Some(i) {
            s.ifaces.push(Step::PutEgressIface {
                ifindex: *ifindex,
                before,
                after: i.clone(),
            });
        }
    }
}

/// Entries the policy no longer has, most-referencing first: interfaces,
/// selectors, ports, prefixes, thresholds, chains.
fn delete_unwanted_entries(
    want: &Entries,
    have: &Entries,
    name: &dyn Fn(u32) -> String,
    s: &mut Steps,
) {
    for (ifindex, i) in &have.ifaces {
        if !want.ifaces.contains_key(ifindex) {
            s.deletes.push(Step::DeleteIface {
                ifindex: *ifindex,
                before: i.clone(),
            });
        }
    }
    for (ifindex, i) in &have.egress_ifaces {
        if !want.egress_ifaces.contains_key(ifindex) {
            s.deletes.push(Step::DeleteEgressIface {
                ifindex: *ifindex,
                before: i.clone(),
            });
        }
    }
    for (id, f) in &have.selectors {
        if !want.selectors.contains_key(id) {
            s.deletes.push(Step::DeleteSelector {
                id: *id,
                chain: name(*id),
                before: *f,
            });
        }
    }
    for (chain, entries) in group_ports(have.ports.difference(&want.ports)) {
        s.deletes.push(Step::DeletePorts {
            chain: name(chain),
            entries,
        });
    }
    for p in have.prefixes.difference(&want.prefixes) {
        s.deletes.push(Step::DeletePrefix {
            chain: name(p.chain),
            entry: p.clone(),
        });
    }
    for (id, t) in &have.thresholds {
        if !want.thresholds.contains_key(id) {
            s.deletes.push(Step::DeleteThresholds {
                id: *id,
                chain: name(*id),
                before: *t,
            });
        }
    }
    for (id, c) in &have.chains {
        if !want.chains.contains_key(id) {
            s.deletes.push(Step::DeleteChain {
                id: *id,
                before: c.clone(),
            });
        }
    }
}

fn group_ports<'a>(it: impl Iterator<Item = &'a PortEntry>) -> BTreeMap<u32, Vec<PortEntry>> {
    let mut m: BTreeMap<u32, Vec<PortEntry>> = BTreeMap::new();
    for p in it {
        m.entry(p.chain).or_default().push(*p);
    }
    m
}
