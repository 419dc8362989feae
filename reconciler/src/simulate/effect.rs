//! What the datapath did to one packet, read from its verdict and from the
//! difference between the options it was given and the ones it left.
use super::frame::{ADD_ADDR, MP_PRIO, Tcp, mptcp_options};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effect {
    /// The packet did not reach the stack (XDP_DROP / TC_ACT_SHOT).
    pub dropped: bool,
    /// ADD_ADDR options in the packet as captured: (address id, bytes).
    pub add_addr_in: Vec<(u8, Vec<u8>)>,
    /// Of those, how many are gone from the packet the stack gets.
    pub add_addr_removed: u32,
    /// ADD_ADDR options the datapath put in.
    pub add_addr_inserted: u32,
    pub mp_prio_inserted: u32,
    pub mp_prio_rewritten: u32,
    pub window_rewritten: bool,
    /// Bytes changed that none of the above explains.
    pub other_rewrite: bool,
}

impl Effect {
    /// Anything visible to the stack changed.
    pub fn changed(&self) -> bool {
        self.dropped
            || self.add_addr_removed > 0
            || self.add_addr_inserted > 0
            || self.mp_prio_inserted > 0
            || self.mp_prio_rewritten > 0
            || self.window_rewritten
            || self.other_rewrite
    }
}

fn of_subtype<'a>(o: &'a [(u8, &'a [u8])], st: u8) -> Vec<&'a [u8]> {
    o.iter()
        .filter(|(s, _)| *s == st)
        .map(|(_, b)| *b)
        .collect()
}

/// Options in `a` that `b` does not hold (a multiset difference).
fn missing(a: &[&[u8]], b: &[&[u8]]) -> u32 {
    let mut left: Vec<&[u8]> = b.to_vec();
    let mut n = 0;
    for x in a {
        if let Some(i) = left.iter().position(|y| y == x) {
            left.swap_remove(i);
        } else {
            n += 1;
        }
    }
    n
}

/// Compares the packet given (`input`, `before`) with the one the datapath
/// left (`after`, `None` when dropped).
pub fn compare(input: &[u8], before: &Tcp, output: Option<(&[u8], &Tcp)>) -> Effect {
    let in_opts = mptcp_options(&before.options);
    let in_aa = of_subtype(&in_opts, ADD_ADDR);
    let mut e = Effect {
        add_addr_in: in_aa
            .iter()
            .map(|b| (b.get(3).copied().unwrap_or(0), b.to_vec()))
            .collect(),
        ..Effect::default()
    };
    let Some((out, after)) = output else {
        e.dropped = true;
        e.add_addr_removed = in_aa.len() as u32;
        return e;
    };
    if out == input {
        return e;
    }
    let out_opts = mptcp_options(&after.options);
    let out_aa = of_subtype(&out_opts, ADD_ADDR);
    e.add_addr_removed = missing(&in_aa, &out_aa);
    e.add_addr_inserted = missing(&out_aa, &in_aa);
    let (in_p, out_p) = (
        of_subtype(&in_opts, MP_PRIO),
        of_subtype(&out_opts, MP_PRIO),
    );
    let new_prio = missing(&out_p, &in_p);
    let grown = (out_p.len() as u32).saturating_sub(in_p.len() as u32);
    e.mp_prio_inserted = grown;
    e.mp_prio_rewritten = new_prio - grown.min(new_prio);
    e.window_rewritten = before.window != after.window;
    e.other_rewrite = !(e.add_addr_removed > 0
        || e.add_addr_inserted > 0
        || e.mp_prio_inserted > 0
        || e.mp_prio_rewritten > 0
        || e.window_rewritten)
        || before.sport != after.sport
        || before.dport != after.dport
        || before.payload != after.payload;
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn t(options: Vec<u8>, window: u16) -> Tcp {
        let a = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Tcp {
            src: a,
            dst: a,
            sport: 1,
            dport: 2,
            flags: 0x10,
            window,
            payload: 0,
            options,
        }
    }
    const AA: [u8; 8] = [30, 8, 0x30, 7, 198, 51, 100, 2];

    #[test]
    fn nopped_add_addr_is_removed() {
        let before = t(AA.to_vec(), 10);
        let after = t(vec![1; 8], 10);
        let e = compare(b"a", &before, Some((b"b", &after)));
        assert_eq!(e.add_addr_removed, 1);
        assert!(!e.other_rewrite && !e.dropped);
        assert_eq!(e.add_addr_in[0].0, 7);
    }

    #[test]
    fn inserted_prio_and_window() {
        let before = t(vec![], 10);
        let after = t(vec![30, 3, 0x51, 1], 20);
        let e = compare(b"a", &before, Some((b"b", &after)));
        assert_eq!((e.mp_prio_inserted, e.mp_prio_rewritten), (1, 0));
        assert!(e.window_rewritten && !e.other_rewrite);
    }

    #[test]
    fn dropped_removes_everything() {
        let e = compare(b"a", &t(AA.to_vec(), 1), None);
        assert!(e.dropped && e.add_addr_removed == 1 && e.changed());
    }
}
