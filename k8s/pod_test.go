package k8s

import (
	"net/netip"
	"reflect"
	"runtime"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
)

func fullPod() *corev1.Pod {
	now := metav1.Now()
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-0", Namespace: "prod", UID: "u1", ResourceVersion: "42",
			Labels: map[string]string{"role": "frontend"},
			Annotations: map[string]string{
				policy.AnnotationKey:                               "allow tcp to ports 80",
				policy.LegacyAnnotationKey:                         "allow",
				"kubectl.kubernetes.io/last-applied-configuration": "{...}",
			},
			DeletionTimestamp: &now,
			ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
			OwnerReferences:   []metav1.OwnerReference{{Name: "web"}},
		},
		Spec: corev1.PodSpec{
			NodeName:    "node-1",
			HostNetwork: true,
			Containers:  []corev1.Container{{Name: "web", Image: "nginx"}},
		},
		Status: corev1.PodStatus{
			Phase:             corev1.PodRunning,
			PodIP:             "10.0.0.5",
			PodIPs:            []corev1.PodIP{{IP: "10.0.0.5"}, {IP: "fd00::5"}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "web", Ready: true}},
		},
	}
}

func TestTransform(t *testing.T) {
	want := Pod{
		Pod: compiler.Pod{Namespace: "prod", Name: "web-0", Labels: map[string]string{"role": "frontend"},
			Annotations: map[string]string{policy.AnnotationKey: "allow tcp to ports 80", policy.LegacyAnnotationKey: "allow"},
			IPs:         []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")}, HostNetwork: true},
		UID: "u1", Node: "node-1",
	}
	got, err := Transform(fullPod())
	require.NoError(t, err)
	require.Equal(t, want, got.(*cachedPod).Pod)
	m, err := meta.Accessor(got)
	require.NoError(t, err)
	require.Equal(t, []string{"prod", "web-0", "u1", "42"}, []string{m.GetNamespace(), m.GetName(), string(m.GetUID()), m.GetResourceVersion()})
	again, err := Transform(got)
	require.NoError(t, err)
	require.Same(t, got, again, "idempotent")
	require.Equal(t, want, got.(*cachedPod).DeepCopyObject().(*cachedPod).Pod)

	noPolicy := fullPod()
	noPolicy.Annotations = map[string]string{"other": "x"}
	got, err = Transform(noPolicy)
	require.NoError(t, err)
	require.Nil(t, got.(*cachedPod).Pod.Annotations)

	ns := &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: "prod", UID: "n1", ResourceVersion: "7", Labels: map[string]string{"a": "b"}},
		Spec:       corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}},
	}
	got, err = Transform(ns)
	require.NoError(t, err)
	require.Equal(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", UID: "n1", ResourceVersion: "7"}}, got)

	other := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "svc"}}
	got, err = Transform(other)
	require.NoError(t, err)
	require.Same(t, other, got)
}

// TestPodsShareLabelsAndAnnotations: pods with equal labels (or policy annotations) hold one
// map, and a set no cached pod holds is forgotten.
func TestPodsShareLabelsAndAnnotations(t *testing.T) {
	transform := func(name string, labels map[string]string) *cachedPod {
		p := fullPod()
		p.Name, p.Labels = name, labels
		got, err := Transform(p)
		require.NoError(t, err)
		return got.(*cachedPod)
	}
	same := func(a, b map[string]string) bool {
		return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
	}
	c := transform("c", map[string]string{"app": "shared-test", "tier": "db"})
	held := func(key string) bool {
		podMaps.mu.Lock()
		defer podMaps.mu.Unlock()
		_, ok := podMaps.sets[key]
		return ok
	}
	// a and b are dropped once compared: no pod then holds their set.
	key := func() string {
		a := transform("a", map[string]string{"app": "shared-test", "tier": "web"})
		b := transform("b", map[string]string{"tier": "web", "app": "shared-test"})
		require.True(t, same(a.Pod.Labels, b.Pod.Labels), "equal labels, one map")
		require.False(t, same(a.Pod.Labels, c.Pod.Labels))
		require.True(t, same(a.Pod.Annotations, c.Pod.Annotations), "equal annotations, one map")
		require.True(t, held(setKey(a.Pod.Labels)))
		return setKey(a.Pod.Labels)
	}()
	require.Equal(t, map[string]string{"app": "shared-test", "tier": "db"}, c.Pod.Labels)
	// A pod relabelled to c's labels and then away (another pod's writes) leaves c's as they were.
	d := transform("d", map[string]string{"app": "shared-test", "tier": "db"})
	require.True(t, same(c.Pod.Labels, d.Pod.Labels))
	d = transform("d", map[string]string{"app": "shared-test", "tier": "web", "role": "admin"})
	require.Equal(t, map[string]string{"app": "shared-test", "tier": "db"}, c.Pod.Labels, "c keeps its labels")
	require.Equal(t, "admin", d.Pod.Labels["role"])
	// Lengths lead each string: these two sets would otherwise encode alike.
	require.NotEqual(t, setKey(map[string]string{"a": "b1:c"}), setKey(map[string]string{"a": "b", "c": ""}))

	require.Eventually(t, func() bool { runtime.GC(); return !held(key) }, 10*time.Second, 10*time.Millisecond,
		"a set no pod holds is forgotten")
	runtime.KeepAlive(c)
}

func TestPodFromAPI(t *testing.T) {
	addrs := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	for _, tt := range []struct {
		name   string
		status corev1.PodStatus
		ips    []netip.Addr
	}{
		{"podIPs", corev1.PodStatus{PodIP: "10.0.0.5", PodIPs: []corev1.PodIP{{IP: "10.0.0.5"}, {IP: "fd00::5"}}}, addrs("10.0.0.5", "fd00::5")},
		{"podIP only", corev1.PodStatus{PodIP: "10.0.0.5"}, addrs("10.0.0.5")},
		{"no address yet", corev1.PodStatus{Phase: corev1.PodPending}, nil},
		{"bad address skipped", corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "nope"}, {IP: "fd00::5"}}}, addrs("fd00::5")},
		{"repeated address once", corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "fd00::5"}, {IP: "fd00::5"}}}, addrs("fd00::5")},
		{"succeeded: addresses released", corev1.PodStatus{Phase: corev1.PodSucceeded, PodIP: "10.0.0.5"}, nil},
		{"failed: addresses released", corev1.PodStatus{Phase: corev1.PodFailed, PodIP: "10.0.0.5"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := fullPod()
			p.Status = tt.status
			got := podFromAPI(p)
			require.Equal(t, tt.ips, got.IPs)
			require.Equal(t, "prod", got.Namespace)
			require.Equal(t, "web-0", got.Name)
			require.Equal(t, "node-1", got.Node)
			require.EqualValues(t, "u1", got.UID)
			require.True(t, got.HostNetwork)
			require.Equal(t, map[string]string{"role": "frontend"}, got.Labels)
		})
	}
}
