//! The object's identity, carried by every program of a load.
//!
//! User space stamps the first 8 bytes of the object's sha256 behind the
//! magic when it loads the object (aya `override_global`), and observe reads
//! the stamp back from the `.rodata` map each loaded program references. So
//! what runs behind a link or in a tail-call slot is known from the program
//! itself, not from the name of the pin it was found under: a load
//! interrupted after pinning, or a program put in place by hand, cannot
//! pass for the object the reconciler expects.

/// `EMPTCPID` + 8 bytes of the object's sha256 (zero: loaded without a stamp).
#[unsafe(no_mangle)]
static EMPTCP_OBJECT: [u8; 16] = *b"EMPTCPID\0\0\0\0\0\0\0\0";

/// Makes the calling program reference the stamp, so the kernel lists the
/// `.rodata` map among the program's maps. Called on a path each program
/// has (the verifier records the map whether or not the path runs).
#[inline(always)]
pub fn reference() {
    // SAFETY: a read of an immutable static; volatile keeps the reference.
    unsafe { core::ptr::read_volatile(&EMPTCP_OBJECT[8]) };
}
