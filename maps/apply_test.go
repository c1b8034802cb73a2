package maps

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/compiler/compilertest"
	"github.com/podwall/podwall/policy"
)

// load gives the test a fresh, unpinned collection, with the ipcache shrunk to ipcacheMax
// entries when that is not 0.
func load(t *testing.T, ipcacheMax uint32) *bpf.PodwallObjects {
	t.Helper()
	if ipcacheMax == 0 {
		return loadSized(t, nil)
	}
	return loadSized(t, map[string]uint32{bpf.PodwallMapIpcache: ipcacheMax})
}

// loadSized gives the test a fresh, unpinned collection with the maps of sizes shrunk.
func loadSized(t *testing.T, sizes map[string]uint32) *bpf.PodwallObjects {
	t.Helper()
	spec, err := bpf.LoadPodwall()
	require.NoError(t, err)
	for name, n := range sizes {
		spec.Maps[name].MaxEntries = n
	}
	var objs bpf.PodwallObjects
	require.NoError(t, spec.LoadAndAssign(&objs, nil))
	t.Cleanup(func() { require.NoError(t, objs.Close()) })
	return &objs
}

// dump reads every map the applier writes.
func dump(t *testing.T, m *bpf.PodwallObjects) Contents {
	t.Helper()
	c, err := Read(&m.PodwallMaps)
	require.NoError(t, err)
	return c
}

func pod(ns, name, ip, rules string, labels map[string]string) compiler.Pod {
	p := compiler.Pod{Namespace: ns, Name: name, Labels: labels, IPs: []netip.Addr{netip.MustParseAddr(ip)}}
	if rules != "" {
		p.Annotations = map[string]string{policy.AnnotationKey: rules}
	}
	return p
}

func input(webPolicy string) compiler.Input {
	return compiler.Input{
		Pods: []compiler.Pod{
			pod("shop", "web", "10.0.0.2", webPolicy, map[string]string{"app": "web"}),
			pod("shop", "front", "10.0.0.3", "", map[string]string{"role": "frontend"}),
			pod("other", "x", "10.0.1.4", "", nil),
		},
		Endpoints: []compiler.Endpoint{{Ifindex: 7, Namespace: "shop", Name: "web"}, {Ifindex: 8, Namespace: "shop", Name: "front"}},
		HostIPs:   []netip.Addr{netip.MustParseAddr("10.0.0.1")},
	}
}

func TestApplyWritesExactlyTheDesiredState(t *testing.T) {
	m := load(t, 0)
	a := NewApplier(m)
	steps := []string{
		"allow tcp from label role=frontend to ports 8080; deny from cidr 10.0.1.0/24; allow icmp type 8",
		"allow udp from ports 53,1000:2000",
		"",
		"allow tcp from label role=frontend to ports 8080; deny from cidr 10.0.1.0/24; allow icmp type 8",
	}
	for _, step := range steps {
		s := compiler.Compile(input(step))
		require.NoError(t, a.Apply(s))
		got := dump(t, m)
		want := Want(s)
		require.Equal(t, want.Endpoints, got.Endpoints, step)
		require.Equal(t, want.IPCache, got.IPCache, step)
		require.Equal(t, want.Ident, got.Ident, step)
		require.Equal(t, want.CIDR, got.CIDR, step)
		require.Equal(t, want.Port, got.Port, step)
		require.Equal(t, want.ICMP, got.ICMP, step)
	}
}

// TestApplyOfACompilersStates applies the States of one compiler.Compiler, which share
// policies and the ipcache with the last one, mixed with Compile's, which share nothing:
// after each, the maps hold exactly the State.
func TestApplyOfACompilersStates(t *testing.T) {
	m := load(t, 0)
	a := NewApplier(m)
	var c compiler.Compiler
	relabel := func(in compiler.Input) compiler.Input {
		in.Pods[1].Labels = map[string]string{"role": "backend"}
		return in
	}
	readdress := func(in compiler.Input) compiler.Input {
		in.Pods[2].IPs = []netip.Addr{netip.MustParseAddr("10.0.1.5")}
		return in
	}
	drop := func(in compiler.Input) compiler.Input {
		in.Pods = in.Pods[:2]
		return in
	}
	steps := []struct {
		name    string
		in      compiler.Input
		compile func(compiler.Input) *compiler.State
	}{
		{"first", input("allow tcp from label role=frontend to ports 8080; deny from cidr 10.0.1.0/24; allow icmp type 8"), c.Compile},
		{"annotation", input("allow udp from ports 53,1000:2000; allow from label role=frontend"), c.Compile},
		{"same", input("allow udp from ports 53,1000:2000; allow from label role=frontend"), c.Compile},
		{"relabel", relabel(input("allow udp from ports 53,1000:2000; allow from label role=frontend")), c.Compile},
		{"readdress", readdress(input("allow from label role=frontend")), c.Compile},
		{"reference", readdress(input("allow from label role=frontend")), compiler.Compile},
		{"no policy", drop(input("")), c.Compile},
		{"back", input("allow tcp from label role=frontend to ports 8080; deny from cidr 10.0.1.0/24; allow icmp type 8"), c.Compile},
	}
	for _, step := range steps {
		s := step.compile(step.in)
		require.NoError(t, a.Apply(s), step.name)
		got, want := dump(t, m), Want(s)
		require.Equal(t, want, got, step.name)
	}
}

func TestApplyAfterRestartChangesOnlyTheDifference(t *testing.T) {
	m := load(t, 0)
	first := compiler.Compile(input("allow tcp to ports 80"))
	require.NoError(t, NewApplier(m).Apply(first))

	// A stale entry a previous agent left behind, and one it never wrote.
	stale := bpf.PodwallIpAddr{Family: bpf.FamV4, Addr: [16]uint8{192, 0, 2, 1}}
	require.NoError(t, m.Ipcache.Put(&stale, uint32(999)))

	second := compiler.Compile(input("allow tcp to ports 443"))
	require.NoError(t, NewApplier(m).Apply(second))
	got := dump(t, m)
	require.Equal(t, Want(second).IPCache, got.IPCache)
	require.Equal(t, Want(second).Endpoints, got.Endpoints)
	require.Equal(t, Want(second).Port, got.Port)
}

func TestApplyReportsAFullMapWithItsNameAndSize(t *testing.T) {
	m := load(t, 2) // three pods and the node need four ipcache entries
	a := NewApplier(m)
	err := a.Apply(compiler.Compile(input("allow")))
	require.ErrorIs(t, err, ErrMapFull)
	require.ErrorContains(t, err, "map ipcache (2 entries at most")

	// The applier no longer trusts what it believed present: a later apply that fits
	// converges from what the kernel really holds.
	small := compiler.Input{
		Pods:      []compiler.Pod{pod("shop", "web", "10.0.0.2", "allow", nil)},
		Endpoints: []compiler.Endpoint{{Ifindex: 7, Namespace: "shop", Name: "web"}},
	}
	s := compiler.Compile(small)
	require.NoError(t, a.Apply(s))
	require.Equal(t, Want(s).IPCache, dump(t, m).IPCache)
}

func TestApplyFlipsTheEndpointOnlyOnceThePolicyIsWhole(t *testing.T) {
	m := load(t, 0)
	a := NewApplier(m)
	old := compiler.Compile(input("allow tcp to ports 80"))
	require.NoError(t, a.Apply(old))
	next := compiler.Compile(input("allow tcp to ports 443"))

	// Fail the apply right after the policy entries are written: the endpoint must still
	// hold the old policy, whose entries stay, and the epoch must say a change is under way.
	var e bpf.PodwallEndpointEntry
	require.NoError(t, m.Endpoints.Lookup(uint32(7), &e))
	require.Equal(t, old.Policies[e.Ep.Policy].Record, e.Rules)
	a.endpoints.m = closedMap(t)
	require.Error(t, a.Apply(next))
	var after bpf.PodwallEndpointEntry
	require.NoError(t, m.Endpoints.Lookup(uint32(7), &after))
	require.Equal(t, e, after, "the endpoint is untouched")
	var v bpf.PodwallRuleVec
	for k := range old.Policies[e.Ep.Policy].Port {
		require.NoError(t, m.PolPort.Lookup(&k, &v), "the old policy's entries stay while an endpoint uses it")
	}
	newPolicy := next.Policies[next.Endpoints[7].Policy]
	require.NotEmpty(t, newPolicy.Port)
	for k := range newPolicy.Port {
		require.NoError(t, m.PolPort.Lookup(&k, &v), "the new policy is whole before any flip")
	}
	var epoch uint32
	require.NoError(t, m.Epoch.Lookup(uint32(0), &epoch))
	require.Equal(t, uint32(1), epoch%2, "an odd epoch: no flow passes on its epoch alone")
}

func TestApplyIsolatesAnEndpointWithoutItsPolicy(t *testing.T) {
	m := load(t, 0)
	s := compiler.Compile(input("allow tcp to ports 80"))
	delete(s.Policies, s.Endpoints[7].Policy)
	require.NoError(t, NewApplier(m).Apply(s))
	var e bpf.PodwallEndpointEntry
	require.NoError(t, m.Endpoints.Lookup(uint32(7), &e))
	require.Equal(t, uint8(bpf.ModeIsolate), e.Ep.Mode)
}

// closedMap is a map handle whose every operation fails.
func closedMap(t *testing.T) *ebpf.Map {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 12, MaxEntries: 1})
	require.NoError(t, err)
	require.NoError(t, m.Close())
	return m
}

// TestApplyFramesEndpointChangesWithEpochs checks the conntrack epoch an Applier keeps: it
// moves by two (through an odd value) when the endpoints change and only then, a restarted
// applier continues from the pinned value, and an epoch left odd by an apply that failed
// between its two writes is made even by the next apply, even one that changes nothing.
func TestApplyFramesEndpointChangesWithEpochs(t *testing.T) {
	m := load(t, 0)
	epoch := func() uint32 {
		var v uint32
		require.NoError(t, m.Epoch.Lookup(uint32(0), &v))
		return v
	}
	first := compiler.Compile(input("allow tcp"))
	second := compiler.Compile(input("allow udp"))

	a := NewApplier(m)
	require.NoError(t, a.Apply(first))
	require.Equal(t, uint32(2), epoch(), "the first endpoints")
	require.NoError(t, a.Apply(compiler.Compile(input("allow tcp"))))
	require.Equal(t, uint32(2), epoch(), "the same endpoints")
	require.NoError(t, NewApplier(m).Apply(first))
	require.Equal(t, uint32(2), epoch(), "a restarted applier with the same endpoints")
	require.NoError(t, NewApplier(m).Apply(second))
	require.Equal(t, uint32(4), epoch(), "a restarted applier with other endpoints")

	require.NoError(t, m.Epoch.Update(uint32(0), uint32(5), 0), "an apply failed after the odd epoch")
	require.NoError(t, NewApplier(m).Apply(second))
	require.Equal(t, uint32(6), epoch(), "the next apply ends the change")
}

// portsPolicy allows n single TCP ports from first on, two apart: n pol_port entries.
func portsPolicy(first, n int) string {
	p := "allow tcp to ports "
	for i := range n {
		if i > 0 {
			p += ","
		}
		p += fmt.Sprint(first + 2*i)
	}
	return p
}

func TestApplyDeletesOrphansBeforeItWrites(t *testing.T) {
	m := loadSized(t, map[string]uint32{bpf.PodwallMapPolPort: 6})
	// What a failed apply left: entries of a policy no endpoint uses, taking the room.
	orphan := compiler.Compile(input(portsPolicy(1001, 4)))
	for k, v := range orphan.Policies[orphan.Endpoints[7].Policy].Port {
		require.NoError(t, m.PolPort.Put(k, v))
	}
	s := compiler.Compile(input(portsPolicy(1, 4)))
	require.NoError(t, NewApplier(m).Apply(s))
	require.Equal(t, Want(s), dump(t, m))
}

func TestApplyMakesRoomForAPolicyThatReplacesAnother(t *testing.T) {
	m := loadSized(t, map[string]uint32{bpf.PodwallMapPolPort: 6})
	a := NewApplier(m)
	require.NoError(t, a.Apply(compiler.Compile(input(portsPolicy(1, 4)))))
	// Four entries replace four in a map of six: not both at once.
	next := compiler.Compile(input(portsPolicy(1001, 4)))
	require.NoError(t, a.Apply(next))
	require.Equal(t, Want(next), dump(t, m))
	// And from a restarted agent's applier, which knows only the maps.
	again := compiler.Compile(input(portsPolicy(2001, 4)))
	require.NoError(t, NewApplier(m).Apply(again))
	require.Equal(t, Want(again), dump(t, m))
}

func TestApplyTakesNewEndpointsInAFullMapOnceOthersLeave(t *testing.T) {
	m := loadSized(t, map[string]uint32{bpf.PodwallMapEndpoints: 2})
	a := NewApplier(m)
	in := input("allow")
	require.NoError(t, a.Apply(compiler.Compile(in)))
	in.Pods = append(in.Pods, pod("shop", "new", "10.0.0.9", "allow", nil))
	in.Endpoints = []compiler.Endpoint{{Ifindex: 7, Namespace: "shop", Name: "web"}, {Ifindex: 9, Namespace: "shop", Name: "new"}}
	s := compiler.Compile(in)
	require.NoError(t, a.Apply(s))
	require.Equal(t, Want(s), dump(t, m))
}

// A policy keeps its id when only the pods its labels select change: in a pol_ident map that
// its entries fill, its new entries come in once the stale ones are gone.
func TestApplyReplacesAPolicysIdentitiesInAFullMap(t *testing.T) {
	m := loadSized(t, map[string]uint32{bpf.PodwallMapPolIdent: 2})
	a := NewApplier(m)
	in := func(peers ...string) compiler.Input {
		pods := []compiler.Pod{pod("shop", "web", "10.0.0.2", "allow from label role=peer", nil)}
		for i, n := range peers {
			pods = append(pods, pod("shop", "peer-"+n, fmt.Sprintf("10.0.0.%d", 10+i), "", map[string]string{"role": "peer", "n": n}))
		}
		return compiler.Input{Pods: pods, Endpoints: []compiler.Endpoint{{Ifindex: 7, Namespace: "shop", Name: "web"}}}
	}
	first := compiler.Compile(in("1", "2"))
	require.NoError(t, a.Apply(first))
	require.Len(t, dump(t, m).Ident, 2)
	next := compiler.Compile(in("1", "3"))
	require.Equal(t, slices.Collect(maps.Keys(first.Policies)), slices.Collect(maps.Keys(next.Policies)), "the same policy id")
	require.NoError(t, a.Apply(next))
	require.Equal(t, Want(next), dump(t, m))
}

// TestApplyFollowsACompilersChanges applies the States a Compiler makes of random changes
// to random clusters, given pod by pod as the agent gives them, most of them through their
// Changes: after each, the maps hold exactly the State.
func TestApplyFollowsACompilersChanges(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for seq := range 8 {
		m := load(t, 0)
		a := NewApplier(m)
		c := compilertest.Random(rng, nil)
		var f compilertest.Feeder
		for step := range 30 {
			what := "start"
			if step > 0 {
				what = c.Change(rng)
			}
			s := f.Turn(c.Input)
			require.NoError(t, a.Apply(s), "sequence %d, step %d: %s", seq, step, what)
			require.Equal(t, Want(s), dump(t, m), "sequence %d, step %d: %s", seq, step, what)
		}
	}
}
