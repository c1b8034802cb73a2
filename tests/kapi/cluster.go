package kapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/podwall/podwall/tests/proc"
)

const (
	// readyTimeout bounds a server start; cached, a start takes a few seconds, but the
	// machine is small and shared with compilers.
	readyTimeout = 2 * time.Minute
	pollInterval = 100 * time.Millisecond
	logTailLines = 40
)

// Cluster is a running etcd and kube-apiserver, reachable as the admin user.
type Cluster struct {
	// Kubeconfig is the path of a kubeconfig file for the admin user, for kubectl and for
	// code under test that takes --kubeconfig.
	Kubeconfig string
	// RESTConfig is the admin's client configuration, without client-side rate limits.
	RESTConfig *rest.Config
	// Client is a clientset made from RESTConfig.
	Client kubernetes.Interface
	// KubectlPath is a kubectl binary of the same version.
	KubectlPath string

	bins          binaries
	dir           string
	etcd          *proc.Server
	etcdURL       string
	apiserver     *proc.Server
	apiserverArgs []string
	apiserverRuns int // names each run's log file
}

// Start starts etcd and kube-apiserver for the test and returns once kube-apiserver is
// ready. Cleanup stops both and removes their state.
func Start(tb testing.TB) *Cluster {
	tb.Helper()
	c := &Cluster{bins: findBinaries(tb), dir: tb.TempDir()}
	c.KubectlPath = c.bins.kubectl
	// Cleanups run last-registered first: kube-apiserver stops, then etcd, then the logs
	// of a failed test are shown, then the temp dir goes.
	tb.Cleanup(func() { c.logOnFailure(tb) })
	tb.Cleanup(func() { stopLogged(tb, c.etcd) })
	tb.Cleanup(func() { stopLogged(tb, c.apiserver) })

	c.startEtcd(tb)

	keys, err := writePKI(c.dir)
	if err != nil {
		tb.Fatalf("kapi: %v", err)
	}
	port, err := freePort()
	if err != nil {
		tb.Fatalf("kapi: %v", err)
	}
	c.apiserverArgs = []string{
		"--etcd-servers=" + c.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + keys.servingCert,
		"--tls-private-key-file=" + keys.servingKey,
		"--token-auth-file=" + keys.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + keys.saKey,
		"--service-account-signing-key-file=" + keys.saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		// No controller manager makes the service-account tokens this plugin waits for.
		"--disable-admission-plugins=ServiceAccount",
		// Nothing would keep the kubernetes Service's endpoints alive.
		"--endpoint-reconciler-type=none",
		// Without it, a SIGTERM leaves open watches to the HTTP server's shutdown timeout
		// (a minute); with it, they are ended at once and the process exits in about a
		// second.
		"--shutdown-watch-termination-grace-period=5s",
		// The agent runs as a privileged DaemonSet; tests may create pods like it.
		"--allow-privileged=true",
	}

	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	host := "https://127.0.0.1:" + strconv.Itoa(port)
	if err := WriteKubeconfig(c.Kubeconfig, host, keys.caData, keys.adminToken); err != nil {
		tb.Fatalf("kapi: %v", err)
	}
	// Read back rather than built by hand, so the file kubectl uses is the one tested.
	c.RESTConfig, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		tb.Fatalf("kapi: load kubeconfig: %v", err)
	}
	// A negative QPS turns client-go's rate limiter off: tests and benchmarks create
	// thousands of objects, and the default of 5 per second would dominate them.
	c.RESTConfig.QPS = -1
	c.Client, err = kubernetes.NewForConfig(c.RESTConfig)
	if err != nil {
		tb.Fatalf("kapi: make clientset: %v", err)
	}

	c.startAPIServer(tb)
	return c
}

// RestartAPIServer stops kube-apiserver and starts it again on the same port, with the
// same etcd and credentials, and returns once it is ready. Every open watch is cut, so a
// test can check that a client resyncs; Kubeconfig, RESTConfig and Client stay valid.
func (c *Cluster) RestartAPIServer(tb testing.TB) {
	tb.Helper()
	if killed := c.apiserver.Stop(); killed {
		tb.Logf("kapi: kube-apiserver ignored SIGTERM for %v and was killed", proc.StopTimeout)
	}
	c.startAPIServer(tb)
}

func (c *Cluster) startEtcd(tb testing.TB) {
	tb.Helper()
	clientPort, err := freePort()
	if err != nil {
		tb.Fatalf("kapi: %v", err)
	}
	peerPort, err := freePort()
	if err != nil {
		tb.Fatalf("kapi: %v", err)
	}
	c.etcdURL = "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	args := []string{
		"--name=podwall-test",
		"--data-dir=" + filepath.Join(c.dir, "etcd"),
		"--listen-client-urls=" + c.etcdURL,
		"--advertise-client-urls=" + c.etcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=podwall-test=" + peerURL,
		// The data dies with the test; fsync would only slow every write.
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
	c.etcd, err = proc.StartServer("etcd", filepath.Join(c.dir, "etcd.log"), append([]string{c.bins.etcd}, args...)...)
	if err != nil {
		tb.Fatalf("kapi: %v", err)
	}
	httpc := &http.Client{Timeout: time.Second}
	c.waitReady(tb, c.etcd, func(ctx context.Context) bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.etcdURL+"/health", nil)
		if err != nil {
			return false
		}
		resp, err := httpc.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	})
}

func (c *Cluster) startAPIServer(tb testing.TB) {
	tb.Helper()
	c.apiserverRuns++
	logPath := filepath.Join(c.dir, fmt.Sprintf("kube-apiserver.%d.log", c.apiserverRuns))
	var err error
	c.apiserver, err = proc.StartServer("kube-apiserver", logPath, append([]string{c.bins.apiserver}, c.apiserverArgs...)...)
	if err != nil {
		tb.Fatalf("kapi: %v", err)
	}
	rc := c.Client.Discovery().RESTClient()
	c.waitReady(tb, c.apiserver, func(ctx context.Context) bool {
		body, err := rc.Get().AbsPath("/readyz").Timeout(time.Second).DoRaw(ctx)
		return err == nil && string(body) == "ok"
	})
}

// waitReady polls ready until it holds, failing the test when the process exits first or
// readyTimeout passes.
func (c *Cluster) waitReady(tb testing.TB, p *proc.Server, ready func(context.Context) bool) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !ready(ctx) {
		select {
		case <-p.Done():
			tb.Fatalf("kapi: %s exited before it was ready (%v); last lines of %s:\n%s",
				p.Name, p.Err(), p.Log, p.LogTail(logTailLines))
		case <-ctx.Done():
			tb.Fatalf("kapi: %s not ready after %v; last lines of %s:\n%s",
				p.Name, readyTimeout, p.Log, p.LogTail(logTailLines))
		case <-tick.C:
		}
	}
}

func stopLogged(tb testing.TB, p *proc.Server) {
	if p == nil {
		return
	}
	if killed := p.Stop(); killed {
		tb.Logf("kapi: %s ignored SIGTERM for %v and was killed", p.Name, proc.StopTimeout)
	}
}

// logOnFailure shows the servers' last words when the test failed, since their logs go with
// the temp dir.
func (c *Cluster) logOnFailure(tb testing.TB) {
	if !tb.Failed() {
		return
	}
	for _, p := range []*proc.Server{c.etcd, c.apiserver} {
		if p != nil {
			tb.Logf("kapi: last lines of %s:\n%s", p.Log, p.LogTail(logTailLines))
		}
	}
}

// WriteKubeconfig writes a kubeconfig file for host, trusting caData, with a bearer token.
func WriteKubeconfig(path, host string, caData []byte, token string) error {
	const name = "podwall-test"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: caData}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}
