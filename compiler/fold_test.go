package compiler

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/policy"
)

// foldOf folds an annotation for a pod of namespace "ns" with labels and addresses.
func foldOf(t *testing.T, annotation string, labels map[string]string, ips ...string) folded {
	t.Helper()
	parsed, err := policy.Parse(annotation)
	require.NoError(t, err)
	var addrs []netip.Addr
	for _, ip := range ips {
		addrs = append(addrs, netip.MustParseAddr(ip))
	}
	return fold(podRules("ns", parsed), identityTags("ns", labels), addrs)
}

// protoMasks is the record's proto masks as [family][class] rule lists, for reading.
func protoMasks(f folded) [2][bpf.NumClasses]vec {
	var out [2][bpf.NumClasses]vec
	for fi := range out {
		for c := range out[fi] {
			out[fi][c] = f.record.Proto[fi][c]
		}
	}
	return out
}

func TestFoldProtocolsAndFamilies(t *testing.T) {
	all := func(v vec) [bpf.NumClasses]vec { return [bpf.NumClasses]vec{v, v, v, v} }
	only := func(c int, v vec) [bpf.NumClasses]vec {
		var out [bpf.NumClasses]vec
		out[c] = v
		return out
	}
	none := [bpf.NumClasses]vec{}
	for _, c := range []struct {
		name, annotation string
		labels           map[string]string
		ips              []string
		v4, v6           [bpf.NumClasses]vec
	}{
		{"any protocol", "allow", nil, nil, all(vecOf(0)), all(vecOf(0))},
		{"tcp", "allow tcp", nil, nil, only(bpf.ClassTCP, vecOf(0)), only(bpf.ClassTCP, vecOf(0))},
		{"udp", "allow udp", nil, nil, only(bpf.ClassUDP, vecOf(0)), only(bpf.ClassUDP, vecOf(0))},
		{"icmp is IPv4 only", "allow icmp", nil, nil, only(bpf.ClassICMP, vecOf(0)), none},
		{"icmpv6 is IPv6 only", "allow icmpv6", nil, nil, none, only(bpf.ClassICMP, vecOf(0))},
		{"from cidr keeps its family", "allow from cidr 10.0.0.0/8; allow tcp from cidr fd00::/8", nil, nil,
			all(vecOf(0)), only(bpf.ClassTCP, vecOf(1))},
		{"to label the pod has", "allow to label app=web", map[string]string{"app": "web"}, nil, all(vecOf(0)), all(vecOf(0))},
		{"to label the pod lacks", "allow to label app=web; allow udp", map[string]string{"app": "db"}, nil,
			only(bpf.ClassUDP, vecOf(1)), only(bpf.ClassUDP, vecOf(1))},
		{"to cidr holding the pod", "allow to cidr 10.0.0.0/8", nil, []string{"10.1.2.3", "fd00::1"}, all(vecOf(0)), none},
		{"to cidr not holding the pod", "allow to cidr 11.0.0.0/8", nil, []string{"10.1.2.3", "fd00::1"}, none, none},
		{"to cidr of a family the pod lacks", "allow to cidr fd00::/8", nil, []string{"10.1.2.3"}, none, none},
		{"to cidr and from cidr of different families", "allow from cidr 10.0.0.0/8 to cidr fd00::/8", nil,
			[]string{"10.1.2.3", "fd00::1"}, none, none},
		{"to cidr, two addresses, allow needs both", "allow to cidr 10.1.0.0/16", nil, []string{"10.1.2.3", "10.2.0.1"}, none, none},
		{"to cidr, two addresses, deny needs one", "deny to cidr 10.1.0.0/16", nil, []string{"10.1.2.3", "10.2.0.1"}, all(vecOf(0)), none},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := foldOf(t, c.annotation, c.labels, c.ips...)
			require.Equal(t, [2][bpf.NumClasses]vec{c.v4, c.v6}, protoMasks(f))
		})
	}
}

// Wildcard masks and flags hold only rules that can match at all; a field is flagged only
// if such a rule constrains it.
func TestFoldWildcardsAndFlags(t *testing.T) {
	for _, c := range []struct {
		name, annotation string
		labels           map[string]string
		flags            uint32
		wild             [5]vec // ident, cidr, sport, dport, icmp
		deny             vec
	}{
		{"nothing constrained", "allow; deny tcp", nil, 0,
			[5]vec{vecOf(0, 1), vecOf(0, 1), vecOf(0, 1), vecOf(0, 1), vecOf(0, 1)}, vecOf(1)},
		{"every field", "allow from label a=b; allow from cidr 10.0.0.0/8; allow tcp from ports 1; deny udp to ports 2; allow icmp type 8", nil,
			bpf.PFIdent | bpf.PFCIDR | bpf.PFSport | bpf.PFDport | bpf.PFICMP,
			[5]vec{vecOf(1, 2, 3, 4), vecOf(0, 2, 3, 4), vecOf(0, 1, 3, 4), vecOf(0, 1, 2, 4), vecOf(0, 1, 2, 3)}, vecOf(3)},
		{"constraints of folded-out rules do not count", "allow tcp from label a=b to label x=y; allow udp", nil, 0,
			[5]vec{vecOf(1), vecOf(1), vecOf(1), vecOf(1), vecOf(1)}, vec{}},
		{"constraints of kept rules count", "allow tcp from label a=b to label x=y; allow udp", map[string]string{"x": "y"}, bpf.PFIdent,
			[5]vec{vecOf(1), vecOf(0, 1), vecOf(0, 1), vecOf(0, 1), vecOf(0, 1)}, vec{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := foldOf(t, c.annotation, c.labels, "10.0.0.1")
			r := f.record
			require.Equal(t, c.flags, r.Flags)
			require.Equal(t, c.wild, [5]vec{r.WildIdent, r.WildCidr, r.WildSport, r.WildDport, r.WildIcmp})
			require.Equal(t, c.deny, vec(r.Deny))
		})
	}
}

func TestFoldEntries(t *testing.T) {
	f := foldOf(t, "allow from label app=db; allow tcp from label app=db to ports 80:81,443; allow udp from ports 53; "+
		"allow icmp type 8; allow icmp type 8 code 0; allow icmpv6 type 1 code 4; deny from cidr 10.0.0.0/8",
		nil, "10.0.0.1", "fd00::1")
	require.Equal(t, []tagRules{{"ns_app_db", vecOf(0, 1)}}, f.tags)
	wildCIDR := vecOf(0, 1, 2, 3, 4, 5)
	require.Equal(t, []cidrEntry{{netip.MustParsePrefix("10.0.0.0/8"), wildCIDR.or(vecOf(6))}}, f.cidrs)
	wildSport, wildDport := vecOf(0, 1, 3, 4, 5, 6), vecOf(0, 2, 3, 4, 5, 6)
	require.Equal(t, []portEntry{
		{uint8(bpf.ClassTCP), bpf.DirDst, portPrefix{80, 15}, wildDport.or(vecOf(1))},
		{uint8(bpf.ClassTCP), bpf.DirDst, portPrefix{443, 16}, wildDport.or(vecOf(1))},
		{uint8(bpf.ClassUDP), bpf.DirSrc, portPrefix{53, 16}, wildSport.or(vecOf(2))},
	}, f.ports)
	wildICMP := vecOf(0, 1, 2, 6)
	require.Equal(t, []icmpEntry{
		{bpf.FamV4, 8, 0, wildICMP.or(vecOf(3, 4))},
		{bpf.FamV4, 8, bpf.ICMPAnyCode, wildICMP.or(vecOf(3))},
		{bpf.FamV6, 1, 4, wildICMP.or(vecOf(5))},
	}, f.icmps)
	require.Equal(t, uint32(7), f.record.Nrules)
	require.Equal(t, RuleSource{Index: 2, Text: "allow tcp from label app=db to ports 80:81,443"}, f.rules[1])
}

func TestNamespaceRule(t *testing.T) {
	f := fold([]rule{namespaceRule("prod")}, identityTags("prod", nil), nil)
	require.Equal(t, []tagRules{{"namespace_prod", vecOf(0)}}, f.tags)
	require.Equal(t, uint32(bpf.PFIdent), f.record.Flags)
	require.Equal(t, RuleSource{Text: "allow from namespace prod (default policy)"}, f.rules[0])
}
