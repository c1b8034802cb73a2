package bench

import (
	"fmt"
	"strings"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
)

// nftProto names the protocols as nftables' meta l4proto does.
var nftProto = map[policy.Protocol]string{
	policy.ProtoTCP: "tcp", policy.ProtoUDP: "udp", policy.ProtoICMP: "icmp", policy.ProtoICMPv6: "ipv6-icmp",
}

// NFT writes the target's compiled policy for family fam as an nftables ruleset built on
// sets, the way one would write it for nftables today: a table of the family (ip or ip6)
// named pods with one named set per tag the rules name (the addresses of the pods with that
// tag), a forward base chain that dispatches on the output interface with a verdict map to
// the pod's chain, and in the pod's chain one rule per policy rule, ports as anonymous sets,
// then a drop. With stateful, the forward chain first drops invalid packets and accepts
// packets of known connections, as the Felix ruleset does. As in Felix, deny rules come
// before allow rules and only the rules podwall keeps for the pod and family are written.
func NFT(s *compiler.State, t Target, fam Family, stateful bool) (Ruleset, error) {
	p, err := policyRules(s, t, fam)
	if err != nil {
		return Ruleset{}, fmt.Errorf("nftables ruleset for %s: %w", t.Ifname, err)
	}
	table, addr, addrType, icmp := "ip", "ip", "ipv4_addr", "icmp"
	if fam == IPv6 {
		table, addr, addrType, icmp = "ip6", "ip6", "ipv6_addr", "icmpv6"
	}
	members := tagMembers(s, fam)
	sets := map[string]string{}
	var setsText strings.Builder
	setFor := func(tag string) string {
		if name, ok := sets[tag]; ok {
			return name
		}
		name := "tag_" + tag
		sets[tag] = name
		fmt.Fprintf(&setsText, "\tset %s {\n\t\ttype %s\n", name, addrType)
		if m := members[tag]; len(m) > 0 {
			elems := make([]string, len(m))
			for i, a := range m {
				elems[i] = a.String()
			}
			fmt.Fprintf(&setsText, "\t\telements = { %s }\n", strings.Join(elems, ", "))
		}
		setsText.WriteString("\t}\n")
		return name
	}

	chain := "to-" + t.Ifname
	var rules strings.Builder
	for _, r := range ordered(p.rules) {
		var m []string
		if r.Protocol != policy.ProtoAny {
			m = append(m, "meta l4proto", nftProto[r.Protocol])
		}
		clause := func(c policy.Clause, dir, tag string, ports []policy.PortRange) {
			if c.CIDR != nil {
				m = append(m, addr, dir+"addr", c.CIDR.String())
			}
			if tag != "" {
				m = append(m, addr, dir+"addr", "@"+setFor(tag))
			}
			switch {
			case len(ports) == 1:
				m = append(m, "th", dir+"port", portList(ports, "-"))
			case len(ports) > 1:
				m = append(m, "th", dir+"port", "{", strings.ReplaceAll(portList(ports, "-"), ",", ", "), "}")
			}
		}
		clause(r.From, "s", srcTag(r, t.Namespace), r.From.Ports)
		clause(r.To, "d", dstTag(r, t.Namespace), r.To.Ports)
		if r.HasType {
			m = append(m, icmp, "type", fmt.Sprint(r.Type))
			if r.HasCode {
				m = append(m, icmp, "code", fmt.Sprint(r.Code))
			}
		}
		verdict := "accept"
		if r.Action == policy.Deny {
			verdict = "drop"
		}
		fmt.Fprintf(&rules, "\t\t%s\n", strings.Join(append(m, verdict), " "))
	}

	var b strings.Builder
	fmt.Fprintf(&b, "table %s pods {\n", table)
	b.WriteString(setsText.String())
	b.WriteString("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n")
	if stateful {
		b.WriteString("\t\tct state invalid drop\n\t\tct state established,related accept\n")
	}
	fmt.Fprintf(&b, "\t\toifname vmap { %q : goto %s }\n\t}\n", t.Ifname, chain)
	fmt.Fprintf(&b, "\tchain %s {\n%s\t\tdrop\n\t}\n}\n", chain, rules.String())
	return Ruleset{Rules: b.String(), Checked: len(p.rules), Sets: len(sets)}, nil
}
