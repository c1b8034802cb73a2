package k8s

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/policy"
	"github.com/podwall/podwall/tests/kapi"
)

// TestClusterSource runs the informers source and the recorder against a real kube-apiserver.
func TestClusterSource(t *testing.T) {
	kc := kapi.Start(t)
	src := NewCluster(kc.Client)
	_, err := src.Snapshot()
	require.ErrorIs(t, err, ErrNotSynced)

	kc.CreateNamespace(t, "shop", nil)
	n := newNotifications()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- src.Run(ctx, n.notify) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	require.NoError(t, n.next(t), "synced")
	snap, err := src.Snapshot()
	require.NoError(t, err)
	require.Contains(t, snap.Namespaces, "shop")

	// awaitPod waits for a snapshot in which the pod is as want says.
	awaitPod := func(what string, want func(p *Pod) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			snap, err := src.Snapshot()
			require.NoError(t, err)
			i := slices.IndexFunc(snap.Pods, func(p Pod) bool { return p.Namespace == "shop" && p.Name == "api" })
			var p *Pod
			if i >= 0 {
				p = &snap.Pods[i]
			}
			if want(p) {
				return
			}
			require.True(t, time.Now().Before(deadline), "%s: pod is %+v", what, p)
			time.Sleep(10 * time.Millisecond)
		}
	}

	kc.CreatePod(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api",
			Labels:      map[string]string{"role": "backend"},
			Annotations: map[string]string{policy.AnnotationKey: "allow tcp to ports 80", "other": "dropped"}},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
	})
	awaitPod("created", func(p *Pod) bool { return p != nil })
	kc.SetPodIPs(t, "shop", "api", "10.0.0.5", "fd00::5")
	awaitPod("addresses", func(p *Pod) bool { return p != nil && len(p.IPs) == 2 })
	snap, err = src.Snapshot()
	require.NoError(t, err)
	i := slices.IndexFunc(snap.Pods, func(p Pod) bool { return p.Name == "api" })
	got := snap.Pods[i]
	require.Equal(t, map[string]string{policy.AnnotationKey: "allow tcp to ports 80"}, got.Annotations, "the transform keeps only policy")
	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")}, got.IPs)
	require.Equal(t, "node-1", got.Node)
	require.NotEmpty(t, got.UID)

	// Events land on the pod.
	rec := NewRecorder(t.Context(), kc.Client, "node-1")
	t.Cleanup(rec.Shutdown)
	rec.PodWarning(got, "InvalidPolicy", `rule 1, offset 0 ("x"): expected "allow" or "deny"`)
	require.Eventually(t, func() bool {
		evs, err := kc.Client.CoreV1().Events("shop").List(t.Context(), metav1.ListOptions{})
		require.NoError(t, err)
		for _, e := range evs.Items {
			if e.Reason == "InvalidPolicy" && e.InvolvedObject.Name == "api" && e.InvolvedObject.UID == got.UID &&
				e.Type == corev1.EventTypeWarning && e.Message == `rule 1, offset 0 ("x"): expected "allow" or "deny"` &&
				e.Source.Component == Component {
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond)

	// A cut watch keeps the cache, and changes are seen again once client-go watches anew.
	kc.RestartAPIServer(t)
	snap, err = src.Snapshot()
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(snap.Pods, func(p Pod) bool { return p.Name == "api" }), "kept while disconnected")
	kc.DeletePod(t, "shop", "api")
	awaitPod("deleted", func(p *Pod) bool { return p == nil })
}

// TestClusterChanges checks that the source hands over what changed, read from the cache of
// a real kube-apiserver's informers: every pod first, then only the pods that changed or left.
func TestClusterChanges(t *testing.T) {
	kc := kapi.Start(t)
	src := NewCluster(kc.Client)
	_, err := src.Changes()
	require.ErrorIs(t, err, ErrNotSynced)
	kc.CreateNamespace(t, "shop", nil)
	for _, name := range []string{"a", "b", "c"} {
		kc.CreatePod(t, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, Labels: map[string]string{"app": name}},
			Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
		})
	}
	n := newNotifications()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- src.Run(ctx, n.notify) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	require.NoError(t, n.next(t), "synced")
	d, err := src.Changes()
	require.NoError(t, err)
	require.True(t, d.Full)
	require.Len(t, d.Pods, 3)
	require.Contains(t, d.Namespaces, "shop")

	// await gathers deltas until one holds what want looks for.
	await := func(what string, want func(Delta) bool) {
		t.Helper()
		require.Eventually(t, func() bool {
			d, err := src.Changes()
			require.NoError(t, err)
			require.False(t, d.Full, what)
			return want(d)
		}, 10*time.Second, 10*time.Millisecond, what)
	}
	kc.SetPodLabels(t, "shop", "b", map[string]string{"app": "bee"})
	await("relabel", func(d Delta) bool {
		for _, p := range d.Pods {
			require.Equal(t, "b", p.Name, "only the pod that changed")
		}
		return len(d.Pods) == 1 && d.Pods[0].Labels["app"] == "bee"
	})
	kc.DeletePod(t, "shop", "c")
	await("delete", func(d Delta) bool {
		// Handlers run behind the cache, so a change may be read twice (Changes): c unchanged,
		// before its deletion reached the cache, but no other pod.
		for _, p := range d.Pods {
			require.Equal(t, "c", p.Name, "only the pod that changed")
		}
		return slices.Equal(d.Deleted, []PodKey{{Namespace: "shop", Name: "c"}})
	})
	d, err = src.Changes()
	require.NoError(t, err)
	require.Empty(t, d.Pods, "nothing changed since")
	require.Empty(t, d.Deleted, "nothing changed since")
}
