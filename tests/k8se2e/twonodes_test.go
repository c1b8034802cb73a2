package k8se2e

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/tests/proc"
	"github.com/podwall/podwall/tests/topo"
)

// TestTwoNodes runs two nodes, each a network namespace with its own agent (its own node name
// and bpffs folder) watching one API server, with pods on both, routed to each other: each
// node judges the traffic from the other's pods by the sender's labels, as the API gives them,
// and a relabel of a pod of node A changes the verdict on node B, for new connections and for
// the ones it had open.
func TestTwoNodes(t *testing.T) {
	bin := proc.BuildPodwall(t)
	e := newEnv(t)
	a, b := topo.NewNode(t, 1), topo.NewNode(t, 2)
	topo.Connect(t, a, b)
	addPod := func(tp *topo.Topology, name string) *topo.Pod {
		p := tp.AddPod(name)
		p.Echo(t, port)
		p.Echo(t, otherPort)
		return p
	}
	front, worker, api := addPod(a, "front"), addPod(a, "worker"), addPod(b, "api")
	e.api.CreateNamespace(t, "shop", nil)
	create := func(node string, p *topo.Pod, labels, annotations map[string]string) {
		e.api.CreatePod(t, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: p.Name, Labels: labels, Annotations: annotations},
			Spec:       corev1.PodSpec{NodeName: node},
		})
		e.api.SetPodIPs(t, "shop", p.Name, p.IPv4.String(), p.IPv6.String())
	}
	create("node-a", front, map[string]string{"role": "frontend"}, nil)
	create("node-a", worker, map[string]string{"role": "worker"}, nil)
	create("node-b", api, map[string]string{"role": "backend"}, policyOf("allow tcp from label role=frontend to ports 8080"))

	agentA := e.startAgentOn(bin, "node-a", a, topo.BPFFS(t))
	agentB := e.startAgentOn(bin, "node-b", b, topo.BPFFS(t))
	// Each guards its own pods only.
	requireEventually(t, func() bool {
		return agentA.metric(t, "podwall_endpoints") == 2 && agentB.metric(t, "podwall_endpoints") == 1
	}, "each agent has its node's pods")

	topo.Expect(t,
		topo.TCP("frontend of node A to api of node B: rule 1 allows", front.NS, none, api.IPv4, port, true),
		topo.TCP("frontend of node A to api of node B over IPv6", front.NS, none, api.IPv6, port, true),
		topo.TCP("frontend of node A to api, other port: no rule", front.NS, none, api.IPv4, otherPort, false),
		topo.TCP("worker of node A to api of node B: no rule", worker.NS, none, api.IPv4, port, false),
		topo.TCP("api of node B to worker of node A: default, same namespace", api.NS, none, worker.IPv4, port, true),
	)
	conn, err := topo.DialTCP(t, front.NS, netip.AddrPortFrom(api.IPv4, port))
	require.NoError(t, err)

	// front becomes a worker on node A: node B's agent learns its labels from the API.
	e.api.SetPodLabels(t, "shop", "front", map[string]string{"role": "worker"})
	requireEventually(t, func() bool {
		return topo.TCPEcho(front.NS, netip.AddrPortFrom(api.IPv4, port), topo.Timeout(topo.DropWait)) != nil
	}, "node B drops the relabelled pod's new connections")
	require.Error(t, conn.Echo(), "and the connection it had open")
	topo.Expect(t, topo.TCP("worker to api: still no rule", worker.NS, none, api.IPv4, port, false))

	// And back.
	e.api.SetPodLabels(t, "shop", "worker", map[string]string{"role": "frontend"})
	requireEventually(t, func() bool {
		return topo.TCPEcho(worker.NS, netip.AddrPortFrom(api.IPv4, port), topo.Timeout(topo.PassWait)) == nil
	}, "node B lets the pod that became a frontend in")
}
