package k8s

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"
)

// BenchmarkDecodePod decodes a pod as an agent's watch receives it, with the fields the
// API server adds (managed fields, status), in JSON and in protobuf (UseProtobuf).
func BenchmarkDecodePod(b *testing.B) {
	pod := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns-07", Name: "app-12-04567", UID: "6f1c2a9e-2b8d-4a53-9d7e-0c1f5a3b7e21",
			ResourceVersion: "123456", Labels: map[string]string{"app": "app-12", "tier": "frontend", "pod-template-hash": "5d8f7c9b4"},
			Annotations: map[string]string{"projectcalico.org/policy": "allow tcp from label tier=frontend to ports 8080,8443; allow icmp type 8"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate,
				APIVersion: "v1", FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(`{"f:metadata":{"f:labels":{".":{},"f:app":{},"f:tier":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"main\"}":{".":{},"f:image":{},"f:name":{}}}}}`)}}},
		Spec: corev1.PodSpec{NodeName: "node-042", Containers: []corev1.Container{{
			Name: "main", Image: "registry.example/app-12:v1.2.3", Args: []string{"--listen=:8080"},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.128.17.9",
			PodIPs: []corev1.PodIP{{IP: "10.128.17.9"}, {IP: "fd00:128::11:9"}}},
	}
	for _, c := range []struct {
		name string
		s    runtime.Serializer
	}{
		{"json", k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, k8sjson.SerializerOptions{})},
		{"protobuf", protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)},
	} {
		var buf bytes.Buffer
		require.NoError(b, c.s.Encode(pod, &buf))
		data := buf.Bytes()
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var into corev1.Pod
				if _, _, err := c.s.Decode(data, nil, &into); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "bytes")
		})
	}
}
