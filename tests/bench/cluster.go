package bench

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
)

// The benchmark's cluster: the server pod under test and the client pod that sends to it, in
// namespace Namespace, and others pods whose labels fill the rules' tags.
const (
	Namespace   = "bench"
	ServerName  = "server"
	ClientName  = "client"
	ClientLabel = "bench-client" // the client's label app=ClientLabel; the last rule names it
	otherPods   = 200
	// ClientNet holds the client's IPv4 address; the last rule names it too.
	ClientNet = "10.99.0.0/16"
)

// RuleCounts are the sizes of the server's policy the benchmark measures.
var RuleCounts = []int{1, 10, 100, 1000}

// LastRule is the rule that lets the benchmark's traffic in: TCP and UDP from the client pod.
// Every other rule of PolicyText misses that traffic, so a linear rule list checks them all.
var LastRule = fmt.Sprintf("allow from label app=%s cidr %s", ClientLabel, ClientNet)

// fillers are the kinds of rules before the last, used in turn. None matches the client's
// traffic (from app=bench-client at 10.99.x.x, TCP and UDP to port 5201, source port above
// 32767), or its unlabelled extra address: several fail only at their last match (the same
// protocol and port, another label or network).
var fillers = []func(i int) string{
	func(i int) string {
		return fmt.Sprintf("allow tcp from label app=svc-%d to ports %d", i%50, 8000+i%1000)
	},
	func(i int) string { return fmt.Sprintf("allow udp from cidr 172.16.%d.0/24 to ports 53", i%256) },
	func(i int) string { return fmt.Sprintf("deny tcp from cidr 192.168.%d.0/24 to ports 22", i%256) },
	func(i int) string {
		return fmt.Sprintf("allow tcp from ports 1024:65535 label tier=db to ports %d,%d:%d", 5432+i%100, 6000+i%100, 6100+i%100)
	},
	func(i int) string { return fmt.Sprintf("allow icmp type 8 from label app=svc-%d", i%50) },
	func(i int) string { return fmt.Sprintf("allow tcp from cidr 172.17.%d.0/24 to ports 5201", i%256) },
	func(i int) string { return fmt.Sprintf("allow udp from label app=svc-%d to ports 5201", i%50) },
	func(i int) string { return fmt.Sprintf("allow icmpv6 type 128 from cidr fd0f:%x::/32", i%0x10000) },
	func(i int) string { return fmt.Sprintf("deny udp from ports %d:%d", 10000+i%1000, 10000+i%1000+i%7) },
}

// PolicyText is the server's policy of n rules (n >= 1): n-1 rules of every kind that miss
// the client's traffic, then LastRule.
func PolicyText(n int) string { return policyText(n, 0) }

// policyText is PolicyText with the fillers' numbers (labels, networks, ports) shifted by
// offset, which gives other policies of the same shape.
func policyText(n, offset int) string {
	rules := make([]string, 0, n)
	for i := range n - 1 {
		rules = append(rules, fillers[i%len(fillers)](offset+i))
	}
	return strings.Join(append(rules, LastRule), "; ")
}

// Addrs are the addresses of one benchmark topology.
type Addrs struct {
	Server, Client []netip.Addr
	Node           []netip.Addr
	// ServerIfindex is the server's host-side interface in the node namespace.
	ServerIfindex uint32
}

// Cluster is the input to compiler.Compile for a topology whose server pod has the policy
// annotation policy: the server, the client (label app=ClientLabel) and other pods, labelled
// app=svc-K and tier=front|back|db, whose addresses are only entries of the tag sets.
func Cluster(rules string, a Addrs) compiler.Input {
	in := compiler.Input{
		HostIPs:   a.Node,
		Options:   compiler.Options{AllowHost: true},
		Endpoints: []compiler.Endpoint{{Ifindex: a.ServerIfindex, Namespace: Namespace, Name: ServerName}},
		Pods: []compiler.Pod{
			{
				Namespace: Namespace, Name: ServerName, IPs: a.Server,
				Labels:      map[string]string{"app": "server"},
				Annotations: map[string]string{policy.AnnotationKey: rules},
			},
			{Namespace: Namespace, Name: ClientName, IPs: a.Client, Labels: map[string]string{"app": ClientLabel}},
		},
	}
	for i := range otherPods {
		in.Pods = append(in.Pods, compiler.Pod{
			Namespace: Namespace,
			Name:      fmt.Sprintf("svc-%d", i),
			Labels:    map[string]string{"app": fmt.Sprintf("svc-%d", i%50), "tier": []string{"front", "back", "db"}[i%3]},
			IPs: []netip.Addr{
				netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}),
				netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x01, 14: byte(i >> 8), 15: byte(i)}),
			},
		})
	}
	return in
}
