package compiler

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/policy"
)

// TestCompilerEqualsCompile runs random sequences of changes to random clusters through one
// Compiler: after every change its State must equal Compile's, and the State it returned
// before must still equal Compile's of the input before, which it may share maps with.
func TestCompilerEqualsCompile(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for seq := range 60 {
		sc := randomScenario(rng)
		var c Compiler
		var prevRef, prevInc *State
		for step := range 40 {
			what := "start"
			if step > 0 {
				what = sc.change(rng)
			}
			ref := Compile(sc.input)
			inc := c.Compile(sc.input)
			require.Equal(t, ref, inc, "sequence %d, step %d: %s", seq, step, what)
			if prevRef != nil {
				require.Equal(t, prevRef, prevInc, "sequence %d, step %d: %s changed the State before", seq, step, what)
			}
			prevRef, prevInc = ref, inc
		}
	}
}

// change makes one random change to the scenario's input, mostly what an agent sees most:
// an annotation, and says which.
func (sc *scenario) change(rng *rand.Rand) string {
	in := &sc.input
	pod := func() *Pod { return &in.Pods[rng.IntN(len(in.Pods))] }
	switch f := rng.IntN(20); {
	case f < 7:
		p := pod()
		sc.annotate(rng, p)
		return "annotate " + p.Name
	case f == 7:
		p := pod()
		delete(p.Annotations, policy.AnnotationKey)
		return "drop the annotation of " + p.Name
	case f == 8: // in place, as a careless caller might
		p := pod()
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		p.Labels[pick(rng, diffLabelKeys)] = pick(rng, diffLabelVals)
		return "relabel " + p.Name + " in place"
	case f == 9:
		p := pod()
		p.Labels = maps.Clone(p.Labels)
		delete(p.Labels, pick(rng, diffLabelKeys))
		return "unlabel " + p.Name
	case f == 10:
		p := pod()
		switch rng.IntN(4) {
		case 0:
			p.IPs = nil
		case 1:
			p.IPs = []netip.Addr{pick(rng, sc.addrs)}
		case 2: // the IPv4-mapped form of what it had
			p.IPs = slices.Clone(p.IPs)
			for i, a := range p.IPs {
				if a.Is4() {
					p.IPs[i] = netip.AddrFrom16(a.As16())
				}
			}
		default:
			p.IPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 9, byte(rng.IntN(3)), byte(rng.IntN(250))})}
		}
		return "readdress " + p.Name
	case f == 11:
		p := pod()
		p.HostNetwork = !p.HostNetwork
		return "flip host network of " + p.Name
	case f == 12:
		p := Pod{Namespace: pick(rng, diffNamespaces), Name: fmt.Sprintf("new-%d", rng.IntN(5)),
			Labels: map[string]string{pick(rng, diffLabelKeys): pick(rng, diffLabelVals)},
			IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, 8, 0, byte(rng.IntN(250))})}}
		sc.annotate(rng, &p)
		in.Pods = append(slices.Clone(in.Pods), p)
		if rng.IntN(2) == 0 {
			in.Endpoints = append(slices.Clone(in.Endpoints), Endpoint{Ifindex: uint32(1000 + rng.IntN(10)), Namespace: p.Namespace, Name: p.Name})
		}
		return "add " + p.Namespace + "/" + p.Name
	case f == 13 && len(in.Pods) > 1:
		i := rng.IntN(len(in.Pods))
		name := in.Pods[i].Name
		in.Pods = slices.Delete(slices.Clone(in.Pods), i, i+1)
		return "remove " + name
	case f == 14:
		in.Pods = append(slices.Clone(in.Pods), *pod())
		return "duplicate a pod"
	case f == 15 && len(in.Endpoints) > 0:
		i := rng.IntN(len(in.Endpoints))
		in.Endpoints = slices.Delete(slices.Clone(in.Endpoints), i, i+1)
		return "remove an endpoint"
	case f == 16:
		in.HostIPs = diffHostIPs[:1+rng.IntN(2)]
		return "host addresses"
	case f == 17:
		in.DefaultPolicy = DefaultPolicy(rng.IntN(3))
		in.LegacyKey = rng.IntN(2) == 0
		return "default policy and legacy key"
	case f == 18:
		in.AllowHost = !in.AllowHost
		return "allow host"
	default:
		if len(in.OpenNamespaces) > 0 {
			in.OpenNamespaces = nil
		} else {
			in.OpenNamespaces = []string{pick(rng, diffNamespaces)}
		}
		return "open namespaces"
	}
}

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
