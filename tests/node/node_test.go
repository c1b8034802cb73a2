//go:build node

package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podwall/podwall/k8s"
	"github.com/podwall/podwall/tests/node/podapi"
	"github.com/podwall/podwall/tests/topo"
)

var (
	agentImage = flag.String("agent-image", "", "the agent image `make image` built, by its tag")
	agentTar   = flag.String("agent-image-tar", "", "the tarball of that image")
	cnis       = flag.String("cni", "ptp,bridge", "the CNIs to run the node with, comma-separated")
)

func TestMain(m *testing.M) { topo.Main(m) }

const (
	policyKey = "projectcalico.org/policy"
	passWait  = 2 * time.Second
	dropWait  = 500 * time.Millisecond
	// settle bounds how long a change made through the API takes to reach the kernel: the
	// agent's watch, its settle delay and an apply.
	settle = 20 * time.Second
	// outside names the host on the node's uplink as the source of a check.
	outside = "outside"
)

// TestNode installs the DaemonSet of deploy/ on a real one-node cluster, once per CNI, and
// takes real pods through what the SPEC promises, checking each step with traffic.
func TestNode(t *testing.T) {
	require.NotEmpty(t, *agentImage, "no agent image: run `make test-node`, which builds it (make image) and passes -agent-image and -agent-image-tar")
	images := append(BuildTestImages(t), *agentTar)
	for _, cni := range strings.Split(*cnis, ",") {
		t.Run(cni, func(t *testing.T) {
			c := &cluster{n: Start(t, Options{CNI: CNI(cni), Images: images}), ips: map[string]netip.Addr{}}
			c.scenarios(t)
		})
	}
}

type cluster struct {
	n   *Node
	mu  sync.Mutex
	ips map[string]netip.Addr // "namespace/name" of a pod -> its address
}

// pod is a test pod: the echo ports, a readiness probe on 8080 made by the kubelet (from the
// node, so a restrictive policy must not make it fail), and the policy, when not nil.
type pod struct {
	ns, name string
	labels   map[string]string
	policy   *string
	// gated pods list podwall.io/policy-enforced in their readiness gates.
	gated bool
}

func policy(s string) *string { return &s }

func (p pod) key() string { return p.ns + "/" + p.name }

func (c *cluster) scenarios(t *testing.T) {
	n := c.n
	c.installAgent(t, *agentImage)
	for _, ns := range []string{"shop", "other"} {
		n.Kubectl(t, "create", "namespace", ns)
		n.AwaitServiceAccount(t, ns)
	}
	db := pod{"shop", "db", map[string]string{"role": "db"}, policy("allow tcp from label role=backend"), false}
	pods := []pod{
		{"shop", "store", map[string]string{"role": "store"}, policy("allow from label role=backend; allow tcp to ports 2379,443"), false},
		{"shop", "api", map[string]string{"role": "backend"}, nil, false},
		{"shop", "web", map[string]string{"role": "frontend"}, nil, false},
		{"shop", "ports", map[string]string{"role": "ports"}, policy("allow tcp to ports 80,443; deny tcp to ports 443"), false},
		{"shop", "isolated", map[string]string{"role": "isolated"}, policy(" ; ;"), false},
		{"shop", "broken", map[string]string{"role": "broken"}, policy("allow tcp from prots 80"), false},
		{"other", "intruder", map[string]string{"role": "backend"}, nil, false},
		// kube-system is open: its annotations are ignored, this one would drop everything.
		{"kube-system", "dns", map[string]string{"k8s-app": "dns"}, policy("deny"), false},
	}
	// db first and alone, so it has the lowest address, which its re-creation takes again.
	c.create(t, db)
	c.awaitReady(t, db)
	for _, p := range pods {
		c.create(t, p)
	}
	c.awaitReady(t, pods...)
	c.awaitMetric(t, "podwall_endpoints", float64(len(pods)+1))

	t.Run("seed examples and defaults", func(t *testing.T) {
		c.expect(t,
			c.tcp("seed 1: a backend reaches db", "shop/api", "shop/db", 80, true),
			c.tcp("seed 1: a frontend does not", "shop/web", "shop/db", 80, false),
			c.udp("seed 1: tcp only", "shop/api", "shop/db", 80, false),
			c.tcp("seed 1: labels are namespaced", "other/intruder", "shop/db", 80, false),
			c.tcp("seed 1: the world has no labels", outside, "shop/db", 80, false),
			c.udp("seed 2: any protocol from a backend", "shop/api", "shop/store", 2379, true),
			c.tcp("seed 2: tcp to 443 from anyone", "shop/web", "shop/store", 443, true),
			c.tcp("seed 2: tcp to 2379 from anyone", "shop/web", "shop/store", 2379, true),
			c.tcp("seed 2: from the world too", outside, "shop/store", 443, true),
			c.tcp("seed 2: not tcp to 80", "shop/web", "shop/store", 80, false),
			c.udp("seed 2: not udp to 443", "shop/web", "shop/store", 443, false),
			c.tcp("default: same namespace", "shop/web", "shop/api", 80, true),
			c.tcp("default: not another namespace", "other/intruder", "shop/api", 80, false),
			c.tcp("default: not the world", outside, "shop/api", 80, false),
			c.tcp("deny by port: 80 allowed", "shop/web", "shop/ports", 80, true),
			c.tcp("deny by port: deny wins on 443", "shop/web", "shop/ports", 443, false),
			c.tcp("deny by port: no rule for 8080", "shop/web", "shop/ports", 8080, false),
			c.tcp("no rules isolate", "shop/web", "shop/isolated", 80, false),
			c.udp("no rules isolate, udp too", "shop/web", "shop/isolated", 80, false),
			c.tcp("an isolated pod's own connections are answered", "shop/isolated", "shop/web", 80, true),
			c.tcp("an invalid annotation isolates", "shop/web", "shop/broken", 80, false),
			c.tcp("kube-system is open to other namespaces", "other/intruder", "kube-system/dns", 80, true),
			c.udp("kube-system is open to the world", outside, "kube-system/dns", 80, true),
		)
		c.awaitEvent(t, "shop", "broken", "InvalidPolicy", `rule 1, offset 15 ("prots")`)
		c.requireStillReady(t, append(pods, db)...)
	})

	t.Run("readiness gated on enforcement", func(t *testing.T) {
		gated := pod{"shop", "gated", map[string]string{"role": "gated"}, policy("allow tcp from prots 80"), true}
		c.create(t, gated)
		cond := c.awaitCondition(t, gated, corev1.ConditionFalse)
		require.Equal(t, "InvalidPolicy", cond.Reason)
		require.Contains(t, cond.Message, `rule 1, offset 15 ("prots")`)
		require.False(t, c.isReady(t, gated), "not Ready while its policy is not enforced")
		show := func(when string) {
			// For the README: what an operator sees of the gate.
			t.Logf("%s:\n$ kubectl -n shop get pod gated -o wide\n%s$ kubectl -n shop get pod gated -o custom-columns=...\n%s", when,
				n.Kubectl(t, "-n", "shop", "get", "pod", "gated", "-o", "wide"),
				n.Kubectl(t, "-n", "shop", "get", "pod", "gated", "-o", `custom-columns=READY:.status.conditions[?(@.type=="Ready")].status,`+
					`ENFORCED:.status.conditions[?(@.type=="podwall.io/policy-enforced")].status,`+
					`REASON:.status.conditions[?(@.type=="podwall.io/policy-enforced")].reason,`+
					`MESSAGE:.status.conditions[?(@.type=="podwall.io/policy-enforced")].message`))
		}
		show("an invalid annotation")
		n.Kubectl(t, "-n", "shop", "annotate", "pod", "gated", policyKey+"=allow tcp from label role=frontend", "--overwrite")
		cond = c.awaitCondition(t, gated, corev1.ConditionTrue)
		require.Equal(t, "Enforced", cond.Reason)
		require.Contains(t, cond.Message, "generation")
		c.awaitReady(t, gated)
		show("the annotation fixed")
		require.Equal(t, corev1.ConditionTrue, c.awaitCondition(t, db, corev1.ConditionTrue).Status, "ungated pods get it too")
	})

	t.Run("services", func(t *testing.T) {
		c.services(t)
	})

	t.Run("relabel and re-annotate", func(t *testing.T) {
		n.Kubectl(t, "-n", "shop", "label", "pod", "web", "role=backend", "--overwrite")
		c.eventually(t,
			c.tcp("a frontend relabelled backend reaches db", "shop/web", "shop/db", 80, true))
		n.Kubectl(t, "-n", "shop", "label", "pod", "web", "role=frontend", "--overwrite")
		c.eventually(t,
			c.tcp("and no more once labelled back", "shop/web", "shop/db", 80, false))
		n.Kubectl(t, "-n", "shop", "annotate", "pod", "db", policyKey+"=allow tcp from label role=frontend", "--overwrite")
		c.eventually(t,
			c.tcp("re-annotated: frontends reach db", "shop/web", "shop/db", 80, true),
			c.tcp("re-annotated: backends no more", "shop/api", "shop/db", 80, false))
		n.Kubectl(t, "-n", "shop", "annotate", "pod", "broken", policyKey+"=allow tcp from label role=frontend", "--overwrite")
		c.eventually(t,
			c.tcp("a fixed annotation opens what it allows", "shop/web", "shop/broken", 80, true),
			c.tcp("and nothing else", "shop/api", "shop/broken", 80, false))
	})

	t.Run("deleted and re-created", func(t *testing.T) {
		old := c.ip(t, "shop/db")
		n.Kubectl(t, "-n", "shop", "delete", "pod", "db", "--wait=true")
		// host-local hands out addresses round-robin; forgetting the last one it gave makes it
		// give the lowest free one, the address db had.
		last := filepath.Join(n.Dir, "cni", "ipam", "podwall-"+string(n.CNI), "last_reserved_ip.0")
		require.NoError(t, os.Remove(last))
		again := pod{"shop", "db", map[string]string{"role": "db"}, policy("allow udp from label role=frontend"), false}
		c.create(t, again)
		c.awaitReady(t, again)
		require.Equal(t, old, c.ip(t, "shop/db"), "the new db has the old one's address")
		// On a bridge, the other pods still hold the old pod's MAC for the address (for about
		// half a minute, with or without podwall); the new pod's own connections to them
		// update it, so the checks below judge the policy, not a stale neighbour entry.
		c.eventually(t,
			c.tcp("the new pod reaches its namespace", "shop/db", "shop/web", 80, true),
			c.tcp("the new pod reaches its namespace", "shop/db", "shop/api", 80, true))
		c.eventually(t,
			c.udp("the new pod's own policy", "shop/web", "shop/db", 80, true),
			c.tcp("nothing of the old pod's policy", "shop/web", "shop/db", 80, false),
			c.tcp("nothing of the first policy", "shop/api", "shop/db", 80, false))
	})

	t.Run("the agent runs with the least", func(t *testing.T) {
		status := agentStatus(t)
		// CAP_NET_ADMIN is bit 12, CAP_PERFMON 38, CAP_BPF 39; nothing else.
		require.Equal(t, fmt.Sprintf("%016x", 1<<12|1<<38|1<<39), status["CapEff"], "effective capabilities")
		require.Equal(t, "2", status["Seccomp"], "the runtime's default seccomp filter")
		require.Equal(t, "1", status["NoNewPrivs"])
	})

	t.Run("logs and metrics", func(t *testing.T) {
		logs := n.Kubectl(t, "-n", "kube-system", "logs", "ds/podwall")
		lines := 0
		sc := bufio.NewScanner(strings.NewReader(logs))
		for sc.Scan() {
			var entry map[string]any
			require.NoError(t, json.Unmarshal(sc.Bytes(), &entry), "a log line that is not JSON: %s", sc.Text())
			require.Contains(t, entry, "level")
			require.Contains(t, entry, "msg")
			lines++
		}
		require.Positive(t, lines)
		body := c.metrics(t)
		require.Contains(t, body, `podwall_verdicts_total{reason="allow-rule"}`)
		require.Contains(t, body, `podwall_verdicts_total{reason="no-rule"}`)
		require.Contains(t, body, "podwall_invalid_policies 0")
		// The node's uplink, which holds the default route, is a veth (the node is a network
		// namespace, as a kind node is a container): --xdp-devices auto leaves it to tc.
		require.Contains(t, logs, "uplink skipped: XDP on veth")
		require.NotContains(t, n.Run("ip", "link", "show", "eth0"), "xdp", "no XDP on a veth uplink")
		t.Logf("agent memory: %s", c.agentMemory(t))
	})

	t.Run("agent deleted and rolled", func(t *testing.T) {
		c.agentGap(t)
	})
}

// installAgent applies deploy/ as a user would, with the image set by kubectl, and waits for
// the DaemonSet to be ready through its own probes.
func (c *cluster) installAgent(t *testing.T, image string) {
	n := c.n
	n.Kubectl(t, "apply", "-f", "../../deploy/rbac.yaml")
	ds := n.Kubectl(t, "set", "image", "--local", "-f", "../../deploy/daemonset.yaml", "agent="+image, "-o", "yaml")
	n.KubectlIn(t, ds, "apply", "-f", "-")
	n.Kubectl(t, "-n", "kube-system", "rollout", "status", "ds/podwall", "--timeout=3m")
}

func (c *cluster) create(t *testing.T, p pod) {
	var annotations map[string]string
	if p.policy != nil {
		annotations = map[string]string{policyKey: *p.policy}
	}
	grace := int64(1)
	var gates []corev1.PodReadinessGate
	if p.gated {
		gates = []corev1.PodReadinessGate{{ConditionType: k8s.ConditionEnforced}}
	}
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name, Labels: p.labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			ReadinessGates:                gates,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name:            "echo",
				Image:           TestPodImage,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{"-ports", "80,443,2379,8080"},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
					PeriodSeconds: 1, FailureThreshold: 1,
				},
			}},
		},
	}
	_, err := c.n.Client.CoreV1().Pods(p.ns).Create(context.Background(), obj, metav1.CreateOptions{})
	require.NoError(t, err, "create pod %s", p.key())
}

// awaitReady waits until the pods are Ready and records their addresses.
func (c *cluster) awaitReady(t *testing.T, pods ...pod) {
	t.Helper()
	for _, p := range pods {
		var last string
		ok := poll(2*time.Minute, func() bool {
			got, err := c.n.Client.CoreV1().Pods(p.ns).Get(context.Background(), p.name, metav1.GetOptions{})
			if err != nil {
				last = err.Error()
				return false
			}
			last = fmt.Sprintf("phase %s, conditions %v", got.Status.Phase, got.Status.Conditions)
			for _, cond := range got.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && got.Status.PodIP != "" {
					c.mu.Lock()
					c.ips[p.key()] = netip.MustParseAddr(got.Status.PodIP)
					c.mu.Unlock()
					return true
				}
			}
			return false
		})
		require.True(t, ok, "pod %s not ready: %s", p.key(), last)
	}
}

// requireStillReady requires the pods to have stayed Ready through the last probeWindow: the
// kubelet probes each every second from the node, with one failure enough to make it unready,
// so a policy that dropped the kubelet's probes would show as a recent transition.
func (c *cluster) requireStillReady(t *testing.T, pods ...pod) {
	t.Helper()
	const probeWindow = 3 * time.Second
	time.Sleep(probeWindow)
	for _, p := range pods {
		got, err := c.n.Client.CoreV1().Pods(p.ns).Get(context.Background(), p.name, metav1.GetOptions{})
		require.NoError(t, err)
		ready := false
		for _, cond := range got.Status.Conditions {
			if cond.Type == corev1.PodReady {
				ready = cond.Status == corev1.ConditionTrue && time.Since(cond.LastTransitionTime.Time) > probeWindow
			}
		}
		require.True(t, ready, "pod %s did not stay ready: %v", p.key(), got.Status.Conditions)
	}
}

// awaitCondition waits until the pod's podwall.io/policy-enforced condition has the status.
func (c *cluster) awaitCondition(t *testing.T, p pod, status corev1.ConditionStatus) corev1.PodCondition {
	t.Helper()
	var last corev1.PodCondition
	ok := poll(settle, func() bool {
		got, err := c.n.Client.CoreV1().Pods(p.ns).Get(context.Background(), p.name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == k8s.ConditionEnforced {
				last = cond
				return cond.Status == status
			}
		}
		return false
	})
	require.True(t, ok, "pod %s: condition %s not %s (last %+v)", p.key(), k8s.ConditionEnforced, status, last)
	return last
}

func (c *cluster) isReady(t *testing.T, p pod) bool {
	got, err := c.n.Client.CoreV1().Pods(p.ns).Get(context.Background(), p.name, metav1.GetOptions{})
	require.NoError(t, err)
	for _, cond := range got.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (c *cluster) ip(t *testing.T, key string) netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	ip, ok := c.ips[key]
	require.True(t, ok, "no address for %s", key)
	return ip
}

// check is one exchange from a pod (or the outside host) to an address, and whether the
// policy lets it through.
type check struct {
	name string
	from string
	udp  bool
	to   netip.AddrPort
	pass bool
}

func (c *cluster) tcp(name, from, to string, port uint16, pass bool) check {
	return check{name: name, from: from, to: netip.AddrPortFrom(c.ips[to], port), pass: pass}
}

func (c *cluster) udp(name, from, to string, port uint16, pass bool) check {
	ck := c.tcp(name, from, to, port, pass)
	ck.udp = true
	return ck
}

// outcome makes the exchange: a test pod makes it on request; the outside host makes it
// itself.
func (c *cluster) outcome(ck check) string {
	wait := dropWait
	if ck.pass {
		wait = passWait
	}
	if ck.from == outside {
		send := topo.TCPEcho
		if ck.udp {
			send = topo.UDPEcho
		}
		err := send(c.n.Outside, ck.to, topo.Timeout(wait))
		switch {
		case err == nil:
			return podapi.Echo
		case errors.Is(err, topo.ErrNoAnswer):
			return podapi.Timeout
		default:
			return err.Error()
		}
	}
	proto := "tcp"
	if ck.udp {
		proto = "udp"
	}
	c.mu.Lock()
	from := c.ips[ck.from]
	c.mu.Unlock()
	q := url.Values{"proto": {proto}, "to": {ck.to.String()}, "wait": {wait.String()}}
	u := fmt.Sprintf("http://%s/probe?%s", netip.AddrPortFrom(from, podapi.ControlPort), q.Encode())
	var got podapi.Probe
	if err := c.getJSON(u, &got); err != nil {
		return err.Error()
	}
	return got.Outcome
}

func (c *cluster) getJSON(u string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.n.HTTP().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// failures makes every exchange at once and returns those that went otherwise.
func (c *cluster) failures(checks []check) []string {
	var (
		mu  sync.Mutex
		bad []string
		wg  sync.WaitGroup
	)
	for _, ck := range checks {
		wg.Go(func() {
			want := podapi.Timeout
			if ck.pass {
				want = podapi.Echo
			}
			if got := c.outcome(ck); got != want {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%s (%s -> %s, udp %v): want %s, got %s", ck.name, ck.from, ck.to, ck.udp, want, got))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return bad
}

// expect requires every check to hold now.
func (c *cluster) expect(t *testing.T, checks ...check) {
	t.Helper()
	bad := c.failures(checks)
	require.Empty(t, bad, "%d of %d checks failed", len(bad), len(checks))
}

// eventually requires the checks to hold together within settle, as a change made through
// the API reaches the kernel.
func (c *cluster) eventually(t *testing.T, checks ...check) {
	t.Helper()
	var bad []string
	ok := poll(settle, func() bool {
		bad = c.failures(checks)
		return len(bad) == 0
	})
	if !ok {
		c.diagnose(t)
	}
	require.True(t, ok, "after %v: %v", settle, bad)
}

// diagnose logs the node's view of its pods' addresses and podwall's attachments.
func (c *cluster) diagnose(t *testing.T) {
	t.Logf("pods: %v", c.ips)
	for _, argv := range [][]string{
		{"ip", "-br", "link"}, {"ip", "neigh"}, {"ip", "route"}, {"bridge", "fdb", "show", "br", BridgeName}, {"bpftool", "net"},
	} {
		t.Logf("%s:\n%s", strings.Join(argv, " "), c.n.Run(argv...))
	}
	tasks, err := c.n.ctr("tasks", "ls")
	t.Logf("tasks (%v):\n%s", err, tasks)
	for _, line := range strings.Split(tasks, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[2] == "RUNNING" {
			t.Logf("neighbours of %s's netns: %s", f[0], c.n.Run("nsenter", "--net=/proc/"+f[1]+"/ns/net", "ip", "neigh"))
		}
	}
	logs, err := c.n.KubectlErr("-n", "kube-system", "logs", "ds/podwall", "--tail=30")
	t.Logf("agent (%v):\n%s", err, logs)
}

func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// metrics scrapes the agent's /metrics on the node's address, as Prometheus would.
func (c *cluster) metrics(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := fmt.Sprintf("http://%s/metrics", netip.AddrPortFrom(NodeIP, 9402))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	require.NoError(t, err)
	resp, err := c.n.HTTP().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return b.String()
}

func metricValue(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

func (c *cluster) awaitMetric(t *testing.T, series string, want float64) {
	t.Helper()
	var got float64
	ok := poll(settle, func() bool {
		var found bool
		got, found = metricValue(c.metrics(t), series)
		return found && got == want
	})
	require.True(t, ok, "%s: want %v, got %v", series, want, got)
}

func (c *cluster) awaitEvent(t *testing.T, ns, name, reason, message string) {
	t.Helper()
	var seen []string
	ok := poll(settle, func() bool {
		evs, err := c.n.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + name,
		})
		if err != nil {
			return false
		}
		seen = seen[:0]
		for _, e := range evs.Items {
			seen = append(seen, e.Reason+": "+e.Message)
			if e.Reason == reason && e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, message) {
				return true
			}
		}
		return false
	})
	require.True(t, ok, "no %s event on %s/%s with %q; events: %v", reason, ns, name, message, seen)
}

// agentStatus is /proc/PID/status of the agent's process, found by its command line.
func agentStatus(t *testing.T) map[string]string {
	var pids []int
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && string(cmdline) == "/podwall\x00agent\x00" {
			pid, _ := strconv.Atoi(e.Name())
			pids = append(pids, pid)
		}
	}
	require.Len(t, pids, 1, "one agent process")
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pids[0]))
	require.NoError(t, err)
	status := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			status[k] = strings.TrimSpace(v)
		}
	}
	return status
}
