package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/k8s"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/probe"
)

func newExplainCmd(d deps) *cobra.Command {
	var (
		o       policyOptions
		file    string
		node    liveOptions
		nodeIPs []string
		sport   uint16
		ipv6    bool
	)
	cmd := &cobra.Command{
		Use:   "explain [-f PODS.yaml] FROM TO [PROTOCOL[:PORT]]",
		Short: "Say whether a new connection would reach a pod, and which rule decides",
		Long: `Say whether the first packet of a new connection from FROM would reach the pod TO, and why.

On a node (without -f), the node's kernel answers: the packet runs through a copy of podwall's
program against the node's pinned state (--bpffs), which it leaves as it is, and its verdict,
reason and rule are printed beside those of podwall's Go model, which compiles the pods with
explain's policy flags. The pods, which name the addresses and the rules, come from the
agent's pods file (--pods-file) or the cluster (--kubeconfig). A packet of a connection the
node tracks is judged as established, and again as a new connection. When the kernel and the
model disagree, explain says so in a line starting DISAGREE and exits with status 1. Run it
in the network namespace where the agent attaches podwall (its host's), as root.

With -f, only the model answers, from a file such as "kubectl get pods,namespaces -A -o yaml"
prints (the agent's --pods-file format), as the agent with the same flags enforces it.

FROM is a pod (NAMESPACE/NAME), an address, or "node" for the node's own address (--node-ip;
on a node, the addresses the agent found by default). TO is a pod. PROTOCOL is tcp:PORT,
udp:PORT, icmp[:TYPE[/CODE]], icmpv6[:TYPE[/CODE]] or a protocol number; tcp:80 by default.
Addresses are IPv4 unless -6 is given.

Replies to connections the pod opened always pass (SPEC 3.1); the model judges new
connections only.`,
		Example: `  podwall explain --pods-file pods.yaml shop/front shop/web tcp:8080
  podwall explain --kubeconfig ~/.kube/config --sport 51234 shop/front shop/web tcp:8080
  podwall explain -f pods.yaml 203.0.113.9 shop/web icmp:8
  podwall explain -f pods.yaml --node-ip 10.0.0.1 node shop/web tcp:8080`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := o.compilerOptions()
			if err != nil {
				return err
			}
			q := query{from: args[0], to: args[1], proto: "tcp:80", sport: sport, ipv6: ipv6, podsFrom: "the file"}
			if len(args) == 3 {
				q.proto = args[2]
			}
			for _, s := range nodeIPs {
				a, err := netip.ParseAddr(s)
				if err != nil {
					return fmt.Errorf("--node-ip %q: %w", s, err)
				}
				q.nodeIPs = append(q.nodeIPs, a)
			}
			if file != "" {
				for _, f := range []string{"pods-file", "kubeconfig", "bpffs"} {
					if cmd.Flags().Changed(f) {
						return fmt.Errorf("-f explains with the model only: --%s is for the node's kernel", f)
					}
				}
				snap, err := readPods(d, file)
				if err != nil {
					return err
				}
				return explain(d.stdout, snap, opts, q)
			}
			snap, err := node.pods(cmd.Context(), d)
			if err != nil {
				return err
			}
			if node.podsFile == "" {
				q.podsFrom = "the cluster"
			}
			n, err := probe.Open(node.bpffs)
			if err != nil {
				return fmt.Errorf("open the node's pinned state: %w", err)
			}
			defer n.Close()
			return explainLive(d.stdout, n, snap, opts, q)
		},
	}
	o.addFlags(cmd.Flags())
	cmd.Flags().StringVarP(&file, "filename", "f", "", `Pods and Namespaces, YAML or JSON ("-": stdin): judge with the model only`)
	node.addFlags(cmd.Flags())
	cmd.Flags().StringSliceVar(&nodeIPs, "node-ip", nil, "the node's own addresses (the source \"node\")")
	cmd.Flags().Uint16Var(&sport, "sport", 40000, "source port of a tcp or udp connection; identifier of an icmp echo")
	cmd.Flags().BoolVarP(&ipv6, "ipv6", "6", false, "use the pods' IPv6 addresses")
	return cmd
}

// liveOptions say where explain finds the node's state and the pods that name it.
type liveOptions struct {
	bpffs, podsFile, kubeconfig string
}

func (l *liveOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&l.bpffs, "bpffs", loader.DefaultBPFFS, "the bpffs mount holding podwall's pinned state")
	f.StringVar(&l.podsFile, "pods-file", "", "the agent's pods file, for the pods, instead of the cluster")
	f.StringVar(&l.kubeconfig, "kubeconfig", "", "kubeconfig file of the cluster, for the pods (default: $KUBECONFIG, else the in-cluster configuration)")
}

// apiWait bounds the reading of the cluster's pods.
const apiWait = 30 * time.Second

// pods reads the pods and namespaces from the pods file, or else from the cluster.
func (l liveOptions) pods(ctx context.Context, d deps) (k8s.Snapshot, error) {
	if l.podsFile != "" {
		return readPods(d, l.podsFile)
	}
	kubeconfig := l.kubeconfig
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	client, err := kubeClient(kubeconfig, "podwall-explain")
	if err != nil {
		return k8s.Snapshot{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, apiWait)
	defer cancel()
	return clusterPods(ctx, client)
}

// clusterPods reads the pods and namespaces once through the agent's own source, so that
// explain sees them as the agent does.
func clusterPods(ctx context.Context, client kubernetes.Interface) (k8s.Snapshot, error) {
	ctx, cancel := context.WithCancel(ctx)
	c := k8s.NewCluster(client)
	first := make(chan error, 1)
	notify := func(err error) {
		select {
		case first <- err:
		default: // only the first answer counts
		}
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := c.Run(ctx, notify); err != nil {
			notify(err)
		}
		notify(ctx.Err()) // Run returned without an error when ctx ended
	}()
	err := <-first
	var snap k8s.Snapshot
	if err == nil {
		snap, err = c.Snapshot()
	}
	cancel()
	<-stopped
	if err != nil {
		return k8s.Snapshot{}, fmt.Errorf("read pods from the cluster: %w", err)
	}
	return snap, nil
}

// readPods reads the Pods and Namespaces of a file, or of stdin for "-".
func readPods(d deps, name string) (k8s.Snapshot, error) {
	data, err := readFile(d, name)
	if err != nil {
		return k8s.Snapshot{}, err
	}
	snap, err := k8s.ParseFile(data)
	if err != nil {
		return k8s.Snapshot{}, fmt.Errorf("read pods from %s: %w", name, err)
	}
	return snap, nil
}

func readFile(d deps, name string) ([]byte, error) {
	if name == "-" {
		data, err := io.ReadAll(d.stdin)
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		return data, nil
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return data, nil
}

type query struct {
	from, to, proto string
	nodeIPs         []netip.Addr
	sport           uint16
	ipv6            bool
	podsFrom        string // where the pods come from, for errors: "the file"
}

// explainIfindex is the endpoint the destination pod stands at in the state the model
// compiles: any number, as the model sends no packet.
const explainIfindex = 1

// flow is the packet a query names.
type flow struct {
	dst    netip.Addr
	dstPod k8s.Pod
	pkt    compiler.Packet
	desc   string // "shop/front (10.0.0.3) -> shop/web (10.0.0.2) tcp port 8080"
}

func resolve(snap k8s.Snapshot, q query) (flow, error) {
	dst, ok := findPod(snap, q.to)
	if !ok {
		return flow{}, fmt.Errorf("no pod %s in %s", q.to, q.podsFrom)
	}
	dstIP, ok := addrOf(dst, q.ipv6)
	if !ok {
		return flow{}, fmt.Errorf("pod %s has no %s address", q.to, family(q.ipv6))
	}
	var src netip.Addr
	switch {
	case q.from == "node":
		i := slices.IndexFunc(q.nodeIPs, func(a netip.Addr) bool { return a.Is6() == q.ipv6 })
		if i < 0 {
			return flow{}, fmt.Errorf(`source "node" needs an %s --node-ip`, family(q.ipv6))
		}
		src = q.nodeIPs[i]
	case strings.Contains(q.from, "/"):
		p, ok := findPod(snap, q.from)
		if !ok {
			return flow{}, fmt.Errorf("no pod %s in %s", q.from, q.podsFrom)
		}
		if src, ok = addrOf(p, q.ipv6); !ok {
			return flow{}, fmt.Errorf("pod %s has no %s address", q.from, family(q.ipv6))
		}
	default:
		a, err := netip.ParseAddr(q.from)
		if err != nil {
			return flow{}, fmt.Errorf("source %q is neither NAMESPACE/NAME, an address nor \"node\"", q.from)
		}
		if a.Is6() != q.ipv6 {
			return flow{}, fmt.Errorf("source %s is not %s (use -6 for IPv6)", a, family(q.ipv6))
		}
		src = a
	}
	pkt, desc, err := packetOf(q.proto, q.sport, q.ipv6)
	if err != nil {
		return flow{}, err
	}
	pkt.Src, pkt.Dst = src, dstIP
	// "node" is the node's own stack; an address, even one of the node's, is a packet
	// forwarded to the pod (SPEC 8).
	pkt.FromNode = q.from == "node"
	return flow{dst: dstIP, dstPod: dst, pkt: pkt,
		desc: fmt.Sprintf("%s (%s) -> %s (%s) %s", q.from, src, q.to, dstIP, desc)}, nil
}

// hostNetwork says that podwall does not guard a host-network pod.
func hostNetwork(out io.Writer, f flow, q query) {
	fmt.Fprintf(out, "%s: PASS\n", f.desc)
	fmt.Fprintf(out, "  %s is a host-network pod: it has the node's interfaces, which podwall does not guard\n", q.to)
}

// model is the Go model's verdict on the flow, with the state it compiled.
func model(snap k8s.Snapshot, opts compiler.Options, q query, f flow) (*compiler.State, compiler.Verdict) {
	in := compiler.Input{HostIPs: q.nodeIPs, Options: opts, NamespaceAnnotations: snap.NamespaceAnnotations,
		Endpoints: []compiler.Endpoint{{Ifindex: explainIfindex, Namespace: f.dstPod.Namespace, Name: f.dstPod.Name}}}
	for _, p := range snap.Pods {
		in.Pods = append(in.Pods, p.Pod)
	}
	state := compiler.Compile(in)
	return state, compiler.Evaluate(state, explainIfindex, f.pkt)
}

func explain(out io.Writer, snap k8s.Snapshot, opts compiler.Options, q query) error {
	f, err := resolve(snap, q)
	if err != nil {
		return err
	}
	if f.dstPod.HostNetwork {
		hostNetwork(out, f, q)
		return nil
	}
	state, v := model(snap, opts, q, f)
	fmt.Fprintf(out, "%s: %s\n", f.desc, verdictWord(v.Pass))
	fmt.Fprintf(out, "  %s\n", why(state, f.dstPod, v, opts))
	return nil
}

// errDisagree is explain's error when the node's kernel and the model disagree.
var errDisagree = errors.New("the kernel and the model disagree")

// explainLive judges the flow with the node's kernel and with the model, and compares them.
func explainLive(out io.Writer, n *probe.Node, snap k8s.Snapshot, opts compiler.Options, q query) error {
	if len(q.nodeIPs) == 0 {
		var err error
		if q.nodeIPs, err = n.HostAddrs(); err != nil {
			return err
		}
	}
	f, err := resolve(snap, q)
	if err != nil {
		return err
	}
	if f.dstPod.HostNetwork {
		hostNetwork(out, f, q)
		return nil
	}
	ifindex, ok, err := n.Ifindex(f.dst)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s (%s) is no pod of this node that podwall guards: explain it on its node", q.to, f.dst)
	}
	p := probe.Packet{Packet: f.pkt, EchoID: q.sport, Ifindex: ifindex}
	k, err := n.Judge(p)
	if err != nil {
		return err
	}
	state, v := model(snap, opts, q, f)
	fmt.Fprintf(out, "%s: %s\n", f.desc, verdictWord(k.Pass))
	fmt.Fprintf(out, "  kernel: %s\n", kernelSays(state, k))
	// The model judges new connections: compare it with the kernel's judgement of one.
	judged := k
	if k.Reason == bpf.ReasonEstablished || k.Reason == bpf.ReasonReply {
		p.NewFlow = true
		if judged, err = n.Judge(p); err != nil {
			return err
		}
		fmt.Fprintf(out, "  kernel, as a new connection: %s\n", kernelSays(state, judged))
	}
	fmt.Fprintf(out, "  model:  %s\n", modelSays(state, v))
	fmt.Fprintf(out, "  %s\n", why(state, f.dstPod, v, opts))
	if k.Defaults != nil {
		fmt.Fprintf(out, "  note: the kernel's copy of podwall ran with default settings for what it could not read of the agent's: %v\n", k.Defaults)
	}
	if agree(judged, v) {
		return nil
	}
	fmt.Fprintf(out, "DISAGREE: the kernel says %s; the model says %s\n", kernelSays(state, judged), modelSays(state, v))
	fmt.Fprintf(out, "  the agent's flags (--default-policy, --open-namespaces, --allow-host, --legacy-policy-key, --policy-budget, --audit) may differ from explain's, or the pods it sees from those explain read\n")
	return errDisagree
}

func verdictWord(pass bool) string {
	if pass {
		return "PASS"
	}
	return "DROP"
}

// kernelSays is the kernel's verdict, reason and rule, which it names when it sent an event.
func kernelSays(s *compiler.State, k probe.Result) string {
	line := verdictWord(k.Pass) + " " + k.Reason.String() + auditNote(k.Audit)
	if k.Reason == bpf.ReasonEstablished || k.Reason == bpf.ReasonReply {
		return line + " (on the conntrack entry of the connection)"
	}
	if k.Reason != bpf.ReasonAllowRule && k.Reason != bpf.ReasonDenyRule {
		return line
	}
	policy, bit, ok := k.Rule()
	if !ok {
		return line + ", rule unknown (the kernel sends no event for this packet)"
	}
	return line + ", " + ruleName(s, policy, bit)
}

func modelSays(s *compiler.State, v compiler.Verdict) string {
	line := verdictWord(v.Pass) + " " + v.Reason.String() + auditNote(v.Audit)
	if v.Rule >= 0 {
		line += ", " + ruleName(s, v.Policy, v.Rule)
	}
	return line
}

func auditNote(audit bool) string {
	if audit {
		return " (audit)"
	}
	return ""
}

// agree says whether the kernel and the model give the verdict, the reason, and the rule
// where the kernel named one.
func agree(k probe.Result, v compiler.Verdict) bool {
	if k.Pass != v.Pass || k.Reason != v.Reason || k.Audit != v.Audit {
		return false
	}
	policy, bit, ok := k.Rule()
	return !ok || (policy == v.Policy && bit == v.Rule)
}

// ruleName names rule bit of the policy as the annotation does: "rule 2 (deny ...)", or the
// default policy's rule.
func ruleName(s *compiler.State, policy uint32, bit int) string {
	p := s.Policies[policy]
	if p == nil || bit < 0 || bit >= len(p.Rules) {
		return fmt.Sprintf("rule bit %d of policy %#08x, which the model does not have", bit, policy)
	}
	r := p.Rules[bit]
	if r.Index == 0 {
		return fmt.Sprintf("the default (%s)", r.Text)
	}
	return fmt.Sprintf("rule %d (%s)", r.Index, r.Text)
}

func findPod(snap k8s.Snapshot, name string) (k8s.Pod, bool) {
	ns, n, _ := strings.Cut(name, "/")
	i := slices.IndexFunc(snap.Pods, func(p k8s.Pod) bool { return p.Namespace == ns && p.Name == n })
	if i < 0 {
		return k8s.Pod{}, false
	}
	return snap.Pods[i], true
}

func addrOf(p k8s.Pod, ipv6 bool) (netip.Addr, bool) {
	i := slices.IndexFunc(p.IPs, func(a netip.Addr) bool { return a.Unmap().Is6() == ipv6 })
	if i < 0 {
		return netip.Addr{}, false
	}
	return p.IPs[i].Unmap(), true
}

func family(ipv6 bool) string {
	if ipv6 {
		return "IPv6"
	}
	return "IPv4"
}

// packetOf reads PROTOCOL[:PORT] into the packet explain judges and its description.
func packetOf(spec string, sport uint16, ipv6 bool) (compiler.Packet, string, error) {
	name, arg, hasArg := strings.Cut(spec, ":")
	bad := func(want string) (compiler.Packet, string, error) {
		return compiler.Packet{}, "", fmt.Errorf("protocol %q: want %s", spec, want)
	}
	switch name {
	case "tcp", "udp":
		port, err := strconv.ParseUint(arg, 10, 16)
		if !hasArg || err != nil {
			return bad(name + ":PORT with a port 0..65535")
		}
		p := compiler.Packet{Proto: 6, SrcPort: sport, DstPort: uint16(port)}
		if name == "udp" {
			p.Proto = 17
		}
		return p, fmt.Sprintf("%s port %d", name, port), nil
	case "icmp", "icmpv6":
		if (name == "icmpv6") != ipv6 {
			return bad("icmp with IPv4, icmpv6 with IPv6 (-6)")
		}
		p := compiler.Packet{Proto: 1, ICMPType: 8}
		if ipv6 {
			p = compiler.Packet{Proto: 58, ICMPType: 128}
		}
		if hasArg {
			typ, code, hasCode := strings.Cut(arg, "/")
			t, err := strconv.ParseUint(typ, 10, 8)
			if err != nil {
				return bad(name + "[:TYPE[/CODE]] with a type 0..255")
			}
			p.ICMPType = uint8(t)
			if hasCode {
				c, err := strconv.ParseUint(code, 10, 8)
				if err != nil {
					return bad(name + "[:TYPE[/CODE]] with a code 0..255")
				}
				p.ICMPCode = uint8(c)
			}
		}
		return p, fmt.Sprintf("%s type %d code %d", name, p.ICMPType, p.ICMPCode), nil
	}
	n, err := strconv.ParseUint(spec, 10, 8)
	if err != nil {
		return bad("tcp:PORT, udp:PORT, icmp[:TYPE[/CODE]], icmpv6[:TYPE[/CODE]] or a protocol number")
	}
	return compiler.Packet{Proto: uint8(n)}, fmt.Sprintf("protocol %d", n), nil
}

// why says in SPEC's words what decided v for the pod dst.
func why(s *compiler.State, dst k8s.Pod, v compiler.Verdict, opts compiler.Options) string {
	if v.Audit {
		return decided(s, dst, v, opts) + "; audit mode passes it, reported as verdict audit"
	}
	return decided(s, dst, v, opts)
}

func decided(s *compiler.State, dst k8s.Pod, v compiler.Verdict, opts compiler.Options) string {
	name := dst.Namespace + "/" + dst.Name
	rule := func() string { return ruleName(s, v.Policy, v.Rule) }
	switch v.Reason {
	case bpf.ReasonOpen:
		if slices.Contains(opts.OpenNamespaces, dst.Namespace) {
			return fmt.Sprintf("%s is in open namespace %s: it accepts everything", name, dst.Namespace)
		}
		return fmt.Sprintf("%s has no policy annotation and --default-policy is allow", name)
	case bpf.ReasonHost:
		return "it comes from the node, which may always reach its pods (--allow-host)"
	case bpf.ReasonND:
		return "IPv6 neighbour discovery always passes"
	case bpf.ReasonAllowRule:
		return fmt.Sprintf("%s of %s allows it", rule(), name)
	case bpf.ReasonDenyRule:
		return fmt.Sprintf("%s of %s denies it (deny wins over allow)", rule(), name)
	case bpf.ReasonNoRule:
		if p := s.Policies[v.Policy]; p != nil && len(p.Rules) == 1 && p.Rules[0].Index == 0 {
			return fmt.Sprintf("%s has no policy annotation: the default accepts only pods of namespace %s", name, dst.Namespace)
		}
		return fmt.Sprintf("no rule of %s allows it", name)
	case bpf.ReasonIsolated:
		for _, pr := range s.Problems {
			if pr.Namespace == dst.Namespace && pr.Name == dst.Name {
				return fmt.Sprintf("%s is isolated: %s: %v", name, pr.Kind, pr.Err)
			}
		}
		if _, _, ok := policy.PolicyAnnotation(dst.Annotations, opts.LegacyKey); ok {
			return fmt.Sprintf("%s is isolated: its annotation has no rules", name)
		}
		return fmt.Sprintf("%s is isolated: it has no policy annotation and --default-policy is deny", name)
	}
	return fmt.Sprintf("%s (%s)", v.Reason, name)
}
