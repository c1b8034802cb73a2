package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/tests/benchdoc"
	"github.com/podwall/podwall/tests/topo"
)

const (
	// port is where the pod's servers listen (iperf3's own port).
	port = 5201
	// serverWait bounds the wait for iperf3's server to listen.
	serverWait = 5 * time.Second
	// busyRetries is how often a client retries while the server still finishes its last test.
	busyRetries = 20
)

// stranger is an extra address of the client that belongs to no pod: no rule lets it in.
var stranger = netip.MustParseAddr("198.51.100.7")

// setup is one enforcer's topology: a routed node namespace, the server pod and a client.
type setup struct {
	enforcer string
	stateful bool
	tp       *topo.Topology
	pod      *topo.Pod
	client   *topo.Client
	target   Target
	dp       *datapath.Datapath // podwall only
}

func newSetup(tb testing.TB, enforcer string, stateful bool) *setup {
	tb.Helper()
	tp := topo.New(tb, topo.Routed)
	s := &setup{enforcer: enforcer, stateful: stateful, tp: tp, pod: tp.AddPod("server"),
		client: tp.AddClient("client", stranger)}
	s.target = Target{Ifindex: uint32(s.pod.HostIfindex), Ifname: s.pod.HostIfname, Namespace: Namespace}
	if enforcer != Podwall {
		return s
	}
	cfg := loader.Config{BPFFS: topo.BPFFS(tb), Netns: tp.Node.Path}
	if !stateful {
		// A timeout of 0 makes every conntrack entry expired at once: each packet is judged
		// by the rules, and its entry looked up and written again.
		cfg.Constants = map[string]any{"ct_timeout_tcp_ns": uint64(0), "ct_timeout_udp_ns": uint64(0)}
	}
	dp, err := datapath.Open(cfg)
	require.NoError(tb, err, "open the data path")
	tb.Cleanup(func() { assert.NoError(tb, dp.Uninstall(), "uninstall the data path") })
	require.NoError(tb, dp.Attach(s.pod.HostIfindex), "attach to the pod")
	s.dp = dp
	return s
}

func (s *setup) String() string {
	if s.stateful {
		return s.enforcer + " (as deployed)"
	}
	return s.enforcer
}

func (s *setup) addrs() Addrs {
	return Addrs{
		Server:        []netip.Addr{s.pod.IPv4, s.pod.IPv6},
		Client:        []netip.Addr{s.client.IPv4, s.client.IPv6},
		Node:          []netip.Addr{s.tp.NodeIPv4, s.tp.NodeIPv6},
		ServerIfindex: s.target.Ifindex,
	}
}

// compile compiles the benchmark's cluster for this topology with the server's policy.
func (s *setup) compile(policy string) (*compiler.State, error) {
	st := compiler.Compile(Cluster(policy, s.addrs()))
	if len(st.Problems) > 0 {
		return nil, fmt.Errorf("compile: %v", st.Problems[0].Err)
	}
	return st, nil
}

// install makes the enforcer enforce the compiled policy on the pod, replacing what it had,
// and says what it installed for IPv4.
func (s *setup) install(st *compiler.State) (string, error) {
	switch s.enforcer {
	case Podwall:
		if err := s.dp.Apply(st); err != nil {
			return "", fmt.Errorf("apply: %w", err)
		}
		p := st.Policies[st.Endpoints[s.target.Ifindex].Policy]
		return "1 endpoint entry, " + plural(len(p.Ident)+len(p.CIDR)+len(p.Port)+len(p.ICMP), "classifier entry"), nil
	case IPTables:
		return s.installFelix(st)
	case NFTables:
		return s.installNFT(st)
	}
	return "", nil
}

func (s *setup) installFelix(st *compiler.State) (string, error) {
	v4, err := Felix(st, s.target, IPv4, s.stateful)
	if err != nil {
		return "", err
	}
	v6, err := Felix(st, s.target, IPv6, s.stateful)
	if err != nil {
		return "", err
	}
	node := s.tp.Node.Path
	// The sets can be replaced only while no rule refers to them.
	const empty = "*filter\nCOMMIT\n"
	steps := []struct {
		stdin string
		cmd   []string
	}{
		{empty, []string{"iptables-legacy-restore"}},
		{empty, []string{"ip6tables-legacy-restore"}},
		{"", []string{"ipset", "destroy"}},
		{v4.IPSets + v6.IPSets, []string{"ipset", "restore"}},
		{v4.Rules, []string{"iptables-legacy-restore"}},
		{v6.Rules, []string{"ip6tables-legacy-restore"}},
	}
	for _, step := range steps {
		if _, err := Run(node, step.stdin, step.cmd[0], step.cmd[1:]...); err != nil {
			return "", err
		}
	}
	return plural(v4.Checked, "chain rule") + ", " + plural(v4.Sets, "ipset"), nil
}

func (s *setup) installNFT(st *compiler.State) (string, error) {
	v4, err := NFT(st, s.target, IPv4, s.stateful)
	if err != nil {
		return "", err
	}
	v6, err := NFT(st, s.target, IPv6, s.stateful)
	if err != nil {
		return "", err
	}
	if _, err := Run(s.tp.Node.Path, "flush ruleset\n"+v4.Rules+v6.Rules, "nft", "-f", "-"); err != nil {
		return "", err
	}
	return plural(v4.Checked, "chain rule") + ", " + plural(v4.Sets, "set"), nil
}

// plural is n things, written out.
func plural(n int, thing string) string {
	switch {
	case n == 1:
		return "1 " + thing
	case strings.HasSuffix(thing, "y"):
		return benchdoc.Thousands(n) + " " + strings.TrimSuffix(thing, "y") + "ies"
	}
	return benchdoc.Thousands(n) + " " + thing + "s"
}

// serve starts iperf3's server in the pod, stopped when the test ends.
func (s *setup) serve(tb testing.TB) {
	tb.Helper()
	s.serveOn(tb, port)
}

// serveOn starts an iperf3 server in the pod on p, stopped when the test ends.
func (s *setup) serveOn(tb testing.TB, p int) {
	tb.Helper()
	cmd, err := Cmd(s.pod.NS.Path, "iperf3", "-s", "-p", strconv.Itoa(p))
	require.NoError(tb, err)
	require.NoError(tb, cmd.Start(), "start iperf3 server")
	tb.Cleanup(func() {
		assert.NoError(tb, cmd.Process.Kill(), "stop iperf3 server")
		_ = cmd.Wait() // it was killed: the error only says so
	})
	deadline := time.Now().Add(serverWait)
	for {
		ok, err := listening(s.pod.NS, p)
		require.NoError(tb, err)
		if ok {
			return
		}
		require.True(tb, time.Now().Before(deadline), "iperf3 server on port %d in %s not listening after %s", p, s.pod.NS.Name, serverWait)
		time.Sleep(10 * time.Millisecond)
	}
}

// listening says whether a TCP socket of ns listens on port.
func listening(ns *topo.Netns, port int) (bool, error) {
	found := false
	err := ns.Do(func() error {
		for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
			b, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("read %s: %w", f, err)
			}
			for _, line := range strings.Split(string(b), "\n") {
				// "sl local_address rem_address st ...": 0A is LISTEN.
				if fl := strings.Fields(line); len(fl) > 3 && strings.HasSuffix(fl[1], fmt.Sprintf(":%04X", port)) && fl[3] == "0A" {
					found = true
				}
			}
		}
		return nil
	})
	return found, err
}

// measure runs one iperf3 test from the client to the pod: the TCP stream's received bit
// rate, or the UDP packets per second the pod's interface received; and that rate per CPU
// the iperf3 processes used (Key.PerCPU).
func (s *setup) measure(t Test, seconds int) (rate, perCPU float64, err error) {
	args := []string{"-c", s.pod.IPv4.String(), "-p", strconv.Itoa(port), "-t", strconv.Itoa(seconds), "-J"}
	if t == UDPSmall {
		args = append(args, "-u", "-b", "0", "-l", "64")
	}
	for attempt := 0; ; attempt++ {
		before, err := s.podRxPackets()
		if err != nil {
			return 0, 0, err
		}
		out, runErr := Run(s.client.NS.Path, "", "iperf3", args...)
		res, err := ParseIperf(out)
		if errors.Is(err, ErrServerBusy) && attempt < busyRetries {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if err := errors.Join(err, runErr); err != nil {
			return 0, 0, err
		}
		after, err := s.podRxPackets()
		if err != nil {
			return 0, 0, err
		}
		if t == TCPStream {
			rate = res.ReceivedBitsPerSecond
			return rate, rate / (res.SenderCPU + res.ReceiverCPU), nil
		}
		rate = float64(after-before) / res.Seconds
		return rate, rate / res.SenderCPU, nil
	}
}

// podRxPackets counts the packets the pod's interface has received.
func (s *setup) podRxPackets() (uint64, error) {
	link, err := s.pod.NS.Handle().LinkByName("eth0")
	if err != nil {
		return 0, fmt.Errorf("find the pod's eth0: %w", err)
	}
	if link.Attrs().Statistics == nil {
		return 0, errors.New("the pod's eth0 has no statistics")
	}
	return link.Attrs().Statistics.RxPackets, nil
}
