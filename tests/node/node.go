package node

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podwall/podwall/tests/kapi"
	"github.com/podwall/podwall/tests/proc"
	"github.com/podwall/podwall/tests/topo"
)

// CNI is the plugin that wires the node's pods.
type CNI string

const (
	// PTP is containernetworking's ptp: a veth per pod and a /32 route to it, as Calico routes.
	PTP CNI = "ptp"
	// Bridge is containernetworking's bridge: every pod's veth a port of one Linux bridge.
	Bridge CNI = "bridge"
)

// The node's addresses. They live only inside its network namespace and the outside host's.
var (
	NodeIP      = netip.MustParseAddr("10.77.0.2")
	OutsideIP   = netip.MustParseAddr("10.77.0.1")
	PodCIDR     = netip.MustParsePrefix("10.244.0.0/24")
	ServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")
	// KubernetesIP is the ClusterIP of the kubernetes Service, the API server of in-cluster
	// clients such as the agent.
	KubernetesIP = netip.MustParseAddr("10.96.0.1")
)

const (
	// Name is the node's name.
	Name = "pwnode"
	// BridgeName is the bridge the Bridge CNI makes.
	BridgeName = "pw-br0"
	// SandboxImage is the pause image the node's containerd uses; Start imports it.
	SandboxImage = "podwall.test/pause:1"

	apiPort      = 6443
	startTimeout = 3 * time.Minute
	logTail      = 60
)

// Options say what node to start.
type Options struct {
	CNI CNI
	// Images are image tarballs (Docker or OCI) to import into containerd's k8s.io
	// namespace, the pause image among them.
	Images []string
}

// Node is a running one-node cluster.
type Node struct {
	CNI CNI
	// NS is the node's network namespace: every process of the node, its pods' host-side
	// interfaces, routes and iptables rules are there.
	NS *topo.Netns
	// Outside is a host on the node's uplink, outside the cluster, at OutsideIP.
	Outside *topo.Netns
	// Dir holds every file of the node; it goes when the test ends.
	Dir string
	// Kubeconfig is the admin's kubeconfig; RESTConfig and Client reach the API server
	// through the node's namespace.
	Kubeconfig string
	RESTConfig *rest.Config
	Client     kubernetes.Interface

	k8sBin, nodeBin string
	socket          string
	cgroupRoot      string
	servers         []*proc.Server
	// made are the machine's folders that the node's servers create and do not let one move
	// (the shims' sockets, the kubelet's log links) and that did not exist before: the node's
	// to remove.
	made []string
}

// Start starts a one-node cluster for the test and returns once the node is Ready and
// kube-proxy serves: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd
// with runc and the CNI, the kubelet and kube-proxy, all in a network namespace of their own.
// Cleanup stops them all, kills what containerd started, unmounts and removes what they made
// and deletes the namespaces, also when the test fails.
func Start(tb testing.TB, opts Options) *Node {
	tb.Helper()
	n := &Node{CNI: opts.CNI, k8sBin: kapi.BinDir(), nodeBin: nodeBinaries(tb)}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"} {
		_, err := os.Stat(filepath.Join(n.k8sBin, b))
		require.NoError(tb, err, "kubernetes binaries: run `make k8s-bins` (tests/k8s/build.sh)")
	}
	_, err := os.Stat(bpffsFolder)
	require.ErrorIs(tb, err, os.ErrNotExist, "%s exists: another podwall runs on this machine; the test node's agent would take it over", bpffsFolder)

	n.NS = topo.NewNetns(tb, "node")
	n.Outside = topo.NewNetns(tb, "outside")
	n.wire(tb)
	restoreKernelSysctls(tb)

	// A short folder: unix socket paths must fit 108 bytes.
	n.Dir, err = os.MkdirTemp("", "pwnode-")
	require.NoError(tb, err)
	n.socket = filepath.Join(n.Dir, "containerd.sock")
	n.cgroupRoot = "/" + topo.Prefix + "node"
	for _, dir := range []string{shimStateDir, containerLogLinks} {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			n.made = append(n.made, dir)
		}
	}
	tb.Cleanup(func() { n.teardown(tb) })
	n.makeCgroupRoot(tb)

	ips := []net.IP{NodeIP.AsSlice(), KubernetesIP.AsSlice(), net.IPv4(127, 0, 0, 1)}
	keys, err := writePKI(n.Dir, Name, ips)
	require.NoError(tb, err)
	host := fmt.Sprintf("https://%s", net.JoinHostPort(NodeIP.String(), strconv.Itoa(apiPort)))
	kubeconfig := func(name string, id identity) string {
		path := filepath.Join(n.Dir, name+".kubeconfig")
		require.NoError(tb, kapi.WriteKubeconfig(path, host, keys.caData, id.token))
		return path
	}
	n.Kubeconfig = kubeconfig("admin", keys.admin)
	n.RESTConfig, err = clientcmd.BuildConfigFromFlags("", n.Kubeconfig)
	require.NoError(tb, err)
	n.RESTConfig.QPS = -1
	n.RESTConfig.Dial = n.DialContext
	n.Client, err = kubernetes.NewForConfig(n.RESTConfig)
	require.NoError(tb, err)

	n.start(tb, "etcd", filepath.Join(n.k8sBin, "etcd"),
		"--name="+Name, "--data-dir="+filepath.Join(n.Dir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster="+Name+"=http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level=warn")
	n.await(tb, "etcd", func(ctx context.Context) error { return n.get(ctx, "http://127.0.0.1:2379/health") })

	n.start(tb, "kube-apiserver", filepath.Join(n.k8sBin, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0", "--advertise-address="+NodeIP.String(), "--secure-port="+strconv.Itoa(apiPort),
		"--tls-cert-file="+keys.servingCert, "--tls-private-key-file="+keys.servingKey,
		"--client-ca-file="+keys.caCert, "--token-auth-file="+keys.tokenFile,
		"--kubelet-client-certificate="+keys.kubeletClientCert, "--kubelet-client-key="+keys.kubeletClientKey,
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+keys.saKey, "--service-account-signing-key-file="+keys.saKey,
		"--service-cluster-ip-range="+ServiceCIDR.String(),
		// The node's name resolves nowhere: kubectl logs reaches the kubelet by its address.
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true", "--shutdown-watch-termination-grace-period=5s")
	n.await(tb, "kube-apiserver", func(ctx context.Context) error {
		body, err := n.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) != "ok" {
			err = fmt.Errorf("readyz: %s", body)
		}
		return err
	})

	n.start(tb, "kube-controller-manager", filepath.Join(n.k8sBin, "kube-controller-manager"),
		"--kubeconfig="+kubeconfig("controller-manager", keys.controllerManager),
		"--bind-address=127.0.0.1", "--leader-elect=false", "--use-service-account-credentials=true",
		"--service-account-private-key-file="+keys.saKey, "--root-ca-file="+keys.caCert,
		"--cluster-name="+Name, "--allocate-node-cidrs=false")
	n.start(tb, "kube-scheduler", filepath.Join(n.k8sBin, "kube-scheduler"),
		"--kubeconfig="+kubeconfig("scheduler", keys.scheduler), "--bind-address=127.0.0.1", "--leader-elect=false")

	n.startContainerd(tb)
	for _, img := range opts.Images {
		n.Ctr(tb, "images", "import", "--all-platforms", img)
	}

	require.NoError(tb, writeCNIConfig(n.Dir, opts.CNI, PodCIDR.String()))
	kubeletConf := filepath.Join(n.Dir, "kubelet.yaml")
	require.NoError(tb, writeTemplate(kubeletConf, kubeletConfig, map[string]string{
		"NodeIP": NodeIP.String(), "CgroupRoot": n.cgroupRoot, "Socket": n.socket, "Dir": n.Dir, "CA": keys.caCert,
	}))
	n.start(tb, "kubelet", filepath.Join(n.k8sBin, "kubelet"),
		"--config="+kubeletConf, "--kubeconfig="+kubeconfig("kubelet", keys.kubelet),
		"--root-dir="+filepath.Join(n.Dir, "kubelet"), "--hostname-override="+Name, "--node-ip="+NodeIP.String(), "--v=2")
	n.await(tb, "kubelet", func(ctx context.Context) error {
		node, err := n.Client.CoreV1().Nodes().Get(ctx, Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				if c.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("node not ready: %s", c.Message)
			}
		}
		return errors.New("node has no Ready condition")
	})

	proxyConf := filepath.Join(n.Dir, "kube-proxy.yaml")
	require.NoError(tb, writeTemplate(proxyConf, kubeProxyConfig, map[string]string{
		"NodeName": Name, "PodCIDR": PodCIDR.String(), "Kubeconfig": kubeconfig("kube-proxy", keys.proxy),
	}))
	n.start(tb, "kube-proxy", filepath.Join(n.k8sBin, "kube-proxy"), "--config="+proxyConf)
	n.await(tb, "kube-proxy", func(ctx context.Context) error { return n.get(ctx, "http://127.0.0.1:10256/healthz") })
	n.AwaitServiceAccount(tb, metav1.NamespaceDefault)
	return n
}

// AwaitServiceAccount waits until the controller manager has made the default ServiceAccount of
// the namespace, without which no pod can be created there.
func (n *Node) AwaitServiceAccount(tb testing.TB, ns string) {
	tb.Helper()
	n.await(tb, "kube-controller-manager", func(ctx context.Context) error {
		_, err := n.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// nodeBinaries builds (once per machine) and finds containerd, runc and the CNI plugins.
func nodeBinaries(tb testing.TB) string {
	tb.Helper()
	_, self, _, ok := runtime.Caller(0)
	require.True(tb, ok)
	out, err := exec.Command(filepath.Join(filepath.Dir(self), "build.sh")).Output() //nolint:gosec // G204: our script
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = fmt.Errorf("%w: %s", err, ee.Stderr)
	}
	require.NoError(tb, err, "tests/node/build.sh")
	return strings.TrimSpace(string(out))
}

// wire gives the node its uplink: eth0 at NodeIP, a veth whose other end is the outside host,
// the node's default gateway.
func (n *Node) wire(tb testing.TB) {
	tb.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500}, PeerName: "uplink"}
	require.NoError(tb, n.NS.Handle().LinkAdd(veth))
	peer, err := n.NS.Handle().LinkByName("uplink")
	require.NoError(tb, err)
	require.NoError(tb, n.NS.Handle().LinkSetNsFd(peer, int(n.Outside.NsHandle())))
	for _, side := range []struct {
		ns   *topo.Netns
		link string
		ip   netip.Addr
	}{{n.NS, "eth0", NodeIP}, {n.Outside, "uplink", OutsideIP}} {
		l, err := side.ns.Handle().LinkByName(side.link)
		require.NoError(tb, err)
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: side.ip.AsSlice(), Mask: net.CIDRMask(24, 32)}}
		require.NoError(tb, side.ns.Handle().AddrAdd(l, addr))
		require.NoError(tb, side.ns.Handle().LinkSetUp(l))
	}
	require.NoError(tb, n.NS.Handle().RouteAdd(&netlink.Route{Gw: OutsideIP.AsSlice()}))
	// The outside host reaches pods by their addresses through the node, as a router would
	// route a cluster's pod range to its nodes.
	require.NoError(tb, n.Outside.Handle().RouteAdd(&netlink.Route{
		Dst: &net.IPNet{IP: PodCIDR.Addr().AsSlice(), Mask: net.CIDRMask(PodCIDR.Bits(), 32)}, Gw: NodeIP.AsSlice(),
	}))
	require.NoError(tb, n.NS.Sysctl("net/ipv4/ip_forward", "1"))
	if n.CNI == Bridge {
		// Bridged pods answer a ClusterIP's client over the bridge; without this the
		// answer never meets kube-proxy's NAT on the way back. It is per namespace.
		require.NoError(tb, n.NS.Sysctl("net/bridge/bridge-nf-call-iptables", "1"))
	}
}

// The kubelet sets these machine-wide sysctls at start (as on any node); they are put back as
// they were when the test ends.
var kernelSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

func restoreKernelSysctls(tb testing.TB) {
	saved := map[string][]byte{}
	for _, k := range kernelSysctls {
		v, err := os.ReadFile(filepath.Join("/proc/sys", k)) //nolint:gosec // G304: sysctls
		require.NoError(tb, err)
		saved[k] = v
	}
	tb.Cleanup(func() {
		for k, v := range saved {
			if err := os.WriteFile(filepath.Join("/proc/sys", k), v, 0o644); err != nil { //nolint:gosec // G306: sysctls
				tb.Errorf("restore sysctl %s: %v", k, err)
			}
		}
	})
}

func (n *Node) startContainerd(tb testing.TB) {
	tb.Helper()
	conf := filepath.Join(n.Dir, "containerd.toml")
	require.NoError(tb, writeTemplate(conf, containerdConfig, map[string]string{
		"Dir": n.Dir, "Socket": n.socket, "SandboxImage": SandboxImage,
		"CNIBin": filepath.Join(n.nodeBin, "cni"), "Runc": filepath.Join(n.nodeBin, "bin", "runc"),
	}))
	n.start(tb, "containerd", filepath.Join(n.nodeBin, "bin", "containerd"), "--config="+conf)
	n.await(tb, "containerd", func(context.Context) error {
		_, err := n.ctr("version")
		return err
	})
}

// start runs a server of the node inside its network namespace (nsenter and env exec the
// binary, so the server is the process started).
func (n *Node) start(tb testing.TB, name, bin string, args ...string) {
	tb.Helper()
	// containerd finds its shim on PATH.
	path := "PATH=" + filepath.Join(n.nodeBin, "bin") + ":" + os.Getenv("PATH")
	argv := append([]string{"nsenter", "--net=" + n.NS.Path, "--", "env", path, bin}, args...)
	s, err := proc.StartServer(name, filepath.Join(n.Dir, name+".log"), argv...)
	require.NoError(tb, err)
	n.servers = append(n.servers, s)
}

// await polls ready until it returns nil, failing the test with the server's last words
// when it exits first or startTimeout passes.
func (n *Node) await(tb testing.TB, name string, ready func(context.Context) error) {
	tb.Helper()
	s := n.server(name)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var err error
	for {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		err = ready(rctx)
		rcancel()
		if err == nil {
			return
		}
		select {
		case <-s.Done():
			tb.Fatalf("node: %s exited before it was ready (%v); last lines of %s:\n%s", name, s.Err(), s.Log, s.LogTail(logTail))
		case <-ctx.Done():
			tb.Fatalf("node: %s not ready after %v (%v); last lines of %s:\n%s", name, startTimeout, err, s.Log, s.LogTail(logTail))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (n *Node) server(name string) *proc.Server {
	for _, s := range n.servers {
		if s.Name == name {
			return s
		}
	}
	panic("node: no server " + name)
}

// DialContext dials from inside the node's network namespace, where the API server, the
// kubelet and the pods are.
func (n *Node) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.NS.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTP is a client whose connections start in the node's network namespace.
func (n *Node) HTTP() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: n.DialContext, DisableKeepAlives: true}}
}

func (n *Node) get(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := n.HTTP().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// Kubectl runs kubectl as the admin, in the node's namespace, and returns its output.
func (n *Node) Kubectl(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := n.KubectlErr(args...)
	require.NoError(tb, err, "kubectl %s", strings.Join(args, " "))
	return out
}

// KubectlIn is Kubectl with stdin, for `kubectl apply -f -`.
func (n *Node) KubectlIn(tb testing.TB, stdin string, args ...string) string {
	tb.Helper()
	out, err := n.kubectl(strings.NewReader(stdin), args...)
	require.NoError(tb, err)
	return out
}

// KubectlErr is Kubectl for a command that may fail; the error holds kubectl's stderr.
func (n *Node) KubectlErr(args ...string) (string, error) { return n.kubectl(nil, args...) }

func (n *Node) kubectl(stdin io.Reader, args ...string) (string, error) {
	argv := append([]string{"--net=" + n.NS.Path, "--", filepath.Join(n.k8sBin, "kubectl"), "--kubeconfig=" + n.Kubeconfig}, args...)
	var stderr bytes.Buffer
	cmd := exec.Command("nsenter", argv...) //nolint:gosec // G204: the test's own kubectl
	cmd.Stderr, cmd.Stdin = &stderr, stdin
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// Ctr runs ctr against the node's containerd, in its k8s.io namespace.
func (n *Node) Ctr(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := n.ctr(args...)
	require.NoError(tb, err)
	return out
}

func (n *Node) ctr(args ...string) (string, error) {
	argv := append([]string{"--address", n.socket, "-n", "k8s.io"}, args...)
	out, err := exec.Command(filepath.Join(n.nodeBin, "bin", "ctr"), argv...).CombinedOutput() //nolint:gosec // G204: our ctr
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Run runs a command in the node's network namespace and returns its output and error, for
// diagnostics.
func (n *Node) Run(argv ...string) string {
	out, err := exec.Command("nsenter", append([]string{"--net=" + n.NS.Path, "--"}, argv...)...).CombinedOutput() //nolint:gosec // G204: diagnostics
	if err != nil {
		return fmt.Sprintf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// LogTail is the last lines of a server's log ("kubelet", "containerd", ...).
func (n *Node) LogTail(name string, lines int) string { return n.server(name).LogTail(lines) }

// shimStateDir holds containerd's shims' sockets (under s/), whatever its configuration;
// containerLogLinks is where the kubelet links containers' logs, whatever its root.
const (
	shimStateDir      = "/run/containerd"
	containerLogLinks = "/var/log/containers"
)

// bpffsFolder is where the DaemonSet's agent pins, through its hostPath volume.
const bpffsFolder = "/sys/fs/bpf/podwall"

// teardown stops the node in the reverse order of its start, then removes what the servers
// left: the containers (their shims outlive containerd), mounts under the node's folder, the
// cgroups, the kubelet's log links, the agent's pins and the folder itself.
func (n *Node) teardown(tb testing.TB) {
	if tb.Failed() {
		for _, s := range n.servers {
			tb.Logf("node: last lines of %s:\n%s", s.Log, s.LogTail(logTail))
		}
	}
	for i := len(n.servers) - 1; i >= 0; i-- {
		if killed := n.servers[i].Stop(); killed {
			tb.Logf("node: %s ignored SIGTERM for %v and was killed", n.servers[i].Name, proc.StopTimeout)
		}
	}
	n.killLeftovers(tb)
	n.unmountAll(tb)
	n.removeCgroupRoot(tb)
	n.removeLogLinks(tb)
	for _, dir := range n.made {
		if err := os.RemoveAll(dir); err != nil {
			tb.Errorf("node: %v", err)
		}
	}
	if err := os.RemoveAll(bpffsFolder); err != nil {
		tb.Errorf("node: remove %s: %v", bpffsFolder, err)
	}
	if err := os.RemoveAll(n.Dir); err != nil {
		tb.Errorf("node: remove %s: %v", n.Dir, err)
	}
}

// killLeftovers kills the shims (found by the containerd socket in their command lines) and
// every process in the node's cgroups, until none is left.
func (n *Node) killLeftovers(tb testing.TB) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		pids := append(processesMentioning(n.Dir), n.cgroupProcs()...)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Errorf("node: processes left running: %v", pids)
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func processesMentioning(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountAll detaches every mount under the node's folder (container root filesystems, pod
// volumes, network namespaces), the deepest first.
func (n *Node) unmountAll(tb testing.TB) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		tb.Errorf("node: %v", err)
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], n.Dir+"/") {
			points = append(points, fields[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		if err := syscall.Unmount(points[i], syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			tb.Errorf("node: unmount %s: %v", points[i], err)
		}
	}
}

// cgroupHierarchies are the mounted cgroup v1 hierarchies (cgroup2 is only at unified here).
func cgroupHierarchies() []string {
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var dirs []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != "unified" {
			dirs = append(dirs, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	return dirs
}

// makeCgroupRoot makes the kubelet's cgroup root in every hierarchy; cpuset's needs its CPUs
// and memory nodes before a task can join.
func (n *Node) makeCgroupRoot(tb testing.TB) {
	tb.Helper()
	for _, h := range cgroupHierarchies() {
		dir := filepath.Join(h, n.cgroupRoot)
		require.NoError(tb, os.MkdirAll(dir, 0o755)) //nolint:gosec // G301: a cgroup
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f)) //nolint:gosec // G304: a cgroup file
				require.NoError(tb, err)
				require.NoError(tb, os.WriteFile(filepath.Join(dir, f), v, 0o644)) //nolint:gosec // G306: a cgroup file
			}
		}
	}
}

func (n *Node) cgroupProcs() []int {
	var pids []int
	for _, h := range cgroupHierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, n.cgroupRoot), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil //nolint:nilerr // a cgroup that went while walking
			}
			data, _ := os.ReadFile(path) //nolint:gosec // G304: a cgroup file
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// removeCgroupRoot removes the cgroups under the root, children before parents.
func (n *Node) removeCgroupRoot(tb testing.TB) {
	for _, h := range cgroupHierarchies() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, n.cgroupRoot), func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				tb.Errorf("node: remove cgroup %s: %v", dirs[i], err)
			}
		}
	}
}

// removeLogLinks removes the kubelet's links in /var/log/containers to logs of this node.
func (n *Node) removeLogLinks(tb testing.TB) {
	entries, _ := os.ReadDir(containerLogLinks)
	for _, e := range entries {
		path := filepath.Join(containerLogLinks, e.Name())
		if target, err := os.Readlink(path); err == nil && strings.HasPrefix(target, n.Dir+"/") {
			if err := os.Remove(path); err != nil {
				tb.Errorf("node: %v", err)
			}
		}
	}
}
