package compiler

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
)

// TestCompilerChangesWhatChanged checks that an annotation change keeps every other pod's
// policy, and that a remote pod coming, relabelled and leaving changes its own addresses and
// the pol_ident entries of the policies that name its tags, in place, and nothing else.
func TestCompilerChangesWhatChanged(t *testing.T) {
	in := benchCluster(10_000)
	var c Compiler
	first := c.Compile(in)
	require.Nil(t, first.Changes)
	policies := maps.Clone(first.Policies)
	ep := in.Endpoints[0]
	i := slices.IndexFunc(in.Pods, func(p Pod) bool { return p.Name == ep.Name && p.Namespace == ep.Namespace })
	in.Pods[i].Annotations = annotated("allow tcp to ports 81")
	c.SetPod(in.Pods[i])
	node := in
	node.Pods = nil
	second := c.CompileNode(node)
	require.Equal(t, Compile(in), withoutChanges(second))
	require.Same(t, first, second.Changes.Since)
	require.Empty(t, second.Changes.IPCache)
	require.Empty(t, second.Changes.Ident)
	require.NotEqual(t, first.Endpoints[ep.Ifindex].Policy, second.Endpoints[ep.Ifindex].Policy)
	other := in.Endpoints[2] // annotated, as every second local pod
	id := second.Endpoints[other.Ifindex].Policy
	require.NotZero(t, id)
	require.Same(t, policies[id], second.Policies[id], "an unchanged policy is kept")

	// A remote pod with a new identity that the annotated policy names (app=app-3).
	version := second.Policies[id].Version
	web := Pod{Namespace: "ns-0", Name: "new", Labels: map[string]string{"app": "app-3", "tier": "new"}, IPs: addrs("10.200.0.1")}
	in.Pods = append(in.Pods, web)
	c.SetPod(web)
	third := c.CompileNode(node)
	require.Equal(t, Compile(in), withoutChanges(third))
	addr := AddrKey(netip.MustParseAddr("10.200.0.1"))
	require.Equal(t, map[bpf.PodwallIpAddr]struct{}{addr: {}}, third.Changes.IPCache)
	ident := bpf.PodwallIdentKey{Policy: id, Identity: third.IPCache[addr]}
	require.Contains(t, third.Changes.Ident, ident)
	require.Contains(t, third.Policies[id].Ident, ident)
	require.Same(t, policies[id], third.Policies[id])
	require.Nil(t, second.Changes, "a State does not hold the ones before it")
	require.NotEqual(t, version, third.Policies[id].Version)

	// Relabelled away from the policy's tags, then gone.
	web.Labels = map[string]string{"app": "app-9", "tier": "new"}
	in.Pods[len(in.Pods)-1] = web
	c.SetPod(web)
	fourth := c.CompileNode(node)
	require.Equal(t, Compile(in), withoutChanges(fourth))
	require.Equal(t, map[bpf.PodwallIpAddr]struct{}{addr: {}}, fourth.Changes.IPCache)
	require.Contains(t, fourth.Changes.Ident, ident)
	require.NotContains(t, fourth.Policies[id].Ident, ident)

	in.Pods = in.Pods[:len(in.Pods)-1]
	c.DeletePod(web.Namespace, web.Name)
	fifth := c.CompileNode(node)
	require.Equal(t, Compile(in), withoutChanges(fifth))
	require.Equal(t, map[bpf.PodwallIpAddr]struct{}{addr: {}}, fifth.Changes.IPCache)
	require.NotContains(t, fifth.IPCache, addr)
	require.Equal(t, version, fifth.Policies[id].Version, "the policy is back where it was")
}

func withoutChanges(s *State) *State {
	out := *s
	out.Changes = nil
	return &out
}

// compiled is benchCluster(n) and a Compiler that compiled it, with the node's part of the
// input for CompileNode.
func compiled(n int) (Input, *Compiler, Input) {
	in := benchCluster(n)
	c := &Compiler{}
	c.Compile(in)
	node := in
	node.Pods = nil
	return in, c, node
}

// BenchmarkCompilerAnnotation is a local pod's annotation change and the turn after it.
func BenchmarkCompilerAnnotation(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			in, c, node := compiled(n)
			ep := in.Endpoints[0]
			i := slices.IndexFunc(in.Pods, func(p Pod) bool { return p.Name == ep.Name && p.Namespace == ep.Namespace })
			pod := in.Pods[i]
			b.ReportAllocs()
			k := 0
			for b.Loop() {
				k++
				pod.Annotations = annotated(fmt.Sprintf("allow tcp to ports %d", k%60000))
				c.SetPod(pod)
				c.CompileNode(node)
			}
		})
	}
}

// BenchmarkCompilerRemotePod is a remote pod of a new identity, which a local policy's
// label rule names, coming and going, each with the turn after it: the change the scale
// issue measured at 54 ms (10,000 pods) and 610 ms (100,000) when a turn recompiled the
// cluster.
func BenchmarkCompilerRemotePod(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			_, c, node := compiled(n)
			pod := Pod{Namespace: "ns-0", Name: "remote", Labels: map[string]string{"app": "app-1", "tier": "new"}, IPs: addrs("10.250.0.1", "fd00::fa:1")}
			b.ReportAllocs()
			k := 0
			for b.Loop() {
				if k++; k%2 == 1 {
					c.SetPod(pod)
				} else {
					c.DeletePod(pod.Namespace, pod.Name)
				}
				c.CompileNode(node)
			}
		})
	}
}

// BenchmarkCompilerRelabel is a remote pod moving between two existing identities.
func BenchmarkCompilerRelabel(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			in, c, node := compiled(n)
			pod := in.Pods[1]
			b.ReportAllocs()
			k := 0
			for b.Loop() {
				k++
				pod.Labels = maps.Clone(pod.Labels)
				pod.Labels["app"] = fmt.Sprintf("app-%d", k%20)
				c.SetPod(pod)
				c.CompileNode(node)
			}
		})
	}
}
