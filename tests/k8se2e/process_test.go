package k8se2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/tests/proc"
	"github.com/podwall/podwall/tests/topo"
)

// agentProcess is `podwall agent` watching the test's API server.
type agentProcess struct {
	cmd     *exec.Cmd
	out     *proc.Output
	ready   string
	metrics string // base URL of /metrics, /healthz and /readyz
	exited  chan error
	done    bool
}

// startAgent runs the podwall binary as the DaemonSet would, with its ServiceAccount's rights,
// and waits for its ready file.
// The process stays in the test's own network namespace, where kube-apiserver listens on
// loopback, and attaches in the node namespace (--netns): entering the node namespace with
// nsenter would cut it off from the API server, and joining the two namespaces would put a
// link in the machine's root namespace. Its metrics listen on loopback too.
func (e *env) startAgent(bin string, args ...string) *agentProcess {
	e.t.Helper()
	return e.startAgentOn(bin, nodeName, e.tp, e.bpffs, args...)
}

// startAgentOn is startAgent for the node called node, whose namespace is tp's, with its own
// bpffs folder.
func (e *env) startAgentOn(bin, node string, tp *topo.Topology, bpffs string, args ...string) *agentProcess {
	e.t.Helper()
	addr := freeAddr(e.t)
	p := &agentProcess{
		out:     &proc.Output{},
		ready:   filepath.Join(e.t.TempDir(), "ready"),
		metrics: "http://" + addr,
		exited:  make(chan error, 1),
	}
	p.cmd = exec.Command(bin, append([]string{"agent",
		"--kubeconfig", e.agentKubeconfig(), "--netns", tp.Node.Path, "--bpffs", bpffs,
		"--ready-file", p.ready, "--metrics-addr", addr, "--log-format", "console"}, args...)...)
	// The node name comes from the environment, as the DaemonSet's downward API gives it.
	p.cmd.Env = append(os.Environ(), "NODE_NAME="+node)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// The agent dies with the test binary, whatever ends it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(e.t, p.cmd.Start())
	go func() { p.exited <- p.cmd.Wait() }()
	e.t.Cleanup(func() {
		if !p.done {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if e.t.Failed() {
			e.t.Logf("agent output:\n%s", p.out)
		}
	})
	p.awaitReady(e.t)
	return p
}

func (p *agentProcess) awaitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(applyWait)
	for {
		if _, err := os.Stat(p.ready); err == nil {
			return
		}
		select {
		case err := <-p.exited:
			p.done = true
			t.Fatalf("agent exited (%v) before it was ready", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready after %s", applyWait)
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
		p.done = true
		require.NoError(t, err, "agent exit status")
	case <-time.After(10 * time.Second):
		t.Fatalf("agent did not exit on SIGTERM")
	}
}

// get fetches one of the agent's HTTP endpoints.
func (p *agentProcess) get(t *testing.T, path string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(p.metrics + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// metric reads one series from /metrics: its name, with its labels as the text format
// prints them (`podwall_verdicts_total{reason="allow-rule"}`).
func (p *agentProcess) metric(t *testing.T, series string) float64 {
	t.Helper()
	code, body := p.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			v, err := strconv.ParseFloat(value, 64)
			require.NoError(t, err, "value of %s", series)
			return v
		}
	}
	t.Fatalf("no series %s in /metrics", series)
	return 0
}

// freeAddr returns a loopback address with a TCP port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return fmt.Sprint(l.Addr())
}
