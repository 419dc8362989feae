//! The tables: one row per path, the machine they were measured on, and
//! the generated region of docs/benchmarks.md.
use std::fmt::Write as _;

use crate::{
    Args,
    measure::{self, Hook, Round},
    paths::{Path, Table},
};

pub struct Row {
    pub name: &'static str,
    table: Table,
    hook: Hook,
    /// The bare program with repeat 10^6 (its usual figure), median round.
    bare: f64,
    /// Added over the bare program, fresh frames: the median round and
    /// the range over the rounds.
    fresh: f64,
    lo: f64,
    hi: f64,
    /// Added with repeat 10^6 on one frame (hot paths only), median round.
    hot: Option<f64>,
    /// The bare program's single run (median round).
    bare_single: f64,
    target: Option<f64>,
    ratio_target: Option<f64>,
    /// Judged against another row of the same run (the joined subflow's).
    pub relative: Option<Relative>,
}

/// A row judged against another row of the same run: "no worse than it".
#[derive(Debug, Clone, Copy)]
pub struct Relative {
    /// Median over the rounds of (this row − the other row), fresh ns
    /// added, each round's pair measured in the same pass over the paths.
    pub delta: f64,
    /// What counts as noise: see [`Relative::of`].
    pub margin: f64,
}

impl Relative {
    /// Smallest margin: below the resolution the rounds resolve at all
    /// (the per-round figures are means of 2500 differences of single
    /// runs timed in whole ns).
    const FLOOR_NS: f64 = 5.0;

    /// From the rounds of this row (`a`) and of the other (`b`), paired
    /// round by round: a round's two figures share the machine's load of
    /// that pass, so their difference cancels what moved between passes.
    /// The margin is twice the median absolute deviation of those paired
    /// differences (the rounds' own spread of the comparison; a machine
    /// whose load swings between rounds widens it), at least
    /// [`Self::FLOOR_NS`]. Worse = the median difference above it.
    pub fn of(a: &[Round], b: &[Round]) -> Relative {
        let d: Vec<f64> = a.iter().zip(b).map(|(a, b)| a.added - b.added).collect();
        let delta = measure::median(&d);
        let dev: Vec<f64> = d.iter().map(|x| (x - delta).abs()).collect();
        Relative {
            delta,
            margin: (2.0 * measure::median(&dev)).max(Self::FLOOR_NS),
        }
    }

    pub fn missed(&self) -> bool {
        self.delta > self.margin
    }
}

impl Row {
    pub fn new(p: &Path, rounds: &[Round], hot: &[(f64, f64)]) -> Row {
        let adds: Vec<f64> = rounds.iter().map(|r| r.added).collect();
        let singles: Vec<f64> = rounds.iter().map(|r| r.bare).collect();
        let bares: Vec<f64> = hot.iter().map(|h| h.0).collect();
        let hots: Vec<f64> = hot.iter().map(|h| h.1).collect();
        Row {
            name: p.name,
            table: p.table,
            hook: p.hook,
            bare: if bares.is_empty() {
                f64::NAN
            } else {
                measure::median(&bares)
            },
            fresh: measure::median(&adds),
            lo: adds.iter().copied().fold(f64::INFINITY, f64::min),
            hi: adds.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            hot: (!hots.is_empty()).then(|| measure::median(&hots)),
            bare_single: measure::median(&singles),
            target: p.target,
            ratio_target: p.ratio_target,
            relative: None,
        }
    }

    /// What the target is judged on: the hot figure where the path has
    /// one (its frame needs no freshness), else the fresh one.
    fn judged(&self) -> f64 {
        self.hot.unwrap_or(self.fresh)
    }

    /// Whether a target of the row is missed; `bare` is the bare program's
    /// time on the row's hook in the same run ([`bare_of`]).
    pub fn missed(&self, bare: f64) -> bool {
        self.target.is_some_and(|t| self.judged() > t)
            || self.relative.is_some_and(|r| r.missed())
            || self.ratio_missed(bare)
    }

    fn ratio(&self, bare: f64) -> f64 {
        (bare + self.judged()) / bare
    }

    fn ratio_missed(&self, bare: f64) -> bool {
        self.ratio_target.is_some_and(|t| self.ratio(bare) > t)
    }

    pub fn hook(&self) -> Hook {
        self.hook
    }

    fn render(&self, bare: f64) -> String {
        let emptcp = bare + self.judged();
        let which = if self.hot.is_some() {
            "repeat"
        } else {
            "fresh"
        };
        let mut target = match self.target {
            None => String::new(),
            Some(t) if self.judged() > t => format!("≤ {t:.0} ns added ({which}) — **MISSED**"),
            Some(t) => format!("≤ {t:.0} ns added ({which}) — met"),
        };
        if let Some(t) = self.ratio_target {
            let verdict = if self.ratio_missed(bare) {
                "**MISSED**"
            } else {
                "met"
            };
            let _ = write!(target, "≤ {t}× bare ({which}) — {verdict}");
        }
        if let Some(r) = self.relative {
            let verdict = if r.missed() { "**MISSED**" } else { "met" };
            let _ = write!(
                target,
                "no worse than the initial-subflow row (fresh, paired by round): {:+.0} ns, margin {:.0} ns — {verdict}",
                r.delta, r.margin
            );
        }
        let hot = self.hot.map_or("".into(), |h| format!("{h:.0} ns"));
        format!(
            "| {} | **{:.0} ns** ({:.0}–{:.0}) | {hot} | {emptcp:.0} ns | {:.1}× | {target} |",
            self.name,
            self.fresh,
            self.lo,
            self.hi,
            emptcp / bare
        )
    }
}

/// The bare program's own time on `hook` with repeat 10^6: the median of
/// the rounds of every hot path of the hook.
pub fn bare_of(rows: &[Row], hook: Hook) -> f64 {
    let v: Vec<f64> = rows
        .iter()
        .filter(|r| r.hook == hook && !r.bare.is_nan())
        .map(|r| r.bare)
        .collect();
    if v.is_empty() {
        f64::NAN
    } else {
        measure::median(&v)
    }
}

pub fn render(args: &Args, rows: &[Row], memory: &str, load_start: &str, load_end: &str) -> String {
    let mut o = String::new();
    let bare = |h: Hook| bare_of(rows, h);
    let single = |h: Hook| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.hook == h)
            .map(|r| r.bare_single)
            .collect();
        // No row of the hook (`--only`): nothing to print for it.
        if v.is_empty() {
            f64::NAN
        } else {
            measure::median(&v)
        }
    };
    let (bx, bt) = (bare(Hook::Xdp), bare(Hook::Tc));
    let bti = bare(Hook::TcIngress);
    let _ = writeln!(
        o,
        "Measured {} on {} (release build; load average {load_start} at the start, {load_end} at \
the end), {} rounds over all paths, median round, {}. Bare XDP_PASS: {bx:.0} ns per run with repeat \
10^6, {:.0} ns as a single run; bare TC program: {bt:.0} / {:.0} ns.\n",
        emptcp_bench::now_utc(),
        emptcp_bench::machine(),
        args.rounds,
        args.flow_capacity.map_or(
            "connection tables at their default capacity".to_string(),
            |c| { format!("connection tables sized by flow_capacity {c} (not the default)") }
        ),
        single(Hook::Xdp),
        single(Hook::Tc),
    );
    let _ = writeln!(
        o,
        "*fresh*: {} frames per path and round, each new (its own flow or the next segment of \
one), each run once through the bare program and once through emptcp; the ns added is the mean \
of the middle half of the frame-by-frame differences (range over the rounds in brackets). \
*repeat*: where the frame stays what the path measures when it runs again, the same frame with \
repeat 10^6 through both. *emptcp* is bare (repeat) + added (repeat where measured, else \
fresh). Each path's counters moved exactly once per measured frame (else the command fails).\n",
        args.samples
    );
    for (table, title, h) in [
        (
            Table::Ingress,
            "ingress (XDP) path; bare XDP_PASS",
            Hook::Xdp,
        ),
        (
            Table::Egress,
            "egress (TC) path; bare TC program (`TCX_NEXT`)",
            Hook::Tc,
        ),
        (
            Table::Capture,
            "ingress, interface with the ingress capture (packet_copy); bare XDP_PASS",
            Hook::Xdp,
        ),
        (
            Table::TcIngress,
            "ingress at TC (`ingress_hook: tc`, after GRO); bare TC program (`TCX_NEXT`) on the same skbs",
            Hook::TcIngress,
        ),
    ] {
        if !rows.iter().any(|r| r.table == table) {
            continue; // `--only` left the whole table out
        }
        let b = match h {
            Hook::Xdp => bx,
            Hook::Tc => bt,
            Hook::TcIngress => bti,
        };
        let _ = writeln!(
            o,
            "| {title} {b:.0} ns | added, fresh | added, repeat | emptcp | ratio | target |\n|---|---|---|---|---|---|"
        );
        for r in rows.iter().filter(|r| r.table == table) {
            let _ = writeln!(o, "{}", r.render(b));
        }
        o.push('\n');
    }
    o.push_str(memory);
    o
}

/// This benchmark's generated region of docs/benchmarks.md.
pub const DOCS: emptcp_bench::Region = emptcp_bench::Region {
    begin: "<!-- generated by `scripts/bench.sh datapath --write-docs` (emptcp-bench-datapath): begin -->",
    end: "<!-- generated by `scripts/bench.sh datapath --write-docs`: end -->",
};

#[cfg(test)]
mod tests {
    use super::*;

    fn rounds(added: &[f64]) -> Vec<Round> {
        added
            .iter()
            .map(|&a| Round {
                bare: 50.0,
                added: a,
            })
            .collect()
    }

    fn row(added: f64, ratio_target: f64) -> Row {
        Row {
            name: "raw",
            table: Table::Ingress,
            hook: Hook::Xdp,
            bare: 8.0,
            fresh: added,
            lo: added,
            hi: added,
            hot: None,
            bare_single: 30.0,
            target: None,
            ratio_target: Some(ratio_target),
            relative: None,
        }
    }

    /// A ratio target compares emptcp's time (bare + added) with the bare
    /// program's of the same run.
    #[test]
    fn ratio_targets_are_judged_against_the_runs_bare_time() {
        // 8 ns bare + 4 added = 1.5x: met; + 5 = 1.625x: missed.
        assert!(!row(4.0, 1.5).missed(8.0));
        assert!(row(5.0, 1.5).missed(8.0));
        assert!(
            row(5.0, 1.5)
                .render(8.0)
                .contains("≤ 1.5× bare (fresh) — **MISSED**")
        );
        assert!(!row(70.0, 10.0).missed(8.0));
        assert!(row(73.0, 10.0).missed(8.0));
    }

    #[test]
    fn relative_is_judged_on_paired_rounds() {
        // The machine's load moves both rows together between rounds: the
        // paired difference stays 3 ns, within the 5 ns floor.
        let base = rounds(&[300.0, 420.0, 310.0, 500.0, 305.0]);
        let same = rounds(&[303.0, 423.0, 313.0, 503.0, 308.0]);
        let r = Relative::of(&same, &base);
        assert_eq!(r.delta, 3.0);
        assert!(!r.missed(), "{r:?}");
        // 40 ns worse in every round: missed, whatever the rounds' spread.
        let worse = rounds(&[340.0, 460.0, 350.0, 540.0, 345.0]);
        let r = Relative::of(&worse, &base);
        assert_eq!(r.delta, 40.0);
        assert!(r.missed(), "{r:?}");
        // Differences that swing both ways widen the margin (2 x MAD).
        let noisy = rounds(&[320.0, 400.0, 330.0, 480.0, 305.0]);
        let r = Relative::of(&noisy, &base);
        assert_eq!((r.delta, r.margin), (0.0, 40.0));
        assert!(!r.missed());
    }
}
