// Package compilertest makes random clusters and packets for the tests that hold the
// compiler, its reference evaluator and the data path against each other: one generator,
// so that every such test draws from the same variety of policies.
package compilertest

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

// IP protocol numbers of the packets.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// Kind is what a generated pod's annotation holds.
type Kind int

const (
	KindNone    Kind = iota // no annotation
	KindRules               // rules, or none (an empty annotation isolates)
	KindInvalid             // an annotation that does not parse
	KindTooMany             // more than bpf.MaxRules rules
)

var (
	namespaces = []string{"alpha", "beta", "kube-system"}
	labelKeys  = []string{"app", "tier", "x.io/role"}
	labelVals  = []string{"web", "db", "v1.2", "a-b"}
	hostIPs    = []netip.Addr{netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("fd00:ffff::1")}
)

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

// Cluster is a random cluster as one node sees it: the compiler's input, and what each
// pod's annotation was written from.
type Cluster struct {
	Input compiler.Input
	// Kinds and Rules say what each pod's annotation holds, by "namespace/name": Rules are
	// the rules of a KindRules annotation, in order.
	Kinds map[string]Kind
	Rules map[string][]policy.Rule
	// Addrs are every pod's and the node's addresses.
	Addrs []netip.Addr
	// Devices are the interfaces packets may arrive on: the endpoints' and others.
	Devices []uint32
	// edges holds the edges of each annotated pod's rules, by namespace/name.
	edges map[string]*edges
}

// edges are values at the edges of rules: a CIDR's first and last addresses and their
// neighbours, a port range's ends and their neighbours, ICMP types and codes.
type edges struct {
	cidrs []netip.Prefix
	ports []uint16
	types []uint8
	codes []uint8
}

// Key names a pod in Kinds and Rules.
func Key(p *compiler.Pod) string { return p.Namespace + "/" + p.Name }

// Random makes a cluster whose endpoints are some of devices (ifindexes; nil: made up), and
// one endpoint of a pod the cluster does not know.
func Random(rng *rand.Rand, devices []uint32) *Cluster {
	c := &Cluster{Kinds: map[string]Kind{}, Rules: map[string][]policy.Rule{}, edges: map[string]*edges{}}
	in := &c.Input
	in.HostIPs = hostIPs[:1+rng.IntN(2)]
	in.DefaultPolicy = pick(rng, []compiler.DefaultPolicy{compiler.DefaultNamespace, compiler.DefaultNamespace, compiler.DefaultAllow, compiler.DefaultDeny})
	in.AllowHost = rng.IntN(2) == 0
	in.LegacyKey = rng.IntN(2) == 0
	in.Audit = rng.IntN(4) == 0
	if ns := pick(rng, namespaces); rng.IntN(3) == 0 {
		in.NamespaceAnnotations = map[string]map[string]string{ns: {policy.AuditAnnotationKey: pick(rng, []string{"true", "false", "yes"})}}
	}
	if rng.IntN(3) > 0 {
		in.OpenNamespaces = []string{"kube-system"}
	}
	c.Addrs = append(c.Addrs, hostIPs...)

	for nsi, ns := range namespaces {
		n := 2 + rng.IntN(7)
		if ns == "kube-system" {
			n = 1 + rng.IntN(2)
		}
		for i := range n {
			p := compiler.Pod{Namespace: ns, Name: fmt.Sprintf("pod-%d", i), Labels: map[string]string{}}
			for range rng.IntN(4) {
				p.Labels[pick(rng, labelKeys)] = pick(rng, labelVals)
			}
			switch rng.IntN(12) {
			case 0:
				p.HostNetwork = true
				p.IPs = in.HostIPs
			case 1: // an address that is already taken
				p.IPs = []netip.Addr{pick(rng, c.Addrs)}
			case 2: // no address yet
			default:
				v4 := netip.AddrFrom4([4]byte{10, 0, byte(nsi), byte(1 + i)})
				v6 := netip.AddrFrom16([16]byte{0: 0xfd, 13: byte(nsi), 15: byte(1 + i)})
				p.IPs = pick(rng, [][]netip.Addr{{v4}, {v4}, {v6}, {v4, v6}, {v4, v6}})
			}
			c.Addrs = append(c.Addrs, p.IPs...)
			c.annotate(rng, &p)
			if rng.IntN(6) == 0 { // audit mode, or a value that is none
				if p.Annotations == nil {
					p.Annotations = map[string]string{}
				}
				p.Annotations[policy.AuditAnnotationKey] = pick(rng, []string{"true", "true", "false", "on"})
			}
			in.Pods = append(in.Pods, p)
		}
	}

	if devices == nil {
		for i := range in.Pods {
			devices = append(devices, uint32(10+i))
		}
		devices = append(devices, 9)
	}
	c.Devices = devices
	// Some devices are endpoints of pods, one may be the endpoint of a pod the cluster does
	// not know (isolated), and the others are no endpoints at all.
	free := slices.Clone(devices)
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
func (c *Cluster) annotate(rng *rand.Rand, p *compiler.Pod) {
	k := Key(p)
	var value string
	switch f := rng.IntN(40); {
	case f < 6:
		c.Kinds[k] = KindNone
		return
	case f < 8:
		c.Kinds[k] = KindInvalid
		value = pick(rng, []string{"allow tcp frm label app=web", "allow; permit", "deny udp to ports 90:80",
			"allow icmp code 3", "allow tcp to ports 65536", "allow from cidr 10.0.0.0/33"})
	case f < 9:
		c.Kinds[k] = KindRules
		value = pick(rng, []string{"", ";", " ; ;\n"})
	case f < 10:
		c.Kinds[k] = KindTooMany
		value = strings.Repeat("allow;", bpf.MaxRules+1)
	default:
		c.Kinds[k] = KindRules
		n := 1 + rng.IntN(12)
		switch rng.IntN(30) {
		case 0, 1, 2:
			n = 20 + rng.IntN(200)
		case 3:
			n = bpf.MaxRules - rng.IntN(100)
		}
		e := &edges{}
		c.edges[k] = e
		texts := make([]string, n)
		for i := range texts {
			var r policy.Rule
			r, texts[i] = c.randomRule(rng, e)
			c.Rules[k] = append(c.Rules[k], r)
		}
		value = strings.Join(texts, pick(rng, []string{";", "; ", " ;\n", ";;"})) + pick(rng, []string{"", ";", " ; "})
	}
	p.Annotations = map[string]string{}
	switch rng.IntN(4) {
	case 0:
		p.Annotations[policy.LegacyAnnotationKey] = value
	case 1: // both keys: the namespaced one wins
		p.Annotations[policy.AnnotationKey] = value
		p.Annotations[policy.LegacyAnnotationKey] = "deny"
	default:
		p.Annotations[policy.AnnotationKey] = value
	}
}

// randomRule makes a rule and writes it in the grammar of SPEC 2, sometimes in its less
// usual spellings (leading zeros, bare addresses, host bits, empty clauses, several
// spaces), and notes its values in e.
func (c *Cluster) randomRule(rng *rand.Rand, e *edges) (policy.Rule, string) {
	r := policy.Rule{Action: pick(rng, []policy.Action{policy.Allow, policy.Allow, policy.Allow, policy.Deny})}
	r.Protocol = pick(rng, []policy.Protocol{policy.ProtoAny, policy.ProtoAny, policy.ProtoTCP, policy.ProtoTCP,
		policy.ProtoUDP, policy.ProtoICMP, policy.ProtoICMPv6})
	words := []string{r.Action.String()}
	if r.Protocol != policy.ProtoAny {
		words = append(words, r.Protocol.String())
	}
	ports := r.Protocol == policy.ProtoTCP || r.Protocol == policy.ProtoUDP
	if (r.Protocol == policy.ProtoICMP || r.Protocol == policy.ProtoICMPv6) && rng.IntN(2) == 0 {
		// Few types and codes, so that rules often share them.
		r.HasType, r.Type = true, pick(rng, []uint8{0, 3, 8, 8, 128, 128, 135, uint8(rng.IntN(255))})
		e.types = append(e.types, r.Type)
		words = append(words, "type", number(rng, int(r.Type)))
		if rng.IntN(2) == 0 {
			r.HasCode, r.Code = true, pick(rng, []uint8{0, 0, 1, uint8(rng.IntN(256))})
			e.codes = append(e.codes, r.Code)
			words = append(words, "code", number(rng, int(r.Code)))
		}
	}
	// Each field of a clause is stated once in so many rules: "to label" and "to cidr" are
	// rarer, since they only decide whether the rule is kept for the pod.
	for _, cl := range []struct {
		keyword            string
		clause             *policy.Clause
		ports, label, cidr int
	}{{"from", &r.From, 3, 3, 3}, {"to", &r.To, 2, 6, 6}} {
		clause := []string{cl.keyword}
		if ports && rng.IntN(cl.ports) == 0 {
			var text string
			cl.clause.Ports, text = randomPorts(rng, e)
			clause = append(clause, "ports", text)
		}
		if rng.IntN(cl.label) == 0 {
			cl.clause.Label = &policy.Label{Key: pick(rng, labelKeys), Value: pick(rng, labelVals)}
			clause = append(clause, "label", cl.clause.Label.String())
		}
		if rng.IntN(cl.cidr) == 0 {
			p, text := c.randomCIDR(rng, e)
			cl.clause.CIDR = &p
			clause = append(clause, "cidr", text)
		}
		// An empty clause is legal and constrains nothing.
		if len(clause) > 1 || rng.IntN(20) == 0 {
			words = append(words, clause...)
		}
	}
	return r, strings.Join(words, pick(rng, []string{" ", " ", "  ", "\t"}))
}

// number writes n in decimal, sometimes with leading zeros.
func number(rng *rand.Rand, n int) string {
	if rng.IntN(10) == 0 {
		return "00" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}

func randomPorts(rng *rand.Rand, e *edges) ([]policy.PortRange, string) {
	var out []policy.PortRange
	var list []string
	for range 1 + rng.IntN(3) {
		var pr policy.PortRange
		switch rng.IntN(5) {
		case 0:
			p := pick(rng, []uint16{0, 1, 53, 80, 443, 1023, 1024, 65534, 65535})
			pr = policy.PortRange{First: p, Last: p}
		case 1:
			a, b := uint16(rng.IntN(65536)), uint16(rng.IntN(65536))
			pr = policy.PortRange{First: min(a, b), Last: max(a, b)}
		case 2:
			r := pick(rng, [][2]uint16{{0, 65535}, {0, 1023}, {1024, 65535}, {65534, 65535}, {0, 1}})
			pr = policy.PortRange{First: r[0], Last: r[1]}
		default:
			a := uint16(rng.IntN(65536))
			pr = policy.PortRange{First: a, Last: a + uint16(rng.IntN(int(65535-a)+1)%300)}
		}
		out = append(out, pr)
		e.ports = append(e.ports, pr.First, pr.Last, pr.First-1, pr.Last+1)
		if pr.First == pr.Last && rng.IntN(2) == 0 {
			list = append(list, number(rng, int(pr.First)))
		} else {
			list = append(list, number(rng, int(pr.First))+":"+number(rng, int(pr.Last)))
		}
	}
	return out, strings.Join(list, ",")
}

// randomCIDR makes a prefix, masked, and writes it: masked, with its host bits, or as a bare
// address when it is one.
func (c *Cluster) randomCIDR(rng *rand.Rand, e *edges) (netip.Prefix, string) {
	var a netip.Addr
	switch rng.IntN(10) {
	case 0, 1, 2, 3:
		a = pick(rng, c.Addrs)
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
		return p, a.String()
	case rng.IntN(3) == 0: // host bits are masked off
		return p.Masked(), p.String()
	}
	return p.Masked(), p.Masked().String()
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

// EndpointPod is the pod behind an interface, and whether the interface is an endpoint at
// all: nil and true for the endpoint of a pod the cluster does not know.
func (c *Cluster) EndpointPod(ifindex uint32) (*compiler.Pod, bool) {
	for _, ep := range c.Input.Endpoints {
		if ep.Ifindex != ifindex {
			continue
		}
		for i, p := range c.Input.Pods {
			if p.Namespace == ep.Namespace && p.Name == ep.Name {
				return &c.Input.Pods[i], true
			}
		}
		return nil, true
	}
	return nil, false
}

// PodAddr is the pod's address of a family.
func PodAddr(p *compiler.Pod, v4 bool) (netip.Addr, bool) {
	for _, a := range p.IPs {
		if a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// RandomPacket makes a packet to an endpoint (sometimes to an interface that is none), from
// pod, node and world addresses and with values near the edges of the pod's rules.
func (c *Cluster) RandomPacket(rng *rand.Rand) (uint32, compiler.Packet) {
	ifindex := pick(rng, c.Devices)
	if len(c.Input.Endpoints) > 0 && rng.IntN(10) > 0 {
		ifindex = pick(rng, c.Input.Endpoints).Ifindex
	}
	pod, _ := c.EndpointPod(ifindex)
	e := &edges{}
	if pod != nil && c.edges[Key(pod)] != nil {
		e = c.edges[Key(pod)]
	}

	var p compiler.Packet
	switch f := rng.IntN(20); {
	case f < 8:
		p.Src = pick(rng, c.Addrs)
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
		if a, ok := PodAddr(pod, v4); ok {
			p.Dst = a
		}
	}

	// Mostly TCP, UDP and the ICMP of the family; also the ICMP of the other family and
	// protocols podwall only counts as "other" (SCTP, GRE, ...). IPv6 extension header numbers
	// would be walked as headers, so they are not L4 protocols here.
	if v4 {
		p.Proto = pick(rng, []uint8{ProtoTCP, ProtoTCP, ProtoTCP, ProtoUDP, ProtoUDP, ProtoICMP, ProtoICMP, ProtoICMPv6, 0, 47, 132, 255})
	} else {
		p.Proto = pick(rng, []uint8{ProtoTCP, ProtoTCP, ProtoTCP, ProtoUDP, ProtoUDP, ProtoICMPv6, ProtoICMPv6, ProtoICMP, 59, 47, 132, 255})
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
	p.FromNode = rng.IntN(8) == 0 || (slices.Contains(c.Input.HostIPs, p.Src) && rng.IntN(2) == 0)
	return ifindex, p
}

// Describe says what judges the packets of an interface, for a failure's report.
func (c *Cluster) Describe(ifindex uint32) string {
	var b strings.Builder
	fmt.Fprintf(&b, "options %+v, node %v\n", c.Input.Options, c.Input.HostIPs)
	for _, ep := range c.Input.Endpoints {
		if ep.Ifindex == ifindex {
			fmt.Fprintf(&b, "endpoint %d: pod %s/%s\n", ifindex, ep.Namespace, ep.Name)
		}
	}
	if pod, _ := c.EndpointPod(ifindex); pod != nil {
		fmt.Fprintf(&b, "pod labels %v, addresses %v, host network %v\n", pod.Labels, pod.IPs, pod.HostNetwork)
		for k, v := range pod.Annotations {
			fmt.Fprintf(&b, "annotation %s: %q\n", k, v)
		}
	}
	b.WriteString("pods:\n")
	for _, p := range c.Input.Pods {
		fmt.Fprintf(&b, "  %s/%s labels %v addresses %v host network %v\n", p.Namespace, p.Name, p.Labels, p.IPs, p.HostNetwork)
	}
	return b.String()
}
