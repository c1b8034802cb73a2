package e2e

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/loader/loadertest"
	"github.com/podwall/podwall/tests/topo"
)

// TestEachRuleFieldMatchesAsSpecified checks each constraint a rule can state (SPEC 3), one
// pod per rule, with the traffic just inside and just outside what it allows: protocol,
// from label, from cidr of either family (a CIDR of the other family never matches), from
// ports and to ports with ranges, to label, to cidr, ICMP type and code; and that a deny
// rule wins over any allow rule, whatever the order.
func TestEachRuleFieldMatchesAsSpecified(t *testing.T) {
	c := newCluster(t, topo.Routed, loadertest.Best(t))
	cl := c.tp.AddClient("client", worldIPv4, worldIPv6)
	backendPod := c.addPod(t, "backend", nsProd, labels("role", "backend"), nil)
	frontendPod := c.addPod(t, "frontend", nsProd, labels("role", "frontend"), nil)
	add := func(name, rules string, kv ...string) *pod {
		return c.addPod(t, name, nsProd, labels(kv...), policyOf(rules))
	}
	udpOnly := add("udp-only", "allow udp")
	icmpOnly := add("icmp-only", "allow icmp")
	icmp6Only := add("icmp6-only", "allow icmpv6")
	fromCIDR4 := add("from-cidr4", "allow from cidr 10.99.0.0/16")
	fromCIDR6 := add("from-cidr6", "allow from cidr fd00:99::/32")
	fromWorld := add("from-world", "allow from cidr 203.0.113.0/24; allow from cidr 2001:db8::7")
	fromPorts := add("from-ports", "allow tcp from ports 40000:40009; allow udp from ports 40100,40200:40209")
	toPorts := add("to-ports", "allow tcp to ports 8000:8100,443; allow udp to ports 9000:9999")
	toLabel := add("to-label", "allow to label role=db", "role", "db")
	toLabelNot := add("to-label-not", "allow to label role=db", "role", "web")
	toCIDR4 := add("to-cidr4", "allow to cidr 10.244.0.0/16")
	toCIDR6 := add("to-cidr6", "allow tcp to cidr fd00:244::/32")
	toCIDRNot := add("to-cidr-not", "allow to cidr 10.245.0.0/16")
	icmpType := add("icmp-type", "allow icmp type 8; allow icmpv6 type 128")
	icmpCode := add("icmp-code", "allow icmp type 8 code 0; allow icmpv6 type 128 code 1")
	icmpNot := add("icmp-not", "allow icmp type 0; allow icmpv6 type 129")
	labelPorts := add("label-ports", "allow udp from label role=backend to ports 9090")
	denyLabel := add("deny-label", "allow; deny tcp from label role=backend")
	denyPort := add("deny-port", "deny tcp to ports 9090; allow tcp")
	denyCIDR := add("deny-cidr", fmt.Sprintf("allow from cidr %s; deny from cidr %s; allow from cidr fd00:99::/32",
		cl.IPv4, netip.PrefixFrom(cl.IPv4, 24).Masked()))
	denyICMP6 := add("deny-icmp6", "allow; deny icmpv6 type 128")
	c.apply(t)

	backend, frontend := podPeer(backendPod), podPeer(frontendPod)
	outside, world := clientPeer(cl), extraPeer("world", cl, worldIPv4, worldIPv6)

	t.Run("fields", func(t *testing.T) {
		c.verify(t,
			passes(outside, udpOnly, udpTo(portWeb), udpTo(portAlt)),
			drops(outside, udpOnly, tcpTo(portWeb), ping),
			passes(outside, icmpOnly, ping.v4()),
			drops(outside, icmpOnly, ping.v6(), tcpTo(portWeb), udpTo(portWeb)),
			passes(outside, icmp6Only, ping.v6()),
			drops(outside, icmp6Only, ping.v4(), tcpTo(portWeb)),

			passes(outside, fromCIDR4, flowsV4(everything)...),
			drops(outside, fromCIDR4, flowsV6(everything)...),
			drops(backend, fromCIDR4, tcpTo(portWeb)),
			passes(outside, fromCIDR6, flowsV6(everything)...),
			drops(outside, fromCIDR6, flowsV4(everything)...),
			passes(world, fromWorld, everything...),
			drops(outside, fromWorld, everything...),

			passes(outside, fromPorts,
				tcpTo(portWeb).from(40000), tcpTo(portAlt).from(40009),
				udpTo(portWeb).from(40100), udpTo(portWeb).from(40200), udpTo(portWeb).from(40209)),
			drops(outside, fromPorts,
				tcpTo(portWeb).from(40010), tcpTo(portWeb).from(40100),
				udpTo(portWeb).from(40001), udpTo(portWeb).from(40101), udpTo(portWeb).from(40210), ping),

			passes(outside, toPorts, tcpTo(portWeb), tcpTo(portHTTPS), udpTo(portAlt)),
			drops(outside, toPorts, tcpTo(portAlt), tcpTo(portEtcd), udpTo(portWeb), udpTo(portHTTPS), ping),

			passes(outside, toLabel, everything...),
			drops(outside, toLabelNot, everything...),
			passes(outside, toCIDR4, flowsV4(everything)...),
			drops(outside, toCIDR4, flowsV6(everything)...),
			passes(outside, toCIDR6, tcpTo(portWeb).v6()),
			drops(outside, toCIDR6, tcpTo(portWeb).v4(), udpTo(portWeb).v6(), ping.v6()),
			drops(outside, toCIDRNot, everything...),

			passes(outside, icmpType, ping),
			drops(outside, icmpType, tcpTo(portWeb), udpTo(portWeb)),
			passes(outside, icmpCode, ping.v4()),
			drops(outside, icmpCode, ping.v6()),
			drops(outside, icmpNot, ping),

			passes(backend, labelPorts, udpTo(portAlt)),
			drops(backend, labelPorts, udpTo(portWeb), tcpTo(portAlt), ping),
			drops(frontend, labelPorts, udpTo(portAlt)),
		)
	})

	t.Run("deny wins over allow", func(t *testing.T) {
		c.verify(t,
			drops(backend, denyLabel, tcpTo(portWeb)),
			passes(backend, denyLabel, udpTo(portWeb), ping),
			passes(frontend, denyLabel, tcpTo(portWeb)),
			passes(outside, denyLabel, tcpTo(portWeb)),
			passes(outside, denyPort, tcpTo(portWeb)),
			drops(outside, denyPort, tcpTo(portAlt), udpTo(portAlt)),
			drops(outside, denyCIDR, flowsV4(everything)...), // allowed as /32, denied as /24
			passes(outside, denyCIDR, flowsV6(everything)...),
			drops(outside, denyICMP6, ping.v6()),
			passes(outside, denyICMP6, ping.v4(), tcpTo(portWeb).v6()),
		)
		// Not "and no allow rule": the node's IPv6 multicast reports reach the pods that
		// allow everything meanwhile.
		c.counted(t, []bpf.Reason{bpf.ReasonDenyRule}, nil,
			func() { c.verify(t, drops(backend, denyLabel, tcpTo(portAlt).v6())) })
	})
}

func flowsV4(fs []flow) []flow {
	out := make([]flow, len(fs))
	for i, f := range fs {
		out[i] = f.v4()
	}
	return out
}

func flowsV6(fs []flow) []flow {
	out := make([]flow, len(fs))
	for i, f := range fs {
		out[i] = f.v6()
	}
	return out
}
