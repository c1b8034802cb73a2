package differential

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/frames"
	"github.com/podwall/podwall/tests/topo"
)

// TestEstablishedFlowsFollowTheEpoch checks the conntrack epoch (bpf/podwall.h) with the
// maps.Applier that writes it: an established inbound flow passes on its entry, stamped with
// the current epoch; a change to another pod's endpoint moves the epoch, and the flow's next
// packet passes on its generation, which did not change, and takes the new epoch; a change to
// its own pod's policy moves the epoch and the generation, and the flow is judged again.
func TestEstablishedFlowsFollowTheEpoch(t *testing.T) {
	ns := topo.NewNetns(t, "epoch")
	devices := addVeths(t, ns, 1)
	enter(t, ns)
	d := loadDatapath(t, func(*bpf.PodwallSpecs) error { return nil })

	server, other, client := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	cluster := func(serverPolicy, otherPolicy string) *compiler.State {
		pod := func(name string, ip netip.Addr, rules string) compiler.Pod {
			return compiler.Pod{Namespace: "shop", Name: name, IPs: []netip.Addr{ip},
				Annotations: map[string]string{policy.AnnotationKey: rules}}
		}
		s := compiler.Compile(compiler.Input{
			Pods: []compiler.Pod{pod("server", server, serverPolicy), pod("other", other, otherPolicy), pod("client", client, "")},
			Endpoints: []compiler.Endpoint{
				{Ifindex: devices[0], Namespace: "shop", Name: "server"},
				{Ifindex: devices[1], Namespace: "shop", Name: "other"},
			},
		})
		require.Empty(t, s.Problems)
		return s
	}
	p := compiler.Packet{Src: client, Dst: server, Proto: frames.ProtoTCP, SrcPort: 40000, DstPort: 443}
	syn, ack := frame(p, wire{tcpFlags: frames.TCPSyn}), frame(p, wire{tcpFlags: frames.TCPAck})
	epoch := func() uint32 {
		var v uint32
		require.NoError(t, d.objs.Epoch.Lookup(uint32(0), &v))
		return v
	}
	// entry is the flow's conntrack entry: the only one.
	entry := func() bpf.PodwallCtEntry {
		var (
			k bpf.PodwallCtKey4
			e bpf.PodwallCtEntry
			n int
		)
		it := d.objs.Conntrack4.Iterate()
		for ; it.Next(&k, &e); n++ {
			require.Equal(t, server.As4(), k.Pod)
		}
		require.NoError(t, it.Err())
		require.Equal(t, 1, n, "conntrack entries")
		return e
	}
	verdicts := func(frames ...[]byte) []bpf.Reason {
		var out []bpf.Reason
		for _, f := range frames {
			o, err := d.run(devices[0], false, f)
			require.NoError(t, err)
			out = append(out, o.reason)
		}
		return out
	}

	first := cluster("allow tcp to ports 443", "allow udp")
	require.NoError(t, d.applier.Apply(first))
	e1 := epoch()
	require.Zero(t, e1&1, "the epoch is even once the endpoints are written")
	require.Equal(t, []bpf.Reason{bpf.ReasonAllowRule, bpf.ReasonEstablished, bpf.ReasonEstablished}, verdicts(syn, ack, ack))
	require.Equal(t, e1, entry().Epoch, "the flow is stamped with the epoch it was allowed in")
	gen := entry().Generation
	require.Equal(t, first.Endpoints[devices[0]].Generation, gen)

	require.NoError(t, d.applier.Apply(cluster("allow tcp to ports 443", "allow tcp")))
	e2 := epoch()
	require.Equal(t, e1+2, e2, "a change to another endpoint moves the epoch past an odd one")
	require.Equal(t, []bpf.Reason{bpf.ReasonEstablished}, verdicts(ack), "the server's generation did not change")
	require.Equal(t, bpf.PodwallCtEntry{LastSeen: entry().LastSeen, Generation: gen, Epoch: e2, Flags: entry().Flags, Counter: entry().Counter}, entry(),
		"the flow takes the new epoch, under the same generation")

	require.NoError(t, d.applier.Apply(cluster("allow tcp to ports 443", "allow tcp")))
	require.Equal(t, e2, epoch(), "an apply that changes no endpoint leaves the epoch")

	require.NoError(t, d.applier.Apply(cluster("allow tcp to ports 8443", "allow tcp")))
	require.Equal(t, e2+2, epoch())
	require.Equal(t, []bpf.Reason{bpf.ReasonNoRule}, verdicts(ack), "the server's new policy judges the flow again")
}

// TestEstablishedFlowsFollowTheirSource checks that an established inbound flow is judged
// again when its source's identity changes, and only then: churn of other pods changes the
// ipcache, not the server's generation nor the epoch, and the flow passes on its entry; the
// client's relabel removes the flows it opened, whose next packet the server's policy judges
// by its new labels; the server's own connection to the client is no flow the client opened,
// and its replies still pass.
func TestEstablishedFlowsFollowTheirSource(t *testing.T) {
	ns := topo.NewNetns(t, "source")
	devices := addVeths(t, ns, 1)
	enter(t, ns)
	d := loadDatapath(t, func(*bpf.PodwallSpecs) error { return nil })

	server, client, other := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")
	cluster := func(clientRole string, others int) *compiler.State {
		pods := []compiler.Pod{
			{Namespace: "shop", Name: "server", IPs: []netip.Addr{server},
				Annotations: map[string]string{policy.AnnotationKey: "allow tcp from label role=frontend"}},
			{Namespace: "shop", Name: "client", IPs: []netip.Addr{client}, Labels: map[string]string{"role": clientRole}},
		}
		for i := range others {
			pods = append(pods, compiler.Pod{Namespace: "shop", Name: fmt.Sprint("other-", i), IPs: []netip.Addr{other.Next()},
				Labels: map[string]string{"role": fmt.Sprint("churn-", i)}})
			other = other.Next()
		}
		s := compiler.Compile(compiler.Input{Pods: pods, Endpoints: []compiler.Endpoint{{Ifindex: devices[0], Namespace: "shop", Name: "server"}}})
		require.Empty(t, s.Problems)
		return s
	}
	in := compiler.Packet{Src: client, Dst: server, Proto: frames.ProtoTCP, SrcPort: 40000, DstPort: 443}
	syn, ack := frame(in, wire{tcpFlags: frames.TCPSyn}), frame(in, wire{tcpFlags: frames.TCPAck})
	// The server's own connection to the client, and the client's reply.
	out := compiler.Packet{Src: server, Dst: client, Proto: frames.ProtoTCP, SrcPort: 50000, DstPort: 80}
	reply := compiler.Packet{Src: client, Dst: server, Proto: frames.ProtoTCP, SrcPort: 80, DstPort: 50000}
	verdict := func(f []byte) bpf.Reason {
		o, err := d.run(devices[0], false, f)
		require.NoError(t, err)
		return o.reason
	}
	epoch := func() uint32 {
		var v uint32
		require.NoError(t, d.objs.Epoch.Lookup(uint32(0), &v))
		return v
	}

	first := cluster("frontend", 0)
	require.NoError(t, d.applier.Apply(first))
	require.Equal(t, bpf.ReasonAllowRule, verdict(syn))
	ret, err := d.objs.FromPod.Run(&ebpf.RunOptions{Data: frame(out, wire{tcpFlags: frames.TCPSyn}), Context: skbContext(devices[0], 0)})
	require.NoError(t, err)
	require.Equal(t, uint32(actNext), ret)
	require.Equal(t, bpf.ReasonReply, verdict(frame(reply, wire{tcpFlags: frames.TCPSyn | frames.TCPAck})))

	// Pods come and go elsewhere: the server's endpoint, its generation and the epoch stay.
	e := epoch()
	for n := 1; n <= 5; n++ {
		s := cluster("frontend", n)
		require.NoError(t, d.applier.Apply(s))
		require.Equal(t, first.Endpoints[devices[0]].Generation, s.Endpoints[devices[0]].Generation)
		require.Equal(t, e, epoch(), "no endpoint changed")
		require.Equal(t, bpf.ReasonEstablished, verdict(ack), "churn %d: the flow is not judged again", n)
	}

	// The client becomes a worker: the flow it opened is judged again, and dropped.
	require.NoError(t, d.applier.Apply(cluster("worker", 5)))
	require.Equal(t, e, epoch())
	require.Equal(t, bpf.ReasonNoRule, verdict(ack), "the relabelled client's flow is judged by its new labels")
	require.Equal(t, bpf.ReasonReply, verdict(frame(reply, wire{tcpFlags: frames.TCPAck})), "the server's own connection stays")
}
