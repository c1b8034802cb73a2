package agent

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podwall/podwall/agent/netif"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/k8s"
	"github.com/podwall/podwall/policy"
)

func pod(ns, name, node string, hostNetwork bool, ips ...string) k8s.Pod {
	p := k8s.Pod{Pod: compiler.Pod{Namespace: ns, Name: name, HostNetwork: hostNetwork}, Node: node}
	for _, ip := range ips {
		p.IPs = append(p.IPs, netip.MustParseAddr(ip))
	}
	return p
}

// The view follows the source's deltas: this node's pods with an address and an interface
// of their own are local; the compiler takes the cluster whole after a Full delta and the
// pods one by one after, to the same state Compile makes of the whole view.
func TestViewFollowsDeltas(t *testing.T) {
	v := newView("n1")
	var c compiler.Compiler
	local := pod("a", "local", "n1", false, "10.0.0.1")
	local.Annotations = map[string]string{policy.AnnotationKey: "allow tcp from label app=web"}
	cluster := map[string]k8s.Pod{}
	take := func(d k8s.Delta) {
		for _, p := range d.Pods {
			cluster[p.Namespace+"/"+p.Name] = p
		}
		for _, k := range d.Deleted {
			delete(cluster, k.Namespace+"/"+k.Name)
		}
		v.take(d, &c)
	}
	take(k8s.Delta{Full: true, Pods: []k8s.Pod{
		local,
		pod("a", "remote", "n2", false, "10.0.0.2"),
		pod("a", "host-network", "n1", true, "192.168.0.1"),
		pod("a", "no-address-yet", "n1", false),
		pod("b", "local-v6", "n1", false, "fd00::3"),
	}, Namespaces: []string{"a", "b"}})
	names := func() []string {
		var out []string
		for _, p := range v.localPods() {
			out = append(out, p.Namespace+"/"+p.Name)
		}
		return out
	}
	require.Equal(t, []string{"a/local", "b/local-v6"}, names())
	require.Len(t, v.uids, 5)
	eps := []compiler.Endpoint{{Ifindex: 7, Namespace: "a", Name: "local"}}
	host := []netip.Addr{netip.MustParseAddr("192.168.0.1")}
	opts := compiler.Options{DefaultPolicy: compiler.DefaultDeny, OpenNamespaces: []string{"kube-system"}, AllowHost: true}
	node := compiler.Input{Endpoints: eps, HostIPs: host, Options: opts}
	whole := func() compiler.Input {
		in := node
		for _, p := range cluster {
			in.Pods = append(in.Pods, p.Pod)
		}
		return in
	}
	require.Equal(t, compiler.Compile(whole()), c.CompileNode(node))

	web := pod("a", "remote", "n2", false, "10.0.0.2")
	web.Labels = map[string]string{"app": "web"}
	moved := pod("a", "no-address-yet", "n1", false, "10.0.0.4")
	take(k8s.Delta{Pods: []k8s.Pod{web, moved}, Deleted: []k8s.PodKey{{Namespace: "b", Name: "local-v6"}}, Namespaces: []string{"a"}})
	require.Equal(t, []string{"a/local", "a/no-address-yet"}, names())
	require.Len(t, v.uids, 4)
	s := c.CompileNode(node)
	require.NotNil(t, s.Changes, "a delta is compiled as changes")
	s.Changes = nil
	require.Equal(t, compiler.Compile(whole()), s)
	require.Len(t, s.Policies[s.Endpoints[7].Policy].Ident, 1, "the relabelled pod is named by the local policy")
}

// TestSettle runs in a synctest bubble, whose clock moves only when every goroutine waits:
// the times are exact.
func TestSettle(t *testing.T) {
	const quiet, max = 20 * time.Millisecond, 200 * time.Millisecond
	t.Run("quiet ends a burst", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			tr := newTrigger()
			go func() {
				for range 5 {
					tr.fire()
					time.Sleep(quiet / 4)
				}
			}()
			start := time.Now()
			require.True(t, settle(t.Context(), tr, quiet, max))
			// The last fire comes 4 quarters in; quiet runs from there.
			require.Equal(t, quiet+4*quiet/4, time.Since(start))
		})
	})
	t.Run("max bounds an endless burst", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			tr := newTrigger()
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() {
				defer close(done)
				for ctx.Err() == nil {
					tr.fire()
					time.Sleep(quiet / 4)
				}
			}()
			start := time.Now()
			require.True(t, settle(ctx, tr, quiet, max))
			require.Equal(t, max, time.Since(start))
			cancel()
			<-done
		})
	})
	t.Run("fires coalesce", func(t *testing.T) {
		tr := newTrigger()
		for range 10 {
			tr.fire()
		}
		require.Len(t, tr, 1)
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		require.False(t, settle(ctx, newTrigger(), quiet, max))
	})
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: time.Second}
	var got []time.Duration
	for range 6 {
		got = append(got, b.delay())
	}
	require.Equal(t, []time.Duration{100e6, 200e6, 400e6, 800e6, 1e9, 1e9}, got)
	b.reset()
	require.Equal(t, 100*time.Millisecond, b.delay())
}

// recordedEvents is a fake Events.
type recordedEvents struct{ got []string }

func (r *recordedEvents) PodWarning(p k8s.Pod, reason, message string) {
	r.got = append(r.got, p.Namespace+"/"+p.Name+" "+reason+": "+message)
}

func (r *recordedEvents) NodeWarning(reason, message string) {
	r.got = append(r.got, "node "+reason+": "+message)
}

func TestReporter(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	ev := &recordedEvents{}
	r := newReporter(zap.New(core), ev, "n1")
	pods := map[podKey]types.UID{{"a", "p"}: "u1"}

	bad := func(msg string) []compiler.Problem {
		return []compiler.Problem{{Namespace: "a", Name: "p", Kind: compiler.ProblemInvalid, Err: errors.New(msg)}}
	}
	r.report(problemKinds, problemFindings(bad("rule 1, offset 0 (\"alow\"): expected ...")), pods)
	r.report(problemKinds, problemFindings(bad("rule 1, offset 0 (\"alow\"): expected ...")), pods)
	require.Equal(t, []string{`a/p InvalidPolicy: rule 1, offset 0 ("alow"): expected ...`}, ev.got, "once per message")

	r.report(problemKinds, problemFindings(bad("rule 2, offset 9 (\"x\"): expected ...")), pods)
	require.Len(t, ev.got, 2, "a new message is a new Event")

	// Another area's report does not resolve this one's findings.
	r.report([]string{kindApply}, nil, pods)
	require.Equal(t, 0, logs.FilterMessage("resolved").Len())
	r.report(problemKinds, nil, pods)
	require.Equal(t, 1, logs.FilterMessage("resolved").Len())
	r.report(problemKinds, problemFindings(bad("rule 2, offset 9 (\"x\"): expected ...")), pods)
	require.Len(t, ev.got, 3, "broken again after a fix: reported again")

	// Ignored annotations are only logged; node findings go to the node.
	r.report(problemKinds, []finding{{pod: podKey{"a", "p"}, kind: compiler.ProblemIgnored.String(), message: "ignored"}}, pods)
	r.report([]string{kindApply}, []finding{{kind: kindApply, reason: ReasonMapFull, message: "map full"}}, pods)
	require.Equal(t, "node MapFull: map full", ev.got[len(ev.got)-1])
	require.Len(t, ev.got, 4)
	require.Equal(t, 1, logs.FilterMessage("ignored").Len())
}

func TestWakes(t *testing.T) {
	pendingIP := netip.MustParseAddr("10.0.0.1")
	pending := map[netip.Addr]bool{pendingIP: true}
	none := map[netip.Addr]bool{}
	for _, tt := range []struct {
		name    string
		c       netif.Change
		pending *map[netip.Addr]bool
		want    bool
	}{
		{"link", netif.Change{Kind: netif.LinkChange}, nil, true},
		{"route", netif.Change{Kind: netif.RouteChange}, &none, true},
		{"neighbour, nothing missing", netif.Change{Kind: netif.NeighChange, Addr: pendingIP}, &none, false},
		{"neighbour, before the first reconcile", netif.Change{Kind: netif.NeighChange, Addr: pendingIP}, nil, false},
		{"neighbour of a missing pod", netif.Change{Kind: netif.NeighChange, Addr: pendingIP}, &pending, true},
		{"another neighbour", netif.Change{Kind: netif.NeighChange, Addr: netip.MustParseAddr("10.0.0.2")}, &pending, false},
		{"forwarding entry while a pod is missing", netif.Change{Kind: netif.NeighChange}, &pending, true},
	} {
		require.Equal(t, tt.want, wakes(tt.c, tt.pending), tt.name)
	}
}
