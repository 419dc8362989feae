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
        | RecordLayouts { .. }
        | CopyMap { .. }
        | Unpin { .. }
        | RemoveRoot { .. }
        | WriteMeta { .. } => describe_object(step),
        SetSlot { .. }
        | SetEgressSlot { .. }
        | SetTcSlot { .. }
        | ClearSlot { .. }
        | ClearEgressSlot { .. }
        | ClearTcSlot { .. } => describe_slot(step),
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
            "map {name}: definition changes (entries {} -> {}, key {} -> {}, value {} -> {}{}): {}",
            before.max_entries,
            after.max_entries,
            before.key_size,
            after.key_size,
            before.value_size,
            after.value_size,
            match (before.layout, after.layout) {
                (Some(b), Some(a)) if a != b => format!(", layout {b:016x} -> {a:016x}"),
                _ => String::new(),
            },
            if *migrate {
                "migrate entries to a new map"
            } else {
                "replace (entries rewritten or lost)"
            }
        ),
        LoadObject {
            object_sha256,
            creates_maps,
            programs,
            ..
        } => {
            let mut s = format!(
                "load eBPF object {}: {}",
                &object_sha256[..object_sha256.len().min(12)],
                programs_loaded(programs)
            );
            if !creates_maps.is_empty() {
                let _ = write!(s, " (creates maps {})", creates_maps.join(", "));
            }
            s
        }
        RecordLayouts { records } => format!(
            "record the key/value layouts of maps {}",
            records
                .iter()
                .map(|(m, f)| format!("{m} ({f:016x})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
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
        SetTcSlot {
            program,
            slot,
            before,
        } => match before {
            Some(id) => {
                format!("tc ingress tail-call slot {slot} ({program}): program {id} -> new")
            }
            None => format!("tc ingress tail-call slot {slot} ({program})"),
        },
        ClearSlot { slot, before } => format!("tail-call slot {slot} (program {before})"),
        ClearEgressSlot { slot, before } => {
            format!("egress tail-call slot {slot} (program {before})")
        }
        ClearTcSlot { slot, before } => {
            format!("tc ingress tail-call slot {slot} (program {before})")
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
        AttachTc {
            iface,
            hook: TcHook::IngressChains,
            ..
        } => format!(
            "attach TC ingress entry to {iface} (TCX link: the ingress chains run after GRO, ingress_hook: tc)"
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

/// One line of the step list: steps `first..=last` (0-based), all of one
/// kind of change.
struct StepLine {
    first: usize,
    last: usize,
    change: Change,
    text: String,
}

/// The step list: each step described, except that without `verbose` a
/// run of two or more tail-call slot steps of one kind and change is one
/// line, and a load counts the maps it creates instead of naming them.
fn step_lines(steps: &[Step], opts: TextOptions) -> Vec<StepLine> {
    let mut lines = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let change = steps[i].change();
        let run = if opts.verbose {
            1
        } else {
            steps[i..]
                .iter()
                .take_while(|s| {
                    s.change() == change
                        && slot_kind(s).is_some()
                        && slot_kind(s) == slot_kind(&steps[i])
                })
                .count()
                .max(1)
        };
        let text = match &steps[i] {
            _ if run > 1 => fold_slots(&steps[i..i + run]),
            Step::LoadObject {
                object_sha256,
                creates_maps,
                programs,
                ..
            } if !opts.verbose && !creates_maps.is_empty() => format!(
                "load eBPF object {}: {} (creates {} maps; -v names them)",
                &object_sha256[..object_sha256.len().min(12)],
                programs_loaded(programs),
                creates_maps.len()
            ),
            Step::RecordLayouts { records } if !opts.verbose && records.len() > 1 => format!(
                "record the key/value layouts of {} maps (-v names them)",
                records.len()
            ),
            step => describe(step),
        };
        lines.push(StepLine {
            first: i,
            last: i + run - 1,
            change,
            text,
        });
        i += run;
    }
    lines
}

/// Which tail-call slot steps fold together: sets or clears, of the
/// ingress or the egress program array.
fn slot_kind(step: &Step) -> Option<(&'static str, bool)> {
    match step {
        Step::SetSlot { .. } => Some(("tail-call", true)),
        Step::ClearSlot { .. } => Some(("tail-call", false)),
        Step::SetEgressSlot { .. } => Some(("egress tail-call", true)),
        Step::ClearEgressSlot { .. } => Some(("egress tail-call", false)),
        Step::SetTcSlot { .. } => Some(("tc ingress tail-call", true)),
        Step::ClearTcSlot { .. } => Some(("tc ingress tail-call", false)),
        _ => None,
    }
}

/// One line for a run of slot steps of one [`slot_kind`]: the slots, and
/// the programs set (or the program ids cleared).
fn fold_slots(run: &[Step]) -> String {
    let mut slots = Vec::new();
    let mut what = Vec::new();
    let mut replaced = Vec::new();
    for step in run {
        match step {
            Step::SetSlot {
                action: name,
                slot,
                before,
            }
            | Step::SetEgressSlot {
                program: name,
                slot,
                before,
            }
            | Step::SetTcSlot {
                program: name,
                slot,
                before,
            } => {
                slots.push(*slot);
                what.push(name.clone());
                replaced.extend(before.map(|id| id.to_string()));
            }
            Step::ClearSlot { slot, before }
            | Step::ClearEgressSlot { slot, before }
            | Step::ClearTcSlot { slot, before } => {
                slots.push(*slot);
                what.push(format!("program {before}"));
            }
            _ => unreachable!("only slot steps fold"),
        }
    }
    let (kind, _) = slot_kind(&run[0]).expect("a slot step");
    let mut text = format!("{kind} slots {} ({})", ranges(&slots), what.join(", "));
    if !replaced.is_empty() {
        let _ = write!(text, ": programs {} -> new", replaced.join(", "));
    }
    text
}

/// `0-5, 8` for slots 0, 1, 2, 3, 4, 5 and 8 (in the order given).
fn ranges(slots: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut k = 0;
    while k < slots.len() {
        let mut end = k;
        while end + 1 < slots.len() && slots[end + 1] == slots[end] + 1 {
            end += 1;
        }
        parts.push(if end == k {
            slots[k].to_string()
        } else {
            format!("{}-{}", slots[k], slots[end])
        });
        k = end + 1;
    }
    parts.join(", ")
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
/// How much the text rendering shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    /// Every step on its own line and the object's maps by name; folded
    /// otherwise (a run of tail-call slot steps on one line, the maps a
    /// load creates counted).
    pub verbose: bool,
}

/// [`render_text_with`] folded (the default of `plan` and `apply`).
pub fn render_text(plan: &Plan) -> String {
    render_text_with(plan, TextOptions::default())
}

/// The plan as text: a summary, one line per step (or per run of folded
/// steps), the notes, and the unified diff of the canonical views.
pub fn render_text_with(plan: &Plan, opts: TextOptions) -> String {
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
        let lines = step_lines(&plan.steps, opts);
        let number = |l: &StepLine| {
            if l.first == l.last {
                (l.first + 1).to_string()
            } else {
                format!("{}-{}", l.first + 1, l.last + 1)
            }
        };
        let width = lines
            .iter()
            .map(|l| number(l).len())
            .max()
            .unwrap_or(0)
            .max(3);
        for line in &lines {
            let (mark, st) = style(line.change);
            let n = number(line);
            let _ = writeln!(out, "{st}{n:>width$}. {mark} {}{st:#}", line.text);
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

/// The programs a load verifies, for the plan's text.
fn programs_loaded(programs: &[String]) -> String {
    match programs {
        [] => "no program".into(),
        [one] => format!("program {one}"),
        many => format!("programs {}", many.join(", ")),
    }
}
