package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/podwall/podwall/agent/netif"
	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/k8s"
)

// fakeDatapath records, in order, what the agent asks of the data path.
type fakeDatapath struct {
	mu       sync.Mutex
	ops      []string
	attached []int
	applied  *compiler.State
	capacity compiler.Capacity
	// applyErrs are returned by the next Applies, one each.
	applyErrs []error
	fill      []datapath.Fill
	xdp       []int
}

func (d *fakeDatapath) record(op string) {
	d.ops = append(d.ops, op)
}

func (d *fakeDatapath) Apply(s *compiler.State) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("apply")
	if len(d.applyErrs) > 0 {
		err := d.applyErrs[0]
		d.applyErrs = d.applyErrs[1:]
		if err != nil {
			return err
		}
	}
	d.applied = s
	return nil
}

func (d *fakeDatapath) Capacity() compiler.Capacity { return d.capacity }

func (d *fakeDatapath) Fill() []datapath.Fill {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fill
}

func (d *fakeDatapath) Attach(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record(fmt.Sprint("attach ", ifindex))
	d.attached = append(d.attached, ifindex)
	return nil
}

func (d *fakeDatapath) Detach(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record(fmt.Sprint("detach ", ifindex))
	d.attached = slices.DeleteFunc(d.attached, func(i int) bool { return i == ifindex })
	return nil
}

func (d *fakeDatapath) Attached() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.attached)
}

func (d *fakeDatapath) EnsureFirst() ([]datapath.Displaced, error) { return nil, nil }

func (d *fakeDatapath) CollectConntrack() (datapath.Collection, error) {
	return datapath.Collection{Capacity4: 100, Capacity6: 100}, nil
}

func (d *fakeDatapath) Verdicts() ([bpf.NumReasons]uint64, error) {
	return [bpf.NumReasons]uint64{}, nil
}

func (d *fakeDatapath) AttachXDP(ifindex int, mode datapath.XDPMode) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record(fmt.Sprintf("xdp %s %d", mode, ifindex))
	d.xdp = append(d.xdp, ifindex)
	return nil
}

func (d *fakeDatapath) DetachXDP(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record(fmt.Sprint("xdp off ", ifindex))
	d.xdp = slices.DeleteFunc(d.xdp, func(i int) bool { return i == ifindex })
	return nil
}

func (d *fakeDatapath) XDPAttached() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.xdp)
}

func (d *fakeDatapath) XDPDrops() ([bpf.NumReasons]uint64, error) {
	return [bpf.NumReasons]uint64{}, nil
}

func (d *fakeDatapath) Audits() ([bpf.NumReasons]uint64, error) {
	return [bpf.NumReasons]uint64{}, nil
}

func (d *fakeDatapath) RuleCounts(uint32) ([]datapath.RuleCount, error) { return nil, nil }

func (d *fakeDatapath) Mode() datapath.Mode { return datapath.Mode("fake") }

// takeOps returns the operations recorded since the last call.

func (d *fakeDatapath) takeOps() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	ops := d.ops
	d.ops = nil
	return ops
}

// fakeInterfaces is a node whose pods' interfaces are a table.
type fakeInterfaces struct {
	mu      sync.Mutex
	byAddr  map[netip.Addr]int
	changed func(netif.Change)
	// uplinks hold the default routes; veths are of them those that are veth.
	uplinks []int
	veths   []int
}

// route moves the default routes to the uplinks.
func (f *fakeInterfaces) route(uplinks ...int) {
	f.mu.Lock()
	f.uplinks = uplinks
	changed := f.changed
	f.mu.Unlock()
	if changed != nil {
		changed(netif.Change{Kind: netif.RouteChange})
	}
}

func (f *fakeInterfaces) set(ip string, ifindex int) {
	f.mu.Lock()
	if ifindex == 0 {
		delete(f.byAddr, netip.MustParseAddr(ip))
	} else {
		f.byAddr[netip.MustParseAddr(ip)] = ifindex
	}
	changed := f.changed
	f.mu.Unlock()
	if changed != nil {
		changed(netif.Change{Kind: netif.LinkChange})
	}
}

func (f *fakeInterfaces) Find(ips []netip.Addr) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ip := range ips {
		if i, ok := f.byAddr[ip]; ok {
			return i, nil
		}
	}
	return 0, netif.ErrNotFound
}

func (f *fakeInterfaces) Exists(ifindex int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, i := range f.byAddr {
		if i == ifindex {
			return true
		}
	}
	return false
}

func (f *fakeInterfaces) HostAddrs() ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("192.168.0.1")}, nil
}

func (f *fakeInterfaces) Links(func(string) bool) ([]int, error) { return nil, nil }

func (f *fakeInterfaces) Uplinks() ([]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.uplinks), nil
}

func (f *fakeInterfaces) Name(ifindex int) (string, error) { return fmt.Sprint("if", ifindex), nil }

func (f *fakeInterfaces) LinkType(ifindex int) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if slices.Contains(f.veths, ifindex) {
		return "veth", nil
	}
	return "device", nil
}

func (f *fakeInterfaces) Watch(ctx context.Context, changed func(netif.Change)) error {
	f.mu.Lock()
	f.changed = changed
	f.mu.Unlock()
	<-ctx.Done()
	return nil
}

// fakeSource holds a snapshot the test sets.
type fakeSource struct {
	mu     sync.Mutex
	snap   k8s.Snapshot
	differ k8s.Differ
	notify func(error)
}

func (s *fakeSource) Run(ctx context.Context, notify func(error)) error {
	s.mu.Lock()
	s.notify = notify
	s.mu.Unlock()
	notify(nil)
	<-ctx.Done()
	return nil
}

func (s *fakeSource) Changes() (k8s.Delta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.differ.Diff(s.snap), nil
}

func (s *fakeSource) set(pods ...k8s.Pod) {
	s.mu.Lock()
	s.snap = k8s.Snapshot{Pods: pods, Namespaces: []string{"shop"}}
	notify := s.notify
	s.mu.Unlock()
	if notify != nil {
		notify(nil)
	}
}

// fakeEvents records the Events the agent posts, as "reason pod" or "reason node".
type fakeEvents struct {
	mu     sync.Mutex
	events []string
}

func (e *fakeEvents) PodWarning(p k8s.Pod, reason, _ string) {
	e.add(reason + " " + p.Namespace + "/" + p.Name)
}

func (e *fakeEvents) NodeWarning(reason, _ string) { e.add(reason + " node") }

func (e *fakeEvents) add(event string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, event)
}

func (e *fakeEvents) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.events
	e.events = nil
	return out
}

// fakeStatus records the conditions the agent writes: "ns/name True Reason".
type fakeStatus struct {
	mu     sync.Mutex
	writes []string
}

func (s *fakeStatus) SetEnforced(_ context.Context, p k8s.Pod, enforced bool, reason, _ string, _ time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	status := "False"
	if enforced {
		status = "True"
	}
	s.writes = append(s.writes, p.Namespace+"/"+p.Name+" "+status+" "+reason)
	return nil
}

func (s *fakeStatus) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.writes
	s.writes = nil
	return w
}
