//! Packets built in user space: pure ACKs that carry an MPTCP option, for
//! the cases where no received packet has room for it (a stored ADD_ADDR on
//! a pure download) and for packet copy (a duplicate ACK carrying MP_PRIO
//! or ADD_ADDR on an idle subflow, see docs/packet-copy.md). Pure
//! functions; tests compare every byte with packets built independently
//! (etherparse, options written by hand).
mod add_addr;
mod checksum;
mod control;
mod forge;
mod mptcp;

pub use add_addr::{AddAddr, AddAddrAuth, add_addr, add_addr_hmac, mptcp_hmac};
pub use checksum::{checksum, tcp_checksum};
pub use control::{ControlAck, Flow, Signal, Timestamps, build_control, control_options};
pub use forge::{ACK, AckSpec, ForgeError, SYN, build_ack};
pub use mptcp::{DataAck, KIND_MPTCP, dss_data_ack, mp_prio};
