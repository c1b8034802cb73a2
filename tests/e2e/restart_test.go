package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
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
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/loader/loadertest"
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
	for _, mode := range loadertest.Modes(t) {
		t.Run(string(mode), func(t *testing.T) {
			c := newCluster(t, topo.Routed, mode)
			target := c.addPod(t, "target", nsProd, nil, policyOf("allow tcp to ports 8080; allow udp to ports 8080"))
			cl := c.tp.AddClient("client")
			c.apply(t)

			var streams, tcpStreams []*stream
			for _, a := range []netip.Addr{target.IPv4, target.IPv6} {
				s := openStream(t, cl.NS, "tcp", netip.AddrPortFrom(a, portWeb))
				tcpStreams = append(tcpStreams, s)
				streams = append(streams, s, openStream(t, cl.NS, "udp", netip.AddrPortFrom(a, portWeb)))
			}

			events := watchEvents(t, c)
			tr := newTraffic(t)
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
						// Only an answer proves the probe got through; an error other than
						// no answer (a probe that could not be sent) proves no drop either.
						switch err := send(); {
						case err == nil:
							return fmt.Errorf("denied probe to %s got through", to)
						case errors.Is(err, topo.ErrNoAnswer):
							return nil
						default:
							return fmt.Errorf("denied probe to %s: %w", to, err)
						}
					})
				}
			}

			before := c.stats(t)
			endpoint := c.endpoint(t, target)
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

			// The drop events first: when an allowed flow failed, they tell whether podwall
			// dropped it or it was only slow.
			evs := events()
			require.Empty(t, dropsTo(evs, portWeb), "drops of the allowed flows")
			require.Empty(t, failures)
			require.Positive(t, allowed.Load(), "allowed traffic ran")
			require.Positive(t, denied.Load(), "denied probes ran")
			require.Equal(t, mode, c.dp.Mode())
			require.Equal(t, []int{target.HostIfindex}, c.dp.Attached())
			// The restarted agent computes the same generation, so established flows are not
			// judged again, and their conntrack entries are the ones from before.
			require.Equal(t, endpoint, c.endpoint(t, target), "endpoint after the restarts")
			for _, s := range streams {
				e := c.conntrack(t, target, s)
				require.Equal(t, uint8(bpf.CTIn|bpf.CTAnswered), e.Flags, "conntrack flags of %s", s.name)
				require.Equal(t, endpoint.Generation, e.Generation, "conntrack generation of %s", s.name)
			}
			for _, r := range []bpf.Reason{bpf.ReasonEstablished, bpf.ReasonAllowRule, bpf.ReasonNoRule} {
				require.Greater(t, after[r], before[r], "%s counted on across restarts", r)
			}
			require.Equal(t, before[bpf.ReasonEventLost], after[bpf.ReasonEventLost], "every event was kept")
			require.NotEmpty(t, dropsTo(evs, portAlt), "the denied probes were reported")
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
	once     sync.Once
	wg       sync.WaitGroup
	mu       sync.Mutex
	failures []error
}

// newTraffic returns loops that are stopped when the test ends, if not before.
func newTraffic(t *testing.T) *traffic {
	tr := &traffic{done: make(chan struct{})}
	t.Cleanup(func() { tr.stop() })
	return tr
}

// loop runs round again and again, counting the rounds in n, until stop or until a round
// fails.
func (tr *traffic) loop(n *atomic.Int64, round func() error) {
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
	tr.once.Do(func() { close(tr.done) })
	tr.wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
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
	// Close interrupts the reader if the test ends before stop; it is a no-op after stop.
	t.Cleanup(func() {
		_ = rd.Close()
		<-done
	})
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
		if ev.Verdict == bpf.VerdictDrop && ev.Dport == netOrder(port) &&
			(ev.Proto == unix.IPPROTO_TCP || ev.Proto == unix.IPPROTO_UDP) {
			out = append(out, fmt.Sprintf("%s: %+v", bpf.Reason(ev.Reason), ev))
		}
	}
	return out
}

// endpoint reads a pod's entry of the endpoints map.
func (c *cluster) endpoint(t *testing.T, p *pod) bpf.PodwallEndpoint {
	t.Helper()
	var e bpf.PodwallEndpointEntry
	require.NoError(t, c.dp.Maps().Endpoints.Lookup(uint32(p.HostIfindex), &e), "look up endpoint of %s", p.Name)
	return e.Ep
}

// conntrack reads the conntrack entry of a stream to pod to, keyed from the pod's side.
func (c *cluster) conntrack(t *testing.T, to *pod, s *stream) bpf.PodwallCtEntry {
	t.Helper()
	local, remote := addrPort(s.conn.LocalAddr()), addrPort(s.conn.RemoteAddr())
	k := bpf.CtFlow{
		Pod:        remote.Addr().Unmap(),
		Remote:     local.Addr().Unmap(),
		PodPort:    netOrder(remote.Port()),
		RemotePort: netOrder(local.Port()),
		Proto:      unix.IPPROTO_UDP,
		Ifindex:    uint32(to.HostIfindex),
	}
	if _, ok := s.conn.(*net.TCPConn); ok {
		k.Proto = unix.IPPROTO_TCP
	}
	var e bpf.PodwallCtEntry
	m := c.dp.Maps()
	require.NoError(t, k.Table(m.Conntrack4, m.Conntrack6).Lookup(k.Key(), &e), "look up conntrack entry of %s", s.name)
	return e
}

func addrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort()
	}
	return a.(*net.TCPAddr).AddrPort()
}

// netOrder is a port in network byte order, as map keys hold it.
func netOrder(port uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, port))
}
