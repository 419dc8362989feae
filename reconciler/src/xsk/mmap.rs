//! Owned memory mappings: the UMEM (anonymous, ours) and the rings (the
//! kernel's, mapped from the socket at fixed page offsets).
use std::{io, os::fd::AsRawFd, ptr::NonNull};

pub(super) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mmap {
    /// Anonymous, private, pre-faulted memory for the UMEM. Page aligned,
    /// as XDP_UMEM_REG requires.
    pub(super) fn anonymous(len: usize) -> io::Result<Mmap> {
        Self::map(
            len,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    }

    /// A ring of the AF_XDP socket `fd`, at the page offset that names it
    /// (XDP_PGOFF_TX_RING, XDP_UMEM_PGOFF_COMPLETION_RING).
    pub(super) fn ring(fd: &impl AsRawFd, len: usize, offset: u64) -> io::Result<Mmap> {
        Self::map(
            len,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
            offset as libc::off_t,
        )
    }

    fn map(len: usize, flags: i32, fd: i32, offset: libc::off_t) -> io::Result<Mmap> {
        // SAFETY: a fresh mapping at an address the kernel picks; nothing
        // else refers to it until we hand out its pointer.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Mmap { ptr, len })
    }

    pub(super) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: we own the mapping; every pointer into it lives in the
        // same Sender and is dropped with it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
