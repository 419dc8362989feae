//! Interface facts of the current network namespace: index and the XDP
//! program attached to it (ours or foreign), read from `ip -json -details
//! link` (iproute2 speaks the netlink for us and is a declared dependency).
use std::{collections::BTreeMap, process::Command};

use serde::{Deserialize, Serialize};

/// XDP attach mode as the kernel reports it (IFLA_XDP_ATTACHED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    Native,
    Skb,
    Hw,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpAttachment {
    pub prog_id: u32,
    pub prog_name: String,
    pub mode: AttachMode,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetDev {
    pub ifindex: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpAttachment>,
    /// The interface's link type as iproute2 names its ARPHRD (`ether`,
    /// `loopback`, `none` for tun/WireGuard/wwan raw-ip, `ipip`, `gre`,
    /// ...). Absent in older snapshots: taken as Ethernet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_type: Option<String>,
    /// The device kind (`ip -details`' `linkinfo.info_kind`: `veth`,
    /// `bridge`, `tun`, ...); absent for a NIC's own device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Whether its driver runs native XDP: the `netdev` family's
    /// xdp-features (`xdp_features.rs`), or a program attached natively.
    /// Unknown before Linux 6.3 and in older snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_xdp: Option<bool>,
}

/// Where the datapath finds the IP header on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Ethernet (+ up to two VLAN tags): L3 at 14, 18 or 22.
    Ethernet,
    /// Raw IP, no link-layer header: L3 at 0 (`IFACE_RAW_IP`).
    RawIp,
}

/// Link types (iproute2's names of ARPHRD_*) whose packets XDP and TC see
/// with an Ethernet header.
const ETHERNET_LINKS: &[&str] = &["ether", "loopback"];
/// Link types whose packets start with the IP header: tun and WireGuard
/// (ARPHRD_NONE), rmnet (ARPHRD_RAWIP), IP-in-IP, SIT and GRE tunnels.
const RAW_IP_LINKS: &[&str] = &["none", "rawip", "ipip", "tunnel6", "sit", "gre", "gre6"];

impl NetDev {
    /// How the datapath parses this link, or `Err(link type)` when it
    /// cannot (e.g. `ppp`, `infiniband`, `can`).
    pub fn framing(&self) -> Result<Framing, &str> {
        match self.link_type.as_deref() {
            None => Ok(Framing::Ethernet),
            Some(t) if ETHERNET_LINKS.contains(&t) => Ok(Framing::Ethernet),
            Some(t) if RAW_IP_LINKS.contains(&t) => Ok(Framing::RawIp),
            Some(t) => Err(t),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("running `ip -json -details link show` (is iproute2 installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("`ip -json -details link show` failed: {0}")]
    Failed(String),
    #[error("cannot parse `ip -json` output")]
    Parse(#[from] serde_json::Error),
}

#[derive(Deserialize)]
struct IpLink {
    ifindex: u32,
    ifname: String,
    #[serde(default)]
    xdp: Option<IpXdp>,
    #[serde(default)]
    link_type: Option<String>,
    #[serde(default)]
    linkinfo: Option<IpLinkInfo>,
}

#[derive(Deserialize)]
struct IpLinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
}

#[derive(Deserialize)]
struct IpXdp {
    mode: u32,
    #[serde(default)]
    prog: Option<IpProg>,
    #[serde(default)]
    attached: Vec<IpAttached>,
}

#[derive(Deserialize)]
struct IpAttached {
    mode: u32,
    prog: IpProg,
}

#[derive(Deserialize)]
struct IpProg {
    id: u32,
    #[serde(default)]
    name: String,
}

fn mode_of(m: u32) -> Option<AttachMode> {
    match m {
        1 => Some(AttachMode::Native),
        2 => Some(AttachMode::Skb),
        3 => Some(AttachMode::Hw),
        _ => None,
    }
}

/// All interfaces of the current network namespace by name.
pub fn list() -> Result<BTreeMap<String, NetDev>, NetdevError> {
    let out = Command::new("ip")
        .args(["-json", "-details", "link", "show"])
        .output()
        .map_err(NetdevError::Spawn)?;
    if !out.status.success() {
        return Err(NetdevError::Failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let mut devs = parse(&out.stdout)?;
    // Optional knowledge: where the kernel cannot say (a sandbox that
    // filters generic netlink), `auto` is left to the kernel as before
    // Linux 6.3 rather than failing the whole observation.
    let features = crate::xdp_features::by_ifindex().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the interfaces' XDP features (netlink, netdev family): xdp_mode auto is left to the kernel");
        None
    });
    for dev in devs.values_mut() {
        let advertised = features
            .as_ref()
            .and_then(|f| f.get(&dev.ifindex))
            .map(|f| f & crate::xdp_features::XDP_ACT_BASIC != 0);
        dev.native_xdp = native_xdp(advertised, dev.xdp.as_ref());
    }
    Ok(devs)
}

/// Native XDP: advertised by the driver, or seen attached (a driver that
/// runs a program natively has it, whatever it advertises).
fn native_xdp(advertised: Option<bool>, xdp: Option<&XdpAttachment>) -> Option<bool> {
    if xdp.is_some_and(|x| x.mode == AttachMode::Native) {
        return Some(true);
    }
    advertised
}

fn parse(json: &[u8]) -> Result<BTreeMap<String, NetDev>, NetdevError> {
    let links: Vec<IpLink> = serde_json::from_slice(json)?;
    Ok(links
        .into_iter()
        .map(|l| {
            let xdp = l.xdp.and_then(|x| {
                // Multi-mode (4) lists each attachment; the first is enough
                // to know the slot is taken and by what.
                let (mode, prog) = match (x.prog, x.attached.into_iter().next()) {
                    (Some(p), _) => (x.mode, p),
                    (None, Some(a)) => (a.mode, a.prog),
                    (None, None) => return None,
                };
                Some(XdpAttachment {
                    prog_id: prog.id,
                    prog_name: prog.name,
                    mode: mode_of(mode)?,
                })
            });
            (
                l.ifname,
                NetDev {
                    ifindex: l.ifindex,
                    xdp,
                    link_type: l.link_type,
                    kind: l.linkinfo.and_then(|i| i.info_kind),
                    native_xdp: None,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json() {
        let j = br#"[{"ifindex":1,"ifname":"lo"},
            {"ifindex":7,"ifname":"veth0","xdp":{"mode":2,"prog":{"id":42,"name":"entry","tag":"ab","jited":1}}},
            {"ifindex":8,"ifname":"veth1","xdp":{"mode":4,"attached":[{"mode":1,"prog":{"id":5,"name":"x"}}]}}]"#;
        let m = parse(j).unwrap();
        assert_eq!(m["lo"].xdp, None);
        assert_eq!(m["veth0"].xdp.as_ref().unwrap().prog_id, 42);
        assert_eq!(m["veth0"].xdp.as_ref().unwrap().mode, AttachMode::Skb);
        assert_eq!(m["veth1"].xdp.as_ref().unwrap().mode, AttachMode::Native);
    }

    #[test]
    fn a_native_attachment_proves_native_xdp() {
        let attached = XdpAttachment {
            prog_id: 1,
            prog_name: "x".into(),
            mode: AttachMode::Native,
        };
        assert_eq!(native_xdp(Some(false), Some(&attached)), Some(true));
        let generic = XdpAttachment {
            mode: AttachMode::Skb,
            ..attached
        };
        assert_eq!(native_xdp(Some(false), Some(&generic)), Some(false));
        assert_eq!(native_xdp(None, None), None);
    }

    #[test]
    fn the_device_kind_comes_from_linkinfo() {
        let j = br#"[{"ifindex":2,"ifname":"eth0","link_type":"ether"},
            {"ifindex":3,"ifname":"br0","link_type":"ether","linkinfo":{"info_kind":"bridge"}},
            {"ifindex":4,"ifname":"tap0","link_type":"ether","linkinfo":{"info_kind":"tun","info_data":{"type":"tap"}}}]"#;
        let m = parse(j).unwrap();
        assert_eq!(m["eth0"].kind, None);
        assert_eq!(m["br0"].kind.as_deref(), Some("bridge"));
        assert_eq!(m["tap0"].kind.as_deref(), Some("tun"));
    }

    #[test]
    fn link_types_map_to_framing() {
        let j = br#"[{"ifindex":1,"ifname":"lo","link_type":"loopback"},
            {"ifindex":2,"ifname":"eth0","link_type":"ether"},
            {"ifindex":3,"ifname":"tun0","link_type":"none"},
            {"ifindex":4,"ifname":"rmnet0","link_type":"rawip"},
            {"ifindex":5,"ifname":"ppp0","link_type":"ppp"},
            {"ifindex":6,"ifname":"old"}]"#;
        let m = parse(j).unwrap();
        assert_eq!(m["lo"].framing(), Ok(Framing::Ethernet));
        assert_eq!(m["eth0"].framing(), Ok(Framing::Ethernet));
        assert_eq!(m["tun0"].framing(), Ok(Framing::RawIp));
        assert_eq!(m["rmnet0"].framing(), Ok(Framing::RawIp));
        assert_eq!(m["ppp0"].framing(), Err("ppp"));
        assert_eq!(m["old"].framing(), Ok(Framing::Ethernet));
    }
}
