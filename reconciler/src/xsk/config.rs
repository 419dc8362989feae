//! What to open: the interface and the sizes of the socket's memory.

/// Which interface: by name (resolved in the caller's namespace) or index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    Name(String),
    Index(u32),
}

impl From<&str> for Interface {
    fn from(s: &str) -> Self {
        Interface::Name(s.to_string())
    }
}

impl From<u32> for Interface {
    fn from(i: u32) -> Self {
        Interface::Index(i)
    }
}

impl std::fmt::Display for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interface::Name(n) => write!(f, "{n}"),
            Interface::Index(i) => write!(f, "ifindex {i}"),
        }
    }
}

/// Sizes of the socket's memory. The defaults hold 512 frames of 2 KiB
/// (1 MiB of UMEM): control packets are under 150 bytes, and 512 in flight
/// is far more than an idle-subflow trigger produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// UMEM frames = TX ring slots = completion ring slots; a power of two.
    pub frames: u32,
    /// Bytes per UMEM frame (the largest frame sendable): a power of two
    /// from 2048 to the page size (aligned UMEM mode).
    pub frame_size: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            frames: 512,
            frame_size: 2048,
        }
    }
}
