package compiler

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCompilerReuses checks that an annotation change keeps the cluster and every other
// pod's policy, and that a relabel does not.
func TestCompilerReuses(t *testing.T) {
	in := benchCluster()
	var c Compiler
	first := c.Compile(in)
	cl := c.cl
	ep := in.Endpoints[0]
	i := slices.IndexFunc(in.Pods, func(p Pod) bool { return p.Name == ep.Name && p.Namespace == ep.Namespace })
	in.Pods[i].Annotations = annotated("allow tcp to ports 81")
	second := c.Compile(in)
	require.Same(t, cl, c.cl, "an annotation change keeps the cluster")
	require.Equal(t, Compile(in), second)
	require.NotEqual(t, first.Endpoints[ep.Ifindex].Policy, second.Endpoints[ep.Ifindex].Policy)
	other := in.Endpoints[2] // annotated, as every second local pod
	id := second.Endpoints[other.Ifindex].Policy
	require.NotZero(t, id)
	require.Same(t, first.Policies[id], second.Policies[id], "an unchanged policy is kept")

	in.Pods[i].Labels = map[string]string{"app": "other"}
	third := c.Compile(in)
	require.NotSame(t, cl, c.cl, "a relabel recompiles the cluster")
	require.Equal(t, Compile(in), third)
}

func BenchmarkCompilerAnnotation(b *testing.B) {
	in := benchCluster()
	var c Compiler
	c.Compile(in)
	ep := in.Endpoints[0]
	i := slices.IndexFunc(in.Pods, func(p Pod) bool { return p.Name == ep.Name && p.Namespace == ep.Namespace })
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n++
		in.Pods[i].Annotations = annotated(fmt.Sprintf("allow tcp to ports %d", n%60000))
		c.Compile(in)
	}
}
