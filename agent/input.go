package agent

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/k8s"
)

// podKey names a pod.
type podKey struct{ namespace, name string }

func keyOf(p k8s.Pod) podKey { return podKey{p.Namespace, p.Name} }

func (k podKey) String() string { return k.namespace + "/" + k.name }

// view is the cluster as the source's Deltas left it, kept at the cost of each change: its
// pods, this node's among them, and its namespaces. It hands each pod change to the
// compiler as it takes it.
type view struct {
	node   string
	pods   map[podKey]k8s.Pod
	locals map[podKey]k8s.Pod
	// whole says the compiler is to take the cluster whole at its next turn: after a Full
	// Delta (a start), so that it numbers the identities as any agent starting on this
	// cluster would.
	whole                bool
	namespaces           []string
	namespaceAnnotations map[string]map[string]string
}

func newView(node string) *view {
	return &view{node: node, pods: map[podKey]k8s.Pod{}, locals: map[podKey]k8s.Pod{}}
}

// take applies d, and hands each pod it changes to c unless d is Full.
func (v *view) take(d k8s.Delta, c *compiler.Compiler) {
	v.namespaces, v.namespaceAnnotations = d.Namespaces, d.NamespaceAnnotations
	if d.Full {
		clear(v.pods)
		clear(v.locals)
		v.whole = true
	}
	for _, p := range d.Pods {
		k := keyOf(p)
		v.pods[k] = p
		if p.Node == v.node && !p.HostNetwork && len(p.IPs) > 0 {
			v.locals[k] = p
		} else {
			delete(v.locals, k)
		}
		if !v.whole {
			c.SetPod(p.Pod)
		}
	}
	for _, k := range d.Deleted {
		key := podKey{k.Namespace, k.Name}
		delete(v.pods, key)
		delete(v.locals, key)
		if !v.whole {
			c.DeletePod(k.Namespace, k.Name)
		}
	}
}

// localPods are the pods that run on the node and have an interface of their own to guard:
// not host-network pods, and only once they have an address; by namespace and name.
func (v *view) localPods() []k8s.Pod {
	out := make([]k8s.Pod, 0, len(v.locals))
	for _, p := range v.locals {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b k8s.Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// compile is the compiler's turn on the node's endpoints and addresses: on the whole
// cluster after a Full Delta, on the changes it was handed since otherwise.
func (v *view) compile(c *compiler.Compiler, endpoints []compiler.Endpoint, hostIPs []netip.Addr, opts compiler.Options) *compiler.State {
	in := compiler.Input{Endpoints: endpoints, HostIPs: hostIPs, NamespaceAnnotations: v.namespaceAnnotations, Options: opts}
	if !v.whole {
		return c.CompileNode(in)
	}
	in.Pods = make([]compiler.Pod, 0, len(v.pods))
	for _, p := range v.pods {
		in.Pods = append(in.Pods, p.Pod)
	}
	v.whole = false
	return c.Compile(in)
}
