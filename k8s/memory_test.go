package k8s

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
)

// liveHeap is the heap in use once the garbage is collected.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkPodMemory measures what each agent holds per pod of the cluster (docs/SCALE.md),
// for 100,000 pods as BenchmarkAgent makes them (tests/agentbench): the informer's cached pod
// (cached-B/pod) and the compiler's cluster (compiler-B/pod), live heap after a collection.
func BenchmarkPodMemory(b *testing.B) {
	const n = 100_000
	api := make([]*corev1.Pod, n)
	for i := range api {
		app := fmt.Sprintf("app-%02d", (i/50)%40)
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%02d", i%50), Name: fmt.Sprintf("%s-%05d", app, i),
				UID: "6f1c2a9e-2b8d-4a53-9d7e-0c1f5a3b7e21", ResourceVersion: fmt.Sprint(100_000 + i),
				Labels: map[string]string{"app": app, "tier": []string{"frontend", "backend", "db"}[i%3],
					"pod-template-hash": fmt.Sprintf("%08x", (i/50)%40*2654435761%(1<<32))}},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-%03d", i/100)},
			Status: corev1.PodStatus{PodIPs: []corev1.PodIP{
				{IP: netip.AddrFrom4([4]byte{10, byte(128 + i>>16), byte(i >> 8), byte(i)}).String()},
				{IP: netip.AddrFrom16([16]byte{0: 0xfd, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}).String()},
			}},
		}
		if i%3 != 2 {
			p.Annotations = map[string]string{policy.AnnotationKey: fmt.Sprintf("allow tcp from label tier=frontend to ports 8080,8443; "+
				"allow udp from label app=app-%02d to ports 53; allow icmp type 8; deny from cidr 10.200.%d.0/24", i%40, i%256)}
		}
		api[i] = p
	}
	for b.Loop() {
		before := liveHeap()
		cached := make([]*cachedPod, n)
		for i, p := range api {
			// A copy: the decoded pod the informer's transform is given is garbage after it.
			o, err := Transform(p.DeepCopy())
			if err != nil {
				b.Fatal(err)
			}
			cached[i] = o.(*cachedPod)
		}
		withCached := liveHeap()
		var c compiler.Compiler
		c.SetPods(compilerPods(cached))
		withCompiler := liveHeap()
		b.ReportMetric(float64(withCached-before-n*8)/n, "cached-B/pod")
		b.ReportMetric(float64(withCompiler-withCached)/n, "compiler-B/pod")
		runtime.KeepAlive(cached)
		runtime.KeepAlive(&c)
	}
}

func compilerPods(cached []*cachedPod) []compiler.Pod {
	out := make([]compiler.Pod, len(cached))
	for i, p := range cached {
		out[i] = p.Pod.Pod
	}
	return out
}
