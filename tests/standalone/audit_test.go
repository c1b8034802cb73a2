package standalone

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/agent"
	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/topo"
)

// webPolicy is web's policy in the audit tests: rule 1 (bit 0) allows UDP 8080, rule 2 (bit 1)
// denies UDP 9090, and TCP 9090 matches no rule.
const webPolicy = "allow udp to ports 8080; deny udp to ports 9090; allow tcp to ports 8080"

// TestAuditMode checks audit mode per pod, per namespace and per node on real traffic: what
// the policy drops passes and is reported with the rule that would have dropped it, and
// leaving audit mode drops the next new flow and cuts the flows it let through.
func TestAuditMode(t *testing.T) {
	c := newCluster(t, topo.Routed)
	web := c.addPod("web")
	client := c.tp.AddClient("client")

	audited := func(value string) podSpec {
		ann := policyOf(webPolicy)
		if value != "" {
			ann[policy.AuditAnnotationKey] = value
		}
		return podSpec{ns: "shop", name: "web", tp: web, annotations: ann}
	}
	setNamespace := func(value string) {
		c.nsAnnotations = nil
		if value != "" {
			c.nsAnnotations = map[string]map[string]string{"shop": {policy.AuditAnnotationKey: value}}
		}
	}
	wouldDrop := func(pass bool) []topo.Check {
		return []topo.Check{
			topo.UDP("rule 1 allows", client.NS, none, web.IPv4, port, true),
			topo.UDP("rule 2 denies", client.NS, none, web.IPv4, otherPort, pass),
			topo.TCP("no rule allows", client.NS, none, web.IPv4, otherPort, pass),
			topo.TCP("no rule allows, over IPv6", client.NS, none, web.IPv6, otherPort, pass),
		}
	}

	c.write([]podSpec{audited("")}, "shop")
	a := c.startAgent(defaults)
	c.awaitApplied(defaults)
	events := openEvents(t, c)
	t.Run("enforced", func(t *testing.T) {
		topo.Expect(t, wouldDrop(false)...)
	})

	var kept *topo.Conn
	t.Run("the pod's annotation", func(t *testing.T) {
		c.write([]podSpec{audited("true")}, "shop")
		c.awaitApplied(defaults)
		events.drain(t)
		topo.Expect(t, wouldDrop(true)...)
		ev := events.find(t, func(ev bpf.PodwallEvent) bool {
			return ev.Verdict == bpf.VerdictAudit && ev.Proto == 17 && ev.Dport == htons(otherPort)
		})
		require.Equal(t, bpf.HookTC, ev.Hook)
		require.Equal(t, bpf.ReasonDenyRule, bpf.Reason(ev.Reason))
		require.Equal(t, uint32(1), ev.Rule, "rule 2 would have dropped it")
		require.Equal(t, compiler.AddrKey(client.IPv4), ev.Src)
		require.Equal(t, uint32(web.HostIfindex), ev.Ifindex)
		ev = events.find(t, func(ev bpf.PodwallEvent) bool {
			return ev.Verdict == bpf.VerdictAudit && ev.Proto == 6 && ev.Dport == htons(otherPort)
		})
		require.Equal(t, bpf.ReasonNoRule, bpf.Reason(ev.Reason))

		audits, err := a.dp.Audits()
		require.NoError(t, err)
		require.Positive(t, audits[bpf.ReasonDenyRule])
		require.Positive(t, audits[bpf.ReasonNoRule])
		a.awaitMetric(t, float64(audits[bpf.ReasonDenyRule]), "podwall_audits_total", "reason", "deny-rule")
		// The status is kept at the end of the reconcile, after the epoch's wait that follows
		// the endpoint's write the maps already show.
		var status []agent.PodStatus
		require.Eventually(t, func() bool {
			var err error
			status, err = a.agent.Status()
			require.NoError(t, err)
			require.Len(t, status, 1)
			return status[0].Mode == "audit"
		}, applyWait, 10*time.Millisecond, "status: %+v", status)
		// One datagram dropped while enforced, one passed in audit mode.
		require.Equal(t, uint64(2), status[0].Rules[1].Packets)
		require.Equal(t, uint64(1), status[0].Rules[1].Audited, "rule 2 would have dropped it")
		require.Equal(t, status[0].Rules[1].Audited+status[0].Rules[3].Audited, status[0].Audited)

		kept, err = topo.DialTCP(t, client.NS, netip.AddrPortFrom(web.IPv4, otherPort), topo.Timeout(topo.PassWait))
		require.NoError(t, err, "a flow audit mode lets through")
	})

	t.Run("audit off", func(t *testing.T) {
		c.write([]podSpec{audited("")}, "shop")
		c.awaitApplied(defaults)
		topo.Expect(t, wouldDrop(false)...)
		require.NotNil(t, kept)
		require.Error(t, kept.Echo(), "the flow audit mode let through is cut")
	})

	t.Run("the namespace's annotation", func(t *testing.T) {
		setNamespace("true")
		c.write([]podSpec{audited("")}, "shop")
		c.awaitApplied(defaults)
		topo.Expect(t, wouldDrop(true)...)

		// The pod's own annotation wins.
		c.write([]podSpec{audited("false")}, "shop")
		c.awaitApplied(defaults)
		topo.Expect(t, wouldDrop(false)...)

		// A value that is neither true nor false enforces, and says so.
		c.write([]podSpec{audited("yes")}, "shop")
		c.awaitApplied(defaults)
		topo.Expect(t, wouldDrop(false)...)
		a.awaitMetric(t, 1.0, "podwall_policy_problems", "kind", "invalid-audit")
		setNamespace("")
	})

	t.Run("the node's flag", func(t *testing.T) {
		a.stop()
		node := defaults
		node.Audit = true
		c.write([]podSpec{audited("")}, "shop")
		c.startAgent(node)
		c.awaitApplied(node)
		topo.Expect(t, wouldDrop(true)...)

		// The namespace's false wins over the node's flag.
		setNamespace("false")
		c.write([]podSpec{audited("")}, "shop")
		c.awaitApplied(node)
		topo.Expect(t, wouldDrop(false)...)
		setNamespace("")
	})
}

// TestRuleCountersAndStatus checks that each rule counts exactly the packets a probe sends
// it, allowed and denied, and that the agent's /status says so with every other field.
func TestRuleCountersAndStatus(t *testing.T) {
	c := newCluster(t, topo.Routed)
	web := c.addPod("web")
	client := c.tp.AddClient("client")
	c.write([]podSpec{{ns: "shop", name: "web", tp: web, annotations: policyOf(webPolicy)}}, "shop")
	a := c.startAgent(defaults)
	c.awaitApplied(defaults)
	applied := time.Now()

	const allowed, denied = 7, 5
	sendUDP(t, client.NS, netip.AddrPortFrom(web.IPv4, port), allowed, true)
	sendUDP(t, client.NS, netip.AddrPortFrom(web.IPv4, otherPort), denied, false)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	addr, _, err := agent.Serve(ctx, "127.0.0.1:0", a.agent)
	require.NoError(t, err)
	var pods []agent.PodStatus
	requireEventually(t, func() bool {
		pods = fetchStatus(t, addr)
		return len(pods) == 1 && pods[0].Dropped == denied
	}, "the denied datagrams are counted")
	p := pods[0]
	require.Equal(t, "shop", p.Namespace)
	require.Equal(t, "web", p.Name)
	require.Equal(t, web.HostIfname, p.Interface)
	require.Equal(t, uint32(web.HostIfindex), p.Ifindex)
	require.Equal(t, string(a.dp.Mode()), p.Attach)
	require.Equal(t, "enforce", p.Mode)
	require.Empty(t, p.Why)
	state := c.expected(defaults)
	ep := state.Endpoints[uint32(web.HostIfindex)]
	require.Regexp(t, `^0x[0-9a-f]{8}$`, p.Policy)
	require.Equal(t, ep.Generation, p.Generation)
	require.NotNil(t, p.EnforcedSince)
	require.WithinDuration(t, applied, *p.EnforcedSince, applyWait)
	require.Equal(t, []agent.RuleStatus{
		{Rule: "1", Text: "allow udp to ports 8080", Packets: allowed, Flows: 1},
		{Rule: "2", Text: "deny udp to ports 9090", Deny: true, Packets: denied, Flows: denied},
		{Rule: "3", Text: "allow tcp to ports 8080"},
		{Rule: "-", Text: "(no rule matched)", Deny: true},
	}, p.Rules)
	require.Equal(t, uint64(allowed), p.Allowed)
	require.Equal(t, uint64(denied), p.Dropped)
	require.Zero(t, p.Audited)
	require.False(t, p.Uncounted)

	// The rule metrics: the top rules by default.
	a.awaitMetric(t, allowed, "podwall_rule_hits_total", "namespace", "shop", "pod", "web", "rule", "allow udp to ports 8080")
	a.awaitMetric(t, denied, "podwall_rule_hits_total", "namespace", "shop", "pod", "web", "rule", "deny udp to ports 9090")
	a.awaitMetric(t, denied, "podwall_rule_flows_total", "namespace", "shop", "pod", "web", "rule", "deny udp to ports 9090")

	// A policy change that keeps a rule's text keeps its counts; a restart keeps them all.
	c.write([]podSpec{{ns: "shop", name: "web", tp: web, annotations: policyOf("deny udp to ports 9090; allow udp to ports 8080")}}, "shop")
	c.awaitApplied(defaults)
	a.stop()
	a = c.startAgent(defaults)
	addr, _, err = agent.Serve(ctx, "127.0.0.1:0", a.agent)
	require.NoError(t, err)
	p = fetchStatus(t, addr)[0]
	require.Equal(t, []agent.RuleStatus{
		{Rule: "1", Text: "deny udp to ports 9090", Deny: true, Packets: denied, Flows: denied},
		{Rule: "2", Text: "allow udp to ports 8080", Packets: allowed, Flows: 1},
		{Rule: "-", Text: "(no rule matched)", Deny: true},
	}, p.Rules)
}

// sendUDP sends n datagrams from one socket of ns to to; when answered, it waits for each
// echo, so that all are counted once it returns.
func sendUDP(t *testing.T, ns *topo.Netns, to netip.AddrPort, n int, answered bool) {
	t.Helper()
	var conn *net.UDPConn
	require.NoError(t, ns.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
		return err
	}))
	defer conn.Close()
	buf := make([]byte, 64)
	for range n {
		_, err := conn.Write([]byte("probe"))
		require.NoError(t, err)
		if answered {
			require.NoError(t, conn.SetReadDeadline(time.Now().Add(topo.PassWait)))
			_, err := conn.Read(buf)
			require.NoError(t, err, "echo from %s", to)
		}
	}
}

func fetchStatus(t *testing.T, addr net.Addr) []agent.PodStatus {
	t.Helper()
	resp, err := http.Get("http://" + addr.String() + "/status")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var pods []agent.PodStatus
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&pods))
	return pods
}

func htons(p uint16) uint16 { return p<<8 | p>>8 }

// eventReader reads the pinned ring buffer, as podwall monitor does.
type eventReader struct{ r *ringbuf.Reader }

func openEvents(t *testing.T, c *cluster) *eventReader {
	t.Helper()
	path := filepath.Join(loader.StateDir(c.bpffs), "maps", bpf.PodwallMapEvents)
	// The agent creates the map; open it once it is pinned.
	var m *ebpf.Map
	requireEventually(t, func() bool {
		var err error
		m, err = ebpf.LoadPinnedMap(path, nil)
		return err == nil
	}, "the events map is pinned")
	t.Cleanup(func() { m.Close() })
	r, err := ringbuf.NewReader(m)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return &eventReader{r: r}
}

func (e *eventReader) drain(t *testing.T) {
	t.Helper()
	for {
		e.r.SetDeadline(time.Now())
		if _, err := e.r.Read(); err != nil {
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			return
		}
	}
}

// find reads events until one matches, failing after applyWait.
func (e *eventReader) find(t *testing.T, match func(bpf.PodwallEvent) bool) bpf.PodwallEvent {
	t.Helper()
	e.r.SetDeadline(time.Now().Add(applyWait))
	for {
		rec, err := e.r.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("no such event")
		}
		require.NoError(t, err)
		var ev bpf.PodwallEvent
		require.NoError(t, binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &ev))
		if match(ev) {
			return ev
		}
	}
}
