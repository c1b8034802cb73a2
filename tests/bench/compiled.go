package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
)

// Why a compiled state has no ruleset for a pod.
var (
	ErrNoEndpoint  = errors.New("no such endpoint in the compiled state")
	ErrNotEnforced = errors.New("endpoint is not enforced by rules")
	ErrUnnamedRule = errors.New("rule has no text in the policy language")
)

// Family is an address family. Each gets rulesets of its own, as iptables and ip6tables, or
// nftables' ip and ip6 tables, keep them.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// protoIndex is the family's first index into a policy record's proto masks (IPv4 first, as
// bpf/podwall.h lays them out).
func (f Family) protoIndex() int {
	if f == IPv4 {
		return 0
	}
	return 1
}

func (f Family) has(a netip.Addr) bool { return a.Is4() == (f == IPv4) }

// Target is the pod a ruleset is for.
type Target struct {
	Ifindex   uint32
	Ifname    string // its host-side interface, where the baselines dispatch on
	Namespace string
}

// compiledPolicy is what the baselines need of one pod's compiled policy.
type compiledPolicy struct {
	id    uint32
	rules []policy.Rule
}

// policyRules returns the rules of the target's compiled policy that podwall keeps for
// family fam, in order, parsed back from their text: the same rules podwall's vectors hold
// for that family once the compiler has folded in what is fixed for the pod (a `to label` it
// lacks, a `to cidr` its address is outside of, a CIDR or ICMP version of the other family).
func policyRules(s *compiler.State, t Target, fam Family) (compiledPolicy, error) {
	ep, ok := s.Endpoints[t.Ifindex]
	if !ok {
		return compiledPolicy{}, fmt.Errorf("ifindex %d: %w", t.Ifindex, ErrNoEndpoint)
	}
	p, ok := s.Policies[ep.Policy]
	if ep.Mode != bpf.ModeEnforce || !ok {
		return compiledPolicy{}, fmt.Errorf("ifindex %d, mode %d: %w", t.Ifindex, ep.Mode, ErrNotEnforced)
	}
	var live [bpf.VecWords]uint64
	for _, v := range p.Record.Proto[fam.protoIndex()] {
		for w := range live {
			live[w] |= v[w]
		}
	}
	out := compiledPolicy{id: ep.Policy}
	for i, src := range p.Rules {
		if live[i/64]&(1<<(i%64)) == 0 {
			continue
		}
		if src.Index == 0 {
			return compiledPolicy{}, fmt.Errorf("rule %q: %w", src.Text, ErrUnnamedRule)
		}
		parsed, err := policy.Parse(src.Text)
		if err != nil {
			return compiledPolicy{}, fmt.Errorf("parse rule %d: %w", src.Index, err)
		}
		if len(parsed) != 1 {
			return compiledPolicy{}, fmt.Errorf("rule %d is %d rules", src.Index, len(parsed))
		}
		out.rules = append(out.rules, parsed[0])
	}
	return out, nil
}

// tagMembers lists, for every tag, the addresses of family fam whose identity has it, in
// order: what an ipset or nftables set of the tag holds.
func tagMembers(s *compiler.State, fam Family) map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for k, id := range s.IPCache {
		a := bpf.KeyAddr(k)
		if !fam.has(a) {
			continue
		}
		for _, tag := range s.Identities[id] {
			out[tag] = append(out[tag], a)
		}
	}
	for _, addrs := range out {
		slices.SortFunc(addrs, netip.Addr.Compare)
	}
	return out
}

// ordered is the policy's rules in the order a first-match rule list must check them: deny
// rules first, since in podwall a matching deny wins over any allow (SPEC section 6), then the
// allow rules, each group in the policy's order.
func ordered(rules []policy.Rule) []policy.Rule {
	out := slices.Clone(rules)
	slices.SortStableFunc(out, func(a, b policy.Rule) int {
		return int(b.Action) - int(a.Action) // Deny (1) before Allow (0)
	})
	return out
}

// srcTag and dstTag are the tags a rule's labels stand for in the pod's namespace.
func srcTag(r policy.Rule, ns string) string {
	if r.From.Label == nil {
		return ""
	}
	return policy.LabelTag(ns, *r.From.Label)
}

func dstTag(r policy.Rule, ns string) string {
	if r.To.Label == nil {
		return ""
	}
	return policy.LabelTag(ns, *r.To.Label)
}
