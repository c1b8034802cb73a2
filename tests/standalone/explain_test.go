package standalone

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/tests/proc"
	"github.com/podwall/podwall/tests/topo"
)

// explained is what `podwall explain` printed on a node, line by line.
type explained struct {
	flow     string // the first line: the flow and the kernel's verdict
	verdict  string
	kernel   string
	newConn  string // "kernel, as a new connection": for a connection the node tracks
	model    string
	why      string
	disagree string
	code     int
	stderr   string
}

// explainOn runs `podwall explain` in the node namespace against the agent's pinned state and
// pods file, and splits its output into fields.
func (c *cluster) explainOn(t *testing.T, bin string, args ...string) explained {
	t.Helper()
	argv := append([]string{"--net=" + c.tp.Node.Path, "--", bin, "explain", "--bpffs", c.bpffs, "--pods-file", c.file}, args...)
	cmd := exec.Command("nsenter", argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var e explained
	var exit *exec.ExitError
	if err := cmd.Run(); errors.As(err, &exit) {
		e.code = exit.ExitCode()
	} else {
		require.NoError(t, err)
	}
	e.stderr = stderr.String()
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	require.GreaterOrEqual(t, len(lines), 4, "output:\n%s\nstderr: %s", stdout.String(), e.stderr)
	e.flow, e.verdict, _ = strings.Cut(lines[0], ": ")
	for _, l := range lines[1:] {
		field := map[string]*string{"  kernel: ": &e.kernel, "  kernel, as a new connection: ": &e.newConn,
			"  model:  ": &e.model, "DISAGREE: ": &e.disagree}
		known := false
		for prefix, f := range field {
			if rest, ok := strings.CutPrefix(l, prefix); ok {
				*f, known = rest, true
			}
		}
		if !known && e.why == "" && strings.HasPrefix(l, "  ") {
			e.why = strings.TrimPrefix(l, "  ")
		}
	}
	return e
}

// TestExplainOnTheNode runs `podwall explain` against the agent's live state: for each
// question, the kernel's verdict, reason and rule, the model's, the explanation, and the exit
// status; and explaining changes neither the node's conntrack nor its counters.
func TestExplainOnTheNode(t *testing.T) {
	bin := proc.BuildPodwall(t)
	c := newCluster(t, topo.Routed)
	api, web, worker := c.addPod("api"), c.addPod("web"), c.addPod("worker")
	c.write([]podSpec{
		{ns: "shop", name: "api", tp: api, labels: map[string]string{"role": "backend"},
			annotations: policyOf("allow tcp from label role=frontend to ports 8080; deny tcp from label role=worker")},
		{ns: "shop", name: "web", tp: web, labels: map[string]string{"role": "frontend"}},
		{ns: "shop", name: "worker", tp: worker, labels: map[string]string{"role": "worker"}},
	}, "shop")
	// Ready: the state is applied and every pod attached.
	a := c.startAgent(defaults)

	conn, err := topo.DialTCP(t, web.NS, netip.AddrPortFrom(api.IPv4, port))
	require.NoError(t, err)
	// Until its last delayed ACK has passed.
	time.Sleep(300 * time.Millisecond)
	established := conn.LocalAddr().Port()
	tracked := bpf.CtFlow{Pod: api.IPv4, Remote: web.IPv4,
		PodPort: netOrder(port), RemotePort: netOrder(established), Proto: 6, Ifindex: uint32(api.HostIfindex)}
	var entry bpf.PodwallCtEntry
	require.NoError(t, a.dp.Maps().Conntrack4.Lookup(tracked.Key(), &entry), "the connection's conntrack entry")
	stats := explainedVerdicts(t, a)
	var web0 bpf.PodwallEndpointEntry
	require.NoError(t, a.dp.Maps().Endpoints.Lookup(uint32(web.HostIfindex), &web0))
	webPolicy := web0.Ep.Policy

	rule1 := "rule 1 (allow tcp from label role=frontend to ports 8080)"
	rule2 := "rule 2 (deny tcp from label role=worker)"
	flow := func(from, to *topo.Pod, what string) string {
		return fmt.Sprintf("shop/%s (%s) -> shop/%s (%s) %s", from.Name, from.IPv4, to.Name, to.IPv4, what)
	}
	for _, tt := range []struct {
		name string
		args []string
		want explained
	}{
		{name: "allowed by a rule", args: []string{"shop/web", "shop/api", "tcp:8080"}, want: explained{flow: flow(web, api, "tcp port 8080"), verdict: "PASS",
			kernel: "PASS allow-rule, " + rule1, model: "PASS allow-rule, " + rule1,
			why: rule1 + " of shop/api allows it"}},
		{name: "denied by a rule", args: []string{"shop/worker", "shop/api", "tcp:8080"}, want: explained{flow: flow(worker, api, "tcp port 8080"), verdict: "DROP",
			kernel: "DROP deny-rule, " + rule2, model: "DROP deny-rule, " + rule2,
			why: rule2 + " of shop/api denies it (deny wins over allow)"}},
		{name: "no rule", args: []string{"shop/web", "shop/api", "udp:8080"}, want: explained{flow: flow(web, api, "udp port 8080"), verdict: "DROP",
			kernel: "DROP no-rule", model: "DROP no-rule", why: "no rule of shop/api allows it"}},
		{name: "established", args: []string{"--sport", strconv.Itoa(int(established)), "shop/web", "shop/api", "tcp:8080"}, want: explained{flow: flow(web, api, "tcp port 8080"), verdict: "PASS",
			kernel: "PASS established (on the conntrack entry of the connection)", newConn: "PASS allow-rule, " + rule1,
			model: "PASS allow-rule, " + rule1, why: rule1 + " of shop/api allows it"}},
		// The agent's policy for web is not one explain compiles: the kernel's rule has no text.
		{name: "explain's flags are not the agent's", args: []string{"--default-policy", "deny", "shop/worker", "shop/web", "tcp:8080"}, want: explained{flow: flow(worker, web, "tcp port 8080"), verdict: "PASS",
			kernel: fmt.Sprintf("PASS allow-rule, rule bit 0 of policy %#08x, which the model does not have", webPolicy), model: "DROP isolated",
			why:      "shop/web is isolated: it has no policy annotation and --default-policy is deny",
			disagree: fmt.Sprintf("the kernel says PASS allow-rule, rule bit 0 of policy %#08x, which the model does not have; the model says DROP isolated", webPolicy),
			code:     1, stderr: "podwall: the kernel and the model disagree\n"}},
		{name: "explain's flags are the agent's", args: []string{"shop/worker", "shop/web", "tcp:8080"}, want: explained{flow: flow(worker, web, "tcp port 8080"), verdict: "PASS",
			kernel: "PASS allow-rule, the default (allow from namespace shop (default policy))", model: "PASS allow-rule, the default (allow from namespace shop (default policy))",
			why: "the default (allow from namespace shop (default policy)) of shop/web allows it"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, c.explainOn(t, bin, tt.args...))
		})
	}
	var after bpf.PodwallCtEntry
	require.NoError(t, a.dp.Maps().Conntrack4.Lookup(tracked.Key(), &after))
	require.Equal(t, entry, after, "the connection's conntrack entry is as it was")
	require.Equal(t, stats, explainedVerdicts(t, a), "the node's counters are as they were")
	require.NoError(t, conn.Echo(), "the connection still works")
}

// explainedVerdicts reads the node's counters of the reasons the test's questions get: the
// node's kernel may send the pods other packets at any time (neighbour discovery, multicast
// listener queries).
func explainedVerdicts(t *testing.T, a *runningAgent) map[bpf.Reason]uint64 {
	t.Helper()
	v, err := a.dp.Verdicts()
	require.NoError(t, err)
	out := map[bpf.Reason]uint64{}
	for _, r := range []bpf.Reason{bpf.ReasonAllowRule, bpf.ReasonDenyRule, bpf.ReasonNoRule, bpf.ReasonEstablished, bpf.ReasonIsolated} {
		out[r] = v[r]
	}
	return out
}

// netOrder is a port as the kernel's keys hold it, in network byte order.
func netOrder(port uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], port)
	return binary.NativeEndian.Uint16(b[:])
}
