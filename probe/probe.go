package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/tests/frames"
)

// shared are the maps to_pod reads to judge and never writes: the copy uses the node's own.
var shared = []string{
	bpf.PodwallMapEndpoints, bpf.PodwallMapIpcache, bpf.PodwallMapPolIdent, bpf.PodwallMapPolCidr,
	bpf.PodwallMapPolPort, bpf.PodwallMapPolIcmp, bpf.PodwallMapEpoch,
}

// scratchEntries bounds the scratch hash maps: one packet writes an entry or two, and at the
// program's sizes every probe would preallocate conntrack's 262,144 flows.
const scratchEntries = 64

// What to_pod returns.
const (
	actShot = 2          // TC_ACT_SHOT: drop
	actNext = ^uint32(0) // TCX_NEXT (-1), TC_ACT_UNSPEC on clsact: pass on to the next program
)

// forwardedFrom is the ingress ifindex of a packet the node forwarded, not sent: to_pod only
// tells 0 (the node's own stack) from any other, and loopback exists in every namespace.
const forwardedFrom = 1

// Node is the pinned state of a node, opened read-only.
type Node struct {
	dir   string // loader.StateDir
	bpffs string
	maps  map[string]*ebpf.Map
}

// Open opens the pinned state under bpffs (the agent's --bpffs).
func Open(bpffs string) (_ *Node, err error) {
	if bpffs == "" {
		bpffs = loader.DefaultBPFFS
	}
	n := &Node{dir: loader.StateDir(bpffs), bpffs: bpffs, maps: map[string]*ebpf.Map{}}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	for _, name := range append([]string{bpf.PodwallMapConntrack4, bpf.PodwallMapConntrack6, bpf.PodwallMapLocalPods}, shared...) {
		m, err := ebpf.LoadPinnedMap(filepath.Join(n.dir, "maps", name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("load pinned map %s: %w", name, err)
		}
		n.maps[name] = m
	}
	return n, nil
}

// Close releases the maps; the node's state stays as it is.
func (n *Node) Close() {
	for _, m := range n.maps {
		_ = m.Close()
	}
}

// Ifindex is the host-side interface of the local pod that has address a, from local_pods.
// ok is false when no local pod has it.
func (n *Node) Ifindex(a netip.Addr) (ifindex uint32, ok bool, err error) {
	err = n.maps[bpf.PodwallMapLocalPods].Lookup(compiler.AddrKey(a.Unmap()), &ifindex)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("look %s up in map %s: %w", a, bpf.PodwallMapLocalPods, err)
	}
	return ifindex, true, nil
}

// HostAddrs are the node's own addresses, as the agent put them in the ipcache.
func (n *Node) HostAddrs() ([]netip.Addr, error) {
	var (
		k   bpf.PodwallIpAddr
		id  uint32
		out []netip.Addr
	)
	it := n.maps[bpf.PodwallMapIpcache].Iterate()
	for it.Next(&k, &id) {
		if id == bpf.IDHost {
			out = append(out, bpf.KeyAddr(k))
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read map %s: %w", bpf.PodwallMapIpcache, err)
	}
	// In order, so that the source "node" is the same address every time.
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// Packet is what a probe sends to a pod.
type Packet struct {
	// Src, Dst, FromNode, Proto, the ports and the ICMP type and code, as the model judges
	// them; not a fragment. A TCP packet is a SYN.
	compiler.Packet
	// EchoID is the identifier of an ICMP or ICMPv6 echo: conntrack keys echoes by it.
	EchoID uint16
	// Ifindex is the pod's host-side interface (Node.Ifindex), whose to_pod judges it.
	Ifindex uint32
	// NewFlow judges the packet as the first of its flow: the node's conntrack entry of the
	// flow, if any, is not copied.
	NewFlow bool
}

// Result is what the kernel did with a packet.
type Result struct {
	Pass   bool
	Reason bpf.Reason
	// Audit says that the pod's audit mode passed a packet its policy drops for Reason.
	Audit bool
	// Event is what to_pod sent to its ring buffer: an event for drops and for the first
	// packet of a flow a rule allowed; nil for other packets.
	Event *bpf.PodwallEvent
	// Tracked is the node's conntrack entry of the packet's flow, which the copy judged
	// with; nil when there is none, or with NewFlow.
	Tracked *bpf.PodwallCtEntry
	// Defaults says why the copy ran with some or all of the agent's default settings
	// rather than those of the program that judges the pod; nil when it ran with them all.
	Defaults error
}

// Rule is the deciding rule, as its policy id and rule bit: known when the reason is a
// rule's and the kernel sent its event.
func (r Result) Rule() (policy uint32, bit int, ok bool) {
	if r.Event == nil || (r.Reason != bpf.ReasonAllowRule && r.Reason != bpf.ReasonDenyRule) {
		return 0, 0, false
	}
	return r.Event.Policy, int(r.Event.Rule), true
}

// scratch is what a probe loads: the copy of to_pod and the scratch maps it reads back.
type scratch struct {
	ToPod      *ebpf.Program `ebpf:"to_pod"`
	Conntrack4 *ebpf.Map     `ebpf:"conntrack4"`
	Conntrack6 *ebpf.Map     `ebpf:"conntrack6"`
	Stats      *ebpf.Map     `ebpf:"stats"`
	AuditStats *ebpf.Map     `ebpf:"audit_stats"`
	Events     *ebpf.Map     `ebpf:"events"`
}

func (s *scratch) close() {
	for _, c := range []interface{ Close() error }{s.ToPod, s.Conntrack4, s.Conntrack6, s.Stats, s.AuditStats, s.Events} {
		_ = c.Close()
	}
}

// Judge runs the packet through a fresh copy of to_pod on the pod's interface.
func (n *Node) Judge(p Packet) (Result, error) {
	if p.Fragment != compiler.FragNone {
		return Result{}, errors.New("probe fragments: not supported")
	}
	frame, err := frameOf(p)
	if err != nil {
		return Result{}, err
	}
	spec, err := bpf.LoadPodwall()
	if err != nil {
		return Result{}, fmt.Errorf("load spec: %w", err)
	}
	var res Result
	res.Defaults = liveSettings(spec, n.bpffs, p.Ifindex)
	// The agent may have turned events off (a rate of 0). The copy's rate limit is its own
	// and starts with its budget whole, so a rate of 1 lets the run's one event through.
	for _, name := range []string{"events_per_sec", "events_burst"} {
		vs, ok := spec.Variables[name]
		if !ok {
			return Result{}, fmt.Errorf("set %s: the program has no such constant", name)
		}
		if err := vs.Set(uint32(1)); err != nil {
			return Result{}, fmt.Errorf("set %s: %w", name, err)
		}
	}
	replace := map[string]*ebpf.Map{}
	for _, name := range shared {
		// The agent sizes these by its flags (--map-size).
		spec.Maps[name].MaxEntries = n.maps[name].MaxEntries()
		replace[name] = n.maps[name]
	}
	for name, ms := range spec.Maps {
		if _, ok := replace[name]; ok {
			continue
		}
		ms.Pinning = ebpf.PinNone
		switch ms.Type {
		case ebpf.Hash, ebpf.LRUHash, ebpf.PerCPUHash, ebpf.LRUCPUHash:
			ms.MaxEntries = min(ms.MaxEntries, scratchEntries)
		}
	}
	var s scratch
	if err := spec.LoadAndAssign(&s, &ebpf.CollectionOptions{MapReplacements: replace}); err != nil {
		return Result{}, fmt.Errorf("load a copy of %s: %w", bpf.PodwallProgToPod, err)
	}
	defer s.close()

	if flow, ok := ctFlow(p); ok && !p.NewFlow {
		var e bpf.PodwallCtEntry
		live := flow.Table(n.maps[bpf.PodwallMapConntrack4], n.maps[bpf.PodwallMapConntrack6])
		err := live.Lookup(flow.Key(), &e)
		switch {
		case err == nil:
			if err := flow.Table(s.Conntrack4, s.Conntrack6).Put(flow.Key(), &e); err != nil {
				return Result{}, fmt.Errorf("copy the flow's conntrack entry: %w", err)
			}
			res.Tracked = &e
		case !errors.Is(err, ebpf.ErrKeyNotExist):
			return Result{}, fmt.Errorf("look the flow up in conntrack: %w", err)
		}
	}

	ingress := uint32(forwardedFrom)
	if p.FromNode {
		ingress = 0
	}
	ret, err := s.ToPod.Run(&ebpf.RunOptions{Data: frame, Context: skbContext(p.Ifindex, ingress)})
	if errors.Is(err, unix.ENODEV) {
		return Result{}, fmt.Errorf("run %s on ifindex %d: no such interface in this network namespace (run where the agent attaches, e.g. nsenter --net=...): %w",
			bpf.PodwallProgToPod, p.Ifindex, err)
	}
	if err != nil {
		return Result{}, fmt.Errorf("run %s on ifindex %d: %w", bpf.PodwallProgToPod, p.Ifindex, err)
	}
	switch ret {
	case actNext:
		res.Pass = true
	case actShot:
	default:
		return Result{}, fmt.Errorf("%s returned %d: neither pass nor drop", bpf.PodwallProgToPod, int32(ret))
	}
	if res.Reason, res.Audit, err = counted(s.Stats, s.AuditStats); err != nil {
		return Result{}, err
	}
	if res.Event, err = event(s.Events); err != nil {
		return Result{}, err
	}
	return res, nil
}

// counted is the one verdict's reason the run counted: in stats, or in audit_stats for a
// drop audit mode passed.
func counted(stats, auditStats *ebpf.Map) (bpf.Reason, bool, error) {
	var found []bpf.Reason
	var audit bool
	for _, m := range []*ebpf.Map{stats, auditStats} {
		n, err := datapath.ReadStats(m)
		if err != nil {
			return 0, false, err
		}
		for r, c := range n {
			reason := bpf.Reason(r)
			// Counted beside a verdict's reason, never as one.
			if c == 0 || reason == bpf.ReasonEventLost || reason == bpf.ReasonCTFull || reason == bpf.ReasonCTQuota {
				continue
			}
			found = append(found, reason)
			audit = m == auditStats
		}
	}
	if len(found) != 1 {
		return 0, false, fmt.Errorf("the run counted %d verdicts' reasons, not one: %v", len(found), found)
	}
	return found[0], audit, nil
}

// event reads the run's event, if it sent one.
func event(m *ebpf.Map) (*bpf.PodwallEvent, error) {
	r, err := ringbuf.NewReader(m)
	if err != nil {
		return nil, fmt.Errorf("read map %s: %w", bpf.PodwallMapEvents, err)
	}
	defer r.Close()
	// The run has ended: what it sent is there already.
	r.SetDeadline(time.Now())
	var rec ringbuf.Record
	err = r.ReadInto(&rec)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read map %s: %w", bpf.PodwallMapEvents, err)
	}
	var ev bpf.PodwallEvent
	if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &ev); err != nil {
		return nil, fmt.Errorf("decode event of %d bytes: %w", len(rec.RawSample), err)
	}
	return &ev, nil
}

// skbContext is the __sk_buff of the run: ingress_ifindex (offset 36) and ifindex (40); the
// kernel zero-fills the fields after a short context.
func skbContext(ifindex, ingress uint32) []byte {
	ctx := make([]byte, 44)
	binary.NativeEndian.PutUint32(ctx[36:], ingress)
	binary.NativeEndian.PutUint32(ctx[40:], ifindex)
	return ctx
}

// isEcho says whether p is an ICMP(v6) echo request or reply, which conntrack follows.
func isEcho(p compiler.Packet) bool {
	switch {
	case p.Src.Is4() && p.Proto == frames.ProtoICMP:
		return p.ICMPType == 8 || p.ICMPType == 0
	case p.Src.Is6() && p.Proto == frames.ProtoICMPv6:
		return p.ICMPType == 128 || p.ICMPType == 129
	}
	return false
}

// ctFlow is the packet's flow as conntrack keys it (oriented from the pod); false for packets
// conntrack does not follow.
func ctFlow(p Packet) (bpf.CtFlow, bool) {
	k := bpf.CtFlow{Pod: p.Dst, Remote: p.Src, Proto: p.Proto, Ifindex: p.Ifindex}
	switch {
	case p.Proto == frames.ProtoTCP || p.Proto == frames.ProtoUDP:
		k.PodPort, k.RemotePort = htons(p.DstPort), htons(p.SrcPort)
	case isEcho(p.Packet):
		k.PodPort = htons(p.EchoID)
	default:
		return k, false
	}
	return k, true
}

// htons is v in network byte order, as the kernel's ports are stored.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// frameOf builds the packet as an Ethernet frame, with its checksums.
func frameOf(p Packet) ([]byte, error) {
	if !p.Src.IsValid() || !p.Dst.IsValid() || p.Src.Is4() != p.Dst.Is4() {
		return nil, fmt.Errorf("probe %s -> %s: want two addresses of one family", p.Src, p.Dst)
	}
	var l4 frames.L4
	switch {
	case p.Proto == frames.ProtoTCP:
		l4 = frames.TCP(p.SrcPort, p.DstPort, frames.TCPSyn, nil)
	case p.Proto == frames.ProtoUDP:
		l4 = frames.UDP(p.SrcPort, p.DstPort, nil)
	case (p.Src.Is4() && p.Proto == frames.ProtoICMP) || (p.Src.Is6() && p.Proto == frames.ProtoICMPv6):
		l4 = frames.ICMP(p.Proto, p.ICMPType, p.ICMPCode, p.EchoID, nil)
	default:
		l4 = frames.Raw(p.Proto, nil)
	}
	if p.Src.Is4() {
		return frames.Ether(nil, nil, frames.EtherIPv4, frames.Seal(frames.IPv4{Src: p.Src, Dst: p.Dst}.Packet(l4))), nil
	}
	return frames.Ether(nil, nil, frames.EtherIPv6, frames.Seal(frames.IPv6{Src: p.Src, Dst: p.Dst}.Packet(l4))), nil
}
