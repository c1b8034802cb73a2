package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/k8s"
)

// world is an agent on fakes of the data path, the node's interfaces, the source and the
// Events; in a synctest bubble, step lets it do everything it has to.
type world struct {
	dp     *fakeDatapath
	ifs    *fakeInterfaces
	src    *fakeSource
	events *fakeEvents
	agent  *Agent
	stop   func()
}

func start(t *testing.T, capacity compiler.Capacity, pods ...k8s.Pod) *world {
	t.Helper()
	return startWith(t, func(*Config) {}, capacity, pods...)
}

// startWith is start with the agent's Config edited.
func startWith(t *testing.T, edit func(*Config), capacity compiler.Capacity, pods ...k8s.Pod) *world {
	t.Helper()
	w := &world{
		dp:     &fakeDatapath{capacity: capacity},
		ifs:    &fakeInterfaces{byAddr: map[netip.Addr]int{}},
		src:    &fakeSource{},
		events: &fakeEvents{},
	}
	w.src.snap = k8s.Snapshot{Pods: pods, Namespaces: []string{"shop"}}
	cfg := Config{Node: "n1", Source: w.src, Datapath: w.dp, Finder: w.ifs, Events: w.events,
		Options: compiler.Options{DefaultPolicy: compiler.DefaultNamespace, AllowHost: true}}
	edit(&cfg)
	w.agent = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.agent.Run(ctx) }()
	w.stop = func() {
		cancel()
		require.NoError(t, <-done)
	}
	return w
}

// step lets time pass until the agent has nothing left to do.
func (w *world) step() {
	time.Sleep(time.Second)
	synctest.Wait()
}

func local(name, ip string) k8s.Pod { return pod("shop", name, "n1", false, ip) }

// TestAttachBeforeApplyDetachAfter: a new pod's interface gets the programs before the apply
// that writes its entry (they drop everything until then), and a gone pod's interface loses
// them only after the apply that removed its entry.
func TestAttachBeforeApplyDetachAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := start(t, compiler.Capacity{}, local("a", "10.0.0.1"))
		defer w.stop()
		w.ifs.set("10.0.0.1", 7)
		w.step()
		require.Equal(t, []string{"attach 7", "apply"}, w.dp.takeOps())
		require.True(t, w.agent.Ready())

		w.ifs.set("10.0.0.2", 8)
		w.src.set(local("a", "10.0.0.1"), local("b", "10.0.0.2"))
		w.step()
		require.Equal(t, []string{"attach 8", "apply"}, w.dp.takeOps())

		// b's pod goes, and its interface with it.
		w.ifs.set("10.0.0.2", 0)
		w.src.set(local("a", "10.0.0.1"))
		w.step()
		require.Equal(t, []string{"apply", "detach 8"}, w.dp.takeOps())
		require.Len(t, w.dp.applied.Endpoints, 1)
	})
}

// TestAPodThatLeavesStaysIsolated: a pod the source stops listing while its interface lives
// keeps its endpoint, isolated, and keeps the programs.
func TestAPodThatLeavesStaysIsolated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := start(t, compiler.Capacity{}, local("a", "10.0.0.1"), local("b", "10.0.0.2"))
		defer w.stop()
		w.ifs.set("10.0.0.1", 7)
		w.ifs.set("10.0.0.2", 8)
		w.step()
		w.dp.takeOps()

		w.src.set(local("a", "10.0.0.1"))
		w.step()
		require.Equal(t, []string{"apply"}, w.dp.takeOps(), "no detach")
		require.Contains(t, w.dp.applied.Endpoints, uint32(8))
		require.Equal(t, uint8(2), w.dp.applied.Endpoints[8].Mode, "isolated")
	})
}

// TestFailedAppliesAreRetriedAndReported: a full map fails the apply; /readyz and the metric
// say so, the node gets an Event, and the apply is retried with a backoff until it succeeds.
func TestFailedAppliesAreRetriedAndReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := start(t, compiler.Capacity{}, local("a", "10.0.0.1"))
		defer w.stop()
		full := fmt.Errorf("update pol_port: %w", datapath.ErrMapFull)
		w.dp.applyErrs = []error{full, full}
		w.ifs.set("10.0.0.1", 7)
		start := time.Now()
		time.Sleep(minRetry / 2)
		synctest.Wait()
		require.Equal(t, []string{"attach 7", "apply"}, w.dp.takeOps())
		require.False(t, w.agent.Ready())
		require.Equal(t, 1.0, testutil.ToFloat64(w.agent.cfg.Metrics.applyFailing))
		require.Equal(t, []string{ReasonMapFull + " node"}, w.events.take())

		w.step()
		require.Equal(t, []string{"apply", "apply"}, w.dp.takeOps(), "retried: after 100 ms, then 200 ms")
		require.True(t, w.agent.Ready())
		require.Equal(t, 0.0, testutil.ToFloat64(w.agent.cfg.Metrics.applyFailing))
		require.Less(t, time.Since(start), time.Second+minRetry)
		require.Empty(t, w.events.take(), "one Event for one failure")
	})
}

// TestNoRoomIsolatesAndReports: endpoints beyond the map's room get no entry (their
// interface passes nothing) and an Event MapFull each.
func TestNoRoomIsolatesAndReports(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := start(t, compiler.Capacity{Endpoints: 1}, local("a", "10.0.0.1"), local("b", "10.0.0.2"))
		defer w.stop()
		w.ifs.set("10.0.0.1", 7)
		w.ifs.set("10.0.0.2", 8)
		w.step()
		require.ElementsMatch(t, []int{7, 8}, w.dp.Attached(), "both guarded")
		require.Len(t, w.dp.applied.Endpoints, 1)
		require.Contains(t, w.dp.applied.Endpoints, uint32(7))
		require.Equal(t, []string{ReasonMapFull + " shop/b"}, w.events.take())
	})
}

// TestMissingInterfaceIsReportedAndRetried: a pod whose interface is not found yet gets an
// Event and the metric, and is attached once the interface shows up.
func TestMissingInterfaceIsReportedAndRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := start(t, compiler.Capacity{}, local("a", "10.0.0.1"))
		defer w.stop()
		time.Sleep(startupResolve) // the first reconcile waits that long for a bridge port
		w.step()
		require.Equal(t, []string{ReasonInterfaceNotFound + " shop/a"}, w.events.take())
		require.Equal(t, 1.0, testutil.ToFloat64(w.agent.cfg.Metrics.interfaceMissing))
		require.Empty(t, w.dp.Attached())

		w.ifs.set("10.0.0.1", 7)
		w.step()
		require.Equal(t, []int{7}, w.dp.Attached())
		require.Equal(t, 0.0, testutil.ToFloat64(w.agent.cfg.Metrics.interfaceMissing))
	})
}

// TestRunLeavesNothingRunning: once Run returns, no goroutine it started is left.
func TestRunLeavesNothingRunning(t *testing.T) {
	defer goleak.VerifyNone(t)
	w := start(t, compiler.Capacity{}, local("a", "10.0.0.1"))
	w.ifs.set("10.0.0.1", 7)
	require.Eventually(t, w.agent.Ready, 5*time.Second, time.Millisecond)
	w.stop()
}

// TestAnUnresolvedPodKeepsItsGuard: after a restart, a pod whose interface is attached but
// not found yet (a bridge port not learnt) keeps the programs, passing nothing, until it is.
func TestAnUnresolvedPodKeepsItsGuard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := start(t, compiler.Capacity{}, local("a", "10.0.0.1"))
		defer w.stop()
		w.dp.attached = []int{7}                          // taken over from the pins of the last agent
		w.ifs.byAddr[netip.MustParseAddr("10.0.0.9")] = 7 // the interface exists; the pod's address does not lead to it yet
		time.Sleep(startupResolve)
		w.step()
		require.Equal(t, []int{7}, w.dp.Attached(), "not detached")
		require.NotContains(t, w.dp.applied.Endpoints, uint32(7), "no entry: it passes nothing")
	})
}

// TestAFailedSourceEndsRun: a source that fails ends Run with its error.
func TestAFailedSourceEndsRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := New(Config{Node: "n1", Source: failingSource{}, Datapath: &fakeDatapath{},
			Finder: &fakeInterfaces{byAddr: map[netip.Addr]int{}}})
		require.ErrorContains(t, a.Run(context.Background()), "source: no watch")
	})
}

type failingSource struct{}

func (failingSource) Run(context.Context, func(error)) error { return errors.New("no watch") }
func (failingSource) Changes() (k8s.Delta, error)            { return k8s.Delta{}, nil }

// TestXDPFollowsTheDefaultRoutes: with XDP auto, from_world goes, in native mode, to the
// interfaces of the default routes, after the apply, and moves when they move; a veth uplink
// is left to tc.
func TestXDPFollowsTheDefaultRoutes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := startWith(t, func(c *Config) { c.XDP = []string{XDPAuto} }, compiler.Capacity{}, local("a", "10.0.0.1"))
		defer w.stop()
		w.ifs.set("10.0.0.1", 7)
		w.ifs.route(2)
		w.step()
		require.Equal(t, []string{"attach 7", "apply", "xdp native 2"}, w.dp.takeOps())

		w.ifs.route(3, 4)
		w.step()
		require.Equal(t, []string{"apply", "xdp native 3", "xdp native 4", "xdp off 2"}, w.dp.takeOps())

		w.ifs.veths = []int{5}
		w.ifs.route(5)
		w.step()
		require.Equal(t, []string{"apply", "xdp off 3", "xdp off 4"}, w.dp.takeOps(), "a veth uplink is left to tc")
		require.Empty(t, w.dp.XDPAttached())
	})
}

// TestPolicyEnforcedCondition: after each apply, every running local pod's
// podwall.io/policy-enforced condition says whether the kernel holds its policy, written only
// when it changes: True for a pod whose entry was applied, False with the reason for an
// invalid annotation or an interface not found; a fixed annotation turns it True.
func TestPolicyEnforcedCondition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		status := &fakeStatus{}
		good := local("good", "10.0.0.1")
		bad := local("bad", "10.0.0.2")
		bad.Annotations = map[string]string{"projectcalico.org/policy": "allow tcp from prots 80"}
		lost := local("lost", "10.0.0.3")
		w := startWith(t, func(c *Config) { c.Status = status }, compiler.Capacity{}, good, bad, lost)
		defer w.stop()
		w.ifs.set("10.0.0.1", 7)
		w.ifs.set("10.0.0.2", 8)
		// The first reconcile waits startupResolve for the missing interface.
		w.step()
		w.step()
		w.step()
		require.ElementsMatch(t, []string{"shop/good True Enforced", "shop/bad False InvalidPolicy",
			"shop/lost False InterfaceNotFound"}, status.take())

		w.src.set(good, bad, lost) // a change that changes none of them
		w.step()
		require.Empty(t, status.take(), "written only when it changes")

		bad.Annotations = map[string]string{"projectcalico.org/policy": "allow tcp to ports 80"}
		w.ifs.set("10.0.0.3", 9)
		w.src.set(good, bad, lost)
		w.step()
		require.ElementsMatch(t, []string{"shop/bad True Enforced", "shop/lost True Enforced"}, status.take())
	})
}

// TestMapNearlyFull: a map the applier writes past 90% gives the node an Event before it is
// full, once per change, and none once it has room again.
func TestMapNearlyFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := start(t, compiler.Capacity{}, local("a", "10.0.0.1"))
		defer w.stop()
		w.ifs.set("10.0.0.1", 7)
		w.dp.mu.Lock()
		w.dp.fill = []datapath.Fill{{Map: "ipcache", Entries: 95, Max: 100}, {Map: "pol_port", Entries: 10, Max: 100}}
		w.dp.mu.Unlock()
		w.step()
		require.Equal(t, []string{"MapNearlyFull node"}, w.events.take())

		w.ifs.set("10.0.0.2", 8)
		w.src.set(local("a", "10.0.0.1"), local("b", "10.0.0.2"))
		w.step()
		require.Empty(t, w.events.take(), "reported once while it stays so")

		w.dp.mu.Lock()
		w.dp.fill = []datapath.Fill{{Map: "ipcache", Entries: 50, Max: 100}, {Map: "rule_counters", Entries: 99, Max: 100}}
		w.dp.mu.Unlock()
		w.src.set(local("a", "10.0.0.1"))
		w.step()
		require.Equal(t, []string{"MapNearlyFull node"}, w.events.take(), "rule_counters now")
	})
}
