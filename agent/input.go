package agent

import (
	"cmp"
	"slices"

	"k8s.io/apimachinery/pkg/types"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/k8s"
)

// podKey names a pod.
type podKey struct{ namespace, name string }

func keyOf(p k8s.Pod) podKey { return podKey{p.Namespace, p.Name} }

func (k podKey) String() string { return k.namespace + "/" + k.name }

// view is what the agent keeps of the cluster as the source's Deltas left it, at the cost
// of each change: its pods' UIDs (for Events), this node's pods, and its namespaces. It
// hands each pod change to the compiler, which keeps the rest.
type view struct {
	node                 string
	uids                 map[podKey]types.UID
	locals               map[podKey]k8s.Pod
	namespaces           []string
	namespaceAnnotations map[string]map[string]string
}

func newView(node string) *view {
	return &view{node: node, uids: map[podKey]types.UID{}, locals: map[podKey]k8s.Pod{}}
}

// take applies d, and hands the pods it changes to c: after a Full Delta (a start) the
// cluster whole, so that c numbers the identities as any agent starting on it would.
func (v *view) take(d k8s.Delta, c *compiler.Compiler) {
	v.namespaces, v.namespaceAnnotations = d.Namespaces, d.NamespaceAnnotations
	if d.Full {
		clear(v.uids)
		clear(v.locals)
		pods := make([]compiler.Pod, len(d.Pods))
		for i, p := range d.Pods {
			pods[i] = p.Pod
		}
		c.SetPods(pods)
	}
	for _, p := range d.Pods {
		k := keyOf(p)
		v.uids[k] = p.UID
		if p.Node == v.node && !p.HostNetwork && len(p.IPs) > 0 {
			v.locals[k] = p
		} else {
			delete(v.locals, k)
		}
		if !d.Full {
			c.SetPod(p.Pod)
		}
	}
	for _, k := range d.Deleted {
		key := podKey{k.Namespace, k.Name}
		delete(v.uids, key)
		delete(v.locals, key)
		if !d.Full {
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
