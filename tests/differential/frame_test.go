package differential

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/tests/frames"
)

// wire is what a frame holds beyond the compiler.Packet it carries: fields Evaluate does not
// read but the program's parser walks, so that the packets also vary in their layout.
type wire struct {
	echoID   uint16
	tcpFlags uint8
	// v4Options is the number of 4-byte IPv4 option words (IHL - 5).
	v4Options int
	// v6Exts are IPv6 extension headers (frames.NHHop, frames.NHDest, frames.NHRouting, frames.NHAuth) before the
	// fragment header, if any, and the L4 header.
	v6Exts []uint8
	// atomic puts a fragment header with offset 0 and no more fragments on an IPv6
	// packet that is not a fragment (RFC 6946).
	atomic bool
	fragID uint32
	// fragOffset is the offset of a FragLater packet in 8-byte units; more says whether
	// more fragments follow it.
	fragOffset uint16
	more       bool
	// payload follows the L4 header; it is the whole data of a FragLater packet.
	payload []byte
	// The frame around the packet: Ethernet padding after it; VLAN tags (their TPIDs,
	// outermost first), which only an open pod takes; and a lie added to the IP length
	// field, which makes the packet malformed when it claims more than the frame holds
	// (within the padding it only makes the payload longer).
	pad  int
	tags []uint16
	lie  int
}

// randomWire picks a layout for p.
func randomWire(rng *rand.Rand, p compiler.Packet) wire {
	w := wire{
		echoID:   uint16(rng.IntN(65536)),
		tcpFlags: pick(rng, []uint8{0x02, 0x10, 0x12, 0x18, 0x11, 0x04, uint8(rng.IntN(256))}),
		fragID:   rng.Uint32(),
		more:     rng.IntN(2) == 0,
		payload:  make([]byte, pick(rng, []int{0, 0, 1, 8, 8, 24, rng.IntN(64)})),
	}
	for i := range w.payload {
		w.payload[i] = byte(rng.IntN(256))
	}
	if p.Fragment == compiler.FragLater {
		w.fragOffset = uint16(1 + rng.IntN(0x1fff))
		w.payload = append(w.payload, make([]byte, 8)...)
	}
	switch rng.IntN(40) {
	case 0:
		w.tags = []uint16{0x8100}
	case 1:
		w.tags = []uint16{pick(rng, []uint16{0x8100, 0x88a8}), 0x8100}
	case 2:
		// Past the frame's end (a few bytes), or far past it.
		w.lie = pick(rng, []int{1, 7, 1000})
	}
	if rng.IntN(8) == 0 {
		w.pad = 1 + rng.IntN(40)
	}
	if p.Src.Is4() {
		w.v4Options = pick(rng, []int{0, 0, 0, 1, 10})
		return w
	}
	for range pick(rng, []int{0, 0, 0, 1, 2, 3}) {
		w.v6Exts = append(w.v6Exts, pick(rng, []uint8{frames.NHHop, frames.NHDest, frames.NHRouting, frames.NHAuth}))
	}
	w.atomic = p.Fragment == compiler.FragNone && rng.IntN(10) == 0
	return w
}

// frame lays p out as an Ethernet frame. Checksums stay zero: the programs never read them.
func frame(p compiler.Packet, w wire) []byte {
	b := make([]byte, 12, 128)
	copy(b, []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2})
	for _, tpid := range w.tags {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, 0) // VLAN 0: priority only
	}
	b = append(b, 0, 0)
	l3 := len(b)
	if p.Src.Is4() {
		binary.BigEndian.PutUint16(b[l3-2:], 0x0800)
		b = ipv4(b, p, w)
		binary.BigEndian.PutUint16(b[l3+2:], binary.BigEndian.Uint16(b[l3+2:])+uint16(w.lie))
	} else {
		binary.BigEndian.PutUint16(b[l3-2:], 0x86dd)
		b = ipv6(b, p, w)
		binary.BigEndian.PutUint16(b[l3+4:], binary.BigEndian.Uint16(b[l3+4:])+uint16(w.lie))
	}
	return append(b, make([]byte, w.pad)...)
}

// frameVerdict is what to_pod answers for p laid out as w, from want, Evaluate's answer for
// the packet: Evaluate judges IP packets, and a tagged frame or lying length fields are
// decided before the packet is: dropped unless the pod is open.
func frameVerdict(s *compiler.State, ifindex uint32, w wire, want compiler.Verdict) compiler.Verdict {
	ep, ok := s.Endpoints[ifindex]
	if !ok || (len(w.tags) == 0 && w.lie <= w.pad) {
		return want
	}
	v := compiler.Verdict{Rule: -1, Policy: ep.Policy}
	switch {
	case ep.Mode == bpf.ModeOpen:
		v.Pass, v.Reason = true, bpf.ReasonOpen
	case len(w.tags) > 0:
		v.Reason = bpf.ReasonVLAN
	default:
		v.Reason = bpf.ReasonMalformed
	}
	return v
}

func ipv4(b []byte, p compiler.Packet, w wire) []byte {
	h := frames.IPv4{Src: p.Src, Dst: p.Dst, ID: uint16(w.fragID), Options: bytes.Repeat([]byte{1}, 4*w.v4Options)} // NOP options
	switch p.Fragment {
	case compiler.FragFirst:
		h.MF = true
	case compiler.FragLater:
		h.FragOff, h.MF = w.fragOffset, w.more
	}
	return append(b, h.Packet(transport(p, w, frames.ProtoICMP))...)
}

func ipv6(b []byte, p compiler.Packet, w wire) []byte {
	h := frames.IPv6{Src: p.Src, Dst: p.Dst}
	for _, typ := range w.v6Exts {
		if typ == frames.NHAuth {
			h.Exts = append(h.Exts, frames.Auth6())
		} else {
			h.Exts = append(h.Exts, frames.Opts6(typ, 1))
		}
	}
	switch {
	case p.Fragment == compiler.FragFirst:
		h.Exts = append(h.Exts, frames.Frag6(0, true, w.fragID))
	case p.Fragment == compiler.FragLater:
		h.Exts = append(h.Exts, frames.Frag6(w.fragOffset, w.more, w.fragID))
	case w.atomic:
		h.Exts = append(h.Exts, frames.Frag6(0, false, w.fragID))
	}
	return append(b, h.Packet(transport(p, w, frames.ProtoICMPv6))...)
}

// transport is the transport header of p and the payload. A FragLater packet carries only
// data; icmp is the ICMP protocol of the packet's family (the other one is just a number).
func transport(p compiler.Packet, w wire, icmp uint8) frames.L4 {
	switch {
	case p.Fragment == compiler.FragLater:
		return frames.Raw(p.Proto, w.payload)
	case p.Proto == frames.ProtoTCP:
		return frames.TCP(p.SrcPort, p.DstPort, w.tcpFlags, w.payload)
	case p.Proto == frames.ProtoUDP:
		return frames.UDP(p.SrcPort, p.DstPort, w.payload)
	case p.Proto == icmp:
		return frames.ICMP(p.Proto, p.ICMPType, p.ICMPCode, w.echoID, w.payload)
	}
	return frames.Raw(p.Proto, w.payload)
}

// describe prints the packet and its layout for a report.
func describe(p compiler.Packet, w wire) string {
	frag := [...]string{compiler.FragNone: "none", compiler.FragFirst: "first", compiler.FragLater: "later"}[p.Fragment]
	s := fmt.Sprintf("%v -> %v proto %d", p.Src, p.Dst, p.Proto)
	switch {
	case p.Fragment == compiler.FragLater:
	case p.Proto == frames.ProtoTCP:
		s += fmt.Sprintf(" ports %d -> %d flags %#02x", p.SrcPort, p.DstPort, w.tcpFlags)
	case p.Proto == frames.ProtoUDP:
		s += fmt.Sprintf(" ports %d -> %d", p.SrcPort, p.DstPort)
	case p.Proto == frames.ProtoICMP && p.Src.Is4(), p.Proto == frames.ProtoICMPv6 && p.Src.Is6():
		s += fmt.Sprintf(" type %d code %d id %d", p.ICMPType, p.ICMPCode, w.echoID)
	}
	s += fmt.Sprintf(", fragment %s (id %#x offset %d more %v atomic %v)", frag, w.fragID, w.fragOffset, w.more, w.atomic)
	if p.Src.Is4() {
		s += fmt.Sprintf(", %d option words", w.v4Options)
	} else {
		s += fmt.Sprintf(", extension headers %v", w.v6Exts)
	}
	return s + fmt.Sprintf(", %d bytes of payload, %d of padding, tags %#x, length field %+d", len(w.payload), w.pad, w.tags, w.lie)
}

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }
