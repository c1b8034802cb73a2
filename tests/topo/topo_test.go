package topo

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestMain(m *testing.M) { Main(m) }

var (
	worldIPv4 = netip.MustParseAddr("203.0.113.7")
	worldIPv6 = netip.MustParseAddr("2001:db8::7")
)

const port = 8080

// TestReachability proves every path the end-to-end tests rely on, in both topologies and both
// families, with each kind of traffic.
func TestReachability(t *testing.T) {
	for _, kind := range []Kind{Routed, Bridged} {
		t.Run(kind.String(), func(t *testing.T) {
			tp := New(t, kind)
			a, b := tp.AddPod("a"), tp.AddPod("b")
			c := tp.AddClient("client", worldIPv4, worldIPv6)
			a.Echo(t, port)
			b.Echo(t, port)
			c.Echo(t, port)

			paths := []struct {
				name string
				from *Netns
				src  netip.Addr
				to   netip.Addr
			}{
				{"pod to pod v4", a.NS, netip.Addr{}, b.IPv4},
				{"pod to pod v6", a.NS, netip.Addr{}, b.IPv6},
				{"client to pod v4", c.NS, netip.Addr{}, a.IPv4},
				{"client to pod v6", c.NS, netip.Addr{}, a.IPv6},
				{"world to pod v4", c.NS, worldIPv4, b.IPv4},
				{"world to pod v6", c.NS, worldIPv6, b.IPv6},
				{"pod to client v4", a.NS, netip.Addr{}, c.IPv4},
				{"pod to client v6", a.NS, netip.Addr{}, c.IPv6},
				{"pod to world v4", b.NS, netip.Addr{}, worldIPv4},
				{"pod to world v6", b.NS, netip.Addr{}, worldIPv6},
				{"node to pod v4", tp.Node, netip.Addr{}, a.IPv4},
				{"node to pod v6", tp.Node, netip.Addr{}, a.IPv6},
			}
			for _, p := range paths {
				t.Run(p.name, func(t *testing.T) {
					var opts []Option
					if p.src.IsValid() {
						opts = append(opts, From(p.src))
					}
					to := netip.AddrPortFrom(p.to, port)
					require.NoError(t, TCPEcho(p.from, to, opts...), "tcp")
					require.NoError(t, UDPEcho(p.from, to, opts...), "udp")
					require.NoError(t, UDPEcho(p.from, to, append(opts, Size(4000))...), "fragmented udp")
					require.NoError(t, Ping(p.from, p.to, opts...), "ping")
					conn, err := DialTCP(t, p.from, to, opts...)
					require.NoError(t, err, "long-lived tcp")
					require.NoError(t, conn.Echo(), "long-lived tcp, second message")
				})
			}
		})
	}
}

// TestSources checks that the source address a pod sees is the one a policy will judge: the
// node's own address for the node, and the extra address a client sends from.
func TestSources(t *testing.T) {
	for _, kind := range []Kind{Routed, Bridged} {
		t.Run(kind.String(), func(t *testing.T) {
			tp := New(t, kind)
			pod := tp.AddPod("pod")
			c := tp.AddClient("client", worldIPv4, worldIPv6)
			for _, tc := range []struct {
				name     string
				from     *Netns
				opts     []Option
				to, want netip.Addr
			}{
				{"node v4", tp.Node, nil, pod.IPv4, tp.NodeIPv4},
				{"node v6", tp.Node, nil, pod.IPv6, tp.NodeIPv6},
				{"client v4", c.NS, nil, pod.IPv4, c.IPv4},
				{"world v6", c.NS, []Option{From(worldIPv6)}, pod.IPv6, worldIPv6},
			} {
				t.Run(tc.name, func(t *testing.T) {
					ln := ListenTCP(t, pod.NS, netip.AddrPortFrom(tc.to, 0))
					conn, err := DialTCP(t, tc.from, ln, tc.opts...)
					require.NoError(t, err)
					require.Equal(t, tc.want, conn.LocalAddr().Addr())
				})
			}
		})
	}
}

// TestFailures checks that the helpers tell a drop (ErrNoAnswer) from a refusal.
func TestFailures(t *testing.T) {
	tp := New(t, Bridged)
	pod := tp.AddPod("pod")
	pod.Echo(t, port)
	// Nobody has this address on the bridge: ARP gets no answer, so nothing comes back.
	nobody := netip.MustParseAddr("10.244.0.200")
	closed := netip.AddrPortFrom(pod.IPv4, port+1)
	for _, tc := range []struct {
		name    string
		err     error
		dropped bool
	}{
		{"tcp to nobody", TCPEcho(tp.Node, netip.AddrPortFrom(nobody, port)), true},
		{"udp to nobody", UDPEcho(tp.Node, netip.AddrPortFrom(nobody, port)), true},
		{"ping nobody", Ping(tp.Node, nobody), true},
		{"tcp to a closed port", TCPEcho(tp.Node, closed), false},
		{"udp to a closed port", UDPEcho(tp.Node, closed), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Error(t, tc.err)
			if tc.dropped {
				require.ErrorIs(t, tc.err, ErrNoAnswer)
			} else {
				require.NotErrorIs(t, tc.err, ErrNoAnswer)
			}
		})
	}
}

// TestExpect runs checks that go as they say: answered exchanges that must pass, and
// exchanges to an address nobody answers for that must be dropped.
func TestExpect(t *testing.T) {
	tp := New(t, Bridged)
	pod := tp.AddPod("pod")
	pod.Echo(t, port)
	nobody := netip.MustParseAddr("10.244.0.200")
	start := time.Now()
	Expect(t,
		TCP("tcp to the pod", tp.Node, netip.Addr{}, pod.IPv4, port, true),
		UDP("udp to the pod from the node's address", tp.Node, tp.NodeIPv6, pod.IPv6, port, true),
		TCP("tcp to nobody", tp.Node, netip.Addr{}, nobody, port, false),
		UDP("udp to nobody", tp.Node, netip.Addr{}, nobody, port, false),
	)
	require.Less(t, time.Since(start), PassWait, "a drop waits DropWait, not PassWait")
}

// TestNamespaces checks that Do runs in the namespace, that sysctls are per namespace
// (forwarding only on the node; ChosenPorts reserved everywhere), and that cleanup leaves no
// namespace and no link behind.
func TestNamespaces(t *testing.T) {
	var made []string
	var hostIfnames []string
	t.Run("build", func(t *testing.T) {
		for _, kind := range []Kind{Routed, Bridged} {
			tp := New(t, kind)
			pod := tp.AddPod("pod")
			c := tp.AddClient("client")
			for _, tc := range []struct {
				ns      *Netns
				forward string
			}{{tp.Node, "1"}, {pod.NS, "0"}, {c.NS, "0"}} {
				require.FileExists(t, tc.ns.Path)
				made = append(made, tc.ns.Path)
				var inside bool
				err := tc.ns.Do(func() error {
					cur, err := netns.Get()
					if err != nil {
						return err
					}
					defer cur.Close()
					inside = cur.Equal(tc.ns.NsHandle())
					return nil
				})
				require.NoError(t, err)
				require.True(t, inside, "Do runs in %s", tc.ns.Name)
				for _, key := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
					v, err := tc.ns.ReadSysctl(key)
					require.NoError(t, err)
					require.Equal(t, tc.forward, v, "%s in %s", key, tc.ns.Name)
				}
				reserved, err := tc.ns.ReadSysctl("net/ipv4/ip_local_reserved_ports")
				require.NoError(t, err)
				require.Equal(t, ChosenPorts, reserved, "ports tests choose are reserved in %s", tc.ns.Name)
			}
			link, err := tp.Node.Handle().LinkByIndex(pod.HostIfindex)
			require.NoError(t, err)
			require.Equal(t, pod.HostIfname, link.Attrs().Name)
			hostIfnames = append(hostIfnames, pod.HostIfname)
		}
	})
	for _, path := range made {
		require.NoFileExists(t, path)
	}
	entries, err := os.ReadDir(RunDir)
	require.NoError(t, err)
	for _, e := range entries {
		for _, path := range made {
			require.NotEqual(t, filepath.Base(path), e.Name())
		}
	}
	for _, name := range hostIfnames {
		_, err := netlink.LinkByName(name)
		require.ErrorAs(t, err, &netlink.LinkNotFoundError{})
	}
}
