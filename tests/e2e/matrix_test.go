package e2e

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/loader/loadertest"
	"github.com/podwall/podwall/tests/topo"
)

// TestCoreOnEveryTopologyAndHook runs the core of the other tests on each way pods can be
// joined to the node (routed, bridged) and each way podwall can attach (tcx, clsact): a
// label rule, the namespace default, isolation, replies to the pod's own connections,
// fragments, traffic from the node, and a policy change cutting an established connection.
func TestCoreOnEveryTopologyAndHook(t *testing.T) {
	for _, kind := range []topo.Kind{topo.Routed, topo.Bridged} {
		for _, mode := range loadertest.Modes(t) {
			t.Run(kind.String()+"-"+string(mode), func(t *testing.T) {
				c := newCluster(t, kind, mode)
				backendPod := c.addPod(t, "backend", nsProd, labels("role", "backend"), nil)
				strangerPod := c.addPod(t, "stranger", nsDev, labels("role", "backend"), nil)
				seed := c.addPod(t, "seed", nsProd, nil, policyOf("allow tcp from label role=backend"))
				plain := c.addPod(t, "plain", nsProd, nil, nil)
				isolated := c.addPod(t, "isolated", nsProd, nil, policyOf(""))
				cl := c.tp.AddClient("client")
				cl.Echo(t, portWeb)
				c.apply(t)
				backend, stranger, outside := podPeer(backendPod), podPeer(strangerPod), clientPeer(cl)

				c.verify(t,
					passes(backend, seed, tcpTo(portWeb)),
					drops(backend, seed, udpTo(portWeb), ping),
					drops(stranger, seed, tcpTo(portWeb)),
					passes(backend, plain, tcpTo(portWeb), udpTo(portWeb), ping, bigUDPTo(portWeb)),
					drops(stranger, plain, everything...),
					drops(outside, plain, tcpTo(portWeb), bigUDPTo(portWeb)),
					drops(backend, isolated, everything...),
					passes(c.node(), isolated, everything...),
				)

				t.Run("replies reach the isolated pod", func(t *testing.T) {
					for _, to := range []netip.Addr{cl.IPv4, cl.IPv6} {
						dst := netip.AddrPortFrom(to, portWeb)
						wait := topo.Timeout(passWait)
						require.NoError(t, topo.TCPEcho(isolated.NS, dst, wait), "tcp to %s", dst)
						require.NoError(t, topo.UDPEcho(isolated.NS, dst, wait, topo.Size(bigSize)), "fragmented udp to %s", dst)
						require.NoError(t, topo.Ping(isolated.NS, to, wait), "ping %s", to)
					}
				})

				t.Run("a policy change cuts an established connection", func(t *testing.T) {
					var streams []*stream
					for _, a := range []netip.Addr{seed.IPv4, seed.IPv6} {
						streams = append(streams, openStream(t, backendPod.NS, "tcp", netip.AddrPortFrom(a, portWeb)))
					}
					c.setPolicy(t, seed, policyOf("allow udp from label role=backend"))
					for _, s := range streams {
						require.ErrorIs(t, s.echo(dropWait), topo.ErrNoAnswer, "%s must be cut", s.name)
					}
				})
			})
		}
	}
}
