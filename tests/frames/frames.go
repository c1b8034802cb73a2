// Package frames builds Ethernet frames and IP packets byte by byte, for the tests that feed
// them to the programs (BPF_PROG_TEST_RUN) or send them from a pod's namespace: only what a
// test states is set, so that a test can also build what no stack would send. Checksums are
// zero unless Seal fills them.
package frames

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// IP protocol numbers and IPv6 extension header types.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58

	NHHop      = 0
	NHRouting  = 43
	NHFragment = 44
	NHAuth     = 51
	NHDest     = 60
)

// Ethertypes.
const (
	EtherIPv4   = 0x0800
	EtherARP    = 0x0806
	EtherIPv6   = 0x86dd
	Ether8021Q  = 0x8100
	Ether8021AD = 0x88a8
)

// TCP flags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

// L4 is a transport header and its payload, with the protocol number that announces it.
type L4 struct {
	Proto uint8
	B     []byte
}

// TCP is a TCP header without options, then payload.
func TCP(sport, dport uint16, flags uint8, payload []byte) L4 {
	b := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[12] = 5 << 4
	b[13] = flags
	return L4{ProtoTCP, append(b, payload...)}
}

// UDP is a UDP header, then payload; its length field counts both.
func UDP(sport, dport uint16, payload []byte) L4 {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return L4{ProtoUDP, append(b, payload...)}
}

// ICMP is an ICMP (proto ProtoICMP) or ICMPv6 message: id goes where echo messages keep
// their identifier, body after the first 8 bytes (an error's quoted packet).
func ICMP(proto, typ, code uint8, id uint16, body []byte) L4 {
	b := make([]byte, 8, 8+len(body))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint16(b[4:], id)
	return L4{proto, append(b, body...)}
}

// Raw is any payload announced as proto: unknown protocols, the data of later fragments.
func Raw(proto uint8, b []byte) L4 { return L4{proto, b} }

// IPv4 is an IPv4 header.
type IPv4 struct {
	Src, Dst netip.Addr
	ID       uint16
	FragOff  uint16 // in 8-byte units
	MF       bool
	Options  []byte // a multiple of 4 bytes
	IHL      uint8  // 0: 5 plus the options
	Version  uint8  // 0: 4
}

// Packet is the header, with its total length, and l.
func (h IPv4) Packet(l L4) []byte {
	hl := 20 + len(h.Options)
	b := make([]byte, hl, hl+len(l.B))
	version, ihl := h.Version, h.IHL
	if version == 0 {
		version = 4
	}
	if ihl == 0 {
		ihl = uint8(hl / 4)
	}
	b[0] = version<<4 | ihl
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(l.B)))
	binary.BigEndian.PutUint16(b[4:], h.ID)
	frag := h.FragOff & 0x1fff
	if h.MF {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8] = 64
	b[9] = l.Proto
	src, dst := h.Src.As4(), h.Dst.As4()
	copy(b[12:], src[:])
	copy(b[16:], dst[:])
	copy(b[20:], h.Options)
	return append(b, l.B...)
}

// Ext6 is an IPv6 extension header without its next header byte, which IPv6.Packet fills in.
type Ext6 struct {
	Type uint8
	Body []byte // the header from its second byte on
}

// Opts6 is a hop-by-hop, destination options or routing header of 8*units bytes.
func Opts6(typ uint8, units int) Ext6 {
	body := make([]byte, 8*units-1)
	body[0] = uint8(units - 1)
	return Ext6{typ, body}
}

// Auth6 is an AH header of 12 bytes: its length counts 4-byte units minus 2.
func Auth6() Ext6 {
	body := make([]byte, 11)
	body[0] = 12/4 - 2
	return Ext6{NHAuth, body}
}

// Frag6 is a fragment header: offset in 8-byte units.
func Frag6(offset uint16, more bool, id uint32) Ext6 {
	body := make([]byte, 7)
	fo := offset << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(body[1:], fo)
	binary.BigEndian.PutUint32(body[3:], id)
	return Ext6{NHFragment, body}
}

// IPv6 is an IPv6 header and its extension headers.
type IPv6 struct {
	Src, Dst netip.Addr
	Exts     []Ext6
}

// Packet is the header, with its payload length and next header chain, and l.
func (h IPv6) Packet(l L4) []byte {
	b := make([]byte, 40, 40+len(l.B))
	b[0] = 6 << 4
	b[7] = 64
	src, dst := h.Src.As16(), h.Dst.As16()
	copy(b[8:], src[:])
	copy(b[24:], dst[:])
	next := func(i int) uint8 {
		if i < len(h.Exts) {
			return h.Exts[i].Type
		}
		return l.Proto
	}
	b[6] = next(0)
	for i, e := range h.Exts {
		b = append(b, next(i+1))
		b = append(b, e.Body...)
	}
	b = append(b, l.B...)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	return b
}

// Ether is an Ethernet frame.
func Ether(dst, src net.HardwareAddr, etherType uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:], etherType)
	return append(b, payload...)
}

// Tag inserts a VLAN tag (tpid 0x8100 or 0x88a8, and a VLAN id) after a frame's addresses.
func Tag(frame []byte, tpid, vid uint16) []byte {
	out := make([]byte, 0, len(frame)+4)
	out = append(out, frame[:12]...)
	out = binary.BigEndian.AppendUint16(out, tpid)
	out = binary.BigEndian.AppendUint16(out, vid&0x0fff)
	return append(out, frame[12:]...)
}

// Seal fills the checksums of a packet a real stack must accept: the IPv4 header's (SealIPv4),
// and the TCP, UDP, ICMP or ICMPv6 one of a packet without IPv6 extension headers.
func Seal(packet []byte) []byte {
	var src, dst netip.Addr
	var proto uint8
	var l4 []byte
	if packet[0]>>4 == 4 {
		SealIPv4(packet)
		hl := int(packet[0]&0xf) * 4
		src, dst = netip.AddrFrom4([4]byte(packet[12:16])), netip.AddrFrom4([4]byte(packet[16:20]))
		proto, l4 = packet[9], packet[hl:]
	} else {
		src, dst = netip.AddrFrom16([16]byte(packet[8:24])), netip.AddrFrom16([16]byte(packet[24:40]))
		proto, l4 = packet[6], packet[40:]
	}
	off, ok := map[uint8]int{ProtoTCP: 16, ProtoUDP: 6, ProtoICMP: 2, ProtoICMPv6: 2}[proto]
	if ok && len(l4) >= off+2 {
		binary.BigEndian.PutUint16(l4[off:], 0)
		binary.BigEndian.PutUint16(l4[off:], Checksum(src, dst, proto, l4))
	}
	return packet
}

// SealIPv4 fills the header checksum of an IPv4 packet.
func SealIPv4(packet []byte) []byte {
	hl := int(packet[0]&0xf) * 4
	binary.BigEndian.PutUint16(packet[10:], 0)
	binary.BigEndian.PutUint16(packet[10:], ^uint16(sum(0, packet[:hl])))
	return packet
}

// Checksum is the checksum of a transport segment (its own checksum field zero) from src to
// dst: over the pseudo-header but for ICMP, which has none; a UDP checksum of 0 is sent as
// 0xffff.
func Checksum(src, dst netip.Addr, proto uint8, seg []byte) uint16 {
	if proto == ProtoICMP {
		return ^uint16(sum(0, seg))
	}
	var pseudo []byte
	pseudo = append(pseudo, src.AsSlice()...)
	pseudo = append(pseudo, dst.AsSlice()...)
	pseudo = append(pseudo, 0, proto)
	pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(seg)))
	c := ^uint16(sum(sum(0, pseudo), seg))
	if c == 0 && proto == ProtoUDP {
		return 0xffff
	}
	return c
}

// sum is the ones' complement sum of b added to s, folded to 16 bits.
func sum(s uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s
}
