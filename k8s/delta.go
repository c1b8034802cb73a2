package k8s

import (
	"maps"
	"slices"
)

// PodKey names a pod.
type PodKey struct{ Namespace, Name string }

// Delta is what changed in a source since its last Delta: what an agent pays for a change,
// rather than the whole cluster.
type Delta struct {
	// Full says that Pods are all the pods, as at the first Delta: a pod not in it is gone.
	Full bool
	// Pods came or changed; Deleted are gone.
	Pods    []Pod
	Deleted []PodKey
	// Namespaces and NamespaceAnnotations are whole, as in a Snapshot.
	Namespaces           []string
	NamespaceAnnotations map[string]map[string]string
}

// Differ makes Deltas of a source that only has whole Snapshots (a pods file), at the cost of
// comparing each with the last.
type Differ struct {
	last  map[PodKey]Pod
	begun bool
}

// Diff is what changed from the last snapshot given to s; the first is Full.
func (d *Differ) Diff(s Snapshot) Delta {
	out := Delta{Full: !d.begun, Namespaces: s.Namespaces, NamespaceAnnotations: s.NamespaceAnnotations}
	now := make(map[PodKey]Pod, len(s.Pods))
	for _, p := range s.Pods {
		k := PodKey{p.Namespace, p.Name}
		now[k] = p
		if old, ok := d.last[k]; out.Full || !ok || !samePod(old, p) {
			out.Pods = append(out.Pods, p)
		}
	}
	for k := range d.last {
		if _, ok := now[k]; !ok {
			out.Deleted = append(out.Deleted, k)
		}
	}
	d.last, d.begun = now, true
	return out
}

func samePod(a, b Pod) bool {
	return a.UID == b.UID && a.Node == b.Node && a.HostNetwork == b.HostNetwork && slices.Equal(a.IPs, b.IPs) &&
		maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Annotations, b.Annotations)
}
