package compiler

import (
	"fmt"
	"net/netip"
	"testing"
)

// benchCluster is n pods in 50 namespaces, dual stack, 100 of them local: half of those
// annotated with ten rules of every kind, half on the namespace default policy.
func benchCluster(n int) Input {
	const policy = "allow tcp from label app=app-1 to ports 80,443,8000:8999; allow tcp from label tier=front; " +
		"deny tcp from cidr 10.1.0.0/16 to ports 22; allow udp from ports 53; allow icmp type 8; allow icmpv6 type 128; " +
		"allow from cidr 192.168.0.0/16; allow tcp to label tier=back; allow udp from label app=app-2 to ports 1024:65535; " +
		"deny from label app=app-3"
	var in Input
	for i := range n {
		ns := fmt.Sprintf("ns-%d", i%50)
		p := Pod{
			Namespace: ns,
			Name:      fmt.Sprintf("pod-%d", i),
			Labels: map[string]string{
				"app":     fmt.Sprintf("app-%d", i%20),
				"tier":    []string{"front", "back", "db"}[i%3],
				"version": fmt.Sprintf("v%d", i%4),
			},
			IPs: []netip.Addr{
				netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
				netip.AddrFrom16([16]byte{0: 0xfd, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}),
			},
		}
		if i%(n/100) == 0 {
			if i%(n/50) == 0 {
				p.Annotations = annotated(policy)
			}
			in.Endpoints = append(in.Endpoints, Endpoint{Ifindex: uint32(100 + i), Namespace: ns, Name: p.Name})
		}
		in.Pods = append(in.Pods, p)
	}
	in.HostIPs = addrs("192.168.0.1")
	return in
}

func BenchmarkCompile(b *testing.B) {
	in := benchCluster(10_000)
	b.ReportAllocs()
	for b.Loop() {
		Compile(in)
	}
}
