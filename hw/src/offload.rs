//! Checksum and segmentation offloads carried with a frame.
//!
//! A TAP port with offloads on (see [`crate::TapPort::enable_offloads`]) hands the engine
//! what the pod's kernel sent without doing the last step: TCP and UDP checksums left as
//! the pseudo-header sum only ("partial"), and TCP super-frames of up to 64 KiB that are
//! to be cut into segments of `gso_size` payload bytes. Whoever sends such a frame out of
//! a port that cannot finish the work must finish it: the engine segments and checksums
//! in software for such ports; a TAP with offloads passes the frame on as it is, and the
//! receiving kernel treats it as an already-coalesced (GRO) packet. That is how large TCP
//! transfers between pods avoid one system call per 1500 bytes.
//!
//! Only Ethernet + IPv4 + TCP/UDP frames carry offloads in this engine, so where the
//! checksum starts and where it is stored follow from the headers
//! ([`Offload::checksum_layout`]).

/// The offload state of one frame: nothing to do (the default), a partial L4 checksum, or
/// a TCP super-frame (which always also has a partial checksum).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// TCP payload bytes per segment when the frame is a super-frame; 0 otherwise.
    pub gso_size: u16,
    pub flags: u8,
}

impl Offload {
    pub const NONE: Offload = Offload {
        gso_size: 0,
        flags: 0,
    };
    /// The TCP or UDP checksum field holds the pseudo-header sum only.
    pub const PARTIAL_CHECKSUM: u8 = 1;
    /// A TCP super-frame: `gso_size` payload bytes per segment.
    pub const TCP_SEGMENTS: u8 = 2;
    /// The sender uses ECN: only the first segment keeps CWR.
    pub const ECN: u8 = 4;

    /// A frame with a partial checksum only.
    pub const fn partial_checksum() -> Offload {
        Offload {
            gso_size: 0,
            flags: Self::PARTIAL_CHECKSUM,
        }
    }

    /// A TCP super-frame with `gso_size` payload bytes per segment.
    pub const fn tcp_segments(gso_size: u16, ecn: bool) -> Offload {
        Offload {
            gso_size,
            flags: Self::PARTIAL_CHECKSUM | Self::TCP_SEGMENTS | if ecn { Self::ECN } else { 0 },
        }
    }

    #[inline]
    pub fn is_none(self) -> bool {
        self.flags == 0
    }

    #[inline]
    pub fn partial(self) -> bool {
        self.flags & Self::PARTIAL_CHECKSUM != 0
    }

    #[inline]
    pub fn segments(self) -> bool {
        self.flags & Self::TCP_SEGMENTS != 0
    }

    #[inline]
    pub fn ecn(self) -> bool {
        self.flags & Self::ECN != 0
    }

    /// Where the L4 checksum of an Ethernet + IPv4 + TCP/UDP `frame` starts (offset of the
    /// L4 header) and where it is stored (relative to that start), and the L4 header's
    /// length; `None` for any other frame.
    pub fn checksum_layout(frame: &[u8]) -> Option<ChecksumLayout> {
        if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] || frame[14] >> 4 != 4 {
            return None;
        }
        let l4 = 14 + usize::from(frame[14] & 0x0f) * 4;
        let (offset, hdr_len) = match frame[14 + 9] {
            6 => {
                let doff = usize::from(*frame.get(l4 + 12)? >> 4) * 4;
                (16, doff)
            }
            17 => (6, 8),
            _ => return None,
        };
        if l4 + hdr_len.max(offset + 2) > frame.len() || hdr_len < 8 {
            return None;
        }
        Some(ChecksumLayout {
            start: l4,
            offset,
            l4_header_len: hdr_len,
        })
    }
}

/// See [`Offload::checksum_layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChecksumLayout {
    /// Offset of the L4 header in the frame: the checksum covers everything from here.
    pub start: usize,
    /// Where the checksum field is, from `start`.
    pub offset: usize,
    pub l4_header_len: usize,
}

/// The one's-complement sum of `data` (big-endian 16-bit words, an odd last byte padded
/// with zero) plus `initial`, folded to 16 bits and not inverted.
///
/// Eight bytes at a time with an end-around carry: the one's-complement sum does not care
/// about the word size, and this runs over whole 64 KiB super-frames.
#[inline]
pub fn ones_complement_sum(data: &[u8], initial: u32) -> u16 {
    let mut acc = u64::from(initial);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_be_bytes(w.try_into().unwrap_or([0; 8]));
        let (s, carry) = acc.overflowing_add(v);
        // After an overflow `s` is at most 2^64 - 2, so adding the carry cannot overflow.
        acc = s + u64::from(carry);
    }
    let mut tail = [0u8; 8];
    let rest = words.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    let (s, carry) = acc.overflowing_add(u64::from_be_bytes(tail));
    acc = s + u64::from(carry);
    let mut sum = (acc >> 32) + (acc & 0xffff_ffff);
    sum = (sum >> 16) + (sum & 0xffff);
    sum = (sum >> 16) + (sum & 0xffff);
    sum = (sum >> 16) + (sum & 0xffff);
    sum as u16
}

/// Finishes a partial checksum in place: sums everything from `start` to the end of the
/// frame (the field holds the pseudo-header sum already) and stores the complement at
/// `start + offset`. `false`, and no change, when the field lies outside the frame.
pub fn finish_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let at = start + offset;
    if at + 2 > frame.len() {
        return false;
    }
    let mut c = !ones_complement_sum(&frame[start..], 0);
    // A UDP checksum of zero means "none"; its one's-complement twin says the same sum.
    if c == 0 && offset == 6 {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_sum(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        for c in data.chunks(2) {
            let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
            sum += u32::from(w);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn wide_sum_matches_the_16_bit_reference() {
        let mut x = 0x1234_5678u32;
        for len in [0, 1, 2, 7, 8, 9, 15, 64, 1499, 65_000] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let got = ones_complement_sum(&data, 0);
            let want = reference_sum(&data);
            // 0x0000 and 0xffff are the same number in one's complement.
            assert!(
                got == want || (got == 0xffff && want == 0) || (got == 0 && want == 0xffff),
                "len {len}: {got:#x} != {want:#x}"
            );
        }
        assert_eq!(ones_complement_sum(&[0xff; 8], 0), 0xffff);
        assert_eq!(ones_complement_sum(&[0x00, 0x01], 0xffff), 0x0001);
    }

    #[test]
    fn layout_of_tcp_udp_and_others() {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[23] = 6;
        f[34 + 12] = 5 << 4;
        let l = Offload::checksum_layout(&f).expect("tcp");
        assert_eq!((l.start, l.offset, l.l4_header_len), (34, 16, 20));
        f[23] = 17;
        let l = Offload::checksum_layout(&f).expect("udp");
        assert_eq!((l.start, l.offset, l.l4_header_len), (34, 6, 8));
        f[23] = 1;
        assert!(
            Offload::checksum_layout(&f).is_none(),
            "icmp has no offload"
        );
        f[23] = 6;
        f[34 + 12] = 15 << 4; // a 60-byte TCP header in a 20-byte frame tail
        assert!(Offload::checksum_layout(&f).is_none());
        f[12] = 0x86;
        assert!(Offload::checksum_layout(&f).is_none(), "not ipv4");
    }

    #[test]
    fn finished_checksum_verifies() {
        // A UDP datagram whose field holds the pseudo-header sum, as the kernel leaves it.
        let mut udp = vec![
            0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0, 0, b'a', b'b', b'c', b'd',
        ];
        let pseudo = ones_complement_sum(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, 12], 0);
        udp[6..8].copy_from_slice(&pseudo.to_be_bytes());
        assert!(finish_checksum(&mut udp, 0, 6));
        // Verifying: pseudo-header + datagram (with the stored checksum) sums to 0xffff.
        assert_eq!(ones_complement_sum(&udp, u32::from(pseudo)), 0xffff);
        assert!(!finish_checksum(&mut udp, 8, 6), "field past the end");
    }
}
