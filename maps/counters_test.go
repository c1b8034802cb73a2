package maps

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
)

// TestRuleCountersFollowTheRulesText checks that counts stay with a rule's text across a
// policy change that keeps it and across an agent restart, and that every endpoint has a
// block of its own.
func TestRuleCountersFollowTheRulesText(t *testing.T) {
	m := load(t, 0)
	endpoint := func(ifindex uint32) bpf.PodwallEndpointEntry {
		var e bpf.PodwallEndpointEntry
		require.NoError(t, m.Endpoints.Lookup(ifindex, &e))
		return e
	}
	// hit adds n packets on one CPU to the slot of rule bit (-1: the undecided slot).
	hit := func(ifindex uint32, bit int, n uint64) {
		e := endpoint(ifindex)
		slot := uint32(e.Ep.Counters) + uint32(bit)
		if bit < 0 {
			slot = uint32(e.Ep.Counters) + e.Rules.Nrules
		}
		counts := make([]bpf.PodwallRuleCount, ebpf.MustPossibleCPU())
		require.NoError(t, m.RuleCounters.Lookup(slot, &counts))
		counts[0].Packets += n
		counts[0].Flows++
		require.NoError(t, m.RuleCounters.Update(slot, counts, ebpf.UpdateAny))
	}
	packets := func(ifindex uint32) []uint64 {
		counts, err := ReadRuleCounts(m.RuleCounters, endpoint(ifindex))
		require.NoError(t, err)
		out := make([]uint64, len(counts))
		for i, c := range counts {
			out[i] = c.Packets
		}
		return out
	}

	a := NewApplier(m)
	require.NoError(t, a.Apply(compiler.Compile(input("allow tcp to ports 80; allow udp; deny icmp"))))
	require.NotZero(t, endpoint(7).Ep.Counters)
	require.NotZero(t, endpoint(8).Ep.Counters)
	require.NotEqual(t, endpoint(7).Ep.Counters, endpoint(8).Ep.Counters)
	hit(7, 0, 5)
	hit(7, 1, 7)
	hit(7, 2, 11)
	hit(7, -1, 13)
	require.Equal(t, []uint64{5, 7, 11, 13}, packets(7))

	// "allow udp" and "deny icmp" keep their text at other bits; "allow tcp to ports 80" is
	// gone and its count with it.
	require.NoError(t, a.Apply(compiler.Compile(input("deny icmp; allow tcp to ports 443; allow udp"))))
	require.Equal(t, []uint64{11, 0, 7, 13}, packets(7))

	// A restarted agent finds the blocks where it left them.
	restarted := NewApplier(m)
	base := endpoint(7).Ep.Counters
	require.NoError(t, restarted.Apply(compiler.Compile(input("deny icmp; allow tcp to ports 443; allow udp"))))
	require.Equal(t, base, endpoint(7).Ep.Counters)
	require.Equal(t, []uint64{11, 0, 7, 13}, packets(7))

	// A pod that leaves frees its block, for a new pod that starts from zero.
	in := input("deny icmp; allow tcp to ports 443; allow udp")
	in.Endpoints = in.Endpoints[1:]
	require.NoError(t, restarted.Apply(compiler.Compile(in)))
	in = input("deny icmp; allow tcp to ports 443; allow udp")
	in.Endpoints[0].Ifindex = 9
	require.NoError(t, restarted.Apply(compiler.Compile(in)))
	require.Equal(t, []uint64{0, 0, 0, 0}, packets(9))
}

// TestRuleCountersFull checks that an endpoint for which rule_counters has no room is
// enforced uncounted, and that the map's fill says so.
func TestRuleCountersFull(t *testing.T) {
	m := loadSized(t, map[string]uint32{bpf.PodwallMapRuleCounters: 4}) // one block of 3 slots
	a := NewApplier(m)
	require.NoError(t, a.Apply(compiler.Compile(input("allow tcp to ports 80; allow udp"))))
	var web, front bpf.PodwallEndpointEntry
	require.NoError(t, m.Endpoints.Lookup(uint32(7), &web))
	require.NoError(t, m.Endpoints.Lookup(uint32(8), &front))
	require.Equal(t, bpf.ModeEnforce, web.Ep.Mode)
	require.Equal(t, bpf.ModeEnforce, front.Ep.Mode)
	counted := 0
	for _, e := range []bpf.PodwallEndpointEntry{web, front} {
		if e.Ep.Counters != 0 {
			counted++
		}
	}
	require.Equal(t, 1, counted, "one block fits")
	require.Contains(t, a.Fill(), Fill{Map: bpf.PodwallMapRuleCounters, Entries: 3, Max: 4})
}
