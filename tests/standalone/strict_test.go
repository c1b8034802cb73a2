package standalone

import (
	"testing"

	"github.com/podwall/podwall/agent"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/tests/topo"
)

// TestStrictModeHoldsNewInterfaces: with --strict-interfaces, the interface of a pod that the
// source does not list yet passes nothing, in either direction and from the node too, until
// the pod is listed; then its policy applies. Interfaces the patterns do not match are not
// touched before their pod is listed.
func TestStrictModeHoldsNewInterfaces(t *testing.T) {
	c := newCluster(t, topo.Routed)
	client := c.addPod("client")
	c.write([]podSpec{{ns: "shop", name: "client", tp: client, labels: map[string]string{"role": "client"}}}, "shop")
	a := c.startAgentUnready(defaults, func(_ *loader.Config, ac *agent.Config) {
		ac.Strict = []string{"pw*"} // the topology's pod interfaces
	})
	a.awaitReady()
	c.awaitApplied(defaults)

	pod := c.addPod("new")
	a.awaitMetric(t, 1, "podwall_interfaces_held")
	topo.Expect(t,
		topo.TCP("to the new pod, not listed yet", client.NS, none, pod.IPv4, port, false),
		topo.UDP("to the new pod over UDP", client.NS, none, pod.IPv6, port, false),
		topo.TCP("from the node to the new pod", c.tp.Node, none, pod.IPv4, port, false),
		topo.TCP("from the new pod", pod.NS, none, client.IPv4, port, false),
	)

	c.write([]podSpec{
		{ns: "shop", name: "client", tp: client, labels: map[string]string{"role": "client"}},
		{ns: "shop", name: "new", tp: pod, annotations: policyOf("allow tcp from label role=client")},
	}, "shop")
	c.awaitApplied(defaults)
	a.awaitMetric(t, 0, "podwall_interfaces_held")
	topo.Expect(t,
		topo.TCP("to the new pod, listed: its policy allows", client.NS, none, pod.IPv4, port, true),
		topo.UDP("to the new pod over UDP: its policy does not", client.NS, none, pod.IPv6, port, false),
		topo.TCP("from the node (--allow-host)", c.tp.Node, none, pod.IPv4, port, true),
		topo.TCP("from the new pod", pod.NS, none, client.IPv4, port, true),
	)
}
