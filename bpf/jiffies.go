package bpf

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// ErrUnknownHZ means the kernel's tick rate measured as none of the CONFIG_HZ values.
var ErrUnknownHZ = errors.New("kernel tick rate is not a known CONFIG_HZ")

// kernelHZ are the CONFIG_HZ choices of x86 and arm64.
var kernelHZ = []float64{100, 250, 300, 1000}

// JiffyNS is the kernel's tick in ns (1e9 / CONFIG_HZ), the value of the programs' jiffy_ns:
// set, conntrack counts time in jiffies, which cost a packet nothing where a clock read is a
// helper call. The kernel exports CONFIG_HZ nowhere reliable, so it is measured once per
// process: a probe program reads jiffies twice, 100 ms apart on the monotonic clock, and the
// rate is rounded to the nearest CONFIG_HZ choice (off by at most one tick in 25 at HZ 250).
var JiffyNS = sync.OnceValues(measureJiffyNS)

func measureJiffyNS() (uint64, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS,
		// Returns the low 32 bits of jiffies: enough for a difference.
		Instructions: asm.Instructions{asm.FnJiffies64.Call(), asm.Return()},
		License:      "Dual BSD/GPL",
	})
	if err != nil {
		return 0, fmt.Errorf("load jiffies probe: %w", err)
	}
	defer prog.Close()
	read := func() (uint32, time.Time, error) {
		j, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 14)})
		return j, time.Now(), err
	}
	j0, t0, err := read()
	if err != nil {
		return 0, fmt.Errorf("run jiffies probe: %w", err)
	}
	time.Sleep(100 * time.Millisecond)
	j1, t1, err := read()
	if err != nil {
		return 0, fmt.Errorf("run jiffies probe: %w", err)
	}
	rate := float64(j1-j0) / t1.Sub(t0).Seconds()
	for _, hz := range kernelHZ {
		if math.Abs(rate-hz) <= hz/10 {
			return uint64(math.Round(1e9 / hz)), nil
		}
	}
	return 0, fmt.Errorf("%.0f ticks a second: %w", rate, ErrUnknownHZ)
}
