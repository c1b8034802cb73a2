package agent

import (
	"net/netip"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/k8s"
)

// podKey names a pod.
type podKey struct{ namespace, name string }

func keyOf(p k8s.Pod) podKey { return podKey{p.Namespace, p.Name} }

func (k podKey) String() string { return k.namespace + "/" + k.name }

// localPods are the pods of the snapshot that run on node and have an interface of their
// own to guard: not host-network pods, and only once they have an address.
func localPods(snap k8s.Snapshot, node string) []k8s.Pod {
	var out []k8s.Pod
	for _, p := range snap.Pods {
		if p.Node == node && !p.HostNetwork && len(p.IPs) > 0 {
			out = append(out, p)
		}
	}
	return out
}

// buildInput is what the compiler gets: every pod of the cluster, the endpoints found on
// this node, and the node's own addresses.
func buildInput(snap k8s.Snapshot, endpoints []compiler.Endpoint, hostIPs []netip.Addr, opts compiler.Options) compiler.Input {
	pods := make([]compiler.Pod, len(snap.Pods))
	for i, p := range snap.Pods {
		pods[i] = p.Pod
	}
	return compiler.Input{Pods: pods, Endpoints: endpoints, HostIPs: hostIPs, NamespaceAnnotations: snap.NamespaceAnnotations, Options: opts}
}
