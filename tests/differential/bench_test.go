package differential

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/maps"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/frames"
	"github.com/podwall/podwall/tests/topo"
)

// What BenchmarkVerdict measures: rules in the endpoint's policy, entries in the ipcache, and
// the flows.
var (
	benchRules   = []int{1, 64, 1024}
	benchIPCache = []int{10, 10_000, 100_000}
)

const (
	flowEmpty    = "empty"
	flowXDPEmpty = "xdp-empty"
	// xdpPrefix names from_world's runs of a flow: "xdp-new-flow", "xdp-established-flow".
	xdpPrefix       = "xdp-"
	flowCTInsert    = "conntrack-insert"
	flowCTRewrite   = "conntrack-rewrite"
	flowCTLookup    = "conntrack-lookup"
	flowALU         = "alu"
	flowParts       = "new-flow-parts"
	flowNew         = "new-flow"
	flowEstablished = "established-flow"
)

// BenchmarkVerdict measures to_pod per packet, as the kernel times BPF_PROG_TEST_RUN with
// repeat (ns/op is its per-run duration), against an empty tc program as the floor. Every run
// of to_pod gets the skb context of a packet forwarded to the endpoint (ingress_ifindex 1),
// the one prepare checks the verdict with: without a context it would be a packet of the
// node's own stack, which the host rule passes before the classifier.
//
// The endpoint's policy has 1, 64 or 1024 rules of every kind (labels, ports and ranges,
// CIDRs of both families, ICMP types, deny rules), compiled with the cluster of 10, 10,000
// or 100,000 ipcache entries; the packet is TCP from a pod of the endpoint's namespace, and
// only the last rule allows it, so the deciding bit is in the last word of the vectors.
//
//   - new-flow: a repeated packet cannot stay the first of its flow, so this collection is
//     loaded with TCP conntrack timeouts of 0 (load-time settings of the program, which turn
//     tracking off): every run looks its conntrack entry up, finds it expired, goes through
//     every lookup of the classifier, and replaces the entry (an update with BPF_EXIST). A
//     real new flow misses the lookup and inserts a new entry instead.
//   - conntrack-insert: a program that only inserts a new random key into the conntrack map
//     of a loaded collection (the real map: its type and default size), in rounds that fill
//     it from empty to a quarter; conntrack-rewrite: one that only updates an existing entry
//     of it, as new-flow's runs do. Their difference is what new-flow leaves out.
//     conntrack-lookup: one that only looks an existing entry up in it, the one lookup of an
//     established flow.
//   - new-flow-parts: the new flow's packet in new-flow's collection, taken apart: host
//     passes a packet of the node's stack after the ipcache lookup, before the classifier;
//     proto, ident, cidr, sport and dport are policies whose rules constrain that one field
//     only (proto: none), at 1 and 1,024 rules.
//   - established-flow: the flow was allowed once, and each run passes on its conntrack
//     entry.
//   - alu: a program of ALU work only, touching no memory: a control for the machine's own
//     noise (docs/BENCHMARKS.md, "Two levels").
//
// from_world, the uplinks' XDP program, is measured on the same packets and states (at the
// largest ipcache, with the fewest and the most rules), against an empty XDP program: a new
// flow goes through its classifier, an established one passes on its conntrack entry.
//
// With -benchmarks-md FILE it rewrites its two sections of FILE (docs/BENCHMARKS.md): the
// medians (report_test.go), then every row's spread, the parts of a new flow and the goals
// from the minimums (bench_report_test.go); `make bench` does that.
func BenchmarkVerdict(b *testing.B) {
	ns := topo.NewNetns(b, "bench")
	syn := frame(benchPacket(), wire{tcpFlags: frames.TCPSyn})
	b.Run(flowEmpty, func(b *testing.B) {
		measure(b, ns, emptyProgram(b), syn, nil)
	})
	b.Run(flowALU, func(b *testing.B) {
		measure(b, ns, aluProgram(b), syn, nil)
	})
	// The conntrack rows write into the conntrack map of a collection of their own, of the
	// size and type the agent loads.
	ct := loadDatapath(b, func(*bpf.PodwallSpecs) error { return nil })
	b.Run(flowCTInsert, func(b *testing.B) {
		measureCTInsert(b, ns, ct, syn)
	})
	b.Run(flowCTRewrite, func(b *testing.B) {
		measureCTRewrite(b, ns, ct, syn)
	})
	b.Run(flowCTLookup, func(b *testing.B) {
		measureCTLookup(b, ns, ct, syn)
	})
	b.Run(flowXDPEmpty, func(b *testing.B) {
		measureXDP(b, ns, emptyXDPProgram(b), syn)
	})
	for _, flow := range []string{flowNew, flowEstablished} {
		d := loadDatapath(b, func(s *bpf.PodwallSpecs) error {
			if flow != flowNew {
				return nil
			}
			for _, v := range []*ebpf.VariableSpec{s.CtTimeoutTcpNs, s.CtTimeoutTcpSynNs, s.CtTimeoutTcpCloseNs} {
				if err := v.Set(uint64(0)); err != nil {
					return err
				}
			}
			return nil
		})
		b.Run(flow, func(b *testing.B) {
			for _, entries := range benchIPCache {
				b.Run(fmt.Sprintf("ipcache=%d", entries), func(b *testing.B) {
					for _, rules := range benchRules {
						b.Run(fmt.Sprintf("rules=%d", rules), func(b *testing.B) {
							s := benchState(b, rules, entries)
							require.NoError(b, d.applier.Apply(s))
							measure(b, ns, d.objs.ToPod, prepare(b, ns, d, s, flow, rules), forwarded)
						})
					}
				})
			}
		})
		if flow == flowNew {
			b.Run(flowParts, func(b *testing.B) { measureParts(b, ns, d) })
		}
		b.Run(xdpPrefix+flow, func(b *testing.B) {
			entries := benchIPCache[len(benchIPCache)-1]
			for _, rules := range benchXDPRules {
				b.Run(fmt.Sprintf("ipcache=%d/rules=%d", entries, rules), func(b *testing.B) {
					s := benchState(b, rules, entries)
					require.NoError(b, d.applier.Apply(s))
					require.Equal(b, uint32(1), maps.Want(s).LocalPods[compiler.AddrKey(benchPacket().Dst)],
						"from_world finds the endpoint by the packet's destination")
					measureXDP(b, ns, d.objs.FromWorld, prepare(b, ns, d, s, flow, rules))
				})
			}
		})
	}
	if *benchmarksMD != "" {
		require.NoError(b, writeBenchmarks(*benchmarksMD))
		require.NoError(b, writeBreakdown(*benchmarksMD))
	}
}

// benchXDPRules are the policies from_world is measured with.
var benchXDPRules = []int{1, 1024}

// emptyXDPProgram is an XDP program that only returns XDP_PASS.
func emptyXDPProgram(b *testing.B) *ebpf.Program {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
		License:      "Dual BSD/GPL",
	})
	require.NoError(b, err)
	b.Cleanup(func() { prog.Close() })
	return prog
}

// emptyProgram is a tc program that only returns TCX_NEXT.
func emptyProgram(b *testing.B) *ebpf.Program {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
		License:      "Dual BSD/GPL",
	})
	require.NoError(b, err)
	b.Cleanup(func() { prog.Close() })
	return prog
}

// The skb contexts of the runs of to_pod: a packet forwarded to the endpoint (at ifindex 1,
// the loopback of the benchmark's namespace) from another interface, as every packet from
// another pod or node is; and one the node's own stack sent (ingress_ifindex 0).
var (
	forwarded = skbContext(1, ingressOf(false))
	fromNode  = skbContext(1, ingressOf(true))
)

// measure runs prog b.N times on frame in the kernel, with the skb context ctx (nil: none),
// from ns (whose loopback is the endpoint), and reports the kernel's time per run.
func measure(b *testing.B, ns *topo.Netns, prog *ebpf.Program, frame, ctx []byte) {
	b.Helper()
	measureReturning(b, ns, prog, frame, ctx, actNext)
}

// measureXDP is measure for an XDP program, whose packets pass with XDP_PASS.
func measureXDP(b *testing.B, ns *topo.Netns, prog *ebpf.Program, frame []byte) {
	b.Helper()
	measureReturning(b, ns, prog, frame, nil, xdpPass)
}

func measureReturning(b *testing.B, ns *topo.Netns, prog *ebpf.Program, frame, ctx []byte, pass uint32) {
	b.Helper()
	var (
		ret    uint32
		perRun time.Duration
	)
	b.ResetTimer()
	err := ns.Do(func() (err error) {
		ret, perRun, err = testRun(prog, frame, ctx, b.N)
		return err
	})
	b.StopTimer()
	require.NoError(b, err)
	require.Equal(b, pass, ret, "the packet passes")
	record(b, perRun)
}

// record reports the kernel's time per run, and keeps it for the markdown tables.
func record(b *testing.B, perRun time.Duration) {
	b.ReportMetric(float64(perRun.Nanoseconds()), "ns/op")
	results.add(b.Name(), b.N, perRun)
}

// prepare checks that Evaluate and the program both let the packet in by the policy's last
// rule, puts the flow in the state the benchmark measures, and returns the frame to run.
func prepare(b *testing.B, ns *topo.Netns, d *datapath, s *compiler.State, flow string, rules int) []byte {
	b.Helper()
	p := benchPacket()
	v := compiler.Evaluate(s, 1, p)
	require.Equal(b, bpf.ReasonAllowRule, v.Reason, "Evaluate")
	require.Equal(b, rules, s.Policies[v.Policy].Rules[v.Rule].Index, "the deciding rule is the last")

	want := []bpf.Reason{bpf.ReasonAllowRule, bpf.ReasonAllowRule}
	flags := uint8(frames.TCPSyn)
	if flow == flowEstablished {
		want[1] = bpf.ReasonEstablished
		flags = frames.TCPAck
	}
	fr := frame(p, wire{tcpFlags: flags})
	var got []bpf.Reason
	require.NoError(b, ns.Do(func() error {
		if err := d.resync(); err != nil {
			return err
		}
		if err := d.forget(); err != nil {
			return err
		}
		for range want {
			o, err := d.run(1, false, fr)
			if err != nil {
				return err
			}
			got = append(got, o.reason)
		}
		return d.resync()
	}))
	require.Equal(b, want, got, "the first packet is allowed by a rule, the second %s", flow)
	return fr
}

var (
	benchHostIPs = []netip.Addr{netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("fd00:ffff::1")}
	benchTiers   = []string{"front", "back", "db"}
)

// benchPacket is a TCP packet from the client pod (the second pod) to the server pod (the
// first), the endpoint at ifindex 1, the loopback of the benchmark's namespace.
func benchPacket() compiler.Packet {
	return compiler.Packet{Src: benchPodIP(1), Dst: benchPodIP(0), Proto: frames.ProtoTCP, SrcPort: 40000, DstPort: 443}
}

func benchPodIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte((i + 1) >> 16), byte((i + 1) >> 8), byte(i + 1)})
}

// benchRulesText is a policy of n rules: n-1 of every kind that do not match benchPacket,
// then the one that allows it.
func benchRulesText(n int) string {
	kinds := []func(i int) string{
		func(i int) string { return fmt.Sprintf("allow tcp from label app=app-%d to ports %d", i%50, 8000+i) },
		func(i int) string { return fmt.Sprintf("allow udp from cidr 10.%d.0.0/16 to ports 53", i%256) },
		func(i int) string { return fmt.Sprintf("deny tcp from cidr 192.168.%d.0/24 to ports 22", i%256) },
		func(i int) string {
			return fmt.Sprintf("allow tcp from ports 1024:65535 label tier=db to ports %d", 5432+i%100)
		},
		func(i int) string { return fmt.Sprintf("allow icmp type 8 from label app=app-%d", i%50) },
		func(i int) string { return fmt.Sprintf("allow tcp from cidr 172.16.%d.0/24 to ports 9000:9100", i%256) },
		func(i int) string { return fmt.Sprintf("allow tcp from label app=app-%d to ports 443", i%50) },
		func(i int) string { return fmt.Sprintf("allow icmpv6 type 128 from cidr fd00:%x::/32", i) },
		func(i int) string { return fmt.Sprintf("deny udp from ports %d:%d", 10000+i, 10000+i+i%7) },
	}
	rules := make([]string, 0, n)
	for i := range n - 1 {
		rules = append(rules, kinds[i%len(kinds)](i))
	}
	// It states every field a TCP packet is classified on, so that a policy of this rule
	// alone does the lookups of the larger ones, and the sizes differ only in rules.
	rules = append(rules, "allow tcp from ports 1024:65535 label role=frontend cidr 10.0.0.0/8 to ports 443")
	return joinRules(rules)
}

// joinRules is the annotation of rules.
func joinRules(rules []string) string {
	return strings.Join(rules, "; ")
}

// benchStates caches the compiled states across the runs of the benchmarks, by policy text
// and ipcache entries.
var benchStates = map[string]*compiler.State{}

// benchState compiles a dual-stack cluster of ipcache entries addresses: the node's two and
// pods in 20 namespaces; the server pod, with a policy of rules rules, is the endpoint at
// ifindex 1.
func benchState(b *testing.B, rules, entries int) *compiler.State {
	b.Helper()
	return benchStateOf(b, benchRulesText(rules), entries)
}

// benchStateOf is benchState with the server's policy text.
func benchStateOf(b *testing.B, text string, entries int) *compiler.State {
	b.Helper()
	key := fmt.Sprintf("%d %s", entries, text)
	if s, ok := benchStates[key]; ok {
		return s
	}
	in := compiler.Input{
		HostIPs:   benchHostIPs,
		Options:   compiler.Options{AllowHost: true},
		Endpoints: []compiler.Endpoint{{Ifindex: 1, Namespace: "bench", Name: "server"}},
	}
	for i := range (entries - len(benchHostIPs)) / 2 {
		p := compiler.Pod{
			Namespace: fmt.Sprintf("ns-%d", i%20),
			Name:      fmt.Sprintf("pod-%d", i),
			Labels:    map[string]string{"app": fmt.Sprintf("app-%d", i%50), "tier": benchTiers[i%3]},
			IPs:       []netip.Addr{benchPodIP(i), netip.AddrFrom16([16]byte{0: 0xfd, 13: byte((i + 1) >> 16), 14: byte((i + 1) >> 8), 15: byte(i + 1)})},
		}
		switch {
		case i == 0:
			p.Namespace, p.Name = "bench", "server"
			p.Annotations = map[string]string{policy.AnnotationKey: text}
		case i == 1:
			p.Namespace, p.Name = "bench", "client"
			p.Labels = map[string]string{"app": "client", "role": "frontend"}
		case i%20 == 0:
			p.Namespace = "bench"
		}
		in.Pods = append(in.Pods, p)
	}
	s := compiler.Compile(in)
	require.Empty(b, s.Problems)
	require.Len(b, s.IPCache, entries)
	benchStates[key] = s
	return s
}

// sample is one measurement of a benchmark: b.N runs, the kernel's time per run.
type sample struct {
	n      int
	perRun time.Duration
}

// recorder keeps the samples of every benchmark by name, for the markdown table.
type recorder struct {
	mu      sync.Mutex
	samples map[string][]sample
	// order is the names in the order they were first measured.
	order []string
}

var results = recorder{samples: map[string][]sample{}}

func (r *recorder) add(name string, n int, perRun time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.samples[name]; !ok {
		r.order = append(r.order, name)
	}
	r.samples[name] = append(r.samples[name], sample{n, perRun})
}
