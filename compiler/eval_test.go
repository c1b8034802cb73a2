package compiler

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/policy"
)

func addrs(ips ...string) []netip.Addr {
	out := make([]netip.Addr, len(ips))
	for i, ip := range ips {
		out[i] = netip.MustParseAddr(ip)
	}
	return out
}

func annotated(rules string) map[string]string { return map[string]string{policy.AnnotationKey: rules} }

// evalCluster is a small cluster with one pod of each kind the algorithm tells apart.
func evalCluster(allowHost bool) Input {
	return Input{
		Pods: []Pod{
			{Namespace: "prod", Name: "web", Labels: map[string]string{"app": "web"}, IPs: addrs("10.0.0.1", "fd00::1"),
				Annotations: annotated("allow tcp from label app=client to ports 80,8000:8080; " +
					"deny tcp from cidr 10.0.0.3 to ports 8080; allow icmp type 8; allow icmpv6; " +
					"allow udp from ports 53; allow from cidr fd00::2/128")},
			{Namespace: "prod", Name: "db", Labels: map[string]string{"app": "db"}, IPs: addrs("10.0.0.2", "fd00::2")},
			{Namespace: "prod", Name: "client", Labels: map[string]string{"app": "client"}, IPs: addrs("10.0.0.3"),
				Annotations: annotated("allow tcp frm label app=web")},
			{Namespace: "prod", Name: "client-2", Labels: map[string]string{"app": "client"}, IPs: addrs("10.0.0.4")},
			{Namespace: "dev", Name: "client", Labels: map[string]string{"app": "client"}, IPs: addrs("10.0.1.3")},
			{Namespace: "kube-system", Name: "dns", IPs: addrs("10.0.2.1"), Annotations: annotated("allow tcp")},
			{Namespace: "prod", Name: "exporter", IPs: addrs("192.168.0.1"), HostNetwork: true},
		},
		Endpoints: []Endpoint{
			{1, "prod", "web"}, {2, "prod", "db"}, {3, "kube-system", "dns"}, {4, "prod", "gone"},
			{5, "prod", "exporter"}, {6, "prod", "client"},
		},
		HostIPs: addrs("192.168.0.1", "fd00:ffff::1"),
		Options: Options{OpenNamespaces: []string{"kube-system"}, AllowHost: allowHost},
	}
}

func TestEvaluate(t *testing.T) {
	tcp := func(src string, dport uint16) Packet {
		dst := "10.0.0.1"
		if netip.MustParseAddr(src).Is6() {
			dst = "fd00::1"
		}
		return Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Proto: protoTCP, SrcPort: 40000, DstPort: dport}
	}
	with := func(p Packet, change func(*Packet)) Packet {
		change(&p)
		return p
	}
	later := func(p *Packet) { p.Fragment = FragLater }
	node := func(p Packet) Packet { return with(p, func(p *Packet) { p.FromNode = true }) }
	proto := func(n uint8, typ uint8) func(*Packet) {
		return func(p *Packet) { p.Proto, p.ICMPType = n, typ }
	}
	const host, world = "192.168.0.1", "10.9.9.9"
	for _, c := range []struct {
		name      string
		allowHost bool
		ifindex   uint32
		pkt       Packet
		pass      bool
		reason    bpf.Reason
		rule      int
	}{
		{"no entry drops", true, 99, tcp(world, 80), false, bpf.ReasonNoEntry, -1},
		{"host-network pod has no entry", true, 5, tcp(world, 80), false, bpf.ReasonNoEntry, -1},
		{"open namespace", true, 3, tcp(world, 9), true, bpf.ReasonOpen, -1},
		{"malformed: mixed families", true, 1, Packet{Src: netip.MustParseAddr(world), Dst: netip.MustParseAddr("fd00::1")}, false, bpf.ReasonMalformed, -1},
		{"malformed passes in open mode", true, 3, Packet{Src: netip.MustParseAddr(world), Dst: netip.MustParseAddr("fd00::1")}, true, bpf.ReasonOpen, -1},
		{"unknown pod is isolated", true, 4, tcp("10.0.0.3", 80), false, bpf.ReasonIsolated, -1},
		{"isolated pod still hears the node", true, 4, node(tcp(host, 80)), true, bpf.ReasonHost, -1},
		{"invalid annotation isolates", true, 6, tcp("10.0.0.1", 80), false, bpf.ReasonIsolated, -1},
		{"neighbour discovery passes an isolated pod", true, 6, with(tcp("fd00::2", 0), proto(protoICMPv6, 135)), true, bpf.ReasonND, -1},
		{"label allows", true, 1, tcp("10.0.0.4", 80), true, bpf.ReasonAllowRule, 0},
		{"port range start", true, 1, tcp("10.0.0.4", 8000), true, bpf.ReasonAllowRule, 0},
		{"port range end", true, 1, tcp("10.0.0.4", 8080), true, bpf.ReasonAllowRule, 0},
		{"past the range", true, 1, tcp("10.0.0.4", 8081), false, bpf.ReasonNoRule, -1},
		{"deny wins", true, 1, tcp("10.0.0.3", 8080), false, bpf.ReasonDenyRule, 1},
		{"deny only where it matches", true, 1, tcp("10.0.0.3", 8000), true, bpf.ReasonAllowRule, 0},
		{"label of another namespace", true, 1, tcp("10.0.1.3", 80), false, bpf.ReasonNoRule, -1},
		{"other label", true, 1, tcp("10.0.0.2", 80), false, bpf.ReasonNoRule, -1},
		{"later fragment has no ports", true, 1, with(tcp("10.0.0.4", 80), later), false, bpf.ReasonNoRule, -1},
		{"icmp type", true, 1, with(tcp(world, 0), proto(protoICMP, 8)), true, bpf.ReasonAllowRule, 2},
		{"icmp other type", true, 1, with(tcp(world, 0), proto(protoICMP, 0)), false, bpf.ReasonNoRule, -1},
		{"icmp later fragment has no type", true, 1, with(with(tcp(world, 0), proto(protoICMP, 8)), later), false, bpf.ReasonNoRule, -1},
		{"icmpv6 any type", true, 1, with(tcp("fd00::9", 0), proto(protoICMPv6, 128)), true, bpf.ReasonAllowRule, 3},
		{"icmpv6 later fragment", true, 1, with(with(tcp("fd00::9", 0), proto(protoICMPv6, 135)), later), true, bpf.ReasonAllowRule, 3},
		{"protocol 58 over IPv4 is not icmpv6", true, 1, with(tcp(world, 0), proto(protoICMPv6, 128)), false, bpf.ReasonNoRule, -1},
		{"protocol 1 over IPv6 is not icmp", true, 1, with(tcp("fd00::9", 0), proto(protoICMP, 8)), false, bpf.ReasonNoRule, -1},
		{"udp source port", true, 1, with(tcp(world, 9999), func(p *Packet) { p.Proto, p.SrcPort = protoUDP, 53 }), true, bpf.ReasonAllowRule, 4},
		{"udp other source port", true, 1, with(tcp(world, 9999), func(p *Packet) { p.Proto, p.SrcPort = protoUDP, 54 }), false, bpf.ReasonNoRule, -1},
		{"cidr of any protocol", true, 1, with(tcp("fd00::2", 0), proto(132, 0)), true, bpf.ReasonAllowRule, 5},
		{"cidr, later fragment", true, 1, with(with(tcp("fd00::2", 0), proto(132, 0)), later), true, bpf.ReasonAllowRule, 5},
		{"cidr, address next to it", true, 1, with(tcp("fd00::3", 0), proto(132, 0)), false, bpf.ReasonNoRule, -1},
		{"host", true, 1, node(tcp(host, 22)), true, bpf.ReasonHost, -1},
		{"host, flag off: judged by the rules", false, 1, node(tcp(host, 22)), false, bpf.ReasonNoRule, -1},
		{"host IPv6", true, 1, node(tcp("fd00:ffff::1", 22)), true, bpf.ReasonHost, -1},
		{"the node from any source address", true, 1, node(tcp(world, 22)), true, bpf.ReasonHost, -1},
		{"a forwarded packet with the node's address is the world's", true, 1, tcp(host, 22), false, bpf.ReasonNoRule, -1},
		{"default namespace policy: same namespace", true, 2, tcp("10.0.0.3", 5432), true, bpf.ReasonAllowRule, 0},
		{"default namespace policy: other namespace", true, 2, tcp("10.0.1.3", 5432), false, bpf.ReasonNoRule, -1},
		{"default namespace policy: world", true, 2, tcp(world, 5432), false, bpf.ReasonNoRule, -1},
		{"default namespace policy: host-network pod of the namespace", false, 2, tcp(host, 5432), false, bpf.ReasonNoRule, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := Compile(evalCluster(c.allowHost))
			v := Evaluate(s, c.ifindex, c.pkt)
			require.Equal(t, c.pass, v.Pass, "%+v", v)
			require.Equal(t, c.reason, v.Reason, "%+v", v)
			require.Equal(t, c.rule, v.Rule)
		})
	}
}

func TestEvaluateIdentityAndPolicy(t *testing.T) {
	s := Compile(evalCluster(true))
	v := Evaluate(s, 1, Packet{Src: netip.MustParseAddr("10.0.0.4"), Dst: netip.MustParseAddr("10.0.0.1"), Proto: protoTCP, DstPort: 80})
	require.Equal(t, s.Endpoints[1].Policy, v.Policy)
	require.Equal(t, []string{"namespace_prod", "prod_app_client"}, s.Identities[v.Identity])
	require.Equal(t, 1, s.Policies[v.Policy].Rules[v.Rule].Index)

	v = Evaluate(s, 1, Packet{Src: netip.MustParseAddr("10.9.9.9"), Dst: netip.MustParseAddr("10.0.0.1"), Proto: protoTCP})
	require.Equal(t, uint32(bpf.IDWorld), v.Identity)
}

func TestEvaluateMissingPolicyIsolates(t *testing.T) {
	s := Compile(evalCluster(true))
	delete(s.Policies, s.Endpoints[1].Policy)
	v := Evaluate(s, 1, Packet{Src: netip.MustParseAddr("10.0.0.4"), Dst: netip.MustParseAddr("10.0.0.1"), Proto: protoTCP, DstPort: 80})
	require.Equal(t, Verdict{Reason: bpf.ReasonIsolated, Rule: -1, Identity: v.Identity, Policy: s.Endpoints[1].Policy}, v)
}
