package differential

import (
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// testRunAttr is the BPF_PROG_TEST_RUN part of union bpf_attr (include/uapi/linux/bpf.h).
type testRunAttr struct {
	progFD      uint32
	retval      uint32
	dataSizeIn  uint32
	dataSizeOut uint32
	dataIn      uint64
	dataOut     uint64
	repeat      uint32
	duration    uint32
	ctxSizeIn   uint32
	ctxSizeOut  uint32
	ctxIn       uint64
	ctxOut      uint64
	flags       uint32
	cpu         uint32
	batchSize   uint32
	_           uint32
}

const bpfProgTestRun = 10 // BPF_PROG_TEST_RUN

// testRun runs prog repeat times on data, with the context ctx (nil: none), through
// BPF_PROG_TEST_RUN, and returns what the last run returned and the kernel's time per run.
// It is Program.Benchmark with a context: without one, an skb's ingress_ifindex is 0, a
// packet the node's own stack sent, which to_pod passes before its classifier.
func testRun(prog *ebpf.Program, data, ctx []byte, repeat int) (uint32, time.Duration, error) {
	if repeat < 1 || repeat > 1<<32-1 {
		return 0, 0, fmt.Errorf("repeat %d out of range", repeat)
	}
	attr := testRunAttr{
		progFD:     uint32(prog.FD()),
		dataSizeIn: uint32(len(data)),
		dataIn:     uint64(uintptr(unsafe.Pointer(unsafe.SliceData(data)))),
		repeat:     uint32(repeat),
		ctxSizeIn:  uint32(len(ctx)),
	}
	if len(ctx) > 0 {
		attr.ctxIn = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(ctx))))
	}
	for range 100 {
		_, _, errno := unix.Syscall(unix.SYS_BPF, bpfProgTestRun, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		runtime.KeepAlive(data)
		runtime.KeepAlive(ctx)
		// A signal to the thread (the Go runtime's) interrupts the repeat: run it again.
		if errors.Is(errno, unix.EINTR) {
			continue
		}
		if errno != 0 {
			return 0, 0, fmt.Errorf("BPF_PROG_TEST_RUN: %w", errno)
		}
		return attr.retval, time.Duration(attr.duration), nil
	}
	return 0, 0, fmt.Errorf("BPF_PROG_TEST_RUN: interrupted 100 times")
}
