//! A port wrapper that writes every received and transmitted frame to a pcap file
//! (Ethernet link type, readable by tcpdump and tshark).
//!
//! The classic pcap format is written here directly (a 24-byte file header and a 16-byte
//! record header per frame): the pcap-file crate's writer cannot flush its inner writer
//! while it keeps capturing, and a capture must be readable while the port still runs.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::{BufferPool, MacAddr, PacketVec, Port, PortStats, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("cannot create pcap file {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write pcap header: {0}")]
    Header(std::io::Error),
    #[error("cannot flush pcap file: {0}")]
    Flush(std::io::Error),
}

/// Wraps a port and captures both directions. A write error stops the capture (it is
/// logged once and counted) but never the traffic.
pub struct PcapPort<P: Port, W: Write + Send = BufWriter<File>> {
    inner: P,
    writer: Option<W>,
    /// Frames written to the capture.
    pub captured: u64,
    /// Frames not written because the capture failed.
    pub capture_errors: u64,
}

impl<P: Port> PcapPort<P, BufWriter<File>> {
    /// Captures into a new file at `path`.
    pub fn create(inner: P, path: &Path) -> Result<Self, PcapError> {
        let file = File::create(path).map_err(|source| PcapError::Create {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(inner, BufWriter::new(file))
    }
}

impl<P: Port, W: Write + Send> PcapPort<P, W> {
    pub fn new(inner: P, mut writer: W) -> Result<Self, PcapError> {
        writer
            .write_all(&file_header())
            .map_err(PcapError::Header)?;
        Ok(PcapPort {
            inner,
            writer: Some(writer),
            captured: 0,
            capture_errors: 0,
        })
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }

    pub fn flush(&mut self) -> Result<(), PcapError> {
        match self.writer.as_mut() {
            Some(w) => w.flush().map_err(PcapError::Flush),
            None => Ok(()),
        }
    }

    /// Stops capturing and returns the writer (flushed).
    pub fn into_writer(mut self) -> Option<W> {
        let _ = self.flush();
        self.writer.take()
    }

    fn capture(&mut self, pkts: &[crate::PacketBuf], now: Timestamp) {
        let Some(w) = self.writer.as_mut() else {
            self.capture_errors += pkts.len() as u64;
            return;
        };
        let secs = (now.nanos() / 1_000_000_000) as u32;
        let micros = ((now.nanos() % 1_000_000_000) / 1_000) as u32;
        for p in pkts {
            let len = p.len() as u32;
            let mut rec = [0u8; 16];
            rec[0..4].copy_from_slice(&secs.to_le_bytes());
            rec[4..8].copy_from_slice(&micros.to_le_bytes());
            rec[8..12].copy_from_slice(&len.to_le_bytes());
            rec[12..16].copy_from_slice(&len.to_le_bytes());
            let written = w.write_all(&rec).and_then(|()| w.write_all(p.data()));
            if let Err(e) = written {
                tracing::warn!(port = self.inner.name(), error = %e, "pcap capture stopped");
                self.writer = None;
                self.capture_errors += 1;
                return;
            }
            self.captured += 1;
        }
    }
}

impl<P: Port, W: Write + Send> Port for PcapPort<P, W> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn mac(&self) -> MacAddr {
        self.inner.mac()
    }
    fn mtu(&self) -> u16 {
        self.inner.mtu()
    }
    fn link_up(&self) -> bool {
        self.inner.link_up()
    }
    fn tx_offloads(&self) -> bool {
        self.inner.tx_offloads()
    }
    fn rx_burst(
        &mut self,
        pool: &mut BufferPool,
        out: &mut PacketVec,
        max: usize,
        now: Timestamp,
    ) -> usize {
        let before = out.len();
        let n = self.inner.rx_burst(pool, out, max, now);
        // `out` may hold packets from earlier bursts: capture only the new ones.
        self.capture(&out[before..], now);
        n
    }
    fn tx_burst(&mut self, pkts: &mut PacketVec, pool: &mut BufferPool, now: Timestamp) -> usize {
        self.capture(pkts, now);
        self.inner.tx_burst(pkts, pool, now)
    }
    fn stats(&self) -> PortStats {
        self.inner.stats()
    }
}

/// The classic pcap file header: little-endian magic, version 2.4, microsecond timestamps,
/// snaplen 65535, link type 1 (Ethernet).
fn file_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&65535u32.to_le_bytes());
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{virtual_wire, WireConfig};

    #[test]
    fn capture_reads_back_with_an_independent_parser() {
        let mut pool = BufferPool::new("t", 16);
        let (a, mut b, _) = virtual_wire(
            ("a", MacAddr::local(1)),
            ("b", MacAddr::local(2)),
            &WireConfig::default(),
        );
        let mut a = PcapPort::new(a, Vec::new()).expect("header");
        let mut v = Vec::new();
        for i in 0..3u8 {
            let mut p = pool.alloc().expect("buffer");
            assert!(p.fill(&[i; 64]));
            v.push(p);
        }
        a.tx_burst(&mut v, &mut pool, Timestamp(1_500_000_000));
        let mut out = Vec::new();
        b.rx_burst(&mut pool, &mut out, 8, Timestamp::ZERO);
        assert_eq!(a.captured, 3);
        let bytes = a.into_writer().expect("writer");
        let mut reader = pcap_file::pcap::PcapReader::new(&bytes[..]).expect("pcap header");
        assert_eq!(reader.header().datalink, pcap_file::DataLink::ETHERNET);
        let mut n = 0u8;
        while let Some(rec) = reader.next_packet() {
            let rec = rec.expect("record");
            assert_eq!(rec.data.as_ref(), &[n; 64][..]);
            assert_eq!(rec.timestamp.as_millis(), 1_500);
            n += 1;
        }
        assert_eq!(n, 3);
    }
}
