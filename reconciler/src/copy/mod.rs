//! Packet copy (docs/packet-copy.md): control packets for subflows that carry no
//! traffic, built in user space and sent through AF_XDP.
//!
//! * [`rules`]: the policy's rules resolved against the applied state;
//! * [`trigger`]: when a rule fires (pure, unit-tested);
//! * [`forge`]: the control frame for a captured subflow
//!   (`crate::packet::build_control`);
//! * [`runner`]: one round: decide, build, send through the interface's
//!   AF_XDP socket (`crate::packet::AfXdp`), count;
//! * [`capture`]: what the datapath recorded per subflow (`SUBFLOWS`), as
//!   the runner needs it;
//! * [`task`]: the async task of `emptcp watch` (own tokio runtime thread)
//!   that runs the rounds, woken by the capture's ring buffer (`AsyncFd`),
//!   the idle deadlines and policy changes.
pub mod capture;
pub mod forge;
pub mod rules;
pub mod runner;
pub mod task;
pub mod trigger;
