package bench

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/tests/benchdoc"
)

var (
	benchmarksMD = flag.String("benchmarks-md", "",
		"after BenchmarkEnforcers, rewrite its section of this markdown file (between its markers) and write "+
			PlotFile+" beside it")
	iperfSeconds = flag.Int("iperf-seconds", 3, "duration of each iperf3 test, in seconds")
	repetitions  = flag.Int("repetitions", 3, "how often BenchmarkEnforcers runs each test")
)

// PlotFile is the plot's name, beside the markdown file.
const PlotFile = "bench-rules.png"

// controlRuns is how many compiles each compile time is the median of.
const controlRuns = 5

// BenchmarkEnforcers runs the whole comparison once, whatever b.N (run it with -benchtime 1x):
// iperf3 through every enforcer at every rule count, interleaved, then the control plane.
// With -benchmarks-md FILE it rewrites its section of FILE and the plot beside it.
func BenchmarkEnforcers(b *testing.B) {
	r := &Report{
		Date:          time.Now(),
		Kernel:        benchdoc.KernelRelease(),
		CPU:           benchdoc.CPUModel(),
		NProc:         runtime.NumCPU(),
		GoVersion:     runtime.Version(),
		Command:       command(),
		Seconds:       *iperfSeconds,
		Repetitions:   *repetitions,
		RuleCounts:    RuleCounts,
		StatefulRules: RuleCounts[len(RuleCounts)-1],
		Samples:       map[Key][]float64{},
		Installed:     map[Key]string{},
		Plot:          PlotFile,
	}
	none := newSetup(b, NoFilter, false)
	var judged, deployed []*setup
	for _, e := range Enforcers {
		judged = append(judged, newSetup(b, e, false))
		deployed = append(deployed, newSetup(b, e, true))
	}
	r.PodwallMode = string(judged[0].dp.Mode())
	for _, s := range slices.Concat([]*setup{none}, judged, deployed) {
		s.serve(b)
	}
	for _, s := range deployed {
		st, err := s.compile(PolicyText(r.StatefulRules))
		require.NoError(b, err)
		_, err = s.install(st)
		require.NoError(b, err, "install %s", s)
	}

	tests := []Test{TCPStream, UDPSmall}
	run := func(s *setup, rules int) {
		for _, t := range tests {
			rate, perCPU, err := s.measure(t, *iperfSeconds)
			require.NoError(b, err, "%s, %d rules, %s", s, rules, t)
			k := Key{Enforcer: s.enforcer, Stateful: s.stateful, Rules: rules, Test: t}
			r.Samples[k] = append(r.Samples[k], rate)
			k.PerCPU = true
			r.Samples[k] = append(r.Samples[k], perCPU)
			progress("%-30s %5d rules  %-3s  %.4g  (%.4g per CPU)", s, rules, t, rate, perCPU)
		}
	}
	for rep := range *repetitions {
		for _, n := range RuleCounts {
			for _, s := range judged {
				st, err := s.compile(PolicyText(n))
				require.NoError(b, err)
				installed, err := s.install(st)
				require.NoError(b, err, "install %s", s)
				r.Installed[Key{Enforcer: s.enforcer, Rules: n}] = installed
			}
			// Each round starts with another enforcer, so none is always measured first.
			round := slices.Concat([]*setup{none}, judged)
			k := (rep*len(RuleCounts) + slices.Index(RuleCounts, n)) % len(round)
			for _, s := range slices.Concat(round[k:], round[:k]) {
				if s == none {
					run(s, 0)
				} else {
					run(s, n)
				}
			}
		}
		for _, s := range deployed {
			run(s, r.StatefulRules)
		}
	}

	r.Control = controlPlane(b)
	r.Excerpts = excerpts(b, judged)
	if *benchmarksMD == "" {
		return
	}
	require.NoError(b, WriteSection(*benchmarksMD, r.Markdown()))
	require.NoError(b, r.WritePlot(filepath.Join(filepath.Dir(*benchmarksMD), PlotFile)))
}

// progress reports on the terminal while the benchmark runs; its results go to the report.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// controlPlane measures compiling the control-plane clusters: the median time of
// controlRuns compiles, what one allocates, and what its result keeps on the heap.
// (testing.Benchmark cannot run inside a benchmark: it waits for the running one to end.)
func controlPlane(b *testing.B) []Compiled {
	b.Helper()
	clusters := []struct {
		name         string
		local, rules int
	}{
		{"10,000 pods, 100 on this node with 10 rules each", 100, 10},
		{"10,000 pods, 100 on this node with 1,000 rules each", 100, 1000},
		{"10,000 pods, all on this node with 10 rules each", ControlPods, 10},
	}
	var out []Compiled
	for _, c := range clusters {
		in := ControlCluster(c.local, c.rules)
		compiler.Compile(in) // warm up
		var times []time.Duration
		for range controlRuns {
			start := time.Now()
			compiler.Compile(in)
			times = append(times, time.Since(start))
		}
		slices.Sort(times)

		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := compiler.Compile(in)
		runtime.ReadMemStats(&after)
		alloc := after.TotalAlloc - before.TotalAlloc
		runtime.GC()
		runtime.ReadMemStats(&after)
		require.Empty(b, s.Problems, c.name)
		entries, bytes := MapSize(s)
		out = append(out, Compiled{
			Name: c.name, Pods: len(in.Pods), Endpoints: len(in.Endpoints), Policies: len(s.Policies),
			Compile: times[len(times)/2], AllocBytes: alloc,
			HeapBytes:  after.HeapAlloc - min(before.HeapAlloc, after.HeapAlloc),
			MapEntries: entries, MapBytes: bytes,
		})
		runtime.KeepAlive(s)
		progress("compiled %s in %s", c.name, times[len(times)/2])
	}
	return out
}

// excerpts shows what each enforcer installs for a policy of 10 rules.
func excerpts(b *testing.B, judged []*setup) []Excerpt {
	b.Helper()
	const rules = 10
	s := judged[0]
	st, err := s.compile(PolicyText(rules))
	require.NoError(b, err)
	felix, err := Felix(st, s.target, IPv4, false)
	require.NoError(b, err)
	nft, err := NFT(st, s.target, IPv4, false)
	require.NoError(b, err)
	p := st.Policies[st.Endpoints[s.target.Ifindex].Policy]

	return []Excerpt{
		{Title: fmt.Sprintf("The pod's policy at %d rules (cluster.go):", rules),
			Text: strings.ReplaceAll(PolicyText(rules), "; ", ";\n") + "\n"},
		{Title: "podwall: the pod's endpoint entry, which holds the policy's record, and the policy's classifier entries, " +
			"shared by every pod with the same folded policy; the baselines below are written from this same compiled state:",
			Text: fmt.Sprintf("endpoints: 1 entry (%d bytes)\npol_ident: %d entries\npol_cidr: %d entries\n"+
				"pol_port: %d entries\npol_icmp: %d entries\n",
				binary.Size(bpf.PodwallEndpointEntry{}), len(p.Ident), len(p.CIDR), len(p.Port), len(p.ICMP))},
		{Title: "iptables + ipset (IPv4; ip6tables gets the same for IPv6), iptables-restore input:",
			Text: felix.Rules},
		{Title: "and the start of its ipset restore input:", Text: head(felix.IPSets, 6)},
		{Title: "nftables (IPv4; an ip6 table gets the same for IPv6), with the sets cut short:",
			Text: shortenSets(nft.Rules)},
	}
}

// head is the first n lines of s, and a line saying how many more there are.
func head(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) <= n+1 {
		return s
	}
	return strings.Join(lines[:n], "") + fmt.Sprintf("... (%d more lines)\n", len(lines)-1-n)
}

var nftSet = regexp.MustCompile(`\tset (\S+) \{\n\t\ttype (\S+)\n\t\telements = \{ ([^,}]+)(, [^}]*)? \}\n\t\}`)

// shortenSets writes each nftables set on one line, with its first element only.
func shortenSets(s string) string {
	return nftSet.ReplaceAllStringFunc(s, func(set string) string {
		m := nftSet.FindStringSubmatch(set)
		more := ""
		if m[4] != "" {
			more = ", ..."
		}
		return fmt.Sprintf("\tset %s { type %s; elements = { %s%s } }", m[1], m[2], m[3], more)
	})
}

// command is the go test command line that ran the benchmark, from the test flags.
func command() string {
	return fmt.Sprintf("go test -run %s -bench %s -benchtime %s -timeout %s ./tests/bench -args -benchmarks-md %s "+
		"-iperf-seconds %d -repetitions %d", benchdoc.Flag("test.run"), benchdoc.Flag("test.bench"),
		benchdoc.Flag("test.benchtime"), benchdoc.Flag("test.timeout"), benchdoc.ShellQuote(*benchmarksMD),
		*iperfSeconds, *repetitions)
}
