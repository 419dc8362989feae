//! MPTCP options a forged control packet carries (RFC 8684 section 3):
//! the DSS option reduced to its data ACK, and MP_PRIO. ADD_ADDR, which
//! needs the connection's keys, is in `add_addr`.
//!
//! Each builder returns the option's raw bytes (kind 30, length, subtype
//! in the high nibble of the third byte, then flags), unpadded: the frame
//! builder pads the whole option block.

/// TCP option kind of every MPTCP option.
pub const KIND_MPTCP: u8 = 30;
/// Subtypes (RFC 8684 section 3, high nibble of the third byte).
pub const SUBTYPE_DSS: u8 = 2;
pub const SUBTYPE_ADD_ADDR: u8 = 3;
pub const SUBTYPE_MP_PRIO: u8 = 5;

/// DSS flag bits (RFC 8684 section 3.3, low byte of the option's word).
const DSS_A: u8 = 0x01; // data ACK present
const DSS_A8: u8 = 0x02; // "a": the data ACK is 8 octets
/// MP_PRIO's B (backup) flag, the low bit next to the subtype.
const MP_PRIO_B: u8 = 0x01;

/// A connection's token (RFC 8684 3.2): the most significant 32 bits of
/// SHA-256 of the MP_CAPABLE key (as sent, 8 bytes) of the host that
/// receives the MP_JOIN SYNs naming it.
pub fn token(key: &[u8]) -> u32 {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(key);
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

/// The connection-level cumulative ACK, in the width the connection uses:
/// Linux sends 8 bytes once the peer has (`use_64bit_ack`), 4 otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataAck {
    /// Low 32 bits of the data sequence number acked.
    Ack32(u32),
    Ack64(u64),
}

/// DSS carrying only a data ACK (no mapping, no DATA_FIN): what a pure ACK
/// of an MPTCP connection carries, so the forged duplicate ACK repeats
/// the connection's current data ack instead of carrying none (a packet
/// without any MPTCP option after the handshake can make the peer fall
/// back to TCP). 8 bytes with a 4-byte ack, 12 with an 8-byte one.
pub fn dss_data_ack(ack: DataAck) -> Vec<u8> {
    match ack {
        DataAck::Ack32(a) => {
            let mut o = vec![KIND_MPTCP, 8, SUBTYPE_DSS << 4, DSS_A];
            o.extend_from_slice(&a.to_be_bytes());
            o
        }
        DataAck::Ack64(a) => {
            let mut o = vec![KIND_MPTCP, 12, SUBTYPE_DSS << 4, DSS_A | DSS_A8];
            o.extend_from_slice(&a.to_be_bytes());
            o
        }
    }
}

/// MP_PRIO (RFC 8684 section 3.3.8): asks the receiver to treat the
/// subflow it arrives on (`addr_id` None, length 3) or the subflows of
/// that address id (length 4) as backup (`backup`) or regular.
pub fn mp_prio(backup: bool, addr_id: Option<u8>) -> Vec<u8> {
    let flags = if backup { MP_PRIO_B } else { 0 };
    let mut o = vec![KIND_MPTCP, 3, (SUBTYPE_MP_PRIO << 4) | flags];
    if let Some(id) = addr_id {
        o[1] = 4;
        o.push(id);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected bytes are written out by hand from the RFC 8684 figures.

    #[test]
    fn dss_with_a_4_byte_data_ack() {
        assert_eq!(
            dss_data_ack(DataAck::Ack32(0x0102_0304)),
            [30, 8, 0x20, 0x01, 1, 2, 3, 4]
        );
    }

    #[test]
    fn dss_with_an_8_byte_data_ack() {
        assert_eq!(
            dss_data_ack(DataAck::Ack64(0x0102_0304_0506_0708)),
            [30, 12, 0x20, 0x03, 1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn mp_prio_lengths_and_backup_flag() {
        assert_eq!(mp_prio(true, None), [30, 3, 0x51]);
        assert_eq!(mp_prio(false, None), [30, 3, 0x50]);
        assert_eq!(mp_prio(true, Some(7)), [30, 4, 0x51, 7]);
        assert_eq!(mp_prio(false, Some(0)), [30, 4, 0x50, 0]);
    }
}
