package k8se2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/podwall/podwall/agent/netif"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/k8s"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/kapi"
	"github.com/podwall/podwall/tests/pinned"
	"github.com/podwall/podwall/tests/topo"
)

const (
	// nodeName is the agent's node; otherNode runs the pods that have no namespace here.
	nodeName  = "node-1"
	otherNode = "node-2"
	// port and otherPort are where every pod runs TCP and UDP echo servers.
	port, otherPort = 8080, 9090
	// applyWait bounds the wait for the agent to apply a change made in the API.
	applyWait = 15 * time.Second
	// apiTimeout bounds the test's own calls to the API server.
	apiTimeout = 30 * time.Second
)

// defaults are the agent's default flags.
var defaults = compiler.Options{
	DefaultPolicy:  compiler.DefaultNamespace,
	OpenNamespaces: []string{"kube-system"},
	AllowHost:      true,
	LegacyKey:      true,
}

// none sends from the address the kernel picks.
var none netip.Addr

func policyOf(rules string) map[string]string {
	return map[string]string{policy.AnnotationKey: rules}
}

type podKey struct{ ns, name string }

// podSpec is a pod as the test put it in the API. A pod with a topology pod (tp) runs on
// this node with the addresses of that namespace; one with ips and no tp runs on otherNode,
// unless it is a host-network pod of this node.
type podSpec struct {
	ns, name    string
	labels      map[string]string
	annotations map[string]string
	tp          *topo.Pod
	ips         []netip.Addr
	hostNetwork bool
	// noIPs: created, but the kubelet has not given it its addresses yet.
	noIPs bool
}

func (p podSpec) key() podKey { return podKey{p.ns, p.name} }

func (p podSpec) node() string {
	if p.tp != nil || p.hostNetwork {
		return nodeName
	}
	return otherNode
}

// addrs are the pod's addresses as the API shows them.
func (p podSpec) addrs() []netip.Addr {
	switch {
	case p.noIPs:
		return nil
	case p.tp != nil:
		return []netip.Addr{p.tp.IPv4, p.tp.IPv6}
	}
	return p.ips
}

// env is an API server, a node namespace with its pods, the agent's bpffs, and what the test
// put in the API.
type env struct {
	t     *testing.T
	api   *kapi.Cluster
	tp    *topo.Topology
	bpffs string
	pods  map[podKey]podSpec
	// listed is the pod each topology pod's interface was last given to: one that leaves the
	// API keeps an isolated endpoint while its interface lives.
	listed map[*topo.Pod]compiler.Endpoint
	// kubeconfig is the agent's: its ServiceAccount's token (agentKubeconfig).
	kubeconfig string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// The API server first: its cleanup then runs last, after the agent's.
	api := kapi.Start(t)
	return &env{
		t:      t,
		api:    api,
		tp:     topo.New(t, topo.Routed),
		bpffs:  topo.BPFFS(t),
		pods:   map[podKey]podSpec{},
		listed: map[*topo.Pod]compiler.Endpoint{},
	}
}

// addPod adds a pod namespace to the topology, with echo servers on port and otherPort.
func (e *env) addPod(name string) *topo.Pod {
	e.t.Helper()
	p := e.tp.AddPod(name)
	p.Echo(e.t, port)
	p.Echo(e.t, otherPort)
	return p
}

// create creates the pod in the API and then, as the kubelet does once the sandbox runs,
// sets its addresses.
func (e *env) create(p podSpec) {
	e.t.Helper()
	e.api.CreatePod(e.t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name, Labels: p.labels, Annotations: p.annotations},
		Spec:       corev1.PodSpec{NodeName: p.node(), HostNetwork: p.hostNetwork},
	})
	e.pods[p.key()] = p
	if len(p.addrs()) > 0 {
		e.setIPs(p.key())
	}
}

// setIPs gives a pod its addresses.
func (e *env) setIPs(k podKey) {
	e.t.Helper()
	p := e.pods[k]
	p.noIPs = false
	var ips []string
	for _, a := range p.addrs() {
		ips = append(ips, a.String())
	}
	e.api.SetPodIPs(e.t, k.ns, k.name, ips...)
	e.pods[k] = p
}

// update changes a pod's labels or annotations (whatever change leaves in them) in the API.
func (e *env) update(k podKey, change func(*podSpec)) {
	e.t.Helper()
	p, ok := e.pods[k]
	require.True(e.t, ok, "no pod %v", k)
	change(&p)
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	pods := e.api.Client.CoreV1().Pods(k.ns)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, k.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Labels, cur.Annotations = p.labels, p.annotations
		_, err = pods.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	require.NoError(e.t, err, "update pod %v", k)
	e.pods[k] = p
}

func (e *env) delete(k podKey) {
	e.t.Helper()
	e.api.DeletePod(e.t, k.ns, k.name)
	delete(e.pods, k)
}

// deleteNamespace deletes a namespace with its pods, as the namespace controller would.
func (e *env) deleteNamespace(ns string) {
	e.t.Helper()
	e.api.DeleteNamespace(e.t, ns)
	for k := range e.pods {
		if k.ns == ns {
			delete(e.pods, k)
		}
	}
}

func (e *env) uid(k podKey) types.UID {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	pod, err := e.api.Client.CoreV1().Pods(k.ns).Get(ctx, k.name, metav1.GetOptions{})
	require.NoError(e.t, err)
	return pod.UID
}

// awaitCondition waits until the agent has set the pod's podwall.io/policy-enforced
// condition to status, for reason, through the API (the agent's ServiceAccount may patch
// pods/status).
func (e *env) awaitCondition(k podKey, status corev1.ConditionStatus, reason string) {
	e.t.Helper()
	var last corev1.PodCondition
	requireEventually(e.t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		defer cancel()
		pod, err := e.api.Client.CoreV1().Pods(k.ns).Get(ctx, k.name, metav1.GetOptions{})
		require.NoError(e.t, err)
		for _, c := range pod.Status.Conditions {
			if c.Type == k8s.ConditionEnforced {
				last = c
				return c.Status == status && c.Reason == reason
			}
		}
		return false
	}, fmt.Sprintf("%s: %s %s %s (last %+v)", k, k8s.ConditionEnforced, status, reason, last))
}

// expected compiles what the test put in the API the way the agent must: every local pod with
// addresses is an endpoint on its host-side interface.
func (e *env) expected(opts compiler.Options) *compiler.State {
	e.t.Helper()
	in := compiler.Input{Options: opts}
	for _, p := range e.pods {
		in.Pods = append(in.Pods, compiler.Pod{
			Namespace: p.ns, Name: p.name, Labels: p.labels, Annotations: p.annotations,
			IPs: p.addrs(), HostNetwork: p.hostNetwork,
		})
		if p.tp != nil && len(p.addrs()) > 0 {
			ep := compiler.Endpoint{Ifindex: uint32(p.tp.HostIfindex), Namespace: p.ns, Name: p.name}
			in.Endpoints = append(in.Endpoints, ep)
			e.listed[p.tp] = ep
		}
	}
	for tp, ep := range e.listed {
		if _, err := e.tp.Node.Handle().LinkByIndex(tp.HostIfindex); err != nil {
			continue
		}
		if !slices.ContainsFunc(in.Endpoints, func(x compiler.Endpoint) bool { return x.Ifindex == ep.Ifindex }) {
			in.Endpoints = append(in.Endpoints, ep)
		}
	}
	f, err := netif.Open(e.tp.Node.Path)
	require.NoError(e.t, err)
	defer f.Close()
	in.HostIPs, err = f.HostAddrs()
	require.NoError(e.t, err)
	return compiler.Compile(in)
}

// awaitApplied waits until the kernel's maps hold exactly what the API's pods compile to.
func (e *env) awaitApplied(opts compiler.Options) {
	e.t.Helper()
	pinned.Await(e.t, e.bpffs, e.expected(opts), applyWait)
}

// tcxPrograms counts the programs attached with tcx to an interface of the node, both ways.
func (e *env) tcxPrograms(ifindex int) int {
	e.t.Helper()
	n := 0
	err := e.tp.Node.Do(func() error {
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			r, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
			if err != nil {
				return err
			}
			n += len(r.Programs)
		}
		return nil
	})
	require.NoError(e.t, err, "query tcx programs of ifindex %d", ifindex)
	return n
}

// awaitEvent waits for the Event of the given reason on a pod and returns it.
func (e *env) awaitEvent(k podKey, reason, message string) corev1.Event {
	e.t.Helper()
	var seen []string
	deadline := time.Now().Add(applyWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		list, err := e.api.Client.CoreV1().Events(k.ns).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Pod,involvedObject.name=" + k.name + ",reason=" + reason,
		})
		cancel()
		require.NoError(e.t, err, "list events")
		seen = seen[:0]
		for _, ev := range list.Items {
			if ev.Message == message {
				return ev
			}
			seen = append(seen, ev.Message)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no %s Event on pod %s/%s with message %q after %s; messages of that reason: %q",
				reason, k.ns, k.name, message, applyWait, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
