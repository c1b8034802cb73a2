package bench

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
)

// Ruleset is one baseline's form of a pod's compiled policy for one family.
type Ruleset struct {
	// IPSets is the input of `ipset restore` (Felix only; nftables keeps its sets in Rules).
	IPSets string
	// Rules is the input of iptables-restore, ip6tables-restore or `nft -f`.
	Rules string
	// Checked is how many rules of the pod's policy chain a packet that matches none of
	// them is checked against; Sets how many address sets the rules name.
	Checked, Sets int
}

// maxMultiport is how many ports one multiport match takes; a range counts twice.
const maxMultiport = 15

// Felix writes the target's compiled policy for family fam as Calico's 2015 agent, Felix,
// programmed a profile: iptables rules in the filter table and one ipset (hash:ip) per tag
// the rules name, holding the addresses of the pods with that tag.
//
// The layout is Felix's: FORWARD jumps to felix-FORWARD, which sends packets going out to the
// endpoint's interface to felix-TO-ENDPOINT, a dispatch on the interface that goes to the
// endpoint's chain felix-to-IFACE; that one clears the mark, jumps to the profile chain
// felix-p-ID-i and returns if the profile set mark 1, else drops. The profile chain sets mark
// 1, has one rule per policy rule (more when a rule has more than 15 ports: Felix split them
// into multiport chunks and wrote their cross product) with -j RETURN for allow and -j DROP
// for deny, and clears the mark at its end. With stateful, felix-FORWARD first drops invalid
// packets and returns packets of known connections (conntrack), as Felix did, so only the
// first packet of a flow reaches the rules. The match order within a rule is Felix's:
// protocol, source network, source tag, source ports, then the same for the destination, then
// the ICMP type.
//
// Two departures, both to enforce SPEC's semantics with the same rules: deny rules come
// before allow rules (a deny wins in podwall; Felix, which turned deny into allow, kept the
// order written), and only the rules podwall keeps for this pod and family are written (see
// policyRules); the dispatch names the one endpoint's interface where Felix matched its
// interface prefix.
func Felix(s *compiler.State, t Target, fam Family, stateful bool) (Ruleset, error) {
	p, err := policyRules(s, t, fam)
	if err != nil {
		return Ruleset{}, fmt.Errorf("felix ruleset for %s: %w", t.Ifname, err)
	}
	members := tagMembers(s, fam)
	sets := map[string]string{} // tag -> ipset name
	var setsText strings.Builder
	setFor := func(tag string) string {
		if name, ok := sets[tag]; ok {
			return name
		}
		name := fmt.Sprintf("felix-v%d-%s", fam, uniquelyShorten(tag, 16))
		sets[tag] = name
		family := "inet"
		if fam == IPv6 {
			family = "inet6"
		}
		fmt.Fprintf(&setsText, "create %s hash:ip family %s\n", name, family)
		for _, a := range members[tag] {
			fmt.Fprintf(&setsText, "add %s %s\n", name, a)
		}
		return name
	}

	toChain := "felix-to-" + uniquelyShorten(t.Ifname, 16)
	profile := fmt.Sprintf("felix-p-%08x-i", p.id)
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, c := range []string{"felix-FORWARD", "felix-TO-ENDPOINT", toChain, profile} {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	b.WriteString("-A FORWARD -j felix-FORWARD\n")
	if stateful {
		fmt.Fprintf(&b, "-A felix-FORWARD -o %s -m conntrack --ctstate INVALID -j DROP\n", t.Ifname)
		fmt.Fprintf(&b, "-A felix-FORWARD -o %s -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n", t.Ifname)
	}
	fmt.Fprintf(&b, "-A felix-FORWARD -o %s -j felix-TO-ENDPOINT\n", t.Ifname)
	fmt.Fprintf(&b, "-A felix-FORWARD -o %s -j ACCEPT\n", t.Ifname)
	fmt.Fprintf(&b, "-A felix-TO-ENDPOINT -o %s -g %s\n", t.Ifname, toChain)
	// Felix dropped what went to an interface of its prefix without an endpoint.
	b.WriteString("-A felix-TO-ENDPOINT -j DROP\n")
	fmt.Fprintf(&b, "-A %s -j MARK --set-mark 0\n", toChain)
	fmt.Fprintf(&b, "-A %s -j %s\n", toChain, profile)
	fmt.Fprintf(&b, "-A %s -m mark --mark 1/1 -j RETURN\n", toChain)
	// Felix's "Default DROP if no match": no allow rule of any profile matched.
	fmt.Fprintf(&b, "-A %s -j DROP\n", toChain)
	fmt.Fprintf(&b, "-A %s -j MARK --set-mark 1\n", profile)
	checked := 0
	for _, r := range ordered(p.rules) {
		for _, line := range felixRule(r, fam, t.Namespace, setFor) {
			fmt.Fprintf(&b, "-A %s %s\n", profile, line)
			checked++
		}
	}
	fmt.Fprintf(&b, "-A %s -j MARK --set-mark 0\n", profile)
	b.WriteString("COMMIT\n")
	return Ruleset{IPSets: setsText.String(), Rules: b.String(), Checked: checked, Sets: len(sets)}, nil
}

// felixRule is one rule as Felix wrote it, without the chain: several lines when its ports
// need more than one multiport match.
func felixRule(r policy.Rule, fam Family, ns string, setFor func(tag string) string) []string {
	var lines []string
	for _, sp := range multiportChunks(r.From.Ports) {
		for _, dp := range multiportChunks(r.To.Ports) {
			var m []string
			if r.Protocol != policy.ProtoAny {
				m = append(m, "-p", r.Protocol.String())
			}
			clause := func(c policy.Clause, dir, long, tag string, ports []policy.PortRange) {
				if c.CIDR != nil {
					m = append(m, "--"+long, c.CIDR.String())
				}
				if tag != "" {
					m = append(m, "-m", "set", "--match-set", setFor(tag), dir)
				}
				if len(ports) > 0 {
					m = append(m, "-m", "multiport", "--"+long+"-ports", portList(ports, ":"))
				}
			}
			clause(r.From, "src", "source", srcTag(r, ns), sp)
			clause(r.To, "dst", "destination", dstTag(r, ns), dp)
			if r.HasType {
				typ := fmt.Sprint(r.Type)
				if r.HasCode {
					typ += fmt.Sprintf("/%d", r.Code)
				}
				if fam == IPv4 {
					m = append(m, "-m", "icmp", "--icmp-type", typ)
				} else {
					m = append(m, "-m", "icmp6", "--icmpv6-type", typ)
				}
			}
			verdict := "RETURN"
			if r.Action == policy.Deny {
				verdict = "DROP"
			}
			lines = append(lines, strings.Join(append(m, "-j", verdict), " "))
		}
	}
	return lines
}

// multiportChunks splits a port list into lists that fit one multiport match, in order. No
// ports gives one empty list: the rule is written once, with no port match.
func multiportChunks(ports []policy.PortRange) [][]policy.PortRange {
	chunks := [][]policy.PortRange{nil}
	used := 0
	for _, p := range ports {
		n := 1
		if p.First != p.Last {
			n = 2
		}
		if used+n > maxMultiport {
			chunks = append(chunks, nil)
			used = 0
		}
		last := len(chunks) - 1
		chunks[last] = append(chunks[last], p)
		used += n
	}
	return chunks
}

// portList writes ports separated by commas, ranges as FIRST<sep>LAST.
func portList(ports []policy.PortRange, sep string) string {
	out := make([]string, len(ports))
	for i, p := range ports {
		out[i] = fmt.Sprint(p.First)
		if p.First != p.Last {
			out[i] += fmt.Sprintf("%s%d", sep, p.Last)
		}
	}
	return strings.Join(out, ",")
}

// uniquelyShorten keeps names within the kernel's limits as Felix did: a name longer than n
// becomes its start and a hash of the whole.
func uniquelyShorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	h := hex.EncodeToString(sum[:])[:7]
	return s[:n-len(h)-1] + "_" + h
}
