package compiler

import (
	"net/netip"
	"slices"

	"github.com/podwall/podwall/bpf"
)

// ruleCIDR is the "from cidr" of one rule.
type ruleCIDR struct {
	rule   int
	prefix netip.Prefix
}

// cidrEntry is one prefix of pol_cidr and the rules its addresses match.
type cidrEntry struct {
	prefix netip.Prefix
	rules  vec
}

// pushCIDRs makes one entry per distinct rule prefix, holding the rules of every rule prefix
// that contains it. A longest-prefix lookup of an address then finds exactly the rules whose
// prefix holds the address: any such prefix contains the longest one that does.
func pushCIDRs(rs []ruleCIDR) []cidrEntry {
	var out []cidrEntry
	for _, r := range rs {
		if !slices.ContainsFunc(out, func(e cidrEntry) bool { return e.prefix == r.prefix }) {
			out = append(out, cidrEntry{prefix: r.prefix})
		}
	}
	for i := range out {
		p := out[i].prefix
		for _, r := range rs {
			if r.prefix.Bits() <= p.Bits() && r.prefix.Contains(p.Addr()) {
				out[i].rules.set(r.rule)
			}
		}
	}
	slices.SortFunc(out, func(a, b cidrEntry) int { return comparePrefix(a.prefix, b.prefix) })
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// cidrKeyBits are the bits of cidr_key before the address: policy, family and padding.
const cidrKeyBits = 64

// cidrKey is the pol_cidr key of a masked prefix.
func cidrKey(policy uint32, p netip.Prefix) bpf.PodwallCidrKey {
	return bpf.PodwallCidrKey{Prefixlen: cidrKeyBits + uint32(p.Bits()), Policy: policy, Ip: AddrKey(p.Addr())}
}
