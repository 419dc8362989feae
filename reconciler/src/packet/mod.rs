//! Packets built in user space: pure ACKs that carry an MPTCP option, for
//! the cases where no received packet has room for it (a stored ADD_ADDR on
//! a pure download) and, later, for packet copy. Pure functions; tests
//! compare every byte with packets built independently (etherparse).
mod checksum;
mod forge;

pub use checksum::{checksum, tcp_checksum};
pub use forge::{ACK, AckSpec, SYN, build_ack};
