package k8s

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSnapshotConvertsOnlyObjectsItHasNotSeen(t *testing.T) {
	pod := func(name, ip string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name},
			Status:     corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: ip}}},
		}
	}
	a, b := pod("a", "10.0.0.1"), pod("b", "10.0.0.2")
	var c Cluster
	first := c.convert([]*corev1.Pod{a, b})
	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.0.0.1")}, first[0].IPs)

	// An informer replaces a changed object: the new object is converted, the old one's
	// conversion is dropped with it, and an unchanged object keeps its conversion.
	a2 := pod("a", "10.0.0.9")
	second := c.convert([]*corev1.Pod{a2, b})
	require.Equal(t, []netip.Addr{netip.MustParseAddr("10.0.0.9")}, second[0].IPs)
	require.Equal(t, first[1], second[1])
	require.Len(t, c.converted, 2)
	require.NotContains(t, c.converted, a)

	require.Empty(t, c.convert(nil))
	require.Empty(t, c.converted)
}
