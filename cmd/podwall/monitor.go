package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/spf13/cobra"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/k8s"
	"github.com/podwall/podwall/loader"
)

func newMonitorCmd(d deps) *cobra.Command {
	var (
		bpffs  string
		count  int
		output string
		file   string
		f      eventFilter
		o      policyOptions
	)
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Print the data path's drops and newly allowed flows as they happen",
		Long: `Print the events of the data path, one a line: every dropped packet, every new flow a pod
in audit mode let through that its policy drops (AUDIT, with the reason and rule that would
have dropped it), and the first packet of every inbound flow a rule allowed, with the reason, where it was decided (at=tc on the
pod's interface, at=xdp on an uplink) and the deciding rule (rule N is the Nth rule of the
pod's annotation; under the namespace default, rule 1 is that default). With -f, the pods of
a file such as "kubectl get pods,namespaces -A -o yaml" prints name the addresses and the
rules' text (compiled with the policy flags, as the agent does), and --namespace and --pod
select events by pod. Events are rate limited in the kernel; what the limit dropped is
counted in the stats as event-lost (podwall maps stats). Run one monitor at a time: readers
of one ring buffer share its position.`,
		Example: `  podwall monitor
  podwall monitor -f pods.yaml --namespace shop --verdict drop -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("-o %q: text or json", output)
			}
			if err := f.check(); err != nil {
				return err
			}
			if file == "" && (f.namespace != "" || f.pod != "") {
				return errors.New("--namespace and --pod need the pods (-f)")
			}
			n, err := namerOf(d, o, file)
			if err != nil {
				return err
			}
			path := filepath.Join(loader.StateDir(bpffs), "maps", bpf.PodwallMapEvents)
			m, err := ebpf.LoadPinnedMap(path, nil)
			if err != nil {
				return fmt.Errorf("open pinned map %s: %w", path, err)
			}
			defer m.Close()
			r, err := ringbuf.NewReader(m)
			if err != nil {
				return fmt.Errorf("read ring buffer %s: %w", path, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			go func() {
				<-ctx.Done()
				_ = r.Close() // ends the Read that monitor waits in
			}()
			return monitor(r, d.stdout, count, func(ev bpf.PodwallEvent, now time.Time) (string, bool) {
				v := n.view(ev, now)
				if !f.keep(v) {
					return "", false
				}
				if output == "json" {
					b, err := json.Marshal(v)
					if err != nil {
						return fmt.Sprintf("encode event: %v", err), true
					}
					return string(b), true
				}
				return v.text(), true
			})
		},
	}
	cmd.Flags().StringVar(&bpffs, "bpffs", loader.DefaultBPFFS, "the bpffs mount holding podwall's pinned state")
	cmd.Flags().IntVarP(&count, "count", "c", 0, "exit after this many events printed (0: until interrupted)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json (one object a line)")
	cmd.Flags().StringVarP(&file, "filename", "f", "", `Pods and Namespaces, YAML or JSON ("-": stdin), to name addresses and rules`)
	cmd.Flags().StringVar(&f.verdict, "verdict", "", "only drop, only pass, or only audit (what a pod in audit mode let through that its policy drops)")
	cmd.Flags().StringVar(&f.hook, "hook", "", "only tc or only xdp")
	cmd.Flags().StringVar(&f.namespace, "namespace", "", "only events from or to pods of this namespace (needs -f)")
	cmd.Flags().StringVar(&f.pod, "pod", "", "only events from or to this pod, NAMESPACE/NAME (needs -f)")
	o.addFlags(cmd.Flags())
	return cmd
}

// monitor prints the events format keeps until the reader is closed or count were printed.
func monitor(r *ringbuf.Reader, out io.Writer, count int, format func(bpf.PodwallEvent, time.Time) (string, bool)) error {
	var rec ringbuf.Record
	for n := 0; count == 0 || n < count; {
		if err := r.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read event: %w", err)
		}
		var ev bpf.PodwallEvent
		if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &ev); err != nil {
			return fmt.Errorf("decode event of %d bytes: %w", len(rec.RawSample), err)
		}
		line, ok := format(ev, time.Now())
		if !ok {
			continue
		}
		if _, err := fmt.Fprintln(out, line); err != nil {
			return err
		}
		n++
	}
	return nil
}

// eventFilter selects events by their fields and pods.
type eventFilter struct {
	verdict, hook, namespace, pod string
}

func (f eventFilter) check() error {
	if f.verdict != "" && f.verdict != "drop" && f.verdict != "pass" && f.verdict != "audit" {
		return fmt.Errorf("--verdict %q: drop, pass or audit", f.verdict)
	}
	if f.hook != "" && f.hook != "tc" && f.hook != "xdp" {
		return fmt.Errorf("--hook %q: tc or xdp", f.hook)
	}
	if f.pod != "" && !strings.Contains(f.pod, "/") {
		return fmt.Errorf("--pod %q: NAMESPACE/NAME", f.pod)
	}
	return nil
}

func (f eventFilter) keep(v eventView) bool {
	switch {
	case f.verdict != "" && !strings.EqualFold(v.Verdict, f.verdict):
		return false
	case f.hook != "" && v.Hook != f.hook:
		return false
	case f.pod != "" && v.SrcPod != f.pod && v.DstPod != f.pod:
		return false
	case f.namespace != "" && !strings.HasPrefix(v.SrcPod, f.namespace+"/") && !strings.HasPrefix(v.DstPod, f.namespace+"/"):
		return false
	}
	return true
}

// namer names addresses by their pods, and rules by their text, from a pods file; empty, it
// names nothing.
type namer struct {
	pods  map[netip.Addr]string
	rules map[uint32][]compiler.RuleSource // policy id -> rule bit -> its origin
}

// namerOf is the namer of the pods of file, compiled with o; one that names nothing without a
// file.
func namerOf(d deps, o policyOptions, file string) (*namer, error) {
	if file == "" {
		return &namer{}, nil
	}
	opts, err := o.compilerOptions()
	if err != nil {
		return nil, err
	}
	snap, err := readPods(d, file)
	if err != nil {
		return nil, err
	}
	return newNamer(snap, opts), nil
}

// newNamer compiles every pod of the snapshot as if it were local, so that each policy's id
// is the one the agent gives it (ids are hashes of the folded policies).
func newNamer(snap k8s.Snapshot, opts compiler.Options) *namer {
	n := &namer{pods: map[netip.Addr]string{}, rules: map[uint32][]compiler.RuleSource{}}
	in := compiler.Input{Options: opts}
	for i, p := range snap.Pods {
		in.Pods = append(in.Pods, p.Pod)
		if p.HostNetwork {
			continue
		}
		for _, ip := range p.IPs {
			n.pods[ip] = p.Namespace + "/" + p.Name
		}
		in.Endpoints = append(in.Endpoints, compiler.Endpoint{Ifindex: uint32(i + 1), Namespace: p.Namespace, Name: p.Name}) //nolint:gosec // G115: a count of pods
	}
	for id, p := range compiler.Compile(in).Policies {
		n.rules[id] = p.Rules
	}
	return n
}

// eventView is one event as monitor prints it; -o json prints it as it is.
type eventView struct {
	Time     time.Time `json:"time"`
	Verdict  string    `json:"verdict"`
	Reason   string    `json:"reason"`
	Hook     string    `json:"hook"`
	Ifindex  uint32    `json:"ifindex"`
	Proto    string    `json:"proto"`
	Src      string    `json:"src"`
	Dst      string    `json:"dst"`
	SrcPort  *uint16   `json:"src_port,omitempty"`
	DstPort  *uint16   `json:"dst_port,omitempty"`
	ICMPType *uint8    `json:"icmp_type,omitempty"`
	ICMPCode *uint8    `json:"icmp_code,omitempty"`
	Identity string    `json:"identity"`
	SrcPod   string    `json:"src_pod,omitempty"`
	DstPod   string    `json:"dst_pod,omitempty"`
	Policy   string    `json:"policy,omitempty"`
	Rule     int       `json:"rule,omitempty"` // 1-based, as in the annotation
	RuleText string    `json:"rule_text,omitempty"`

	src, dst netip.Addr // Src and Dst, for text
}

func (n *namer) view(ev bpf.PodwallEvent, now time.Time) eventView {
	v := eventView{Time: now, Verdict: "PASS", Reason: bpf.Reason(ev.Reason).String(), Hook: "tc", Ifindex: ev.Ifindex,
		Identity: identityName(ev.Identity)}
	switch ev.Verdict {
	case bpf.VerdictDrop:
		v.Verdict = "DROP"
	case bpf.VerdictAudit:
		v.Verdict = "AUDIT"
	}
	if ev.Hook == bpf.HookXDP {
		v.Hook = "xdp"
	}
	var ok bool
	if v.Proto, ok = protoNames[ev.Proto]; !ok {
		v.Proto = fmt.Sprintf("proto-%d", ev.Proto)
	}
	src, dst := bpf.KeyAddr(ev.Src), bpf.KeyAddr(ev.Dst)
	v.src, v.dst = src, dst
	v.Src, v.Dst = src.String(), dst.String()
	v.SrcPod, v.DstPod = n.pods[src], n.pods[dst]
	// Ports are in network byte order; for ICMP the source "port" holds type and code.
	sport, dport := ntohs(ev.Sport), ntohs(ev.Dport)
	switch ev.Proto {
	case 6, 17:
		v.SrcPort, v.DstPort = &sport, &dport
	case 1, 58:
		typ, code := uint8(sport>>8), uint8(sport&0xff) //nolint:gosec // G115: the two bytes
		v.ICMPType, v.ICMPCode = &typ, &code
	}
	if r := bpf.Reason(ev.Reason); r == bpf.ReasonAllowRule || r == bpf.ReasonDenyRule {
		v.Policy = fmt.Sprintf("%#08x", ev.Policy)
		v.Rule = int(ev.Rule) + 1
		if rules := n.rules[ev.Policy]; int(ev.Rule) < len(rules) {
			v.Rule = rules[ev.Rule].Index
			v.RuleText = rules[ev.Rule].Text
		}
	}
	return v
}

// text is one line of `podwall monitor`, stamped with when it was read: the kernel's
// timestamp is monotonic, not wall-clock time.
func (v eventView) text() string {
	end := func(addr netip.Addr, port *uint16, pod string) string {
		s := addr.String()
		if port != nil {
			s = netip.AddrPortFrom(addr, *port).String()
		}
		if pod != "" {
			s += " (" + pod + ")"
		}
		return s
	}
	flow := end(v.src, v.SrcPort, v.SrcPod) + " -> " + end(v.dst, v.DstPort, v.DstPod)
	if v.ICMPType != nil {
		flow += fmt.Sprintf(" type %d code %d", *v.ICMPType, *v.ICMPCode)
	}
	line := fmt.Sprintf("%s %s %-12s at=%s if=%d %s %s identity=%s", v.Time.Format("15:04:05.000"), v.Verdict,
		v.Reason, v.Hook, v.Ifindex, v.Proto, flow, v.Identity)
	if v.Policy != "" {
		line += fmt.Sprintf(" policy=%s rule=%d", v.Policy, v.Rule)
		if v.RuleText != "" {
			line += fmt.Sprintf(" (%s)", v.RuleText)
		}
	}
	return line
}

var protoNames = map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}

func ntohs(v uint16) uint16 { return v>>8 | v<<8 }
