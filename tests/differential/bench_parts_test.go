package differential

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/tests/frames"
	"github.com/podwall/podwall/tests/topo"
)

// benchPart is a row of new-flow-parts: the new flow's packet under a policy whose rules all
// constrain the same one field (or none), so that classify does that field's lookup and no
// other; its n-1 first rules do not match the packet, its last allows it.
type benchPart struct {
	name  string
	rules []int
	rule  func(i int) string // the i-th rule that does not match
	last  string
}

var benchParts = []benchPart{
	// No field: the classifier's fixed work (the protocol vector, decide over the 1024-bit
	// vectors), the rule's counter and the new flow's event.
	{"proto", []int{1}, nil, "allow tcp"},
	// One hash lookup of (policy, identity).
	{"ident", []int{1, 1024}, func(i int) string { return fmt.Sprintf("allow tcp from label app=app-%d", i%50) },
		"allow tcp from label role=frontend"},
	// One LPM lookup of (policy, source address); the other prefixes share the /8 of the
	// packet's source, so that the lookup walks among them.
	{"cidr", []int{1, 1024}, func(i int) string { return fmt.Sprintf("allow tcp from cidr 10.%d.%d.0/24", 1+i/256, i%256) },
		"allow tcp from cidr 10.0.0.0/8"},
	// The same lookup with the other prefixes on the path to the source's: 1,023 /24s of
	// 10.0-3.x, one of which contains the source, in rules of another protocol (which do not
	// match), so that the lookup walks down to a /24 before it finds the /8.
	{"cidr-path", []int{1024}, func(i int) string { return fmt.Sprintf("allow udp from cidr 10.%d.%d.0/24", i/256, i%256) },
		"allow tcp from cidr 10.0.0.0/8"},
	// One LPM lookup of (policy, class, direction, port) each.
	{"sport", []int{1, 1024}, func(i int) string { return fmt.Sprintf("allow tcp from ports %d", 20000+i) },
		"allow tcp from ports 1024:65535"},
	{"dport", []int{1, 1024}, func(i int) string { return fmt.Sprintf("allow tcp to ports %d", 8000+i) },
		"allow tcp to ports 443"},
}

// text is the policy of n rules.
func (p benchPart) text(n int) string {
	rules := make([]string, 0, n)
	for i := range n - 1 {
		rules = append(rules, p.rule(i))
	}
	return joinRules(append(rules, p.last))
}

// benchPartsIPCache are the clusters of the host rows: the ipcache lookup of the smallest
// and the largest.
var benchPartsIPCache = []int{benchIPCache[0], benchIPCache[len(benchIPCache)-1]}

// measureParts measures the parts of a new flow in d, the collection of new-flow: the host rows
// pass a packet of the node's own stack (REASON_HOST) after the ipcache lookup and before the
// classifier; the others are the classifier with one field's lookups, at ipcache 10.
func measureParts(b *testing.B, ns *topo.Netns, d *datapath) {
	for _, entries := range benchPartsIPCache {
		b.Run(fmt.Sprintf("host/ipcache=%d", entries), func(b *testing.B) {
			s := benchState(b, 1, entries)
			require.NoError(b, d.applier.Apply(s))
			fr := frame(benchPacket(), wire{tcpFlags: frames.TCPSyn})
			prepareReasons(b, ns, d, fr, true, []bpf.Reason{bpf.ReasonHost, bpf.ReasonHost})
			measure(b, ns, d.objs.ToPod, fr, fromNode)
		})
	}
	for _, part := range benchParts {
		for _, rules := range part.rules {
			b.Run(fmt.Sprintf("%s/rules=%d", part.name, rules), func(b *testing.B) {
				s := benchStateOf(b, part.text(rules), benchIPCache[0])
				require.NoError(b, d.applier.Apply(s))
				measure(b, ns, d.objs.ToPod, prepare(b, ns, d, s, flowNew, rules), forwarded)
			})
		}
	}
}

// prepareReasons runs frame through to_pod once per reason of want, from the node's stack
// when fromNode, and checks that the runs gave those reasons.
func prepareReasons(b *testing.B, ns *topo.Netns, d *datapath, fr []byte, fromNode bool, want []bpf.Reason) {
	b.Helper()
	var got []bpf.Reason
	require.NoError(b, ns.Do(func() error {
		if err := d.resync(); err != nil {
			return err
		}
		if err := d.forget(); err != nil {
			return err
		}
		for range want {
			o, err := d.run(1, fromNode, fr)
			if err != nil {
				return err
			}
			got = append(got, o.reason)
		}
		return d.resync()
	}))
	require.Equal(b, want, got)
}

// aluProgram is a tc program of about 200 dependent ALU instructions (a multiply and a xor,
// 100 times) that returns TCX_NEXT: work that touches no memory, as a control of the
// measurement against the rows that read maps.
func aluProgram(b *testing.B) *ebpf.Program {
	insns := asm.Instructions{asm.Mov.Imm(asm.R2, 1)}
	for i := range 100 {
		insns = append(insns, asm.Mul.Imm(asm.R2, -0x61c88647), asm.Xor.Imm(asm.R2, int32(i)))
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, -1), asm.Return())
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, Instructions: insns, License: "Dual BSD/GPL"})
	require.NoError(b, err)
	b.Cleanup(func() { prog.Close() })
	return prog
}

// Flags of bpf_map_update_elem.
const (
	bpfNoExist = 1
	bpfExist   = 2
)

// ctWriteProgram is a tc program that writes one conntrack entry into m with flags and
// returns what bpf_map_update_elem returned (0: written). With random, the key's pod and
// remote addresses hold random bytes, a new key each run; else the key is all zeroes.
func ctWriteProgram(b *testing.B, m *ebpf.Map, random bool, flags int32) *ebpf.Program {
	prog, err := newCTWriteProgram(m, random, flags)
	require.NoError(b, err)
	b.Cleanup(func() { prog.Close() })
	return prog
}

// ctKeyAddrs are, per size of a conntrack key, where its pod and remote addresses start: the
// IPv4 table's (struct ct_key4), and the one table of earlier versions (struct ct_key), whose
// size the conntrack candidates are measured with.
var ctKeyAddrs = map[uint32][2]int16{20: {12, 16}, 52: {4, 24}}

// newCTWriteProgram is ctWriteProgram's program, for the caller to close.
func newCTWriteProgram(m *ebpf.Map, random bool, flags int32) (*ebpf.Program, error) {
	// The key is at the top of the stack, then the value (24 bytes), both zeroed first.
	addrs, ok := ctKeyAddrs[m.KeySize()]
	if !ok || m.ValueSize() != 24 {
		return nil, fmt.Errorf("map of %d-byte keys and %d-byte values, not conntrack's", m.KeySize(), m.ValueSize())
	}
	key := -int16((m.KeySize() + 7) / 8 * 8)
	value := key - 24
	insns := asm.Instructions{asm.Mov.Imm(asm.R1, 0)}
	for off := value; off < 0; off += 8 {
		insns = append(insns, asm.StoreMem(asm.RFP, off, asm.R1, asm.DWord))
	}
	if random {
		insns = append(insns,
			asm.FnGetPrandomU32.Call(),
			asm.StoreMem(asm.RFP, key+addrs[0], asm.R0, asm.Word),
			asm.FnGetPrandomU32.Call(),
			asm.StoreMem(asm.RFP, key+addrs[1], asm.R0, asm.Word),
		)
	}
	insns = append(insns,
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, int32(key)),
		asm.Mov.Reg(asm.R3, asm.RFP), asm.Add.Imm(asm.R3, int32(value)),
		asm.Mov.Imm(asm.R4, flags),
		asm.FnMapUpdateElem.Call(),
		asm.Return(),
	)
	return ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, Instructions: insns, License: "Dual BSD/GPL"})
}

// measureCTInsert measures the insert of a new conntrack entry into d's conntrack map, the one
// to_pod writes (a hash of preallocated entries, of the agent's default size): a program that
// only inserts a random key. So that the map never fills, the runs go in rounds of at most a
// quarter of its size, and the map is emptied between rounds (untimed): each round fills it
// from empty to a quarter.
func measureCTInsert(b *testing.B, ns *topo.Netns, d *datapath, fr []byte) {
	m := d.objs.Conntrack4
	prog := ctWriteProgram(b, m, true, bpfNoExist)
	require.NoError(b, d.forget())
	round := int(m.MaxEntries() / 4)
	var total time.Duration
	for done := 0; done < b.N; {
		n := min(round, b.N-done)
		var (
			ret    uint32
			perRun time.Duration
		)
		err := ns.Do(func() (err error) {
			ret, perRun, err = testRun(prog, fr, nil, n)
			return err
		})
		require.NoError(b, err)
		require.Equal(b, uint32(0), ret, "the last insert succeeded")
		total += perRun * time.Duration(n)
		deleted, err := drain(m)
		require.NoError(b, err)
		// A random key that repeats (one in 2^64) is not inserted again.
		require.InDelta(b, n, deleted, 1, "every run inserted an entry")
		done += n
	}
	record(b, total/time.Duration(b.N))
}

// measureCTRewrite measures what new-flow's runs write instead: the update of an entry that
// exists (BPF_EXIST), in the same map.
func measureCTRewrite(b *testing.B, ns *topo.Netns, d *datapath, fr []byte) {
	m := d.objs.Conntrack4
	perRun := runOnOneEntry(b, ns, d, ctWriteProgram(b, m, false, bpfExist), fr, "the update succeeded")
	n, err := drain(m)
	require.NoError(b, err)
	require.Equal(b, 1, n, "the update replaced the one entry")
	record(b, perRun)
}

// measureCTLookup measures one lookup that finds its entry in d's conntrack map (the real map,
// as in measureCTRewrite): all an established flow asks of conntrack.
func measureCTLookup(b *testing.B, ns *topo.Netns, d *datapath, fr []byte) {
	m := d.objs.Conntrack4
	// The key is at fp-24 (20 bytes, and 4 of padding), zeroed; the program returns 0 on a hit.
	const key = -24
	insns := asm.Instructions{asm.Mov.Imm(asm.R1, 0)}
	for off := int16(key); off < 0; off += 8 {
		insns = append(insns, asm.StoreMem(asm.RFP, off, asm.R1, asm.DWord))
	}
	insns = append(insns,
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP), asm.Add.Imm(asm.R2, key),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "miss"),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("miss"),
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, Instructions: insns, License: "Dual BSD/GPL"})
	require.NoError(b, err)
	b.Cleanup(func() { prog.Close() })
	record(b, runOnOneEntry(b, ns, d, prog, fr, "the lookup found the entry"))
}

// runOnOneEntry leaves d's conntrack map holding only the entry of the all-zero key, runs prog
// on fr b.N times, checks that it returned 0 (what says), and returns the time per run.
func runOnOneEntry(b *testing.B, ns *topo.Netns, d *datapath, prog *ebpf.Program, fr []byte, what string) time.Duration {
	b.Helper()
	require.NoError(b, d.forget())
	var k bpf.PodwallCtKey4
	require.NoError(b, d.objs.Conntrack4.Put(&k, &bpf.PodwallCtEntry{}))
	b.Cleanup(func() { _ = d.forget() })
	var (
		ret    uint32
		perRun time.Duration
	)
	err := ns.Do(func() (err error) {
		ret, perRun, err = testRun(prog, fr, nil, b.N)
		return err
	})
	require.NoError(b, err)
	require.Equal(b, uint32(0), ret, what)
	return perRun
}

// drain empties the IPv4 conntrack map m and returns how many entries it held.
func drain(m *ebpf.Map) (int, error) {
	keys := make([]bpf.PodwallCtKey4, 4096)
	values := make([]bpf.PodwallCtEntry, len(keys))
	var (
		cursor ebpf.MapBatchCursor
		total  int
	)
	for {
		n, err := m.BatchLookupAndDelete(&cursor, keys, values, nil)
		total += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return total, fmt.Errorf("drain conntrack: %w", err)
		}
	}
	var k bpf.PodwallCtKey4
	if err := m.NextKey(nil, &k); !errors.Is(err, ebpf.ErrKeyNotExist) {
		return total, fmt.Errorf("conntrack is not empty after draining (%v)", err)
	}
	return total, nil
}
