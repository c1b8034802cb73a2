package main

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestExplain(t *testing.T) {
	run := func(args ...string) []string {
		return append([]string{"explain", "-f", "testdata/explain-pods.yaml"}, args...)
	}
	for _, tt := range []cliTest{
		{name: "allowed by a rule", args: run("shop/front", "shop/web", "tcp:8080"),
			stdout: "shop/front (10.0.0.3) -> shop/web (10.0.0.2) tcp port 8080: PASS\n" +
				"  rule 1 (allow tcp from label role=frontend to ports 8080) of shop/web allows it\n"},
		{name: "no rule allows", args: run("shop/front", "shop/web", "tcp:80"),
			stdout: "shop/front (10.0.0.3) -> shop/web (10.0.0.2) tcp port 80: DROP\n  no rule of shop/web allows it\n"},
		{name: "deny wins", args: run("203.0.113.9", "shop/web", "icmp"),
			stdout: "203.0.113.9 (203.0.113.9) -> shop/web (10.0.0.2) icmp type 8 code 0: DROP\n" +
				"  rule 2 (deny from cidr 203.0.113.0/24) of shop/web denies it (deny wins over allow)\n"},
		{name: "namespace default allows its own namespace", args: run("shop/web", "shop/front", "udp:53"),
			stdout: "shop/web (10.0.0.2) -> shop/front (10.0.0.3) udp port 53: PASS\n" +
				"  the default (allow from namespace shop (default policy)) of shop/front allows it\n"},
		{name: "namespace default drops other namespaces", args: run("other/x", "shop/front", "udp:53"),
			stdout: "other/x (10.0.1.5) -> shop/front (10.0.0.3) udp port 53: DROP\n" +
				"  shop/front has no policy annotation: the default accepts only pods of namespace shop\n"},
		{name: "default policy deny", args: run("--default-policy", "deny", "shop/web", "shop/front"),
			stdout: "shop/web (10.0.0.2) -> shop/front (10.0.0.3) tcp port 80: DROP\n" +
				"  shop/front is isolated: it has no policy annotation and --default-policy is deny\n"},
		{name: "invalid annotation isolates", args: run("shop/web", "shop/bad"),
			stdout: "shop/web (10.0.0.2) -> shop/bad (10.0.0.4) tcp port 80: DROP\n" +
				`  shop/bad is isolated: invalid-policy: rule 1, offset 15 ("prots"): expected "ports", "label", "cidr", "to" or end of rule` + "\n"},
		{name: "a policy over the budget isolates, with the message of policy parse", args: run("--policy-budget", "2", "shop/front", "shop/big", "tcp:3"),
			stdout: "shop/front (10.0.0.3) -> shop/big (10.0.0.6) tcp port 3: DROP\n" +
				"  shop/big is isolated: over-budget: 3 entries in map pol_port, over the budget of 2 a policy may have in one map (--policy-budget): policy over budget\n"},
		{name: "within the budget", args: run("--policy-budget", "3", "shop/front", "shop/big", "tcp:3"),
			stdout: "shop/front (10.0.0.3) -> shop/big (10.0.0.6) tcp port 3: PASS\n" +
				"  rule 1 (allow tcp to ports 1,3,5) of shop/big allows it\n"},
		{name: "the node passes", args: run("--node-ip", "10.0.0.1", "node", "shop/bad"),
			stdout: "node (10.0.0.1) -> shop/bad (10.0.0.4) tcp port 80: PASS\n" +
				"  it comes from the node, which may always reach its pods (--allow-host)\n"},
		{name: "the node without --allow-host", args: run("--allow-host=false", "--node-ip", "10.0.0.1", "node", "shop/bad"),
			stdout: "node (10.0.0.1) -> shop/bad (10.0.0.4) tcp port 80: DROP\n" +
				`  shop/bad is isolated: invalid-policy: rule 1, offset 15 ("prots"): expected "ports", "label", "cidr", "to" or end of rule` + "\n"},
		{name: "open namespace", args: run("--open-namespaces", "shop", "other/x", "shop/web", "tcp:1"),
			stdout: "other/x (10.0.1.5) -> shop/web (10.0.0.2) tcp port 1: PASS\n" +
				"  shop/web is in open namespace shop: it accepts everything\n"},
		{name: "audit mode passes what the policy drops", args: run("--audit", "shop/front", "shop/web", "tcp:80"),
			stdout: "shop/front (10.0.0.3) -> shop/web (10.0.0.2) tcp port 80: PASS\n" +
				"  no rule of shop/web allows it; audit mode passes it, reported as verdict audit\n"},
		{name: "the namespace's audit annotation", args: []string{"explain", "-f", "testdata/explain-audit.yaml", "shop/front", "shop/web", "tcp:22"},
			stdout: "shop/front (10.0.0.3) -> shop/web (10.0.0.2) tcp port 22: PASS\n" +
				"  rule 2 (deny tcp to ports 22) of shop/web denies it (deny wins over allow); audit mode passes it, reported as verdict audit\n"},
		{name: "IPv6", args: run("-6", "shop/front", "shop/web", "icmpv6:128"),
			stdout: "shop/front (fd00::3) -> shop/web (fd00::2) icmpv6 type 128 code 0: DROP\n  no rule of shop/web allows it\n"},
		{name: "unknown pod", args: run("shop/front", "shop/nope"), code: 1,
			stderr: "podwall: no pod shop/nope in the file\n"},
		{name: "no address of the family", args: run("-6", "shop/front", "shop/bad"), code: 1,
			stderr: "podwall: pod shop/bad has no IPv6 address\n"},
		{name: "bad protocol", args: run("shop/front", "shop/web", "tcp"), code: 1,
			stderr: "podwall: protocol \"tcp\": want tcp:PORT with a port 0..65535\n"},
		{name: "icmp with IPv6", args: run("-6", "shop/front", "shop/web", "icmp"), code: 1,
			stderr: "podwall: protocol \"icmp\": want icmp with IPv4, icmpv6 with IPv6 (-6)\n"},
		{name: "bad source", args: run("nowhere", "shop/web"), code: 1,
			stderr: "podwall: source \"nowhere\" is neither NAMESPACE/NAME, an address nor \"node\"\n"},
	} {
		t.Run(tt.name, func(t *testing.T) { requireCLI(t, tt) })
	}
}

func TestExplainLiveFlags(t *testing.T) {
	for _, tt := range []cliTest{
		{name: "a file and the node's state", args: []string{"explain", "-f", "testdata/explain-pods.yaml", "--pods-file", "x", "shop/front", "shop/web"}, code: 1,
			stderr: "podwall: -f explains with the model only: --pods-file is for the node's kernel\n"},
		{name: "a file and a bpffs", args: []string{"explain", "-f", "testdata/explain-pods.yaml", "--bpffs", "/x", "shop/front", "shop/web"}, code: 1,
			stderr: "podwall: -f explains with the model only: --bpffs is for the node's kernel\n"},
		{name: "no pinned state", args: []string{"explain", "--pods-file", "testdata/explain-pods.yaml", "--bpffs", "/nonexistent", "shop/front", "shop/web"}, code: 1,
			stderr: "podwall: open the node's pinned state: load pinned map conntrack4: no such file or directory\n"},
		{name: "no kubeconfig", args: []string{"explain", "--kubeconfig", "/nonexistent", "shop/front", "shop/web"}, code: 1,
			stderr: "podwall: kubernetes client configuration (give --kubeconfig, or --pods-file for standalone mode): stat /nonexistent: no such file or directory\n"},
	} {
		t.Run(tt.name, func(t *testing.T) { requireCLI(t, tt) })
	}
}

func TestClusterPods(t *testing.T) {
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: map[string]string{"role": "frontend"}},
			Spec: corev1.PodSpec{NodeName: "node-1"}, Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "10.0.0.2"}}}},
	)
	snap, err := clusterPods(t.Context(), client)
	require.NoError(t, err)
	require.Equal(t, []string{"shop"}, snap.Namespaces)
	require.Len(t, snap.Pods, 1)
	require.Equal(t, "shop/web", snap.Pods[0].Namespace+"/"+snap.Pods[0].Name)
	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.0.0.2")}, snap.Pods[0].IPs)

	client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("forbidden")
	})
	_, err = clusterPods(t.Context(), client)
	require.ErrorContains(t, err, "read pods from the cluster: watch pods: ")
	require.ErrorContains(t, err, "forbidden")
}
