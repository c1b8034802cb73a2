package standalone

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/agent"
	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/tests/topo"
)

// portList allows TCP to port first and n-1 more single ports above it, two apart (none of
// them port or otherPort but the first): n pol_port entries.
func portList(first, n int) string {
	ports := []string{fmt.Sprint(first)}
	for i := 1; i < n; i++ {
		ports = append(ports, fmt.Sprint(20001+2*i))
	}
	return "allow tcp to ports " + strings.Join(ports, ",")
}

// TestFullMapsIsolateNotOpen fills pol_port with several policies and with one over its
// budget: what does not fit isolates its own pods, a small policy is never starved, a new pod
// is guarded either way, and once the big policies go, everything is admitted again.
func TestFullMapsIsolateNotOpen(t *testing.T) {
	const portRoom, budget = 64, 40
	c := newCluster(t, topo.Routed)
	big1, big2, small, over, late, client := c.addPod("big1"), c.addPod("big2"), c.addPod("small"), c.addPod("over"), c.addPod("late"), c.addPod("client")
	opts := defaults
	opts.PolicyBudget = budget
	specs := func(bigs string) []podSpec {
		return []podSpec{
			{ns: "shop", name: "big1", tp: big1, annotations: policy(portList(port, 30))},
			{ns: "shop", name: "big2", tp: big2, annotations: policy(strings.Replace(portList(port, 30), "20003", "20000", 1))},
			{ns: "shop", name: "small", tp: small, annotations: policy("deny tcp; allow udp")},
			{ns: "shop", name: "over", tp: over, annotations: policy(portList(port, budget+1))},
			{ns: "shop", name: "late", tp: late, annotations: policy(bigs)},
			{ns: "shop", name: "client", tp: client},
		}
	}
	c.write(specs(portList(port, 36)), "shop")
	a := c.startAgentUnready(opts, func(lc *loader.Config, _ *agent.Config) {
		lc.MapSizes = map[string]uint32{bpf.PodwallMapPolPort: portRoom}
	})
	a.awaitReady()
	opts.Capacity = a.dp.Capacity()
	c.awaitApplied(opts)

	state := c.expected(opts)
	kinds := map[string]compiler.ProblemKind{}
	for _, p := range state.Problems {
		kinds[p.Name] = p.Kind
	}
	// Smallest first: small (2), big1 and big2 (30 each) fit in 64; late (36) does not.
	require.Equal(t, map[string]compiler.ProblemKind{"over": compiler.ProblemOverBudget, "late": compiler.ProblemNoRoom}, kinds)
	a.awaitMetric(t, 1, "podwall_policy_problems", "kind", "over-budget")
	a.awaitMetric(t, 1, "podwall_policy_problems", "kind", "no-room")
	topo.Expect(t,
		topo.TCP("to a big policy: its rule allows", client.NS, none, big1.IPv4, port, true),
		topo.TCP("to the small policy: deny tcp", client.NS, none, small.IPv4, port, false),
		topo.UDP("to the small policy: allow udp", client.NS, none, small.IPv4, port, true),
		topo.TCP("to a policy over its budget: isolated", client.NS, none, over.IPv4, port, false),
		topo.TCP("to a policy the node has no room for: isolated", client.NS, none, late.IPv6, port, false),
		topo.TCP("from the node to the isolated: still (--allow-host)", c.tp.Node, none, late.IPv4, port, true),
	)

	// The big policies go: the late one is admitted, the one over budget stays isolated.
	next := specs(portList(port, 36))
	next[0].annotations, next[1].annotations = policy(fmt.Sprintf("allow tcp to ports %d", port)), nil
	c.write(next, "shop")
	c.awaitApplied(opts)
	topo.Expect(t,
		topo.TCP("to the late policy, admitted now", client.NS, none, late.IPv4, port, true),
		topo.TCP("to the late policy, another port: no rule", client.NS, none, late.IPv4, otherPort, false),
		topo.TCP("to a policy over its budget: still isolated", client.NS, none, over.IPv4, port, false),
	)
	a.awaitMetric(t, 0, "podwall_policy_problems", "kind", "no-room")
	a.awaitMetric(t, 0, "podwall_apply_failing")
}
