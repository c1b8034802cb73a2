package kapi

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

const eventTimeout = 30 * time.Second

// TestCluster runs a cluster through what the agent's tests need, then checks that its
// processes, ports and files are gone.
func TestCluster(t *testing.T) {
	var (
		pids  []int
		ports []string
		dir   string
	)
	t.Run("lifecycle", func(t *testing.T) {
		start := time.Now()
		c := Start(t)
		t.Logf("cluster ready in %v", time.Since(start))
		ctx := t.Context()
		dir = c.dir
		pids = append(pids, c.etcd.Pid(), c.apiserver.Pid())
		ports = append(ports, strings.TrimPrefix(c.etcdURL, "http://"), strings.TrimPrefix(c.RESTConfig.Host, "https://"))

		c.CreateNamespace(t, "web", map[string]string{"team": "a"})
		c.CreatePod(t, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "frontend", Namespace: "web", Labels: map[string]string{"role": "frontend"}},
			Spec:       corev1.PodSpec{NodeName: "node-a"},
		})
		c.SetPodIPs(t, "web", "frontend", "10.1.0.5", "fd00::5")

		nss, err := c.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: "team=a"})
		require.NoError(t, err)
		require.Len(t, nss.Items, 1)
		require.Equal(t, "web", nss.Items[0].Name)

		pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		require.Len(t, pods.Items, 1)
		pod := pods.Items[0]
		require.Equal(t, map[string]string{"role": "frontend"}, pod.Labels)
		require.Equal(t, "node-a", pod.Spec.NodeName)
		require.Equal(t, corev1.PodRunning, pod.Status.Phase)
		require.Equal(t, "10.1.0.5", pod.Status.PodIP)
		require.Equal(t, []corev1.PodIP{{IP: "10.1.0.5"}, {IP: "fd00::5"}}, pod.Status.PodIPs)

		// kubectl refuses a server without a release version: this checks the build's stamps.
		out, err := exec.CommandContext(ctx, c.KubectlPath, "--kubeconfig", c.Kubeconfig,
			"get", "pods", "-n", "web", "-o", "jsonpath={.items[*].status.podIPs[*].ip}").CombinedOutput()
		require.NoError(t, err, string(out))
		require.Equal(t, "10.1.0.5 fd00::5", string(out))
		out, err = exec.CommandContext(ctx, c.KubectlPath, "--kubeconfig", c.Kubeconfig, "version").CombinedOutput()
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "Server Version: "+Version)

		cut, err := c.Client.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{ResourceVersion: pods.ResourceVersion})
		require.NoError(t, err)
		defer cut.Stop()
		restart := time.Now()
		c.RestartAPIServer(t)
		t.Logf("kube-apiserver restarted in %v", time.Since(restart))
		pids = append(pids, c.apiserver.Pid())
		requireWatchEnds(t, cut)

		// The restarted server's watch cache starts at etcd's current revision, so a new
		// watch starts from a new list, as an informer's relist does.
		pods, err = c.Client.CoreV1().Pods("web").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		require.Len(t, pods.Items, 1)
		w, err := c.Client.CoreV1().Pods("web").Watch(ctx, metav1.ListOptions{ResourceVersion: pods.ResourceVersion})
		require.NoError(t, err)
		defer w.Stop()
		c.CreatePod(t, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "backend", Namespace: "web", Labels: map[string]string{"role": "backend"}},
			Spec:       corev1.PodSpec{NodeName: "node-a"},
		})
		requireEvent(t, w, watch.Added, "backend")
		c.SetPodIPs(t, "web", "backend", "10.1.0.6")
		requireEvent(t, w, watch.Modified, "backend")
		c.DeletePod(t, "web", "backend")
		requireEvent(t, w, watch.Deleted, "backend")

		c.DeleteNamespace(t, "web")
		requireEvent(t, w, watch.Deleted, "frontend")
		_, err = c.Client.CoreV1().Namespaces().Get(ctx, "web", metav1.GetOptions{})
		require.True(t, apierrors.IsNotFound(err), "namespace still there: %v", err)
		pods, err = c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		require.Empty(t, pods.Items)
	})
	if t.Failed() {
		return
	}

	for _, pid := range pids {
		require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "process %d left running", pid)
	}
	for _, addr := range ports {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
		}
		require.ErrorIs(t, err, syscall.ECONNREFUSED, "%s still listening", addr)
	}
	_, err := os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist, "temp dir %s left behind", dir)
}

// requireWatchEnds waits for a watch cut by a restart to end, with an Error event or by
// closing its channel.
func requireWatchEnds(t *testing.T, w watch.Interface) {
	t.Helper()
	deadline := time.After(eventTimeout)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok || ev.Type == watch.Error {
				return
			}
		case <-deadline:
			t.Fatalf("watch still open %v after kube-apiserver restarted", eventTimeout)
		}
	}
}

func requireEvent(t *testing.T, w watch.Interface, typ watch.EventType, name string) {
	t.Helper()
	deadline := time.After(eventTimeout)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			require.True(t, ok, "watch closed waiting for %s %s", typ, name)
			if pod, isPod := ev.Object.(*corev1.Pod); isPod && ev.Type == typ && pod.Name == name {
				return
			}
		case <-deadline:
			t.Fatalf("no %s event for pod %s in %v", typ, name, eventTimeout)
		}
	}
}

// TestVersionMatchesBuild keeps Version, which names the cache dir, equal to what
// tests/k8s/build.sh builds.
func TestVersionMatchesBuild(t *testing.T) {
	data, err := os.ReadFile("../k8s/build/go.mod")
	require.NoError(t, err)
	var built string
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "k8s.io/kubernetes" {
			built = f[1]
		}
	}
	require.Equal(t, Version, built)
}

// TestStartFailures checks that Start fails (never skips) and leaves nothing behind when it
// cannot bring a cluster up.
func TestStartFailures(t *testing.T) {
	real := BinDir()
	tests := []struct {
		name    string
		bins    map[string]string // name in the bin dir: path of the file it links to
		message string
	}{
		{
			name:    "no binaries",
			message: "run `make k8s-bins`",
		},
		{
			name: "kube-apiserver dies",
			bins: map[string]string{
				"etcd":           filepath.Join(real, "etcd"),
				"kubectl":        filepath.Join(real, "kubectl"),
				"kube-apiserver": "/bin/false",
			},
			message: "kube-apiserver exited before it was ready",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bins := t.TempDir()
			for name, target := range tt.bins {
				require.NoError(t, os.Symlink(target, filepath.Join(bins, name)))
			}
			t.Setenv(BinDirEnv, bins)

			ftb := &failingTB{TB: t}
			ftb.run(func() { Start(ftb) })

			require.Len(t, ftb.fatals, 1)
			require.Contains(t, ftb.fatals[0], tt.message)
			require.False(t, ftb.skipped)
			for _, dir := range ftb.dirs {
				_, err := os.Stat(dir)
				require.ErrorIs(t, err, os.ErrNotExist, "temp dir %s left behind", dir)
				require.Empty(t, processesUsing(t, dir), "processes left running")
			}
		})
	}
}

// failingTB records what Start does to a test that fails, and runs the cleanups itself, so
// the real test can check the outcome.
type failingTB struct {
	testing.TB
	mu       sync.Mutex
	fatals   []string
	skipped  bool
	failed   bool
	cleanups []func()
	dirs     []string
}

func (f *failingTB) run(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	for _, dir := range f.dirs {
		require.NoError(f.TB, os.RemoveAll(dir))
	}
}

func (f *failingTB) Helper() {}

func (f *failingTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatals = append(f.fatals, fmt.Sprintf(format, args...))
	f.failed = true
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *failingTB) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }

func (f *failingTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fatals = append(f.fatals, fmt.Sprintf(format, args...))
	f.failed = true
}

func (f *failingTB) SkipNow() {
	f.mu.Lock()
	f.skipped = true
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *failingTB) Skipf(string, ...any) { f.SkipNow() }
func (f *failingTB) Skip(...any)          { f.SkipNow() }

func (f *failingTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *failingTB) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

// TempDir hands out dirs that the real test's cleanup would not remove before the check.
func (f *failingTB) TempDir() string {
	dir, err := os.MkdirTemp("", "kapi-failing-")
	require.NoError(f.TB, err)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dirs = append(f.dirs, dir)
	return dir
}

// processesUsing lists the processes whose command line mentions dir.
func processesUsing(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var found []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue
		}
		require.NoError(t, err)
		if strings.Contains(string(cmdline), dir) {
			found = append(found, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return found
}
