//! emptcp: a declarative reconciler for eBPF programs that steer Multipath TCP.
//!
//! The pipeline, one module per stage, data flowing one way:
//! [`policy`] (read + validate the YAML) -> [`desired`] (what the kernel
//! should hold) -> [`observe`] (what it holds) -> [`plan`] (a pure diff) ->
//! [`apply`] (kernel I/O). See docs/architecture.md.
pub mod agent;
pub mod apply;
pub mod cli;
pub mod codec;
pub mod copy;
pub mod counters;
pub mod desired;
pub mod flows;
pub mod identity;
pub mod kernel;
pub mod layout;
pub mod netdev;
pub mod netns;
pub mod nlmsg;
pub mod object;
pub mod observe;
pub mod packet;
pub mod plan;
pub mod privilege;
pub mod simulate;
pub mod state;
pub mod status;
pub mod sys;
pub mod table_fill;
pub mod watch;
pub mod xdp_features;
pub mod xsk;

/// The policy stage is the crate `emptcp-policy` (policy/): it depends on
/// nothing of the reconciler.
pub use emptcp_policy as policy;
