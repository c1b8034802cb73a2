package e2e

import (
	"fmt"
	"maps"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/topo"
)

func TestMain(m *testing.M) { topo.Main(m) }

// The ports every pod serves TCP and UDP echo on: the ones the seed document's examples name,
// and two more for rules that allow one port and not another.
const (
	portWeb   = 8080
	portAlt   = 9090
	portHTTPS = 443
	portEtcd  = 2379
)

var echoPorts = []uint16{portWeb, portAlt, portHTTPS, portEtcd}

// Namespaces of the pods.
const (
	nsProd   = "prod"
	nsDev    = "dev"
	nsSystem = "kube-system"
)

// Addresses on the client's loopback: sources the kernel does not pick by itself.
var (
	// A pod of another node.
	remoteIPv4 = netip.MustParseAddr("10.200.0.5")
	remoteIPv6 = netip.MustParseAddr("fd00:200::5")
	// A public address.
	worldIPv4 = netip.MustParseAddr("203.0.113.7")
	worldIPv6 = netip.MustParseAddr("2001:db8::7")
)

// cluster is one node as podwall's agent sees it: a topology of network namespaces, the pods
// on it with their Kubernetes metadata, pods of other nodes, and a data path enforcing the
// state compiled from all of them.
type cluster struct {
	tp     *topo.Topology
	cfg    loader.Config
	dp     *datapath.Datapath
	opts   compiler.Options
	pods   []*pod
	remote []compiler.Pod
	state  *compiler.State
}

// pod is a pod of this node: its namespaces and veth, and its metadata.
type pod struct {
	*topo.Pod
	namespace   string
	labels      map[string]string
	annotations map[string]string
}

// defaultOptions are the agent's defaults: the namespace default policy, kube-system open,
// traffic from the node allowed, the legacy annotation key read.
func defaultOptions() compiler.Options {
	return compiler.Options{
		DefaultPolicy:  compiler.DefaultNamespace,
		OpenNamespaces: []string{nsSystem},
		AllowHost:      true,
		LegacyKey:      true,
	}
}

// newCluster builds a node of the given kind and opens a data path that must attach with
// mode: ModeClsact is forced, ModeTCX is what the loader's probe must choose (bestMode is the
// mode of the running kernel).
func newCluster(t *testing.T, kind topo.Kind, mode loader.Mode, edits ...func(*loader.Config)) *cluster {
	t.Helper()
	c := &cluster{tp: topo.New(t, kind), opts: defaultOptions()}
	c.cfg = loader.Config{
		BPFFS:       topo.BPFFS(t),
		Netns:       c.tp.Node.Path,
		ForceClsact: mode == loader.ModeClsact,
		Logger:      zaptest.NewLogger(t),
	}
	for _, edit := range edits {
		edit(&c.cfg)
	}
	var err error
	c.dp, err = datapath.Open(c.cfg)
	require.NoError(t, err, "open data path")
	// Registered after the topology's cleanups, so it runs before them, while the
	// interfaces still exist.
	t.Cleanup(func() { require.NoError(t, c.dp.Uninstall(), "uninstall data path") })
	require.Equal(t, mode, c.dp.Mode(), "attach mode")
	return c
}

// withConstants sets the programs' settings, as the agent's flags do.
func withConstants(m map[string]any) func(*loader.Config) {
	return func(c *loader.Config) { c.Constants = m }
}

// withConntrackSize sizes the conntrack table, as --conntrack-size does.
func withConntrackSize(n uint32) func(*loader.Config) {
	return func(c *loader.Config) {
		c.MapSizes = map[string]uint32{bpf.PodwallMapConntrack4: n, bpf.PodwallMapConntrack6: n}
	}
}

// policy is the annotations of a pod with a policy.
func policyOf(rules string) map[string]string {
	return map[string]string{policy.AnnotationKey: rules}
}

// labels builds a label set from key, value pairs.
func labels(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// addPod adds a pod to the node with echo servers on echoPorts. annotations nil means a pod
// without a policy annotation. Nothing is enforced for it until the next apply.
func (c *cluster) addPod(t *testing.T, name, namespace string, lbls, annotations map[string]string) *pod {
	t.Helper()
	p := &pod{Pod: c.tp.AddPod(name), namespace: namespace, labels: lbls, annotations: annotations}
	for _, port := range echoPorts {
		p.Echo(t, port)
	}
	c.pods = append(c.pods, p)
	return p
}

// addRemote declares a pod of another node: it has an identity for `from label` rules, and
// its addresses are sent from by a client.
func (c *cluster) addRemote(name, namespace string, lbls map[string]string, ips ...netip.Addr) {
	c.remote = append(c.remote, compiler.Pod{Namespace: namespace, Name: name, Labels: lbls, IPs: ips})
}

// input is what the agent would compile from the cluster now.
func (c *cluster) input() compiler.Input {
	in := compiler.Input{
		HostIPs: []netip.Addr{c.tp.NodeIPv4, c.tp.NodeIPv6},
		Options: c.opts,
		Pods:    append([]compiler.Pod(nil), c.remote...),
	}
	for _, p := range c.pods {
		in.Pods = append(in.Pods, compiler.Pod{
			Namespace:   p.namespace,
			Name:        p.Name,
			Labels:      maps.Clone(p.labels),
			Annotations: maps.Clone(p.annotations),
			IPs:         []netip.Addr{p.IPv4, p.IPv6},
		})
		in.Endpoints = append(in.Endpoints, compiler.Endpoint{
			Ifindex: uint32(p.HostIfindex), Namespace: p.namespace, Name: p.Name,
		})
	}
	return in
}

// apply compiles the cluster, applies the state and attaches every pod's host-side
// interface, as the agent does after any change.
func (c *cluster) apply(t *testing.T) {
	t.Helper()
	c.state = compiler.Compile(c.input())
	require.NoError(t, c.dp.Apply(c.state), "apply state")
	for _, p := range c.pods {
		require.NoError(t, c.dp.Attach(p.HostIfindex), "attach %s", p.Name)
	}
}

// setPolicy changes a pod's policy annotation and applies the change; nil removes it.
func (c *cluster) setPolicy(t *testing.T, p *pod, annotations map[string]string) {
	t.Helper()
	p.annotations = annotations
	c.apply(t)
}

// setLabels changes a pod's labels and applies the change.
func (c *cluster) setLabels(t *testing.T, p *pod, lbls map[string]string) {
	t.Helper()
	p.labels = lbls
	c.apply(t)
}

// restart does what an agent restart does: the data path is closed, leaving programs,
// attachments and maps pinned and enforcing, then opened again on the same pins, and the same
// state is applied and every pod attached again.
func (c *cluster) restart(t *testing.T) {
	t.Helper()
	require.NoError(t, c.dp.Close(), "close data path")
	dp, err := datapath.Open(c.cfg)
	require.NoError(t, err, "open data path again")
	c.dp = dp
	require.NoError(t, c.dp.Apply(c.state), "apply state after restart")
	for _, p := range c.pods {
		require.NoError(t, c.dp.Attach(p.HostIfindex), "attach %s after restart", p.Name)
	}
}

// problem says whether the compiled state lists a problem of the given kind for a pod.
func (c *cluster) problem(p *pod, kind compiler.ProblemKind) bool {
	for _, pr := range c.state.Problems {
		if pr.Namespace == p.namespace && pr.Name == p.Name && pr.Kind == kind {
			return true
		}
	}
	return false
}

// counts is the stats map summed over CPUs: packets per reason.
type counts [bpf.NumReasons]uint64

func (c *cluster) stats(t *testing.T) counts {
	t.Helper()
	var out counts
	for r := range bpf.NumReasons {
		var perCPU []uint64
		require.NoError(t, c.dp.Maps().Stats.Lookup(uint32(r), &perCPU), "read stats of %s", r)
		for _, n := range perCPU {
			out[r] += n
		}
	}
	return out
}

// counted runs fn and requires that the stats of each reason in grew grew, and that those
// of unchanged did not. Packets of other sources may be counted meanwhile (the node's IPv6
// multicast reports, for one), so only reasons they cannot have are listed as unchanged.
func (c *cluster) counted(t *testing.T, grew, unchanged []bpf.Reason, fn func()) {
	t.Helper()
	before := c.stats(t)
	fn()
	after := c.stats(t)
	var moved []string
	for r := range bpf.NumReasons {
		if after[r] != before[r] {
			moved = append(moved, fmt.Sprintf("%s +%d", r, after[r]-before[r]))
		}
	}
	for _, r := range grew {
		require.Greater(t, after[r], before[r], "packets counted as %s (counted: %v)", r, moved)
	}
	for _, r := range unchanged {
		require.Equal(t, before[r], after[r], "packets counted as %s (counted: %v)", r, moved)
	}
}
