package standalone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/tests/proc"
	"github.com/podwall/podwall/tests/topo"
)

// agentProcess is `podwall agent` running in the node namespace, entered with nsenter (not
// `ip netns exec`, which would hide the host's bpffs).
type agentProcess struct {
	cmd    *exec.Cmd
	out    *proc.Output
	ready  string
	exited chan error
}

const metricsAddr = "127.0.0.1:9402"

func (c *cluster) startBinary(bin string, args ...string) *agentProcess {
	c.t.Helper()
	return c.startWrapped(nil, bin, append([]string{"--bpffs", c.bpffs}, args...)...)
}

// nodeCommand runs `podwall agent` in the node namespace, under wrap (a command that runs its
// arguments) if any.
func (c *cluster) nodeCommand(wrap []string, bin string, args ...string) *exec.Cmd {
	argv := append([]string{"--net=" + c.tp.Node.Path, "--"}, wrap...)
	cmd := exec.Command("nsenter", append(append(argv, bin, "agent"), args...)...)
	// The node name comes from the environment, as the DaemonSet's downward API gives it.
	cmd.Env = append(os.Environ(), "NODE_NAME="+nodeName)
	return cmd
}

// startWrapped starts the agent on the cluster's pods file (nodeCommand) and waits until it
// is ready.
func (c *cluster) startWrapped(wrap []string, bin string, args ...string) *agentProcess {
	c.t.Helper()
	p := &agentProcess{out: &proc.Output{}, ready: filepath.Join(c.t.TempDir(), "ready"), exited: make(chan error, 1)}
	p.cmd = c.nodeCommand(wrap, bin, append([]string{"--pods-file", c.file, "--ready-file", p.ready,
		"--metrics-addr", metricsAddr, "--log-format", "console"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(c.t, p.cmd.Start())
	go func() { p.exited <- p.cmd.Wait() }()
	c.t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	deadline := time.Now().Add(applyWait)
	for {
		if _, err := os.Stat(p.ready); err == nil {
			return p
		}
		select {
		case err := <-p.exited:
			c.t.Fatalf("agent exited (%v) before it was ready:\n%s", err, p.out)
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("agent not ready after %s:\n%s", applyWait, p.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// terminate sends SIGTERM and waits for a clean exit.
func (p *agentProcess) terminate(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.exited:
		require.NoError(t, err, "agent exit status; output:\n%s", p.out)
	case <-time.After(10 * time.Second):
		t.Fatalf("agent did not exit on SIGTERM:\n%s", p.out)
	}
}

// httpGet fetches a URL from inside ns.
func httpGet(t *testing.T, ns *topo.Netns, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := ns.Do(func() error {
				var err error
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// TestRestartAndUninstall runs the podwall binary, restarts it while traffic flows (no
// allowed packet may be lost, no denied one may pass), then uninstalls it.
func TestRestartAndUninstall(t *testing.T) {
	bin := proc.BuildPodwall(t)
	c := newCluster(t, topo.Routed)
	api, web, worker := c.addPod("api"), c.addPod("web"), c.addPod("worker")
	c.write([]podSpec{
		{ns: "shop", name: "api", tp: api, labels: map[string]string{"role": "backend"},
			annotations: policyOf("allow udp from label role=frontend to ports 8080; allow tcp from label role=frontend")},
		{ns: "shop", name: "web", tp: web, labels: map[string]string{"role": "frontend"}},
		{ns: "shop", name: "worker", tp: worker, labels: map[string]string{"role": "worker"}},
	}, "shop")

	first := c.startBinary(bin)
	c.awaitApplied(defaults)
	code, body := httpGet(t, c.tp.Node, "http://"+metricsAddr+"/readyz")
	require.Equal(t, http.StatusOK, code, body)
	code, _ = httpGet(t, c.tp.Node, "http://"+metricsAddr+"/healthz")
	require.Equal(t, http.StatusOK, code)
	topo.Expect(t,
		topo.UDP("frontend to api: rule 1 allows", web.NS, none, api.IPv4, port, true),
		topo.UDP("worker to api: no rule", worker.NS, none, api.IPv4, port, false),
	)
	_, metrics := httpGet(t, c.tp.Node, "http://"+metricsAddr+"/metrics")
	require.Contains(t, metrics, "podwall_endpoints 3\n")
	require.Contains(t, metrics, `podwall_verdicts_total{reason="allow-rule"}`)
	require.Contains(t, metrics, `podwall_map_entries{map="endpoints"} 3`+"\n")

	// An established connection, and a stream of new flows both allowed and denied.
	conn, err := topo.DialTCP(t, web.NS, netip.AddrPortFrom(api.IPv4, otherPort))
	require.NoError(t, err)
	var allowed, lost, denied, passed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// until runs probe again and again until stop is closed.
	until := func(probe func()) {
		for {
			select {
			case <-stop:
				return
			default:
			}
			probe()
		}
	}
	wg.Go(func() {
		until(func() {
			if err := topo.UDPEcho(web.NS, netip.AddrPortFrom(api.IPv4, port), topo.Timeout(time.Second)); err != nil {
				lost.Add(1)
				firstErr.CompareAndSwap(nil, err)
			} else {
				allowed.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		})
	})
	wg.Go(func() {
		until(func() {
			err := topo.UDPEcho(worker.NS, netip.AddrPortFrom(api.IPv6, port), topo.Timeout(50*time.Millisecond))
			if errors.Is(err, topo.ErrNoAnswer) {
				denied.Add(1)
			} else {
				passed.Add(1)
			}
		})
	})
	time.Sleep(200 * time.Millisecond)
	first.terminate(t)
	require.Contains(t, first.out.String(), "enforcement stays pinned")
	// No agent: the pinned programs and maps keep enforcing.
	time.Sleep(300 * time.Millisecond)
	c.awaitApplied(defaults)
	// Restarted with bigger maps: the pinned ones are copied into maps of the new sizes
	// under traffic.
	second := c.startBinary(bin, "--map-size", "endpoints=8192,ipcache=524288", "--conntrack-size", "131072")
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	require.Zero(t, lost.Load(), "allowed exchanges lost (of %d); first: %v", allowed.Load()+lost.Load(), firstErr.Load())
	require.Zero(t, passed.Load(), "denied exchanges that passed (of %d)", denied.Load()+passed.Load())
	require.Greater(t, allowed.Load(), int64(20))
	require.Greater(t, denied.Load(), int64(5))
	require.NoError(t, conn.Echo(), "the established connection survived the restart")
	c.awaitApplied(defaults)
	require.True(t, strings.Contains(second.out.String(), "took over attachment"), "the second agent took the pinned links over:\n%s", second.out)
	require.Regexp(t, `resizing pinned map.*"map": "conntrack4".*"to": 131072`, second.out.String())
	require.Regexp(t, `resizing pinned map.*"map": "conntrack6".*"to": 131072`, second.out.String())
	_, metrics = httpGet(t, c.tp.Node, "http://"+metricsAddr+"/metrics")
	require.Contains(t, metrics, `podwall_map_capacity{map="endpoints"} 8192`+"\n")
	require.Contains(t, metrics, `podwall_map_capacity{map="ipcache"} 524288`+"\n")

	// Uninstall needs the agent stopped: it holds the pinned state.
	second.terminate(t)
	out, err := exec.Command("nsenter", "--net="+c.tp.Node.Path, "--", bin, "agent", "--uninstall", "--bpffs", c.bpffs).CombinedOutput()
	require.NoError(t, err, "uninstall: %s", out)
	_, err = os.Stat(loader.StateDir(c.bpffs))
	require.ErrorIs(t, err, os.ErrNotExist, "pinned state removed")
	_, err = os.Stat(filepath.Dir(loader.StateDir(c.bpffs)))
	require.ErrorIs(t, err, os.ErrNotExist, "podwall's folder removed")
	topo.Expect(t,
		topo.UDP("worker to api: nothing guards it any more", worker.NS, none, api.IPv4, port, true),
		topo.TCP("worker to api over TCP: nothing guards it any more", worker.NS, none, api.IPv6, otherPort, true),
	)
}
