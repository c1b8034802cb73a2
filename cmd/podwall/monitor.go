package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/spf13/cobra"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/loader"
)

func newMonitorCmd(d deps) *cobra.Command {
	var (
		bpffs string
		count int
	)
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Print the data path's drops and newly allowed flows as they happen",
		Long: `Print the events of the data path, one a line: every dropped packet and the first packet
of every inbound flow a rule allowed, with the reason and the deciding rule (rule N is the
Nth rule of the pod's annotation; under the namespace default, rule 1 is that default).
Events are rate limited in the kernel; what the limit dropped is counted in the stats as
event-lost (podwall maps stats). Run one monitor at a time: readers of one ring buffer share
its position.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path := filepath.Join(loader.StateDir(bpffs), "maps", bpf.PodwallMapEvents)
			m, err := ebpf.LoadPinnedMap(path, nil)
			if err != nil {
				return fmt.Errorf("open pinned map %s: %w", path, err)
			}
			defer m.Close()
			r, err := ringbuf.NewReader(m)
			if err != nil {
				return fmt.Errorf("read ring buffer %s: %w", path, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			go func() {
				<-ctx.Done()
				_ = r.Close() // ends the Read that monitor waits in
			}()
			return monitor(r, d.stdout, count)
		},
	}
	cmd.Flags().StringVar(&bpffs, "bpffs", loader.DefaultBPFFS, "the bpffs mount holding podwall's pinned state")
	cmd.Flags().IntVarP(&count, "count", "c", 0, "exit after this many events (0: until interrupted)")
	return cmd
}

// monitor prints events until the reader is closed or count events were printed.
func monitor(r *ringbuf.Reader, out io.Writer, count int) error {
	var rec ringbuf.Record
	for n := 0; count == 0 || n < count; n++ {
		if err := r.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read event: %w", err)
		}
		var ev bpf.PodwallEvent
		if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &ev); err != nil {
			return fmt.Errorf("decode event of %d bytes: %w", len(rec.RawSample), err)
		}
		if _, err := fmt.Fprintln(out, formatEvent(ev, time.Now())); err != nil {
			return err
		}
	}
	return nil
}

var protoNames = map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}

// formatEvent is one line of `podwall monitor`, stamped with when it was read: the kernel's
// timestamp is monotonic, not wall-clock time.
func formatEvent(ev bpf.PodwallEvent, now time.Time) string {
	verdict := "PASS"
	if ev.Verdict != bpf.VerdictPass {
		verdict = "DROP"
	}
	proto, ok := protoNames[ev.Proto]
	if !ok {
		proto = fmt.Sprintf("proto-%d", ev.Proto)
	}
	src, dst := compiler.KeyAddr(ev.Src), compiler.KeyAddr(ev.Dst)
	// Ports are in network byte order; for ICMP the source "port" holds type and code.
	sport, dport := ntohs(ev.Sport), ntohs(ev.Dport)
	var flow string
	switch ev.Proto {
	case 6, 17:
		flow = fmt.Sprintf("%s -> %s", addrPort(src, sport), addrPort(dst, dport))
	case 1, 58:
		flow = fmt.Sprintf("%s -> %s type %d code %d", src, dst, sport>>8, sport&0xff)
	default:
		flow = fmt.Sprintf("%s -> %s", src, dst)
	}
	// at=tc: on the pod's interface; at=xdp: at an uplink, before the kernel built an skb
	// (if= is still the pod's interface, whose policy decided).
	at := "tc"
	if ev.Hook == bpf.HookXDP {
		at = "xdp"
	}
	line := fmt.Sprintf("%s %s %-12s at=%s if=%d %s %s identity=%s", now.Format("15:04:05.000"), verdict,
		bpf.Reason(ev.Reason), at, ev.Ifindex, proto, flow, identityName(ev.Identity))
	if r := bpf.Reason(ev.Reason); r == bpf.ReasonAllowRule || r == bpf.ReasonDenyRule {
		line += fmt.Sprintf(" policy=%#08x rule=%d", ev.Policy, ev.Rule+1)
	}
	return line
}

func ntohs(v uint16) uint16 { return v>>8 | v<<8 }

func addrPort(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }
