package standalone

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/agent"
	"github.com/podwall/podwall/agent/netif"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/k8s"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/pinned"
	"github.com/podwall/podwall/tests/topo"
)

const (
	nodeName = "node-1"
	// port and otherPort are where every pod runs TCP and UDP echo servers.
	port, otherPort = 8080, 9090
	// applyWait bounds the wait for the agent to apply a change of the file.
	applyWait = 10 * time.Second
)

// podSpec is a pod as the pods file lists it. A pod with a topology pod (tp) runs on this
// node with its addresses; one with ips runs on another node.
type podSpec struct {
	ns, name    string
	labels      map[string]string
	annotations map[string]string
	tp          *topo.Pod
	node        string // default nodeName with tp, "node-2" without
	ips         []netip.Addr
	hostNetwork bool
}

func policyOf(rules string) map[string]string {
	return map[string]string{policy.AnnotationKey: rules}
}

// cluster is a topology and the pods file that describes it.
type cluster struct {
	t     *testing.T
	tp    *topo.Topology
	bpffs string
	file  string
	last  []byte // the file's content as last written
	// confirm is how long a pods file that lost most pods must stay before the agent takes
	// it (0: k8s.DefaultConfirm).
	confirm time.Duration
	pods    map[string]*topo.Pod // the topology's pods by name
	// nsAnnotations are the namespaces' annotations write gives them, by name.
	nsAnnotations map[string]map[string]string
	// listed is the pod each topology pod's interface was last listed for: one that leaves
	// the file keeps an isolated endpoint while its interface lives.
	listed map[*topo.Pod]compiler.Endpoint
}

func newCluster(t *testing.T, kind topo.Kind) *cluster {
	return &cluster{
		t:      t,
		tp:     topo.New(t, kind),
		bpffs:  topo.BPFFS(t),
		file:   filepath.Join(t.TempDir(), "pods.yaml"),
		pods:   map[string]*topo.Pod{},
		listed: map[*topo.Pod]compiler.Endpoint{},
	}
}

// addPod adds a pod namespace to the topology, with echo servers on port and otherPort.
func (c *cluster) addPod(name string) *topo.Pod {
	c.t.Helper()
	p := c.tp.AddPod(name)
	p.Echo(c.t, port)
	p.Echo(c.t, otherPort)
	c.pods[name] = p
	return p
}

// render prints pods and namespaces as `kubectl get pods,namespaces -A -o yaml` does;
// nsAnnotations are the namespaces' annotations, by name.
func render(t *testing.T, pods []podSpec, namespaces []string, nsAnnotations map[string]map[string]string) []byte {
	t.Helper()
	list := corev1.List{TypeMeta: metav1.TypeMeta{Kind: "List", APIVersion: "v1"}}
	add := func(obj any) {
		b, err := yaml.Marshal(obj)
		require.NoError(t, err)
		j, err := yaml.YAMLToJSON(b)
		require.NoError(t, err)
		list.Items = append(list.Items, runtime.RawExtension{Raw: j})
	}
	for _, ns := range namespaces {
		add(&corev1.Namespace{
			TypeMeta:   metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: ns, Annotations: nsAnnotations[ns]},
		})
	}
	for _, p := range pods {
		node, ips := p.node, p.ips
		if p.tp != nil {
			if node == "" {
				node = nodeName
			}
			ips = []netip.Addr{p.tp.IPv4, p.tp.IPv6}
		} else if node == "" {
			node = "node-2"
		}
		pod := &corev1.Pod{
			TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{
				Namespace: p.ns, Name: p.name, Labels: p.labels, Annotations: p.annotations,
				UID: types.UID("uid-" + p.ns + "-" + p.name),
			},
			Spec:   corev1.PodSpec{NodeName: node, HostNetwork: p.hostNetwork},
			Status: corev1.PodStatus{Phase: corev1.PodRunning},
		}
		for _, ip := range ips {
			pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: ip.String()})
		}
		if len(ips) > 0 {
			pod.Status.PodIP = ips[0].String()
		}
		add(pod)
	}
	b, err := yaml.Marshal(list)
	require.NoError(t, err)
	return b
}

// write replaces the pods file, by a rename as editors do.
func (c *cluster) write(pods []podSpec, namespaces ...string) {
	c.t.Helper()
	c.writeRaw(render(c.t, pods, namespaces, c.nsAnnotations))
	for _, p := range pods {
		if p.tp != nil && (p.node == "" || p.node == nodeName) && !p.hostNetwork {
			c.listed[p.tp] = compiler.Endpoint{Ifindex: uint32(p.tp.HostIfindex), Namespace: p.ns, Name: p.name}
		}
	}
}

func (c *cluster) writeRaw(b []byte) {
	c.t.Helper()
	tmp := c.file + ".tmp"
	require.NoError(c.t, os.WriteFile(tmp, b, 0o644))
	require.NoError(c.t, os.Rename(tmp, c.file))
	c.last = b
}

// expected compiles the file as last written the way the agent must: every local pod of the
// topology is an endpoint on its host-side interface, and so is a pod that left the file while
// its interface lives (the compiler isolates it).
func (c *cluster) expected(opts compiler.Options) *compiler.State {
	c.t.Helper()
	snap, err := k8s.ParseFile(c.last)
	require.NoError(c.t, err)
	ifindexes := map[netip.Addr]int{}
	for _, p := range c.pods {
		ifindexes[p.IPv4] = p.HostIfindex
	}
	var eps []compiler.Endpoint
	var pods []compiler.Pod
	for _, p := range snap.Pods {
		pods = append(pods, p.Pod)
		if p.Node != nodeName || p.HostNetwork || len(p.IPs) == 0 {
			continue
		}
		ifindex, ok := ifindexes[p.IPs[0]]
		require.True(c.t, ok, "pod %s/%s has no namespace of the topology", p.Namespace, p.Name)
		eps = append(eps, compiler.Endpoint{Ifindex: uint32(ifindex), Namespace: p.Namespace, Name: p.Name})
	}
	for tp, ep := range c.listed {
		if _, err := c.tp.Node.Handle().LinkByIndex(tp.HostIfindex); err != nil {
			continue
		}
		if !slices.ContainsFunc(eps, func(e compiler.Endpoint) bool { return e.Ifindex == ep.Ifindex }) {
			eps = append(eps, ep)
		}
	}
	f, err := netif.Open(c.tp.Node.Path)
	require.NoError(c.t, err)
	defer f.Close()
	host, err := f.HostAddrs()
	require.NoError(c.t, err)
	return compiler.Compile(compiler.Input{Pods: pods, Endpoints: eps, HostIPs: host, NamespaceAnnotations: snap.NamespaceAnnotations, Options: opts})
}

// awaitApplied waits until the kernel's maps hold exactly what the file as last written
// compiles to.
func (c *cluster) awaitApplied(opts compiler.Options) {
	c.t.Helper()
	pinned.Await(c.t, c.bpffs, c.expected(opts), applyWait)
}

// runningAgent is the agent running in-process.
type runningAgent struct {
	t       *testing.T
	cancel  context.CancelFunc
	done    chan error
	dp      *datapath.Datapath
	finder  *netif.Finder
	metrics *agent.Metrics
	logs    *observer.ObservedLogs
	agent   *agent.Agent
	ready   string
	stopped bool
}

// startAgent runs the agent in-process on the cluster's pods file, attaching in the node
// namespace, and waits for its ready file.
func (c *cluster) startAgent(opts compiler.Options) *runningAgent {
	c.t.Helper()
	r := c.startAgentUnready(opts)
	r.awaitReady()
	return r
}

// startAgentUnready starts the agent and returns at once; edits change its configuration,
// as its flags do.
func (c *cluster) startAgentUnready(opts compiler.Options, edits ...func(*loader.Config, *agent.Config)) *runningAgent {
	c.t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	lc := loader.Config{BPFFS: c.bpffs, Netns: c.tp.Node.Path}
	var ac agent.Config
	for _, edit := range edits {
		edit(&lc, &ac)
	}
	dp, err := datapath.Open(lc)
	require.NoError(c.t, err)
	finder, err := netif.Open(c.tp.Node.Path)
	if err != nil {
		_ = dp.Close()
		require.NoError(c.t, err)
	}
	r := &runningAgent{
		t: c.t, done: make(chan error, 1), dp: dp, finder: finder, logs: logs,
		metrics: agent.NewMetrics(dp),
		ready:   filepath.Join(c.t.TempDir(), "ready"),
	}
	r.agent = agent.New(agent.Config{
		Node:        nodeName,
		Options:     opts,
		Source:      k8s.NewFile(c.file, c.confirm),
		Datapath:    dp,
		Finder:      finder,
		Metrics:     r.metrics,
		Logger:      zap.New(core),
		ReadyFile:   r.ready,
		ConntrackGC: ac.ConntrackGC,
		ChainCheck:  ac.ChainCheck,
		Strict:      ac.Strict,
		XDP:         ac.XDP,
	})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.agent.Run(ctx) }()
	c.t.Cleanup(r.stop)
	return r
}

func (r *runningAgent) awaitReady() {
	r.t.Helper()
	deadline := time.Now().Add(applyWait)
	for {
		if _, err := os.Stat(r.ready); err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("agent not ready after %s; log:\n%s", applyWait, r.logText())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop stops the agent and releases the data path, leaving enforcement pinned.
func (r *runningAgent) stop() {
	if r.stopped {
		return
	}
	r.stopped = true
	r.cancel()
	assert.NoError(r.t, <-r.done, "agent run")
	r.finder.Close()
	assert.NoError(r.t, r.dp.Close(), "close data path")
}

func (r *runningAgent) logText() string {
	var s string
	for _, e := range r.logs.All() {
		s += fmt.Sprintf("%s %s %v\n", e.Level, e.Message, e.ContextMap())
	}
	return s
}

// metric reads the value of a metric with the given labels (name=value pairs).
func (r *runningAgent) metric(name string, labels ...string) float64 {
	r.t.Helper()
	families, err := r.metrics.Registry.Gather()
	require.NoError(r.t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
					return l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}) {
					continue metrics
				}
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	r.t.Fatalf("no metric %s %v", name, labels)
	return 0
}

func zapString(key, value string) zapcore.Field {
	return zapcore.Field{Key: key, Type: zapcore.StringType, String: value}
}

// awaitMetric waits until a gauge reads want: the agent sets its gauges once an apply is
// done, a little after the maps hold the new state.
func (r *runningAgent) awaitMetric(t *testing.T, want float64, name string, labels ...string) {
	t.Helper()
	requireEventually(t, func() bool { return r.metric(name, labels...) == want }, fmt.Sprintf("%s%v reads %v", name, labels, want))
}

func requireEventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(applyWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, applyWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
