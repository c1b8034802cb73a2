package standalone

import (
	"net"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/podwall/podwall/agent"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/tests/topo"
)

// TestXDPFollowsTheDefaultRoute: with --xdp-devices auto the agent attaches from_world in
// native mode to the interface of the node's default route, where the outside's packets that
// policy refuses are then dropped (and counted as XDP's), and moves it when the route moves.
func TestXDPFollowsTheDefaultRoute(t *testing.T) {
	c := newCluster(t, topo.Routed)
	web := c.addPod("web")
	one, two := c.tp.AddClient("one"), c.tp.AddClient("two")
	via := func(cl *topo.Client) {
		l, err := c.tp.Node.Handle().LinkByName(cl.HostIfname)
		require.NoError(t, err)
		require.NoError(t, c.tp.Node.Handle().RouteReplace(&netlink.Route{
			LinkIndex: l.Attrs().Index, Gw: cl.IPv4.AsSlice(), Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
		}))
	}
	attached := func(cl *topo.Client) bool {
		l, err := c.tp.Node.Handle().LinkByName(cl.HostIfname)
		require.NoError(t, err)
		return l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
	}
	via(one)
	c.write([]podSpec{{ns: "shop", name: "web", tp: web, annotations: policyOf("allow tcp to ports 8080")}}, "shop")
	a := c.startAgentUnready(defaults, func(_ *loader.Config, ac *agent.Config) { ac.XDP = []string{agent.XDPAuto} })
	a.awaitReady()
	c.awaitApplied(defaults)

	requireEventually(t, func() bool { return attached(one) && !attached(two) }, "XDP on the default route's interface only")
	topo.Expect(t,
		topo.TCP("the outside to an allowed port", one.NS, none, web.IPv4, port, true),
		topo.TCP("the outside to a port no rule allows", one.NS, none, web.IPv4, otherPort, false),
	)
	require.Positive(t, a.metric("podwall_xdp_drops_total", "reason", "no-rule"), "dropped by XDP")

	via(two)
	requireEventually(t, func() bool { return !attached(one) && attached(two) }, "XDP moved with the default route")
	topo.Expect(t, topo.TCP("through the new uplink, dropped", two.NS, none, web.IPv4, otherPort, false))
}
