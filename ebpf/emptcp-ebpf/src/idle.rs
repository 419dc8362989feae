//! What a step can tell from the description alone: it has nothing to do
//! on this packet. The chain (`chain::jump`) then does not even call the
//! program (it counts it as the program would); the programs ask the same
//! question first. Below both, so neither reaches into the other.
use emptcp_common::{META_FLOW_TRACKED, META_FLOW_UNTRACKED, OPTS_BAD, XdpMeta};

use crate::options::{FIN, RST, SYN};

/// Is the packet one the actions may look into (options well formed, IP
/// length consistent with the frame)? The entry counted the others.
#[inline(always)]
pub fn well_formed(m: *const XdpMeta) -> bool {
    unsafe { (*m).opt_state != OPTS_BAD }
}

/// strip_add_addr: a malformed segment, or none with an ADD_ADDR.
#[inline(always)]
pub fn strip(m: *const XdpMeta) -> bool {
    !well_formed(m) || unsafe { (*m).add_addr.len } == 0
}

/// recover_add_addr: a malformed segment, a connection setup or teardown
/// segment (left alone), or record_flow already knows (untracked, or
/// nothing stored to deliver).
#[inline(always)]
pub fn recover(m: *const XdpMeta) -> bool {
    let (flags, known, due) = unsafe { ((*m).tcp_flags, (*m).flow, (*m).flow_due) };
    !well_formed(m)
        || flags & (SYN | FIN | RST) != 0
        || known == META_FLOW_UNTRACKED
        || (known == META_FLOW_TRACKED && due == 0)
}
