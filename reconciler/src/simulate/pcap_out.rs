//! `--write`: the traffic as the stack would have received it, as a classic
//! pcap with nanosecond timestamps (what every tool reads).
use std::{
    fs::File,
    io::{BufWriter, Write as _},
    path::Path,
};

/// LINKTYPE_ETHERNET and LINKTYPE_RAW (an IP packet, no link header).
pub const ETHERNET: u32 = 1;
pub const RAW: u32 = 101;

pub struct PcapWriter {
    out: BufWriter<File>,
    pub written: u64,
}

impl PcapWriter {
    pub fn create(path: &Path, linktype: u32) -> std::io::Result<PcapWriter> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(&0xa1b2_3c4du32.to_le_bytes())?; // nanosecond pcap
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&262_144u32.to_le_bytes())?;
        out.write_all(&linktype.to_le_bytes())?;
        Ok(PcapWriter { out, written: 0 })
    }

    /// Writes `data` (of which the first `caplen` bytes are kept) with the
    /// original length `data.len()`.
    pub fn packet(&mut self, ts_ns: u64, data: &[u8], caplen: usize) -> std::io::Result<()> {
        let caplen = caplen.min(data.len());
        self.out
            .write_all(&((ts_ns / 1_000_000_000) as u32).to_le_bytes())?;
        self.out
            .write_all(&((ts_ns % 1_000_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&(caplen as u32).to_le_bytes())?;
        self.out.write_all(&(data.len() as u32).to_le_bytes())?;
        self.out.write_all(&data[..caplen])?;
        self.written += 1;
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
