package k8s

import (
	"errors"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
)

// ErrNotSynced is returned by a source's Snapshot before it first held a whole view.
var ErrNotSynced = errors.New("source not synced yet")

// Pod is what the agent keeps of a pod: what the compiler needs, the node it runs on, and
// its UID for Events.
type Pod struct {
	compiler.Pod
	UID  types.UID
	Node string
}

// Snapshot is the cluster as a source last saw it.
type Snapshot struct {
	Pods []Pod
	// Namespaces are the names of the namespaces that exist, sorted.
	Namespaces []string
	// NamespaceAnnotations are the annotations podwall reads (the audit annotation) of each
	// namespace that has one, by name.
	NamespaceAnnotations map[string]map[string]string
}

// policyKeys are the only annotations of a Pod the transform keeps, namespaceKeys those of a
// Namespace.
var (
	policyKeys    = []string{policy.AnnotationKey, policy.LegacyAnnotationKey, policy.AuditAnnotationKey}
	namespaceKeys = []string{policy.AuditAnnotationKey}
)

// Transform is the informers' transform: it turns a Pod into a cachedPod, the Pod podFromAPI
// makes of it with the metadata the informer needs, and a Namespace into one with only its
// name, UID, resource version and the annotations podwall reads, before the object reaches the
// cache: specs, statuses, managed fields and other annotations are dropped. Other objects pass
// unchanged. It is idempotent, as client-go asks.
func Transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return newCachedPod(o), nil
	case *corev1.Namespace:
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name:            o.Name,
			UID:             o.UID,
			ResourceVersion: o.ResourceVersion,
			Annotations:     keep(o.Annotations, namespaceKeys),
		}}, nil
	}
	return obj, nil
}

// cachedPod is what the informer keeps of a pod: the Pod podFromAPI makes of it, about a
// tenth of a corev1.Pod, whose empty spec and status alone take a kilobyte, for each pod of the
// cluster (docs/SCALE.md). Its labels and annotations are maps it shares with the pods that
// have the same, and its metadata is made when asked for.
type cachedPod struct {
	Pod             Pod
	resourceVersion string
	// labels and annotations keep Pod's shared maps alive while the pod is cached.
	labels, annotations *stringMap
}

func newCachedPod(o *corev1.Pod) *cachedPod {
	p := &cachedPod{Pod: podFromAPI(o), resourceVersion: o.ResourceVersion}
	p.Pod.Namespace, p.Pod.Node = intern(p.Pod.Namespace), intern(p.Pod.Node)
	p.labels, p.annotations = podMaps.share(p.Pod.Labels), podMaps.share(p.Pod.Annotations)
	p.Pod.Labels, p.Pod.Annotations = p.labels.get(), p.annotations.get()
	return p
}

// GetObjectMeta is the metadata the informer reads: name, namespace, UID and resource version.
func (p *cachedPod) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: p.Pod.Namespace, Name: p.Pod.Name, UID: p.Pod.UID, ResourceVersion: p.resourceVersion}
}

func (p *cachedPod) GetResourceVersion() string { return p.resourceVersion }

func (*cachedPod) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject copies p but for its maps, which are read only.
func (p *cachedPod) DeepCopyObject() runtime.Object {
	out := *p
	out.Pod.IPs = slices.Clone(p.Pod.IPs)
	return &out
}

// keep is the annotations of keys that all has; nil when none.
func keep(all map[string]string, keys []string) map[string]string {
	var kept map[string]string
	for _, k := range keys {
		if v, ok := all[k]; ok {
			if kept == nil {
				kept = map[string]string{}
			}
			kept[k] = v
		}
	}
	return kept
}

// addNamespace notes a namespace of the snapshot, with the annotations podwall reads.
func (s *Snapshot) addNamespace(name string, annotations map[string]string) {
	s.Namespaces = append(s.Namespaces, name)
	if kept := keep(annotations, namespaceKeys); kept != nil {
		if s.NamespaceAnnotations == nil {
			s.NamespaceAnnotations = map[string]map[string]string{}
		}
		s.NamespaceAnnotations[name] = kept
	}
}

// podFromAPI converts an API pod, with only the annotations podwall reads. Its addresses come
// from status.podIPs, or status.podIP when that is empty; addresses that do not parse are left
// out. A pod that has finished
// (phase Succeeded or Failed) has no addresses: its sandbox is gone and its addresses may
// already be another pod's. A pod being deleted keeps them: it runs, and must stay enforced,
// until it is gone.
func podFromAPI(p *corev1.Pod) Pod {
	out := Pod{
		Pod: compiler.Pod{
			Namespace:   p.Namespace,
			Name:        p.Name,
			Labels:      p.Labels,
			Annotations: keep(p.Annotations, policyKeys),
			HostNetwork: p.Spec.HostNetwork,
		},
		UID:  p.UID,
		Node: p.Spec.NodeName,
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return out
	}
	ips := make([]string, 0, len(p.Status.PodIPs))
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = append(ips, p.Status.PodIP)
	}
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(out.IPs, a) {
			out.IPs = append(out.IPs, a)
		}
	}
	return out
}
