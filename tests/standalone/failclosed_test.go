package standalone

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

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
			{ns: "shop", name: "big1", tp: big1, annotations: policyOf(portList(port, 30))},
			{ns: "shop", name: "big2", tp: big2, annotations: policyOf(strings.Replace(portList(port, 30), "20003", "20000", 1))},
			{ns: "shop", name: "small", tp: small, annotations: policyOf("deny tcp; allow udp")},
			{ns: "shop", name: "over", tp: over, annotations: policyOf(portList(port, budget+1))},
			{ns: "shop", name: "late", tp: late, annotations: policyOf(bigs)},
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
	next[0].annotations, next[1].annotations = policyOf(fmt.Sprintf("allow tcp to ports %d", port)), nil
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

// startSized starts the agent with maps of the given sizes, waits for its first apply, and
// returns the options that compile what it applies.
func startSized(c *cluster, opts compiler.Options, sizes map[string]uint32) (*runningAgent, compiler.Options) {
	c.t.Helper()
	a := c.startAgentUnready(opts, func(lc *loader.Config, _ *agent.Config) { lc.MapSizes = sizes })
	a.awaitReady()
	opts.Capacity = a.dp.Capacity()
	c.awaitApplied(opts)
	return a, opts
}

// requireProblems checks the problems of the file as last written, by pod name.
func requireProblems(t *testing.T, c *cluster, opts compiler.Options, want map[string]compiler.ProblemKind) {
	t.Helper()
	kinds := map[string]compiler.ProblemKind{}
	for _, p := range c.expected(opts).Problems {
		kinds[p.Name] = p.Kind
	}
	require.Equal(t, want, kinds)
}

// rules joins one rule for each of n clauses that format makes of 0..n-1.
func rules(n int, format func(i int) string) string {
	var rs []string
	for i := range n {
		rs = append(rs, format(i))
	}
	return strings.Join(rs, "; ")
}

// lateChecks are the checks of a pod added once the maps are full, annotated "deny tcp;
// allow udp": no classifier entries, so it is admitted and enforced, never passed untouched.
func lateChecks(client, late *topo.Pod, admitted bool) []topo.Check {
	return []topo.Check{
		topo.TCP("to the pod added late: deny tcp", client.NS, none, late.IPv4, port, false),
		topo.UDP("to the pod added late: allow udp", client.NS, none, late.IPv4, port, admitted),
	}
}

// TestFullPolCIDRIsolatesTheLast fills pol_cidr with three policies: the two smallest are
// admitted, the third isolates its pod until it shrinks.
func TestFullPolCIDRIsolatesTheLast(t *testing.T) {
	c := newCluster(t, topo.Routed)
	a, b, big, late, client := c.addPod("a"), c.addPod("b"), c.addPod("big"), c.addPod("late"), c.addPod("client")
	cidrs := func(n int, net int) map[string]string {
		return policyOf(rules(n, func(i int) string {
			if i == 0 {
				return "allow tcp from cidr " + client.IPv4.String()
			}
			return fmt.Sprintf("allow tcp from cidr 10.%d.%d.0/24", net, i)
		}))
	}
	specs := func(bigN int, withLate bool) []podSpec {
		s := []podSpec{
			{ns: "shop", name: "a", tp: a, annotations: cidrs(6, 97)},
			{ns: "shop", name: "b", tp: b, annotations: cidrs(6, 98)},
			{ns: "shop", name: "big", tp: big, annotations: cidrs(bigN, 99)},
			{ns: "shop", name: "client", tp: client},
		}
		if withLate {
			s = append(s, podSpec{ns: "shop", name: "late", tp: late, annotations: policyOf("deny tcp; allow udp")})
		}
		return s
	}
	c.write(specs(10, false), "shop")
	ag, opts := startSized(c, defaults, map[string]uint32{bpf.PodwallMapPolCidr: 16})
	c.write(specs(10, true), "shop")
	c.awaitApplied(opts)
	requireProblems(t, c, opts, map[string]compiler.ProblemKind{"big": compiler.ProblemNoRoom})
	ag.awaitMetric(t, 1, "podwall_policy_problems", "kind", "no-room")
	topo.Expect(t, append(lateChecks(client, late, true),
		topo.TCP("to a: its cidr rule", client.NS, none, a.IPv4, port, true),
		topo.TCP("to b: its cidr rule", client.NS, none, b.IPv4, port, true),
		topo.TCP("to big: no room, isolated", client.NS, none, big.IPv4, port, false),
	)...)

	c.write(specs(3, true), "shop")
	c.awaitApplied(opts)
	requireProblems(t, c, opts, map[string]compiler.ProblemKind{})
	topo.Expect(t, append(lateChecks(client, late, true),
		topo.TCP("to big, admitted once it shrank", client.NS, none, big.IPv4, port, true),
		topo.TCP("to a, still", client.NS, none, a.IPv4, port, true),
	)...)
	ag.awaitMetric(t, 0, "podwall_policy_problems", "kind", "no-room")
}

// peers are pods of another node, each an identity of its own with label role=peer.
func peers(n int) []podSpec {
	var s []podSpec
	for i := range n {
		s = append(s, podSpec{ns: "shop", name: fmt.Sprintf("peer-%d", i),
			labels: map[string]string{"role": "peer", "idx": fmt.Sprint(i)},
			ips:    []netip.Addr{netip.AddrFrom4([4]byte{10, 250, byte(i / 200), byte(1 + i%200)})}})
	}
	return s
}

// TestFullPolIdentIsolatesOnePolicy: one policy selects more identities than pol_ident holds;
// it isolates its pod, the small one and a new pod are enforced, and the big one is admitted
// once the identities it selects go.
func TestFullPolIdentIsolatesOnePolicy(t *testing.T) {
	c := newCluster(t, topo.Routed)
	c.confirm = 500 * time.Millisecond // the peers leave at once: a file that lost most pods
	small, big, late, client := c.addPod("small"), c.addPod("big"), c.addPod("late"), c.addPod("client")
	specs := func(nPeers int, withLate bool) []podSpec {
		s := append(peers(nPeers),
			podSpec{ns: "shop", name: "small", tp: small, annotations: policyOf("allow tcp from label role=client")},
			podSpec{ns: "shop", name: "big", tp: big, annotations: policyOf("allow tcp from label role=peer; allow tcp from label role=client")},
			podSpec{ns: "shop", name: "client", tp: client, labels: map[string]string{"role": "client"}, annotations: policyOf("allow")},
		)
		if withLate {
			s = append(s, podSpec{ns: "shop", name: "late", tp: late, annotations: policyOf("deny tcp; allow udp")})
		}
		return s
	}
	c.write(specs(10, false), "shop")
	ag, opts := startSized(c, defaults, map[string]uint32{bpf.PodwallMapPolIdent: 8})
	c.write(specs(10, true), "shop")
	c.awaitApplied(opts)
	requireProblems(t, c, opts, map[string]compiler.ProblemKind{"big": compiler.ProblemNoRoom})
	ag.awaitMetric(t, 1, "podwall_policy_problems", "kind", "no-room")
	topo.Expect(t, append(lateChecks(client, late, true),
		topo.TCP("to small: label role=client", client.NS, none, small.IPv4, port, true),
		topo.TCP("to big: no room, isolated", client.NS, none, big.IPv6, port, false),
	)...)

	c.write(specs(2, true), "shop")
	c.awaitApplied(opts)
	requireProblems(t, c, opts, map[string]compiler.ProblemKind{})
	topo.Expect(t, append(lateChecks(client, late, true),
		topo.TCP("to big, admitted once its peers went", client.NS, none, big.IPv6, port, true),
	)...)
	ag.awaitMetric(t, 0, "podwall_policy_problems", "kind", "no-room")
}

// TestFullIPCacheIsolatesEnforcedPods: more addresses than ipcache holds leave some pods'
// identities unknown, so every enforced pod is isolated (a label rule could not tell those
// pods from the world) until the addresses fit again; an open pod stays open.
func TestFullIPCacheIsolatesEnforcedPods(t *testing.T) {
	c := newCluster(t, topo.Routed)
	c.confirm = 500 * time.Millisecond // the peers leave at once: a file that lost most pods
	guarded, late, client := c.addPod("guarded"), c.addPod("late"), c.addPod("client")
	specs := func(nPeers int, withLate bool) []podSpec {
		s := append(peers(nPeers),
			podSpec{ns: "shop", name: "guarded", tp: guarded, annotations: policyOf("allow tcp from cidr " + client.IPv4.String())},
			podSpec{ns: "kube-system", name: "client", tp: client},
		)
		if withLate {
			s = append(s, podSpec{ns: "shop", name: "late", tp: late, annotations: policyOf("deny tcp; allow udp")})
		}
		return s
	}
	c.write(specs(0, false), "shop", "kube-system")
	ag, opts := startSized(c, defaults, map[string]uint32{bpf.PodwallMapIpcache: 32})
	topo.Expect(t, topo.TCP("to guarded: its cidr rule", client.NS, none, guarded.IPv4, port, true))

	c.write(specs(40, true), "shop", "kube-system")
	c.awaitApplied(opts)
	requireProblems(t, c, opts, map[string]compiler.ProblemKind{"guarded": compiler.ProblemNoRoom, "late": compiler.ProblemNoRoom})
	ag.awaitMetric(t, 2, "podwall_policy_problems", "kind", "no-room")
	topo.Expect(t, append(lateChecks(client, late, false),
		topo.TCP("to guarded: isolated", client.NS, none, guarded.IPv4, port, false),
		topo.TCP("from the node to guarded: still (--allow-host)", c.tp.Node, none, guarded.IPv4, port, true),
		topo.TCP("to the client: open, no policy to misjudge", guarded.NS, none, client.IPv4, port, true),
	)...)

	c.write(specs(0, true), "shop", "kube-system")
	c.awaitApplied(opts)
	requireProblems(t, c, opts, map[string]compiler.ProblemKind{})
	topo.Expect(t, append(lateChecks(client, late, true),
		topo.TCP("to guarded, enforced again", client.NS, none, guarded.IPv4, port, true),
	)...)
	ag.awaitMetric(t, 0, "podwall_policy_problems", "kind", "no-room")
}

// TestFullEndpointsDropForTheOneLeftOut: a node with more pods than the endpoints map holds
// leaves the last without an entry; its interface carries the programs all the same, so it
// gets and sends nothing, until another pod goes.
func TestFullEndpointsDropForTheOneLeftOut(t *testing.T) {
	c := newCluster(t, topo.Routed)
	a, b, client, late := c.addPod("a"), c.addPod("b"), c.addPod("client"), c.addPod("late")
	base := []podSpec{
		{ns: "shop", name: "a", tp: a, annotations: policyOf("allow tcp from label role=client")},
		{ns: "shop", name: "b", tp: b},
		{ns: "shop", name: "client", tp: client, labels: map[string]string{"role": "client"}},
	}
	lateSpec := podSpec{ns: "shop", name: "late", tp: late, annotations: policyOf("deny tcp; allow udp")}
	c.write(base, "shop")
	ag, opts := startSized(c, defaults, map[string]uint32{bpf.PodwallMapEndpoints: 3})

	c.write(append(base, lateSpec), "shop")
	c.awaitApplied(opts)
	requireProblems(t, c, opts, map[string]compiler.ProblemKind{"late": compiler.ProblemNoRoom})
	ag.awaitMetric(t, 1, "podwall_policy_problems", "kind", "no-room")
	topo.Expect(t, append(lateChecks(client, late, false),
		topo.TCP("from the node to the pod without an entry: nothing", c.tp.Node, none, late.IPv4, port, false),
		topo.TCP("from the pod without an entry: nothing", late.NS, none, b.IPv4, port, false),
		topo.TCP("to a: label role=client", client.NS, none, a.IPv4, port, true),
	)...)

	// b's pod goes: its interface and its place in the file.
	link, err := c.tp.Node.Handle().LinkByIndex(b.HostIfindex)
	require.NoError(t, err)
	require.NoError(t, c.tp.Node.Handle().LinkDel(link))
	c.write([]podSpec{base[0], base[2], lateSpec}, "shop")
	c.awaitApplied(opts)
	requireProblems(t, c, opts, map[string]compiler.ProblemKind{})
	topo.Expect(t, append(lateChecks(client, late, true),
		topo.TCP("to a, still", client.NS, none, a.IPv4, port, true),
	)...)
	ag.awaitMetric(t, 0, "podwall_policy_problems", "kind", "no-room")
}
