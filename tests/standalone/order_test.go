package standalone

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/agent"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/tests/topo"
)

// TestProgramAheadIsPushedBack: another tool attaches, ahead of podwall's on a guarded pod's
// interface, a program that passes everything; the agent finds it at its next check, runs
// first again (the other program stays), and reports it.
func TestProgramAheadIsPushedBack(t *testing.T) {
	c, guarded, client := guardedCluster(t)
	a := c.startAgentUnready(defaults, func(_ *loader.Config, ac *agent.Config) { ac.ChainCheck = 100 * time.Millisecond })
	a.awaitReady()
	c.awaitApplied(defaults)
	topo.Expect(t, topo.TCP("to the guarded pod: deny tcp", client.NS, none, guarded.IPv4, port, false))

	c.tp.Node.Intrude(t, guarded.HostIfindex, a.dp.Mode() == loader.ModeTCX)
	a.awaitMetric(t, 1, "podwall_programs_displaced_total", "outcome", "restored")
	require.Contains(t, a.logText(), "another program was attached before podwall's")
	topo.Expect(t,
		topo.TCP("to the guarded pod: podwall judges first again", client.NS, none, guarded.IPv4, port, false),
		topo.UDP("to the guarded pod over UDP", client.NS, none, guarded.IPv4, port, true),
	)
	require.Equal(t, 1.0, a.metric("podwall_programs_displaced_total", "outcome", "restored"), "once")
	require.Equal(t, 0.0, a.metric("podwall_programs_displaced_total", "outcome", "failed"))
}

// guardedCluster is a cluster in its pods file: a pod whose policy denies TCP and allows UDP,
// and a client, in namespace shop.
func guardedCluster(t *testing.T) (c *cluster, guarded, client *topo.Pod) {
	c = newCluster(t, topo.Routed)
	guarded, client = c.addPod("guarded"), c.addPod("client")
	c.write([]podSpec{
		{ns: "shop", name: "guarded", tp: guarded, annotations: policyOf("deny tcp; allow udp")},
		{ns: "shop", name: "client", tp: client},
	}, "shop")
	return c, guarded, client
}
