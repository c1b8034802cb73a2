package differential

import (
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/tests/frames"
	"github.com/podwall/podwall/tests/topo"
)

// ctCandidate is a map type conntrack could be: the issue of per-packet cost asks what a new
// flow's insert costs in each.
type ctCandidate struct {
	name  string
	typ   ebpf.MapType
	flags uint32
	// entries is the map's size: the agent's default, or half for one of two maps split by
	// direction.
	entries uint32
}

const ctDefaultEntries = 262_144 // --conntrack-size

var ctCandidates = []ctCandidate{
	{"hash", ebpf.Hash, 0, ctDefaultEntries}, // what podwall loads (preallocated)
	{"hash-half", ebpf.Hash, 0, ctDefaultEntries / 2},
	{"hash-no-prealloc", ebpf.Hash, 1 /* BPF_F_NO_PREALLOC */, ctDefaultEntries},
	{"lru", ebpf.LRUHash, 0, ctDefaultEntries},
	{"lru-no-common", ebpf.LRUHash, 2 /* BPF_F_NO_COMMON_LRU */, ctDefaultEntries},
	{"lru-percpu", ebpf.LRUCPUHash, 0, ctDefaultEntries},
}

// BenchmarkConntrackCandidates measures the insert of a new conntrack entry (a random key,
// BPF_NOEXIST, from a tc program through BPF_PROG_TEST_RUN, floor included) into each map
// type conntrack could be, with conntrack's key and value sizes: fill=quarter fills a new map
// from empty to a quarter in each round of runs, as BenchmarkVerdict's conntrack-insert does;
// fill=full inserts into an LRU map already full, so every insert evicts an entry. The empty
// program is measured beside them, the floor of the ratios.
func BenchmarkConntrackCandidates(b *testing.B) {
	ns := topo.NewNetns(b, "ctbench")
	syn := frame(benchPacket(), wire{tcpFlags: frames.TCPSyn})
	b.Run(flowEmpty, func(b *testing.B) {
		measure(b, ns, emptyProgram(b), syn, nil)
	})
	for _, c := range ctCandidates {
		b.Run(c.name+"/fill=quarter", func(b *testing.B) {
			var total time.Duration
			for done := 0; done < b.N; {
				n := min(int(c.entries/4), b.N-done)
				perRun := ctInsertRound(b, ns, c, syn, 0, n)
				total += perRun * time.Duration(n)
				done += n
			}
			record(b, total/time.Duration(b.N))
		})
		if c.typ == ebpf.LRUHash || c.typ == ebpf.LRUCPUHash {
			b.Run(c.name+"/fill=full", func(b *testing.B) {
				record(b, ctInsertRound(b, ns, c, syn, int(2*c.entries), b.N))
			})
		}
	}
}

// ctInsertRound makes a map of candidate c, inserts prefill random entries (untimed), then
// times n inserts and returns the kernel's time per insert.
func ctInsertRound(b *testing.B, ns *topo.Netns, c ctCandidate, frame []byte, prefill, n int) time.Duration {
	b.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: c.typ, KeySize: 52, ValueSize: 24, MaxEntries: c.entries, Flags: c.flags})
	require.NoError(b, err, "create %s", c.name)
	defer m.Close()
	prog, err := newCTWriteProgram(m, true, bpfNoExist)
	require.NoError(b, err)
	defer prog.Close()
	var (
		ret    uint32
		perRun time.Duration
	)
	err = ns.Do(func() (err error) {
		if prefill > 0 {
			if _, _, err := testRun(prog, frame, nil, prefill); err != nil {
				return fmt.Errorf("prefill: %w", err)
			}
		}
		ret, perRun, err = testRun(prog, frame, nil, n)
		return err
	})
	require.NoError(b, err)
	require.Equal(b, uint32(0), ret, "%s: the last insert succeeded", c.name)
	return perRun
}
