package compiler

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/policy"
)

// The classifier maps a policy's entries go to, in the order of a policy's sizes.
var classifierMaps = [...]string{bpf.PodwallMapPolIdent, bpf.PodwallMapPolCidr, bpf.PodwallMapPolPort, bpf.PodwallMapPolIcmp}

// sizes are a policy's entries in each classifier map.
type sizes [len(classifierMaps)]int

func sizesOf(p *Policy) sizes {
	return sizes{len(p.Ident), len(p.CIDR), len(p.Port), len(p.ICMP)}
}

func (s sizes) total() int { return s[0] + s[1] + s[2] + s[3] }

func (c Capacity) classifiers() sizes { return sizes{c.Ident, c.CIDR, c.Port, c.ICMP} }

// OverBudget says why a policy of these sizes is over budget (the most entries it may have in
// any one map), or nil. The agent, `podwall policy parse` and `podwall explain` all judge by it.
func (s sizes) overBudget(budget int) error {
	if budget <= 0 {
		return nil
	}
	for i, n := range s {
		if n > budget {
			return fmt.Errorf("%d entries in map %s, over the budget of %d a policy may have in one map (--policy-budget): %w",
				n, classifierMaps[i], budget, ErrOverBudget)
		}
	}
	return nil
}

// CheckBudget says why p is over budget, or nil.
func CheckBudget(p *Policy, budget int) error { return sizesOf(p).overBudget(budget) }

// admit decides which policies the node's maps hold: each one within the budget and then,
// the smallest first, while every map has room for all of its entries. What it leaves out
// it removes from policies, and returns why, by id. Admitting the smallest first means that a
// few big policies, however many pods use them, cannot take the room of many small ones.
func admit(policies map[uint32]*Policy, budget int, capacity Capacity) map[uint32]error {
	out := map[uint32]error{}
	type candidate struct {
		id uint32
		n  sizes
	}
	var cands []candidate
	for id, p := range policies {
		n := sizesOf(p)
		if err := n.overBudget(budget); err != nil {
			out[id] = err
			continue
		}
		cands = append(cands, candidate{id, n})
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(a.n.total(), b.n.total()), cmp.Compare(a.id, b.id))
	})
	room := capacity.classifiers()
	var used sizes
	for _, c := range cands {
		fits := -1
		for i := range room {
			if room[i] > 0 && used[i]+c.n[i] > room[i] {
				fits = i
				break
			}
		}
		if fits >= 0 {
			out[c.id] = fmt.Errorf("map %s has room for %d more entries, the policy needs %d: %w",
				classifierMaps[fits], room[fits]-used[fits], c.n[fits], ErrNoRoom) //nolint:gosec // G602: fits indexes room, as long as classifierMaps
			continue
		}
		for i := range used {
			used[i] += c.n[i]
		}
	}
	for id := range out {
		delete(policies, id)
	}
	return out
}

func tooManyRules(n int) error {
	return fmt.Errorf("%d rules, at most %d: %w", n, bpf.MaxRules, ErrTooManyRules)
}

// CheckPolicy applies to the rules of an annotation in namespace the limits the agent applies
// to a pod's, with the same errors: at most MaxRules rules, and within budget in each map.
// The pol_ident entries of a policy depend on the cluster's pods, which are not known here:
// it counts those of the pods the rules name as if each were one identity. Every rule counts,
// as for a pod that has every label the rules' "to label" clauses name.
func CheckPolicy(namespace string, rules []policy.Rule, budget int) error {
	if len(rules) > bpf.MaxRules {
		return tooManyRules(len(rules))
	}
	rs := podRules(namespace, rules)
	var tags []string
	for _, r := range rs {
		if r.dstTag != "" {
			tags = append(tags, r.dstTag)
		}
	}
	f := fold(rs, tags, nil)
	cl := &cluster{tagIDs: map[string]map[uint32]struct{}{}}
	for i, t := range f.tags {
		cl.tagIDs[t.tag] = map[uint32]struct{}{uint32(i + 1): {}}
	}
	return CheckBudget(materialize(cl, 1, "", &f), budget)
}
