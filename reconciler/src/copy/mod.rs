//! Packet copy (issue 5): control packets for subflows that carry no
//! traffic, built in user space and sent through AF_XDP.
//!
//! * [`rules`]: the policy's rules resolved against the applied state;
//! * [`trigger`]: when a rule fires (pure, unit-tested);
//! * [`forge`]: the control frame for a captured subflow
//!   (`crate::packet::build_control`);
//! * [`runner`]: one round: decide, forge, send through the interface's
//!   AF_XDP socket (`crate::xsk`), count;
//! * [`capture`]: what the TC egress program recorded per subflow
//!   (`SUBFLOWS`), as the runner needs it;
//! * [`task`]: the thread of `emptcp watch` that runs the rounds, woken by
//!   the capture's ring buffer and the idle deadlines.
pub mod capture;
pub mod forge;
pub mod rules;
pub mod runner;
pub mod task;
pub mod trigger;
