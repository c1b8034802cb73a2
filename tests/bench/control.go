package bench

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
)

// ControlPods is the size of the control-plane clusters.
const ControlPods = 10_000

// ControlCluster is a cluster of ControlPods pods in 50 namespaces, dual stack, labelled
// app=svc-K and tier=front|back|db, local of which are on this node, each annotated with a
// policy of rules rules of every kind (PolicyText's, with ports and networks that differ
// from pod to pod, so that few pods share a compiled policy).
func ControlCluster(local, rules int) compiler.Input {
	in := compiler.Input{
		HostIPs: []netip.Addr{netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("fd00:ffff::1")},
		Options: compiler.Options{AllowHost: true},
	}
	for i := range ControlPods {
		p := compiler.Pod{
			Namespace: fmt.Sprintf("ns-%d", i%50),
			Name:      fmt.Sprintf("pod-%d", i),
			Labels: map[string]string{
				"app":  fmt.Sprintf("svc-%d", i%50),
				"tier": []string{"front", "back", "db"}[i%3],
			},
			IPs: []netip.Addr{
				netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
				netip.AddrFrom16([16]byte{0: 0xfd, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}),
			},
		}
		if i < local {
			p.Annotations = map[string]string{policy.AnnotationKey: policyText(rules, i*len(fillers))}
			in.Endpoints = append(in.Endpoints, compiler.Endpoint{Ifindex: uint32(100 + i), Namespace: p.Namespace, Name: p.Name})
		}
		in.Pods = append(in.Pods, p)
	}
	return in
}

// MapSize counts the entries of a compiled state and their bytes as the kernel's maps hold
// them (key and value, without the maps' own overhead).
func MapSize(s *compiler.State) (entries, bytes int) {
	add := func(n int, key, value any) {
		entries += n
		bytes += n * (binary.Size(key) + binary.Size(value))
	}
	add(len(s.Endpoints), uint32(0), bpf.PodwallEndpointEntry{})
	add(len(s.IPCache), bpf.PodwallIpAddr{}, uint32(0))
	for _, p := range s.Policies {
		add(len(p.Ident), bpf.PodwallIdentKey{}, bpf.PodwallRuleVec{})
		add(len(p.CIDR), bpf.PodwallCidrKey{}, bpf.PodwallRuleVec{})
		add(len(p.Port), bpf.PodwallPortKey{}, bpf.PodwallRuleVec{})
		add(len(p.ICMP), bpf.PodwallIcmpKey{}, bpf.PodwallRuleVec{})
	}
	return entries, bytes
}
