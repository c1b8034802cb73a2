package e2e

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/loader/loadertest"
	"github.com/podwall/podwall/tests/topo"
)

// TestIsolatedPodGetsRepliesAndNeighbourDiscovery checks SPEC 3.1 and 3.3 on a pod that
// accepts nothing: replies to the connections it opens (TCP, UDP, fragmented UDP, ping, to
// another node and to a pod of its own node) and ICMP errors about them reach it, and IPv6
// neighbour discovery keeps working, so that it can still talk over IPv6 once its neighbour
// entries are gone.
func TestIsolatedPodGetsRepliesAndNeighbourDiscovery(t *testing.T) {
	c := newCluster(t, topo.Routed, loadertest.Best(t))
	isolated := c.addPod(t, "isolated", nsProd, nil, policyOf(""))
	backendPod := c.addPod(t, "backend", nsProd, labels("role", "backend"), nil)
	guarded := c.addPod(t, "guarded", nsProd, nil, policyOf("allow from label role=backend"))
	cl := c.tp.AddClient("client")
	cl.Echo(t, portWeb)
	c.apply(t)

	t.Run("replies to connections the pod opened", func(t *testing.T) {
		for _, to := range []netip.Addr{cl.IPv4, cl.IPv6, backendPod.IPv4, backendPod.IPv6} {
			dst := netip.AddrPortFrom(to, portWeb)
			wait := topo.Timeout(passWait)
			require.NoError(t, topo.TCPEcho(isolated.NS, dst, wait), "tcp to %s", dst)
			require.NoError(t, topo.UDPEcho(isolated.NS, dst, wait), "udp to %s", dst)
			require.NoError(t, topo.UDPEcho(isolated.NS, dst, wait, topo.Size(4000)), "fragmented udp to %s", dst)
			require.NoError(t, topo.Ping(isolated.NS, to, wait), "ping %s", to)
		}
		// And the same flows, opened the other way, are not let in.
		c.verify(t, drops(clientPeer(cl), isolated, everything...), drops(podPeer(backendPod), isolated, everything...))
	})

	t.Run("replies are counted", func(t *testing.T) {
		c.counted(t, []bpf.Reason{bpf.ReasonReply}, []bpf.Reason{bpf.ReasonAllowRule}, func() {
			require.NoError(t, topo.TCPEcho(isolated.NS, netip.AddrPortFrom(cl.IPv6, portWeb), topo.Timeout(passWait)))
		})
	})

	t.Run("ICMP errors about the pod's flows", func(t *testing.T) {
		// Nothing listens on the client's portAlt: a UDP datagram gets an ICMP port
		// unreachable back, a TCP SYN a reset.
		for _, to := range []netip.Addr{cl.IPv4, cl.IPv6} {
			dst := netip.AddrPortFrom(to, portAlt)
			c.counted(t, []bpf.Reason{bpf.ReasonICMPError}, nil, func() {
				require.ErrorIs(t, topo.UDPEcho(isolated.NS, dst, topo.Timeout(passWait)), unix.ECONNREFUSED, "udp to %s", dst)
			})
			require.ErrorIs(t, topo.TCPEcho(isolated.NS, dst, topo.Timeout(passWait)), unix.ECONNREFUSED, "tcp to %s", dst)
		}
	})

	t.Run("neighbour discovery after the neighbour entries are gone", func(t *testing.T) {
		for _, p := range []*pod{isolated, guarded} {
			flushNeighbours(t, p.NS)
		}
		flushNeighbours(t, c.tp.Node)
		c.counted(t, []bpf.Reason{bpf.ReasonND, bpf.ReasonReply}, nil, func() {
			require.NoError(t, topo.Ping(isolated.NS, cl.IPv6, topo.Timeout(passWait)), "ping6 from the isolated pod")
		})
		c.counted(t, []bpf.Reason{bpf.ReasonND, bpf.ReasonAllowRule}, nil, func() {
			c.verify(t, passes(podPeer(backendPod), guarded, tcpTo(portWeb).v6()))
		})
	})
}

// flushNeighbours deletes the neighbour entries the kernel learnt in a namespace, so that the
// next packet needs neighbour discovery (or ARP) again.
func flushNeighbours(t *testing.T, ns *topo.Netns) {
	t.Helper()
	nl := ns.Handle()
	neighs, err := nl.NeighList(0, netlink.FAMILY_ALL)
	require.NoError(t, err, "list neighbours in %s", ns.Name)
	for _, n := range neighs {
		if n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0 {
			continue
		}
		require.NoError(t, nl.NeighDel(&n), "delete neighbour %s in %s", n.IP, ns.Name)
	}
}

// TestPolicyChangeCutsEstablishedConnections checks SPEC 4: when a policy stops allowing an
// established inbound connection, its next packet is dropped, whether the pod's own policy
// changed or the source pod was relabelled; a change that still allows it leaves it alone.
func TestPolicyChangeCutsEstablishedConnections(t *testing.T) {
	c := newCluster(t, topo.Routed, loadertest.Best(t))
	target := c.addPod(t, "target", nsProd, nil, policyOf("allow tcp to ports 8080; allow udp to ports 8080"))
	guarded := c.addPod(t, "guarded", nsProd, nil, policyOf("allow from label role=backend"))
	backend := c.addPod(t, "backend", nsProd, labels("role", "backend"), nil)
	cl := c.tp.AddClient("client")
	c.apply(t)

	// Streams of both protocols and families from ns to a pod's portWeb.
	open := func(ns *topo.Netns, to *pod) []*stream {
		var out []*stream
		for _, a := range []netip.Addr{to.IPv4, to.IPv6} {
			for _, network := range []string{"tcp", "udp"} {
				out = append(out, openStream(t, ns, network, netip.AddrPortFrom(a, portWeb)))
			}
		}
		return out
	}
	alive := func(t *testing.T, streams []*stream) {
		t.Helper()
		for _, s := range streams {
			require.NoError(t, s.echo(passWait))
		}
	}
	cut := func(t *testing.T, streams []*stream) {
		t.Helper()
		for _, s := range streams {
			require.ErrorIs(t, s.echo(dropWait), topo.ErrNoAnswer, "%s must be cut", s.name)
		}
	}

	t.Run("the pod's policy", func(t *testing.T) {
		streams := open(cl.NS, target)
		c.counted(t, []bpf.Reason{bpf.ReasonAllowRule}, nil, func() {
			c.setPolicy(t, target, policyOf("allow tcp to ports 8080,9090; allow udp to ports 8000:8100"))
			alive(t, streams) // judged again under the new policy, and still allowed
		})
		c.counted(t, []bpf.Reason{bpf.ReasonEstablished}, []bpf.Reason{bpf.ReasonAllowRule}, func() {
			alive(t, streams) // and then established again
		})
		c.counted(t, []bpf.Reason{bpf.ReasonNoRule}, nil, func() {
			c.setPolicy(t, target, policyOf("allow tcp to ports 9090; allow udp to ports 9090"))
			cut(t, streams)
		})
		c.verify(t,
			drops(clientPeer(cl), target, tcpTo(portWeb), udpTo(portWeb)),
			passes(clientPeer(cl), target, tcpTo(portAlt), udpTo(portAlt)),
		)
	})

	t.Run("isolating the pod", func(t *testing.T) {
		c.setPolicy(t, target, policyOf("allow"))
		streams := open(cl.NS, target)
		c.setPolicy(t, target, policyOf("allow tcp form label role=backend"))
		cut(t, streams)
	})

	t.Run("the source pod's labels", func(t *testing.T) {
		streams := open(backend.NS, guarded)
		c.setLabels(t, backend, labels("role", "backend", "tier", "2"))
		alive(t, streams)
		c.setLabels(t, backend, labels("role", "frontend"))
		cut(t, streams)
		c.verify(t, drops(podPeer(backend), guarded, everything...))
	})
}
