//! The TC ingress hook of the datapath tests: the object with its chains run
//! by `tc_entry` and the `tc_*` action programs (through `TC_PROGS`), an skb
//! per run (BPF_PROG_TEST_RUN), so the same frames can go through either
//! hook and their results be compared.
use aya::{
    maps::{MapData, PerCpuArray, ProgramArray},
    programs::SchedClassifier,
};

use super::{skb::*, *};

/// The object with its ingress chains on the TC hook.
pub struct Tc {
    pub dp: Dp,
    /// Keeps the tail-call slots alive.
    _tc_progs: ProgramArray<MapData>,
}

/// The object with [`CHAIN`] = `steps` on the loopback interface, run on the
/// TC ingress hook.
pub fn tc_with(steps: &[(Action, u32)]) -> Tc {
    Tc::on(dp_with(steps))
}

impl Tc {
    /// `dp`'s chains on the TC hook: `tc_entry` and every `tc_*` action
    /// program loaded, `TC_PROGS` filled as apply fills it.
    pub fn on(mut dp: Dp) -> Tc {
        let progs = tc_progs(&mut dp);
        Tc {
            dp,
            _tc_progs: progs,
        }
    }

    /// Runs `frame` through `tc_entry` (the whole chain), arrived on the
    /// loopback interface; `gso_size` non-zero makes the skb a GSO one.
    /// The verdict is given as the XDP one it stands for (`TCX_NEXT` as
    /// XDP_PASS, `TC_ACT_SHOT` as XDP_DROP), so a result compares with the
    /// XDP hook's.
    pub fn entry_gso(&self, frame: &[u8], gso_size: u32) -> Run {
        self.run(emptcp_common::TC_ENTRY, frame, gso_size)
    }

    pub fn entry(&self, frame: &[u8]) -> Run {
        self.entry_gso(frame, 0)
    }

    /// Runs `frame` through one action's TC program with the description
    /// the entry would have written for step `pos` of chain `chain` in
    /// `TC_DESC` (invalidated again after the run).
    pub fn action(&mut self, a: Action, chain: u32, pos: u32, frame: &[u8]) -> Run {
        let meta = describe(frame, chain, pos, &self.dp.steps[&chain]);
        self.set_description(meta);
        let r = self.run(emptcp_common::tc_program(a), frame, 0);
        self.set_description(XdpMeta::default());
        r
    }

    fn set_description(&mut self, m: XdpMeta) {
        let mut d: PerCpuArray<_, XdpMeta> =
            PerCpuArray::try_from(self.dp.ebpf.map_mut("TC_DESC").unwrap()).unwrap();
        let n = aya::util::nr_cpus().expect("number of CPUs");
        d.set(0, aya::maps::PerCpuValues::try_from(vec![m; n]).unwrap(), 0)
            .unwrap();
    }

    fn run(&self, prog: &str, frame: &[u8], gso_size: u32) -> Run {
        run_tc(&self.dp, prog, frame, gso_size)
    }
}

/// `tc_entry` and every `tc_*` action program of `dp` loaded, `TC_PROGS`
/// filled as apply fills it; the slots live as long as the array returned.
pub fn tc_progs(dp: &mut Dp) -> ProgramArray<MapData> {
    let slots = Action::ALL
        .iter()
        .map(|a| (emptcp_common::tc_program(*a), *a as u32))
        .chain([(
            emptcp_common::TC_RECORD_SETUP,
            emptcp_common::RECORD_SETUP_SLOT,
        )]);
    tc_slots(dp, slots)
}

/// `tc_entry` loaded and the programs `slots` names in their slots of
/// `TC_PROGS` (only these: verifying the others is most of a test's time
/// in the emulated guest).
pub fn tc_slots<'a>(
    dp: &mut Dp,
    slots: impl IntoIterator<Item = (&'a str, u32)>,
) -> ProgramArray<MapData> {
    dp.need(emptcp_common::TC_ENTRY);
    let mut progs = ProgramArray::try_from(dp.ebpf.take_map("TC_PROGS").unwrap()).unwrap();
    for (name, slot) in slots {
        dp.need(name);
        let p: &SchedClassifier = dp.ebpf.program(name).unwrap().try_into().unwrap();
        progs.set(slot, p.fd().unwrap(), 0).unwrap();
    }
    progs
}

/// Runs `frame` through the TC ingress program `prog` of `dp` as an skb
/// arrived on the loopback interface; `gso_size` non-zero makes it a GSO
/// skb. The verdict is given as the XDP one it stands for.
pub fn run_tc(dp: &Dp, prog: &str, frame: &[u8], gso_size: u32) -> Run {
    let skb = Skb {
        ingress_ifindex: LO,
        gso_size,
        ..Skb::default()
    };
    let r = run_skb(dp, prog, frame, skb);
    let verdict = match r.ret {
        TCX_NEXT => XDP_PASS,
        TC_ACT_SHOT => XDP_DROP,
        v => panic!("{prog} returned {v}, neither TCX_NEXT nor TC_ACT_SHOT"),
    };
    Run {
        verdict,
        frame: r.frame,
        meta_left: 0,
    }
}
