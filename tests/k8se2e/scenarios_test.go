package k8se2e

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/agent"
	"github.com/podwall/podwall/k8s"
	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/proc"
	"github.com/podwall/podwall/tests/topo"
)

func TestMain(m *testing.M) { topo.Main(m) }

// TestScenarios runs the podwall binary against a real API server and takes the cluster
// through what clusters go through, checking the maps and real traffic after each step.
func TestScenarios(t *testing.T) {
	bin := proc.BuildPodwall(t)
	e := newEnv(t)
	api, web, worker, intruder, dns, late := e.addPod("api"), e.addPod("web"), e.addPod("worker"),
		e.addPod("intruder"), e.addPod("dns"), e.addPod("late")
	remoteIP := netip.MustParseAddr("10.50.0.1") // a pod of another node, behind the client
	client := e.tp.AddClient("client", remoteIP)
	node := e.tp.Node

	e.api.CreateNamespace(t, "shop", nil)
	e.api.CreateNamespace(t, "other", nil)
	apiPod := podSpec{ns: "shop", name: "api", tp: api, labels: map[string]string{"role": "backend"},
		annotations: policyOf("allow tcp from label role=frontend to ports 8080")}
	for _, p := range []podSpec{
		apiPod,
		{ns: "shop", name: "web", tp: web, labels: map[string]string{"role": "frontend"}},
		{ns: "shop", name: "worker", tp: worker, labels: map[string]string{"role": "worker"}},
		{ns: "other", name: "intruder", tp: intruder, labels: map[string]string{"role": "frontend"}},
		// Annotations of an open namespace are ignored: this one would drop everything.
		{ns: "kube-system", name: "dns", tp: dns, labels: map[string]string{"k8s-app": "dns"}, annotations: policyOf("deny")},
		{ns: "shop", name: "remote", ips: []netip.Addr{remoteIP}, labels: map[string]string{"role": "frontend"}},
		{ns: "shop", name: "host", hostNetwork: true, ips: []netip.Addr{e.tp.NodeIPv4}},
	} {
		e.create(p)
	}
	a := e.startAgent(bin)
	apiKey, webKey, workerKey := apiPod.key(), podKey{"shop", "web"}, podKey{"shop", "worker"}

	t.Run("initial", func(t *testing.T) {
		e.awaitApplied(defaults)
		topo.Expect(t,
			topo.TCP("frontend to api: rule 1 allows", web.NS, none, api.IPv4, port, true),
			topo.TCP("frontend to api over IPv6: rule 1 allows", web.NS, none, api.IPv6, port, true),
			topo.TCP("frontend to api, other port: no rule", web.NS, none, api.IPv4, otherPort, false),
			topo.UDP("frontend to api over UDP: no rule", web.NS, none, api.IPv4, port, false),
			topo.TCP("worker to api: no rule", worker.NS, none, api.IPv4, port, false),
			topo.TCP("worker to api over IPv6: no rule", worker.NS, none, api.IPv6, port, false),
			topo.TCP("frontend of another namespace to api: labels are namespaced", intruder.NS, none, api.IPv4, port, false),
			topo.TCP("frontend pod of another node to api: rule 1 allows", client.NS, remoteIP, api.IPv4, port, true),
			topo.TCP("outside world to api: no rule", client.NS, none, api.IPv4, port, false),
			topo.TCP("node to api: the node's own traffic passes", node, none, api.IPv4, otherPort, true),
			topo.UDP("worker to web: default, same namespace", worker.NS, none, web.IPv4, port, true),
			topo.TCP("other namespace to web: default, same namespace only", intruder.NS, none, web.IPv4, port, false),
			topo.TCP("outside world to dns: kube-system is open", client.NS, none, dns.IPv4, port, true),
		)
		code, body := a.get(t, "/readyz")
		require.Equal(t, http.StatusOK, code, body)
		a.awaitMetric(t, 5.0, "podwall_endpoints")
		a.awaitMetric(t, 0.0, "podwall_invalid_policies")
		require.Positive(t, a.metric(t, `podwall_verdicts_total{reason="allow-rule"}`))
		require.Positive(t, a.metric(t, `podwall_verdicts_total{reason="no-rule"}`))
	})

	t.Run("created", func(t *testing.T) {
		// Created and scheduled here, but no addresses yet: nothing to guard.
		lateKey := podKey{"shop", "late"}
		e.create(podSpec{ns: "shop", name: "late", tp: late, labels: map[string]string{"role": "frontend"}, noIPs: true})
		e.awaitApplied(defaults)
		require.Zero(t, e.tcxPrograms(late.HostIfindex), "a pod without addresses has no endpoint")
		e.setIPs(lateKey)
		e.awaitApplied(defaults)
		require.Equal(t, 2, e.tcxPrograms(late.HostIfindex), "attached both ways")
		topo.Expect(t,
			topo.TCP("new frontend to api: rule 1 allows", late.NS, none, api.IPv4, port, true),
			topo.TCP("worker to the new pod: default, same namespace", worker.NS, none, late.IPv6, port, true),
			topo.TCP("other namespace to the new pod: default, same namespace only", intruder.NS, none, late.IPv4, port, false),
		)
	})

	t.Run("relabelled", func(t *testing.T) {
		e.update(workerKey, func(p *podSpec) { p.labels = map[string]string{"role": "frontend"} })
		e.awaitApplied(defaults)
		topo.Expect(t, topo.TCP("worker, now a frontend, to api: rule 1 allows", worker.NS, none, api.IPv4, port, true))
		e.update(workerKey, func(p *podSpec) { p.labels = map[string]string{"role": "worker", "tier": "batch"} })
		e.awaitApplied(defaults)
		topo.Expect(t, topo.TCP("worker, a worker again, to api: no rule", worker.NS, none, api.IPv6, port, false))
	})

	t.Run("re-annotated", func(t *testing.T) {
		e.update(apiKey, func(p *podSpec) {
			p.annotations = policyOf("allow tcp from label role=frontend to ports 9090; allow udp from label tier=batch")
		})
		e.awaitApplied(defaults)
		topo.Expect(t,
			topo.TCP("frontend to api, new port: rule 1 allows", web.NS, none, api.IPv4, otherPort, true),
			topo.TCP("frontend to api, old port: no rule", web.NS, none, api.IPv4, port, false),
			topo.UDP("batch worker to api over UDP: rule 2 allows", worker.NS, none, api.IPv6, port, true),
			topo.TCP("batch worker to api over TCP: no rule", worker.NS, none, api.IPv4, otherPort, false),
		)
	})

	t.Run("invalid annotation", func(t *testing.T) {
		bad := "allow tcp from label role=frontend; allow tcp frm label role=worker"
		_, perr := policy.Parse(bad)
		require.Error(t, perr)
		e.update(webKey, func(p *podSpec) { p.annotations = policyOf(bad) })
		e.awaitApplied(defaults)
		topo.Expect(t,
			topo.TCP("worker to web: isolated, invalid policy", worker.NS, none, web.IPv4, port, false),
			topo.TCP("api to web: isolated, though rule 1 alone would allow it", api.NS, none, web.IPv6, port, false),
			topo.TCP("node to web: the node's own traffic still passes", node, none, web.IPv4, port, true),
		)
		ev := e.awaitEvent(webKey, agent.ReasonInvalidPolicy, perr.Error())
		require.Equal(t, corev1.EventTypeWarning, ev.Type)
		require.Equal(t, e.uid(webKey), ev.InvolvedObject.UID)
		require.Equal(t, corev1.EventSource{Component: k8s.Component, Host: nodeName}, ev.Source)
		a.awaitMetric(t, 1.0, "podwall_invalid_policies")
		e.awaitCondition(webKey, corev1.ConditionFalse, agent.ReasonInvalidPolicy)

		e.update(webKey, func(p *podSpec) { p.annotations = nil })
		e.awaitApplied(defaults)
		topo.Expect(t, topo.TCP("worker to web: fixed, default policy again", worker.NS, none, web.IPv4, port, true))
		a.awaitMetric(t, 0.0, "podwall_invalid_policies")
		e.awaitCondition(webKey, corev1.ConditionTrue, agent.ReasonEnforced)
	})

	t.Run("moved to another namespace", func(t *testing.T) {
		// Deleted from one namespace and created in another: same interface, same addresses.
		moved := podSpec{ns: "shop", name: "intruder", tp: intruder, labels: map[string]string{"role": "frontend"}}
		topo.Expect(t, topo.TCP("intruder to web: other namespace", intruder.NS, none, web.IPv4, port, false))
		e.delete(podKey{"other", "intruder"})
		e.create(moved)
		e.awaitApplied(defaults)
		topo.Expect(t,
			topo.TCP("moved frontend to api: rule 1 allows", intruder.NS, none, api.IPv4, otherPort, true),
			topo.TCP("moved pod to web: same namespace now", intruder.NS, none, web.IPv4, port, true),
			topo.TCP("outside world to moved pod: default, same namespace only", client.NS, none, intruder.IPv4, port, false),
		)
	})

	t.Run("deleted", func(t *testing.T) {
		topo.Expect(t, topo.TCP("outside world to worker: default, same namespace only", client.NS, none, worker.IPv4, port, false))
		e.delete(workerKey)
		e.awaitApplied(defaults)
		// Its interface lives on: a pod gone from the API (a forced delete leaves its
		// containers running) stays isolated until its interface goes.
		require.NotZero(t, e.tcxPrograms(worker.HostIfindex), "worker still attached")
		topo.Expect(t,
			topo.TCP("outside world to worker: gone from the API, interface alive, isolated", client.NS, none, worker.IPv4, port, false),
			topo.TCP("shop to worker: isolated too", web.NS, none, worker.IPv4, port, false),
		)
	})

	t.Run("namespace created and deleted", func(t *testing.T) {
		e.api.CreateNamespace(t, "lab", map[string]string{"team": "research"})
		e.create(podSpec{ns: "lab", name: "probe", tp: worker, labels: map[string]string{"role": "probe"},
			annotations: policyOf("allow from cidr 10.99.0.0/16")})
		e.awaitApplied(defaults)
		topo.Expect(t,
			topo.TCP("outside world to the new namespace's pod: rule 1 allows", client.NS, none, worker.IPv4, port, true),
			topo.TCP("shop to the new namespace's pod: no rule", web.NS, none, worker.IPv4, port, false),
		)
		e.deleteNamespace("lab")
		e.awaitApplied(defaults)
		topo.Expect(t, topo.TCP("outside world to a pod of a deleted namespace: isolated while its interface lives", client.NS, none, worker.IPv4, port, false))
	})

	t.Run("watch cut and restored", func(t *testing.T) {
		// While kube-apiserver restarts, new flows keep getting their verdicts: the pinned
		// state enforces without the agent's watch.
		flows := startFlows(t,
			flow{name: "frontend to api", from: web.NS, to: netip.AddrPortFrom(api.IPv4, otherPort), pass: true},
			flow{name: "kube-system to api", from: dns.NS, to: netip.AddrPortFrom(api.IPv6, otherPort)},
		)
		start := time.Now()
		e.api.RestartAPIServer(t)
		t.Logf("kube-apiserver restarted in %v", time.Since(start))
		// Changed at once, while the agent's informers are still reconnecting.
		e.update(webKey, func(p *podSpec) {
			p.labels = map[string]string{"role": "frontend", "tier": "batch"}
			p.annotations = policyOf("allow tcp from cidr 10.99.0.0/16 to ports 8080")
		})
		flows.stop(t)
		e.awaitApplied(defaults)
		topo.Expect(t,
			topo.TCP("outside world to web: the new rule 1 allows", client.NS, none, web.IPv4, port, true),
			topo.TCP("api to web: no rule now", api.NS, none, web.IPv4, port, false),
			topo.UDP("web, now batch tier, to api over UDP: rule 2 allows", web.NS, none, api.IPv4, port, true),
		)
		code, body := a.get(t, "/healthz")
		require.Equal(t, http.StatusOK, code, body)
	})
}

// flow is a stream of new TCP connections or UDP flows, each exchanging one message, that
// must all pass or all be dropped.
type flow struct {
	name string
	udp  bool
	from *topo.Netns
	to   netip.AddrPort
	pass bool
}

// flows runs streams until stopped and counts what went against SPEC.
type flows struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	ok    []*atomic.Int64
	wrong []*atomic.Int64
	first []*atomic.Value
	all   []flow
}

func startFlows(t *testing.T, all ...flow) *flows {
	f := &flows{stopc: make(chan struct{}), all: all}
	for i, fl := range all {
		f.ok = append(f.ok, new(atomic.Int64))
		f.wrong = append(f.wrong, new(atomic.Int64))
		f.first = append(f.first, new(atomic.Value))
		timeout := topo.DropWait / 5
		if fl.pass {
			timeout = topo.PassWait
		}
		f.wg.Go(func() {
			for {
				select {
				case <-f.stopc:
					return
				default:
				}
				send := topo.TCPEcho
				if fl.udp {
					send = topo.UDPEcho
				}
				err := send(fl.from, fl.to, topo.Timeout(timeout))
				if fl.pass == (err == nil) || (!fl.pass && errors.Is(err, topo.ErrNoAnswer)) {
					f.ok[i].Add(1)
				} else {
					f.wrong[i].Add(1)
					f.first[i].CompareAndSwap(nil, err)
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	t.Cleanup(func() { f.halt() })
	return f
}

func (f *flows) halt() {
	select {
	case <-f.stopc:
	default:
		close(f.stopc)
	}
	f.wg.Wait()
}

// stop ends the streams and requires that none went against SPEC and that each ran a fair
// number of times.
func (f *flows) stop(t *testing.T) {
	t.Helper()
	f.halt()
	for i, fl := range f.all {
		t.Logf("%s: %d as expected, %d not", fl.name, f.ok[i].Load(), f.wrong[i].Load())
		require.Zero(t, f.wrong[i].Load(), "%s (pass %v): went against SPEC; first: %v", fl.name, fl.pass, f.first[i].Load())
		require.Greater(t, f.ok[i].Load(), int64(5), "%s: too few exchanges to tell", fl.name)
	}
}

// awaitMetric waits until a gauge reads want: the agent sets its gauges once an apply is
// done, a little after the maps hold the new state.
func (p *agentProcess) awaitMetric(t *testing.T, want float64, series string) {
	t.Helper()
	requireEventually(t, func() bool { return p.metric(t, series) == want }, fmt.Sprintf("%s reads %v", series, want))
}

func requireEventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(applyWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, applyWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
