package compiler

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
)

func vecOf(rules ...int) vec {
	var v vec
	for _, r := range rules {
		v.set(r)
	}
	return v
}

func TestPushCIDRs(t *testing.T) {
	p := netip.MustParsePrefix
	got := pushCIDRs([]ruleCIDR{
		{0, p("10.0.0.0/8")},
		{1, p("10.1.0.0/16")},
		{2, p("10.1.2.0/24")},
		{3, p("10.0.0.0/8")},
		{4, p("11.0.0.0/8")},
		{5, p("0.0.0.0/0")},
		{6, p("fd00::/8")},
		{7, p("fd00::1/128")},
		{8, p("::/0")},
		{700, p("10.1.2.3/32")},
	})
	require.Equal(t, []cidrEntry{
		{p("0.0.0.0/0"), vecOf(5)},
		{p("10.0.0.0/8"), vecOf(0, 3, 5)},
		{p("10.1.0.0/16"), vecOf(0, 1, 3, 5)},
		{p("10.1.2.0/24"), vecOf(0, 1, 2, 3, 5)},
		{p("10.1.2.3/32"), vecOf(0, 1, 2, 3, 5, 700)},
		{p("11.0.0.0/8"), vecOf(4, 5)},
		{p("::/0"), vecOf(8)},
		{p("fd00::/8"), vecOf(6, 8)},
		{p("fd00::1/128"), vecOf(6, 7, 8)},
	}, got)
}

// A longest-prefix match over the pushed entries finds exactly the rules whose prefix holds
// the address.
func TestPushCIDRsLongestMatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		var rs []ruleCIDR
		for i := range 1 + rng.IntN(12) {
			a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(3)), byte(rng.IntN(3)), byte(rng.IntN(4))})
			rs = append(rs, ruleCIDR{rule: i, prefix: netip.PrefixFrom(a, rng.IntN(33)).Masked()})
		}
		entries := pushCIDRs(rs)
		for range 50 {
			a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(3)), byte(rng.IntN(3)), byte(rng.IntN(4))})
			var want vec
			for _, r := range rs {
				if r.prefix.Contains(a) {
					want.set(r.rule)
				}
			}
			var got vec
			best := -1
			for _, e := range entries {
				if e.prefix.Contains(a) && e.prefix.Bits() > best {
					best, got = e.prefix.Bits(), e.rules
				}
			}
			require.Equal(t, want, got, "%s in %v", a, rs)
		}
	}
}

func TestCIDRKey(t *testing.T) {
	k := cidrKey(7, netip.MustParsePrefix("10.1.0.0/16"))
	require.Equal(t, uint32(64+16), k.Prefixlen)
	require.Equal(t, uint32(7), k.Policy)
	require.Equal(t, uint8(bpf.FamV4), k.Ip.Family)
	require.Equal(t, [16]byte{10, 1}, k.Ip.Addr)
	k = cidrKey(7, netip.MustParsePrefix("fd00::/8"))
	require.Equal(t, uint32(64+8), k.Prefixlen)
	require.Equal(t, uint8(bpf.FamV6), k.Ip.Family)
	require.Equal(t, [16]byte{0xfd}, k.Ip.Addr)
}
