//! Reading a capture, one packet at a time (memory does not grow with the
//! trace): pcap (micro- and nanosecond), pcapng (per-interface link types,
//! time resolutions and names), either of them gzip-compressed.
use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
};

use pcap_parser::{
    Linktype, PcapBlockOwned, PcapError, create_reader,
    pcapng::Block,
    traits::{PcapNGPacketBlock as _, PcapReaderIterator},
};

/// The link layers a packet can be replayed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    /// An IP packet without a link header (LINKTYPE_RAW, IPV4, IPV6).
    RawIp,
    /// Linux cooked capture v1 (`tcpdump -i any`).
    Sll,
    /// Linux cooked capture v2.
    Sll2,
}

impl Link {
    fn of(t: Linktype) -> Option<Link> {
        match t {
            Linktype::ETHERNET => Some(Link::Ethernet),
            Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => Some(Link::RawIp),
            Linktype(12) | Linktype(14) => Some(Link::RawIp), // DLT_RAW on some BSDs
            Linktype::LINUX_SLL => Some(Link::Sll),
            Linktype::LINUX_SLL2 => Some(Link::Sll2),
            _ => None,
        }
    }
}

/// One captured packet.
#[derive(Debug, Clone)]
pub struct Packet {
    /// 1-based position in the capture.
    pub number: u64,
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub link: Link,
    /// The capturing interface's name (pcapng `if_name`), when recorded.
    pub iface: Option<String>,
    /// The captured bytes (possibly cut by the snaplen).
    pub data: Vec<u8>,
    /// The packet's length on the wire.
    pub orig_len: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("reading capture {path}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is empty: not a pcap or pcapng capture")]
    Empty { path: PathBuf },
    #[error(
        "{path} is not a pcap or pcapng capture (it starts with {magic}); replay takes what tcpdump -w, dumpcap or tshark -w write, optionally gzip-compressed"
    )]
    Magic { path: PathBuf, magic: String },
    #[error(
        "{path} is truncated: the record after packet {read} (at byte {offset}) is cut short; {read} packet(s) were read before it (was it copied while the capture was running? `editcap` rewrites it without the partial record)"
    )]
    Truncated {
        path: PathBuf,
        read: u64,
        offset: u64,
    },
    #[error(
        "{path} is corrupt after packet {read} (at byte {offset}): {what}; {read} packet(s) were read before it"
    )]
    Corrupt {
        path: PathBuf,
        read: u64,
        offset: u64,
        what: String,
    },
    #[error(
        "{path}: packet {number} has link type {linktype}, which cannot be replayed; supported: Ethernet (1), raw IP (101, 228, 229), Linux cooked capture SLL (113) and SLL2 (276)"
    )]
    LinkType {
        path: PathBuf,
        number: u64,
        linktype: i32,
    },
    #[error(
        "{path}: packet {number} refers to pcapng interface {id}, which no Interface Description Block declared"
    )]
    NoInterface { path: PathBuf, number: u64, id: u32 },
}

struct Iface {
    link: Result<Link, i32>,
    /// Units per second of the timestamps.
    resolution: u64,
    offset_s: i64,
    name: Option<String>,
}

/// A streaming reader over one capture file.
pub struct Trace {
    reader: Box<dyn PcapReaderIterator + Send>,
    st: State,
}

/// What the blocks read so far declared.
struct State {
    path: PathBuf,
    /// Classic pcap: the file's link type and whether timestamps are in ns.
    legacy: Option<(Result<Link, i32>, bool)>,
    ifaces: Vec<Iface>,
    read: u64,
}

/// Buffer of the streaming parser: holds the largest record (64 KiB
/// snaplen plus block overhead) with room to spare.
const BUFFER: usize = 256 * 1024;

impl Trace {
    pub fn open(path: &Path) -> Result<Trace, TraceError> {
        let open_err = |source| TraceError::Open {
            path: path.to_path_buf(),
            source,
        };
        let f = File::open(path).map_err(open_err)?;
        let mut buf = BufReader::with_capacity(64 * 1024, f);
        let head = buf.fill_buf().map_err(open_err)?.to_vec();
        if head.is_empty() {
            return Err(TraceError::Empty {
                path: path.to_path_buf(),
            });
        }
        let input: Box<dyn Read + Send> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(buf))
        } else {
            Box::new(buf)
        };
        let reader = create_reader(BUFFER, input).map_err(|e| match e {
            PcapError::Eof => TraceError::Empty {
                path: path.to_path_buf(),
            },
            PcapError::HeaderNotRecognized => TraceError::Magic {
                path: path.to_path_buf(),
                magic: magic(&head),
            },
            PcapError::Incomplete(_) | PcapError::UnexpectedEof => TraceError::Truncated {
                path: path.to_path_buf(),
                read: 0,
                offset: 0,
            },
            PcapError::ReadError => TraceError::Open {
                path: path.to_path_buf(),
                source: std::io::Error::other("the file (or its gzip stream) cannot be read"),
            },
            other => TraceError::Corrupt {
                path: path.to_path_buf(),
                read: 0,
                offset: 0,
                what: format!("{other:?}"),
            },
        })?;
        Ok(Trace {
            reader,
            st: State {
                path: path.to_path_buf(),
                legacy: None,
                ifaces: Vec::new(),
                read: 0,
            },
        })
    }

    /// Packets read so far.
    pub fn read(&self) -> u64 {
        self.st.read
    }

    /// The next packet, `None` at the end of the capture.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, TraceError> {
        loop {
            let offset = self.reader.consumed() as u64;
            let st = &mut self.st;
            match self.reader.next() {
                Ok((len, block)) => {
                    let p = st.block(block)?;
                    self.reader.consume(len);
                    if p.is_some() {
                        return Ok(p);
                    }
                }
                Err(PcapError::Eof) => return Ok(None),
                Err(PcapError::Incomplete(_)) => {
                    if self.reader.refill().is_err() {
                        return Err(self
                            .st
                            .corrupt(offset, "the file cannot be read further".into()));
                    }
                }
                Err(PcapError::UnexpectedEof) => {
                    return Err(TraceError::Truncated {
                        path: st.path.clone(),
                        read: st.read,
                        offset,
                    });
                }
                Err(PcapError::BufferTooSmall) => {
                    return Err(
                        st.corrupt(offset, format!("a record is larger than {BUFFER} bytes"))
                    );
                }
                Err(e) => {
                    let what = format!("{e:?}");
                    return Err(st.corrupt(offset, what));
                }
            }
        }
    }
}

impl State {
    fn corrupt(&self, offset: u64, what: String) -> TraceError {
        TraceError::Corrupt {
            path: self.path.clone(),
            read: self.read,
            offset,
            what,
        }
    }

    fn link(&self, l: Result<Link, i32>, number: u64) -> Result<Link, TraceError> {
        l.map_err(|linktype| TraceError::LinkType {
            path: self.path.clone(),
            number,
            linktype,
        })
    }

    fn block(&mut self, block: PcapBlockOwned<'_>) -> Result<Option<Packet>, TraceError> {
        match block {
            PcapBlockOwned::LegacyHeader(h) => {
                let nanos = matches!(h.magic_number, 0xa1b2_3c4d | 0x4d3c_b2a1);
                self.legacy = Some((Link::of(h.network).ok_or(h.network.0), nanos));
                Ok(None)
            }
            PcapBlockOwned::Legacy(b) => {
                let number = self.read + 1;
                let (link, nanos) = self.legacy.unwrap_or((Ok(Link::Ethernet), false));
                let link = self.link(link, number)?;
                let frac = if nanos {
                    u64::from(b.ts_usec)
                } else {
                    u64::from(b.ts_usec) * 1000
                };
                self.read = number;
                Ok(Some(Packet {
                    number,
                    ts_ns: u64::from(b.ts_sec) * 1_000_000_000 + frac,
                    link,
                    iface: None,
                    data: b.data.to_vec(),
                    orig_len: b.origlen,
                }))
            }
            PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                // Interface ids restart with every section.
                self.ifaces.clear();
                Ok(None)
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                self.ifaces.push(Iface {
                    link: Link::of(idb.linktype).ok_or(idb.linktype.0),
                    resolution: idb.ts_resolution().unwrap_or(1_000_000),
                    offset_s: idb.ts_offset(),
                    name: idb.if_name().and_then(|r| r.ok()).map(str::to_string),
                });
                Ok(None)
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let number = self.read + 1;
                let Some(ifc) = self.ifaces.get(epb.if_id as usize) else {
                    return Err(TraceError::NoInterface {
                        path: self.path.clone(),
                        number,
                        id: epb.if_id,
                    });
                };
                let link = self.link(ifc.link, number)?;
                let raw = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let res = ifc.resolution.max(1);
                let ts_ns = (raw / res)
                    .saturating_add_signed(ifc.offset_s)
                    .saturating_mul(1_000_000_000)
                    + (raw % res) * 1_000_000_000 / res;
                let iface = ifc.name.clone();
                self.read = number;
                Ok(Some(Packet {
                    number,
                    ts_ns,
                    link,
                    iface,
                    data: epb.packet_data().to_vec(),
                    orig_len: epb.orig_len(),
                }))
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                let number = self.read + 1;
                let Some(ifc) = self.ifaces.first() else {
                    return Err(TraceError::NoInterface {
                        path: self.path.clone(),
                        number,
                        id: 0,
                    });
                };
                let link = self.link(ifc.link, number)?;
                let iface = ifc.name.clone();
                self.read = number;
                Ok(Some(Packet {
                    number,
                    ts_ns: 0,
                    link,
                    iface,
                    data: spb.packet_data().to_vec(),
                    orig_len: spb.orig_len(),
                }))
            }
            // Statistics, name resolution, secrets, custom blocks: nothing to replay.
            PcapBlockOwned::NG(_) => Ok(None),
        }
    }
}

fn magic(head: &[u8]) -> String {
    let n = head.len().min(4);
    let hex: Vec<String> = head[..n].iter().map(|b| format!("{b:02x}")).collect();
    format!("bytes {}", hex.join(" "))
}
