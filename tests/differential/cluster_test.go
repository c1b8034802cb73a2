package differential

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
)

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

var (
	namespaces = []string{"alpha", "beta", "kube-system"}
	labelKeys  = []string{"app", "tier", "x.io/role"}
	labelVals  = []string{"web", "db", "v1.2", "a-b"}
	hostIPs    = []netip.Addr{netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("fd00:ffff::1")}
)

// cluster is a random cluster as one node sees it: the compiler's input, and, per endpoint
// pod, the values at the edges of its rules, of which most packets are made.
type cluster struct {
	in compiler.Input
	// addrs are every pod's and the node's addresses.
	addrs []netip.Addr
	// edges holds the edges of each annotated pod's rules, by namespace/name.
	edges map[string]*edges
	// devices are the interfaces packets may arrive on: the endpoints' and others.
	devices []uint32
}

// edges are values at the edges of rules: a CIDR's first and last addresses and their
// neighbours, a port range's ends and their neighbours, ICMP types and codes.
type edges struct {
	cidrs []netip.Prefix
	ports []uint16
	types []uint8
	codes []uint8
}

// randomCluster makes a cluster whose endpoints are some of devices, the ifindexes of real
// interfaces (BPF_PROG_TEST_RUN runs only on an interface that exists).
func randomCluster(rng *rand.Rand, devices []uint32) *cluster {
	c := &cluster{edges: map[string]*edges{}, devices: devices}
	in := &c.in
	in.HostIPs = hostIPs[:1+rng.IntN(2)]
	in.DefaultPolicy = pick(rng, []compiler.DefaultPolicy{compiler.DefaultNamespace, compiler.DefaultNamespace, compiler.DefaultAllow, compiler.DefaultDeny})
	in.AllowHost = rng.IntN(2) == 0
	in.LegacyKey = rng.IntN(2) == 0
	if rng.IntN(3) > 0 {
		in.OpenNamespaces = []string{"kube-system"}
	}
	c.addrs = append(c.addrs, hostIPs...)

	for nsi, ns := range namespaces {
		n := 2 + rng.IntN(6)
		if ns == "kube-system" {
			n = 1 + rng.IntN(2)
		}
		for i := range n {
			p := compiler.Pod{Namespace: ns, Name: fmt.Sprintf("pod-%d", i), Labels: map[string]string{}}
			for range rng.IntN(4) {
				p.Labels[pick(rng, labelKeys)] = pick(rng, labelVals)
			}
			switch f := rng.IntN(12); {
			case f == 0:
				p.HostNetwork = true
				p.IPs = in.HostIPs
			case f == 1: // an address that is already taken
				p.IPs = []netip.Addr{pick(rng, c.addrs)}
			case f == 2: // no address yet
			default:
				v4 := netip.AddrFrom4([4]byte{10, 0, byte(nsi), byte(1 + i)})
				v6 := netip.AddrFrom16([16]byte{0: 0xfd, 13: byte(nsi), 15: byte(1 + i)})
				p.IPs = pick(rng, [][]netip.Addr{{v4}, {v6}, {v4, v6}, {v4, v6}})
			}
			c.addrs = append(c.addrs, p.IPs...)
			c.annotate(rng, &p)
			in.Pods = append(in.Pods, p)
		}
	}

	// Some devices are endpoints of pods, one may be the endpoint of a pod the cluster does
	// not know (isolated), and the others are no endpoints at all.
	free := append([]uint32(nil), devices...)
	rng.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
	for _, p := range in.Pods {
		if len(free) > 1 && rng.IntN(3) > 0 {
			in.Endpoints = append(in.Endpoints, compiler.Endpoint{Ifindex: free[0], Namespace: p.Namespace, Name: p.Name})
			free = free[1:]
		}
	}
	if len(free) > 1 && rng.IntN(2) == 0 {
		in.Endpoints = append(in.Endpoints, compiler.Endpoint{Ifindex: free[0], Namespace: "alpha", Name: "gone"})
	}
	return c
}

// annotate gives a pod no annotation, rules, an empty one (isolation), one that does not parse
// or one with too many rules, under either key or both.
func (c *cluster) annotate(rng *rand.Rand, p *compiler.Pod) {
	var value string
	switch f := rng.IntN(40); {
	case f < 5:
		return
	case f < 7:
		value = pick(rng, []string{"allow tcp frm label app=web", "allow; permit", "deny udp to ports 90:80",
			"allow icmp code 3", "allow tcp to ports 65536", "allow from cidr 10.0.0.0/33"})
	case f < 8:
		value = pick(rng, []string{"", ";", " ; ;\n"})
	case f < 9:
		value = strings.Repeat("allow;", bpf.MaxRules+1)
	default:
		n := 1 + rng.IntN(12)
		switch rng.IntN(30) {
		case 0, 1, 2:
			n = 20 + rng.IntN(200)
		case 3:
			n = bpf.MaxRules - rng.IntN(100)
		}
		e := &edges{}
		c.edges[p.Namespace+"/"+p.Name] = e
		rules := make([]string, n)
		for i := range rules {
			rules[i] = c.randomRule(rng, e)
		}
		value = strings.Join(rules, pick(rng, []string{";", "; ", " ;\n", ";;"})) + pick(rng, []string{"", ";", " ; "})
	}
	p.Annotations = map[string]string{}
	switch rng.IntN(4) {
	case 0:
		p.Annotations[policy.LegacyAnnotationKey] = value
	case 1:
		p.Annotations[policy.AnnotationKey] = value
		p.Annotations[policy.LegacyAnnotationKey] = "deny"
	default:
		p.Annotations[policy.AnnotationKey] = value
	}
}

// randomRule writes a rule in the grammar of SPEC 2, sometimes in its less usual spellings
// (leading zeros, bare addresses, host bits), and notes its values in e.
func (c *cluster) randomRule(rng *rand.Rand, e *edges) string {
	words := []string{pick(rng, []string{"allow", "allow", "allow", "deny"})}
	proto := pick(rng, []string{"", "", "tcp", "tcp", "udp", "icmp", "icmpv6"})
	if proto != "" {
		words = append(words, proto)
	}
	ports := proto == "tcp" || proto == "udp"
	if (proto == "icmp" || proto == "icmpv6") && rng.IntN(2) == 0 {
		// Few types and codes, so that rules often share them.
		typ := pick(rng, []uint8{0, 3, 8, 8, 128, 128, 135, uint8(rng.IntN(255))})
		e.types = append(e.types, typ)
		words = append(words, "type", number(rng, int(typ)))
		if rng.IntN(2) == 0 {
			code := pick(rng, []uint8{0, 0, 1, uint8(rng.IntN(256))})
			e.codes = append(e.codes, code)
			words = append(words, "code", number(rng, int(code)))
		}
	}
	// Each field of a clause is stated once in so many rules: "to label" and "to cidr" are
	// rarer, since they only decide whether the rule is kept for the pod.
	clauses := []struct {
		keyword            string
		ports, label, cidr int
	}{{"from", 3, 3, 3}, {"to", 2, 6, 6}}
	for _, cl := range clauses {
		clause := []string{cl.keyword}
		if ports && rng.IntN(cl.ports) == 0 {
			clause = append(clause, "ports", randomPorts(rng, e))
		}
		if rng.IntN(cl.label) == 0 {
			clause = append(clause, "label", pick(rng, labelKeys)+"="+pick(rng, labelVals))
		}
		if rng.IntN(cl.cidr) == 0 {
			clause = append(clause, "cidr", c.randomCIDR(rng, e))
		}
		// An empty clause is legal and constrains nothing.
		if len(clause) > 1 || rng.IntN(20) == 0 {
			words = append(words, clause...)
		}
	}
	return strings.Join(words, pick(rng, []string{" ", " ", "  ", "\t"}))
}

// number writes n in decimal, sometimes with leading zeros.
func number(rng *rand.Rand, n int) string {
	if rng.IntN(10) == 0 {
		return "00" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}

func randomPorts(rng *rand.Rand, e *edges) string {
	var list []string
	for range 1 + rng.IntN(3) {
		var first, last uint16
		switch rng.IntN(5) {
		case 0:
			first = pick(rng, []uint16{0, 1, 53, 80, 443, 1023, 1024, 65534, 65535})
			last = first
		case 1:
			a, b := uint16(rng.IntN(65536)), uint16(rng.IntN(65536))
			first, last = min(a, b), max(a, b)
		case 2:
			r := pick(rng, [][2]uint16{{0, 65535}, {0, 1023}, {1024, 65535}, {65534, 65535}, {0, 1}})
			first, last = r[0], r[1]
		default:
			first = uint16(rng.IntN(65536))
			last = first + uint16(rng.IntN(int(65535-first)+1)%300)
		}
		e.ports = append(e.ports, first, last, first-1, last+1)
		if first == last && rng.IntN(2) == 0 {
			list = append(list, number(rng, int(first)))
		} else {
			list = append(list, number(rng, int(first))+":"+number(rng, int(last)))
		}
	}
	return strings.Join(list, ",")
}

func (c *cluster) randomCIDR(rng *rand.Rand, e *edges) string {
	var a netip.Addr
	switch rng.IntN(10) {
	case 0, 1, 2, 3:
		a = pick(rng, c.addrs)
	case 4, 5:
		a = netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(3)), byte(rng.IntN(256))})
	case 6, 7:
		a = netip.AddrFrom16([16]byte{0: 0xfd, 13: byte(rng.IntN(3)), 15: byte(rng.IntN(256))})
	default:
		a = randomAddr(rng, rng.IntN(2) == 0)
	}
	bits := pick(rng, []int{0, 1, 8, 16, 23, 24, 31, 32, rng.IntN(33)})
	if a.Is6() {
		bits = pick(rng, []int{0, 1, 8, 64, 112, 120, 127, 128, rng.IntN(129)})
	}
	p := netip.PrefixFrom(a, bits)
	e.cidrs = append(e.cidrs, p.Masked())
	switch {
	case bits == a.BitLen() && rng.IntN(2) == 0:
		return a.String()
	case rng.IntN(3) == 0: // host bits are masked off
		return p.String()
	}
	return p.Masked().String()
}

func randomAddr(rng *rand.Rand, v4 bool) netip.Addr {
	var b [16]byte
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	if v4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

// lastAddr is the last address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// endpointPod is the pod behind an interface: nil when the interface is no endpoint or its
// pod is unknown.
func (c *cluster) endpointPod(ifindex uint32) *compiler.Pod {
	for _, ep := range c.in.Endpoints {
		if ep.Ifindex != ifindex {
			continue
		}
		for i, p := range c.in.Pods {
			if p.Namespace == ep.Namespace && p.Name == ep.Name {
				return &c.in.Pods[i]
			}
		}
	}
	return nil
}

// randomPacket makes a packet to an endpoint (sometimes to an interface that is none), from
// pod, node and world addresses and with values near the edges of the pod's rules.
func (c *cluster) randomPacket(rng *rand.Rand) (uint32, compiler.Packet) {
	ifindex := pick(rng, c.devices)
	if len(c.in.Endpoints) > 0 && rng.IntN(10) > 0 {
		ifindex = pick(rng, c.in.Endpoints).Ifindex
	}
	pod := c.endpointPod(ifindex)
	e := &edges{}
	if pod != nil && c.edges[pod.Namespace+"/"+pod.Name] != nil {
		e = c.edges[pod.Namespace+"/"+pod.Name]
	}

	var p compiler.Packet
	switch f := rng.IntN(20); {
	case f < 8:
		p.Src = pick(rng, c.addrs)
	case f < 14 && len(e.cidrs) > 0:
		pfx := pick(rng, e.cidrs)
		last := lastAddr(pfx)
		p.Src = pick(rng, []netip.Addr{pfx.Addr(), last, pfx.Addr().Prev(), last.Next()})
		if !p.Src.IsValid() {
			p.Src = pfx.Addr()
		}
	default:
		p.Src = randomAddr(rng, rng.IntN(2) == 0)
	}
	v4 := p.Src.Is4()
	// The destination is the pod's address of the family, as routing would have it.
	p.Dst = netip.MustParseAddr("10.255.0.1")
	if !v4 {
		p.Dst = netip.MustParseAddr("fd00:255::1")
	}
	if pod != nil {
		for _, a := range pod.IPs {
			if a.Is4() == v4 {
				p.Dst = a
				break
			}
		}
	}

	// Mostly TCP, UDP and the ICMP of the family; also the ICMP of the other family and
	// protocols podwall only counts as "other" (SCTP, GRE, ...). IPv6 extension header numbers
	// would be walked as headers, so they are not L4 protocols here.
	if v4 {
		p.Proto = pick(rng, []uint8{protoTCP, protoTCP, protoTCP, protoUDP, protoUDP, protoICMP, protoICMP, protoICMPv6, 0, 47, 132, 255})
	} else {
		p.Proto = pick(rng, []uint8{protoTCP, protoTCP, protoTCP, protoUDP, protoUDP, protoICMPv6, protoICMPv6, protoICMP, 59, 47, 132, 255})
	}
	port := func() uint16 {
		if len(e.ports) > 0 && rng.IntN(4) > 0 {
			return pick(rng, e.ports)
		}
		return pick(rng, []uint16{0, 65535, uint16(rng.IntN(65536))})
	}
	p.SrcPort, p.DstPort = port(), port()
	if len(e.types) > 0 && rng.IntN(4) > 0 {
		p.ICMPType = pick(rng, e.types)
	} else {
		// Echo, errors, neighbour discovery and the types around it, anything.
		p.ICMPType = pick(rng, []uint8{0, 3, 8, 11, 1, 2, 128, 129, 132, 133, 134, 135, 136, 137, 138, 255, uint8(rng.IntN(256))})
	}
	if len(e.codes) > 0 && rng.IntN(4) > 0 {
		p.ICMPCode = pick(rng, e.codes)
	} else {
		p.ICMPCode = pick(rng, []uint8{0, 0, 1, 255, uint8(rng.IntN(256))})
	}
	p.Fragment = pick(rng, []compiler.FragKind{compiler.FragNone, compiler.FragNone, compiler.FragNone,
		compiler.FragNone, compiler.FragNone, compiler.FragNone, compiler.FragFirst, compiler.FragLater})
	// Sent by the node's own stack: mostly from its addresses, sometimes from any; and a
	// node address on a forwarded packet, which is no claim to be the node.
	p.FromNode = rng.IntN(8) == 0 || (slices.Contains(c.in.HostIPs, p.Src) && rng.IntN(2) == 0)
	return ifindex, p
}

// policyOf describes what judges the packets of an interface, for a report.
func (c *cluster) policyOf(ifindex uint32) string {
	var b strings.Builder
	fmt.Fprintf(&b, "options %+v, node %v\n", c.in.Options, c.in.HostIPs)
	for _, ep := range c.in.Endpoints {
		if ep.Ifindex == ifindex {
			fmt.Fprintf(&b, "endpoint %d: pod %s/%s\n", ifindex, ep.Namespace, ep.Name)
		}
	}
	if pod := c.endpointPod(ifindex); pod != nil {
		fmt.Fprintf(&b, "pod labels %v, addresses %v, host network %v\n", pod.Labels, pod.IPs, pod.HostNetwork)
		for k, v := range pod.Annotations {
			fmt.Fprintf(&b, "annotation %s: %q\n", k, v)
		}
	}
	b.WriteString("pods:\n")
	for _, p := range c.in.Pods {
		fmt.Fprintf(&b, "  %s/%s labels %v addresses %v host network %v\n", p.Namespace, p.Name, p.Labels, p.IPs, p.HostNetwork)
	}
	return b.String()
}
