package probe

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/topo"
)

func TestMain(m *testing.M) { topo.Main(m) }

const port, otherPort = 8080, 9090

// node is a topology with a data path enforcing its pods, as an agent leaves it.
type node struct {
	tp                 *topo.Topology
	bpffs              string
	dp                 *datapath.Datapath
	state              *compiler.State
	api, web, bad, aud *topo.Pod
}

// newNode runs a data path with the settings constants (as the agent's flags give them) for
// four pods of namespace shop: api, whose policy allows frontends to port 8080 and denies
// workers, web (a frontend), bad (a worker), and aud, api's policy in audit mode.
func newNode(t *testing.T, constants map[string]any) *node {
	t.Helper()
	n := &node{tp: topo.New(t, topo.Routed), bpffs: topo.BPFFS(t)}
	n.api, n.web, n.bad, n.aud = n.tp.AddPod("api"), n.tp.AddPod("web"), n.tp.AddPod("bad"), n.tp.AddPod("aud")
	n.api.Echo(t, port)
	var err error
	n.dp, err = datapath.Open(loader.Config{BPFFS: n.bpffs, Netns: n.tp.Node.Path, Constants: constants})
	require.NoError(t, err)
	// After the topology's cleanups, so it runs first, while the interfaces exist.
	t.Cleanup(func() { require.NoError(t, n.dp.Uninstall()) })
	rules := "allow tcp from label role=frontend to ports 8080; deny from label role=worker"
	pods := []compiler.Pod{
		{Namespace: "shop", Name: "api", Labels: map[string]string{"role": "backend"}, IPs: []netip.Addr{n.api.IPv4, n.api.IPv6},
			Annotations: map[string]string{policy.AnnotationKey: rules}},
		{Namespace: "shop", Name: "web", Labels: map[string]string{"role": "frontend"}, IPs: []netip.Addr{n.web.IPv4, n.web.IPv6}},
		{Namespace: "shop", Name: "bad", Labels: map[string]string{"role": "worker"}, IPs: []netip.Addr{n.bad.IPv4, n.bad.IPv6}},
		{Namespace: "shop", Name: "aud", IPs: []netip.Addr{n.aud.IPv4, n.aud.IPv6},
			Annotations: map[string]string{policy.AnnotationKey: rules, policy.AuditAnnotationKey: "true"}},
	}
	var eps []compiler.Endpoint
	for i, p := range []*topo.Pod{n.api, n.web, n.bad, n.aud} {
		require.NoError(t, n.dp.Attach(p.HostIfindex))
		eps = append(eps, compiler.Endpoint{Ifindex: uint32(p.HostIfindex), Namespace: "shop", Name: pods[i].Name})
	}
	n.state = compiler.Compile(compiler.Input{Pods: pods, Endpoints: eps, HostIPs: []netip.Addr{n.tp.NodeIPv4, n.tp.NodeIPv6},
		Options: compiler.Options{DefaultPolicy: compiler.DefaultNamespace, AllowHost: true}})
	require.NoError(t, n.dp.Apply(n.state))
	return n
}

// judge opens the node's pinned state and judges p in the node's namespace.
func (n *node) judge(t *testing.T, p Packet) Result {
	t.Helper()
	nd, err := Open(n.bpffs)
	require.NoError(t, err)
	defer nd.Close()
	var res Result
	require.NoError(t, n.tp.Node.Do(func() error {
		var err error
		res, err = nd.Judge(p)
		return err
	}))
	return res
}

func tcp(src, dst netip.Addr, dport uint16) compiler.Packet {
	return compiler.Packet{Src: src, Dst: dst, Proto: 6, SrcPort: 40000, DstPort: dport}
}

func TestJudge(t *testing.T) {
	n := newNode(t, nil)
	api := uint32(n.api.HostIfindex)
	world := netip.MustParseAddr("203.0.113.9")
	for _, tt := range []struct {
		name   string
		p      Packet
		pass   bool
		reason bpf.Reason
		audit  bool
		rule   int // the rule bit, -1: none known
	}{
		{name: "allowed by rule 1", p: Packet{Packet: tcp(n.web.IPv4, n.api.IPv4, port), Ifindex: api},
			pass: true, reason: bpf.ReasonAllowRule, rule: 0},
		{name: "IPv6", p: Packet{Packet: tcp(n.web.IPv6, n.api.IPv6, port), Ifindex: api},
			pass: true, reason: bpf.ReasonAllowRule, rule: 0},
		{name: "denied by rule 2", p: Packet{Packet: tcp(n.bad.IPv4, n.api.IPv4, port), Ifindex: api},
			reason: bpf.ReasonDenyRule, rule: 1},
		{name: "no rule", p: Packet{Packet: tcp(n.web.IPv4, n.api.IPv4, otherPort), Ifindex: api},
			reason: bpf.ReasonNoRule, rule: -1},
		{name: "ICMP echo from the world", p: Packet{Packet: compiler.Packet{Src: world, Dst: n.api.IPv4, Proto: 1, ICMPType: 8}, EchoID: 7, Ifindex: api},
			reason: bpf.ReasonNoRule, rule: -1},
		{name: "the node", p: Packet{Packet: compiler.Packet{Src: n.tp.NodeIPv4, Dst: n.api.IPv4, FromNode: true, Proto: 17, SrcPort: 1, DstPort: 53}, Ifindex: api},
			pass: true, reason: bpf.ReasonHost, rule: -1},
		{name: "the node's address, forwarded, is the world's", p: Packet{Packet: tcp(n.tp.NodeIPv4, n.api.IPv4, port), Ifindex: api},
			reason: bpf.ReasonNoRule, rule: -1},
		{name: "audit mode passes a deny rule's drop", p: Packet{Packet: tcp(n.bad.IPv4, n.aud.IPv4, port), Ifindex: uint32(n.aud.HostIfindex)},
			pass: true, reason: bpf.ReasonDenyRule, audit: true, rule: 1},
		{name: "audit mode passes a drop for no rule", p: Packet{Packet: tcp(world, n.aud.IPv4, port), Ifindex: uint32(n.aud.HostIfindex)},
			pass: true, reason: bpf.ReasonNoRule, audit: true, rule: -1},
		{name: "default policy: same namespace", p: Packet{Packet: tcp(n.bad.IPv4, n.web.IPv4, 1), Ifindex: uint32(n.web.HostIfindex)},
			pass: true, reason: bpf.ReasonAllowRule, rule: 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := n.judge(t, tt.p)
			require.Equal(t, tt.pass, res.Pass, "pass")
			require.Equal(t, tt.reason, res.Reason)
			require.Equal(t, tt.audit, res.Audit, "audit")
			require.NoError(t, res.Defaults, "the live program's settings")
			require.Nil(t, res.Tracked)
			policy, bit, ok := res.Rule()
			if tt.rule < 0 {
				require.False(t, ok, "rule known")
				return
			}
			require.True(t, ok, "rule known")
			require.Equal(t, tt.rule, bit)
			require.Equal(t, n.state.Endpoints[tt.p.Ifindex].Policy, policy)
			require.Equal(t, tt.reason, bpf.Reason(res.Event.Reason))
		})
	}

	t.Run("local pods and the node's addresses", func(t *testing.T) {
		nd, err := Open(n.bpffs)
		require.NoError(t, err)
		defer nd.Close()
		ifindex, ok, err := nd.Ifindex(n.api.IPv6)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, api, ifindex)
		_, ok, err = nd.Ifindex(world)
		require.NoError(t, err)
		require.False(t, ok)
		host, err := nd.HostAddrs()
		require.NoError(t, err)
		require.ElementsMatch(t, []netip.Addr{n.tp.NodeIPv4, n.tp.NodeIPv6}, host)
	})

	t.Run("an interface of another namespace", func(t *testing.T) {
		nd, err := Open(n.bpffs)
		require.NoError(t, err)
		defer nd.Close()
		_, err = nd.Judge(Packet{Packet: tcp(n.web.IPv4, n.api.IPv4, port), Ifindex: 1 << 20})
		require.ErrorContains(t, err, "no such interface in this network namespace")
	})
}

// TestJudgeEstablished judges a packet of a live connection: as established, on a copy of
// its conntrack entry, and as allowed by its rule as a new flow, leaving the node's entry and
// counters as they were.
func TestJudgeEstablished(t *testing.T) {
	n := newNode(t, nil)
	conn, err := topo.DialTCP(t, n.web.NS, netip.AddrPortFrom(n.api.IPv4, port))
	require.NoError(t, err)
	// Until its last delayed ACK has passed.
	time.Sleep(300 * time.Millisecond)
	p := Packet{Packet: tcp(n.web.IPv4, n.api.IPv4, port), Ifindex: uint32(n.api.HostIfindex)}
	p.SrcPort = conn.LocalAddr().Port()
	flow, ok := ctFlow(p)
	require.True(t, ok)
	var before bpf.PodwallCtEntry
	require.NoError(t, n.dp.Maps().Conntrack4.Lookup(flow.Key(), &before))
	stats := verdicts(t, n.dp)

	res := n.judge(t, p)
	require.True(t, res.Pass)
	require.Equal(t, bpf.ReasonEstablished, res.Reason)
	require.Equal(t, &before, res.Tracked)
	require.Nil(t, res.Event, "no event for a packet of an established flow")

	p.NewFlow = true
	res = n.judge(t, p)
	require.True(t, res.Pass)
	require.Equal(t, bpf.ReasonAllowRule, res.Reason)
	require.Nil(t, res.Tracked)
	_, bit, ok := res.Rule()
	require.True(t, ok)
	require.Zero(t, bit)

	var after bpf.PodwallCtEntry
	require.NoError(t, n.dp.Maps().Conntrack4.Lookup(flow.Key(), &after))
	require.Equal(t, before, after, "the node's conntrack entry")
	require.Equal(t, stats, verdicts(t, n.dp), "the node's counters")
}

// verdicts reads the node's counters of the reasons the probes of the test count: the node's
// kernel may send the pods other packets at any time (neighbour discovery, multicast
// listener queries).
func verdicts(t *testing.T, dp *datapath.Datapath) []uint64 {
	t.Helper()
	v, err := dp.Verdicts()
	require.NoError(t, err)
	return []uint64{v[bpf.ReasonEstablished], v[bpf.ReasonAllowRule]}
}

// TestLiveSettings copies the settings of the program attached to an interface, which the
// agent's flags set, and falls back to the agent's defaults where podwall is not attached.
func TestLiveSettings(t *testing.T) {
	n := newNode(t, map[string]any{"ct_endpoint_max": uint32(1234), "ct_timeout_tcp_syn_ns": uint64(5 * time.Second)})
	jiffy, err := bpf.JiffyNS()
	require.NoError(t, err)
	for _, tt := range []struct {
		name    string
		ifindex uint32
		err     string
		max     uint32
		syn     uint64
	}{
		{name: "attached", ifindex: uint32(n.api.HostIfindex), max: 1234, syn: uint64(5 * time.Second)},
		{name: "not attached", ifindex: 1 << 20, err: "podwall is not attached to ifindex 1048576", max: 65536, syn: uint64(time.Minute)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := bpf.LoadPodwall()
			require.NoError(t, err)
			err = liveSettings(spec, n.bpffs, tt.ifindex)
			if tt.err == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tt.err)
			}
			var max uint32
			var syn, jns uint64
			require.NoError(t, spec.Variables["ct_endpoint_max"].Get(&max))
			require.NoError(t, spec.Variables["ct_timeout_tcp_syn_ns"].Get(&syn))
			require.NoError(t, spec.Variables[jiffyNS].Get(&jns))
			require.Equal(t, tt.max, max)
			require.Equal(t, tt.syn, syn)
			require.Equal(t, jiffy, jns)
		})
	}
}
