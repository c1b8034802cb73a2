package compiler

import (
	"net/netip"

	"github.com/podwall/podwall/bpf"
)

// IP protocol numbers the data path tells apart.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// FragKind says where a packet stands in its datagram.
type FragKind uint8

const (
	FragNone  FragKind = iota // not a fragment
	FragFirst                 // offset 0, more fragments follow: it carries the L4 header
	FragLater                 // offset > 0: no L4 header
)

// Packet is what the data path reads of a packet going to a pod. Ports are used with TCP and
// UDP, ICMPType and ICMPCode with ICMP and ICMPv6, neither in a FragLater packet.
type Packet struct {
	Src, Dst netip.Addr
	// FromNode says the node's own network stack sent the packet (to_pod sees it received
	// on no interface). Only such a packet is from the node (SPEC 3.2), whatever its source;
	// a forwarded one that carries a node address is judged as the world's.
	FromNode           bool
	Proto              uint8
	SrcPort, DstPort   uint16
	ICMPType, ICMPCode uint8
	Fragment           FragKind
}

// Verdict is the data path's answer for a packet.
type Verdict struct {
	Pass   bool
	Reason bpf.Reason
	// Rule is the bit of the deciding rule (Policy.Rules[Rule] says which rule it is), -1
	// when no rule decided.
	Rule int
	// Identity is the source's identity, once the algorithm looked it up.
	Identity uint32
	// Policy is the endpoint's policy id.
	Policy uint32
	// Audit: the policy drops the packet (Reason, Rule), and audit mode passes it.
	Audit bool
}

// Evaluate is what to_pod answers from the maps of s for a packet to the endpoint at
// ifindex that opens a new flow: no conntrack entry, no fragment seen before (steps 1-5 and
// 8-10 of docs/ARCHITECTURE.md). Src and Dst must be of one family.
func Evaluate(s *State, ifindex uint32, p Packet) Verdict {
	v := evaluate(s, ifindex, p)
	if !v.Pass && s.Endpoints[ifindex].Flags&bpf.EPAudit != 0 && bpf.Audited(v.Reason) {
		v.Pass, v.Audit = true, true
	}
	return v
}

func evaluate(s *State, ifindex uint32, p Packet) Verdict {
	v := Verdict{Rule: -1}
	ep, ok := s.Endpoints[ifindex]
	if !ok {
		// Programs on an interface without an entry drop everything (SPEC 8).
		return Verdict{Reason: bpf.ReasonNoEntry, Rule: -1}
	}
	v.Policy = ep.Policy
	switch {
	case !p.Src.IsValid() || p.Src.Is4() != p.Dst.Is4():
		if ep.Mode == bpf.ModeOpen {
			return pass(v, bpf.ReasonOpen)
		}
		return drop(v, bpf.ReasonMalformed)
	case ep.Mode == bpf.ModeOpen:
		return pass(v, bpf.ReasonOpen)
	}
	fi := famIdx(p.Src)
	l4 := p.Fragment != FragLater
	if l4 && fi == famIdxV6 && p.Proto == protoICMPv6 && p.ICMPType >= 133 && p.ICMPType <= 137 {
		return pass(v, bpf.ReasonND)
	}
	v.Identity = s.IPCache[AddrKey(p.Src)]
	if p.FromNode {
		if ep.Flags&bpf.EPAllowHost != 0 {
			return pass(v, bpf.ReasonHost)
		}
	} else if v.Identity == bpf.IDHost {
		v.Identity = bpf.IDWorld
	}
	if ep.Mode == bpf.ModeIsolate {
		return drop(v, bpf.ReasonIsolated)
	}
	pol, ok := s.Policies[ep.Policy]
	if !ok {
		// maps.Applier writes such an endpoint isolated: it has no record to judge with.
		return drop(v, bpf.ReasonIsolated)
	}

	rec := &pol.Record
	class := packetClass(fi, p.Proto)
	r := vec(rec.Proto[fi][class])
	if rec.Flags&bpf.PFIdent != 0 {
		r = r.and(lookupOr(pol.Ident, bpf.PodwallIdentKey{Policy: ep.Policy, Identity: v.Identity}, rec.WildIdent))
	}
	if rec.Flags&bpf.PFCIDR != 0 {
		r = r.and(pol.lookupCIDR(ep.Policy, p.Src))
	}
	ports := l4 && (class == bpf.ClassTCP || class == bpf.ClassUDP)
	if rec.Flags&bpf.PFSport != 0 {
		sport := vec(rec.WildSport)
		if ports {
			sport = pol.lookupPort(ep.Policy, uint8(class), bpf.DirSrc, p.SrcPort, sport)
		}
		r = r.and(sport)
	}
	if rec.Flags&bpf.PFDport != 0 {
		dport := vec(rec.WildDport)
		if ports {
			dport = pol.lookupPort(ep.Policy, uint8(class), bpf.DirDst, p.DstPort, dport)
		}
		r = r.and(dport)
	}
	if rec.Flags&bpf.PFICMP != 0 {
		icmp := vec(rec.WildIcmp)
		if l4 && class == bpf.ClassICMP {
			fam := uint8(bpf.FamV4)
			if fi == famIdxV6 {
				fam = bpf.FamV6
			}
			k := bpf.PodwallIcmpKey{Policy: ep.Policy, Family: fam, Type: p.ICMPType, Code: uint16(p.ICMPCode)}
			anyCode := k
			anyCode.Code = bpf.ICMPAnyCode
			icmp = lookupOr(pol.ICMP, k, lookupOr(pol.ICMP, anyCode, icmp))
		}
		r = r.and(icmp)
	}

	if deny := r.and(rec.Deny); !deny.isZero() {
		v.Rule = deny.lowest()
		return drop(v, bpf.ReasonDenyRule)
	}
	if !r.isZero() {
		v.Rule = r.lowest()
		return pass(v, bpf.ReasonAllowRule)
	}
	return drop(v, bpf.ReasonNoRule)
}

func pass(v Verdict, r bpf.Reason) Verdict {
	v.Pass, v.Reason = true, r
	return v
}

func drop(v Verdict, r bpf.Reason) Verdict {
	v.Pass, v.Reason = false, r
	return v
}

// packetClass is the protocol class of a packet: icmp counts only in IPv4 and icmpv6 only
// in IPv6.
func packetClass(fi int, proto uint8) int {
	switch {
	case proto == protoTCP:
		return bpf.ClassTCP
	case proto == protoUDP:
		return bpf.ClassUDP
	case proto == protoICMP && fi == famIdxV4, proto == protoICMPv6 && fi == famIdxV6:
		return bpf.ClassICMP
	}
	return bpf.ClassOther
}

func lookupOr[K comparable](m map[K]bpf.PodwallRuleVec, k K, miss vec) vec {
	if v, ok := m[k]; ok {
		return v.Bits
	}
	return miss
}

// lookupCIDR is the longest-prefix lookup of pol_cidr, done as the trie would: the longest
// stored prefix that holds the address, else wild_cidr.
func (p *Policy) lookupCIDR(policy uint32, a netip.Addr) vec {
	for bits := a.BitLen(); bits >= 0; bits-- {
		pfx, _ := a.Prefix(bits)
		if v, ok := p.CIDR[cidrKey(policy, pfx)]; ok {
			return v.Bits
		}
	}
	return p.Record.WildCidr
}

// lookupPort is the longest-prefix lookup of pol_port, miss when nothing holds the port.
func (p *Policy) lookupPort(policy uint32, class, dir uint8, port uint16, miss vec) vec {
	for bits := 16; bits >= 0; bits-- {
		k := bpf.PodwallPortKey{
			Prefixlen:  portKeyBits + uint32(bits),
			Policy:     policy,
			ProtoClass: class,
			Dir:        dir,
			Port:       netPort(uint16(uint32(port) >> (16 - bits) << (16 - bits))),
		}
		if v, ok := p.Port[k]; ok {
			return v.Bits
		}
	}
	return miss
}
