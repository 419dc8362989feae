//! The link phase: every policy interface's link type, its XDP link
//! (attached, atomically updated to a newly loaded program, re-attached
//! when the mode changes, a foreign program refused or, with `--force`,
//! removed) and its TCX links; links of interfaces no longer wanted are
//! detached.
use super::{PlanError, PlanOptions, Planning, Step, Steps, object::Load};
use crate::{
    desired::{Desired, XdpMode},
    layout::TcHook,
    netdev::{AttachMode, Framing, NetDev},
    object::ENTRY_PROGRAM,
    observe::Observed,
};

/// Every policy interface's link type: raw-IP links are noted (the plan
/// shows how each is parsed), a link the datapath cannot parse is an error
/// naming it (never a silent no-op).
pub(super) fn link_types(d: &Desired, o: &Observed, p: &mut Planning) {
    for (name, iface) in &d.interfaces {
        let Some(dev) = o.netdevs.get(name) else {
            continue; // noted in desired_entries
        };
        match dev.framing() {
            Ok(Framing::Ethernet) => {}
            Ok(Framing::RawIp) if iface.wants_xdp() && iface.mode == XdpMode::Native => {
                p.errors.push(PlanError::NativeOnRawIp {
                    iface: name.clone(),
                    link_type: dev.link_type.clone().unwrap_or_default(),
                })
            }
            Ok(Framing::RawIp) => p.notes.push(format!(
                "{name}: raw-IP link (link type {}): IP parsed from byte 0{}",
                dev.link_type.as_deref().unwrap_or("?"),
                if iface.wants_xdp() && iface.mode == XdpMode::Auto {
                    ", XDP in skb mode"
                } else {
                    ""
                }
            )),
            Err(t) => p.errors.push(PlanError::LinkType {
                iface: name.clone(),
                link_type: t.to_string(),
            }),
        }
        if iface.wants_xdp() && generic_complete(iface.mode, dev) {
            p.notes.push(format!(
                "{name}: XDP in skb mode ({}) on a {} that may deliver CHECKSUM_COMPLETE: no option is inserted into an IPv4 segment at XDP there (recover_add_addr delivers through TC ingress, ingress set_backup counts mp_prio_no_room)",
                if iface.mode == XdpMode::Skb {
                    "xdp_mode: skb"
                } else {
                    "its driver has no native XDP"
                },
                what_device(dev),
            ));
        }
    }
}

/// How the plan names a device: its kind, a tunnel by its link type, else
/// a NIC (an Ethernet device without a kind).
fn what_device(dev: &NetDev) -> String {
    match (dev.kind.as_deref(), dev.link_type.as_deref()) {
        (Some(k), _) => format!("{k} device"),
        (None, Some(t)) if t != "ether" => format!("{t} link"),
        _ => "NIC".into(),
    }
}

/// Generic XDP on a link that may hand it CHECKSUM_COMPLETE skbs: the
/// datapath then inserts no option into IPv4 segments (`IFACE_SKB`).
pub(super) fn generic_complete(want: XdpMode, dev: &NetDev) -> bool {
    effective_mode(want, dev) == XdpMode::Skb && may_csum_complete(dev)
}

/// The XDP link of every interface that wants one: kept and updated in
/// place (same link, new program) when attached here in the wanted mode,
/// otherwise detached and attached again; a program emptcp did not attach
/// is an error, or with `--force` removed first. Links of interfaces no
/// longer wanted (or gone) are detached.
pub(super) fn xdp_links(
    d: &Desired,
    o: &Observed,
    opts: PlanOptions,
    load: &Load,
    p: &mut Planning,
) {
    let xdp_ifaces = || d.interfaces.iter().filter(|(_, i)| i.wants_xdp());
    for (name, iface) in xdp_ifaces() {
        let Some(dev) = o.netdevs.get(name) else {
            continue; // noted in desired_entries
        };
        let mode = effective_mode(iface.mode, dev);
        if !keep_xdp_link(o, name, dev, mode, load, p) {
            attach_xdp(o, name, dev, mode, opts, p);
        }
    }
    for (name, link) in &o.links {
        if !xdp_ifaces().any(|(n, _)| n == name) || !o.netdevs.contains_key(name) {
            p.steps.detach.push(Step::Detach {
                iface: name.clone(),
                link_id: link.id,
            });
        }
    }
}

/// Whether the pinned link of `name` stays: attached to this interface in
/// `mode`. It is updated when its program is not the pinned entry program
/// (or the object is loaded again); a link that does not stay is detached.
fn keep_xdp_link(
    o: &Observed,
    name: &str,
    dev: &NetDev,
    mode: XdpMode,
    load: &Load,
    p: &mut Planning,
) -> bool {
    let Some(link) = o.links.get(name) else {
        return false;
    };
    let attached_here = link.ifindex == dev.ifindex
        && !o.links_of_another_namespace()
        && dev.xdp.as_ref().is_some_and(|x| x.prog_id == link.prog_id);
    let mode_ok = dev.xdp.as_ref().is_some_and(|x| mode_matches(mode, x.mode));
    if attached_here && mode_ok {
        let entry_prog = o.programs.get(ENTRY_PROGRAM).map(|p| p.id);
        if load.loads(ENTRY_PROGRAM) || Some(link.prog_id) != entry_prog {
            p.steps.links.push(Step::UpdateLink {
                iface: name.into(),
                link_id: link.id,
                before_prog: link.prog_id,
            });
        }
        return true;
    }
    if attached_here {
        p.notes.push(format!(
            "{name}: XDP mode changes to {mode:?}: the program is re-attached (not hitless)"
        ));
    }
    p.steps.relink.push(Step::Detach {
        iface: name.into(),
        link_id: link.id,
    });
    false
}

/// Attaches the entry program to `name`; an XDP program attached by
/// someone else is refused, or removed first with `--force`.
fn attach_xdp(
    o: &Observed,
    name: &str,
    dev: &NetDev,
    mode: XdpMode,
    opts: PlanOptions,
    p: &mut Planning,
) {
    let ours = o.links.get(name).map(|l| l.prog_id);
    if let Some(x) = &dev.xdp
        && Some(x.prog_id) != ours
    {
        if opts.force {
            p.steps.relink.push(Step::DetachForeign {
                iface: name.into(),
                prog_id: x.prog_id,
                prog_name: x.prog_name.clone(),
                mode: x.mode,
            });
        } else {
            p.errors.push(PlanError::Foreign {
                iface: name.into(),
                prog_id: x.prog_id,
                prog_name: x.prog_name.clone(),
                mode: x.mode,
            });
        }
    }
    p.steps.links.push(Step::Attach {
        iface: name.into(),
        ifindex: dev.ifindex,
        mode,
    });
}

/// The TCX links of every hook (egress, and ingress for the in-kernel
/// recovery). TCX links coexist with other programs on the hook
/// (multi-program), so there is no foreign-program check: ours is
/// recognised by its pin.
pub(super) fn tc_links(d: &Desired, o: &Observed, load: &Load, s: &mut Steps) {
    for hook in TcHook::ALL {
        tc_links_of(d, o, load, hook, s);
    }
}

/// The TCX links of `hook`: attached where wanted, updated to the loaded
/// program, replaced on a re-created interface, detached where unwanted.
fn tc_links_of(d: &Desired, o: &Observed, load: &Load, hook: TcHook, s: &mut Steps) {
    let prog = o.programs.get(hook.program()).map(|p| p.id);
    let links = o.tc_links_of(hook);
    let ours = |link: &crate::observe::ObservedLink, dev: &NetDev| {
        link.ifindex == dev.ifindex && !o.links_of_another_namespace()
    };
    let wanted = |name: &str| {
        d.interfaces.get(name).is_some_and(|i| i.wants_tc(hook)) && o.netdevs.contains_key(name)
    };
    for (name, iface) in &d.interfaces {
        if !iface.wants_tc(hook) {
            continue;
        }
        let Some(dev) = o.netdevs.get(name) else {
            continue; // noted in desired_entries
        };
        match links.get(name) {
            Some(link) if ours(link, dev) => {
                if load.loads(hook.program()) || Some(link.prog_id) != prog {
                    s.links.push(Step::UpdateTcLink {
                        iface: name.clone(),
                        link_id: link.id,
                        before_prog: link.prog_id,
                        hook,
                    });
                }
                continue;
            }
            // A link left on an interface that was re-created (another
            // ifindex, or 0 once its interface is gone), or by a namespace
            // that is gone: replace it.
            Some(link) => s.relink.push(Step::DetachTc {
                iface: name.clone(),
                link_id: link.id,
                hook,
            }),
            None => {}
        }
        s.links.push(Step::AttachTc {
            iface: name.clone(),
            ifindex: dev.ifindex,
            hook,
        });
    }
    for (name, link) in links {
        if !wanted(name) {
            s.detach.push(Step::DetachTc {
                iface: name.clone(),
                link_id: link.id,
                hook,
            });
        }
    }
}

/// The XDP mode to attach with. `auto` is what the kernel would choose,
/// made explicit where the plan can tell: generic (skb) on a raw-IP link
/// (tun runs a native program only in TAP mode, where an IFF_TUN packet
/// would never meet it; WireGuard, wwan and tunnels have no native XDP)
/// and on a device whose driver advertises no native XDP (`NetDev::
/// native_xdp`). The entry must know before the attach which mode the
/// packets will meet (`may_csum_complete`).
pub(super) fn effective_mode(want: XdpMode, dev: &NetDev) -> XdpMode {
    let generic = dev.framing() == Ok(Framing::RawIp) || dev.native_xdp == Some(false);
    if want == XdpMode::Auto && generic {
        XdpMode::Skb
    } else {
        want
    }
}

/// Device kinds that hand generic XDP only skbs their peer sent from this
/// host (CHECKSUM_PARTIAL or verified, never COMPLETE): a veth or netkit
/// pair, and a TAP (`tun` kind with an Ethernet link type), whose packets
/// come from a process with at most a virtio header (partial or valid).
const NEVER_COMPLETE_KINDS: &[&str] = &["veth", "netkit", "tun"];

/// Does this link hand generic XDP skbs with CHECKSUM_COMPLETE (which an
/// IPv4 insert would break, `IFACE_SKB`)? Decapsulating IP tunnels keep
/// the outer packet's; a NIC's driver may compute it, and a bridge, bond,
/// VLAN or macvlan device passes on its lower device's. Not a `none` link
/// (tun's virtio header only says partial or verified, WireGuard marks
/// what it decrypted verified, wwan raw-ip leaves it unchecked), nor the
/// kinds above, nor loopback. A snapshot without the link type (older
/// than it) is not flagged.
pub(super) fn may_csum_complete(dev: &NetDev) -> bool {
    match dev.link_type.as_deref() {
        Some("ipip" | "tunnel6" | "sit" | "gre" | "gre6") => true,
        Some("ether") => !dev
            .kind
            .as_deref()
            .is_some_and(|k| NEVER_COMPLETE_KINDS.contains(&k)),
        _ => false,
    }
}

fn mode_matches(want: XdpMode, have: AttachMode) -> bool {
    match want {
        XdpMode::Auto => true,
        XdpMode::Native => have == AttachMode::Native,
        XdpMode::Skb => have == AttachMode::Skb,
    }
}
