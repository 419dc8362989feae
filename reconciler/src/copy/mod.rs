//! Packet copy (issue 5): control packets for subflows that carry no
//! traffic, built in user space and sent through AF_XDP.
//!
//! * [`rules`]: the policy's rules resolved against the applied state;
//! * [`trigger`]: when a rule fires (pure, unit-tested);
//! * [`forge`]: the control frame for a captured subflow
//!   (`crate::packet::build_control`);
//! * [`runner`]: one round: decide, forge, send through the interface's
//!   AF_XDP socket (`crate::xsk`), count.
//!
//! What feeds the runner is the egress capture (the TC program recording
//! each subflow's newest seq/ack/DSS, docs/packet-copy.md).
pub mod capture;
pub mod forge;
pub mod rules;
pub mod runner;
pub mod task;
pub mod trigger;
