package compiler

import (
	"math/bits"

	"github.com/podwall/podwall/bpf"
)

// vec is a set of rules, bit i for rule i: the Go side of struct rule_vec.
type vec [bpf.VecWords]uint64

func (v *vec) set(i int) { v[i/64] |= 1 << (i % 64) }

func (v vec) has(i int) bool { return v[i/64]&(1<<(i%64)) != 0 }

func (v *vec) clear(i int) { v[i/64] &^= 1 << (i % 64) }

func (v vec) and(o vec) vec {
	for i := range v {
		v[i] &= o[i]
	}
	return v
}

func (v vec) or(o vec) vec {
	for i := range v {
		v[i] |= o[i]
	}
	return v
}

func (v vec) isZero() bool { return v == vec{} }

// lowest is the lowest rule in v, -1 when v is empty: the rule the data path reports.
func (v vec) lowest() int {
	for i, w := range v {
		if w != 0 {
			return i*64 + bits.TrailingZeros64(w)
		}
	}
	return -1
}

func (v vec) ruleVec() bpf.PodwallRuleVec { return bpf.PodwallRuleVec{Bits: v} }
