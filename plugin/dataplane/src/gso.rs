//! ip4-gso: finishes offloaded work in software for frames that leave by a port that
//! cannot take it.
//!
//! A pod's TAP with offloads hands the engine TCP super-frames (up to 64 KiB, one per
//! system call) and partial checksums (see [`contiv_hw::Offload`]). Towards another such
//! TAP they pass whole: that is the fast path for pod-to-pod TCP on a node. Towards
//! anything else (the uplink, a VXLAN tunnel, source NAT, a TAP without offloads)
//! ip4-lookup sends them here first: a super-frame is cut into segments of `gso_size`
//! payload bytes, each a complete TCP/IPv4 packet in a buffer of its own with its IP
//! length, ID and checksum and its TCP sequence number, flags and checksum set as the
//! kernel's own segmentation would; a lone partial checksum is finished in place. Either
//! way the results go back to ip4-lookup, as plain packets.

use contiv_hw::offload::{finish_checksum, ones_complement_sum, ChecksumLayout};
use contiv_hw::{Offload, PacketBuf, PacketVec, BUF_DATA_ROOM};

use crate::counters::Counter;
use crate::graph::{GraphNode, Next, NodeCx};
use crate::headers::*;
use crate::nodes::IP4_LOOKUP;

pub const IP4_GSO: &str = "ip4-gso";

const TCP_SEQ: usize = 4;
const TCP_FLAGS: usize = 13;
const TCP_CSUM: usize = 16;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// See the module documentation.
pub struct Ip4Gso;

impl GraphNode for Ip4Gso {
    fn name(&self) -> &'static str {
        IP4_GSO
    }
    fn next_nodes(&self) -> &'static [&'static str] {
        &[IP4_LOOKUP]
    }
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, next: &mut Next<'_>) {
        for mut pkt in input.drain(..) {
            let offload = pkt.offload();
            // ip4-input let only frames whose IPv4 total length fits the frame through;
            // the checksum covers the IP packet, not any Ethernet padding after it.
            let ip_end = ETH_HDR_LEN + usize::from(read_u16(pkt.data(), ETH_HDR_LEN + 2));
            let layout = Offload::checksum_layout(pkt.data())
                .filter(|l| l.start + l.l4_header_len <= ip_end && ip_end <= pkt.len());
            let Some(layout) = layout else {
                cx.drop_packet(pkt, Counter::GsoMalformed);
                continue;
            };
            if offload.segments() {
                segment(cx, next, pkt, layout, ip_end);
                continue;
            }
            if offload.partial() {
                finish_checksum(&mut pkt.data_mut()[..ip_end], layout.start, layout.offset);
                cx.count(Counter::GsoChecksumsFinished);
            }
            pkt.set_offload(Offload::NONE);
            cx.trace(&pkt, IP4_GSO, || "checksum finished".to_string());
            next.enqueue(0, pkt);
        }
    }
}

/// Cuts a TCP super-frame into segments (see the module documentation) and frees it.
fn segment(
    cx: &mut NodeCx<'_>,
    next: &mut Next<'_>,
    pkt: PacketBuf,
    l: ChecksumLayout,
    ip_end: usize,
) {
    let mss = usize::from(pkt.offload().gso_size);
    let headers = l.start + l.l4_header_len;
    if l.offset != TCP_CSUM || mss == 0 || headers + mss > BUF_DATA_ROOM {
        cx.drop_packet(pkt, Counter::GsoMalformed);
        return;
    }
    let d = &pkt.data()[..ip_end];
    let payload = &d[headers..];
    let count = payload.len().div_ceil(mss).max(1);
    let ip_id = read_u16(d, ETH_HDR_LEN + 4);
    let seq = read_u32(d, l.start + TCP_SEQ);
    let flags = d[l.start + TCP_FLAGS];
    let ihl = l.start - ETH_HDR_LEN;
    // The pseudo-header sum without the TCP length, which differs per segment.
    let pseudo = u32::from(ones_complement_sum(
        &d[ETH_HDR_LEN + IP4_SRC..ETH_HDR_LEN + IP4_DST + 4],
        u32::from(PROTO_TCP),
    ));
    cx.count(Counter::GsoSuperFrames);
    cx.trace(&pkt, IP4_GSO, || {
        format!(
            "{} payload bytes cut into {count} segments of {mss}",
            payload.len()
        )
    });
    let chunks = payload.chunks(mss).chain(
        // A super-frame without payload (never sent, but harmless) is one bare segment.
        std::iter::once(&payload[..0]).filter(|_| payload.is_empty()),
    );
    for (i, chunk) in chunks.enumerate() {
        let Some(mut seg) = cx.w.pool.alloc() else {
            cx.w.counters.add(Counter::GsoNoBuffer, (count - i) as u64);
            break;
        };
        seg.set_len(headers + chunk.len());
        let s = seg.data_mut();
        s[..headers].copy_from_slice(&d[..headers]);
        s[headers..].copy_from_slice(chunk);
        let ip = &mut s[ETH_HDR_LEN..l.start];
        write_u16(
            ip,
            IP4_TOTAL_LEN,
            (ihl + l.l4_header_len + chunk.len()) as u16,
        );
        write_u16(ip, 4, ip_id.wrapping_add(i as u16));
        ip4_set_header_checksum(ip);
        let tcp = &mut s[l.start..];
        write_u32(tcp, TCP_SEQ, seq.wrapping_add((i * mss) as u32));
        let mut f = flags;
        if i + 1 < count {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            f &= !TCP_CWR;
        }
        tcp[TCP_FLAGS] = f;
        write_u16(tcp, TCP_CSUM, 0);
        let sum = ones_complement_sum(tcp, pseudo + tcp.len() as u32);
        write_u16(tcp, TCP_CSUM, !sum);
        seg.meta = pkt.meta;
        if i > 0 {
            seg.meta.trace = 0;
        }
        cx.count(Counter::GsoSegments);
        next.enqueue(0, seg);
    }
    cx.w.pool.free(pkt);
}
