package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/tests/topo"
)

// restarts in a row, per attach mode.
var restarts = map[loader.Mode]int{loader.ModeTCX: 30, loader.ModeClsact: 15}

// probeWait is how long a denied probe of the restart test waits: short, to send many.
const probeWait = 50 * time.Millisecond

// TestRestartKeepsEnforcingWithoutLoss restarts the data path many times in a row (Close,
// then Open on the same pins and Apply of the same state, as an agent restart does) while
// traffic flows, and checks that enforcement never stops: the allowed flows (long-lived TCP
// and UDP streams, and new connections) lose no packet and see no error, and no probe to a
// denied port ever gets an answer.
func TestRestartKeepsEnforcingWithoutLoss(t *testing.T) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			c := newCluster(t, topo.Routed, mode)
			target := c.addPod(t, "target", nsProd, nil, policy("allow tcp to ports 8080; allow udp to ports 8080"))
			cl := c.tp.AddClient("client")
			c.apply(t)

			var streams, tcpStreams []*stream
			for _, a := range []netip.Addr{target.IPv4, target.IPv6} {
				s := openStream(t, cl.NS, "tcp", netip.AddrPortFrom(a, portWeb))
				tcpStreams = append(tcpStreams, s)
				streams = append(streams, s, openStream(t, cl.NS, "udp", netip.AddrPortFrom(a, portWeb)))
			}

			events := watchEvents(t, c)
			var tr traffic
			var allowed, denied atomic.Int64
			tr.loop(&allowed, func() error {
				for _, s := range streams {
					if err := s.echo(passWait); err != nil {
						return fmt.Errorf("allowed stream: %w", err)
					}
				}
				for _, a := range []netip.Addr{target.IPv4, target.IPv6} {
					to := netip.AddrPortFrom(a, portWeb)
					if err := topo.TCPEcho(cl.NS, to, topo.Timeout(passWait)); err != nil {
						return fmt.Errorf("allowed new tcp connection: %w", err)
					}
					if err := topo.UDPEcho(cl.NS, to, topo.Timeout(passWait)); err != nil {
						return fmt.Errorf("allowed new udp flow: %w", err)
					}
				}
				return nil
			})
			for _, a := range []netip.Addr{target.IPv4, target.IPv6} {
				to := netip.AddrPortFrom(a, portAlt)
				for _, send := range []func() error{
					func() error { return topo.TCPEcho(cl.NS, to, topo.Timeout(probeWait)) },
					func() error { return topo.UDPEcho(cl.NS, to, topo.Timeout(probeWait)) },
					func() error { return topo.Ping(cl.NS, a, topo.Timeout(probeWait)) },
				} {
					tr.loop(&denied, func() error {
						if err := send(); !errors.Is(err, topo.ErrNoAnswer) {
							return fmt.Errorf("denied probe to %s got through: %v", to, err)
						}
						return nil
					})
				}
			}

			before := c.stats(t)
			start := time.Now()
			for range restarts[mode] {
				c.restart(t)
			}
			elapsed := time.Since(start)
			// Traffic after the last restart goes through the last programs.
			time.Sleep(2 * probeWait)
			failures := tr.stop()
			after := c.stats(t)
			t.Logf("%d restarts in %s; %d rounds of allowed traffic, %d denied probes",
				restarts[mode], elapsed, allowed.Load(), denied.Load())

			require.Empty(t, failures)
			require.Positive(t, allowed.Load(), "allowed traffic ran")
			require.Positive(t, denied.Load(), "denied probes ran")
			require.Equal(t, mode, c.dp.Mode())
			require.Equal(t, []int{target.HostIfindex}, c.dp.Attached())
			for _, r := range []compiler.Reason{compiler.ReasonEstablished, compiler.ReasonAllowRule, compiler.ReasonNoRule} {
				require.Greater(t, after[r], before[r], "%s counted on across restarts", r)
			}
			require.Equal(t, before[compiler.ReasonEventLost], after[compiler.ReasonEventLost], "every event was kept")
			evs := events()
			require.NotEmpty(t, dropsTo(evs, portAlt), "the denied probes were reported")
			require.Empty(t, dropsTo(evs, portWeb), "drops of the allowed flows")
			for _, s := range tcpStreams {
				n, err := s.retransmits()
				require.NoError(t, err)
				require.Zero(t, n, "segments %s sent again", s.name)
			}
			for _, s := range streams {
				require.NoError(t, s.echo(passWait), "after the restarts")
			}
		})
	}
}

// traffic runs loops of exchanges at the same time until stopped.
type traffic struct {
	done     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	failures []error
}

// loop runs round again and again, counting the rounds in n, until stop or until a round
// fails.
func (tr *traffic) loop(n *atomic.Int64, round func() error) {
	if tr.done == nil {
		tr.done = make(chan struct{})
	}
	tr.wg.Go(func() {
		for {
			select {
			case <-tr.done:
				return
			default:
			}
			if err := round(); err != nil {
				tr.mu.Lock()
				tr.failures = append(tr.failures, err)
				tr.mu.Unlock()
				return
			}
			n.Add(1)
		}
	})
}

// stop ends the loops and returns their failures.
func (tr *traffic) stop() []error {
	close(tr.done)
	tr.wg.Wait()
	return tr.failures
}

// watchEvents reads the events of the data path while it restarts, through a map handle of
// its own, as an agent reading its events would: unread, the ring buffer fills up and the
// data path loses events. stop returns them all.
func watchEvents(t *testing.T, c *cluster) (stop func() []bpf.PodwallEvent) {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(loader.StateDir(c.cfg.BPFFS), "maps", bpf.PodwallMapEvents), nil)
	require.NoError(t, err, "open pinned events map")
	defer m.Close()
	rd, err := ringbuf.NewReader(m)
	require.NoError(t, err, "read events")
	var (
		events  []bpf.PodwallEvent
		readErr error
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			rec, err := rd.Read()
			if err != nil {
				if !errors.Is(err, ringbuf.ErrFlushed) {
					readErr = err
				}
				return
			}
			var ev bpf.PodwallEvent
			if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &ev); err != nil {
				readErr = fmt.Errorf("decode event: %w", err)
				return
			}
			events = append(events, ev)
		}
	}()
	return func() []bpf.PodwallEvent {
		require.NoError(t, rd.Flush(), "flush events")
		<-done
		require.NoError(t, rd.Close(), "close events reader")
		require.NoError(t, readErr, "read events")
		return events
	}
}

// dropsTo lists the events of dropped TCP or UDP packets to a port.
func dropsTo(events []bpf.PodwallEvent, port uint16) []string {
	var out []string
	for _, ev := range events {
		// Ports are in network byte order, as the packet has them.
		dport := binary.BigEndian.Uint16(binary.NativeEndian.AppendUint16(nil, ev.Dport))
		if ev.Verdict == compiler.VerdictDrop && dport == port &&
			(ev.Proto == unix.IPPROTO_TCP || ev.Proto == unix.IPPROTO_UDP) {
			out = append(out, fmt.Sprintf("%s: %+v", compiler.Reason(ev.Reason), ev))
		}
	}
	return out
}
