package bpf

import (
	"encoding/binary"
	"net/netip"
)

// Frames for BPF_PROG_TEST_RUN, built byte by byte: only the header fields the programs read
// are meaningful; checksums stay zero because the programs never verify them.

const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58

	nhHop      = 0
	nhRouting  = 43
	nhFragment = 44
	nhAuth     = 51
	nhDest     = 60

	tcpSYN = 0x02
	tcpACK = 0x10
	tcpFIN = 0x01
	tcpRST = 0x04
)

// l4 is a transport header (and payload) with the protocol number that announces it.
type l4 struct {
	proto uint8
	b     []byte
}

func tcp(sport, dport uint16, flags uint8) l4 {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[12] = 5 << 4
	b[13] = flags
	return l4{protoTCP, b}
}

func udp(sport, dport uint16) l4 {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], 8)
	return l4{protoUDP, b}
}

// icmpMsg is an ICMP or ICMPv6 message: id goes where echo messages keep their identifier,
// body after the first 8 bytes (the quoted packet of an error).
func icmpMsg(proto, typ, code uint8, id uint16, body []byte) l4 {
	b := make([]byte, 8, 8+len(body))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint16(b[4:], id)
	return l4{proto, append(b, body...)}
}

func icmp4(typ, code uint8, id uint16, body []byte) l4 {
	return icmpMsg(protoICMP, typ, code, id, body)
}

func icmp6(typ, code uint8, id uint16, body []byte) l4 {
	return icmpMsg(protoICMPv6, typ, code, id, body)
}

// raw is any payload announced as proto: unknown protocols, the data of later fragments.
func raw(proto uint8, n int) l4 {
	return l4{proto, make([]byte, n)}
}

func ether(etherType uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:], []byte{0x02, 0, 0, 0, 0, 1})
	copy(b[6:], []byte{0x02, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(b[12:], etherType)
	return append(b, payload...)
}

// v4 is an IPv4 header.
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
	hl := 20 + len(h.options)
	b := make([]byte, hl, hl+len(l.b))
	version, ihl := h.version, h.ihl
	if version == 0 {
		version = 4
	}
	if ihl == 0 {
		ihl = uint8(hl / 4)
	}
	b[0] = version<<4 | ihl
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(l.b)))
	binary.BigEndian.PutUint16(b[4:], h.id)
	frag := h.fragOff & 0x1fff
	if h.mf {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8] = 64
	b[9] = l.proto
	src, dst := netip.MustParseAddr(h.src).As4(), netip.MustParseAddr(h.dst).As4()
	copy(b[12:], src[:])
	copy(b[16:], dst[:])
	copy(b[20:], h.options)
	return append(b, l.b...)
}

func (h v4) frame(l l4) []byte { return ether(0x0800, h.packet(l)) }

// ext6 is an IPv6 extension header without its next header byte, which packet fills in.
type ext6 struct {
	typ  uint8
	body []byte // the header from its second byte on
}

// optsHdr is a hop-by-hop, destination options or routing header of 8*units bytes.
func optsHdr(typ uint8, units int) ext6 {
	body := make([]byte, 8*units-1)
	body[0] = uint8(units - 1)
	return ext6{typ, body}
}

// authHdr is an AH header of 12 bytes: its length counts 4-byte units minus 2.
func authHdr() ext6 {
	body := make([]byte, 11)
	body[0] = 12/4 - 2
	return ext6{nhAuth, body}
}

func fragHdr(offset uint16, more bool, id uint32) ext6 {
	body := make([]byte, 7)
	fo := offset << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(body[1:], fo)
	binary.BigEndian.PutUint32(body[3:], id)
	return ext6{nhFragment, body}
}

// v6 is an IPv6 header and its extension headers.
type v6 struct {
	src, dst string
	exts     []ext6
}

func (h v6) packet(l l4) []byte {
	b := make([]byte, 40)
	b[0] = 6 << 4
	b[7] = 64
	src, dst := netip.MustParseAddr(h.src).As16(), netip.MustParseAddr(h.dst).As16()
	copy(b[8:], src[:])
	copy(b[24:], dst[:])
	next := func(i int) uint8 {
		if i < len(h.exts) {
			return h.exts[i].typ
		}
		return l.proto
	}
	b[6] = next(0)
	for i, e := range h.exts {
		b = append(b, next(i+1))
		b = append(b, e.body...)
	}
	b = append(b, l.b...)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	return b
}

func (h v6) frame(l l4) []byte { return ether(0x86dd, h.packet(l)) }
