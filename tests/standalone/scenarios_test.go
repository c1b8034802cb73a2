package standalone

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/agent"
	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/topo"
)

func TestMain(m *testing.M) { topo.Main(m) }

// none sends from the address the kernel picks.
var none netip.Addr

// defaults are the agent's default flags.
var defaults = compiler.Options{
	DefaultPolicy:  compiler.DefaultNamespace,
	OpenNamespaces: []string{"kube-system"},
	AllowHost:      true,
	LegacyKey:      true,
}

// TestScenarios follows a pods file through the changes a cluster goes through, checking the
// maps and real traffic after each.
func TestScenarios(t *testing.T) {
	c := newCluster(t, topo.Routed)
	api, web, worker, intruder, dns := c.addPod("api"), c.addPod("web"), c.addPod("worker"), c.addPod("intruder"), c.addPod("dns")
	remoteIP := netip.MustParseAddr("10.50.0.1") // a pod of another node, behind the client
	client := c.tp.AddClient("client", remoteIP)
	node := c.tp.Node

	apiSpec := podSpec{ns: "shop", name: "api", tp: api, labels: map[string]string{"role": "backend"},
		annotations: policyOf("allow tcp from label role=frontend to ports 8080")}
	webSpec := podSpec{ns: "shop", name: "web", tp: web, labels: map[string]string{"role": "frontend"}}
	workerSpec := podSpec{ns: "shop", name: "worker", tp: worker, labels: map[string]string{"role": "worker"}}
	intruderSpec := podSpec{ns: "other", name: "intruder", tp: intruder, labels: map[string]string{"role": "frontend"}}
	// Annotations of an open namespace are ignored: this one would drop everything.
	dnsSpec := podSpec{ns: "kube-system", name: "dns", tp: dns, labels: map[string]string{"k8s-app": "dns"},
		annotations: policyOf("deny")}
	remoteSpec := podSpec{ns: "shop", name: "remote", ips: []netip.Addr{remoteIP}, labels: map[string]string{"role": "frontend"}}
	hostSpec := podSpec{ns: "shop", name: "host", node: nodeName, hostNetwork: true, ips: []netip.Addr{c.tp.NodeIPv4}}
	namespaces := []string{"shop", "other", "kube-system"}
	all := func() []podSpec {
		return []podSpec{apiSpec, webSpec, workerSpec, intruderSpec, dnsSpec, remoteSpec, hostSpec}
	}

	c.write(all(), namespaces...)
	a := c.startAgent(defaults)

	t.Run("initial", func(t *testing.T) {
		c.awaitApplied(defaults)
		topo.Expect(t,
			topo.TCP("frontend to api: rule 1 allows", web.NS, none, api.IPv4, port, true),
			topo.TCP("frontend to api over IPv6: rule 1 allows", web.NS, none, api.IPv6, port, true),
			topo.TCP("frontend to api, other port: no rule", web.NS, none, api.IPv4, otherPort, false),
			topo.TCP("worker to api: no rule", worker.NS, none, api.IPv4, port, false),
			topo.TCP("worker to api over IPv6: no rule", worker.NS, none, api.IPv6, port, false),
			topo.TCP("frontend of another namespace to api: labels are namespaced", intruder.NS, none, api.IPv4, port, false),
			topo.TCP("frontend pod of another node to api: rule 1 allows", client.NS, remoteIP, api.IPv4, port, true),
			topo.TCP("outside world to api: no rule", client.NS, none, api.IPv4, port, false),
			topo.TCP("node to api: the node's own traffic passes", node, none, api.IPv4, otherPort, true),
			topo.TCP("worker to web: default, same namespace", worker.NS, none, web.IPv4, port, true),
			topo.TCP("other namespace to web: default, same namespace only", intruder.NS, none, web.IPv4, port, false),
			topo.TCP("outside world to dns: kube-system is open", client.NS, none, dns.IPv4, port, true),
		)
		a.awaitMetric(t, 5.0, "podwall_endpoints")
		require.ElementsMatch(t, []int{api.HostIfindex, web.HostIfindex, worker.HostIfindex, intruder.HostIfindex, dns.HostIfindex}, a.dp.Attached())
		a.awaitMetric(t, 0.0, "podwall_invalid_policies")
		a.awaitMetric(t, 1.0, "podwall_policy_problems", "kind", "ignored-policy")
		require.Positive(t, a.metric("podwall_verdicts_total", "reason", "allow-rule"))
		require.Positive(t, a.metric("podwall_verdicts_total", "reason", "no-rule"))
	})

	t.Run("relabelled", func(t *testing.T) {
		workerSpec.labels = map[string]string{"role": "frontend"}
		c.write(all(), namespaces...)
		c.awaitApplied(defaults)
		topo.Expect(t, topo.TCP("worker, now a frontend, to api: rule 1 allows", worker.NS, none, api.IPv4, port, true))
	})

	t.Run("re-annotated", func(t *testing.T) {
		apiSpec.annotations = policyOf("allow tcp from label role=frontend to ports 9090")
		c.write(all(), namespaces...)
		c.awaitApplied(defaults)
		topo.Expect(t,
			topo.TCP("frontend to api, new port: rule 1 allows", web.NS, none, api.IPv4, otherPort, true),
			topo.TCP("frontend to api, old port: no rule", web.NS, none, api.IPv4, port, false),
		)
	})

	t.Run("invalid annotation", func(t *testing.T) {
		bad := "allow tcp frm label role=frontend"
		_, perr := policy.Parse(bad)
		require.Error(t, perr)
		webSpec.annotations = policyOf(bad)
		c.write(all(), namespaces...)
		c.awaitApplied(defaults)
		topo.Expect(t,
			topo.TCP("worker to web: isolated, invalid policy", worker.NS, none, web.IPv4, port, false),
			topo.TCP("node to web: the node's own traffic still passes", node, none, web.IPv4, port, true),
		)
		a.awaitMetric(t, 1.0, "podwall_invalid_policies")
		logged := a.logs.FilterMessage(perr.Error()).FilterField(zapString("pod", "shop/web"))
		require.Equal(t, 1, logged.Len(), "the parser's message is logged once; log:\n%s", a.logText())

		webSpec.annotations = nil
		c.write(all(), namespaces...)
		c.awaitApplied(defaults)
		topo.Expect(t, topo.TCP("worker to web: fixed, default policy again", worker.NS, none, web.IPv4, port, true))
		a.awaitMetric(t, 0.0, "podwall_invalid_policies")
	})

	t.Run("broken file keeps the last state", func(t *testing.T) {
		errs := a.metric("podwall_source_errors_total")
		good := c.last
		c.writeRaw([]byte("kind: List\nitems: [\n"))
		c.last = good
		requireEventually(t, func() bool { return a.metric("podwall_source_errors_total") > errs }, "source error counted")
		c.awaitApplied(defaults)
		topo.Expect(t,
			topo.TCP("frontend to api: still allowed", web.NS, none, api.IPv4, otherPort, true),
			topo.TCP("other namespace to web: still dropped", intruder.NS, none, web.IPv4, port, false),
		)
	})

	t.Run("moved to another namespace", func(t *testing.T) {
		// Deleted from one namespace and created in another: same interface, same addresses.
		intruderSpec.ns = "shop"
		c.write(all(), namespaces...)
		c.awaitApplied(defaults)
		topo.Expect(t,
			topo.TCP("moved frontend to api: rule 1 allows", intruder.NS, none, api.IPv4, otherPort, true),
			topo.TCP("moved pod to web: same namespace now", intruder.NS, none, web.IPv4, port, true),
		)
	})

	t.Run("deleted", func(t *testing.T) {
		topo.Expect(t, topo.TCP("outside world to worker: default, same namespace only", client.NS, none, worker.IPv4, port, false))
		c.write(slices.DeleteFunc(all(), func(p podSpec) bool { return p.name == "worker" }), namespaces...)
		c.awaitApplied(defaults)
		// Its interface lives on: a pod that left the source stays isolated until it goes.
		require.Contains(t, a.dp.Attached(), worker.HostIfindex)
		topo.Expect(t,
			topo.TCP("outside world to worker: gone from the file, interface alive, isolated", client.NS, none, worker.IPv4, port, false),
			topo.TCP("shop to worker: isolated too", web.NS, none, worker.IPv4, port, false),
		)
	})

	t.Run("namespace created and deleted", func(t *testing.T) {
		lab := podSpec{ns: "lab", name: "probe", tp: worker, labels: map[string]string{"role": "probe"},
			annotations: policyOf("allow from cidr 10.99.0.0/16")}
		others := slices.DeleteFunc(all(), func(p podSpec) bool { return p.name == "worker" })
		c.write(append(others, lab), append(namespaces, "lab")...)
		c.awaitApplied(defaults)
		topo.Expect(t,
			topo.TCP("outside world to the new namespace's pod: rule 1 allows", client.NS, none, worker.IPv4, port, true),
			topo.TCP("shop to the new namespace's pod: no rule", web.NS, none, worker.IPv4, port, false),
		)
		c.write(others, namespaces...)
		c.awaitApplied(defaults)
		topo.Expect(t, topo.TCP("outside world to a pod of a deleted namespace: isolated while its interface lives", client.NS, none, worker.IPv4, port, false))
	})
}

// TestInterfaces lists pods whose interface is not there yet, or no longer: they are
// reported and retried, and attached as soon as the interface appears.
func TestInterfaces(t *testing.T) {
	c := newCluster(t, topo.Routed)
	api, web := c.addPod("api"), c.addPod("web")
	// The next pod of the topology gets the next addresses; the API knows a pod's
	// addresses before its network is set up, and so does this file.
	lateIPs := []netip.Addr{netip.MustParseAddr("10.244.0.4"), netip.MustParseAddr("fd00:244::4")}
	specs := []podSpec{
		{ns: "shop", name: "api", tp: api, annotations: policyOf("allow tcp from label role=frontend")},
		{ns: "shop", name: "web", tp: web, labels: map[string]string{"role": "frontend"}},
		{ns: "shop", name: "late", node: nodeName, ips: lateIPs, labels: map[string]string{"role": "frontend"}},
	}
	c.write(specs, "shop")
	a := c.startAgentUnready(defaults)
	requireEventually(t, func() bool { return a.metric("podwall_interfaces_not_found") == 1 }, "late pod reported")
	a.awaitMetric(t, 2.0, "podwall_endpoints") // the others are guarded meanwhile
	require.Equal(t, 1, a.logs.FilterMessageSnippet("interface not found").FilterField(zapString("pod", "shop/late")).Len(),
		"reported once; log:\n%s", a.logText())
	topo.Expect(t, topo.TCP("frontend to api: rule 1 allows", web.NS, none, api.IPv4, port, true))
	_, err := os.Stat(a.ready)
	require.ErrorIs(t, err, os.ErrNotExist, "not ready while a pod is not guarded")

	late := c.addPod("late")
	require.Equal(t, lateIPs, []netip.Addr{late.IPv4, late.IPv6})
	specs[2].tp, specs[2].ips = late, nil
	c.write(specs, "shop")
	a.awaitReady()
	c.awaitApplied(defaults)
	a.awaitMetric(t, 0.0, "podwall_interfaces_not_found")
	require.Contains(t, a.dp.Attached(), late.HostIfindex)
	topo.Expect(t,
		topo.TCP("late frontend to api: rule 1 allows", late.NS, none, api.IPv4, port, true),
		topo.TCP("api to late: default, same namespace", api.NS, none, late.IPv4, port, true),
		topo.TCP("node to late", c.tp.Node, none, late.IPv6, port, true),
	)

	// The interface goes while the pod is still listed.
	nl := c.tp.Node.Handle()
	link, err := nl.LinkByIndex(web.HostIfindex)
	require.NoError(t, err)
	require.NoError(t, nl.LinkDel(link))
	requireEventually(t, func() bool { return a.metric("podwall_interfaces_not_found") == 1 }, "gone interface reported")
	requireEventually(t, func() bool { return !slices.Contains(a.dp.Attached(), web.HostIfindex) }, "gone interface detached")
	a.awaitMetric(t, 2.0, "podwall_endpoints")
}

// TestDefaultPolicy restarts the agent with each --default-policy.
func TestDefaultPolicy(t *testing.T) {
	c := newCluster(t, topo.Routed)
	a1, a2, b1 := c.addPod("a1"), c.addPod("a2"), c.addPod("b1")
	c.write([]podSpec{
		{ns: "a", name: "a1", tp: a1},
		{ns: "a", name: "a2", tp: a2},
		{ns: "b", name: "b1", tp: b1},
	}, "a", "b")
	for _, tt := range []struct {
		name                  string
		policy                compiler.DefaultPolicy
		sameNS, otherNS, host bool
	}{
		{"namespace", compiler.DefaultNamespace, true, false, true},
		{"deny", compiler.DefaultDeny, false, false, true},
		{"allow", compiler.DefaultAllow, true, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := defaults
			opts.DefaultPolicy = tt.policy
			a := c.startAgent(opts)
			c.awaitApplied(opts)
			topo.Expect(t,
				topo.TCP("same namespace", a1.NS, none, a2.IPv4, port, tt.sameNS),
				topo.TCP("other namespace", b1.NS, none, a2.IPv6, port, tt.otherNS),
				topo.TCP("node", c.tp.Node, none, a2.IPv4, port, tt.host),
			)
			a.stop()
		})
	}
}

// TestBridged finds the pods' interfaces behind a Linux bridge, from the neighbour and
// forwarding tables.
func TestBridged(t *testing.T) {
	c := newCluster(t, topo.Bridged)
	api, web, worker := c.addPod("api"), c.addPod("web"), c.addPod("worker")
	c.write([]podSpec{
		{ns: "shop", name: "api", tp: api, annotations: policyOf("allow tcp from label role=frontend to ports 8080")},
		{ns: "shop", name: "web", tp: web, labels: map[string]string{"role": "frontend"}},
		{ns: "shop", name: "worker", tp: worker, labels: map[string]string{"role": "worker"}},
	}, "shop")
	a := c.startAgent(defaults)
	c.awaitApplied(defaults)
	require.ElementsMatch(t, []int{api.HostIfindex, web.HostIfindex, worker.HostIfindex}, a.dp.Attached())
	topo.Expect(t,
		topo.TCP("frontend to api: rule 1 allows", web.NS, none, api.IPv4, port, true),
		topo.TCP("frontend to api over IPv6: rule 1 allows", web.NS, none, api.IPv6, port, true),
		topo.TCP("worker to api: no rule", worker.NS, none, api.IPv4, port, false),
		topo.TCP("worker to api over IPv6: no rule", worker.NS, none, api.IPv6, port, false),
		topo.TCP("api to worker: default, same namespace", api.NS, none, worker.IPv4, port, true),
	)
}

// TestConntrackIsCollectedAndReported: the agent runs conntrack's collector, which removes
// what expired; its metrics say how full the table is, and a table over 90% full is reported
// (a Warning Event on the node in a cluster; the log here) until it is not.
func TestConntrackIsCollectedAndReported(t *testing.T) {
	const size = 64
	c := newCluster(t, topo.Routed)
	client, server := c.addPod("client"), c.addPod("server")
	c.write([]podSpec{{ns: "shop", name: "client", tp: client}, {ns: "shop", name: "server", tp: server}}, "shop")
	a := c.startAgentUnready(defaults, func(lc *loader.Config, ac *agent.Config) {
		lc.MapSizes = map[string]uint32{bpf.PodwallMapConntrack4: size, bpf.PodwallMapConntrack6: size}
		lc.Constants = map[string]any{"ct_timeout_udp_ns": uint64(2 * time.Second)}
		ac.ConntrackGC = 200 * time.Millisecond
	})
	a.awaitReady()
	c.awaitApplied(defaults)

	// More UDP flows than the table holds, each a datagram from the client's own address.
	require.NoError(t, client.NS.Do(func() error {
		conn, err := net.ListenUDP("udp", nil)
		if err != nil {
			return err
		}
		defer conn.Close()
		for port := range uint16(2 * size) {
			if _, err := conn.WriteToUDPAddrPort([]byte("x"), netip.AddrPortFrom(server.IPv4, 20000+port)); err != nil {
				return err
			}
		}
		return nil
	}))
	a.awaitMetric(t, size, "podwall_conntrack_capacity", "family", "ipv4")
	requireEventually(t, func() bool { return a.metric("podwall_conntrack_entries", "family", "ipv4") >= 0.9*size }, "conntrack nearly full")
	requireEventually(t, func() bool {
		return a.logs.FilterField(zapString("kind", "conntrack-nearly-full")).FilterMessageSnippet("over 90% full").Len() == 1
	}, "the nearly full table reported")
	require.Positive(t, a.metric("podwall_verdicts_total", "reason", "ct-full"), "inserts that found no room")

	// The flows expire and the collector removes them.
	requireEventually(t, func() bool { return a.metric("podwall_conntrack_gc_removed_total", "why", "expired") >= 0.9*size }, "expired flows removed")
	requireEventually(t, func() bool {
		return a.logs.FilterField(zapString("kind", "conntrack-nearly-full")).FilterMessage("resolved").Len() == 1
	}, "the report resolved")
	require.Less(t, a.metric("podwall_conntrack_entries", "family", "ipv4"), 0.9*size)
}
