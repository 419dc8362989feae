//! Packets built in user space: pure ACKs that carry an MPTCP option, for
//! the cases where no received packet has room for it (a stored ADD_ADDR on
//! a pure download, delivered by the recovery agent) and for packet copy (a
//! duplicate ACK carrying MP_PRIO or ADD_ADDR on an idle subflow, see
//! docs/packet-copy.md). [`build_control`] is the one builder of those
//! control frames, [`build_ack`] their wire encoding; both are pure, and
//! tests compare every byte with packets built independently (etherparse,
//! options written by hand). [`Transmit`] is where a built frame goes:
//! injection into the local stack's receive path (the agent), an AF_XDP socket
//! (packet copy) or a recorder (tests).
mod add_addr;
mod checksum;
mod control;
mod frame;
mod mptcp;
mod transmit;

pub use add_addr::{AddAddr, AddAddrAuth, add_addr, add_addr_hmac, mptcp_hmac};
pub use checksum::{checksum, tcp_checksum};
pub use control::{
    ControlAck, Flow, Signal, StoredOption, Timestamps, build_control, control_options, fit,
};
pub use frame::{ACK, AckSpec, ForgeError, SYN, build_ack};
pub use mptcp::{DataAck, KIND_MPTCP, dss_data_ack, mp_prio, token};
pub use transmit::{AfXdp, Ingress, Recorder, Transmit, TransmitError};
