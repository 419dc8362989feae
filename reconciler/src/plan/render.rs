//! Rendering of a plan: text (grouped `+ ~ -` lines and a unified diff of
//! the canonical views, coloured only on a terminal) and JSON.
use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};

use super::{Change, Plan, Step};
use crate::{
    layout::TcHook,
    state::{Dir, PortEntry},
};

fn human_bytes(b: u64) -> String {
    crate::policy::ByteSize(b).to_string()
}

fn ports(entries: &[PortEntry]) -> String {
    let dir = match entries.first().map(|p| p.dir) {
        Some(Dir::Local) => "local",
        _ => "remote",
    };
    let list: Vec<String> = entries.iter().map(|p| p.port.to_string()).collect();
    format!("{dir} ports [{}]", list.join(", "))
}

/// One line describing a step (without its `+ ~ -` marker).
pub fn describe(step: &Step) -> String {
    use Step::*;
    match step {
        RetireMap { .. }
        | LoadObject { .. }
        | CopyMap { .. }
        | Unpin { .. }
        | RemoveRoot { .. }
        | WriteMeta { .. } => describe_object(step),
        SetSlot { .. } | SetEgressSlot { .. } | ClearSlot { .. } | ClearEgressSlot { .. } => {
            describe_slot(step)
        }
        PutThresholds { .. }
        | PutChain { .. }
        | PutPrefix { .. }
        | PutPorts { .. }
        | PutSelector { .. }
        | PutIface { .. }
        | PutEgressIface { .. }
        | DeleteIface { .. }
        | DeleteEgressIface { .. }
        | DeletePorts { .. }
        | DeletePrefix { .. }
        | DeleteSelector { .. }
        | DeleteThresholds { .. }
        | DeleteChain { .. } => describe_entry(step),
        DetachForeign { .. }
        | Attach { .. }
        | UpdateLink { .. }
        | AttachTc { .. }
        | UpdateTcLink { .. }
        | Detach { .. }
        | DetachTc { .. } => describe_link(step),
    }
}

/// [`describe`] of the steps on maps, the object, pins, META.
fn describe_object(step: &Step) -> String {
    use Step::*;
    match step {
        RetireMap {
            name,
            before,
            after,
            migrate,
        } => format!(
            "map {name}: definition changes (entries {} -> {}, key {} -> {}, value {} -> {}): {}",
            before.max_entries,
            after.max_entries,
            before.key_size,
            after.key_size,
            before.value_size,
            after.value_size,
            if *migrate {
                "migrate entries to a new map"
            } else {
                "replace (entries rewritten or lost)"
            }
        ),
        LoadObject {
            object_sha256,
            creates_maps,
            ..
        } => {
            let mut s = format!(
                "load eBPF object {}",
                &object_sha256[..object_sha256.len().min(12)]
            );
            if !creates_maps.is_empty() {
                let _ = write!(s, " (creates maps {})", creates_maps.join(", "));
            }
            s
        }
        CopyMap { name } => format!("map {name}: copy entries from the old map"),
        Unpin { path, what } => format!("unpin {path} ({what})"),
        RemoveRoot { path } => format!("remove {path}"),
        WriteMeta { object_sha256 } => {
            format!(
                "record object {} as converged",
                &object_sha256[..object_sha256.len().min(12)]
            )
        }
        _ => unreachable!("describe dispatches by kind"),
    }
}

/// [`describe`] of the steps on tail-call slots.
fn describe_slot(step: &Step) -> String {
    use Step::*;
    match step {
        SetSlot {
            action,
            slot,
            before,
        } => match before {
            Some(id) => format!("tail-call slot {slot} ({action}): program {id} -> new"),
            None => format!("tail-call slot {slot} ({action})"),
        },
        SetEgressSlot {
            program,
            slot,
            before,
        } => match before {
            Some(id) => format!("egress tail-call slot {slot} ({program}): program {id} -> new"),
            None => format!("egress tail-call slot {slot} ({program})"),
        },
        ClearSlot { slot, before } => format!("tail-call slot {slot} (program {before})"),
        ClearEgressSlot { slot, before } => {
            format!("egress tail-call slot {slot} (program {before})")
        }
        _ => unreachable!("describe dispatches by kind"),
    }
}

/// [`describe`] of the steps on configuration map entries.
fn describe_entry(step: &Step) -> String {
    use Step::*;
    match step {
        PutThresholds {
            chain,
            before,
            after,
            ..
        } => {
            let mut parts = Vec::new();
            for (name, old, new) in [
                (
                    "remove_below",
                    before.map(|b| b.remove_below),
                    after.remove_below,
                ),
                ("recover_at", before.map(|b| b.recover_at), after.recover_at),
            ] {
                match old {
                    None => parts.push(format!("{name} {}", human_bytes(new))),
                    Some(o) if o != new => {
                        parts.push(format!("{name} {} -> {}", human_bytes(o), human_bytes(new)))
                    }
                    Some(_) => {}
                }
            }
            format!("thresholds of chain {chain}: {}", parts.join(", "))
        }
        PutChain { id, after, .. } => {
            let acts: Vec<&str> = after.steps.iter().map(|s| s.action.as_str()).collect();
            format!(
                "chain {} (id {id}): actions [{}]",
                after.name,
                acts.join(", ")
            )
        }
        PutPrefix { chain, entry } => {
            format!("chain {chain}: {} prefix {}", dir(entry.dir), entry.prefix)
        }
        PutPorts { chain, entries } => format!("chain {chain}: {}", ports(entries)),
        PutSelector { chain, after, .. } => format!("selector of chain {chain} (flags {after:#x})"),
        PutIface { ifindex, after, .. } => format!(
            "interface {} (ifindex {ifindex}): chain ids {:?}{}",
            after.name,
            after.chains,
            if after.capture {
                ", capture (packet copy)"
            } else {
                ""
            }
        ),
        PutEgressIface { ifindex, after, .. } => format!(
            "interface {} (ifindex {ifindex}): egress chain ids {:?}{}",
            after.name,
            after.chains,
            if after.track {
                ", track (the joins and ADD_ADDR echoes sent)"
            } else {
                ""
            }
        ),
        DeleteIface { before, .. } => format!("interface {} chain list", before.name),
        DeleteEgressIface { before, .. } => {
            format!("interface {} egress chain list", before.name)
        }
        DeletePorts { chain, entries } => format!("chain {chain}: {}", ports(entries)),
        DeletePrefix { chain, entry } => {
            format!("chain {chain}: {} prefix {}", dir(entry.dir), entry.prefix)
        }
        DeleteSelector { chain, .. } => format!("selector of chain {chain}"),
        DeleteThresholds { chain, .. } => format!("thresholds of chain {chain}"),
        DeleteChain { id, before } => format!("chain {} (id {id})", before.name),
        _ => unreachable!("describe dispatches by kind"),
    }
}

/// [`describe`] of the steps on XDP and TCX links.
fn describe_link(step: &Step) -> String {
    use Step::*;
    match step {
        DetachForeign {
            iface,
            prog_id,
            prog_name,
            mode,
        } => {
            format!("foreign XDP program {prog_name} (id {prog_id}, {mode:?}) on {iface} (--force)")
        }
        Attach { iface, mode, .. } => format!("attach XDP entry to {iface} (mode {mode:?})"),
        UpdateLink {
            iface,
            link_id,
            before_prog,
        } => format!(
            "replace program behind link {link_id} on {iface} (program {before_prog} -> new, atomic)"
        ),
        AttachTc {
            iface,
            hook: TcHook::Egress,
            ..
        } => format!("attach TC egress entry to {iface} (TCX link)"),
        AttachTc {
            iface,
            hook: TcHook::Ingress,
            ..
        } => format!(
            "attach TC ingress recovery to {iface} (TCX link: stored ADD_ADDRs reach a pure download without a daemon)"
        ),
        UpdateTcLink {
            iface,
            link_id,
            before_prog,
            hook,
        } => format!(
            "replace program behind TCX {} link {link_id} on {iface} (program {before_prog} -> new, atomic)",
            hook.as_str()
        ),
        Detach { iface, link_id } => format!("detach XDP link {link_id} from {iface}"),
        DetachTc {
            iface,
            link_id,
            hook,
        } => format!("detach TCX {} link {link_id} from {iface}", hook.as_str()),
        _ => unreachable!("describe dispatches by kind"),
    }
}

fn dir(d: Dir) -> &'static str {
    match d {
        Dir::Remote => "remote",
        Dir::Local => "local",
    }
}

fn style(c: Change) -> (char, Style) {
    match c {
        Change::Add => ('+', AnsiColor::Green.on_default()),
        Change::Modify => ('~', AnsiColor::Yellow.on_default()),
        Change::Remove => ('-', AnsiColor::Red.on_default()),
    }
}

/// Text rendering. ANSI codes are always emitted; write through
/// `anstream`, which strips them when the output is not a terminal.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    let count = |c: Change| plan.steps.iter().filter(|s| s.change() == c).count();
    if plan.steps.is_empty() {
        out.push_str("No changes. The live state matches the policy.\n");
    } else {
        let _ = writeln!(
            out,
            "Plan: {} to add, {} to change, {} to remove.",
            count(Change::Add),
            count(Change::Modify),
            count(Change::Remove)
        );
        for (i, step) in plan.steps.iter().enumerate() {
            let (mark, st) = style(step.change());
            let _ = writeln!(out, "{st}{:>3}. {mark} {}{st:#}", i + 1, describe(step));
        }
    }
    for n in &plan.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let before = plan.before.to_yaml();
    let after = plan.after.to_yaml();
    if before != after {
        out.push_str("\nDiff (observed -> desired):\n");
        let diff = similar::TextDiff::from_lines(&before, &after);
        for line in diff
            .unified_diff()
            .context_radius(3)
            .header("observed", "desired")
            .to_string()
            .lines()
        {
            let st = if line.starts_with('+') && !line.starts_with("+++") {
                AnsiColor::Green.on_default()
            } else if line.starts_with('-') && !line.starts_with("---") {
                AnsiColor::Red.on_default()
            } else if line.starts_with("@@") {
                AnsiColor::Cyan.on_default()
            } else {
                Style::new()
            };
            let _ = writeln!(out, "{st}{line}{st:#}");
        }
    }
    out
}

pub fn render_json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).unwrap_or_default()
}
