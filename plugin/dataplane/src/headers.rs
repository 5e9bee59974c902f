//! Offsets and in-place helpers for the headers the fast path reads and rewrites.
//!
//! The graph edits headers in the packet buffer itself (TTL, checksums, MACs), so it works
//! on raw bytes at fixed offsets rather than parsing into owned structures. Tests check
//! every result with an independent parser (etherparse).

use std::net::Ipv4Addr;

use contiv_hw::MacAddr;

pub const ETH_HDR_LEN: usize = 14;
pub const ETH_DST: usize = 0;
pub const ETH_SRC: usize = 6;
pub const ETH_TYPE: usize = 12;

pub const ETHERTYPE_IP4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IP6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;

/// Offsets inside the IPv4 header (from the start of the IP header).
pub const IP4_MIN_HDR_LEN: usize = 20;
pub const IP4_TOTAL_LEN: usize = 2;
pub const IP4_FRAG: usize = 6;
pub const IP4_TTL: usize = 8;
pub const IP4_PROTO: usize = 9;
pub const IP4_CSUM: usize = 10;
pub const IP4_SRC: usize = 12;
pub const IP4_DST: usize = 16;
/// Don't-fragment flag in the flags/fragment-offset word.
pub const IP4_DF: u16 = 0x4000;
pub const IP4_MF: u16 = 0x2000;
pub const IP4_OFFSET_MASK: u16 = 0x1fff;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub const ICMP_HDR_LEN: usize = 8;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;

/// ARP over Ethernet for IPv4: offsets from the start of the ARP header.
pub const ARP_LEN: usize = 28;
pub const ARP_OP: usize = 6;
pub const ARP_SHA: usize = 8;
pub const ARP_SPA: usize = 14;
pub const ARP_THA: usize = 18;
pub const ARP_TPA: usize = 24;
pub const ARP_OP_REQUEST: u16 = 1;
pub const ARP_OP_REPLY: u16 = 2;

#[inline]
pub fn read_u16(b: &[u8], at: usize) -> u16 {
    // One bounds check for the pair, then a plain load.
    let bytes: [u8; 2] = b[at..at + 2].try_into().unwrap_or([0; 2]);
    u16::from_be_bytes(bytes)
}

#[inline]
pub fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub fn read_u32(b: &[u8], at: usize) -> u32 {
    let bytes: [u8; 4] = b[at..at + 4].try_into().unwrap_or([0; 4]);
    u32::from_be_bytes(bytes)
}

#[inline]
pub fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub fn read_ip(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::from(read_u32(b, at))
}

/// The one's-complement sum of `data` folded to 16 bits (not inverted): the port layer's,
/// which TAP offloads need too.
pub use contiv_hw::offload::ones_complement_sum;

/// The Internet checksum of `data` (RFC 1071), ready to store.
#[inline]
pub fn internet_checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(data, 0)
}

/// The one's-complement sum of an IPv4 header folded to 16 bits. Headers are a multiple
/// of 4 bytes, so the sum runs over 32-bit words (one's-complement addition does not care
/// about the word size), five additions for a plain header.
#[inline]
fn ip4_header_sum(hdr: &[u8]) -> u16 {
    let mut sum = 0u64;
    for w in hdr.chunks_exact(4) {
        let bytes: [u8; 4] = w.try_into().unwrap_or([0; 4]);
        sum += u64::from(u32::from_be_bytes(bytes));
    }
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Ethernet plus a plain IPv4 header: the bytes the forwarding nodes read and rewrite.
pub const ETH_IP4_LEN: usize = ETH_HDR_LEN + IP4_MIN_HDR_LEN;

/// The first [`ETH_IP4_LEN`] bytes of a frame as an array, so that every constant offset
/// into it needs no bounds check. `None` when the frame is shorter.
#[inline]
pub fn eth_ip4(frame: &[u8]) -> Option<&[u8; ETH_IP4_LEN]> {
    frame.get(..ETH_IP4_LEN).and_then(|s| s.try_into().ok())
}

/// As [`eth_ip4`], writable.
#[inline]
pub fn eth_ip4_mut(frame: &mut [u8]) -> Option<&mut [u8; ETH_IP4_LEN]> {
    frame.get_mut(..ETH_IP4_LEN).and_then(|s| s.try_into().ok())
}

/// The checksum test for a plain 20-byte header, fully unrolled.
#[inline]
pub fn ip4_plain_header_checksum_ok(hdr: &[u8; IP4_MIN_HDR_LEN]) -> bool {
    // The one's-complement sum does not care about byte order (RFC 1071 1.2.B), and its
    // test value 0xffff is the same both ways: the words are summed as the CPU loads them.
    let w = |i: usize| {
        u64::from(u32::from_ne_bytes([
            hdr[i],
            hdr[i + 1],
            hdr[i + 2],
            hdr[i + 3],
        ]))
    };
    let sum = w(0) + w(4) + w(8) + w(12) + w(16);
    // Folding to 16 bits gives 0xffff exactly when the sum is a non-zero multiple of
    // 0xffff (2^16 is 1 modulo 0xffff, so folding keeps the residue): one multiply
    // instead of a chain of dependent folds. A header of zeros is no valid header.
    sum != 0 && sum % 0xffff == 0
}

/// The IPv4 header checksum is valid when the header sums to 0xffff.
#[inline]
pub fn ip4_header_checksum_ok(hdr: &[u8]) -> bool {
    debug_assert!(hdr.len().is_multiple_of(4));
    ip4_header_sum(hdr) == 0xffff
}

/// Recomputes and stores the IPv4 header checksum.
#[inline]
pub fn ip4_set_header_checksum(hdr: &mut [u8]) {
    hdr[IP4_CSUM] = 0;
    hdr[IP4_CSUM + 1] = 0;
    let c = !ip4_header_sum(hdr);
    write_u16(hdr, IP4_CSUM, c);
}

/// Incremental checksum update when one 16-bit word changes from `old` to `new`
/// (RFC 1624, equation 3: HC' = ~(~HC + ~m + m')).
#[inline]
pub fn checksum_update16(checksum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Writes an Ethernet header at the start of `frame` (at least [`ETH_HDR_LEN`] bytes).
#[inline]
pub fn write_eth_header(frame: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) {
    frame[ETH_DST..ETH_DST + 6].copy_from_slice(&dst.0);
    frame[ETH_SRC..ETH_SRC + 6].copy_from_slice(&src.0);
    write_u16(frame, ETH_TYPE, ethertype);
}

/// Decrements the TTL of a frame's IPv4 header (at least 1) and updates its checksum.
///
/// RFC 1624's equation 3, HC' = ~(~HC + ~m + m'), with the word's change worked out: the
/// TTL is the high byte of its word, so `~m + m'` is always 0xfeff, and one addition and
/// one fold remain. It runs on the checksum as the CPU loads it, with the constant in the
/// same byte order: one's-complement sums do not care about byte order (RFC 1071 1.2.B),
/// and this saves two byte swaps.
#[inline]
pub fn decrement_ttl(h: &mut [u8; ETH_IP4_LEN]) {
    h[ETH_HDR_LEN + IP4_TTL] -= 1;
    let at = ETH_HDR_LEN + IP4_CSUM;
    const CHANGE: u16 = u16::from_ne_bytes(0xfeffu16.to_be_bytes());
    let sum = u32::from(!u16::from_ne_bytes([h[at], h[at + 1]])) + u32::from(CHANGE);
    let c = !((sum & 0xffff) + (sum >> 16)) as u16;
    h[at..at + 2].copy_from_slice(&c.to_ne_bytes());
}

#[inline]
pub fn is_unicast_source(ip: Ipv4Addr) -> bool {
    !(ip.is_multicast() || ip.is_broadcast() || ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_sum_equals_the_rfc_1071_sum() {
        let mut x = 0x1234_5678u32;
        for len in [20usize, 24, 40, 60] {
            for _ in 0..200 {
                let hdr: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                assert_eq!(ip4_header_sum(&hdr), ones_complement_sum(&hdr, 0));
                if len == 20 {
                    let mut fixed: [u8; 20] = hdr[..].try_into().unwrap();
                    assert_eq!(
                        ip4_plain_header_checksum_ok(&fixed),
                        ones_complement_sum(&hdr, 0) == 0xffff
                    );
                    // And with its checksum set, which random bytes almost never have.
                    ip4_set_header_checksum(&mut fixed);
                    assert!(ip4_plain_header_checksum_ok(&fixed), "{fixed:?}");
                    fixed[x as usize % 20] ^= 1 << (x % 8);
                    assert!(!ip4_plain_header_checksum_ok(&fixed), "{fixed:?}");
                }
            }
        }
    }

    #[test]
    fn plain_header_checksum_edge_sums() {
        // All zeros sums to 0, which folds to 0, not 0xffff: no valid header.
        assert!(!ip4_plain_header_checksum_ok(&[0; 20]));
        // All ones is 0xffff in every word: the fold is 0xffff.
        assert!(ip4_plain_header_checksum_ok(&[0xff; 20]));
        // One word of 0xffff and the rest zeros: also a multiple of 0xffff.
        let mut h = [0u8; 20];
        h[10] = 0xff;
        h[11] = 0xff;
        assert!(ip4_plain_header_checksum_ok(&h));
        assert_eq!(ones_complement_sum(&h, 0), 0xffff);
    }

    #[test]
    fn ttl_decrement_checksum_is_the_general_update() {
        for checksum in 0..=u16::MAX {
            for (ttl, proto) in [(1u8, 6u8), (2, 17), (64, 1), (255, 255)] {
                let mut h = [0u8; ETH_IP4_LEN];
                h[ETH_HDR_LEN + IP4_TTL] = ttl;
                h[ETH_HDR_LEN + IP4_PROTO] = proto;
                write_u16(&mut h, ETH_HDR_LEN + IP4_CSUM, checksum);
                decrement_ttl(&mut h);
                assert_eq!(h[ETH_HDR_LEN + IP4_TTL], ttl - 1);
                let old = u16::from_be_bytes([ttl, proto]);
                let new = u16::from_be_bytes([ttl - 1, proto]);
                assert_eq!(
                    read_u16(&h, ETH_HDR_LEN + IP4_CSUM),
                    checksum_update16(checksum, old, new),
                    "checksum {checksum:#06x} ttl {ttl}"
                );
            }
        }
    }

    #[test]
    fn incremental_update_matches_full_recompute() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0, 0, 10, 0, 0, 1, 10, 0,
            1, 2,
        ];
        ip4_set_header_checksum(&mut hdr);
        for ttl in (1..=64u8).rev() {
            let old = read_u16(&hdr, IP4_TTL);
            hdr[IP4_TTL] = ttl - 1;
            let new = read_u16(&hdr, IP4_TTL);
            let c = checksum_update16(read_u16(&hdr, IP4_CSUM), old, new);
            write_u16(&mut hdr, IP4_CSUM, c);
            assert!(ip4_header_checksum_ok(&hdr), "ttl {ttl}");
            let mut copy = hdr;
            ip4_set_header_checksum(&mut copy);
            assert_eq!(copy[IP4_CSUM..IP4_CSUM + 2], hdr[IP4_CSUM..IP4_CSUM + 2]);
        }
    }
}
