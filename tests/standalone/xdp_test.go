package standalone

import (
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/podwall/podwall/agent"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/tests/topo"
)

// TestXDPOnTheUplinks: with --xdp-devices auto the agent leaves a veth uplink (the default
// route's) to tc, and says so; an uplink named in --xdp-devices gets from_world in native
// mode, where the outside's packets that policy refuses are dropped and counted as XDP's.
func TestXDPOnTheUplinks(t *testing.T) {
	c := newCluster(t, topo.Routed)
	web := c.addPod("web")
	one, two := c.tp.AddClient("one"), c.tp.AddClient("two")
	l, err := c.tp.Node.Handle().LinkByName(one.HostIfname)
	require.NoError(t, err)
	require.NoError(t, c.tp.Node.Handle().RouteReplace(&netlink.Route{
		LinkIndex: l.Attrs().Index, Gw: one.IPv4.AsSlice(), Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
	}))
	attached := func(cl *topo.Client) bool {
		l, err := c.tp.Node.Handle().LinkByName(cl.HostIfname)
		require.NoError(t, err)
		return l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
	}
	c.write([]podSpec{{ns: "shop", name: "web", tp: web, annotations: policyOf("allow tcp to ports 8080")}}, "shop")

	t.Run("auto leaves a veth uplink to tc", func(t *testing.T) {
		a := c.startAgentUnready(defaults, func(_ *loader.Config, ac *agent.Config) { ac.XDP = []string{agent.XDPAuto} })
		a.awaitReady()
		c.awaitApplied(defaults)
		requireEventually(t, func() bool { return strings.Contains(a.logText(), "uplink skipped: XDP on veth") }, "the skip is logged")
		require.False(t, attached(one))
		a.stop()
	})

	t.Run("a named uplink", func(t *testing.T) {
		a := c.startAgentUnready(defaults, func(_ *loader.Config, ac *agent.Config) { ac.XDP = []string{two.HostIfname} })
		a.awaitReady()
		c.awaitApplied(defaults)
		requireEventually(t, func() bool { return attached(two) && !attached(one) }, "XDP on the named uplink only")
		topo.Expect(t,
			topo.TCP("the outside to an allowed port", two.NS, none, web.IPv4, port, true),
			topo.TCP("the outside to a port no rule allows", two.NS, none, web.IPv4, otherPort, false),
		)
		require.Positive(t, a.metric("podwall_xdp_drops_total", "reason", "no-rule"), "dropped by XDP")
	})
}
