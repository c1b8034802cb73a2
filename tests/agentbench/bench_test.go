package agentbench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/podwall/podwall/agent/netif"
	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/kapi"
	"github.com/podwall/podwall/tests/pinned"
	"github.com/podwall/podwall/tests/topo"
)

func TestMain(m *testing.M) { topo.Main(m) }

// The cluster of the benchmark, but for its number of pods (-sizes).
const (
	localPods  = 100 // on nodeName, each with a pod namespace of its own
	podsByNode = 100 // the other pods, spread over fake nodes
	namespaces = 50
	apps       = 40
	updates    = 1_000
	// relabels is how many remote pods are relabelled, one after the other.
	relabels = 300
	nodeName = "node-1"
	// writers is how many API writes are in flight while the cluster is populated.
	writers = 16
)

var tiers = []string{"frontend", "backend", "db"}

// Bounds of each wait, far above what is measured.
const (
	readyWait  = 3 * time.Minute
	changeWait = 10 * time.Second
	apiTimeout = 30 * time.Second
	// pollEvery is the period of the poll of the pinned map: the resolution of a latency.
	pollEvery = 250 * time.Microsecond
)

// podSpec is one pod of the benchmark's cluster.
type podSpec struct {
	ns, name    string
	labels      map[string]string
	annotations map[string]string
	node        string
	ips         []netip.Addr
	tp          *topo.Pod // local pods only
}

// cluster builds the benchmark's pods: the first localPods on this node with the addresses of
// the topology's pods, the rest on fake nodes with addresses of their own; dual-stack, in
// namespaces ns-00.., labelled with an app, a tier and a template hash; two in three with a
// policy annotation.
func cluster(local []*topo.Pod, total int) []podSpec {
	pods := make([]podSpec, total)
	for i := range pods {
		ns := fmt.Sprintf("ns-%02d", i%namespaces)
		app := fmt.Sprintf("app-%02d", (i/namespaces)%apps)
		p := podSpec{
			ns:   ns,
			name: fmt.Sprintf("%s-%05d", app, i),
			labels: map[string]string{
				"app": app, "tier": tiers[i%len(tiers)],
				"pod-template-hash": fmt.Sprintf("%08x", (i/namespaces)%apps*2654435761%(1<<32)),
			},
		}
		if i < localPods {
			p.node, p.tp = nodeName, local[i]
			p.ips = []netip.Addr{p.tp.IPv4, p.tp.IPv6}
		} else {
			k := i - localPods
			p.node = fmt.Sprintf("node-%03d", 2+k/podsByNode)
			p.ips = []netip.Addr{
				netip.AddrFrom4([4]byte{10, byte(128 + i>>16), byte(i >> 8), byte(i)}),
				netip.AddrFrom16([16]byte{0: 0xfd, 2: 0x01, 3: 0x28, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}),
			}
		}
		if i%3 != 2 || i < localPods {
			p.annotations = map[string]string{policy.AnnotationKey: initialPolicy(i)}
		}
		pods[i] = p
	}
	return pods
}

func initialPolicy(i int) string {
	return fmt.Sprintf("allow tcp from label tier=frontend to ports 8080,8443; allow udp from label app=app-%02d to ports 53; "+
		"allow icmp type 8; deny from cidr 10.200.%d.0/24", i%apps, i%256)
}

// updatedPolicy is the annotation of update u: a new port each time, so a new policy.
func updatedPolicy(u int) string {
	return fmt.Sprintf("allow tcp from label tier=frontend to ports %d; allow udp from label app=app-%02d to ports 53; "+
		"allow icmp type 8", 10_000+u, u%apps)
}

// apiPod is the pod as created: a container as a Deployment's pods have, which the agent's
// transform drops.
func apiPod(p podSpec) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name, Labels: p.labels, Annotations: p.annotations},
		Spec: corev1.PodSpec{
			NodeName: p.node,
			Containers: []corev1.Container{{
				Name:  "main",
				Image: "registry.example/" + p.labels["app"] + ":v1.2.3",
				Args:  []string{"--listen=:8080", "--log-level=info"},
				Env: []corev1.EnvVar{
					{Name: "APP", Value: p.labels["app"]},
					{Name: "TIER", Value: p.labels["tier"]},
				},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("100m"),
					corev1.ResourceMemory: resource.MustParse("128Mi"),
				}},
			}},
		},
	}
}

// populate creates the namespaces and pods and gives every pod its addresses, as the kubelets
// would, with writers requests in flight.
func populate(ctx context.Context, client kubernetes.Interface, pods []podSpec) error {
	for i := range namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns-%02d", i)}}
		if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create namespace %s: %w", ns.Name, err)
		}
	}
	work := make(chan podSpec)
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for p := range work {
				if err := createPod(ctx, client, p); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for _, p := range pods {
		select {
		case work <- p:
		case err = <-errs:
			break feed
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	return errors.Join(err, <-errs)
}

func createPod(ctx context.Context, client kubernetes.Interface, p podSpec) error {
	pods := client.CoreV1().Pods(p.ns)
	if _, err := pods.Create(ctx, apiPod(p), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create pod %s/%s: %w", p.ns, p.name, err)
	}
	var ips []corev1.PodIP
	for _, a := range p.ips {
		ips = append(ips, corev1.PodIP{IP: a.String()})
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{
		"phase": corev1.PodRunning, "podIP": p.ips[0].String(), "podIPs": ips,
	}})
	if err != nil {
		return fmt.Errorf("encode status of %s/%s: %w", p.ns, p.name, err)
	}
	if _, err := pods.Patch(ctx, p.name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("set addresses of %s/%s: %w", p.ns, p.name, err)
	}
	return nil
}

// agentProcess is the podwall binary watching the API and attaching in the node namespace.
type agentProcess struct {
	cmd     *exec.Cmd
	out     *bytes.Buffer
	exited  chan error
	stopped bool
}

// startAgent starts the agent and returns once its ready file is there, with the time that
// took. It stays in the benchmark's network namespace, where kube-apiserver listens on
// loopback, and attaches in the node namespace (--netns).
func startAgent(b *testing.B, bin string, args ...string) (*agentProcess, time.Duration) {
	b.Helper()
	ready := filepath.Join(b.TempDir(), "ready")
	p := &agentProcess{out: &bytes.Buffer{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(bin, append([]string{"agent", "--node-name", nodeName, "--ready-file", ready,
		"--log-format", "console"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	require.NoError(b, p.cmd.Start())
	go func() { p.exited <- p.cmd.Wait() }()
	b.Cleanup(func() {
		if !p.stopped {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	for {
		if _, err := os.Stat(ready); err == nil {
			return p, time.Since(start)
		}
		select {
		case err := <-p.exited:
			p.stopped = true
			b.Fatalf("agent exited (%v) before it was ready:\n%s", err, p.out)
		default:
		}
		if time.Since(start) > readyWait {
			b.Fatalf("agent not ready after %s:\n%s", readyWait, p.out)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (p *agentProcess) terminate(b *testing.B) {
	b.Helper()
	require.NoError(b, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.exited:
		p.stopped = true
		require.NoError(b, err, "agent exit; output:\n%s", p.out)
	case <-time.After(30 * time.Second):
		b.Fatalf("agent did not exit on SIGTERM:\n%s", p.out)
	}
}

// memory is what /proc says of the agent's resident memory, in bytes: now (VmRSS) and at
// its peak (VmHWM).
func (p *agentProcess) memory(b *testing.B) (rss, hwm int64) {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	require.NoError(b, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		require.NoError(b, err, "parse %s", sc.Text())
		if key == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	require.NoError(b, sc.Err())
	require.Positive(b, rss)
	require.Positive(b, hwm)
	return rss, hwm
}

// cpuTime is what /proc says of the agent's CPU time so far, user and system.
func (p *agentProcess) cpuTime(b *testing.B) time.Duration {
	b.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	require.NoError(b, err)
	// The command name, in parentheses, may hold spaces: the fields start after it.
	_, rest, ok := strings.Cut(string(stat), ") ")
	require.True(b, ok, "parse %s", stat)
	f := strings.Fields(rest)
	// utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name, in clock
	// ticks of USER_HZ, which is 100 on Linux whatever the kernel's HZ.
	utime, err := strconv.ParseInt(f[11], 10, 64)
	require.NoError(b, err)
	stime, err := strconv.ParseInt(f[12], 10, 64)
	require.NoError(b, err)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// Series of the agent's /metrics the benchmark reads.
const (
	applySum   = "podwall_policy_apply_seconds_sum"
	applyCount = "podwall_policy_apply_seconds_count"
	gcCount    = "go_gc_duration_seconds_count"
)

// scrape reads the agent's metrics: each series without labels, by name.
func scrape(b *testing.B, addr string) map[string]float64 {
	b.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(b, err)
	defer resp.Body.Close()
	require.Equal(b, http.StatusOK, resp.StatusCode)
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		require.NoError(b, err, "parse %q", sc.Text())
		out[name] = v
	}
	require.NoError(b, sc.Err())
	for _, name := range []string{applySum, applyCount, gcCount} {
		require.Contains(b, out, name)
	}
	return out
}

// loadAverage is the first field of /proc/loadavg.
func loadAverage(b *testing.B) string {
	b.Helper()
	data, err := os.ReadFile("/proc/loadavg")
	require.NoError(b, err)
	return strings.Fields(string(data))[0]
}

func freeAddr(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	defer l.Close()
	return l.Addr().String()
}

// BenchmarkAgent populates the API, starts the agent, and takes the measurements of issues 4
// and 15, once for each cluster size of -sizes. It runs once whatever b.N: use -benchtime 1x.
func BenchmarkAgent(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "podwall")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/podwall/podwall/cmd/podwall").CombinedOutput()
	require.NoError(b, err, "build podwall: %s", out)
	var results []*result
	for _, total := range sizes(b) {
		b.Run(fmt.Sprintf("pods=%d", total), func(b *testing.B) {
			r := runAgent(b, bin, total)
			r.report(b)
			results = append(results, r)
		})
	}
	if *benchmarksMD != "" && len(results) == len(sizes(b)) {
		require.NoError(b, section.Replace(*benchmarksMD, markdown(results)))
	}
}

func runAgent(b *testing.B, bin string, total int) *result {
	api := kapi.Start(b)
	tp := topo.New(b, topo.Routed)
	bpffs := topo.BPFFS(b)
	setup := time.Now()
	local := make([]*topo.Pod, localPods)
	for i := range local {
		local[i] = tp.AddPod(fmt.Sprintf("p%d", i))
	}
	b.Logf("%d pod namespaces in %v", localPods, time.Since(setup))
	pods := cluster(local, total)
	setup = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	require.NoError(b, populate(ctx, api.Client, pods))
	b.Logf("%d pods in the API in %v", len(pods), time.Since(setup))

	r := &result{pods: total}
	r.when = time.Now()
	metrics := freeAddr(b)
	agentArgs := []string{"--kubeconfig", api.Kubeconfig, "--netns", tp.Node.Path, "--bpffs", bpffs}
	watched, lists := watchBytes(b, api), watchLists(b, api)
	// ns/op covers the first start and the updates; the figures are the reported metrics.
	b.ResetTimer()
	agent, resync := startAgent(b, bin, append(agentArgs, "--metrics-addr", metrics)...)
	r.resyncCold = resync
	r.listBytes = watchBytes(b, api) - watched
	r.streamed = watchLists(b, api) > lists
	r.rssReady, r.hwmReady = agent.memory(b)
	r.podJSON, r.podProtobuf = encodedSizes(b, pods)

	m, err := loader.OpenMaps(bpffs)
	require.NoError(b, err)
	defer m.Close()
	before, cpuBefore := scrape(b, metrics), agent.cpuTime(b)
	r.loadBefore = loadAverage(b)
	r.latency, r.write = measureUpdates(b, api.Client, m, pods[:localPods])
	r.loadAfter = loadAverage(b)
	after, cpuAfter := scrape(b, metrics), agent.cpuTime(b)
	r.reconciles = int(after[applyCount] - before[applyCount])
	r.reconcileMean = time.Duration((after[applySum] - before[applySum]) / float64(r.reconciles) * float64(time.Second))
	r.cpuPerUpdate = (cpuAfter - cpuBefore) / updates
	r.gcs = int(after[gcCount] - before[gcCount])
	r.rssUpdated, _ = agent.memory(b)

	watched, events := watchBytes(b, api), watchEvents(b, api)
	cpuBefore = agent.cpuTime(b)
	r.relabel = measureRelabels(b, api.Client, m, pods[localPods:])
	r.cpuPerRelabel = (agent.cpuTime(b) - cpuBefore) / relabels
	r.eventBytes = float64(watchBytes(b, api)-watched) / float64(watchEvents(b, api)-events)
	r.rssAfter, r.hwmAfter = agent.memory(b)
	b.StopTimer()

	// Correct as well as fast: the maps hold what the compiler makes of the whole cluster.
	for u := range updates {
		pods[u%localPods].annotations = map[string]string{policy.AnnotationKey: updatedPolicy(u)}
	}
	requireState(b, bpffs, tp, pods)

	agent.terminate(b)
	agent, r.resyncWarm = startAgent(b, bin, agentArgs...)
	r.rssRestarted, _ = agent.memory(b)
	requireState(b, bpffs, tp, pods)
	agent.terminate(b)
	return r
}

// measureRelabels relabels remote pods, one after the other, each to a tier a local policy
// names ("allow tcp from label tier=frontend") and then away from it, and times each change
// from the API write to the pod's IPv4 address holding another identity in the pinned
// ipcache. The specs follow, for requireState.
func measureRelabels(b *testing.B, client kubernetes.Interface, m *bpf.PodwallMaps, remote []podSpec) []time.Duration {
	b.Helper()
	var latency []time.Duration
	for u := range relabels {
		p := &remote[(u/2*7919)%len(remote)]
		tier := "frontend"
		if p.labels["tier"] == "frontend" {
			tier = "backend"
		}
		p.labels = maps.Clone(p.labels)
		p.labels["tier"] = tier
		key := compiler.AddrKey(p.ips[0])
		var before uint32
		require.NoError(b, m.Ipcache.Lookup(key, &before), "ipcache entry of %s/%s", p.ns, p.name)
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{"tier": tier}}})
		require.NoError(b, err)
		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		start := time.Now()
		_, err = client.CoreV1().Pods(p.ns).Patch(ctx, p.name, types.MergePatchType, patch, metav1.PatchOptions{})
		cancel()
		require.NoError(b, err, "relabel %d", u)
		for {
			var cur uint32
			require.NoError(b, m.Ipcache.Lookup(key, &cur))
			if cur != before {
				break
			}
			if time.Since(start) > changeWait {
				b.Fatalf("relabel %d of %s/%s: ipcache unchanged after %s", u, p.ns, p.name, changeWait)
			}
			time.Sleep(pollEvery)
		}
		latency = append(latency, time.Since(start))
	}
	return latency
}

// watchBytes is what the API server sent in watch events of pods, to every watcher, as it
// counts them (apiserver_watch_events_sizes): the agent is the only one.
func watchBytes(b *testing.B, api *kapi.Cluster) int64 {
	return int64(podsMetric(b, api, "apiserver_watch_events_sizes_sum"))
}

// watchEvents is how many watch events of pods the API server sent.
func watchEvents(b *testing.B, api *kapi.Cluster) int64 {
	return int64(podsMetric(b, api, "apiserver_watch_events_sizes_count"))
}

// watchLists is how many lists of pods the API server streamed as watch events (the
// informers' watch-list, rather than a paged LIST).
func watchLists(b *testing.B, api *kapi.Cluster) int {
	return int(podsMetric(b, api, "apiserver_watch_list_duration_seconds_count"))
}

// podsMetric is the API server's series name of resource pods; 0 when it has none yet.
func podsMetric(b *testing.B, api *kapi.Cluster, name string) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	raw, err := api.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	require.NoError(b, err)
	for line := range strings.SplitSeq(string(raw), "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, `resource="pods"`) {
			_, value, _ := strings.Cut(line, "} ")
			v, err := strconv.ParseFloat(value, 64)
			require.NoError(b, err, "parse %q", line)
			return v
		}
	}
	return 0
}

// encodedSizes are the mean sizes of the benchmark's pods, as the API holds them, in JSON
// and in protobuf.
func encodedSizes(b *testing.B, pods []podSpec) (jsonSize, protoSize float64) {
	b.Helper()
	jsonS := k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, k8sjson.SerializerOptions{})
	protoS := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	n := min(len(pods), 1000)
	var j, p int
	for _, spec := range pods[:n] {
		pod := apiPod(spec)
		pod.APIVersion, pod.Kind = "v1", "Pod"
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: spec.ips[0].String()}
		for _, a := range spec.ips {
			pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: a.String()})
		}
		var jb, pb bytes.Buffer
		require.NoError(b, jsonS.Encode(pod, &jb))
		require.NoError(b, protoS.Encode(pod, &pb))
		j, p = j+jb.Len(), p+pb.Len()
	}
	return float64(j) / float64(n), float64(p) / float64(n)
}

// measureUpdates changes the annotation of a local pod, one pod after the other, and times
// each change from the API write to the new policy id in the pod's endpoint record. It also
// returns how long each API write itself took.
func measureUpdates(b *testing.B, client kubernetes.Interface, m *bpf.PodwallMaps, local []podSpec) (latency, write []time.Duration) {
	b.Helper()
	for u := range updates {
		p := local[u%len(local)]
		ifindex := uint32(p.tp.HostIfindex)
		var before bpf.PodwallEndpointEntry
		require.NoError(b, m.Endpoints.Lookup(ifindex, &before), "endpoint of %s/%s", p.ns, p.name)
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
			"annotations": map[string]string{policy.AnnotationKey: updatedPolicy(u)},
		}})
		require.NoError(b, err)

		ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
		start := time.Now()
		_, err = client.CoreV1().Pods(p.ns).Patch(ctx, p.name, types.MergePatchType, patch, metav1.PatchOptions{})
		wrote := time.Since(start)
		cancel()
		require.NoError(b, err, "update %d", u)
		for {
			var cur bpf.PodwallEndpointEntry
			require.NoError(b, m.Endpoints.Lookup(ifindex, &cur))
			if cur.Ep.Policy != before.Ep.Policy {
				require.Equal(b, uint8(bpf.ModeEnforce), cur.Ep.Mode)
				break
			}
			if time.Since(start) > changeWait {
				b.Fatalf("update %d of %s/%s: endpoint unchanged after %s", u, p.ns, p.name, changeWait)
			}
			time.Sleep(pollEvery)
		}
		latency = append(latency, time.Since(start))
		write = append(write, wrote)
	}
	return latency, write
}

// requireState requires that the maps pinned under bpffs hold what compiler.Compile makes of
// the pods.
func requireState(b *testing.B, bpffs string, tp *topo.Topology, pods []podSpec) {
	b.Helper()
	in := compiler.Input{Options: compiler.Options{
		DefaultPolicy: compiler.DefaultNamespace, OpenNamespaces: []string{"kube-system"}, AllowHost: true, LegacyKey: true,
	}}
	for _, p := range pods {
		in.Pods = append(in.Pods, compiler.Pod{Namespace: p.ns, Name: p.name, Labels: p.labels, Annotations: p.annotations, IPs: p.ips})
		if p.tp != nil {
			in.Endpoints = append(in.Endpoints, compiler.Endpoint{Ifindex: uint32(p.tp.HostIfindex), Namespace: p.ns, Name: p.name})
		}
	}
	f, err := netif.Open(tp.Node.Path)
	require.NoError(b, err)
	defer f.Close()
	in.HostIPs, err = f.HostAddrs()
	require.NoError(b, err)
	want := compiler.Compile(in)
	require.Empty(b, want.Problems)
	pinned.Await(b, bpffs, want, changeWait)
}

// result is what one run measured.
type result struct {
	pods                   int
	when                   time.Time
	resyncCold, resyncWarm time.Duration
	latency, write         []time.Duration
	rssReady, hwmReady     int64
	rssUpdated             int64
	rssAfter, hwmAfter     int64
	rssRestarted           int64
	// During the updates: the agent's reconciles (snapshot, compile, apply), their mean
	// time as the agent measures it, its CPU time per update, and its garbage collections.
	reconciles    int
	reconcileMean time.Duration
	cpuPerUpdate  time.Duration
	gcs           int
	// The remote relabels: each one's latency to the ipcache change, the agent's CPU time
	// per relabel, and the mean size of a pod watch event meanwhile.
	relabel       []time.Duration
	cpuPerRelabel time.Duration
	eventBytes    float64
	// The bytes of pod watch events of the agent's first list, and the mean size of a pod
	// in JSON and in protobuf.
	listBytes            int64
	streamed             bool
	podJSON, podProtobuf float64
	// The machine's load average over a minute before and after the updates: what else
	// competed for the CPUs.
	loadBefore, loadAfter string
}

// percentile is the nearest-rank percentile of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (r *result) report(b *testing.B) {
	b.ReportMetric(ms(r.cpuPerRelabel), "cpu-ms/relabel")
	b.ReportMetric(ms(percentile(r.latency, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(r.latency, 99)), "p99-ms")
	b.ReportMetric(mb(r.hwmAfter), "peak-rss-MB")
	b.ReportMetric(r.resyncCold.Seconds(), "resync-s")
	b.Logf("update to map: p50 %v p99 %v max %v; API write p50 %v p99 %v", percentile(r.latency, 50),
		percentile(r.latency, 99), slices.Max(r.latency), percentile(r.write, 50), percentile(r.write, 99))
	b.Logf("memory: ready %.1f MB (peak %.1f), after the updates %.1f MB, after the relabels %.1f MB (peak %.1f), restarted %.1f MB",
		mb(r.rssReady), mb(r.hwmReady), mb(r.rssUpdated), mb(r.rssAfter), mb(r.hwmAfter), mb(r.rssRestarted))
	b.Logf("resync: empty state %v, pinned state %v", r.resyncCold, r.resyncWarm)
	b.Logf("load average: %s before the updates, %s after", r.loadBefore, r.loadAfter)
	b.Logf("remote relabels: p50 %v p99 %v, %v of agent CPU each, pod events of %.0f bytes; first list %d bytes (streamed: %v); a pod %.0f B in JSON, %.0f in protobuf",
		percentile(r.relabel, 50), percentile(r.relabel, 99), r.cpuPerRelabel, r.eventBytes, r.listBytes, r.streamed, r.podJSON, r.podProtobuf)
	b.Logf("during the updates: %d reconciles of %v on average, %v of agent CPU per update, %d GCs; latency p90 %v p95 %v",
		r.reconciles, r.reconcileMean, r.cpuPerUpdate, r.gcs, percentile(r.latency, 90), percentile(r.latency, 95))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func mb(n int64) float64         { return float64(n) / (1 << 20) }
