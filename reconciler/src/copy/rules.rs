//! `packet_copy` rules of the policy, resolved against what is applied: the
//! chain's id and the interface's index. A rule whose interface or chain is
//! not there (yet, or any more) is not armed and says why, so status can
//! show it and the next reconcile picks it up or drops it.
use std::collections::BTreeMap;

use serde::Serialize;

use super::trigger::{Rule, When};
use crate::{
    observe::Observed,
    policy::{self, PacketCopy, Policy},
};

/// What an armed rule sends: the policy's `send`, as it is.
pub use crate::policy::Send as Payload;

/// A rule ready for the trigger engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Armed {
    pub rule: Rule,
    pub interface: String,
    /// The interface carries raw IP (`IFACE_RAW_IP`): frames are sent
    /// without a link-layer header.
    pub raw_ip: bool,
    pub payload: Payload,
}

/// A rule that cannot run now, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unarmed {
    pub name: String,
    /// The rule's interface (which may not exist).
    pub interface: String,
    pub reason: String,
}

/// Resolves every rule of `p` against `o` (what `plan`/`status` observed).
pub fn resolve(p: &Policy, o: &Observed) -> (Vec<Armed>, Vec<Unarmed>) {
    let chains: BTreeMap<String, u32> = o
        .entries
        .chains
        .iter()
        .map(|(id, c)| (c.name.clone(), *id))
        .collect();
    resolve_with(&p.packet_copy, &chains, &|name| {
        o.netdevs
            .get(name)
            .map(|d| (d.ifindex, d.framing() == Ok(crate::netdev::Framing::RawIp)))
    })
}

/// Resolves `rules` with the applied chain ids (`name -> id`) and the
/// interfaces present now (`iface`: ifindex, and whether it carries raw IP).
pub fn resolve_with(
    rules: &[PacketCopy],
    chains: &BTreeMap<String, u32>,
    iface: &dyn Fn(&str) -> Option<(u32, bool)>,
) -> (Vec<Armed>, Vec<Unarmed>) {
    let mut armed = Vec::new();
    let mut unarmed = Vec::new();
    for r in rules {
        let Some((ifindex, raw_ip)) = iface(&r.interface) else {
            unarmed.push(Unarmed {
                name: r.name.clone(),
                interface: r.interface.clone(),
                reason: format!("interface {} does not exist", r.interface),
            });
            continue;
        };
        let Some(&chain) = chains.get(&r.chain) else {
            unarmed.push(Unarmed {
                name: r.name.clone(),
                interface: r.interface.clone(),
                reason: format!("chain {} is not applied", r.chain),
            });
            continue;
        };
        let when = match r.when {
            policy::Trigger::SubflowIdle(d) => When::SubflowIdle {
                idle_ns: u64::try_from(d.get().as_nanos()).unwrap_or(u64::MAX),
            },
            policy::Trigger::FlowBytesAt(b) => When::FlowBytesAt { bytes: b.bytes() },
            policy::Trigger::OtherSubflowsIdle(d) => When::OtherSubflowsIdle {
                idle_ns: u64::try_from(d.get().as_nanos()).unwrap_or(u64::MAX),
            },
        };
        let payload = r.send;
        armed.push(Armed {
            rule: Rule {
                name: r.name.clone(),
                ifindex,
                chain,
                when,
            },
            interface: r.interface.clone(),
            raw_ip,
            payload,
        });
    }
    (armed, unarmed)
}

/// `armed` unarmed, every rule, for `reason`: what keeps all of them
/// from sending (the process cannot open the socket they send through).
pub fn unarm(
    armed: Vec<Armed>,
    mut unarmed: Vec<Unarmed>,
    reason: &str,
) -> (Vec<Armed>, Vec<Unarmed>) {
    unarmed.extend(armed.into_iter().map(|a| Unarmed {
        name: a.rule.name,
        interface: a.interface,
        reason: reason.to_string(),
    }));
    (Vec::new(), unarmed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{netdev::NetDev, state::ChainEntry};

    const POLICY: &str = "version: 1
interfaces: [{name: cli1, chains: [bulk]}]
chains:
  - name: bulk
    actions: [count]
packet_copy:
  - name: revive
    interface: cli1
    chain: bulk
    when: {subflow_idle: 500ms}
    send: {mp_prio: {backup: false}}
  - name: announce
    interface: cli1
    chain: bulk
    when: {flow_bytes_at: 1MiB}
    send: {add_addr: {address: 198.51.100.2, id: 2}}
";

    fn observed(with_iface: bool, with_chain: bool) -> Observed {
        let mut o = Observed::default();
        if with_iface {
            o.netdevs.insert(
                "cli1".into(),
                NetDev {
                    ifindex: 9,
                    xdp: None,
                    link_type: None,
                    ..Default::default()
                },
            );
        }
        if with_chain {
            o.entries.chains.insert(
                4,
                ChainEntry {
                    name: "bulk".into(),
                    steps: vec![],
                },
            );
        }
        o
    }

    #[test]
    fn rules_resolve_to_ids_and_payloads() {
        let p = crate::policy::load_str("p.yaml", POLICY).unwrap();
        let (armed, unarmed) = resolve(&p, &observed(true, true));
        assert!(unarmed.is_empty());
        assert_eq!(armed.len(), 2);
        assert_eq!(armed[0].rule.ifindex, 9);
        assert_eq!(armed[0].rule.chain, 4);
        assert_eq!(
            armed[0].rule.when,
            When::SubflowIdle {
                idle_ns: 500_000_000
            }
        );
        assert_eq!(armed[0].payload, Payload::MpPrio { backup: false });
        assert_eq!(armed[1].rule.when, When::FlowBytesAt { bytes: 1 << 20 });
        assert_eq!(
            armed[1].payload,
            Payload::AddAddr {
                address: "198.51.100.2".parse().unwrap(),
                id: 2,
                port: None
            }
        );
    }

    #[test]
    fn unarm_keeps_every_rule_with_its_interface_and_the_reason() {
        let p = crate::policy::load_str("p.yaml", POLICY).unwrap();
        let (armed, unarmed) = resolve(&p, &observed(true, true));
        let (armed, unarmed) = unarm(armed, unarmed, "no socket");
        assert!(armed.is_empty());
        let got: Vec<_> = unarmed
            .iter()
            .map(|u| (u.name.as_str(), u.interface.as_str(), u.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("revive", "cli1", "no socket"),
                ("announce", "cli1", "no socket")
            ]
        );
    }

    #[test]
    fn a_missing_interface_or_chain_disarms_with_a_reason() {
        let p = crate::policy::load_str("p.yaml", POLICY).unwrap();
        let (armed, unarmed) = resolve(&p, &observed(false, true));
        assert!(armed.is_empty());
        assert!(unarmed[0].reason.contains("interface cli1"), "{unarmed:?}");
        let (armed, unarmed) = resolve(&p, &observed(true, false));
        assert!(armed.is_empty());
        assert!(unarmed[0].reason.contains("chain bulk"), "{unarmed:?}");
    }
}
