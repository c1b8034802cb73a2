package maps

import (
	"fmt"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
)

// counters gives each endpoint its block of rule_counters: rule i of its policy counts at
// slot base+i, and the packets no rule decided at base+nrules (endpoint.counters is base).
// Slot 0 is never given: 0 is "not counted".
//
// A block stays with its endpoint while the endpoint's policy id does. A policy change moves
// the endpoint to a new block, into which the counts of every rule whose text the new policy
// keeps are copied, and of its undecided slot: counts follow a rule's text, not its position.
// The old block is freed only after the endpoint left it, so no apply gives it to another
// endpoint while packets may still count there.
type counters struct {
	m      *ebpf.Map
	blocks map[uint32]block // by ifindex
	// used[s] says slot s is in a block.
	used []bool
	// freed are the blocks of the last apply's endpoint changes, free once it is written.
	freed []block
}

type block struct {
	base, size uint16
	policy     uint32
	// rules are the texts of the policy's rules, by bit; nil when unknown (a block found
	// pinned by a restarted agent).
	rules []string
}

func newCounters(m *ebpf.Map) *counters {
	return &counters{m: m, blocks: map[uint32]block{}, used: make([]bool, slots(m))}
}

// load takes the blocks of the endpoints the kernel holds: counts survive a restart.
func (c *counters) load(present map[uint32]bpf.PodwallEndpointEntry) {
	c.blocks = map[uint32]block{}
	c.used = make([]bool, slots(c.m))
	c.freed = nil
	for ifindex, e := range present {
		b := block{base: e.Ep.Counters, size: blockSize(e), policy: e.Ep.Policy}
		if b.base == 0 || int(b.base)+int(b.size) > len(c.used) || !c.free(b.base, b.size) {
			continue // another block holds it: the endpoint gets a new one
		}
		c.take(b)
		c.blocks[ifindex] = b
	}
}

// slots is the size of rule_counters as loaded; a missing map (a test's) has none.
func slots(m *ebpf.Map) int {
	if m == nil {
		return 0
	}
	return int(m.MaxEntries())
}

func blockSize(e bpf.PodwallEndpointEntry) uint16 {
	return uint16(e.Rules.Nrules) + 1
}

// assign sets the counters of every endpoint of want, taking and filling new blocks where an
// endpoint's policy changed, and notes the blocks to free once want is written. An endpoint
// that finds no room is not counted (counters 0): counting never holds back enforcement.
func (c *counters) assign(want map[uint32]bpf.PodwallEndpointEntry, policies map[uint32]*compiler.Policy) error {
	for ifindex, b := range c.blocks {
		if _, ok := want[ifindex]; !ok {
			c.freed = append(c.freed, b)
			delete(c.blocks, ifindex)
		}
	}
	ifindexes := make([]uint32, 0, len(want))
	for ifindex := range want {
		ifindexes = append(ifindexes, ifindex)
	}
	slices.Sort(ifindexes)
	for _, ifindex := range ifindexes {
		e := want[ifindex]
		var rules []string
		if p, ok := policies[e.Ep.Policy]; ok && e.Ep.Mode == bpf.ModeEnforce {
			rules = make([]string, len(p.Rules))
			for i, r := range p.Rules {
				rules[i] = r.Text
			}
		}
		old, had := c.blocks[ifindex]
		size := blockSize(e)
		if had && old.policy == e.Ep.Policy && old.size == size {
			if old.rules == nil {
				old.rules = rules
				c.blocks[ifindex] = old
			}
			e.Ep.Counters = old.base
			want[ifindex] = e
			continue
		}
		base, ok := c.alloc(size)
		if had {
			c.freed = append(c.freed, old)
			delete(c.blocks, ifindex)
		}
		if !ok {
			e.Ep.Counters = 0
			want[ifindex] = e
			continue
		}
		b := block{base: base, size: size, policy: e.Ep.Policy, rules: rules}
		if err := c.fill(b, old, had); err != nil {
			return err
		}
		c.blocks[ifindex] = b
		e.Ep.Counters = base
		want[ifindex] = e
	}
	return nil
}

// release frees the blocks endpoints left, once want is written.
func (c *counters) release() {
	for _, b := range c.freed {
		for s := b.base; s < b.base+b.size; s++ {
			c.used[s] = false
		}
	}
	c.freed = nil
}

// fill zeroes the slots of b, then copies in the counts of old (when had) for the rules whose
// text b's policy keeps, each old rule once, and old's undecided slot.
func (c *counters) fill(b, old block, had bool) error {
	from := make([]int, b.size) // b's slot i takes old's slot from[i]-1; 0: zero
	if had {
		taken := make([]bool, old.size)
		for i, text := range b.rules {
			for j, o := range old.rules {
				if !taken[j] && o == text {
					taken[j], from[i] = true, j+1
					break
				}
			}
		}
		from[b.size-1] = int(old.size)
	}
	zero := make([]bpf.PodwallRuleCount, ebpf.MustPossibleCPU())
	for i := range from {
		v := zero
		if from[i] > 0 {
			var counts []bpf.PodwallRuleCount
			if err := c.m.Lookup(uint32(old.base)+uint32(from[i]-1), &counts); err != nil {
				return fmt.Errorf("read map %s: %w", bpf.PodwallMapRuleCounters, err)
			}
			v = counts
		}
		if err := c.m.Update(uint32(b.base)+uint32(i), v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("write map %s: %w", bpf.PodwallMapRuleCounters, err)
		}
	}
	return nil
}

// alloc takes the first run of size free slots.
func (c *counters) alloc(size uint16) (uint16, bool) {
	for base := 1; base+int(size) <= len(c.used); base++ {
		if c.free(uint16(base), size) {
			c.take(block{base: uint16(base), size: size})
			return uint16(base), true
		}
	}
	return 0, false
}

func (c *counters) free(base, size uint16) bool {
	for s := base; s < base+size; s++ {
		if c.used[s] {
			return false
		}
	}
	return true
}

func (c *counters) take(b block) {
	for s := b.base; s < b.base+b.size; s++ {
		c.used[s] = true
	}
}

// fillLevel is how many slots blocks hold, of rule_counters' size.
func (c *counters) fillLevel() Fill {
	n := 0
	for _, u := range c.used {
		if u {
			n++
		}
	}
	return Fill{Map: bpf.PodwallMapRuleCounters, Entries: n, Max: c.m.MaxEntries()}
}

// RuleCount is what one rule of one endpoint decided, summed over the CPUs.
type RuleCount struct {
	Packets, Flows uint64
	// Audited are the packets audit mode passed, of Packets.
	Audited uint64
}

// ReadRuleCounts reads the counters of an endpoint entry: one per rule of its policy, by bit,
// then the packets no rule decided. nil when the endpoint is not counted.
func ReadRuleCounts(m *ebpf.Map, e bpf.PodwallEndpointEntry) ([]RuleCount, error) {
	if e.Ep.Counters == 0 {
		return nil, nil
	}
	out := make([]RuleCount, blockSize(e))
	var counts []bpf.PodwallRuleCount
	for i := range out {
		if err := m.Lookup(uint32(e.Ep.Counters)+uint32(i), &counts); err != nil {
			return nil, fmt.Errorf("read map %s: %w", bpf.PodwallMapRuleCounters, err)
		}
		for _, c := range counts {
			out[i].Packets += c.Packets
			out[i].Flows += c.Flows
			out[i].Audited += c.Audited
		}
	}
	return out, nil
}
