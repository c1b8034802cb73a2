//go:build node

package node

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/tests/node/podapi"
)

// agentGap deletes the agent's pod, then rolls the DaemonSet to a new image tag, while the api
// pod streams to db (tcp, allowed), to store (udp, allowed) and to db (udp, denied): the
// programs and maps stay pinned while no agent runs, so no allowed packet is lost (TCP never
// even retransmits for long) and no denied one passes.
func (c *cluster) agentGap(t *testing.T) {
	n := c.n
	api := c.ip(t, "shop/api")
	// db's policy is now "allow udp from label role=frontend"; store still allows any
	// protocol from a backend. Put db back to the first policy for the tcp stream.
	n.Kubectl(t, "-n", "shop", "annotate", "pod", "db", policyKey+"=allow tcp from label role=backend", "--overwrite")
	c.eventually(t,
		c.tcp("db allows backends again", "shop/api", "shop/db", 80, true),
		c.udp("db's udp is denied", "shop/api", "shop/db", 80, false),
		c.udp("store's udp is allowed", "shop/api", "shop/store", 80, true))

	control := fmt.Sprintf("http://%s", netip.AddrPortFrom(api, podapi.ControlPort))
	q := fmt.Sprintf("/stream/start?tcp=%s&udp=%s&denied=%s&every=10ms",
		netip.AddrPortFrom(c.ip(t, "shop/db"), 80), netip.AddrPortFrom(c.ip(t, "shop/store"), 80), netip.AddrPortFrom(c.ip(t, "shop/db"), 80))
	var started map[string]string
	require.NoError(t, c.getJSON(control+q, &started))

	n.Kubectl(t, "-n", "kube-system", "delete", "pod", "-l", "app.kubernetes.io/name=podwall", "--wait=true")
	n.Kubectl(t, "-n", "kube-system", "rollout", "status", "ds/podwall", "--timeout=3m")
	rolled := *agentImage + "-rolled"
	n.Ctr(t, "images", "tag", *agentImage, rolled)
	n.Kubectl(t, "-n", "kube-system", "set", "image", "ds/podwall", "agent="+rolled)
	n.Kubectl(t, "-n", "kube-system", "rollout", "status", "ds/podwall", "--timeout=3m")
	require.Contains(t, n.Kubectl(t, "-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=podwall",
		"-o", "jsonpath={.items[*].spec.containers[0].image}"), rolled)
	c.awaitMetric(t, "podwall_apply_failing", 0)
	time.Sleep(time.Second)

	var got podapi.Counters
	require.NoError(t, c.getJSON(control+"/stream/stop", &got))
	t.Logf("streams through the agent's deletion and roll: %+v", got)
	require.Zero(t, got.TCPErrors, "the allowed tcp stream broke: %s", got.FirstTCPError)
	require.Positive(t, got.TCPEchoed)
	require.Equal(t, got.TCPSent, got.TCPEchoed, "allowed tcp messages lost")
	require.Positive(t, got.UDPSent)
	require.Equal(t, got.UDPSent, got.UDPEchoed, "allowed udp datagrams lost")
	require.Positive(t, got.DeniedSent)
	require.Zero(t, got.DeniedEchoed, "denied udp datagrams passed")
	c.eventually(t, c.udp("the new agent keeps the policy", "shop/api", "shop/db", 80, false))
}

// agentMemory reads the agent container's memory use from its cgroup (cgroup v1), for the
// DaemonSet's requests and limits.
func (c *cluster) agentMemory(t *testing.T) string {
	uid := strings.TrimSpace(c.n.Kubectl(t, "-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=podwall",
		"-o", "jsonpath={.items[0].metadata.uid}"))
	cid := strings.TrimPrefix(strings.TrimSpace(c.n.Kubectl(t, "-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=podwall",
		"-o", "jsonpath={.items[0].status.containerStatuses[0].containerID}")), "containerd://")
	matches, err := filepath.Glob(filepath.Join("/sys/fs/cgroup/memory", c.n.cgroupRoot, "kubepods", "*", "pod"+uid, cid))
	require.NoError(t, err)
	require.Len(t, matches, 1, "the agent container's memory cgroup")
	read := func(f string) string {
		b, err := os.ReadFile(filepath.Join(matches[0], f))
		require.NoError(t, err)
		return strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("usage %s bytes, max usage %s bytes, limit %s bytes",
		read("memory.usage_in_bytes"), read("memory.max_usage_in_bytes"), read("memory.limit_in_bytes"))
}
