// Command demo shows podwall at work on one machine, with no cluster: `make demo`.
//
// It builds a node network namespace with five pod namespaces joined to it by veth pairs
// (package topo), writes a pods file describing them, starts `podwall agent --pods-file` in
// the node namespace, and prints which connections between the pods pass and which are
// dropped, and why (the rule or the default of SPEC that decided, from compiler.Evaluate,
// checked against the real traffic). Then it changes annotations in the file and prints the
// table again. Everything it made (namespaces, links, pinned programs and maps) is removed
// when it ends, also on failure or Ctrl-C. It needs root.
package main

import (
	"bufio"
	"cmp"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/podwall/podwall/agent/netif"
	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/k8s"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/maps"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/topo"
)

const (
	// agentAddr is where the agent serves /status, on the node namespace's loopback.
	agentAddr = "127.0.0.1:9402"
	nodeName  = "demo-node"
	port      = 8080
	other     = 9090
	dropWait  = 300 * time.Millisecond
)

func main() {
	podwall := flag.String("podwall", "bin/podwall", "the podwall binary")
	flag.Parse()
	r := &runner{}
	code := r.run(func() error { return demo(r, *podwall) })
	os.Exit(code)
}

// runner lets the demo use the end-to-end tests' topology helpers outside `go test`: they
// take a testing.TB for their cleanups and failures, and use only Helper, Cleanup, Errorf,
// FailNow and Fatal of it, which runner provides. The embedded TB is nil: any other method
// would be a bug of the demo, and panics.
type runner struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
	done     bool
}

type failNow struct{}

func (r *runner) Helper() {}

func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

func (r *runner) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...)
}

func (r *runner) FailNow() { panic(failNow{}) }

func (r *runner) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"demo:"}, args...)...)
	r.FailNow()
}

// cleanup runs the cleanups once, last registered first.
func (r *runner) cleanup() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// run runs fn and then the cleanups, whatever happens: an error, a failed helper, a signal.
func (r *runner) run(fn func() error) (code int) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\ndemo: %s: cleaning up\n", s)
		r.cleanup()
		os.Exit(130)
	}()
	defer func() {
		if p := recover(); p != nil {
			if _, ok := p.(failNow); !ok {
				r.cleanup()
				panic(p)
			}
			code = 1
		}
		r.cleanup()
		fmt.Println("cleaned up: namespaces, links, pinned programs and maps removed")
	}()
	if err := fn(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	return 0
}

// pod is a pod of the demo: its namespace in the topology and its manifest's fields.
type pod struct {
	ns, name string
	labels   map[string]string
	policy   string // "" for none
	audit    bool   // podwall.io/audit: "true"
	tp       *topo.Pod
}

func (p *pod) String() string { return p.ns + "/" + p.name }

func demo(r *runner, podwall string) error {
	if os.Geteuid() != 0 {
		return errors.New("the demo needs root: it creates network namespaces and loads BPF programs")
	}
	bin, err := filepath.Abs(podwall)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("podwall binary: %w (run make build)", err)
	}
	tp := topo.New(r, topo.Routed)
	pods := []*pod{
		{ns: "shop", name: "api", labels: map[string]string{"role": "backend"},
			policy: "allow tcp from label role=frontend to ports 8080"},
		{ns: "shop", name: "web", labels: map[string]string{"role": "frontend"}},
		{ns: "shop", name: "cache", labels: map[string]string{"role": "cache"},
			policy: "allow tcp frm label role=frontend"},
		{ns: "lab", name: "probe", labels: map[string]string{"role": "frontend"}},
		{ns: "kube-system", name: "dns", labels: map[string]string{"k8s-app": "dns"}},
	}
	byName := map[string]*pod{}
	for _, p := range pods {
		p.tp = tp.AddPod(p.name)
		p.tp.Echo(r, port)
		p.tp.Echo(r, other)
		byName[p.String()] = p
	}
	dir, err := os.MkdirTemp("", "podwall-demo-")
	if err != nil {
		return err
	}
	r.Cleanup(func() { os.RemoveAll(dir) })
	file := filepath.Join(dir, "pods.yaml")
	bpffs := topo.BPFFS(r)

	fmt.Printf("podwall demo: a node network namespace (%s) with %d pods in 3 namespaces, the agent in standalone mode\n\n", tp.Node.Name, len(pods))
	if err := writePods(file, pods); err != nil {
		return err
	}
	printPods(pods, file)

	agent, err := startAgent(r, bin, tp.Node, file, bpffs, dir)
	if err != nil {
		return err
	}
	fmt.Printf("\nagent: nsenter --net=%s podwall agent --pods-file %s (ready in %s)\n", tp.Node.Path, file, agent.readyIn.Round(time.Millisecond))
	for _, line := range agent.warnings() {
		fmt.Println("  agent log:", line)
	}

	conns := []conn{
		{from: byName["shop/web"], to: byName["shop/api"], port: port},
		{from: byName["shop/web"], to: byName["shop/api"], port: other},
		{from: byName["lab/probe"], to: byName["shop/api"], port: port},
		{from: byName["shop/api"], to: byName["shop/web"], port: port},
		{from: byName["lab/probe"], to: byName["shop/web"], port: port},
		{from: byName["shop/web"], to: byName["shop/cache"], port: port},
		{fromNode: true, to: byName["shop/cache"], port: port},
		{from: byName["lab/probe"], to: byName["kube-system/dns"], port: port},
	}
	d := &checker{tp: tp, pods: pods, file: file, bpffs: bpffs}
	before, err := d.table(conns, nil)
	if err != nil {
		return err
	}

	byName["shop/api"].policy = "allow tcp from label role=frontend to ports 8080,9090"
	byName["shop/cache"].policy = "allow tcp from label role=frontend"
	fmt.Printf("\nchanging the pods file: shop/api gets %q,\n  shop/cache's annotation is fixed to %q\n",
		byName["shop/api"].policy, byName["shop/cache"].policy)
	if err := writePods(file, pods); err != nil {
		return err
	}
	changed, err := d.table(conns, before)
	if err != nil {
		return err
	}

	// Rolling out a stricter policy safely: audit first, read what it would drop, then enforce.
	web := byName["shop/web"]
	web.policy, web.audit = "allow tcp from label role=backend to ports 8080", true
	fmt.Printf("\nrolling out a policy on shop/web in audit mode: %q with %s: \"true\"\n", web.policy, policy.AuditAnnotationKey)
	if err := writePods(file, pods); err != nil {
		return err
	}
	if changed, err = d.table(conns, changed); err != nil {
		return err
	}
	for _, cmd := range [][]string{{"status", "--rules"}, {"maps", "policies", "-f", file}} {
		fmt.Printf("\n$ podwall %s\n", strings.Join(cmd, " "))
		args := append([]string{"--net=" + tp.Node.Path, "--", bin}, cmd...)
		if cmd[0] == "status" {
			args = append(args, "--agent-addr", agentAddr)
		} else {
			args = append(args, "--bpffs", bpffs)
		}
		out, err := exec.Command("nsenter", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("podwall %s: %w: %s", cmd[0], err, out)
		}
		fmt.Print(string(out))
	}
	web.audit = false
	fmt.Printf("\nthe audit shows what the policy would drop; enforcing it (the audit annotation removed):\n")
	if err := writePods(file, pods); err != nil {
		return err
	}
	if _, err := d.table(conns, changed); err != nil {
		return err
	}

	fmt.Println("\nstopping the agent (SIGTERM leaves enforcement pinned), then podwall agent --uninstall")
	if err := agent.stop(); err != nil {
		return err
	}
	out, err := exec.Command("nsenter", "--net="+tp.Node.Path, "--", bin, "agent", "--uninstall", "--bpffs", bpffs, "--log-format", "console").CombinedOutput()
	if err != nil {
		return fmt.Errorf("uninstall: %w: %s", err, out)
	}
	return nil
}

func printPods(pods []*pod, file string) {
	fmt.Printf("pods file %s:\n", file)
	w := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)
	for _, p := range pods {
		var labels []string
		for k, v := range p.labels {
			labels = append(labels, k+"="+v)
		}
		annotation := "(no policy annotation)"
		if p.policy != "" {
			annotation = policy.AnnotationKey + ": " + p.policy
			if _, err := policy.Parse(p.policy); err != nil {
				annotation += "   <- invalid"
			}
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", p, p.tp.IPv4, strings.Join(labels, ","), annotation)
	}
	w.Flush()
}

// writePods writes the pods and their namespaces as `kubectl get pods,namespaces -A -o
// yaml` would, replacing the file by a rename.
func writePods(file string, pods []*pod) error {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: List\nitems:\n")
	seen := map[string]bool{}
	for _, p := range pods {
		if !seen[p.ns] {
			seen[p.ns] = true
			fmt.Fprintf(&b, "- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: %s\n", p.ns)
		}
	}
	for _, p := range pods {
		fmt.Fprintf(&b, "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: %s\n    namespace: %s\n    labels:\n", p.name, p.ns)
		for k, v := range p.labels {
			fmt.Fprintf(&b, "      %s: %s\n", k, v)
		}
		if p.policy != "" || p.audit {
			b.WriteString("    annotations:\n")
		}
		if p.policy != "" {
			fmt.Fprintf(&b, "      %s: %q\n", policy.AnnotationKey, p.policy)
		}
		if p.audit {
			fmt.Fprintf(&b, "      %s: \"true\"\n", policy.AuditAnnotationKey)
		}
		fmt.Fprintf(&b, "  spec:\n    nodeName: %s\n  status:\n    phase: Running\n    podIP: %s\n    podIPs:\n    - ip: %s\n    - ip: %s\n",
			nodeName, p.tp.IPv4, p.tp.IPv4, p.tp.IPv6)
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// agentProcess is the podwall agent running in the node namespace.
type agentProcess struct {
	cmd     *exec.Cmd
	out     *lockedBuffer
	exited  chan error
	readyIn time.Duration
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startAgent starts the agent with nsenter (`ip netns exec` would hide /sys/fs/bpf) and
// waits for its ready file.
func startAgent(r *runner, bin string, node *topo.Netns, file, bpffs, dir string) (*agentProcess, error) {
	ready := filepath.Join(dir, "ready")
	a := &agentProcess{out: &lockedBuffer{}, exited: make(chan error, 1)}
	a.cmd = exec.Command("nsenter", "--net="+node.Path, "--", bin, "agent", "--pods-file", file,
		"--node-name", nodeName, "--bpffs", bpffs, "--ready-file", ready, "--log-format", "console", "--metrics-addr", agentAddr)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	start := time.Now()
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent: %w", err)
	}
	go func() { a.exited <- a.cmd.Wait() }()
	r.Cleanup(func() {
		if a.cmd.ProcessState == nil {
			_ = a.cmd.Process.Signal(syscall.SIGTERM)
			<-a.exited
		}
	})
	for {
		if _, err := os.Stat(ready); err == nil {
			a.readyIn = time.Since(start)
			return a, nil
		}
		select {
		case err := <-a.exited:
			return nil, fmt.Errorf("agent exited (%v):\n%s", err, a.out)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Since(start) > 15*time.Second {
			return nil, fmt.Errorf("agent not ready after 15s:\n%s", a.out)
		}
	}
}

// warnings are the agent's warning lines so far, without their timestamps.
func (a *agentProcess) warnings() []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(a.out.String()))
	for sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), "\tWARN\t"); ok {
			out = append(out, "WARN "+rest)
		}
	}
	return out
}

func (a *agentProcess) stop() error {
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := <-a.exited; err != nil {
		return fmt.Errorf("agent: %w:\n%s", err, a.out)
	}
	return nil
}

// conn is a TCP connection the demo tries.
type conn struct {
	from     *pod
	fromNode bool
	to       *pod
	port     uint16
}

func (c conn) source() string {
	if c.fromNode {
		return "the node"
	}
	return c.from.String()
}

// checker waits for the agent to apply the file and compares the traffic with SPEC.
type checker struct {
	tp    *topo.Topology
	pods  []*pod
	file  string
	bpffs string
}

// table waits until the maps hold the file's state, then tries each connection and prints
// the table; rows that differ from before are marked.
func (d *checker) table(conns []conn, before []string) ([]string, error) {
	state, err := d.awaitApplied()
	if err != nil {
		return nil, err
	}
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w, "  \tFROM\tTO\tPORT\tRESULT\tWHY")
	var rows []string
	mismatch := 0
	for i, c := range conns {
		srcNS, src := d.tp.Node, d.tp.NodeIPv4
		if !c.fromNode {
			srcNS, src = c.from.tp.NS, c.from.tp.IPv4
		}
		v := compiler.Evaluate(state, uint32(c.to.tp.HostIfindex), compiler.Packet{
			Src: src, Dst: c.to.tp.IPv4, Proto: 6, SrcPort: 40000, DstPort: c.port, FromNode: c.fromNode,
		})
		err := topo.TCPEcho(srcNS, netip.AddrPortFrom(c.to.tp.IPv4, c.port), topo.Timeout(dropWait))
		result := "passes"
		switch {
		case errors.Is(err, topo.ErrNoAnswer):
			result = "dropped"
		case err != nil:
			result = "error: " + err.Error()
		}
		why := d.why(state, c.to, v)
		if (err == nil) != v.Pass {
			mismatch++
			why += "   !! SPEC says it " + map[bool]string{true: "passes", false: "is dropped"}[v.Pass]
		}
		row := fmt.Sprintf("%s\t%s\t%d\t%s\t%s", c.source(), c.to, c.port, result, why)
		mark := " "
		if before != nil && before[i] != row {
			mark = "*"
		}
		rows = append(rows, row)
		fmt.Fprintf(w, "%s\t%s\n", mark, row)
	}
	w.Flush()
	if before != nil {
		fmt.Println("  (* changed)")
	}
	if mismatch > 0 {
		return nil, fmt.Errorf("%d connections did not do what SPEC says", mismatch)
	}
	return rows, nil
}

// why says in SPEC's terms what decided a verdict.
func (d *checker) why(state *compiler.State, to *pod, v compiler.Verdict) string {
	invalid := ""
	for _, p := range state.Problems {
		if p.Namespace == to.ns && p.Name == to.name && p.Kind == compiler.ProblemInvalid {
			invalid = p.Err.Error()
		}
	}
	switch v.Reason {
	case bpf.ReasonAllowRule, bpf.ReasonDenyRule:
		src := state.Policies[v.Policy].Rules[v.Rule]
		if src.Index == 0 {
			return "default: same namespace"
		}
		verb := map[bool]string{true: "allows", false: "denies"}[v.Reason == bpf.ReasonAllowRule]
		return audited(v, fmt.Sprintf("rule %d %s (%s)", src.Index, verb, src.Text))
	case bpf.ReasonNoRule:
		if to.policy == "" {
			return audited(v, "default: same namespace only")
		}
		return audited(v, "no rule allows it")
	case bpf.ReasonIsolated:
		if invalid != "" {
			return "isolated: invalid policy: " + invalid
		}
		return "isolated: a policy with no rules"
	case bpf.ReasonOpen:
		return "open namespace: accepts everything"
	case bpf.ReasonHost:
		return "from the node: always allowed"
	case bpf.ReasonNoEntry:
		return "not guarded"
	}
	return v.Reason.String()
}

// audited marks what the policy drops and audit mode passes.
func audited(v compiler.Verdict, why string) string {
	if v.Audit {
		return "AUDIT: " + why + ", would be dropped"
	}
	return why
}

// awaitApplied compiles the file as the agent must and waits until the kernel's endpoints
// and ipcache maps hold the result.
func (d *checker) awaitApplied() (*compiler.State, error) {
	data, err := os.ReadFile(d.file)
	if err != nil {
		return nil, err
	}
	snap, err := k8s.ParseFile(data)
	if err != nil {
		return nil, err
	}
	f, err := netif.Open(d.tp.Node.Path)
	if err != nil {
		return nil, err
	}
	host, err := f.HostAddrs()
	f.Close()
	if err != nil {
		return nil, err
	}
	in := compiler.Input{HostIPs: host, Options: compiler.Options{
		DefaultPolicy: compiler.DefaultNamespace, OpenNamespaces: []string{"kube-system"}, AllowHost: true, LegacyKey: true,
	}}
	for _, p := range snap.Pods {
		in.Pods = append(in.Pods, p.Pod)
		for _, dp := range d.pods {
			if dp.ns == p.Namespace && dp.name == p.Name {
				in.Endpoints = append(in.Endpoints, compiler.Endpoint{Ifindex: uint32(dp.tp.HostIfindex), Namespace: p.Namespace, Name: p.Name})
			}
		}
	}
	want := compiler.Compile(in)
	deadline := time.Now().Add(10 * time.Second)
	for {
		same, err := d.kernelHolds(want)
		if same {
			return want, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the agent did not apply the pods file in 10s: %w", cmp.Or(err, errors.New("maps differ")))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (d *checker) kernelHolds(want *compiler.State) (bool, error) {
	m, err := loader.OpenMaps(d.bpffs)
	if err != nil {
		return false, err
	}
	defer m.Close()
	got, err := maps.Read(m)
	if err != nil {
		return false, err
	}
	return reflect.DeepEqual(maps.Want(want), got), nil
}
