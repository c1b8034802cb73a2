package compilertest

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
)

// Change makes one random change to the cluster's input, mostly what an agent sees most:
// an annotation, and says which.
func (c *Cluster) Change(rng *rand.Rand) string {
	in := &c.Input
	pod := func() *compiler.Pod { return &in.Pods[rng.IntN(len(in.Pods))] }
	switch f := rng.IntN(20); {
	case f < 7:
		p := pod()
		c.annotate(rng, p)
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
		p.Labels[pick(rng, labelKeys)] = pick(rng, labelVals)
		return "relabel " + p.Name + " in place"
	case f == 9:
		p := pod()
		p.Labels = maps.Clone(p.Labels)
		delete(p.Labels, pick(rng, labelKeys))
		return "unlabel " + p.Name
	case f == 10:
		p := pod()
		switch rng.IntN(4) {
		case 0:
			p.IPs = nil
		case 1:
			p.IPs = []netip.Addr{pick(rng, c.Addrs)}
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
		p := compiler.Pod{Namespace: pick(rng, namespaces), Name: fmt.Sprintf("new-%d", rng.IntN(5)),
			Labels: map[string]string{pick(rng, labelKeys): pick(rng, labelVals)},
			IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, 8, 0, byte(rng.IntN(250))})}}
		c.annotate(rng, &p)
		in.Pods = append(slices.Clone(in.Pods), p)
		if rng.IntN(2) == 0 {
			in.Endpoints = append(slices.Clone(in.Endpoints), compiler.Endpoint{Ifindex: uint32(1000 + rng.IntN(10)), Namespace: p.Namespace, Name: p.Name})
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
		in.HostIPs = hostIPs[:1+rng.IntN(2)]
		return "host addresses"
	case f == 17:
		in.DefaultPolicy = compiler.DefaultPolicy(rng.IntN(3))
		in.LegacyKey = rng.IntN(2) == 0
		return "default policy and legacy key"
	case f == 18:
		in.AllowHost = !in.AllowHost
		return "allow host"
	default:
		if len(in.OpenNamespaces) > 0 {
			in.OpenNamespaces = nil
		} else {
			in.OpenNamespaces = []string{pick(rng, namespaces)}
		}
		return "open namespaces"
	}
}
