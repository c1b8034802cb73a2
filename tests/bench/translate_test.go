package bench

import (
	"fmt"
	"image/png"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/benchdoc"
)

var (
	testAddrs = Addrs{
		Server:        []netip.Addr{netip.MustParseAddr("10.244.0.2"), netip.MustParseAddr("fd00:244::2")},
		Client:        []netip.Addr{netip.MustParseAddr("10.99.1.2"), netip.MustParseAddr("fd00:99:1::2")},
		Node:          []netip.Addr{netip.MustParseAddr("10.0.0.1")},
		ServerIfindex: 2,
	}
	testTarget = Target{Ifindex: 2, Ifname: "pwserver", Namespace: Namespace}
)

// profileLines are the policy rules of a Felix ruleset, without the chain and the marks.
func profileLines(r Ruleset) []string {
	var out []string
	for _, l := range strings.Split(r.Rules, "\n") {
		if rest, ok := strings.CutPrefix(l, "-A felix-p-"); ok && !strings.Contains(rest, "MARK") {
			out = append(out, rest[strings.Index(rest, " ")+1:])
		}
	}
	return out
}

// chainLines are the policy rules of an nftables ruleset, without the final drop.
func chainLines(r Ruleset) []string {
	_, chain, _ := strings.Cut(r.Rules, "chain to-")
	var out []string
	for _, l := range strings.Split(chain, "\n")[1:] {
		if l = strings.TrimSpace(l); l == "drop" {
			break
		}
		out = append(out, l)
	}
	return out
}

func TestTranslations(t *testing.T) {
	var ports16, chunk1 []string
	for p := 1; p <= 16; p++ {
		ports16 = append(ports16, fmt.Sprint(p))
	}
	chunk1 = ports16[:15]
	cases := []struct {
		name, policy      string
		fam               Family
		felix, nft        []string
		felixSets, nftSet int
	}{{
		name:   "label and ports",
		policy: "allow tcp from label app=svc-1 to ports 80,443,8000:8999",
		fam:    IPv4,
		felix:  []string{"-p tcp -m set --match-set felix-v4-bench_app_svc-1 src -m multiport --destination-ports 80,443,8000:8999 -j RETURN"},
		nft:    []string{"meta l4proto tcp ip saddr @tag_bench_app_svc-1 th dport { 80, 443, 8000-8999 } accept"},
	}, {
		name:   "cidr and source port, deny",
		policy: "deny udp from ports 53 cidr 10.1.0.0/16",
		fam:    IPv4,
		felix:  []string{"-p udp --source 10.1.0.0/16 -m multiport --source-ports 53 -j DROP"},
		nft:    []string{"meta l4proto udp ip saddr 10.1.0.0/16 th sport 53 drop"},
	}, {
		name:   "icmp type and code",
		policy: "allow icmp type 8 code 0",
		fam:    IPv4,
		felix:  []string{"-p icmp -m icmp --icmp-type 8/0 -j RETURN"},
		nft:    []string{"meta l4proto icmp icmp type 8 icmp code 0 accept"},
	}, {
		name:   "icmpv6 is not IPv4",
		policy: "allow icmpv6 type 128; allow from cidr fd00::/8; allow tcp",
		fam:    IPv4,
		felix:  []string{"-p tcp -j RETURN"},
		nft:    []string{"meta l4proto tcp accept"},
	}, {
		name:   "icmpv6",
		policy: "allow icmpv6 type 128 from cidr fd00::/8",
		fam:    IPv6,
		felix:  []string{"-p icmpv6 --source fd00::/8 -m icmp6 --icmpv6-type 128 -j RETURN"},
		nft:    []string{"meta l4proto ipv6-icmp ip6 saddr fd00::/8 icmpv6 type 128 accept"},
	}, {
		name:   "more ports than one multiport match takes",
		policy: "allow tcp to ports " + strings.Join(ports16, ","),
		fam:    IPv4,
		felix: []string{
			"-p tcp -m multiport --destination-ports " + strings.Join(chunk1, ",") + " -j RETURN",
			"-p tcp -m multiport --destination-ports 16 -j RETURN",
		},
		nft: []string{"meta l4proto tcp th dport { " + strings.Join(ports16, ", ") + " } accept"},
	}, {
		name:   "to label the pod has, and one it lacks",
		policy: "allow tcp to label app=server; allow udp to label app=other",
		fam:    IPv4,
		felix:  []string{"-p tcp -m set --match-set felix-v4-bench_app_server dst -j RETURN"},
		nft:    []string{"meta l4proto tcp ip daddr @tag_bench_app_server accept"},
	}, {
		name:   "deny rules first",
		policy: "allow tcp; deny udp; allow from cidr 10.0.0.0/8; deny tcp to ports 22",
		fam:    IPv4,
		felix: []string{
			"-p udp -j DROP",
			"-p tcp -m multiport --destination-ports 22 -j DROP",
			"-p tcp -j RETURN",
			"--source 10.0.0.0/8 -j RETURN",
		},
		nft: []string{
			"meta l4proto udp drop",
			"meta l4proto tcp th dport 22 drop",
			"meta l4proto tcp accept",
			"ip saddr 10.0.0.0/8 accept",
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := compiler.Compile(Cluster(c.policy, testAddrs))
			require.Empty(t, s.Problems)
			felix, err := Felix(s, testTarget, c.fam, false)
			require.NoError(t, err)
			require.Equal(t, c.felix, profileLines(felix))
			require.Equal(t, len(c.felix), felix.Checked)
			nft, err := NFT(s, testTarget, c.fam, false)
			require.NoError(t, err)
			require.Equal(t, c.nft, chainLines(nft))
			require.Equal(t, len(c.nft), nft.Checked)
		})
	}
}

func TestTagSets(t *testing.T) {
	s := compiler.Compile(Cluster("allow from label app=svc-7", testAddrs))
	felix, err := Felix(s, testTarget, IPv4, false)
	require.NoError(t, err)
	require.Equal(t, 1, felix.Sets)
	want := "create felix-v4-bench_app_svc-7 hash:ip family inet\n"
	for i := 7; i < otherPods; i += 50 {
		want += fmt.Sprintf("add felix-v4-bench_app_svc-7 10.1.0.%d\n", i)
	}
	require.Equal(t, want, felix.IPSets)

	nft, err := NFT(s, testTarget, IPv6, false)
	require.NoError(t, err)
	require.Contains(t, nft.Rules, "set tag_bench_app_svc-7 {\n\t\ttype ipv6_addr\n\t\telements = { fd01::7, fd01::39, fd01::6b, fd01::9d }\n")
}

func TestStateful(t *testing.T) {
	s := compiler.Compile(Cluster("allow tcp", testAddrs))
	for stateful, want := range map[bool]bool{false: false, true: true} {
		felix, err := Felix(s, testTarget, IPv4, stateful)
		require.NoError(t, err)
		require.Equal(t, want, strings.Contains(felix.Rules, "--ctstate RELATED,ESTABLISHED -j RETURN\n"))
		nft, err := NFT(s, testTarget, IPv4, stateful)
		require.NoError(t, err)
		require.Equal(t, want, strings.Contains(nft.Rules, "ct state established,related accept\n"))
	}
}

func TestNoRuleset(t *testing.T) {
	in := Cluster("allow", testAddrs)
	in.Pods[0].Annotations = nil
	s := compiler.Compile(in)
	_, err := Felix(s, testTarget, IPv4, false)
	require.ErrorIs(t, err, ErrUnnamedRule, "the namespace default policy is no rule of the language")

	in.Pods[0].Annotations = map[string]string{policy.AnnotationKey: ";"}
	s = compiler.Compile(in)
	_, err = NFT(s, testTarget, IPv4, false)
	require.ErrorIs(t, err, ErrNotEnforced, "an isolated pod")

	_, err = NFT(s, Target{Ifindex: 99}, IPv4, false)
	require.ErrorIs(t, err, ErrNoEndpoint)
}

func TestUniquelyShorten(t *testing.T) {
	require.Equal(t, "bench_app_svc-1", uniquelyShorten("bench_app_svc-1", 16))
	a, b := uniquelyShorten("bench_app_bench-client", 16), uniquelyShorten("bench_app_bench-clients", 16)
	require.Len(t, a, 16)
	require.NotEqual(t, a, b)
}

func TestParseIperf(t *testing.T) {
	cases := []struct {
		name, out string
		want      Iperf
		err       error
	}{
		{"tcp", `{"end":{"sum_sent":{"seconds":3.0,"bytes":1},"sum_received":{"seconds":3.0,"bits_per_second":1.5e10},` +
			`"cpu_utilization_percent":{"host_total":50,"host_user":1,"remote_total":25}}}`,
			Iperf{Seconds: 3, ReceivedBitsPerSecond: 1.5e10, SenderCPU: 0.5, ReceiverCPU: 0.25}, nil},
		{"no cpu", `{"end":{"sum_sent":{"seconds":2.0,"packets":300000},"sum_received":{"bits_per_second":4.7e7}}}`,
			Iperf{}, ErrIperf},
		{"busy", `{"error":"error - the server is busy running a test. try again later"}`, Iperf{}, ErrServerBusy},
		{"refused", `{"error":"error - unable to connect to server: Connection refused"}`, Iperf{}, ErrIperf},
		{"no duration", `{"end":{}}`, Iperf{}, ErrIperf},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseIperf([]byte(c.out))
			if c.err != nil {
				require.ErrorIs(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

func TestWriteSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	require.NoError(t, WriteSection(path, "first\n"))
	require.NoError(t, os.WriteFile(path, []byte("# title\n\n"+SectionBegin+"\nold\n"+SectionEnd+"\nafter\n"), 0o644))
	require.NoError(t, WriteSection(path, "new\n"))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "# title\n\n"+SectionBegin+"\nnew\n"+SectionEnd+"\nafter\n", string(b))

	require.NoError(t, os.WriteFile(path, []byte("# other\n"), 0o644))
	require.NoError(t, WriteSection(path, "appended\n"))
	b, err = os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "# other\n\n"+SectionBegin+"\nappended\n"+SectionEnd+"\n", string(b))

	require.NoError(t, os.WriteFile(path, []byte(SectionEnd+SectionBegin), 0o644))
	require.ErrorIs(t, WriteSection(path, "x"), benchdoc.ErrMarkers)
}

func TestRun(t *testing.T) {
	_, err := Run("/proc/self/ns/net", "", "true")
	require.ErrorIs(t, err, ErrOwnNetns)
}

// fakeReport has one sample of every figure, costs growing with the rules for the baselines.
func fakeReport() *Report {
	r := &Report{RuleCounts: RuleCounts, StatefulRules: 1000, Samples: map[Key][]float64{}, Installed: map[Key]string{},
		Plot: PlotFile, Seconds: 3, Repetitions: 1}
	for _, t := range []Test{TCPStream, UDPSmall} {
		for _, perCPU := range []bool{false, true} {
			r.Samples[Key{Enforcer: NoFilter, Test: t, PerCPU: perCPU}] = []float64{100, 90, 110}
			for _, e := range Enforcers {
				for i, n := range RuleCounts {
					cost := 1.0
					if e != Podwall {
						cost = float64(i + 1)
					}
					r.Samples[Key{Enforcer: e, Rules: n, Test: t, PerCPU: perCPU}] = []float64{100 / cost}
				}
				r.Samples[Key{Enforcer: e, Stateful: true, Rules: 1000, Test: t, PerCPU: perCPU}] = []float64{95}
			}
		}
	}
	return r
}

func TestReport(t *testing.T) {
	r := fakeReport()
	require.InDelta(t, 0.25, r.Ratio(Key{Enforcer: NFTables, Rules: 1000, Test: UDPSmall}), 1e-9)
	md := r.Markdown()
	require.Contains(t, md, "| nftables | 1,000 | 0.25 (0.0 Gbit/s) | 0.25 | 0.25 (25 pps) | 0.25 |")
	r.Samples[Key{Enforcer: Podwall, Rules: 1000, Test: UDPSmall, PerCPU: true}] = []float64{91, 97, 95}
	require.Contains(t, r.Markdown(), "| podwall | 1,000 | 1.00 (0.0 Gbit/s) | 1.00 | 1.00 (100 pps) | 0.95 (0.91-0.97) |",
		"the per-CPU figure with its samples' spread")
	require.Contains(t, md, "| podwall | 0.95 (0.0 Gbit/s) | 0.95 | 0.95 (95 pps) | 0.95 |")

	path := filepath.Join(t.TempDir(), PlotFile)
	require.NoError(t, r.WritePlot(path))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	require.Greater(t, img.Bounds().Dx(), 500)
}
