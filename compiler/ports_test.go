package compiler

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/policy"
)

func TestPortPrefixesCount(t *testing.T) {
	for _, c := range []struct {
		first, last uint16
		want        []portPrefix
	}{
		{0, 65535, []portPrefix{{0, 0}}},
		{80, 80, []portPrefix{{80, 16}}},
		{65535, 65535, []portPrefix{{65535, 16}}},
		{0, 0, []portPrefix{{0, 16}}},
		{80, 90, []portPrefix{{80, 13}, {88, 15}, {90, 16}}},
		{1024, 65535, []portPrefix{{1024, 6}, {2048, 5}, {4096, 4}, {8192, 3}, {16384, 2}, {32768, 1}}},
		{32768, 65535, []portPrefix{{32768, 1}}},
	} {
		require.Equal(t, c.want, portPrefixes(c.first, c.last), "%d:%d", c.first, c.last)
	}
	require.Len(t, portPrefixes(1, 65534), 30, "the worst case")
}

// Each prefix set covers its range exactly once, port by port, with at most 30 prefixes.
func TestPortPrefixesExhaustive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ranges := [][2]uint16{{0, 65535}, {1, 65534}, {0, 1}, {65534, 65535}, {255, 256}, {32767, 32768}}
	for range 200 {
		a, b := uint16(rng.IntN(65536)), uint16(rng.IntN(65536))
		if rng.IntN(2) == 0 {
			b = a + uint16(rng.IntN(300)) // short ranges: most real ones
		}
		ranges = append(ranges, [2]uint16{min(a, b), max(a, b)})
	}
	var count [65536]uint8
	for _, r := range ranges {
		clear(count[:])
		prefixes := portPrefixes(r[0], r[1])
		require.LessOrEqual(t, len(prefixes), 30)
		for _, p := range prefixes {
			size := 1 << (16 - int(p.bits))
			require.Zero(t, int(p.port)%size, "prefix %d/%d is aligned", p.port, p.bits)
			for port := int(p.port); port < int(p.port)+size; port++ {
				count[port]++
			}
		}
		for port := range 65536 {
			want := uint8(0)
			if port >= int(r[0]) && port <= int(r[1]) {
				want = 1
			}
			if count[port] != want {
				require.Equal(t, want, count[port], "range %d:%d, port %d", r[0], r[1], port)
			}
		}
	}
}

// The intervals hold, port by port, exactly the rules whose ranges hold the port, and two
// neighbouring intervals never hold the same rules.
func TestPortIntervalsExhaustive(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	edges := []uint16{0, 1, 79, 80, 81, 443, 1023, 1024, 65534, 65535}
	ruleIDs := []int{0, 1, 5, 63, 64, 1023}
	want, got := new([65536]vec), new([65536]vec)
	for range 60 {
		var ranges []rulePorts
		for range rng.IntN(8) + 1 {
			pick := func() uint16 {
				if rng.IntN(2) == 0 {
					return edges[rng.IntN(len(edges))]
				}
				return uint16(rng.IntN(65536))
			}
			a, b := pick(), pick()
			ranges = append(ranges, rulePorts{rule: ruleIDs[rng.IntN(len(ruleIDs))], ports: policy.PortRange{First: min(a, b), Last: max(a, b)}})
		}
		intervals := portIntervals(ranges)
		clear(want[:])
		clear(got[:])
		for _, r := range ranges {
			for p := int(r.ports.First); p <= int(r.ports.Last); p++ {
				want[p].set(r.rule)
			}
		}
		for i, in := range intervals {
			require.False(t, in.rules.isZero())
			require.LessOrEqual(t, in.first, in.last)
			if i > 0 {
				prev := intervals[i-1]
				require.Less(t, prev.last, in.first)
				require.False(t, prev.last+1 == in.first && prev.rules == in.rules, "intervals %d and %d merge", i-1, i)
			}
			for p := int(in.first); p <= int(in.last); p++ {
				got[p] = in.rules
			}
		}
		for p := range 65536 {
			if want[p] != got[p] {
				require.Equal(t, want[p], got[p], "port %d of %v", p, ranges)
			}
		}
	}
}

func TestNetPortIsBigEndianInMemory(t *testing.T) {
	k := netPort(0x1234)
	require.Equal(t, []byte{0x12, 0x34}, (*[2]byte)(unsafe.Pointer(&k))[:])
}
