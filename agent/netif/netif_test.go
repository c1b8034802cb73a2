package netif

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/tests/topo"
)

func TestMain(m *testing.M) { topo.Main(m) }

func TestFindRouted(t *testing.T) {
	tp := topo.New(t, topo.Routed)
	pod := tp.AddPod("pod1")
	f, err := Open(tp.Node.Path)
	require.NoError(t, err)
	t.Cleanup(f.Close)

	for _, ips := range [][]netip.Addr{{pod.IPv4, pod.IPv6}, {pod.IPv4}, {pod.IPv6}} {
		got, err := f.Find(ips)
		require.NoError(t, err, ips)
		require.Equal(t, pod.HostIfindex, got, ips)
	}
	for _, tt := range []struct {
		name string
		ips  []netip.Addr
	}{
		{"no address", nil},
		{"the node's own", []netip.Addr{tp.NodeIPv4}},
		{"no route", []netip.Addr{netip.MustParseAddr("192.0.2.1")}},
	} {
		_, err := f.Find(tt.ips)
		require.ErrorIs(t, err, ErrNotFound, tt.name)
	}
	require.True(t, f.Exists(pod.HostIfindex))
	require.False(t, f.Exists(pod.HostIfindex+1000))

	addrs, err := f.HostAddrs()
	require.NoError(t, err)
	require.ElementsMatch(t, []netip.Addr{tp.NodeIPv4, tp.NodeIPv6}, addrs,
		"loopback and link-local (169.254.1.1, fe80::1) left out")
}

func TestFindThroughGateway(t *testing.T) {
	tp := topo.New(t, topo.Routed)
	c := tp.AddClient("client", netip.MustParseAddr("10.50.0.1"))
	f, err := Open(tp.Node.Path)
	require.NoError(t, err)
	t.Cleanup(f.Close)
	_, err = f.Find(c.Extra)
	require.ErrorIs(t, err, ErrNotFound)
}

func TestFindBridged(t *testing.T) {
	tp := topo.New(t, topo.Bridged)
	pods := []*topo.Pod{tp.AddPod("pod1"), tp.AddPod("pod2")}
	f, err := Open(tp.Node.Path)
	require.NoError(t, err)
	t.Cleanup(f.Close)

	for _, p := range pods {
		for _, ips := range [][]netip.Addr{{p.IPv4}, {p.IPv6}} {
			// Nothing was sent to the pod yet: the first Find starts the resolution.
			var got int
			require.Eventually(t, func() bool {
				got, err = f.Find(ips)
				if err != nil {
					require.ErrorIs(t, err, ErrUnresolved)
				}
				return err == nil
			}, 3*time.Second, 10*time.Millisecond, ips)
			require.Equal(t, p.HostIfindex, got, ips)
		}
	}
}

func TestWatch(t *testing.T) {
	tp := topo.New(t, topo.Routed)
	f, err := Open(tp.Node.Path)
	require.NoError(t, err)
	t.Cleanup(f.Close)

	changes := make(chan Kind, 1000)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- f.Watch(ctx, func(c Change) { changes <- c.Kind }) }()
	// A pod brings a link and routes. Watch subscribes in its goroutine, so the first pod may
	// come before the subscriptions: another pod follows every half second until both kinds
	// of change were seen.
	tp.AddPod("pod1")
	seen := map[Kind]bool{}
	timeout := time.After(10 * time.Second)
	another := time.NewTicker(500 * time.Millisecond)
	defer another.Stop()
	for n := 2; !seen[LinkChange] || !seen[RouteChange]; {
		select {
		case c := <-changes:
			seen[c] = true
		case <-another.C:
			tp.AddPod(fmt.Sprintf("pod%d", n))
			n++
		case <-timeout:
			t.Fatalf("changes seen: %v", seen)
		}
	}
	cancel()
	require.NoError(t, <-done)
}
