package compiler

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/policy"
)

// rule is a rule of one pod, its labels turned into tags of the pod's namespace.
type rule struct {
	action             policy.Action
	proto              policy.Protocol
	srcTag, dstTag     string // "" when the rule names no label
	srcCIDR, dstCIDR   *netip.Prefix
	srcPorts, dstPorts []policy.PortRange
	hasType, hasCode   bool
	typ, code          uint8
	source             RuleSource
}

// podRules turns parsed rules of a pod of namespace ns into rules to fold.
func podRules(ns string, parsed []policy.Rule) []rule {
	out := make([]rule, len(parsed))
	for i, p := range parsed {
		r := rule{
			action:   p.Action,
			proto:    p.Protocol,
			srcCIDR:  masked(p.From.CIDR),
			dstCIDR:  masked(p.To.CIDR),
			srcPorts: p.From.Ports,
			dstPorts: p.To.Ports,
			hasType:  p.HasType,
			hasCode:  p.HasCode,
			typ:      p.Type,
			code:     p.Code,
			source:   RuleSource{Index: p.Index, Text: p.Text},
		}
		if p.From.Label != nil {
			r.srcTag = policy.LabelTag(ns, *p.From.Label)
		}
		if p.To.Label != nil {
			r.dstTag = policy.LabelTag(ns, *p.To.Label)
		}
		out[i] = r
	}
	return out
}

// namespaceRule is the rule --default-policy=namespace gives a pod without annotation.
func namespaceRule(ns string) rule {
	return rule{
		action: policy.Allow,
		srcTag: policy.NamespaceTag(ns),
		source: RuleSource{Text: "allow from namespace " + ns + " (default policy)"},
	}
}

func masked(p *netip.Prefix) *netip.Prefix {
	if p == nil {
		return nil
	}
	m := p.Masked()
	return &m
}

// folded is a policy with what is fixed for its pod folded in, before it has an id.
type folded struct {
	record bpf.PodwallPolicy
	tags   []tagRules // sorted by tag
	cidrs  []cidrEntry
	ports  []portEntry
	icmps  []icmpEntry
	rules  []RuleSource
}

// tagRules are the rules whose "from" names tag (a label tag, or the namespace tag for the
// default rule). An identity's pol_ident vector is wild_ident plus those of its tags.
type tagRules struct {
	tag   string
	rules vec
}

type portEntry struct {
	class, dir uint8
	prefix     portPrefix
	rules      vec
}

// icmpRule is a rule that states an ICMP type, and its bit.
type icmpRule struct {
	rule int
	r    *rule
}

type icmpEntry struct {
	family, typ uint8
	code        uint16
	rules       vec
}

// The first index of policy.proto: the address family.
const (
	famIdxV4 = 0
	famIdxV6 = 1
)

func famIdx(a netip.Addr) int {
	if a.Is4() {
		return famIdxV4
	}
	return famIdxV6
}

// fold compiles the rules of one pod whose identity tags are podTags and whose addresses
// are podIPs (each family's addresses judge its "to cidr" rules).
func fold(rules []rule, podTags []string, podIPs []netip.Addr) folded {
	var f folded
	var proto [2][bpf.NumClasses]vec
	for i, r := range rules {
		if r.dstTag != "" && !slices.Contains(podTags, r.dstTag) {
			continue
		}
		for fi := range 2 {
			if !inFamily(r, fi, podIPs) {
				continue
			}
			for _, c := range classes(r.proto) {
				proto[fi][c].set(i)
			}
		}
	}
	var live vec
	for fi := range proto {
		for c := range proto[fi] {
			live = live.or(proto[fi][c])
			f.record.Proto[fi][c] = proto[fi][c]
		}
	}

	// Per field, the live rules that do not constrain it, and the entries of those that do.
	var wildIdent, wildCIDR, wildSport, wildDport, wildICMP, deny vec
	tags := map[string]vec{}
	var cidrs []ruleCIDR
	var ports [2][2][]rulePorts // [class][dir]
	var icmps [2][]icmpRule     // [family index]
	for i := range rules {
		if !live.has(i) {
			continue
		}
		r := &rules[i]
		if r.action == policy.Deny {
			deny.set(i)
		}
		if r.srcTag == "" {
			wildIdent.set(i)
		} else {
			v := tags[r.srcTag]
			v.set(i)
			tags[r.srcTag] = v
		}
		if r.srcCIDR == nil {
			wildCIDR.set(i)
		} else {
			cidrs = append(cidrs, ruleCIDR{rule: i, prefix: *r.srcCIDR})
		}
		// Ports of a protocol without ports, or a type of a protocol without types, are
		// never met: the rule is then neither wild nor in an entry.
		portRules := func(wild *vec, list []policy.PortRange, dir int) {
			c, ok := portClass(r.proto)
			switch {
			case len(list) == 0:
				wild.set(i)
			case ok:
				for _, pr := range list {
					ports[c][dir] = append(ports[c][dir], rulePorts{rule: i, ports: pr})
				}
			}
		}
		portRules(&wildSport, r.srcPorts, int(bpf.DirSrc))
		portRules(&wildDport, r.dstPorts, int(bpf.DirDst))
		switch {
		case !r.hasType:
			wildICMP.set(i)
		case r.proto == policy.ProtoICMP:
			icmps[famIdxV4] = append(icmps[famIdxV4], icmpRule{rule: i, r: r})
		case r.proto == policy.ProtoICMPv6:
			icmps[famIdxV6] = append(icmps[famIdxV6], icmpRule{rule: i, r: r})
		}
	}

	for _, t := range sortedKeys(tags) {
		f.tags = append(f.tags, tagRules{tag: t, rules: tags[t]})
	}
	f.cidrs = pushCIDRs(cidrs)
	for i := range f.cidrs {
		f.cidrs[i].rules = f.cidrs[i].rules.or(wildCIDR)
	}
	wildPorts := [2]vec{bpf.DirSrc: wildSport, bpf.DirDst: wildDport}
	for c := range ports {
		for dir := range ports[c] {
			for _, in := range portIntervals(ports[c][dir]) {
				for _, p := range portPrefixes(in.first, in.last) {
					f.ports = append(f.ports, portEntry{class: uint8(c), dir: uint8(dir), prefix: p,
						rules: in.rules.or(wildPorts[dir])})
				}
			}
		}
	}
	f.icmps = append(icmpEntries(bpf.FamV4, icmps[famIdxV4], wildICMP), icmpEntries(bpf.FamV6, icmps[famIdxV6], wildICMP)...)

	f.record.WildIdent = wildIdent
	f.record.WildCidr = wildCIDR
	f.record.WildSport = wildSport
	f.record.WildDport = wildDport
	f.record.WildIcmp = wildICMP
	f.record.Deny = deny
	for _, c := range []struct {
		wild vec
		flag uint32
	}{{wildIdent, bpf.PFIdent}, {wildCIDR, bpf.PFCIDR}, {wildSport, bpf.PFSport}, {wildDport, bpf.PFDport}, {wildICMP, bpf.PFICMP}} {
		if c.wild != live {
			f.record.Flags |= c.flag
		}
	}
	f.record.Nrules = uint32(len(rules))
	f.rules = make([]RuleSource, len(rules))
	for i, r := range rules {
		f.rules[i] = r.source
	}
	return f
}

// inFamily says whether rule r can match a packet of family index fi going to a pod with
// addresses podIPs: its protocol, its "from cidr" and its "to cidr" must allow the family.
// With several addresses of the family, "to cidr" keeps an allow rule only if it holds all
// of them and a deny rule if it holds any, so the doubt is resolved towards dropping.
func inFamily(r rule, fi int, podIPs []netip.Addr) bool {
	switch {
	case r.proto == policy.ProtoICMP && fi != famIdxV4,
		r.proto == policy.ProtoICMPv6 && fi != famIdxV6,
		r.srcCIDR != nil && famIdx(r.srcCIDR.Addr()) != fi:
		return false
	case r.dstCIDR == nil:
		return true
	case famIdx(r.dstCIDR.Addr()) != fi:
		return false
	}
	in, out := false, false
	for _, a := range podIPs {
		if famIdx(a) != fi {
			continue
		}
		if r.dstCIDR.Contains(a) {
			in = true
		} else {
			out = true
		}
	}
	if r.action == policy.Deny {
		return in
	}
	return in && !out
}

// portClass is the class of the pol_port entries of a rule of protocol p.
func portClass(p policy.Protocol) (int, bool) {
	switch p {
	case policy.ProtoTCP:
		return bpf.ClassTCP, true
	case policy.ProtoUDP:
		return bpf.ClassUDP, true
	}
	return 0, false
}

// classes are the protocol classes a rule of protocol p can match.
func classes(p policy.Protocol) []int {
	switch p {
	case policy.ProtoTCP:
		return []int{bpf.ClassTCP}
	case policy.ProtoUDP:
		return []int{bpf.ClassUDP}
	case policy.ProtoICMP, policy.ProtoICMPv6:
		return []int{bpf.ClassICMP}
	}
	return []int{bpf.ClassTCP, bpf.ClassUDP, bpf.ClassICMP, bpf.ClassOther}
}

// icmpEntries are the pol_icmp entries of one family: (type, any code) holds the rules that
// state only the type, (type, code) those and the rules that state both.
func icmpEntries(family uint8, rules []icmpRule, wild vec) []icmpEntry {
	anyCode := map[uint8]vec{}
	exact := map[[2]uint8]vec{}
	for _, ir := range rules {
		i, r := ir.rule, ir.r
		if r.hasCode {
			v := exact[[2]uint8{r.typ, r.code}]
			v.set(i)
			exact[[2]uint8{r.typ, r.code}] = v
		} else {
			v := anyCode[r.typ]
			v.set(i)
			anyCode[r.typ] = v
		}
	}
	var out []icmpEntry
	for t, v := range anyCode {
		out = append(out, icmpEntry{family: family, typ: t, code: bpf.ICMPAnyCode, rules: v.or(wild)})
	}
	for tc, v := range exact {
		out = append(out, icmpEntry{family: family, typ: tc[0], code: uint16(tc[1]),
			rules: v.or(anyCode[tc[0]]).or(wild)})
	}
	slices.SortFunc(out, func(a, b icmpEntry) int {
		return cmp.Or(cmp.Compare(a.typ, b.typ), cmp.Compare(a.code, b.code))
	})
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// encode is the policy's canonical form: equal encodings are equal policies, and its hash
// is the policy id.
func (f *folded) encode() []byte {
	var b []byte
	u64 := func(x uint64) { b = binary.LittleEndian.AppendUint64(b, x) }
	str := func(s string) { u64(uint64(len(s))); b = append(b, s...) }
	vecs := func(v vec) {
		for _, w := range v {
			u64(w)
		}
	}
	r := &f.record
	for fi := range r.Proto {
		for c := range r.Proto[fi] {
			vecs(r.Proto[fi][c])
		}
	}
	for _, v := range []vec{r.WildIdent, r.WildCidr, r.WildSport, r.WildDport, r.WildIcmp, r.Deny} {
		vecs(v)
	}
	u64(uint64(r.Flags)<<32 | uint64(r.Nrules))
	u64(uint64(len(f.tags)))
	for _, t := range f.tags {
		str(t.tag)
		vecs(t.rules)
	}
	u64(uint64(len(f.cidrs)))
	for _, c := range f.cidrs {
		a := c.prefix.Addr().As16()
		b = append(b, a[:]...)
		u64(uint64(famIdx(c.prefix.Addr()))<<8 | uint64(c.prefix.Bits()))
		vecs(c.rules)
	}
	u64(uint64(len(f.ports)))
	for _, p := range f.ports {
		u64(uint64(p.class)<<32 | uint64(p.dir)<<24 | uint64(p.prefix.bits)<<16 | uint64(p.prefix.port))
		vecs(p.rules)
	}
	u64(uint64(len(f.icmps)))
	for _, e := range f.icmps {
		u64(uint64(e.family)<<32 | uint64(e.typ)<<16 | uint64(e.code))
		vecs(e.rules)
	}
	u64(uint64(len(f.rules)))
	for _, s := range f.rules {
		u64(uint64(s.Index))
		str(s.Text)
	}
	return b
}
