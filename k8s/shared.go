package k8s

import (
	"runtime"
	"slices"
	"strconv"
	"sync"
	"unique"
	"weak"
)

// stringMap is a map of labels or annotations that pods share: the replicas of a workload
// carry equal labels and annotations, and each of a cluster's pods would otherwise hold maps
// of its own, a few hundred bytes each (docs/SCALE.md). A cached pod holds its stringMaps, so
// a set is shared while the informer has a pod with it; its map is read only.
type stringMap struct{ m map[string]string }

// get is the shared map; nil for no set.
func (sm *stringMap) get() map[string]string {
	if sm == nil {
		return nil
	}
	return sm.m
}

// sharedMaps finds the stringMap of a set; what no pod holds any more is collected, and its
// entry removed by a cleanup.
type sharedMaps struct {
	mu   sync.Mutex
	sets map[string]weak.Pointer[stringMap] // by setKey
}

// podMaps is the informers' one table: pods and the pods file go through it.
var podMaps = &sharedMaps{sets: map[string]weak.Pointer[stringMap]{}}

// share is the stringMap of m's set, m's own if no pod holds one; nil for an empty m.
func (s *sharedMaps) share(m map[string]string) *stringMap {
	if len(m) == 0 {
		return nil
	}
	key := setKey(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	if sm := s.sets[key].Value(); sm != nil {
		return sm
	}
	sm := &stringMap{m: m}
	s.sets[key] = weak.Make(sm)
	runtime.AddCleanup(sm, s.forget, key)
	return sm
}

// forget removes the entry of key once its stringMap is collected, unless a new one took it.
func (s *sharedMaps) forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sets[key].Value() == nil {
		delete(s.sets, key)
	}
}

// setKey encodes m's pairs, sorted, each string led by its length: two maps have one key
// exactly when they are equal, whatever bytes their strings hold.
func setKey(m map[string]string) string {
	keys := make([]string, 0, len(m))
	n := 0
	for k, v := range m {
		keys = append(keys, k)
		n += len(k) + len(v) + 8
	}
	slices.Sort(keys)
	b := make([]byte, 0, n)
	for _, k := range keys {
		b = strconv.AppendInt(b, int64(len(k)), 10)
		b = append(b, ':')
		b = append(b, k...)
		b = strconv.AppendInt(b, int64(len(m[k])), 10)
		b = append(b, ':')
		b = append(b, m[k]...)
	}
	return string(b)
}

// intern is the one copy of a string that many pods hold (namespaces, node names).
func intern(s string) string { return unique.Make(s).Value() }
