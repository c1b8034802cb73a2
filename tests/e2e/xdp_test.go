package e2e

import (
	"fmt"
	"net/netip"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/loader/loadertest"
	"github.com/podwall/podwall/tests/topo"
)

// TestXDPGivesTCsVerdicts runs the verdicts that can arrive from outside the node (allowed,
// denied by rule, deny over allow, no rule, isolation, replies to a pod's own connections,
// ICMP errors about them, fragments, both families) with from_world off, then on the node's
// uplink in native mode (veth has it), and requires the same verdicts; with it on, the drops
// are XDP's and never reach tc. Then an established flow is cut by a policy change, and the
// data path restarts under traffic, with XDP attached.
func TestXDPGivesTCsVerdicts(t *testing.T) {
	for _, kind := range []topo.Kind{topo.Routed, topo.Bridged} {
		t.Run(kind.String(), func(t *testing.T) {
			c := newCluster(t, kind, loadertest.Modes(t)[0])
			peerPod := c.addPod(t, "peer", nsProd, labels("role", "backend"), nil)
			ports := c.addPod(t, "ports", nsProd, nil, policyOf(fmt.Sprintf(
				"allow tcp to ports %d; allow udp to ports %d; deny tcp to ports %d; allow tcp to ports %d",
				portWeb, portWeb, portAlt, portAlt)))
			world := c.addPod(t, "world", nsProd, nil, policyOf(fmt.Sprintf(
				"allow from cidr %s; allow from cidr %s", worldIPv4, worldIPv6)))
			plain := c.addPod(t, "plain", nsProd, nil, nil)
			isolated := c.addPod(t, "isolated", nsProd, nil, policyOf(""))
			cl := c.tp.AddClient("client", worldIPv4, worldIPv6)
			cl.Echo(t, portWeb)
			c.apply(t)
			outside, public := clientPeer(cl), extraPeer("public", cl, worldIPv4, worldIPv6)
			checks := []check{
				passes(outside, ports, tcpTo(portWeb), udpTo(portWeb), bigUDPTo(portWeb)),
				drops(outside, ports, tcpTo(portAlt), tcpTo(portHTTPS), ping),
				passes(public, world, everything...),
				drops(outside, world, everything...),
				drops(outside, plain, tcpTo(portWeb), bigUDPTo(portWeb), ping),
				drops(outside, isolated, everything...),
				passes(podPeer(peerPod), plain, tcpTo(portWeb)),
			}
			repliesAndErrors := func(t *testing.T) {
				for _, to := range []netip.Addr{cl.IPv4, cl.IPv6} {
					dst := netip.AddrPortFrom(to, portWeb)
					wait := topo.Timeout(passWait)
					require.NoError(t, topo.TCPEcho(isolated.NS, dst, wait), "tcp to %s", dst)
					require.NoError(t, topo.UDPEcho(isolated.NS, dst, wait, topo.Size(bigSize)), "fragmented udp to %s", dst)
					require.NoError(t, topo.Ping(isolated.NS, to, wait), "ping %s", to)
					// Nothing listens on portAlt: the client's port-unreachable error
					// about the pod's datagram reaches the pod.
					closed := netip.AddrPortFrom(to, portAlt)
					require.ErrorIs(t, topo.UDPEcho(isolated.NS, closed, wait), syscall.ECONNREFUSED, "udp to %s", closed)
				}
			}

			t.Run("tc alone", func(t *testing.T) {
				c.verify(t, checks...)
				t.Run("replies and ICMP errors reach the isolated pod", repliesAndErrors)
			})

			uplink, err := c.tp.Node.Handle().LinkByName(cl.HostIfname)
			require.NoError(t, err)
			require.NoError(t, c.dp.AttachXDP(uplink.Attrs().Index, datapath.XDPNative), "native XDP on the uplink")
			t.Run("XDP on the uplink", func(t *testing.T) {
				before := c.xdpDrops(t)
				// Only the outside's packets to ports' port 9090 meet a deny rule: XDP drops
				// them all, tc sees none. Fragments (bigUDP) go on to tc, as they must.
				c.counted(t, nil, []bpf.Reason{bpf.ReasonDenyRule}, func() { c.verify(t, checks...) })
				after := c.xdpDrops(t)
				for _, r := range []bpf.Reason{bpf.ReasonDenyRule, bpf.ReasonNoRule, bpf.ReasonIsolated} {
					require.Greater(t, after[r], before[r], "packets dropped by XDP as %s", r)
				}
				t.Run("replies and ICMP errors reach the isolated pod", repliesAndErrors)
			})

			t.Run("a policy change cuts an established flow at XDP", func(t *testing.T) {
				var streams []*stream
				for _, a := range []netip.Addr{ports.IPv4, ports.IPv6} {
					s := openStream(t, cl.NS, "tcp", netip.AddrPortFrom(a, portWeb))
					require.NoError(t, s.echo(passWait))
					streams = append(streams, s)
				}
				policy := ports.annotations
				c.setPolicy(t, ports, policyOf(fmt.Sprintf("allow tcp to ports %d", portHTTPS)))
				before := c.xdpDrops(t)
				for _, s := range streams {
					require.ErrorIs(t, s.echo(dropWait), topo.ErrNoAnswer, "%s must be cut", s.name)
				}
				require.Greater(t, c.xdpDrops(t)[bpf.ReasonNoRule], before[bpf.ReasonNoRule])
				c.setPolicy(t, ports, policy)
			})

			t.Run("a restart under traffic keeps XDP", func(t *testing.T) {
				s := openStream(t, cl.NS, "tcp", netip.AddrPortFrom(ports.IPv4, portWeb))
				require.NoError(t, s.echo(passWait))
				c.restart(t)
				require.Equal(t, []int{uplink.Attrs().Index}, c.dp.XDPAttached(), "the restarted data path took the XDP link over")
				require.NoError(t, s.echo(passWait), "the allowed flow goes on")
				before := c.xdpDrops(t)
				c.verify(t, checks...)
				require.Greater(t, c.xdpDrops(t)[bpf.ReasonNoRule], before[bpf.ReasonNoRule], "XDP still drops")
			})
		})
	}
}

// xdpDrops reads from_world's drop counters.
func (c *cluster) xdpDrops(t *testing.T) [bpf.NumReasons]uint64 {
	t.Helper()
	n, err := c.dp.XDPDrops()
	require.NoError(t, err)
	return n
}
