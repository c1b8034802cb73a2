package bench

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/tests/topo"
)

func TestMain(m *testing.M) { topo.Main(m) }

// dropWait bounds the wait for an answer that must not come.
const dropWait = 300 * time.Millisecond

// TestRulesets proves what the benchmark relies on, for every enforcer and mode: the
// benchmark's traffic gets in by the policy's last rule, and only by it (with the other rules
// alone it is dropped), and what no rule allows is dropped.
func TestRulesets(t *testing.T) {
	const rules = 10
	full := PolicyText(rules)
	fillersOnly := strings.TrimSuffix(full, "; "+LastRule)
	require.NotEqual(t, full, fillersOnly)

	for _, stateful := range []bool{false, true} {
		for _, e := range Enforcers {
			s := newSetup(t, e, stateful)
			t.Run(s.String(), func(t *testing.T) {
				s.pod.Echo(t, port)
				to := netip.AddrPortFrom(s.pod.IPv4, port)

				st, err := s.compile(fillersOnly)
				require.NoError(t, err)
				_, err = s.install(st)
				require.NoError(t, err)
				require.ErrorIs(t, topo.TCPEcho(s.client.NS, to, topo.Timeout(dropWait)), topo.ErrNoAnswer, "tcp, no last rule")
				require.ErrorIs(t, topo.UDPEcho(s.client.NS, to, topo.Timeout(dropWait)), topo.ErrNoAnswer, "udp, no last rule")

				st, err = s.compile(full)
				require.NoError(t, err)
				installed, err := s.install(st)
				require.NoError(t, err)
				require.NotEmpty(t, installed)
				require.NoError(t, topo.TCPEcho(s.client.NS, to), "tcp")
				require.NoError(t, topo.UDPEcho(s.client.NS, to), "udp")
				for _, send := range []func(*topo.Netns, netip.AddrPort, ...topo.Option) error{topo.TCPEcho, topo.UDPEcho} {
					require.ErrorIs(t, send(s.client.NS, to, topo.From(stranger), topo.Timeout(dropWait)), topo.ErrNoAnswer,
						"from an address of no pod")
				}
			})
		}
	}
}

// TestLastRuleDecides checks with the reference evaluator that the benchmark's packets are
// allowed by the last rule at every rule count.
func TestLastRuleDecides(t *testing.T) {
	a := Addrs{
		Server:        []netip.Addr{netip.MustParseAddr("10.244.0.2"), netip.MustParseAddr("fd00:244::2")},
		Client:        []netip.Addr{netip.MustParseAddr("10.99.1.2"), netip.MustParseAddr("fd00:99:1::2")},
		Node:          []netip.Addr{netip.MustParseAddr("10.0.0.1")},
		ServerIfindex: 2,
	}
	for _, n := range RuleCounts {
		st := compiler.Compile(Cluster(PolicyText(n), a))
		require.Empty(t, st.Problems)
		for _, proto := range []uint8{6, 17} {
			v := compiler.Evaluate(st, a.ServerIfindex, compiler.Packet{
				Src: a.Client[0], Dst: a.Server[0], Proto: proto, SrcPort: 40000, DstPort: port,
			})
			require.Equal(t, bpf.ReasonAllowRule, v.Reason, "%d rules, protocol %d", n, proto)
			require.Equal(t, n, st.Policies[v.Policy].Rules[v.Rule].Index, "%d rules, protocol %d", n, proto)
		}
	}
}

// TestIperf runs each iperf3 test once, briefly, and reads a rate from it.
func TestIperf(t *testing.T) {
	s := newSetup(t, Podwall, false)
	s.serve(t)
	st, err := s.compile(PolicyText(10))
	require.NoError(t, err)
	_, err = s.install(st)
	require.NoError(t, err)
	for _, test := range []Test{TCPStream, UDPSmall} {
		rate, perCPU, err := s.measure(test, 1)
		require.NoError(t, err, string(test))
		require.Positive(t, rate, string(test))
		require.Positive(t, perCPU, string(test))
	}
}
