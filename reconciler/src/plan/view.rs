//! The canonical, human-readable form of a state (observed or desired),
//! rendered as YAML for the plan's unified diff. Both sides are reduced to
//! the same shape, keyed by names, so the diff shows what an operator
//! changed and not how ids were assigned.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    desired::Desired,
    observe::Observed,
    policy::ByteSize,
    state::{Dir, StepEntry, ThresholdEntry},
};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default)]
    pub interfaces: BTreeMap<String, ViewIface>,
    #[serde(default)]
    pub chains: BTreeMap<String, ViewChain>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewIface {
    /// Ingress chains (XDP, or TC ingress with `ingress_hook: tc`).
    pub chains: Vec<String>,
    /// `tc` where the ingress chains run at TC ingress (absent: XDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_hook: Option<String>,
    /// Egress (TC) chains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_chains: Vec<String>,
    /// The XDP entry captures the peer's side of the subflows (packet copy).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub capture: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChain {
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<ViewThresholds>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_ports: Vec<u16>,
}

/// Thresholds with units, as an operator writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewThresholds {
    pub remove_below: String,
    pub recover_at: String,
}

fn thresholds(t: Option<ThresholdEntry>) -> Option<ViewThresholds> {
    t.map(|t| ViewThresholds {
        remove_below: ByteSize(t.remove_below).to_string(),
        recover_at: ByteSize(t.recover_at).to_string(),
    })
}

fn action(s: &StepEntry) -> String {
    match (s.action.as_str(), s.arg) {
        ("set_backup", a) => format!("set_backup(backup={})", a != 0),
        ("set_window", a) => format!("set_window(bytes={a})"),
        (name, _) => name.to_string(),
    }
}

impl View {
    pub fn desired(d: &Desired) -> View {
        let chains = d
            .chains
            .iter()
            .map(|(name, c)| {
                let mut v = ViewChain {
                    actions: c.steps.iter().map(action).collect(),
                    thresholds: thresholds(c.thresholds),
                    ..Default::default()
                };
                for (dir, net) in &c.prefixes {
                    match dir {
                        Dir::Remote => v.remote.push(net.to_string()),
                        Dir::Local => v.local.push(net.to_string()),
                    }
                }
                for (dir, p) in &c.ports {
                    match dir {
                        Dir::Remote => v.remote_ports.push(*p),
                        Dir::Local => v.local_ports.push(*p),
                    }
                }
                (name.clone(), v)
            })
            .collect();
        View {
            object: Some(short(&d.object_sha256)),
            interfaces: d
                .interfaces
                .iter()
                .map(|(n, i)| {
                    (
                        n.clone(),
                        ViewIface {
                            chains: i.chains.clone(),
                            ingress_hook: i.chains_on_tc().then(|| "tc".to_string()),
                            egress_chains: i.egress_chains.clone(),
                            capture: i.capture,
                        },
                    )
                })
                .collect(),
            chains,
        }
    }

    pub fn observed(o: &Observed) -> View {
        let e = &o.entries;
        let name = |id: &u32| {
            e.chains
                .get(id)
                .map(|c| c.name.clone())
                .unwrap_or_else(|| format!("#{id}"))
        };
        let mut chains: BTreeMap<String, ViewChain> = e
            .chains
            .iter()
            .map(|(id, c)| {
                (
                    c.name.clone(),
                    ViewChain {
                        actions: c.steps.iter().map(action).collect(),
                        thresholds: thresholds(e.thresholds.get(id).copied()),
                        ..Default::default()
                    },
                )
            })
            .collect();
        for p in &e.prefixes {
            let v = chains.entry(name(&p.chain)).or_default();
            match p.dir {
                Dir::Remote => v.remote.push(p.prefix.to_string()),
                Dir::Local => v.local.push(p.prefix.to_string()),
            }
        }
        for p in &e.ports {
            let v = chains.entry(name(&p.chain)).or_default();
            match p.dir {
                Dir::Remote => v.remote_ports.push(p.port),
                Dir::Local => v.local_ports.push(p.port),
            }
        }
        // An interface is live on a hook when it has both its entry and
        // our link there.
        let mut interfaces: BTreeMap<String, ViewIface> = BTreeMap::new();
        for i in e.ifaces.values() {
            let tc = o.tc_chain_links.contains_key(&i.name);
            if !tc && !o.links.contains_key(&i.name) {
                continue;
            }
            let v = interfaces.entry(i.name.clone()).or_default();
            v.chains = i.chains.iter().map(name).collect();
            v.capture = i.capture;
            v.ingress_hook = tc.then(|| "tc".to_string());
        }
        for i in e
            .egress_ifaces
            .values()
            .filter(|i| o.tc_links.contains_key(&i.name))
        {
            interfaces.entry(i.name.clone()).or_default().egress_chains =
                i.chains.iter().map(name).collect();
        }
        View {
            object: o.recorded_object().map(short),
            interfaces,
            chains,
        }
    }

    pub fn to_yaml(&self) -> String {
        yaml_serde::to_string(self).unwrap_or_default()
    }
}

fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}
