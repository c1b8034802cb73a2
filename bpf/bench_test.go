package bpf

import (
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/tests/frames"
)

// BenchmarkToPodHandmade measures to_pod with the hand-compiled policy of the tests (11
// rules, every field constrained) against an empty tc program, through BPF_PROG_TEST_RUN:
// ns/op is the kernel's time per run. A flow cannot stay new over repeated runs, so "new
// flow" runs with a TCP conntrack timeout of 0: every packet finds its entry expired, goes
// through every lookup of step 10 and rewrites the entry in place (no insert).
func BenchmarkToPodHandmade(b *testing.B) {
	b.Run("empty", func(b *testing.B) {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type:         ebpf.SchedCLS,
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
			License:      "Dual BSD/GPL",
		})
		require.NoError(b, err)
		b.Cleanup(func() { prog.Close() })
		benchmark(b, prog, in4(xV4, tcp(40000, 80, frames.TCPAck)), actNext)
	})
	b.Run("established", func(b *testing.B) {
		f := newFixture(b)
		frame := in4(xV4, tcp(40000, 80, frames.TCPAck))
		_, reason := f.toPod(frame)
		require.Equal(b, rsAllow, reason)
		_, reason = f.toPod(frame)
		require.Equal(b, rsEstablished, reason)
		benchmark(b, f.objs.ToPod, frame, actNext)
	})
	b.Run("reply", func(b *testing.B) {
		f := newFixture(b)
		f.fromPod(out4(worldV4, tcp(40000, 443, frames.TCPSyn)))
		frame := in4(worldV4, tcp(443, 40000, frames.TCPAck))
		_, reason := f.toPod(frame)
		require.Equal(b, rsReply, reason)
		benchmark(b, f.objs.ToPod, frame, actNext)
	})
	b.Run("new flow", func(b *testing.B) {
		f := newFixture(b, func(s *PodwallSpecs, _ *ebpf.CollectionSpec) {
			setVar(b, s.CtTimeoutTcpNs, uint64(0))
		})
		frame := in4(xV4, tcp(40000, 80, frames.TCPSyn))
		for range 2 {
			_, reason := f.toPod(frame)
			require.Equal(b, rsAllow, reason)
		}
		benchmark(b, f.objs.ToPod, frame, actNext)
	})
	b.Run("new flow v6", func(b *testing.B) {
		f := newFixture(b, func(s *PodwallSpecs, _ *ebpf.CollectionSpec) {
			setVar(b, s.CtTimeoutTcpNs, uint64(0))
		})
		frame := in6(allowedV6, tcp(40000, 443, frames.TCPSyn))
		for range 2 {
			_, reason := f.toPod(frame)
			require.Equal(b, rsAllow, reason)
		}
		benchmark(b, f.objs.ToPod, frame, actNext)
	})
	b.Run("no rule", func(b *testing.B) {
		f := newFixture(b)
		frame := in4(worldV4, tcp(40000, 8081, frames.TCPSyn))
		_, reason := f.toPod(frame)
		require.Equal(b, rsNoRule, reason)
		benchmark(b, f.objs.ToPod, frame, actShot)
	})
	b.Run("from_pod", func(b *testing.B) {
		f := newFixture(b)
		frame := out4(worldV4, tcp(40000, 443, frames.TCPAck))
		f.fromPod(out4(worldV4, tcp(40000, 443, frames.TCPSyn)))
		benchmark(b, f.objs.FromPod, frame, actNext)
	})
}

func benchmark(b *testing.B, prog *ebpf.Program, frame []byte, want uint32) {
	b.Helper()
	b.ResetTimer()
	ret, perRun, err := prog.Benchmark(frame, b.N, nil)
	require.NoError(b, err)
	require.Equal(b, want, ret)
	b.ReportMetric(float64(perRun.Nanoseconds()), "ns/op")
}
