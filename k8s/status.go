package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// ConditionEnforced is the pod condition the agent owns: True once the kernel holds the pod's
// current policy on its interface, False with the reason while it does not. A pod that lists
// it in spec.readinessGates is not Ready, so gets no Service traffic, until then.
const ConditionEnforced corev1.PodConditionType = "podwall.io/policy-enforced"

// StatusWriter sets ConditionEnforced on pods, and nothing else of their status.
type StatusWriter struct {
	client kubernetes.Interface
}

// NewStatusWriter writes through client, which needs patch on pods/status.
func NewStatusWriter(client kubernetes.Interface) *StatusWriter { return &StatusWriter{client: client} }

// SetEnforced patches the pod's ConditionEnforced: a strategic merge of status.conditions,
// whose merge key is the type, so the kubelet's conditions stay as they are. The pod's UID is
// a precondition: a pod re-created under the same name is not given the old one's condition.
// since is when the condition took its status (lastTransitionTime).
func (w *StatusWriter) SetEnforced(ctx context.Context, p Pod, enforced bool, reason, message string, since time.Time) error {
	status := corev1.ConditionFalse
	if enforced {
		status = corev1.ConditionTrue
	}
	patch := map[string]any{
		"metadata": map[string]any{"uid": p.UID},
		"status": map[string]any{"conditions": []corev1.PodCondition{{
			Type: ConditionEnforced, Status: status, Reason: reason, Message: message,
			LastTransitionTime: metav1.NewTime(since),
		}}},
	}
	data, err := json.Marshal(patch)
	if err != nil {
		return fmt.Errorf("encode the condition of %s/%s: %w", p.Namespace, p.Name, err)
	}
	_, err = w.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.StrategicMergePatchType, data, metav1.PatchOptions{
		FieldManager: Component,
	}, "status")
	if err != nil {
		return fmt.Errorf("set %s on %s/%s: %w", ConditionEnforced, p.Namespace, p.Name, err)
	}
	return nil
}
