package main

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/k8s"
	"github.com/podwall/podwall/policy"
)

func newExplainCmd(d deps) *cobra.Command {
	var (
		o       policyOptions
		file    string
		nodeIPs []string
		sport   uint16
		ipv6    bool
	)
	cmd := &cobra.Command{
		Use:   "explain -f PODS.yaml FROM TO [PROTOCOL[:PORT]]",
		Short: "Say whether a new connection would reach a pod, and which rule decides",
		Long: `Say whether the first packet of a new connection from FROM would reach the pod TO, and why,
as the agent with the same flags enforces it. The pods come from a file such as
"kubectl get pods,namespaces -A -o yaml" prints (the agent's --pods-file format).

FROM is a pod (NAMESPACE/NAME), an address, or "node" for the node's own address (--node-ip).
TO is a pod. PROTOCOL is tcp:PORT, udp:PORT, icmp[:TYPE[/CODE]], icmpv6[:TYPE[/CODE]] or a
protocol number; tcp:80 by default. Addresses are IPv4 unless -6 is given.

Replies to connections the pod opened always pass (SPEC 3.1); explain judges new
connections only.`,
		Example: `  podwall explain -f pods.yaml shop/front shop/web tcp:8080
  podwall explain -f pods.yaml 203.0.113.9 shop/web icmp:8
  podwall explain -f pods.yaml --node-ip 10.0.0.1 node shop/web tcp:8080`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := o.compilerOptions()
			if err != nil {
				return err
			}
			snap, err := readPods(d, file)
			if err != nil {
				return err
			}
			q := query{from: args[0], to: args[1], proto: "tcp:80", sport: sport, ipv6: ipv6}
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
			return explain(d.stdout, snap, opts, q)
		},
	}
	o.addFlags(cmd.Flags())
	cmd.Flags().StringVarP(&file, "filename", "f", "", `Pods and Namespaces, YAML or JSON ("-": stdin)`)
	cmd.Flags().StringSliceVar(&nodeIPs, "node-ip", nil, "the node's own addresses (the source \"node\")")
	cmd.Flags().Uint16Var(&sport, "sport", 40000, "source port of a tcp or udp connection")
	cmd.Flags().BoolVarP(&ipv6, "ipv6", "6", false, "use the pods' IPv6 addresses")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
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
}

// explainIfindex is the endpoint the destination pod stands at in the state explain
// compiles: any number, as no packet is sent.
const explainIfindex = 1

func explain(out io.Writer, snap k8s.Snapshot, opts compiler.Options, q query) error {
	dst, ok := findPod(snap, q.to)
	if !ok {
		return fmt.Errorf("no pod %s in the file", q.to)
	}
	dstIP, ok := addrOf(dst, q.ipv6)
	if !ok {
		return fmt.Errorf("pod %s has no %s address", q.to, family(q.ipv6))
	}
	var src netip.Addr
	srcName := q.from
	switch {
	case q.from == "node":
		i := slices.IndexFunc(q.nodeIPs, func(a netip.Addr) bool { return a.Is6() == q.ipv6 })
		if i < 0 {
			return fmt.Errorf(`source "node" needs an %s --node-ip`, family(q.ipv6))
		}
		src = q.nodeIPs[i]
	case strings.Contains(q.from, "/"):
		p, ok := findPod(snap, q.from)
		if !ok {
			return fmt.Errorf("no pod %s in the file", q.from)
		}
		if src, ok = addrOf(p, q.ipv6); !ok {
			return fmt.Errorf("pod %s has no %s address", q.from, family(q.ipv6))
		}
	default:
		a, err := netip.ParseAddr(q.from)
		if err != nil {
			return fmt.Errorf("source %q is neither NAMESPACE/NAME, an address nor \"node\"", q.from)
		}
		if a.Is6() != q.ipv6 {
			return fmt.Errorf("source %s is not %s (use -6 for IPv6)", a, family(q.ipv6))
		}
		src = a
	}
	pkt, desc, err := packetOf(q.proto, q.sport, q.ipv6)
	if err != nil {
		return err
	}
	pkt.Src, pkt.Dst = src, dstIP
	// "node" is the node's own stack; an address, even one of the node's, is a packet
	// forwarded to the pod (SPEC 8).
	pkt.FromNode = q.from == "node"

	if dst.HostNetwork {
		fmt.Fprintf(out, "%s (%s) -> %s (%s) %s: PASS\n", srcName, src, q.to, dstIP, desc)
		fmt.Fprintf(out, "  %s is a host-network pod: it has the node's interfaces, which podwall does not guard\n", q.to)
		return nil
	}
	in := compiler.Input{HostIPs: q.nodeIPs, Options: opts,
		Endpoints: []compiler.Endpoint{{Ifindex: explainIfindex, Namespace: dst.Namespace, Name: dst.Name}}}
	for _, p := range snap.Pods {
		in.Pods = append(in.Pods, p.Pod)
	}
	state := compiler.Compile(in)
	v := compiler.Evaluate(state, explainIfindex, pkt)

	verdict := "DROP"
	if v.Pass {
		verdict = "PASS"
	}
	fmt.Fprintf(out, "%s (%s) -> %s (%s) %s: %s\n", srcName, src, q.to, dstIP, desc, verdict)
	fmt.Fprintf(out, "  %s\n", why(state, dst, v, opts))
	return nil
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
	name := dst.Namespace + "/" + dst.Name
	rule := func() string {
		p := s.Policies[v.Policy]
		if p == nil || v.Rule < 0 || v.Rule >= len(p.Rules) {
			return "a rule"
		}
		r := p.Rules[v.Rule]
		if r.Index == 0 {
			return fmt.Sprintf("the default (%s)", r.Text)
		}
		return fmt.Sprintf("rule %d (%s)", r.Index, r.Text)
	}
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
