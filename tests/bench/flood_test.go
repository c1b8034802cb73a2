package bench

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/ipv4"

	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/tests/benchdoc"
)

// floodPolicy lets the client's TCP in and nothing else: the flood, UDP from the same client,
// meets no rule.
var floodPolicy = fmt.Sprintf("allow tcp from label app=%s", ClientLabel)

// The enforcers of the flood: podwall with tc alone and with XDP on the uplink, and the
// kernel's filters with the same policy.
const (
	floodTC  = "podwall, tc only"
	floodXDP = "podwall, XDP on the uplink"
)

var floodEnforcers = []string{floodTC, floodXDP, IPTables, NFTables}

// streamPort is the second iperf3 server of the pod, for the TCP stream beside the flood.
const streamPort = port + 1

var (
	floodSeconds = flag.Int("flood-seconds", 3, "duration of each flood, in seconds")
	floodStreams = flag.Int("flood-streams", 4, "sockets (source ports) the flood is sent from")
)

// floodResult is one run of one enforcer.
type floodResult struct {
	dropsPerSec   float64 // packets that entered the node and reached no pod, per second
	cpus          float64 // CPUs the whole machine was busy during the flood (sender included)
	softirq       float64 // of them, in softirq: the node's receive path, where filters run
	streamAlone   float64 // the TCP stream's bits per second without the flood
	streamFlooded float64 // and with it
}

// BenchmarkFlood sends a flood of 64-byte UDP datagrams that the pod's policy refuses into the
// node's uplink (from the client, a pod of another node, on several sockets), once per
// enforcer: podwall with tc alone, podwall with from_world (XDP, native, on the uplink veth),
// iptables with ipset and nftables with the same policy as Calico's Felix writes it. It
// reports the packets dropped per second, per CPU-second the machine spent (the sender's
// included: on veth the node's work runs in the sender's softirqs), and an allowed TCP
// stream's throughput to the pod with and without the flood. Run with -benchtime 1x.
func BenchmarkFlood(b *testing.B) {
	results := map[string][]floodResult{}
	setups := map[string]*setup{}
	for _, e := range floodEnforcers {
		enforcer := e
		if e == floodTC || e == floodXDP {
			enforcer = Podwall
		}
		s := newSetup(b, enforcer, true)
		s.serve(b)
		s.serveOn(b, streamPort)
		st, err := s.compile(floodPolicy)
		require.NoError(b, err)
		_, err = s.install(st)
		require.NoError(b, err, "install %s", e)
		if e == floodXDP {
			uplink, err := s.tp.Node.Handle().LinkByName(s.client.HostIfname)
			require.NoError(b, err)
			require.NoError(b, s.dp.AttachXDP(uplink.Attrs().Index, datapath.XDPNative))
		}
		setups[e] = s
	}
	for rep := range *repetitions {
		for i := range floodEnforcers {
			// Each round starts with another enforcer.
			e := floodEnforcers[(rep+i)%len(floodEnforcers)]
			r, err := setups[e].flood(*floodSeconds, *floodStreams)
			require.NoError(b, err, "flood %s", e)
			results[e] = append(results[e], r)
			progress("%-28s %8.0f drops/s  %.2f CPUs (%.2f softirq)  %8.0f drops per softirq CPU-s  stream %.3g -> %.3g bit/s",
				e, r.dropsPerSec, r.cpus, r.softirq, r.dropsPerSec/r.softirq, r.streamAlone, r.streamFlooded)
		}
	}
	if *benchmarksMD != "" {
		require.NoError(b, floodSection.Write(*benchmarksMD, floodMarkdown(results)))
	}
}

// flood measures the TCP stream alone, then the flood with the stream beside it.
func (s *setup) flood(seconds, streams int) (floodResult, error) {
	var r floodResult
	alone, err := s.stream(seconds)
	if err != nil {
		return r, fmt.Errorf("stream alone: %w", err)
	}
	r.streamAlone = alone
	sentBefore, err := s.clientTxPackets()
	if err != nil {
		return r, err
	}
	rxBefore, err := s.podRxPackets()
	if err != nil {
		return r, err
	}
	busyBefore, softBefore, totalBefore, err := cpuJiffies()
	if err != nil {
		return r, err
	}
	start := time.Now()
	var wg sync.WaitGroup
	var floodErr, streamErr error
	wg.Go(func() { floodErr = s.floodUDP(time.Duration(seconds)*time.Second, streams) })
	// The stream starts after the flood and ends before it.
	time.Sleep(500 * time.Millisecond)
	r.streamFlooded, streamErr = s.stream(max(1, seconds-1))
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	busyAfter, softAfter, totalAfter, err := cpuJiffies()
	if err := errors.Join(floodErr, streamErr, err); err != nil {
		return r, err
	}
	sentAfter, err := s.clientTxPackets()
	if err != nil {
		return r, err
	}
	rxAfter, err := s.podRxPackets()
	if err != nil {
		return r, err
	}
	// The stream's packets reach the pod; the flood's do not. What the client sent and the
	// pod did not get was dropped.
	r.dropsPerSec = float64((sentAfter-sentBefore)-(rxAfter-rxBefore)) / elapsed
	r.cpus = float64(busyAfter-busyBefore) / float64(totalAfter-totalBefore) * float64(runtime.NumCPU())
	r.softirq = float64(softAfter-softBefore) / float64(totalAfter-totalBefore) * float64(runtime.NumCPU())
	return r, nil
}

// floodPayload makes 64-byte frames: 14 bytes of Ethernet, 20 of IPv4, 8 of UDP, 18 of data,
// and the 4 of the frame check sequence a NIC adds.
const floodPayload = 18

// floodBatch is how many datagrams one sendmmsg sends.
const floodBatch = 64

// floodUDP sends 64-byte UDP datagrams from the client to the pod as fast as streams
// sockets (each its own source port, on its own goroutine) can, for d. iperf3 cannot: its UDP
// test needs the server to answer a first datagram, which the policy refuses.
func (s *setup) floodUDP(d time.Duration, streams int) error {
	to := &net.UDPAddr{IP: s.pod.IPv4.AsSlice(), Port: port}
	var conns []*net.UDPConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range streams {
		var c *net.UDPConn
		if err := s.client.NS.Do(func() (err error) { c, err = net.DialUDP("udp4", nil, to); return err }); err != nil {
			return err
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			// sendmmsg, floodBatch datagrams a call: the sender's syscalls would otherwise be
			// most of what the flood costs.
			pc := ipv4.NewPacketConn(c)
			batch := make([]ipv4.Message, floodBatch)
			for i := range batch {
				batch[i].Buffers = [][]byte{make([]byte, floodPayload)}
			}
			for time.Now().Before(deadline) {
				_, _ = pc.WriteBatch(batch, 0) // a refused or lost datagram is the point
			}
		})
	}
	wg.Wait()
	return nil
}

// stream is an iperf3 TCP stream from the client to the pod's second server, in bits per
// second received.
func (s *setup) stream(seconds int) (float64, error) {
	out, runErr := Run(s.client.NS.Path, "", "iperf3", "-c", s.pod.IPv4.String(), "-p", strconv.Itoa(streamPort),
		"-t", strconv.Itoa(seconds), "-J")
	res, err := ParseIperf(out)
	if err := errors.Join(runErr, err); err != nil {
		return 0, err
	}
	return res.ReceivedBitsPerSecond, nil
}

// clientTxPackets counts the packets the client sent into the node.
func (s *setup) clientTxPackets() (uint64, error) {
	link, err := s.client.NS.Handle().LinkByName("eth0")
	if err != nil {
		return 0, fmt.Errorf("find the client's eth0: %w", err)
	}
	return link.Attrs().Statistics.TxPackets, nil
}

// cpuJiffies reads the machine's busy, softirq and total CPU time from /proc/stat (all CPUs).
func cpuJiffies() (busy, softirq, total uint64, err error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	line := strings.SplitN(string(data), "\n", 2)[0]
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("parse /proc/stat: %w", err)
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
		if i == 6 {
			softirq = n
		}
	}
	return busy, softirq, total, nil
}

// Markers of BenchmarkFlood's section in docs/BENCHMARKS.md.
var floodSection = benchdoc.Section{
	Begin: "<!-- BEGIN BenchmarkFlood: generated by `make bench` (tests/bench), do not edit -->",
	End:   "<!-- END BenchmarkFlood -->",
}

// goalXDPRatio: XDP drops at least this many times the packets per CPU-second of tc alone;
// goalStreamKept: the stream keeps at least this share of its throughput under the flood.
const (
	goalXDPRatio   = 3
	goalStreamKept = 0.8
)

func floodMarkdown(results map[string][]floodResult) string {
	med := func(e string, f func(floodResult) float64) float64 {
		var v []float64
		for _, r := range results[e] {
			v = append(v, f(r))
		}
		return benchdoc.Median(v)
	}
	perCPU := func(r floodResult) float64 { return r.dropsPerSec / r.cpus }
	perSoftirq := func(r floodResult) float64 { return r.dropsPerSec / r.softirq }
	kept := func(r floodResult) float64 { return r.streamFlooded / r.streamAlone }
	base, baseSoft := med(floodTC, perCPU), med(floodTC, perSoftirq)
	var b strings.Builder
	fmt.Fprintf(&b, "### A flood the policy refuses, into the uplink\n\n")
	fmt.Fprintf(&b, "Measured %s on Linux %s, %s, nproc %d, with\n\n```\n%s\n```\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), benchdoc.KernelRelease(), benchdoc.CPUModel(), runtime.NumCPU(), floodCommand())
	fmt.Fprintf(&b, "The client (a pod of another node) floods the pod with 64-byte UDP frames (%d sockets, %d s) "+
		"that the pod's policy (`%s`) refuses, while an allowed TCP stream from the same client runs to the pod; "+
		"the medians of %d runs. Drops per CPU-second count the whole machine's CPU, the sender's included; drops per "+
		"softirq CPU-second count the node's receive path alone (on veth it runs in the sender's softirqs: /proc/stat's "+
		"softirq time), where the filters run and where XDP saves what it saves.\n\n",
		*floodStreams, *floodSeconds, floodPolicy, *repetitions)
	b.WriteString("| enforcer | drops/s | CPUs busy | of them softirq | drops per CPU-s | ÷ tc only | drops per softirq CPU-s | ÷ tc only | TCP stream alone | under the flood | kept |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, e := range floodEnforcers {
		fmt.Fprintf(&b, "| %s | %s | %.2f | %.2f | %s | %.2f | %s | %.2f | %.3g bit/s | %.3g bit/s | %.0f%% |\n", e,
			benchdoc.Thousands(int(med(e, func(r floodResult) float64 { return r.dropsPerSec }))),
			med(e, func(r floodResult) float64 { return r.cpus }),
			med(e, func(r floodResult) float64 { return r.softirq }),
			benchdoc.Thousands(int(med(e, perCPU))), med(e, perCPU)/base,
			benchdoc.Thousands(int(med(e, perSoftirq))), med(e, perSoftirq)/baseSoft,
			med(e, func(r floodResult) float64 { return r.streamAlone }),
			med(e, func(r floodResult) float64 { return r.streamFlooded }), 100*med(e, kept))
	}
	ratio := med(floodXDP, perSoftirq) / baseSoft
	keptXDP := med(floodXDP, kept)
	fmt.Fprintf(&b, "\nGoals: XDP drops at least %dx the packets per (softirq) CPU-second of tc alone: %.2fx, %s; "+
		"with XDP the stream keeps at least %.0f%% of its throughput under the flood: %.0f%%, %s.\n",
		goalXDPRatio, ratio, metWord(ratio >= goalXDPRatio), 100*goalStreamKept, 100*keptXDP, metWord(keptXDP >= goalStreamKept))
	return b.String()
}

func metWord(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func floodCommand() string {
	return fmt.Sprintf("go test -run '^$' -bench '^BenchmarkFlood$' -benchtime 1x -timeout 30m . -args -benchmarks-md %s -repetitions %d -flood-seconds %d -flood-streams %d",
		benchdoc.ShellQuote(*benchmarksMD), *repetitions, *floodSeconds, *floodStreams)
}
