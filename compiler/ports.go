package compiler

import (
	"cmp"
	"encoding/binary"
	"math/bits"
	"slices"

	"github.com/podwall/podwall/policy"
)

// rulePorts is one port range of one rule.
type rulePorts struct {
	rule  int
	ports policy.PortRange
}

// portInterval is a run of ports that all match the same rules.
type portInterval struct {
	first, last uint16
	rules       vec
}

// portIntervals cuts 0..65535 at every boundary of the ranges and returns, in port order,
// the maximal runs of ports matched by at least one rule. A rule's ranges may overlap.
func portIntervals(ranges []rulePorts) []portInterval {
	type edge struct {
		pos   int // first port where the change applies; 65536 past the end
		rule  int
		delta int
	}
	edges := make([]edge, 0, 2*len(ranges))
	for _, r := range ranges {
		edges = append(edges,
			edge{pos: int(r.ports.First), rule: r.rule, delta: 1},
			edge{pos: int(r.ports.Last) + 1, rule: r.rule, delta: -1})
	}
	slices.SortFunc(edges, func(a, b edge) int { return cmp.Compare(a.pos, b.pos) })

	var out []portInterval
	var cur vec
	count := make(map[int]int)
	start := 0
	for i := 0; i < len(edges); {
		pos := edges[i].pos
		if pos > start && !cur.isZero() {
			if n := len(out); n > 0 && int(out[n-1].last)+1 == start && out[n-1].rules == cur {
				out[n-1].last = uint16(pos - 1)
			} else {
				out = append(out, portInterval{first: uint16(start), last: uint16(pos - 1), rules: cur})
			}
		}
		for ; i < len(edges) && edges[i].pos == pos; i++ {
			e := edges[i]
			count[e.rule] += e.delta
			if count[e.rule] > 0 {
				cur.set(e.rule)
			} else {
				cur.clear(e.rule)
			}
		}
		start = pos
	}
	return out
}

// portPrefix is the ports whose top bits bits equal those of port.
type portPrefix struct {
	port uint16
	bits uint8
}

// portPrefixes covers first..last with the fewest aligned prefixes (at most 30), in order.
func portPrefixes(first, last uint16) []portPrefix {
	var out []portPrefix
	for p, end := uint32(first), uint32(last)+1; p < end; {
		// The largest block that starts at p (aligned) and ends by last.
		size := uint32(1) << 16
		if p != 0 {
			size = uint32(1) << bits.TrailingZeros32(p)
		}
		for p+size > end {
			size >>= 1
		}
		out = append(out, portPrefix{port: uint16(p), bits: uint8(16 - bits.TrailingZeros32(size))})
		p += size
	}
	return out
}

// portKeyBits are the bits of port_key before the port: policy, proto_class and dir.
const portKeyBits = 48

// netPort is a port as the data path keeps it: the bytes of network order in a host-order
// field.
func netPort(p uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, p))
}
