package differential

import (
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/tests/frames"
	"github.com/podwall/podwall/tests/topo"
)

var modesRounds = flag.Int("modes-rounds", 20, "rounds of BenchmarkVerdictModes")

// BenchmarkVerdictModes looks for the cause of BenchmarkVerdict's two levels (docs/BENCHMARKS.md,
// "Two levels"). Each round measures, 1,000,000 runs each: the empty program; a program of
// ALU work only; new-flow (ipcache 10, 1 rule) in one collection loaded before the first
// round; the same in a collection loaded for the round; established-flow in one collection.
// It prints a line per round: a level that follows the round, in every row and whatever
// collection, the control included, is the machine's, not the maps'. Run it alone: go test -run '^$' -bench '^BenchmarkVerdictModes$'
// -benchtime 1x ./tests/differential.
func BenchmarkVerdictModes(b *testing.B) {
	const runs = 1_000_000
	ns := topo.NewNetns(b, "modes")
	syn := frame(benchPacket(), wire{tcpFlags: frames.TCPSyn})
	s := benchState(b, 1, benchIPCache[0])
	newFlow := func(s *bpf.PodwallSpecs) error {
		for _, v := range []*ebpf.VariableSpec{s.CtTimeoutTcpNs, s.CtTimeoutTcpSynNs, s.CtTimeoutTcpCloseNs} {
			if err := v.Set(uint64(0)); err != nil {
				return err
			}
		}
		return nil
	}
	ready := func(d *datapath, flow string) []byte {
		require.NoError(b, d.applier.Apply(s))
		return prepare(b, ns, d, s, flow, 1)
	}
	kept := loadDatapath(b, newFlow)
	keptFrame := ready(kept, flowNew)
	est := loadDatapath(b, func(*bpf.PodwallSpecs) error { return nil })
	estFrame := ready(est, flowEstablished)
	empty, alu := emptyProgram(b), aluProgram(b)

	run := func(prog *ebpf.Program, fr, ctx []byte) float64 {
		var perRun time.Duration
		require.NoError(b, ns.Do(func() (err error) {
			var ret uint32
			ret, perRun, err = testRun(prog, fr, ctx, runs)
			if err == nil && ret != actNext {
				err = fmt.Errorf("returned %d", ret)
			}
			return err
		}))
		return float64(perRun.Nanoseconds())
	}
	fmt.Printf("round\ttime\tempty\talu\tnew-kept\tnew-fresh\testablished\n")
	for round := range *modesRounds {
		start := time.Now()
		e := run(empty, syn, nil)
		a := run(alu, syn, nil)
		k := run(kept.objs.ToPod, keptFrame, forwarded)
		fresh := loadDatapath(b, newFlow)
		f := run(fresh.objs.ToPod, ready(fresh, flowNew), forwarded)
		fresh.objs.Close()
		fresh.events.Close()
		es := run(est.objs.ToPod, estFrame, forwarded)
		fmt.Printf("%d\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\n", round, start.Format("15:04:05"), e, a, k, f, es)
	}
}
