package compilertest

import (
	"maps"
	"slices"

	"github.com/podwall/podwall/compiler"
)

// Feeder hands a Compiler what changed between the inputs of its turns, as the agent does:
// the pods that came, changed or left (SetPod, DeletePod), then the node's part of the
// input (CompileNode). A turn whose input, or the one before, has two pods of one name is
// given whole (Compile): which of them is real is not a change of one pod.
type Feeder struct {
	C     compiler.Compiler
	prev  map[podName]compiler.Pod
	dups  bool
	begun bool
}

type podName struct{ namespace, name string }

// Turn gives the Feeder's Compiler the change from the last input to in.
func (f *Feeder) Turn(in compiler.Input) *compiler.State {
	pods, dups := byName(in.Pods)
	defer func() { f.prev, f.dups, f.begun = clonePods(pods), dups, true }()
	if !f.begun || dups || f.dups {
		return f.C.Compile(in)
	}
	for k, p := range pods {
		if old, ok := f.prev[k]; !ok || !samePod(old, p) {
			f.C.SetPod(p)
		}
	}
	for k := range f.prev {
		if _, ok := pods[k]; !ok {
			f.C.DeletePod(k.namespace, k.name)
		}
	}
	node := in
	node.Pods = nil
	return f.C.CompileNode(node)
}

func byName(pods []compiler.Pod) (map[podName]compiler.Pod, bool) {
	out := make(map[podName]compiler.Pod, len(pods))
	dups := false
	for _, p := range pods {
		k := podName{p.Namespace, p.Name}
		_, dup := out[k]
		dups = dups || dup
		out[k] = p
	}
	return out, dups
}

func samePod(a, b compiler.Pod) bool {
	return a.HostNetwork == b.HostNetwork && slices.Equal(a.IPs, b.IPs) && maps.Equal(a.Labels, b.Labels) &&
		maps.Equal(a.Annotations, b.Annotations)
}

// clonePods copies what Change may change in place.
func clonePods(pods map[podName]compiler.Pod) map[podName]compiler.Pod {
	out := make(map[podName]compiler.Pod, len(pods))
	for k, p := range pods {
		p.Labels, p.Annotations, p.IPs = maps.Clone(p.Labels), maps.Clone(p.Annotations), slices.Clone(p.IPs)
		out[k] = p
	}
	return out
}
