package bpf

import (
	"errors"
	"fmt"
	"math"
	"strings"
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
// process: a probe program reads jiffies twice, a window apart on the monotonic clock, and the
// rate is rounded to the nearest CONFIG_HZ choice.
//
// A wrong answer would make every conntrack timeout wrong by up to 10x, and one window can
// mislead: on a loaded or emulated machine the tick can run late and catch up, so the jiffies
// at either end lag the clock by a few ticks. So windows are measured until two agree on the
// CONFIG_HZ, at most jiffyWindows of them.
var JiffyNS = sync.OnceValues(measureJiffyNS)

const (
	// jiffyWindow is long enough that the tick at either end costs at most 5% (one tick in
	// 20 at HZ 100), well inside the tolerance, and that a lag of 10 ms is still recognised.
	jiffyWindow = 200 * time.Millisecond
	// jiffyWindows bounds the measurement: about a second when every window disagrees.
	jiffyWindows = 5
)

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
		if err != nil {
			return 0, time.Time{}, fmt.Errorf("run jiffies probe: %w", err)
		}
		return j, time.Now(), nil
	}
	seen := map[float64]bool{}
	var rates []string
	for range jiffyWindows {
		j0, t0, err := read()
		if err != nil {
			return 0, err
		}
		time.Sleep(jiffyWindow)
		j1, t1, err := read()
		if err != nil {
			return 0, err
		}
		rate := float64(j1-j0) / t1.Sub(t0).Seconds()
		rates = append(rates, fmt.Sprintf("%.0f", rate))
		hz, ok := nearestHZ(rate)
		if !ok {
			continue
		}
		if seen[hz] {
			return uint64(math.Round(1e9 / hz)), nil
		}
		seen[hz] = true
	}
	return 0, fmt.Errorf("ticks a second in %d windows of %v: %s: %w",
		jiffyWindows, jiffyWindow, strings.Join(rates, ", "), ErrUnknownHZ)
}

// nearestHZ is the CONFIG_HZ choice a measured rate is within 8% of: the choices closest
// together, 250 and 300, are 20% apart, so no rate matches two.
func nearestHZ(rate float64) (float64, bool) {
	for _, hz := range kernelHZ {
		if math.Abs(rate-hz) <= hz*0.08 {
			return hz, true
		}
	}
	return 0, false
}
