package node

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/template"
)

// containerdConfig is containerd 2's configuration (version 3): every path under the node's
// folder, so that nothing of it touches the machine's /var/lib/containerd or /run/containerd;
// the pod network namespaces under its state folder, not /run/netns; runc as the runtime with
// the cgroupfs driver, as the kubelet's; the sandbox image the test imported. Machines of this
// kind withhold CAP_SYS_RESOURCE, without which no process may lower its oom_score_adj: the
// kubelet asks -998 for every sandbox and -997 for critical pods such as the agent, so
// containerd keeps them at its own (restrict_oom_score_adj, made for such hosts), and the
// kubelet and kube-proxy leave their own at 0.
var containerdConfig = template.Must(template.New("containerd").Parse(`version = 3
root = "{{.Dir}}/containerd/root"
state = "{{.Dir}}/containerd/state"

[grpc]
  address = "{{.Socket}}"

[ttrpc]
  address = "{{.Socket}}.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{{.SandboxImage}}"

[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{{.CNIBin}}"]
    conf_dir = "{{.Dir}}/cni/net.d"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{{.Runc}}"
        Root = "{{.Dir}}/runc"
        SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true

[plugins.'io.containerd.nri.v1.nri']
  disable = true
`))

// kubeletConfig runs the kubelet on this kind of machine: cgroup v1 (failCgroupV1: false, the
// kubelet refuses v1 by default since 1.35), the cgroupfs driver under a cgroup root of the
// node's own, no swap check, no image garbage collection (the images were imported, there is
// no registry to pull them again), and clients authenticated by the node's CA and authorized
// by the API server.
var kubeletConfig = template.Must(template.New("kubelet").Parse(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {{.NodeIP}}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
oomScoreAdj: 0
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupRoot: {{.CgroupRoot}}
containerRuntimeEndpoint: unix://{{.Socket}}
podLogsDir: {{.Dir}}/pod-logs
resolvConf: ""
clusterDomain: cluster.local
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {{.CA}}
authorization:
  mode: Webhook
`))

// kubeProxyConfig is kube-proxy in iptables mode; masquerade decisions use the pods' range,
// so traffic between pods (through a ClusterIP included) keeps its source, and what comes
// from outside it through a NodePort is masqueraded. It leaves the machine-wide conntrack
// sysctls alone.
var kubeProxyConfig = template.Must(template.New("kube-proxy").Parse(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: {{.NodeName}}
clusterCIDR: {{.PodCIDR}}
clientConnection:
  kubeconfig: {{.Kubeconfig}}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
detectLocalMode: ClusterCIDR
oomScoreAdj: 0
nodePortAddresses: ["primary"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`))

func writeTemplate(path string, t *template.Template, data any) error {
	f, err := os.Create(path) //nolint:gosec // G304: under the node's folder
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := t.Execute(f, data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// cniConfig is the network of the node's pods: ptp gives each pod a veth and a /32 route on
// the node, as Calico does; bridge puts every pod's veth on one Linux bridge that is the
// pods' gateway. Neither masquerades: pods are reached by their own addresses.
func cniConfig(cni CNI, podCIDR, ipamDir string) ([]byte, error) {
	ipam := map[string]any{
		"type":    "host-local",
		"ranges":  [][]map[string]string{{{"subnet": podCIDR}}},
		"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
		"dataDir": ipamDir,
	}
	var plugin map[string]any
	switch cni {
	case PTP:
		plugin = map[string]any{"type": "ptp", "ipMasq": false, "mtu": 1500, "ipam": ipam}
	case Bridge:
		plugin = map[string]any{"type": "bridge", "bridge": BridgeName, "isGateway": true,
			"ipMasq": false, "hairpinMode": true, "ipam": ipam}
	default:
		return nil, fmt.Errorf("unknown CNI %q", cni)
	}
	return json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "podwall-" + string(cni),
		"plugins":    []any{plugin},
	}, "", "  ")
}

func writeCNIConfig(dir string, cni CNI, podCIDR string) error {
	conf, err := cniConfig(cni, podCIDR, filepath.Join(dir, "cni", "ipam"))
	if err != nil {
		return err
	}
	netd := filepath.Join(dir, "cni", "net.d")
	if err := os.MkdirAll(netd, 0o755); err != nil { //nolint:gosec // G301: read by containerd
		return fmt.Errorf("make %s: %w", netd, err)
	}
	path := filepath.Join(netd, "10-podwall.conflist")
	if err := os.WriteFile(path, conf, 0o644); err != nil { //nolint:gosec // G306: a config
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
