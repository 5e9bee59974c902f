//! Named counters of the graph: every drop has a reason, every node says what it did.
//!
//! As VPP's error counters, these are per node and per reason. A counter is either a
//! *drop* (the packet ends there, its buffer goes back to the pool) or an *event* (the
//! packet went on, e.g. it was turned into an ICMP error). Every packet that enters the
//! graph leaves it exactly once, as a transmitted frame or as one drop, so for any run
//! `packets in = packets transmitted + drops`.

macro_rules! counters {
    ($( $variant:ident => ($node:literal, $kind:ident, $text:literal), )*) => {
        /// One named counter. See the module documentation.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u16)]
        pub enum Counter { $( $variant, )* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[ $( Counter::$variant, )* ];
            pub const COUNT: usize = Counter::ALL.len();

            /// The graph node that owns the counter.
            pub fn node(self) -> &'static str {
                match self { $( Counter::$variant => $node, )* }
            }

            /// What happened, in a few words.
            pub fn text(self) -> &'static str {
                match self { $( Counter::$variant => $text, )* }
            }

            /// Whether the packet ended here.
            pub fn is_drop(self) -> bool {
                match self { $( Counter::$variant => CounterKind::$kind == CounterKind::Drop, )* }
            }
        }
    };
}

#[derive(PartialEq, Eq)]
enum CounterKind {
    Drop,
    Event,
}

counters! {
    EthTooShort => ("ethernet-input", Drop, "frame too short"),
    EthNoInterface => ("ethernet-input", Drop, "interface not configured"),
    EthInterfaceDown => ("ethernet-input", Drop, "interface down"),
    EthNotForUs => ("ethernet-input", Drop, "destination mac not ours"),
    EthIp6Unsupported => ("ethernet-input", Drop, "ip6 not supported"),
    EthVlanUnsupported => ("ethernet-input", Drop, "vlan tag not supported"),
    EthUnknownEthertype => ("ethernet-input", Drop, "unknown ethertype"),
    ArpMalformed => ("arp", Drop, "malformed arp packet"),
    ArpUnsupportedOp => ("arp", Drop, "unsupported arp opcode"),
    ArpNotForUs => ("arp", Drop, "request for an address we do not own or proxy"),
    ArpReplyConsumed => ("arp", Drop, "arp reply consumed"),
    ArpNeighbourTableFull => ("arp", Event, "neighbour table full, not learned"),
    ArpLearned => ("arp", Event, "neighbours learned"),
    ArpRepliesSent => ("arp", Event, "replies sent"),
    ArpProxyRepliesSent => ("arp", Event, "proxy replies sent"),
    Ip4TooShort => ("ip4-input", Drop, "packet too short"),
    Ip4BadVersion => ("ip4-input", Drop, "bad version"),
    Ip4BadHeaderLength => ("ip4-input", Drop, "bad header length"),
    Ip4BadTotalLength => ("ip4-input", Drop, "bad total length"),
    Ip4BadChecksum => ("ip4-input", Drop, "bad checksum"),
    Ip4TtlZero => ("ip4-input", Drop, "ttl zero"),
    Ip4BadSource => ("ip4-input", Drop, "multicast or broadcast source address"),
    Ip4NoRoute => ("ip4-lookup", Event, "no route (unreachable sent)"),
    Ip4NullRoute => ("ip4-lookup", Drop, "null route"),
    Ip4NotForwardable => ("ip4-lookup", Drop, "broadcast or multicast destination"),
    LocalFragment => ("ip4-local", Drop, "fragments are not reassembled"),
    LocalBadIcmp => ("ip4-local", Drop, "truncated icmp or bad icmp checksum"),
    LocalIcmpIgnored => ("ip4-local", Drop, "icmp type not handled"),
    LocalTcpNoListener => ("ip4-local", Drop, "tcp to an address with no listener"),
    LocalEchoReplies => ("ip4-local", Event, "echo replies sent"),
    LocalUdpNoListener => ("ip4-local", Event, "udp to a port with no listener (unreachable sent)"),
    LocalUnknownProtocol => ("ip4-local", Event, "unknown protocol (unreachable sent)"),
    RewriteInterfaceDown => ("ip4-rewrite", Drop, "output interface down or removed"),
    RewriteTtlExpired => ("ip4-rewrite", Event, "ttl expired (time exceeded sent)"),
    RewriteMtuExceeded => ("ip4-rewrite", Event, "packet exceeds mtu with df set (fragmentation needed sent)"),
    RewriteFragmentationUnsupported => ("ip4-rewrite", Drop, "packet exceeds mtu, fragmentation not supported"),
    RewriteNeighbourUnresolved => ("ip4-rewrite", Drop, "next hop unresolved, arp request pending"),
    RewriteArpRequestsSent => ("ip4-rewrite", Event, "next hop unresolved, packet turned into an arp request"),
    RewriteNoSourceAddress => ("ip4-rewrite", Drop, "no address on the output interface to ask arp from"),
    IcmpRateLimited => ("icmp-error", Drop, "rate limited"),
    IcmpSuppressed => ("icmp-error", Drop, "no error about an icmp error, fragment or non-unicast source"),
    IcmpNoSourceAddress => ("icmp-error", Drop, "no address on the input interface to send from"),
    IcmpNoHeadroom => ("icmp-error", Drop, "no headroom to build the error"),
    IcmpTimeExceededSent => ("icmp-error", Event, "time exceeded sent"),
    IcmpUnreachableSent => ("icmp-error", Event, "destination unreachable sent"),
    OutputNoSuchPort => ("interface-output", Drop, "no such port"),
    VxlanNotConfigured => ("vxlan-encap", Drop, "no vxlan endpoint configured"),
    VxlanNoTunnel => ("vxlan-encap", Drop, "route into a tunnel that does not exist"),
    VxlanTtlExpired => ("vxlan-encap", Event, "ttl expired (time exceeded sent)"),
    VxlanMtuExceeded => ("vxlan-encap", Event, "packet exceeds the overlay mtu with df set (fragmentation needed sent)"),
    VxlanTooBig => ("vxlan-encap", Drop, "packet exceeds the overlay mtu, fragmentation not supported"),
    VxlanNoHeadroom => ("vxlan-encap", Drop, "no headroom for the outer headers"),
    VxlanEncapsulated => ("vxlan-encap", Event, "packets encapsulated"),
    VxlanUnknownSource => ("vxlan-decap", Drop, "from an address that is no known node"),
    VxlanTruncated => ("vxlan-decap", Drop, "truncated udp or vxlan header, or inner frame"),
    VxlanBadHeader => ("vxlan-decap", Drop, "vxlan header without the vni flag"),
    VxlanWrongVni => ("vxlan-decap", Drop, "vni is not ours"),
    VxlanInnerNotIp4 => ("vxlan-decap", Drop, "inner frame is not ipv4"),
    VxlanDecapsulated => ("vxlan-decap", Event, "packets decapsulated"),
    NatNotConfigured => ("nat44-out", Drop, "snat not configured"),
    NatFragment => ("nat44-out", Drop, "fragments are not translated"),
    NatTruncated => ("nat44-out", Drop, "truncated transport header"),
    NatUnsupportedProtocol => ("nat44-out", Drop, "protocol not translated (tcp, udp and icmp echo are)"),
    NatTableFull => ("nat44-out", Drop, "session table full"),
    NatNoPorts => ("nat44-out", Drop, "no free external port"),
    NatPassedUntranslated => ("nat44-out", Event, "no session and none to open (reply to an inbound flow, icmp error): not translated"),
    NatSessionsCreated => ("nat44-out", Event, "sessions created"),
    NatSessionsExpired => ("nat44-out", Event, "sessions expired"),
    NatOutTranslated => ("nat44-out", Event, "packets translated"),
    NatInTranslated => ("nat44-in", Event, "packets translated"),
    GsoSuperFrames => ("ip4-gso", Event, "tcp super-frames cut into segments"),
    GsoSegments => ("ip4-gso", Event, "segments made"),
    GsoChecksumsFinished => ("ip4-gso", Event, "partial checksums finished"),
    GsoNoBuffer => ("ip4-gso", Drop, "no buffer for a segment"),
    GsoMalformed => ("ip4-gso", Drop, "super-frame not tcp over ipv4, or its segments do not fit a buffer"),
    GraphLoopLimit => ("graph", Drop, "dispatch loop limit reached"),
}

impl Counter {
    /// `node: text`, the way `show errors` prints it.
    pub fn label(self) -> String {
        format!("{}: {}", self.node(), self.text())
    }
}

/// One worker's counters, indexed by [`Counter`].
#[derive(Clone, Debug)]
pub struct Counters {
    values: [u64; Counter::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            values: [0; Counter::COUNT],
        }
    }
}

impl Counters {
    #[inline]
    pub fn add(&mut self, c: Counter, n: u64) {
        self.values[c as usize] += n;
    }

    #[inline]
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize]
    }

    /// Sum of all drop counters.
    pub fn total_drops(&self) -> u64 {
        Counter::ALL
            .iter()
            .filter(|c| c.is_drop())
            .map(|c| self.get(*c))
            .sum()
    }

    /// Every non-zero counter, in declaration (= graph) order.
    pub fn nonzero(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL
            .iter()
            .map(|c| (*c, self.get(*c)))
            .filter(|(_, n)| *n > 0)
    }
}

/// Per-interface counters kept by the engine (the port keeps its own too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets the port refused on transmit (its own stats say why).
    pub tx_dropped: u64,
}
