package k8se2e

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/tests/proc"
	"github.com/podwall/podwall/tests/topo"
)

// TestAgentRestart stops the podwall binary and starts it again while traffic flows: no
// allowed packet may be lost, no denied one may pass, an established connection lives on,
// and what changed in the API while no agent ran applies once the next one is up.
func TestAgentRestart(t *testing.T) {
	bin := proc.BuildPodwall(t)
	e := newEnv(t)
	api, web, worker := e.addPod("api"), e.addPod("web"), e.addPod("worker")
	e.api.CreateNamespace(t, "shop", nil)
	for _, p := range []podSpec{
		{ns: "shop", name: "api", tp: api, labels: map[string]string{"role": "backend"},
			annotations: policyOf("allow udp from label role=frontend to ports 8080; allow tcp from label role=frontend")},
		{ns: "shop", name: "web", tp: web, labels: map[string]string{"role": "frontend"}},
		{ns: "shop", name: "worker", tp: worker, labels: map[string]string{"role": "worker"}},
	} {
		e.create(p)
	}
	first := e.startAgent(bin)
	e.awaitApplied(defaults)
	topo.Expect(t, topo.TCP("worker to web: default, same namespace", worker.NS, none, web.IPv4, port, true))

	conn, err := topo.DialTCP(t, web.NS, netip.AddrPortFrom(api.IPv4, otherPort))
	require.NoError(t, err)
	flows := startFlows(t,
		flow{name: "frontend to api over UDP", udp: true, from: web.NS, to: netip.AddrPortFrom(api.IPv4, port), pass: true},
		flow{name: "frontend to api over TCP", from: web.NS, to: netip.AddrPortFrom(api.IPv6, otherPort), pass: true},
		flow{name: "worker to api over UDP", udp: true, from: worker.NS, to: netip.AddrPortFrom(api.IPv6, port)},
		flow{name: "worker to api over TCP", from: worker.NS, to: netip.AddrPortFrom(api.IPv4, otherPort)},
	)
	time.Sleep(200 * time.Millisecond)
	first.terminate(t)
	require.Contains(t, first.out.String(), "enforcement stays pinned")
	// No agent: the pinned programs and maps keep enforcing, and the API moves on.
	e.awaitApplied(defaults)
	e.update(podKey{"shop", "web"}, func(p *podSpec) { p.annotations = policyOf("allow tcp from cidr 10.99.0.0/16") })
	time.Sleep(300 * time.Millisecond)
	second := e.startAgent(bin)
	time.Sleep(200 * time.Millisecond)
	flows.stop(t)
	require.NoError(t, conn.Echo(), "the established connection survived the restart")
	require.True(t, strings.Contains(second.out.String(), "took over attachment"),
		"the second agent took the pinned links over")

	e.awaitApplied(defaults)
	topo.Expect(t,
		topo.TCP("worker to web: the change made while no agent ran applies", worker.NS, none, web.IPv4, port, false),
		topo.UDP("frontend to api: still allowed", web.NS, none, api.IPv6, port, true),
	)
}
