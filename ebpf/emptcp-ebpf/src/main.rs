//! The emptcp datapath. One object, one program per action:
//!
//! * `entry` (XDP, attached to each interface) parses the packet, finds the
//!   first chain of the interface whose selector matches, writes the chain
//!   position into XDP metadata and tail-calls the chain's first action;
//! * each action (`actions/*.rs`) does its one job and tail-calls the next
//!   step through the pinned `PROGS` array, or returns XDP_PASS at the end;
//! * `tc_entry` and the `tc_` variants of the actions run the same chains
//!   at TC ingress, after GRO (interfaces with `ingress_hook: tc`), through
//!   `TC_PROGS`;
//! * `ingress_capture` (`capture/`; `tc_ingress_capture` at TC) records
//!   what the peer sends on the subflows packet copy tracks, before the
//!   chain (interfaces with `IFACE_CAPTURE`); the TC egress hook
//!   (`egress/`) records what the local end sends.
//! * `ingress_recover` (`recovery/`, TC ingress) builds the duplicate ACK
//!   that delivers a stored ADD_ADDR when no received packet has room.
//!
//! Every pointer is bounds-checked against data_end; anything the parser does
//! not understand leaves untouched with XDP_PASS, never XDP_ABORTED.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![feature(asm_experimental_arch)]
#![allow(internal_features)]

mod actions;
mod atomic;
mod capture;
mod chain;
mod csum;
mod egress;
mod entry;
mod flow;
mod hook;
mod identity;
mod idle;
mod insert;
mod maps;
mod options;
mod parse;
mod recovery;
mod scan;
mod sha256;
mod shared;
mod stats;
mod words;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that
    // could get here. `loop {}` keeps the signature without a call.
    loop {}
}

/// License of the programs; GPL-compatible so GPL-only helpers are available.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
