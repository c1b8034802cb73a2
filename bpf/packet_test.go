package bpf

import (
	"net"
	"net/netip"

	"github.com/podwall/podwall/tests/frames"
)

// The frames of the tests, in the short spelling they are written in: tests/frames builds
// them. Checksums stay zero: the programs never verify them.

type (
	l4   = frames.L4
	ext6 = frames.Ext6
)

func tcp(sport, dport uint16, flags uint8) l4 { return frames.TCP(sport, dport, flags, nil) }
func udp(sport, dport uint16) l4              { return frames.UDP(sport, dport, nil) }

func icmp4(typ, code uint8, id uint16, body []byte) l4 {
	return frames.ICMP(frames.ProtoICMP, typ, code, id, body)
}

func icmp6(typ, code uint8, id uint16, body []byte) l4 {
	return frames.ICMP(frames.ProtoICMPv6, typ, code, id, body)
}

// raw is n bytes announced as proto: unknown protocols, the data of later fragments.
func raw(proto uint8, n int) l4 { return frames.Raw(proto, make([]byte, n)) }

var (
	optsHdr = frames.Opts6
	authHdr = frames.Auth6
	fragHdr = frames.Frag6
)

func ether(etherType uint16, payload []byte) []byte {
	return frames.Ether(net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, net.HardwareAddr{0x02, 0, 0, 0, 0, 2}, etherType, payload)
}

// v4 is an IPv4 header (frames.IPv4) with its addresses as text.
type v4 struct {
	src, dst string
	id       uint16
	fragOff  uint16 // in 8-byte units
	mf       bool
	options  []byte // a multiple of 4 bytes
	ihl      uint8  // 0: 5 plus the options
	version  uint8  // 0: 4
}

func (h v4) packet(l l4) []byte {
	return frames.IPv4{Src: netip.MustParseAddr(h.src), Dst: netip.MustParseAddr(h.dst), ID: h.id,
		FragOff: h.fragOff, MF: h.mf, Options: h.options, IHL: h.ihl, Version: h.version}.Packet(l)
}

func (h v4) frame(l l4) []byte { return ether(frames.EtherIPv4, h.packet(l)) }

// v6 is an IPv6 header and its extension headers (frames.IPv6) with its addresses as text.
type v6 struct {
	src, dst string
	exts     []ext6
}

func (h v6) packet(l l4) []byte {
	return frames.IPv6{Src: netip.MustParseAddr(h.src), Dst: netip.MustParseAddr(h.dst), Exts: h.exts}.Packet(l)
}

func (h v6) frame(l l4) []byte { return ether(frames.EtherIPv6, h.packet(l)) }
