package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A small world, filled into the maps by hand with the generated types:
//
//   - the pod's host-side interface is ifindex 1. BPF_PROG_TEST_RUN runs a tc program on an skb
//     of the caller's network namespace's loopback, ifindex 1, unless the context names another
//     device (TestContextIfindex);
//   - the pod is 10.0.0.10 and fd00::10; the node is 10.0.0.1 and fd00::1 (ID_HOST);
//     pod X is 10.0.0.20 and fd00::20 (identity idX); everything else is the world.
const (
	podIfindex = 1
	idX        = 300
	polMain    = 7
	genMain    = 1

	podV4, podV6   = "10.0.0.10", "fd00::10"
	hostV4, hostV6 = "10.0.0.1", "fd00::1"
	xV4, xV6       = "10.0.0.20", "fd00::20"
	worldV4        = "192.0.2.1"
	worldV6        = "2001:db9::1"
	deniedV4       = "10.1.2.3"    // in 10.1.0.0/16: rule 1 denies, rule 2 allows
	allowedV6      = "2001:db8::5" // in 2001:db8::/32: rule 7
)

// Action values a tc program returns.
const (
	actNext = ^uint32(0) // TCX_NEXT, TC_ACT_UNSPEC
	actShot = 2          // TC_ACT_SHOT
)

// verdictReasons are the reasons a to_pod run ends with; the others count side effects.
var verdictReasons = []PodwallReason{
	PodwallReasonREASON_NO_ENTRY, PodwallReasonREASON_OPEN, PodwallReasonREASON_REPLY,
	PodwallReasonREASON_ESTABLISHED, PodwallReasonREASON_ICMP_ERROR, PodwallReasonREASON_HOST,
	PodwallReasonREASON_ND, PodwallReasonREASON_FRAGMENT, PodwallReasonREASON_ALLOW_RULE,
	PodwallReasonREASON_DENY_RULE, PodwallReasonREASON_NO_RULE, PodwallReasonREASON_ISOLATED,
	PodwallReasonREASON_MALFORMED, PodwallReasonREASON_NOT_IP, PodwallReasonREASON_VLAN,
	PodwallReasonREASON_ARP,
}

type fixture struct {
	tb     testing.TB
	objs   PodwallObjects
	events *ringbuf.Reader
	// records are the policy records by id, which setEndpoint puts in the endpoint's entry
	// as maps.Applier does.
	records map[uint32]PodwallPolicy
	// epoch is the conntrack epoch setEndpoint last wrote.
	epoch uint32
}

// newFixtureWith is a fixture that setup, if not nil, prepared.
func newFixtureWith(t *testing.T, setup func(*fixture)) *fixture {
	t.Helper()
	f := newFixture(t)
	if setup != nil {
		setup(f)
	}
	return f
}

// newFixture loads the collection with small maps, after edit changes the spec (variables,
// map types), and installs the world: the endpoint in enforce mode with EP_ALLOW_HOST and the
// main policy.
func newFixture(tb testing.TB, edit ...func(*PodwallSpecs, *ebpf.CollectionSpec)) *fixture {
	tb.Helper()
	spec, err := LoadPodwall()
	require.NoError(tb, err)
	spec.Maps[PodwallMapConntrack4].MaxEntries = 4096
	spec.Maps[PodwallMapConntrack6].MaxEntries = 4096
	spec.Maps[PodwallMapFrags].MaxEntries = 1024
	spec.Maps[PodwallMapIpcache].MaxEntries = 1024
	var specs PodwallSpecs
	require.NoError(tb, spec.Assign(&specs))
	for _, e := range edit {
		e(&specs, spec)
	}
	f := &fixture{tb: tb, records: map[uint32]PodwallPolicy{}}
	err = spec.LoadAndAssign(&f.objs, nil)
	if ve := (*ebpf.VerifierError)(nil); errors.As(err, &ve) {
		tb.Fatalf("load: %+v", ve)
	}
	require.NoError(tb, err)
	tb.Cleanup(func() { f.objs.Close() })
	f.events, err = ringbuf.NewReader(f.objs.Events)
	require.NoError(tb, err)
	tb.Cleanup(func() { f.events.Close() })

	f.installMain()
	f.setEndpoint(PodwallEndpoint{Policy: polMain, Generation: genMain, Flags: 1 /* EP_ALLOW_HOST */})
	for addr, id := range map[string]uint32{hostV4: 1, hostV6: 1, xV4: idX, xV6: idX} {
		require.NoError(tb, f.objs.Ipcache.Put(ipAddr(addr), id))
	}
	return f
}

func setVar(tb testing.TB, v *ebpf.VariableSpec, value any) {
	tb.Helper()
	require.NoError(tb, v.Set(value))
}

func ipAddr(s string) PodwallIpAddr {
	a := netip.MustParseAddr(s)
	var ip PodwallIpAddr
	if a.Is4() {
		ip.Family = 4
		b := a.As4()
		copy(ip.Addr[:], b[:])
	} else {
		ip.Family = 6
		ip.Addr = a.As16()
	}
	return ip
}

// setEndpoint writes the endpoint's entry, with the record of its policy in enforce mode,
// between an odd and a new even conntrack epoch, as maps.Applier does.
func (f *fixture) setEndpoint(ep PodwallEndpoint) {
	f.tb.Helper()
	if ep.Addr4.Family == 0 && ep.Addr6.Family == 0 {
		ep.Addr4, ep.Addr6 = ipAddr(podV4), ipAddr(podV6)
	}
	e := PodwallEndpointEntry{Ep: ep}
	if ep.Mode == 0 /* MODE_ENFORCE */ {
		rec, ok := f.records[ep.Policy]
		require.True(f.tb, ok, "policy %d has no record", ep.Policy)
		e.Rules = rec
	}
	require.NoError(f.tb, f.objs.Epoch.Put(uint32(0), f.epoch+1))
	require.NoError(f.tb, f.objs.Endpoints.Put(uint32(podIfindex), &e))
	f.epoch += 2
	require.NoError(f.tb, f.objs.Epoch.Put(uint32(0), f.epoch))
}

func (f *fixture) endpoint() PodwallEndpoint {
	f.tb.Helper()
	var e PodwallEndpointEntry
	require.NoError(f.tb, f.objs.Endpoints.Lookup(uint32(podIfindex), &e))
	return e.Ep
}

type vec = [16]uint64

// bits is the vector of the given rules.
func bits(rules ...int) vec {
	var v vec
	for _, r := range rules {
		v[r/64] |= 1 << (r % 64)
	}
	return v
}

func or(vs ...vec) vec {
	var v vec
	for _, w := range vs {
		for i := range v {
			v[i] |= w[i]
		}
	}
	return v
}

// installMain writes policy polMain, compiled by hand from these rules (bit: rule):
//
//	0: allow tcp from label (identity idX)
//	1: deny from cidr 10.1.0.0/16
//	2: allow from cidr 10.1.0.0/16
//	3: allow udp from ports 4096:8191 to ports 53
//	4: allow icmp type 8
//	5: allow icmpv6 type 128 code 0
//	6: deny tcp to ports 22
//	7: allow from cidr 2001:db8::/32
//	8: allow tcp to ports 8080
//	9: allow icmpv6
//	1000: allow udp to ports 7 (a rule in the last word of the vectors)
func (f *fixture) installMain() {
	f.tb.Helper()
	all := bits(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1000)
	without := func(rules ...int) vec {
		v := all
		for _, r := range rules {
			v[r/64] &^= 1 << (r % 64)
		}
		return v
	}
	wildIdent := without(0)
	wildCidr := without(1, 2, 7)
	wildSport := without(3)
	wildDport := without(3, 6, 8, 1000)
	wildIcmp := without(4, 5)

	var pol PodwallPolicy
	v4only, v6only := bits(1, 2), bits(7)
	tcpRules, udpRules := bits(0, 6, 8), bits(3, 1000)
	pol.Proto[0][0], pol.Proto[1][0] = or(tcpRules, v4only), or(tcpRules, v6only)
	pol.Proto[0][1], pol.Proto[1][1] = or(udpRules, v4only), or(udpRules, v6only)
	pol.Proto[0][2], pol.Proto[1][2] = or(bits(4), v4only), or(bits(5, 9), v6only)
	pol.Proto[0][3], pol.Proto[1][3] = v4only, v6only
	pol.WildIdent, pol.WildCidr, pol.WildSport, pol.WildDport, pol.WildIcmp = wildIdent, wildCidr, wildSport, wildDport, wildIcmp
	pol.Deny = bits(1, 6)
	pol.Flags = 1 | 2 | 4 | 8 | 16
	pol.Nrules = 11
	f.records[polMain] = pol

	f.put(f.objs.PolIdent, PodwallIdentKey{Policy: polMain, Identity: idX}, or(bits(0), wildIdent))
	f.put(f.objs.PolCidr, PodwallCidrKey{Prefixlen: 64 + 16, Policy: polMain, Ip: ipAddr("10.1.0.0")}, or(bits(1, 2), wildCidr))
	f.put(f.objs.PolCidr, PodwallCidrKey{Prefixlen: 64 + 32, Policy: polMain, Ip: ipAddr("2001:db8::")}, or(bits(7), wildCidr))
	f.put(f.objs.PolPort, portKey(polMain, 1, 0, 4096, 4), or(bits(3), wildSport))
	f.put(f.objs.PolPort, portKey(polMain, 1, 1, 53, 16), or(bits(3), wildDport))
	f.put(f.objs.PolPort, portKey(polMain, 1, 1, 7, 16), or(bits(1000), wildDport))
	f.put(f.objs.PolPort, portKey(polMain, 0, 1, 22, 16), or(bits(6), wildDport))
	f.put(f.objs.PolPort, portKey(polMain, 0, 1, 8080, 16), or(bits(8), wildDport))
	f.put(f.objs.PolIcmp, PodwallIcmpKey{Policy: polMain, Family: 4, Type: 8, Code: 0xffff}, or(bits(4), wildIcmp))
	f.put(f.objs.PolIcmp, PodwallIcmpKey{Policy: polMain, Family: 6, Type: 128, Code: 0}, or(bits(5), wildIcmp))
}

func portKey(policy uint32, class, dir uint8, port uint16, plen uint32) PodwallPortKey {
	// The key's port is big endian in memory; the generated field is a host-order uint16.
	be := port>>8 | port<<8
	return PodwallPortKey{Prefixlen: 48 + plen, Policy: policy, ProtoClass: class, Dir: dir, Port: be}
}

func (f *fixture) put(m *ebpf.Map, key any, v vec) {
	f.tb.Helper()
	require.NoError(f.tb, m.Put(key, PodwallRuleVec{Bits: v}))
}

// stats sums the per-CPU counters of verdicts, audited ones (audit_stats) included.
func (f *fixture) stats() map[PodwallReason]uint64 {
	f.tb.Helper()
	out := f.sum(f.objs.Stats)
	for r, n := range f.sum(f.objs.AuditStats) {
		out[r] += n
	}
	return out
}

// sum sums a per-CPU map of counters by reason.
func (f *fixture) sum(m *ebpf.Map) map[PodwallReason]uint64 {
	f.tb.Helper()
	out := map[PodwallReason]uint64{}
	for r := PodwallReason(0); r < PodwallReasonREASON_MAX; r++ {
		var per []uint64
		require.NoError(f.tb, m.Lookup(uint32(r), &per))
		for _, n := range per {
			out[r] += n
		}
	}
	return out
}

func run(tb testing.TB, prog *ebpf.Program, frame []byte) uint32 {
	tb.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: frame})
	require.NoError(tb, err)
	return ret
}

// toPod runs to_pod on frame and returns its action and the one verdict reason counted. A
// frame from one of the node's addresses comes from the node's own stack; any other was
// forwarded (fromNode).
func (f *fixture) toPod(frame []byte) (uint32, PodwallReason) {
	f.tb.Helper()
	return f.toPodWith(&ebpf.RunOptions{Data: frame, Context: skbContext(podIfindex, fromNode(frame))})
}

// fromNode is the ingress ifindex of a frame to the pod, as the tests' node gives it: 0 (the
// node's own stack sent it) when its source is one of the node's addresses, else that of an
// interface it was forwarded from, forwardedFrom.
func fromNode(frame []byte) uint32 {
	var src netip.Addr
	switch binary.BigEndian.Uint16(frame[12:]) {
	case 0x0800:
		src = netip.AddrFrom4([4]byte(frame[26:30]))
	case 0x86dd:
		src = netip.AddrFrom16([16]byte(frame[22:38]))
	}
	if src == netip.MustParseAddr(hostV4) || src == netip.MustParseAddr(hostV6) {
		return 0
	}
	return forwardedFrom
}

// forwardedFrom is the ingress ifindex of forwarded frames: loopback, the one device every
// namespace has.
const forwardedFrom = 1

func (f *fixture) toPodWith(opts *ebpf.RunOptions) (uint32, PodwallReason) {
	f.tb.Helper()
	before := f.stats()
	ret, err := f.objs.ToPod.Run(opts)
	require.NoError(f.tb, err)
	after := f.stats()
	counted := PodwallReasonREASON_MAX
	for _, r := range verdictReasons {
		switch after[r] - before[r] {
		case 0:
		case 1:
			require.Equal(f.tb, PodwallReasonREASON_MAX, counted, "two verdict reasons counted: %v and %v", counted, r)
			counted = r
		default:
			f.tb.Fatalf("reason %v counted %d times", r, after[r]-before[r])
		}
	}
	require.NotEqual(f.tb, PodwallReasonREASON_MAX, counted, "no verdict reason counted")
	return ret, counted
}

// fromPod runs from_pod on a frame the pod sends with its own address, which passes.
func (f *fixture) fromPod(frame []byte) {
	f.tb.Helper()
	require.Equal(f.tb, actNext, run(f.tb, f.objs.FromPod, frame))
}

func (f *fixture) ct(flow CtFlow) (PodwallCtEntry, bool) {
	f.tb.Helper()
	var e PodwallCtEntry
	err := flow.Table(f.objs.Conntrack4, f.objs.Conntrack6).Lookup(flow.Key(), &e)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return e, false
	}
	require.NoError(f.tb, err)
	return e, true
}

// ctPut writes the conntrack entry of flow.
func (f *fixture) ctPut(flow CtFlow, e PodwallCtEntry) {
	f.tb.Helper()
	require.NoError(f.tb, flow.Table(f.objs.Conntrack4, f.objs.Conntrack6).Put(flow.Key(), e))
}

// ctFlows are the flows of both conntrack tables.
func (f *fixture) ctFlows() map[CtFlow]PodwallCtEntry {
	f.tb.Helper()
	out := map[CtFlow]PodwallCtEntry{}
	var (
		k4 PodwallCtKey4
		k6 PodwallCtKey6
		e  PodwallCtEntry
	)
	it := f.objs.Conntrack4.Iterate()
	for it.Next(&k4, &e) {
		out[CtFlowOf4(k4)] = e
	}
	require.NoError(f.tb, it.Err())
	it = f.objs.Conntrack6.Iterate()
	for it.Next(&k6, &e) {
		out[CtFlowOf6(k6)] = e
	}
	require.NoError(f.tb, it.Err())
	return out
}

func ctKey(pod, remote string, podPort, remotePort uint16, proto uint8) CtFlow {
	return CtFlow{
		Pod: netip.MustParseAddr(pod), Remote: netip.MustParseAddr(remote),
		PodPort: podPort>>8 | podPort<<8, RemotePort: remotePort>>8 | remotePort<<8,
		Proto: proto, Ifindex: podIfindex,
	}
}

// drainEvents returns the events sent so far.
func (f *fixture) drainEvents() []PodwallEvent {
	f.tb.Helper()
	var out []PodwallEvent
	f.events.SetDeadline(time.Now())
	for {
		rec, err := f.events.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		require.NoError(f.tb, err)
		var ev PodwallEvent
		require.NoError(f.tb, binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &ev))
		out = append(out, ev)
	}
}

// monotonicNow is the programs' clock, bpf_ktime_get_coarse_ns.
// age makes every conntrack entry and fragment verdict d older, in a clock of unit ns, as if
// d had passed without packets: a test that something outlives a short timeout would race a
// slow CPU (an emulated guest takes milliseconds between two packets) where this does not.
func (f *fixture) age(unit uint64, d time.Duration) {
	f.tb.Helper()
	back := uint64(d) / unit
	for flow, e := range f.ctFlows() {
		e.LastSeen -= back
		require.NoError(f.tb, flow.Table(f.objs.Conntrack4, f.objs.Conntrack6).Update(flow.Key(), e, ebpf.UpdateExist))
	}
	var (
		fk PodwallFragKey
		fe PodwallFragEntry
	)
	frags := map[PodwallFragKey]PodwallFragEntry{}
	for it := f.objs.Frags.Iterate(); it.Next(&fk, &fe); {
		fe.Seen -= back
		frags[fk] = fe
	}
	for k, e := range frags {
		require.NoError(f.tb, f.objs.Frags.Update(k, e, ebpf.UpdateExist))
	}
}

func monotonicNow(tb testing.TB) uint64 {
	var ts unix.Timespec
	require.NoError(tb, unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts))
	return uint64(ts.Nano())
}
