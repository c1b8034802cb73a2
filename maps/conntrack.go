package maps

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/podwall/podwall/bpf"
)

// Conntrack collects conntrack's garbage. The tables (one per address family) are hashes
// that evict nothing (an LRU would let a flood of new flows push out another pod's idle
// connection), so their expired entries stay until a run of the kernel's collector, the
// program ct_gc, removes them; and so do the entries of an address that left the ipcache,
// which a pod reusing it must not inherit.
type Conntrack struct {
	gc     *ebpf.Program
	flush  *ebpf.Map
	v4, v6 *ebpf.Map
}

// NewConntrack returns the collector of a loaded collection.
func NewConntrack(objs *bpf.PodwallObjects) *Conntrack {
	return &Conntrack{gc: objs.CtGc, flush: objs.CtFlush, v4: objs.Conntrack4, v6: objs.Conntrack6}
}

// Collection is what one run of the collector found and did.
type Collection struct {
	// Live4 and Live6 entries were kept, in the IPv4 and the IPv6 table; Expired and Flushed
	// were removed.
	Live4, Live6, Expired, Flushed uint32
	// Capacity4 and Capacity6 are the tables' sizes.
	Capacity4, Capacity6 uint32
}

// Live is the number of entries kept in both tables.
func (c Collection) Live() uint32 { return c.Live4 + c.Live6 }

// Fullest is the share of its size the fuller table holds.
func (c Collection) Fullest() float64 {
	return max(float64(c.Live4)/float64(max(c.Capacity4, 1)), float64(c.Live6)/float64(max(c.Capacity6, 1)))
}

// Collect removes the expired entries, those whose pod or remote address is one of gone (it
// left the cluster), and those of the flows opened by an address of changed (its identity
// changed, or it came: they are judged again by its labels; the pods' own flows to it stay).
func (c *Conntrack) Collect(gone, changed []bpf.PodwallIpAddr) (Collection, error) {
	col := Collection{Capacity4: c.v4.MaxEntries(), Capacity6: c.v6.MaxEntries()}
	addrs := slices.Clone(gone)
	scopes := make([]uint8, len(gone), len(gone)+len(changed))
	for _, a := range changed {
		if !slices.Contains(gone, a) {
			addrs = append(addrs, a)
			scopes = append(scopes, uint8(bpf.PodwallFlushScopeFLUSH_INBOUND))
		}
	}
	// The flush list is bounded; more addresses than it holds take more runs.
	chunk := int(c.flush.MaxEntries())
	for first := true; first || len(addrs) > 0; first = false {
		n := min(len(addrs), chunk)
		run, err := c.run(addrs[:n], scopes[:n])
		if err != nil {
			return col, err
		}
		addrs, scopes = addrs[n:], scopes[n:]
		col.Live4, col.Live6 = run.Live4, run.Live6
		col.Expired += run.Expired
		col.Flushed += run.Flushed
	}
	return col, nil
}

func (c *Conntrack) run(gone []bpf.PodwallIpAddr, scopes []uint8) (bpf.PodwallCtGcRun, error) {
	var run bpf.PodwallCtGcRun
	if len(gone) > 0 {
		run.Flush = 1
		if _, err := c.flush.BatchUpdate(gone, scopes, nil); err != nil {
			return run, fmt.Errorf("write %d addresses to flush into map %s: %w", len(gone), bpf.PodwallMapCtFlush, err)
		}
	}
	_, err := c.gc.Run(&ebpf.RunOptions{Context: run, ContextOut: &run})
	if err != nil {
		err = fmt.Errorf("run conntrack collector: %w", err)
	}
	if len(gone) > 0 {
		if _, derr := c.flush.BatchDelete(gone, nil); derr != nil && !errors.Is(derr, ebpf.ErrKeyNotExist) {
			err = errors.Join(err, fmt.Errorf("empty map %s: %w", bpf.PodwallMapCtFlush, derr))
		}
	}
	return run, err
}
