package differential

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/maps"
)

// Actions to_pod returns.
const (
	actNext = math.MaxUint32 // TCX_NEXT: pass
	actShot = 2              // TC_ACT_SHOT: drop
	xdpDrop = 1              // XDP_DROP
	xdpPass = 2              // XDP_PASS
)

// datapath is a loaded, unpinned podwall collection whose maps an Applier fills.
type datapath struct {
	objs    bpf.PodwallObjects
	applier *maps.Applier
	events  *ringbuf.Reader

	// stats and xdpStats are the totals of the stats maps before the last run.
	stats     [bpf.NumReasons]uint64
	xdpStats  [bpf.NumReasons]uint64
	statsKeys []uint32
	perCPU    []uint64
}

// loadDatapath loads the collection after edit changed its spec (variables, map sizes), and
// closes it when the test ends.
func loadDatapath(tb testing.TB, edit func(*bpf.PodwallSpecs) error) *datapath {
	tb.Helper()
	spec, err := bpf.LoadPodwall()
	require.NoError(tb, err)
	var specs bpf.PodwallSpecs
	require.NoError(tb, spec.Assign(&specs))
	// Conntrack in jiffies, as the loader sets it up for the agent.
	jns, err := bpf.JiffyNS()
	require.NoError(tb, err)
	require.NoError(tb, specs.JiffyNs.Set(jns))
	require.NoError(tb, edit(&specs), "edit the collection spec")
	d := &datapath{}
	err = spec.LoadAndAssign(&d.objs, nil)
	if ve := (*ebpf.VerifierError)(nil); errors.As(err, &ve) {
		tb.Fatalf("load podwall: %+v", ve)
	}
	require.NoError(tb, err, "load podwall")
	tb.Cleanup(func() { d.objs.Close() })
	d.events, err = ringbuf.NewReader(d.objs.Events)
	require.NoError(tb, err)
	tb.Cleanup(func() { d.events.Close() })
	d.applier = maps.NewApplier(&d.objs)

	cpus, err := ebpf.PossibleCPU()
	require.NoError(tb, err)
	d.statsKeys = make([]uint32, bpf.NumReasons)
	for i := range d.statsKeys {
		d.statsKeys[i] = uint32(i)
	}
	d.perCPU = make([]uint64, int(bpf.NumReasons)*cpus)
	d.stats, err = d.readStats()
	require.NoError(tb, err)
	d.xdpStats, err = d.readCounters(d.objs.XdpStats)
	require.NoError(tb, err)
	return d
}

// readStats sums the per-CPU counters of every reason tc counted, audited verdicts included
// (the event tells those apart).
func (d *datapath) readStats() ([bpf.NumReasons]uint64, error) {
	out, err := d.readCounters(d.objs.Stats)
	if err != nil {
		return out, err
	}
	audits, err := d.readCounters(d.objs.AuditStats)
	for r := range out {
		out[r] += audits[r]
	}
	return out, err
}

// readCounters sums a per-CPU counter map by reason (stats, xdp_stats), in one batch lookup.
func (d *datapath) readCounters(m *ebpf.Map) ([bpf.NumReasons]uint64, error) {
	var out [bpf.NumReasons]uint64
	var cursor ebpf.MapBatchCursor
	n, err := m.BatchLookup(&cursor, d.statsKeys, d.perCPU, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return out, fmt.Errorf("read stats: %w", err)
	}
	if n != len(d.statsKeys) {
		return out, fmt.Errorf("read stats: %d of %d reasons", n, len(d.statsKeys))
	}
	cpus := len(d.perCPU) / len(d.statsKeys)
	for i, v := range d.perCPU {
		out[i/cpus] += v
	}
	return out, nil
}

// outcome is what the program answered for one packet.
type outcome struct {
	action uint32
	reason bpf.Reason
	// event is the event the run sent, if any.
	event *bpf.PodwallEvent
}

func (o outcome) String() string {
	s := fmt.Sprintf("action %d, reason %v", int32(o.action), o.reason)
	if e := o.event; e != nil {
		s += fmt.Sprintf(", event {reason %v verdict %d rule %d identity %d policy %d ifindex %d}",
			bpf.Reason(e.Reason), e.Verdict, e.Rule, e.Identity, e.Policy, e.Ifindex)
	}
	return s
}

// judge runs to_pod once on frame as if it arrived on the interface at ifindex, then forgets
// the flow, so that the next packet is judged as the first of a new flow, as Evaluate judges
// it.
func (d *datapath) judge(ifindex uint32, fromNode bool, frame []byte) (outcome, error) {
	o, err := d.run(ifindex, fromNode, frame)
	if err != nil {
		return o, err
	}
	return o, d.forget()
}

// run runs to_pod once on frame as if it arrived on the interface at ifindex, from the
// calling thread's network namespace. The reason is the one verdict the stats map counted;
// a run that counts none, two, or a side effect (a full conntrack, a lost event) is an
// error.
func (d *datapath) run(ifindex uint32, fromNode bool, frame []byte) (outcome, error) {
	var o outcome
	ret, err := d.objs.ToPod.Run(&ebpf.RunOptions{Data: frame, Context: skbContext(ifindex, ingressOf(fromNode))})
	if err != nil {
		return o, fmt.Errorf("run to_pod on ifindex %d: %w", ifindex, err)
	}
	o.action = ret
	after, err := d.readStats()
	if err != nil {
		return o, err
	}
	counted := countedBetween(d.stats, after)
	d.stats = after
	if len(counted) != 1 {
		return o, fmt.Errorf("one run counted reasons %v", counted)
	}
	o.reason = counted[0]
	o.event, err = d.event()
	return o, err
}

// runXDP runs from_world once on frame as if it came in through an uplink. It must leave
// conntrack, frags and tc's counters alone; a drop counts its one reason in xdp_stats and
// sends its event.
func (d *datapath) runXDP(frame []byte) (outcome, error) {
	var o outcome
	ret, err := d.objs.FromWorld.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		return o, fmt.Errorf("run from_world: %w", err)
	}
	o.action = ret
	after, err := d.readCounters(d.objs.XdpStats)
	if err != nil {
		return o, err
	}
	counted := countedBetween(d.xdpStats, after)
	d.xdpStats = after
	if tc, err := d.readStats(); err != nil || tc != d.stats {
		return o, errors.Join(err, fmt.Errorf("from_world counted in tc's stats"))
	}
	switch {
	case ret == xdpDrop && len(counted) == 1:
		o.reason = counted[0]
	case ret == xdpPass && len(counted) == 0:
	default:
		return o, fmt.Errorf("from_world returned %d and counted %v", ret, counted)
	}
	var k4 bpf.PodwallCtKey4
	if err := d.objs.Conntrack4.NextKey(nil, &k4); !errors.Is(err, ebpf.ErrKeyNotExist) {
		return o, fmt.Errorf("from_world wrote conntrack (%v)", err)
	}
	var k6 bpf.PodwallCtKey6
	if err := d.objs.Conntrack6.NextKey(nil, &k6); !errors.Is(err, ebpf.ErrKeyNotExist) {
		return o, fmt.Errorf("from_world wrote conntrack (%v)", err)
	}
	o.event, err = d.event()
	if err == nil && ret == xdpDrop && (o.event == nil || o.event.Hook != bpf.HookXDP || bpf.Reason(o.event.Reason) != o.reason) {
		err = fmt.Errorf("from_world's drop sent event %+v", o.event)
	}
	return o, err
}

// countedBetween lists the reasons counted from before to after, once per packet.
func countedBetween(before, after [bpf.NumReasons]uint64) []bpf.Reason {
	var counted []bpf.Reason
	for r := range bpf.NumReasons {
		for range after[r] - before[r] {
			counted = append(counted, r)
		}
	}
	return counted
}

// forget empties conntrack and frags: what the program remembers of the packets it judged.
func (d *datapath) forget() error {
	if err := empty(d.objs.Conntrack4, bpf.PodwallMapConntrack4, new(bpf.PodwallCtKey4)); err != nil {
		return err
	}
	if err := empty(d.objs.Conntrack6, bpf.PodwallMapConntrack6, new(bpf.PodwallCtKey6)); err != nil {
		return err
	}
	return empty(d.objs.Frags, bpf.PodwallMapFrags, new(bpf.PodwallFragKey))
}

// resync takes the counters and events of runs that did not go through run (benchmarks) as
// seen, so that the next run reports only its own.
func (d *datapath) resync() error {
	var err error
	if d.stats, err = d.readStats(); err != nil {
		return err
	}
	for d.events.AvailableBytes() > 0 {
		d.events.SetDeadline(time.Now())
		if _, err := d.events.Read(); err != nil {
			return fmt.Errorf("drain events: %w", err)
		}
	}
	return nil
}

// event reads the event of the last run, nil when it sent none. Every event is read right
// after its run, so there is at most one.
func (d *datapath) event() (*bpf.PodwallEvent, error) {
	if d.events.AvailableBytes() == 0 {
		return nil, nil
	}
	d.events.SetDeadline(time.Now())
	rec, err := d.events.Read()
	if err != nil {
		return nil, fmt.Errorf("read event: %w", err)
	}
	var ev bpf.PodwallEvent
	if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &ev); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	if n := d.events.AvailableBytes(); n != 0 {
		return nil, fmt.Errorf("one run sent more than one event (%d bytes left)", n)
	}
	return &ev, nil
}

// empty deletes every entry of m; key is scratch space of m's key type.
func empty[K any](m *ebpf.Map, name string, key *K) error {
	for {
		err := m.NextKey(nil, key)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("first key of %s: %w", name, err)
		}
		if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from %s: %w", name, err)
		}
	}
}

// skbContext is a __sk_buff for BPF_PROG_TEST_RUN that sets only ingress_ifindex (offset 36)
// and ifindex (offset 40), after nine __u32 fields (len ... priority); the kernel zero-fills
// the rest. The ifindex must name an interface of the calling thread's network namespace; an
// ingress_ifindex of 0 is a packet the node's own stack sent.
func skbContext(ifindex, ingress uint32) []byte {
	ctx := make([]byte, 44)
	binary.NativeEndian.PutUint32(ctx[36:], ingress)
	binary.NativeEndian.PutUint32(ctx[40:], ifindex)
	return ctx
}

// ingressOf is the ingress ifindex of a packet: 0 when the node's stack sent it, else that of
// the loopback, as if forwarded from an interface.
func ingressOf(fromNode bool) uint32 {
	if fromNode {
		return 0
	}
	return 1
}
