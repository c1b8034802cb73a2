package kapi

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
)

// opTimeout bounds one helper's calls to the API server.
const opTimeout = 30 * time.Second

// placeholderImage fills in the container a pod must have; no kubelet ever pulls it.
const placeholderImage = "registry.k8s.io/pause:3.10"

// opContext is not derived from tb.Context, which is canceled before cleanups run: a test
// that shares one cluster between subtests deletes each subtest's objects in a cleanup.
func opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// CreateNamespace creates a namespace with the given labels.
func (c *Cluster) CreateNamespace(tb testing.TB, name string, labels map[string]string) *corev1.Namespace {
	tb.Helper()
	ctx, cancel := opContext()
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	ns, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("kapi: create namespace %s: %v", name, err)
	}
	return ns
}

// DeleteNamespace deletes a namespace and returns once it is gone. With no controller
// manager, it does the namespace controller's part: the namespace turns Terminating, its
// pods are deleted (with grace period 0), and it is finalized with its finalizers cleared.
// Watchers see the events in the order a real cluster gives them. Objects other than pods
// stay in etcd.
func (c *Cluster) DeleteNamespace(tb testing.TB, name string) {
	tb.Helper()
	ctx, cancel := opContext()
	defer cancel()
	namespaces := c.Client.CoreV1().Namespaces()
	if err := namespaces.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		tb.Fatalf("kapi: delete namespace %s: %v", name, err)
	}
	err := c.Client.CoreV1().Pods(name).DeleteCollection(ctx,
		metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{})
	if err != nil {
		tb.Fatalf("kapi: delete pods of namespace %s: %v", name, err)
	}
	ns, err := namespaces.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		tb.Fatalf("kapi: get terminating namespace %s: %v", name, err)
	}
	ns.Spec.Finalizers = nil
	if _, err := namespaces.Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil {
		tb.Fatalf("kapi: finalize namespace %s: %v", name, err)
	}
	err = wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		_, err := namespaces.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	if err != nil {
		tb.Fatalf("kapi: wait for namespace %s to go: %v", name, err)
	}
}

// CreatePod creates pod as given, adding a placeholder container when it has none (the API
// requires one; nothing runs it). Set Spec.NodeName to place the pod on a node: no
// scheduler runs, and no Node object is needed.
func (c *Cluster) CreatePod(tb testing.TB, pod *corev1.Pod) *corev1.Pod {
	tb.Helper()
	ctx, cancel := opContext()
	defer cancel()
	pod = pod.DeepCopy()
	if len(pod.Spec.Containers) == 0 {
		pod.Spec.Containers = []corev1.Container{{Name: "placeholder", Image: placeholderImage}}
	}
	pod, err := c.Client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("kapi: create pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	return pod
}

// SetPodIPs does the kubelet's part once a pod's sandbox has addresses: it sets status.podIP
// to the first of ips, status.podIPs to all of them, and the phase to Running, through the
// status subresource.
func (c *Cluster) SetPodIPs(tb testing.TB, namespace, name string, ips ...string) *corev1.Pod {
	tb.Helper()
	ctx, cancel := opContext()
	defer cancel()
	status := corev1.PodStatus{Phase: corev1.PodRunning}
	for _, ip := range ips {
		status.PodIPs = append(status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		status.PodIP = ips[0]
	}
	// A JSON merge patch replaces the podIPs list whole, where a strategic one would merge it.
	patch, err := json.Marshal(map[string]any{"status": map[string]any{
		"phase":  status.Phase,
		"podIP":  status.PodIP,
		"podIPs": status.PodIPs,
	}})
	if err != nil {
		tb.Fatalf("kapi: encode status of pod %s/%s: %v", namespace, name, err)
	}
	pod, err := c.Client.CoreV1().Pods(namespace).Patch(ctx, name, types.MergePatchType, patch,
		metav1.PatchOptions{}, "status")
	if err != nil {
		tb.Fatalf("kapi: set IPs of pod %s/%s: %v", namespace, name, err)
	}
	return pod
}

// SetPodLabels sets labels of a pod, as `kubectl label --overwrite` does: the keys given
// take the values given, the others stay.
func (c *Cluster) SetPodLabels(tb testing.TB, namespace, name string, labels map[string]string) *corev1.Pod {
	tb.Helper()
	ctx, cancel := opContext()
	defer cancel()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if err != nil {
		tb.Fatalf("kapi: encode labels of pod %s/%s: %v", namespace, name, err)
	}
	pod, err := c.Client.CoreV1().Pods(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		tb.Fatalf("kapi: label pod %s/%s: %v", namespace, name, err)
	}
	return pod
}

// DeletePod deletes a pod with grace period 0, so it goes at once: with no kubelet to confirm
// the containers stopped, a pod bound to a node would otherwise stay Terminating.
func (c *Cluster) DeletePod(tb testing.TB, namespace, name string) {
	tb.Helper()
	ctx, cancel := opContext()
	defer cancel()
	err := c.Client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	if err != nil {
		tb.Fatalf("kapi: delete pod %s/%s: %v", namespace, name, err)
	}
}
