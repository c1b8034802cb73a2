package standalone

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/tests/proc"
	"github.com/podwall/podwall/tests/topo"
)

// readDaemonSet reads deploy/daemonset.yaml and returns its agent container and the host
// folder of its one volume.
func readDaemonSet(t *testing.T) (corev1.Container, corev1.Volume) {
	t.Helper()
	b, err := os.ReadFile("../../deploy/daemonset.yaml")
	require.NoError(t, err)
	var ds appsv1.DaemonSet
	require.NoError(t, yaml.UnmarshalStrict(b, &ds))
	spec := ds.Spec.Template.Spec
	require.Len(t, spec.Containers, 1)
	require.Len(t, spec.Volumes, 1)
	return spec.Containers[0], spec.Volumes[0]
}

// TestLeastPrivilege runs the podwall binary the way the DaemonSet does, as far as a node
// without a kubelet can: with exactly the capabilities the manifest adds (all others dropped
// from every set), and with only the manifest's folder of a bpffs bind-mounted where the
// manifest mounts it, in a mount namespace of its own. It loads, attaches, enforces, collects
// conntrack, puts itself first again when another program goes ahead, and uninstalls.
func TestLeastPrivilege(t *testing.T) {
	agent, volume := readDaemonSet(t)
	var caps []string
	for _, c := range agent.SecurityContext.Capabilities.Add {
		caps = append(caps, "+"+strings.ToLower(string(c)))
	}
	capSet := "-all," + strings.Join(caps, ",")
	var bpffs string
	for _, e := range agent.Env {
		if e.Name == "PODWALL_BPFFS" {
			bpffs = e.Value
		}
	}
	require.NotEmpty(t, bpffs, "the DaemonSet sets PODWALL_BPFFS")
	require.Len(t, agent.VolumeMounts, 1)
	require.Equal(t, filepath.Join(bpffs, "podwall"), agent.VolumeMounts[0].MountPath,
		"the volume is podwall's folder of --bpffs")
	require.Equal(t, "/sys/fs/bpf/podwall", volume.HostPath.Path)

	bin := proc.BuildPodwall(t)
	c, guarded, client := guardedCluster(t)
	host := filepath.Join(c.bpffs, "podwall") // the node's /sys/fs/bpf/podwall
	require.NoError(t, os.MkdirAll(host, 0o700))
	root := t.TempDir() // the container's root
	mount := filepath.Join(root, agent.VolumeMounts[0].MountPath)
	// The bind mount lives in the agent's mount namespace, and goes with it.
	wrap := []string{"unshare", "--mount", "--propagation", "private", "--", "sh", "-ec",
		fmt.Sprintf(`mkdir -p %q; mount --bind %q %q; exec setpriv --bounding-set=%s --inh-caps=%s --ambient-caps=%s -- "$@"`,
			mount, host, mount, capSet, capSet, capSet), "agent"}
	args := []string{"--bpffs", filepath.Join(root, bpffs), "--chain-check-interval", "100ms", "--conntrack-gc-interval", "100ms"}

	p := c.startWrapped(wrap, bin, args...)
	c.awaitApplied(defaults)
	topo.Expect(t,
		topo.TCP("to the guarded pod: deny tcp", client.NS, none, guarded.IPv4, port, false),
		topo.UDP("to the guarded pod: allow udp", client.NS, none, guarded.IPv6, port, true),
	)
	c.tp.Node.Intrude(t, guarded.HostIfindex, topo.KernelHasTCX(t))
	awaitMetricLine(t, c, `podwall_programs_displaced_total{outcome="restored"} 1`)
	topo.Expect(t, topo.TCP("to the guarded pod: podwall first again", client.NS, none, guarded.IPv4, port, false))
	time.Sleep(300 * time.Millisecond) // a few conntrack collections
	_, metrics := httpGet(t, c.tp.Node, "http://"+metricsAddr+"/metrics")
	require.Contains(t, metrics, "podwall_conntrack_gc_errors_total 0")
	require.Contains(t, metrics, `podwall_programs_displaced_total{outcome="failed"} 0`)
	require.NotContains(t, p.out.String(), "ERROR", "the agent's log")
	p.terminate(t)

	out, err := c.nodeCommand(wrap, bin, append(args, "--uninstall")...).CombinedOutput()
	require.NoError(t, err, "uninstall: %s", out)
	entries, err := os.ReadDir(host)
	require.NoError(t, err)
	require.Empty(t, entries, "uninstall leaves podwall's folder of the node empty")
	topo.Expect(t, topo.TCP("to the guarded pod, podwall gone", client.NS, none, guarded.IPv4, port, true))
}

// awaitMetricLine waits until the agent process's /metrics has line.
func awaitMetricLine(t *testing.T, c *cluster, line string) {
	t.Helper()
	requireEventually(t, func() bool {
		_, metrics := httpGet(t, c.tp.Node, "http://"+metricsAddr+"/metrics")
		return strings.Contains(metrics, line)
	}, "/metrics has "+line)
}
