package k8s

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// Component is the source of podwall's Events.
const Component = "podwall"

// Recorder posts the agent's warnings as Kubernetes Events, on the pod they are about or on
// the node. client-go's broadcaster sends them in the background, aggregates repeats and
// rate-limits per object; failures to post are its to log.
type Recorder struct {
	broadcaster record.EventBroadcaster
	rec         record.EventRecorder
	node        string
}

// NewRecorder starts a recorder that posts Events through client as the agent of node.
func NewRecorder(ctx context.Context, client kubernetes.Interface, node string) *Recorder {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return &Recorder{
		broadcaster: b,
		rec:         b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component, Host: node}),
		node:        node,
	}
}

// PodWarning posts a Warning Event on a pod.
func (r *Recorder) PodWarning(p Pod, reason, message string) {
	ref := &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: p.UID}
	r.rec.Event(ref, corev1.EventTypeWarning, reason, message)
}

// NodeWarning posts a Warning Event on the agent's node.
func (r *Recorder) NodeWarning(reason, message string) {
	// The kubelet's convention: a node's Events name it by its name as UID too.
	ref := &corev1.ObjectReference{Kind: "Node", Name: r.node, UID: types.UID(r.node)}
	r.rec.Event(ref, corev1.EventTypeWarning, reason, message)
}

// Shutdown stops sending Events.
func (r *Recorder) Shutdown() { r.broadcaster.Shutdown() }
