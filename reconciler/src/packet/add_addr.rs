//! ADD_ADDR (RFC 8684 section 3.4.1) with its truncated HMAC.
//!
//! ```text
//!  kind=30 | length | subtype=3 (4 bits), reserved (3), E | address id
//!  address (4 or 16 octets) | port (2, optional) | truncated HMAC (8, when E=0)
//! ```
//! Lengths: IPv4 16 (18 with a port), IPv6 28 (30); an echo (E=1) has no
//! HMAC: 8 (10), 20 (22).
//!
//! The HMAC is HMAC-SHA256 with key = the sender's key followed by the
//! receiver's key (each 8 bytes, big-endian as on the wire in MP_CAPABLE)
//! over address id || address || port, where the port is two zero bytes
//! when the option carries none (RFC 8684: "the HMAC message will
//! nevertheless include 2 octets of value zero"; Linux
//! net/mptcp/options.c add_addr_generate_hmac always appends the port). The
//! option carries the RIGHTMOST 64 bits of the digest: RFC 8684 section
//! 3.4.1, and Linux since commit 12555a2d97e5 ("mptcp: use rightmost 64
//! bits in ADD_ADDR HMAC"). Linux verifies the HMAC of every ADD_ADDR it
//! receives and ignores a wrong one without any counter, so this must be
//! exact.
use std::net::IpAddr;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::mptcp::{KIND_MPTCP, SUBTYPE_ADD_ADDR};

/// The E flag: this ADD_ADDR echoes one received (no HMAC).
const ADD_ADDR_ECHO: u8 = 0x01;

/// How the option is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddAddrAuth {
    /// An announcement: carries the truncated HMAC computed from the
    /// connection's keys (from the MP_CAPABLE handshake).
    Hmac { sender_key: u64, receiver_key: u64 },
    /// An echo of an announcement received (E=1): no HMAC.
    Echo,
}

/// One ADD_ADDR option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddAddr {
    pub id: u8,
    pub addr: IpAddr,
    pub port: Option<u16>,
    pub auth: AddAddrAuth,
}

/// HMAC-SHA256 keyed with `key1 || key2` (big-endian), the MPTCP HMAC of
/// Linux's `mptcp_crypto_hmac_sha(key1, key2, msg, len, hmac)`.
pub fn mptcp_hmac(key1: u64, key2: u64, msg: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&key1.to_be_bytes());
    key[8..].copy_from_slice(&key2.to_be_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The truncated HMAC an ADD_ADDR sent by the holder of `sender_key` to the
/// holder of `receiver_key` carries.
pub fn add_addr_hmac(
    sender_key: u64,
    receiver_key: u64,
    id: u8,
    addr: IpAddr,
    port: Option<u16>,
) -> [u8; 8] {
    let mut msg = Vec::with_capacity(19);
    msg.push(id);
    match addr {
        IpAddr::V4(a) => msg.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => msg.extend_from_slice(&a.octets()),
    }
    msg.extend_from_slice(&port.unwrap_or(0).to_be_bytes());
    let digest = mptcp_hmac(sender_key, receiver_key, &msg);
    digest[24..].try_into().expect("8 bytes")
}

/// The option's bytes (unpadded).
pub fn add_addr(a: &AddAddr) -> Vec<u8> {
    let echo = matches!(a.auth, AddAddrAuth::Echo);
    let mut o = vec![
        KIND_MPTCP,
        0, // length, set below
        (SUBTYPE_ADD_ADDR << 4) | if echo { ADD_ADDR_ECHO } else { 0 },
        a.id,
    ];
    match a.addr {
        IpAddr::V4(v4) => o.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => o.extend_from_slice(&v6.octets()),
    }
    if let Some(p) = a.port {
        o.extend_from_slice(&p.to_be_bytes());
    }
    if let AddAddrAuth::Hmac {
        sender_key,
        receiver_key,
    } = a.auth
    {
        o.extend_from_slice(&add_addr_hmac(
            sender_key,
            receiver_key,
            a.id,
            a.addr,
            a.port,
        ));
    }
    o[1] = o.len() as u8;
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: u64 = 0x0123_4567_89ab_cdef;
    const KEY_B: u64 = 0xfedc_ba98_7654_3210;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// The vectors of Linux's own test of `mptcp_crypto_hmac_sha`
    /// (net/mptcp/crypto_test.c): the key strings are ASCII, split into
    /// two big-endian u64 (key1 = first 8 characters), the message is
    /// ASCII. They prove the key layout (key1 || key2, big-endian).
    #[test]
    fn mptcp_hmac_matches_the_kernel_crypto_test_vectors() {
        let cases = [
            (
                "0b0b0b0b0b0b0b0b",
                "48692054",
                "8385e24fb4235ac37556b6b886db106284a1da671699f46db1f235ec622dcafa",
            ),
            (
                "aaaaaaaaaaaaaaaa",
                "dddddddd",
                "2c5e219164ff1dca1c4a92318d847bb6b9d44492984e1eb71aff9022f71046e9",
            ),
            (
                "0102030405060708",
                "cdcdcdcd",
                "e73b9ba9969969cefb04aa0d6df18ec2fcc075b6f23b4d8c4da736a5dbbc6e7d",
            ),
        ];
        for (key, msg, result) in cases {
            let k = key.as_bytes();
            let k1 = u64::from_be_bytes(k[..8].try_into().unwrap());
            let k2 = u64::from_be_bytes(k[8..].try_into().unwrap());
            assert_eq!(mptcp_hmac(k1, k2, msg.as_bytes()).to_vec(), hex(result));
        }
    }

    /// Hard-coded vectors computed outside this code base with Python's
    /// `hmac`/`hashlib` from the algorithm of Linux add_addr_generate_hmac:
    /// `hmac.new(struct.pack(">QQ", ka, kb), bytes([id]) + addr.packed +
    /// struct.pack(">H", port), sha256).digest()[-8:]`.
    #[test]
    fn add_addr_hmac_matches_independent_vectors() {
        assert_eq!(
            add_addr_hmac(KEY_A, KEY_B, 2, "198.51.100.2".parse().unwrap(), None).to_vec(),
            hex("e904cc4355e949e0")
        );
        assert_eq!(
            add_addr_hmac(KEY_A, KEY_B, 5, "2001:db8::2".parse().unwrap(), Some(8080)).to_vec(),
            hex("a00633c78842bd58")
        );
    }

    /// The RFC 8684 definition written out again with the hmac crate
    /// directly: key A||B, message id||address||port, rightmost 8 bytes.
    #[test]
    fn add_addr_hmac_is_the_rfc_definition() {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&hex("0123456789abcdeffedcba9876543210")).unwrap();
        mac.update(&[9, 203, 0, 113, 7, 0x1f, 0x90]);
        let full = mac.finalize().into_bytes();
        assert_eq!(
            add_addr_hmac(KEY_A, KEY_B, 9, "203.0.113.7".parse().unwrap(), Some(8080)),
            full[24..]
        );
        // The direction matters: the receiver's key first gives another HMAC.
        assert_ne!(
            add_addr_hmac(KEY_B, KEY_A, 9, "203.0.113.7".parse().unwrap(), Some(8080)),
            full[24..]
        );
    }

    #[test]
    fn add_addr_ipv4_with_hmac_no_port() {
        let o = add_addr(&AddAddr {
            id: 2,
            addr: "198.51.100.2".parse().unwrap(),
            port: None,
            auth: AddAddrAuth::Hmac {
                sender_key: KEY_A,
                receiver_key: KEY_B,
            },
        });
        let mut want = vec![30, 16, 0x30, 2, 198, 51, 100, 2];
        want.extend_from_slice(&hex("e904cc4355e949e0"));
        assert_eq!(o, want);
    }

    #[test]
    fn add_addr_ipv6_with_port_and_hmac() {
        let o = add_addr(&AddAddr {
            id: 5,
            addr: "2001:db8::2".parse().unwrap(),
            port: Some(8080),
            auth: AddAddrAuth::Hmac {
                sender_key: KEY_A,
                receiver_key: KEY_B,
            },
        });
        let mut want = vec![30, 30, 0x30, 5, 0x20, 0x01, 0x0d, 0xb8];
        want.extend_from_slice(&[0; 11]);
        want.push(2);
        want.extend_from_slice(&[0x1f, 0x90]);
        want.extend_from_slice(&hex("a00633c78842bd58"));
        assert_eq!(o, want);
    }

    #[test]
    fn add_addr_every_length() {
        let v4 = "192.0.2.9".parse().unwrap();
        let v6 = "2001:db8::9".parse().unwrap();
        let auth = AddAddrAuth::Hmac {
            sender_key: 1,
            receiver_key: 2,
        };
        let len = |addr, port, auth| {
            add_addr(&AddAddr {
                id: 1,
                addr,
                port,
                auth,
            })
            .len()
        };
        assert_eq!(len(v4, None, auth), 16);
        assert_eq!(len(v4, Some(1), auth), 18);
        assert_eq!(len(v6, None, auth), 28);
        assert_eq!(len(v6, Some(1), auth), 30);
        assert_eq!(len(v4, None, AddAddrAuth::Echo), 8);
        assert_eq!(len(v4, Some(1), AddAddrAuth::Echo), 10);
        assert_eq!(len(v6, None, AddAddrAuth::Echo), 20);
        assert_eq!(len(v6, Some(1), AddAddrAuth::Echo), 22);
    }

    #[test]
    fn add_addr_echo_sets_e_and_has_no_hmac() {
        let o = add_addr(&AddAddr {
            id: 3,
            addr: "192.0.2.9".parse().unwrap(),
            port: Some(443),
            auth: AddAddrAuth::Echo,
        });
        assert_eq!(o, [30, 10, 0x31, 3, 192, 0, 2, 9, 0x01, 0xbb]);
    }
}
