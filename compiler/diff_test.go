package compiler

import (
	"cmp"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/policy"
)

var (
	diffSeed      = flag.Uint64("diff.seed", 0, "seed of TestDifferential; 0 reads PODWALL_DIFF_SEED, else picks one from the clock")
	diffScenarios = flag.Int("diff.scenarios", 400, "clusters TestDifferential generates")
	diffPackets   = flag.Int("diff.packets", 300, "packets TestDifferential judges per cluster")
)

// TestDifferential holds Evaluate, which reads the compiled maps as the data path does,
// against a direct reading of SPEC.md on the rules as generated: random clusters, random
// rules and random packets must get the same verdict, reason and deciding rule from both.
// Replay a failure with -diff.seed or PODWALL_DIFF_SEED.
func TestDifferential(t *testing.T) {
	seed := *diffSeed
	if env := os.Getenv("PODWALL_DIFF_SEED"); seed == 0 && env != "" {
		var err error
		seed, err = strconv.ParseUint(env, 10, 64)
		require.NoError(t, err, "PODWALL_DIFF_SEED")
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -diff.seed=%d or PODWALL_DIFF_SEED=%d)", seed, seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	judged := 0
	for n := range *diffScenarios {
		sc := randomScenario(rng)
		s := Compile(sc.input)
		for range *diffPackets {
			ifindex, p := sc.randomPacket(rng)
			want := sc.judge(ifindex, p)
			got := Evaluate(s, ifindex, p)
			gotVerdict := spelled{got.Pass, got.Reason, got.Rule}
			if want != gotVerdict {
				require.Equal(t, want, gotVerdict, "seed %d, cluster %d, ifindex %d, packet %+v\n%s", seed, n, ifindex, p, sc.describe(ifindex))
			}
			judged++
		}
	}
	t.Logf("%d packets judged alike", judged)
}

// spelled is a verdict as SPEC spells it: pass or not, why, and which rule (its position
// in the annotation, from 0; -1 for none).
type spelled struct {
	pass   bool
	reason bpf.Reason
	rule   int
}

// policyKind is what a generated pod's annotation holds.
type policyKind int

const (
	kindNone policyKind = iota
	kindRules
	kindInvalid
	kindTooMany
)

// scenario is a random cluster, with the rules each pod's annotation was generated from.
type scenario struct {
	input Input
	kinds map[podKey]policyKind
	rules map[podKey][]policy.Rule
	// addrs are the addresses of the pods and the node.
	addrs []netip.Addr
	// edges are the values of each pod's rules: its packets are made mostly of them.
	edges map[podKey]*edges
}

// edges are values at the edges of rules: a CIDR's first and last addresses and their
// neighbours, a port range's ends and their neighbours, types and codes.
type edges struct {
	cidrs []netip.Prefix
	ports []uint16
	types []uint8
	codes []uint8
}

var (
	diffNamespaces = []string{"alpha", "beta", "kube-system"}
	diffLabelKeys  = []string{"app", "tier", "x.io/role"}
	diffLabelVals  = []string{"web", "db", "v1.2", "a-b"}
	diffHostIPs    = addrs("192.168.0.1", "fd00:ffff::1")
)

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

func randomScenario(rng *rand.Rand) *scenario {
	sc := &scenario{kinds: map[podKey]policyKind{}, rules: map[podKey][]policy.Rule{}, edges: map[podKey]*edges{}}
	in := &sc.input
	in.HostIPs = diffHostIPs[:1+rng.IntN(2)]
	in.DefaultPolicy = DefaultPolicy(rng.IntN(3))
	in.AllowHost = rng.IntN(2) == 0
	in.LegacyKey = rng.IntN(2) == 0
	if rng.IntN(3) > 0 {
		in.OpenNamespaces = []string{"kube-system"}
	}
	sc.addrs = append(sc.addrs, diffHostIPs...)

	for nsi, ns := range diffNamespaces {
		npods := 2 + rng.IntN(8)
		if ns == "kube-system" {
			npods = 1 + rng.IntN(2)
		}
		for i := range npods {
			p := Pod{Namespace: ns, Name: fmt.Sprintf("pod-%d", i), Labels: map[string]string{}}
			for range rng.IntN(4) {
				p.Labels[pick(rng, diffLabelKeys)] = pick(rng, diffLabelVals)
			}
			switch f := rng.IntN(10); {
			case f == 0:
				p.HostNetwork = true
				p.IPs = in.HostIPs
			case f == 1 && len(sc.addrs) > 0: // an address already taken
				p.IPs = []netip.Addr{pick(rng, sc.addrs)}
			case f == 2: // no address yet
			default:
				v4 := netip.AddrFrom4([4]byte{10, 0, byte(nsi), byte(1 + i)})
				v6 := netip.AddrFrom16([16]byte{0: 0xfd, 13: byte(nsi), 15: byte(1 + i)})
				switch rng.IntN(5) {
				case 0, 1:
					p.IPs = []netip.Addr{v4}
				case 2:
					p.IPs = []netip.Addr{v6}
				default:
					p.IPs = []netip.Addr{v4, v6}
				}
			}
			sc.addrs = append(sc.addrs, p.IPs...)
			sc.annotate(rng, &p)
			in.Pods = append(in.Pods, p)
		}
	}
	for i, p := range in.Pods {
		if rng.IntN(3) > 0 {
			in.Endpoints = append(in.Endpoints, Endpoint{Ifindex: uint32(10 + i), Namespace: p.Namespace, Name: p.Name})
		}
	}
	in.Endpoints = append(in.Endpoints, Endpoint{Ifindex: 9, Namespace: "alpha", Name: "gone"})
	return sc
}

// annotate gives a pod a random annotation under a random key.
func (sc *scenario) annotate(rng *rand.Rand, p *Pod) {
	k := podKey{p.Namespace, p.Name}
	var value string
	switch f := rng.IntN(20); {
	case f < 4:
		sc.kinds[k] = kindNone
		return
	case f == 4:
		sc.kinds[k] = kindInvalid
		value = pick(rng, []string{"allow tcp frm label app=web", "allow; permit", "deny udp to ports 90:80", "allow icmp code 3"})
	case f == 5:
		sc.kinds[k] = kindTooMany
		value = strings.Repeat("allow;", bpf.MaxRules+1)
	default:
		sc.kinds[k] = kindRules
		n := 1 + rng.IntN(12)
		switch rng.IntN(20) {
		case 0:
			n = 0
		case 1:
			n = 100 + rng.IntN(200)
		}
		var texts []string
		e := &edges{}
		sc.edges[k] = e
		for range n {
			r := sc.randomRule(rng, e)
			sc.rules[k] = append(sc.rules[k], r)
			texts = append(texts, policy.FormatRule(r))
		}
		sep := pick(rng, []string{";", "; ", " ;\n", ";;"})
		value = strings.Join(texts, sep) + pick(rng, []string{"", ";", " ; "})
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

func (sc *scenario) randomRule(rng *rand.Rand, e *edges) policy.Rule {
	r := policy.Rule{Action: policy.Allow}
	if rng.IntN(4) == 0 {
		r.Action = policy.Deny
	}
	r.Protocol = pick(rng, []policy.Protocol{policy.ProtoAny, policy.ProtoAny, policy.ProtoTCP, policy.ProtoTCP, policy.ProtoUDP, policy.ProtoICMP, policy.ProtoICMPv6})
	switch r.Protocol {
	case policy.ProtoTCP, policy.ProtoUDP:
		if rng.IntN(3) == 0 {
			r.From.Ports = randomPorts(rng, e)
		}
		if rng.IntN(2) == 0 {
			r.To.Ports = randomPorts(rng, e)
		}
	case policy.ProtoICMP, policy.ProtoICMPv6:
		if rng.IntN(2) == 0 {
			r.HasType = true
			// Few types and codes, so that rules often share them.
			r.Type = pick(rng, []uint8{0, 3, 8, 8, 128, 128, 135, uint8(rng.IntN(255))})
			e.types = append(e.types, r.Type)
			if rng.IntN(2) == 0 {
				r.HasCode = true
				r.Code = pick(rng, []uint8{0, 0, 1, uint8(rng.IntN(256))})
				e.codes = append(e.codes, r.Code)
			}
		}
	}
	if rng.IntN(3) == 0 {
		r.From.Label = &policy.Label{Key: pick(rng, diffLabelKeys), Value: pick(rng, diffLabelVals)}
	}
	if rng.IntN(3) == 0 {
		c := sc.randomCIDR(rng, e)
		r.From.CIDR = &c
	}
	if rng.IntN(6) == 0 {
		r.To.Label = &policy.Label{Key: pick(rng, diffLabelKeys), Value: pick(rng, diffLabelVals)}
	}
	if rng.IntN(6) == 0 {
		c := sc.randomCIDR(rng, e)
		r.To.CIDR = &c
	}
	return r
}

func randomPorts(rng *rand.Rand, e *edges) []policy.PortRange {
	var out []policy.PortRange
	for range 1 + rng.IntN(3) {
		var pr policy.PortRange
		switch rng.IntN(4) {
		case 0:
			p := pick(rng, []uint16{0, 1, 53, 80, 443, 1023, 1024, 65535})
			pr = policy.PortRange{First: p, Last: p}
		case 1:
			a, b := uint16(rng.IntN(65536)), uint16(rng.IntN(65536))
			pr = policy.PortRange{First: min(a, b), Last: max(a, b)}
		default:
			a := uint16(rng.IntN(65536))
			pr = policy.PortRange{First: a, Last: a + uint16(rng.IntN(int(65535-a)+1)%300)}
		}
		out = append(out, pr)
		e.ports = append(e.ports, pr.First, pr.Last, pr.First-1, pr.Last+1)
	}
	return out
}

func (sc *scenario) randomCIDR(rng *rand.Rand, e *edges) netip.Prefix {
	var a netip.Addr
	switch rng.IntN(4) {
	case 0, 1:
		if len(sc.addrs) > 0 {
			a = pick(rng, sc.addrs)
			break
		}
		fallthrough
	case 2:
		a = netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(3)), byte(rng.IntN(256))})
	default:
		a = netip.AddrFrom16([16]byte{0: 0xfd, 13: byte(rng.IntN(3)), 15: byte(rng.IntN(256))})
	}
	var bits int
	if a.Is4() {
		bits = pick(rng, []int{0, 1, 8, 16, 23, 24, 31, 32, rng.IntN(33)})
	} else {
		bits = pick(rng, []int{0, 1, 8, 64, 112, 120, 127, 128, rng.IntN(129)})
	}
	p := netip.PrefixFrom(a, bits).Masked()
	e.cidrs = append(e.cidrs, p)
	return p
}

// randomPacket makes a packet to a random endpoint (or none), from addresses and with
// values near the edges of the rules.
func (sc *scenario) randomPacket(rng *rand.Rand) (uint32, Packet) {
	ifindex := pick(rng, sc.input.Endpoints).Ifindex
	if rng.IntN(20) == 0 {
		ifindex = uint32(rng.IntN(10 + len(sc.input.Pods)))
	}
	e := &edges{}
	if pod, _ := sc.endpointPod(ifindex); pod != nil && sc.edges[podKey{pod.Namespace, pod.Name}] != nil {
		e = sc.edges[podKey{pod.Namespace, pod.Name}]
	}
	var p Packet
	switch f := rng.IntN(10); {
	case f < 4:
		p.Src = pick(rng, sc.addrs)
	case f < 7 && len(e.cidrs) > 0:
		c := pick(rng, e.cidrs)
		last := lastAddr(c)
		p.Src = pick(rng, []netip.Addr{c.Addr(), last, c.Addr().Prev(), last.Next()})
		if !p.Src.IsValid() {
			p.Src = c.Addr()
		}
	case f < 8:
		p.Src = netip.AddrFrom4([4]byte{byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))})
	default:
		var b [16]byte
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		p.Src = netip.AddrFrom16(b)
	}
	// The destination is the pod's address of the family, as routing would have it.
	p.Dst = sc.dst(ifindex, p.Src.Is4())
	p.Proto = pick(rng, []uint8{protoTCP, protoTCP, protoTCP, protoUDP, protoUDP, protoICMP, protoICMP, protoICMPv6, 0, 47, 132, 255})
	if (p.Proto == protoICMP || p.Proto == protoICMPv6) && rng.IntN(4) > 0 {
		// Mostly the ICMP of the packet's family, sometimes the other one.
		p.Proto = protoICMPv6
		if p.Src.Is4() {
			p.Proto = protoICMP
		}
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
		p.ICMPType = pick(rng, []uint8{0, 8, 128, 133, 134, 135, 136, 137, 138, uint8(rng.IntN(256))})
	}
	if len(e.codes) > 0 && rng.IntN(4) > 0 {
		p.ICMPCode = pick(rng, e.codes)
	} else {
		p.ICMPCode = pick(rng, []uint8{0, uint8(rng.IntN(256))})
	}
	p.Fragment = pick(rng, []FragKind{FragNone, FragNone, FragNone, FragNone, FragNone, FragNone, FragFirst, FragLater})
	// Sent by the node's stack: mostly from its own addresses, sometimes from any.
	p.FromNode = rng.IntN(8) == 0 || (slices.Contains(sc.input.HostIPs, p.Src) && rng.IntN(2) == 0)
	return ifindex, p
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (sc *scenario) endpointPod(ifindex uint32) (*Pod, bool) {
	for _, ep := range sc.input.Endpoints {
		if ep.Ifindex == ifindex {
			for i, p := range sc.input.Pods {
				if p.Namespace == ep.Namespace && p.Name == ep.Name {
					return &sc.input.Pods[i], true
				}
			}
			return nil, true
		}
	}
	return nil, false
}

// dst is the endpoint pod's address of a family; some address of the family when it has
// none.
func (sc *scenario) dst(ifindex uint32, v4 bool) netip.Addr {
	if pod, _ := sc.endpointPod(ifindex); pod != nil {
		if a, ok := podAddr(pod, v4); ok {
			return a
		}
	}
	if v4 {
		return netip.MustParseAddr("10.255.0.1")
	}
	return netip.MustParseAddr("fd00:255::1")
}

func podAddr(p *Pod, v4 bool) (netip.Addr, bool) {
	for _, a := range p.IPs {
		if a.Is4() == v4 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// sourcePod is the pod an address belongs to, as SPEC reads it: the node's addresses are
// no pod's, host-network pods are not pods with an identity, and an address claimed by two
// pods belongs to the first by namespace and name.
func (sc *scenario) sourcePod(a netip.Addr) *Pod {
	if slices.Contains(sc.input.HostIPs, a) {
		return nil
	}
	var owner *Pod
	for i := range sc.input.Pods {
		p := &sc.input.Pods[i]
		if p.HostNetwork || !slices.Contains(p.IPs, a) {
			continue
		}
		if owner == nil || cmp.Or(cmp.Compare(p.Namespace, owner.Namespace), cmp.Compare(p.Name, owner.Name)) < 0 {
			owner = p
		}
	}
	return owner
}

// judge is SPEC.md applied to the generated rules, written without the compiler's data
// structures.
func (sc *scenario) judge(ifindex uint32, p Packet) spelled {
	none := func(pass bool, r bpf.Reason) spelled { return spelled{pass, r, -1} }
	pod, isEndpoint := sc.endpointPod(ifindex)
	if !isEndpoint || (pod != nil && pod.HostNetwork) {
		return none(false, bpf.ReasonNoEntry)
	}

	// The pod's mode (SPEC 4).
	open, isolated := false, false
	var rules []policy.Rule
	namespaceDefault := false
	switch {
	case pod == nil:
		isolated = true
	case slices.Contains(sc.input.OpenNamespaces, pod.Namespace):
		open = true
	default:
		k := podKey{pod.Namespace, pod.Name}
		_, hasKey := pod.Annotations[policy.AnnotationKey]
		_, hasLegacy := pod.Annotations[policy.LegacyAnnotationKey]
		kind := sc.kinds[k]
		if !hasKey && !(hasLegacy && sc.input.LegacyKey) {
			kind = kindNone
		}
		switch kind {
		case kindNone:
			switch sc.input.DefaultPolicy {
			case DefaultAllow:
				open = true
			case DefaultDeny:
				isolated = true
			default:
				namespaceDefault = true
			}
		case kindRules:
			rules = sc.rules[k]
			isolated = len(rules) == 0
		default:
			isolated = true
		}
	}

	if p.Src.Is4() != p.Dst.Is4() {
		if open {
			return none(true, bpf.ReasonOpen)
		}
		return none(false, bpf.ReasonMalformed)
	}
	if open {
		return none(true, bpf.ReasonOpen)
	}
	l4 := p.Fragment != FragLater
	if p.Src.Is6() && p.Proto == protoICMPv6 && l4 && p.ICMPType >= 133 && p.ICMPType <= 137 {
		return none(true, bpf.ReasonND)
	}
	if p.FromNode && sc.input.AllowHost {
		return none(true, bpf.ReasonHost)
	}
	if isolated {
		return none(false, bpf.ReasonIsolated)
	}
	src := sc.sourcePod(p.Src)
	if namespaceDefault {
		if src != nil && src.Namespace == pod.Namespace {
			return spelled{true, bpf.ReasonAllowRule, 0}
		}
		return none(false, bpf.ReasonNoRule)
	}
	allow := -1
	for i, r := range rules {
		if !matches(r, pod, src, p) {
			continue
		}
		if r.Action == policy.Deny {
			return spelled{false, bpf.ReasonDenyRule, i}
		}
		if allow < 0 {
			allow = i
		}
	}
	if allow >= 0 {
		return spelled{true, bpf.ReasonAllowRule, allow}
	}
	return none(false, bpf.ReasonNoRule)
}

// matches is SPEC 3's "a rule matches a packet when every constraint it states holds".
func matches(r policy.Rule, pod, src *Pod, p Packet) bool {
	v4 := p.Src.Is4()
	l4 := p.Fragment != FragLater
	switch r.Protocol {
	case policy.ProtoTCP:
		if p.Proto != protoTCP {
			return false
		}
	case policy.ProtoUDP:
		if p.Proto != protoUDP {
			return false
		}
	case policy.ProtoICMP:
		if p.Proto != protoICMP || !v4 {
			return false
		}
	case policy.ProtoICMPv6:
		if p.Proto != protoICMPv6 || v4 {
			return false
		}
	}
	inPorts := func(list []policy.PortRange, port uint16) bool {
		if list == nil {
			return true
		}
		// A later fragment carries no ports: it matches only rules that state none.
		return l4 && slices.ContainsFunc(list, func(pr policy.PortRange) bool { return port >= pr.First && port <= pr.Last })
	}
	hasLabel := func(p *Pod, l *policy.Label) bool {
		if l == nil {
			return true
		}
		if p == nil || p.Namespace != pod.Namespace {
			return false
		}
		v, ok := p.Labels[l.Key]
		return ok && v == l.Value
	}
	switch {
	case !inPorts(r.From.Ports, p.SrcPort), !inPorts(r.To.Ports, p.DstPort),
		!hasLabel(src, r.From.Label), !hasLabel(pod, r.To.Label),
		r.From.CIDR != nil && !r.From.CIDR.Contains(p.Src),
		r.HasType && (!l4 || p.ICMPType != r.Type),
		r.HasCode && (!l4 || p.ICMPCode != r.Code):
		return false
	}
	if r.To.CIDR != nil {
		a, ok := podAddr(pod, v4)
		return ok && r.To.CIDR.Contains(a)
	}
	return true
}

func (sc *scenario) describe(ifindex uint32) string {
	pod, _ := sc.endpointPod(ifindex)
	if pod == nil {
		return "no pod"
	}
	return fmt.Sprintf("pod %s/%s labels %v ips %v annotations %q\noptions %+v host %v",
		pod.Namespace, pod.Name, pod.Labels, pod.IPs, pod.Annotations, sc.input.Options, sc.input.HostIPs)
}
