// Command testpod is the test node's pod: it echoes TCP and UDP on the ports it is given and,
// on its control port, makes connections on request and counts packets of long-running
// streams, so a test judges the policy from inside a real pod.
//
//	testpod -ports 80,443,8080
//
// Control API (HTTP, answers in JSON):
//
//	GET /healthz                                  200, for the kubelet's probes
//	GET /probe?proto=tcp|udp&to=IP:PORT&wait=DUR  one exchange: "echo", "refused" or "timeout"
//	GET /stream/start?tcp=IP:PORT&udp=IP:PORT&denied=IP:PORT&every=DUR
//	                                              starts sending a numbered message every DUR
//	GET /stream/stop                              stops and returns the counters
//
// A probe reports "refused" apart from "timeout" because a refusal means the packet got
// through: a denied exchange must time out.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/podwall/podwall/tests/node/podapi"
)

func main() {
	ports := flag.String("ports", "80,443,8080", "the TCP and UDP ports to echo on, comma-separated")
	control := flag.Int("control", podapi.ControlPort, "the control API's port")
	flag.Parse()
	for _, p := range strings.Split(*ports, ",") {
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			log.Fatalf("port %q: %v", p, err)
		}
		go echoTCP(":" + p)
		go echoUDP(":" + p)
	}
	s := &streams{}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/probe", probe)
	mux.HandleFunc("/stream/start", s.start)
	mux.HandleFunc("/stream/stop", s.stop)
	srv := &http.Server{Addr: ":" + strconv.Itoa(*control), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

func echoTCP(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatalf("listen tcp %s: %v", addr, err)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			log.Printf("accept on %s: %v", addr, err)
			continue
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

func echoUDP(addr string) {
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		log.Fatalf("listen udp %s: %v", addr, err)
	}
	buf := make([]byte, 64<<10)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			log.Printf("read on %s: %v", addr, err)
			continue
		}
		_, _ = c.WriteTo(buf[:n], from)
	}
}

// exchange sends one line to addr and waits up to wait for it to come back.
func exchange(proto, addr string, wait time.Duration) string {
	deadline := time.Now().Add(wait)
	c, err := net.DialTimeout(proto, addr, wait) //nolint:gosec // G704: the test pod dials where the test asks
	if err != nil {
		return outcome(err)
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	const msg = "podwall-probe\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		return outcome(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return outcome(err)
	}
	if string(buf) != msg {
		return "garbled"
	}
	return podapi.Echo
}

func outcome(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return podapi.Refused
	case errors.As(err, &ne) && ne.Timeout():
		return podapi.Timeout
	default:
		return "error: " + err.Error()
	}
}

func probe(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	proto := q.Get("proto")
	if proto != "tcp" && proto != "udp" {
		http.Error(w, "proto must be tcp or udp", http.StatusBadRequest)
		return
	}
	wait, err := time.ParseDuration(q.Get("wait"))
	if err != nil {
		http.Error(w, "wait: "+err.Error(), http.StatusBadRequest)
		return
	}
	reply(w, podapi.Probe{Outcome: exchange(proto, q.Get("to"), wait)})
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Printf("reply: %v", err)
	}
}

// Counters are what a stream saw; a message counts as echoed when its own number comes back.
type Counters struct {
	TCPSent, TCPEchoed, TCPErrors int64
	UDPSent, UDPEchoed            int64
	DeniedSent, DeniedEchoed      int64
	LongestTCPWait                time.Duration
	FirstTCPError                 string
}

type streams struct {
	mu      sync.Mutex
	running bool
	stopc   chan struct{}
	wg      sync.WaitGroup
	c       struct {
		tcpSent, tcpEchoed, tcpErrors, udpSent, udpEchoed, deniedSent, deniedEchoed atomic.Int64
		longest                                                                     atomic.Int64
		firstErr                                                                    atomic.Value
	}
}

func (s *streams) start(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	every, err := time.ParseDuration(q.Get("every"))
	if err != nil || every <= 0 {
		http.Error(w, "every: a positive duration", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		http.Error(w, "a stream runs already", http.StatusConflict)
		return
	}
	tcp, err := net.DialTimeout("tcp", q.Get("tcp"), 5*time.Second) //nolint:gosec // G704: as the test asks
	if err != nil {
		http.Error(w, "tcp: "+err.Error(), http.StatusBadGateway)
		return
	}
	udp, err := net.Dial("udp", q.Get("udp")) //nolint:gosec // G704: as the test asks
	if err != nil {
		tcp.Close()
		http.Error(w, "udp: "+err.Error(), http.StatusBadGateway)
		return
	}
	denied, err := net.Dial("udp", q.Get("denied")) //nolint:gosec // G704: as the test asks
	if err != nil {
		tcp.Close()
		udp.Close()
		http.Error(w, "denied: "+err.Error(), http.StatusBadGateway)
		return
	}
	s.running, s.stopc = true, make(chan struct{})
	s.wg.Add(3)
	go s.tcpStream(tcp, every)
	go s.udpStream(udp, every, &s.c.udpSent, &s.c.udpEchoed)
	go s.udpStream(denied, every, &s.c.deniedSent, &s.c.deniedEchoed)
	reply(w, map[string]string{"started": "ok"})
}

// tcpStream writes a numbered line every interval and reads each back before the next: a
// connection reset, or a line that never comes back, is an error.
func (s *streams) tcpStream(c net.Conn, every time.Duration) {
	defer s.wg.Done()
	defer c.Close()
	rd := bufio.NewReader(c)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-s.stopc:
			return
		case <-tick.C:
		}
		line := fmt.Sprintf("%d\n", n)
		sent := time.Now()
		_ = c.SetDeadline(sent.Add(30 * time.Second))
		s.c.tcpSent.Add(1)
		if _, err := c.Write([]byte(line)); err != nil {
			s.tcpError(err)
			return
		}
		got, err := rd.ReadString('\n')
		if err != nil {
			s.tcpError(err)
			return
		}
		if got != line {
			s.tcpError(fmt.Errorf("sent %q, got %q back", line, got))
			return
		}
		s.c.tcpEchoed.Add(1)
		if d := int64(time.Since(sent)); d > s.c.longest.Load() {
			s.c.longest.Store(d)
		}
	}
}

func (s *streams) tcpError(err error) {
	s.c.tcpErrors.Add(1)
	s.c.firstErr.CompareAndSwap(nil, err.Error())
}

// udpStream sends a numbered datagram every interval and counts those that come back, read
// by a goroutine of its own so that a lost datagram never stalls the sender.
func (s *streams) udpStream(c net.Conn, every time.Duration, sent, echoed *atomic.Int64) {
	defer s.wg.Done()
	defer c.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			if _, err := c.Read(buf); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // an ICMP error from a refused datagram: it is not an echo
			}
			echoed.Add(1)
		}
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-s.stopc:
			// Let the last echoes arrive, then close, which ends the reader.
			time.Sleep(time.Second)
			c.Close()
			<-done
			return
		case <-tick.C:
		}
		if _, err := fmt.Fprintf(c, "%d\n", n); err == nil {
			sent.Add(1)
		}
	}
}

func (s *streams) stop(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		http.Error(w, "no stream runs", http.StatusConflict)
		return
	}
	close(s.stopc)
	s.wg.Wait()
	s.running = false
	first, _ := s.c.firstErr.Load().(string)
	reply(w, podapi.Counters{
		TCPSent: s.c.tcpSent.Load(), TCPEchoed: s.c.tcpEchoed.Load(), TCPErrors: s.c.tcpErrors.Load(),
		UDPSent: s.c.udpSent.Load(), UDPEchoed: s.c.udpEchoed.Load(),
		DeniedSent: s.c.deniedSent.Load(), DeniedEchoed: s.c.deniedEchoed.Load(),
		LongestTCPWait: time.Duration(s.c.longest.Load()), FirstTCPError: first,
	})
}
