//! Packet copy (issue 5): control packets for subflows that carry no
//! traffic, built in user space and sent through AF_XDP.
//!
//! * [`trigger`]: when a `packet_copy` rule fires (pure, unit-tested);
//! * `crate::packet::control`: the forged duplicate ACK with its option;
//! * `crate::xsk`: the TX-only AF_XDP sender.
//!
//! The capture that feeds the triggers (the TC egress program recording
//! each subflow's newest seq/ack/DSS) and the daemon loop that joins the
//! three are the next steps (docs/packet-copy.md).
pub mod forge;
pub mod rules;
pub mod trigger;
