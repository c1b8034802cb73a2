package k8s

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Cluster is the source of a node in a cluster: informers on every pod and namespace.
type Cluster struct {
	factory    informers.SharedInformerFactory
	pods       cache.SharedIndexInformer
	namespaces cache.SharedIndexInformer
	podLister  corelisters.PodLister
	nsLister   corelisters.NamespaceLister
	synced     atomic.Bool

	// converted keeps each cached object's conversion: an informer replaces an object on
	// every change and never modifies one, so an object seen before converts the same, and
	// a snapshot after one change converts one pod, not the whole cluster.
	mu        sync.Mutex
	converted map[*corev1.Pod]convertedPod
	sweep     uint64
}

type convertedPod struct {
	pod   Pod
	sweep uint64 // the last snapshot that saw the object
}

// NewCluster returns a source that watches the API through client. It contacts nothing
// before Run.
func NewCluster(client kubernetes.Interface) *Cluster {
	// No periodic resync: the maps are compiled from the whole cache on every change, so
	// replaying the cache would only recompile the same state.
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(Transform))
	return &Cluster{
		factory:    f,
		pods:       f.Core().V1().Pods().Informer(),
		namespaces: f.Core().V1().Namespaces().Informer(),
		podLister:  f.Core().V1().Pods().Lister(),
		nsLister:   f.Core().V1().Namespaces().Lister(),
	}
}

// Run starts the informers, waits for their caches to sync, then calls notify(nil) once and
// after every change, until ctx is done. A watch failure is passed to notify as an error;
// client-go lists again and watches anew, and the cache keeps the last state meanwhile.
func (c *Cluster) Run(ctx context.Context, notify func(error)) error {
	changed := func() {
		if c.synced.Load() {
			notify(nil)
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { changed() },
		UpdateFunc: func(old, cur any) {
			// A relist after a broken watch replays every object: only what changed counts.
			if o, ok := old.(interface{ GetResourceVersion() string }); ok {
				if n, ok := cur.(interface{ GetResourceVersion() string }); ok && o.GetResourceVersion() == n.GetResourceVersion() {
					return
				}
			}
			changed()
		},
		DeleteFunc: func(any) { changed() },
	}
	for name, inf := range map[string]cache.SharedIndexInformer{"pods": c.pods, "namespaces": c.namespaces} {
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			notify(fmt.Errorf("watch %s: %w", name, err))
		}); err != nil {
			return fmt.Errorf("set watch error handler of %s: %w", name, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return fmt.Errorf("add event handler to %s: %w", name, err)
		}
	}
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.pods.HasSynced, c.namespaces.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("wait for informer caches: not synced")
	}
	c.synced.Store(true)
	notify(nil)
	<-ctx.Done()
	return nil
}

// Snapshot returns the pods and namespaces in the informers' caches.
func (c *Cluster) Snapshot() (Snapshot, error) {
	if !c.synced.Load() {
		return Snapshot{}, ErrNotSynced
	}
	pods, err := c.podLister.List(labels.Everything())
	if err != nil {
		return Snapshot{}, fmt.Errorf("list pods: %w", err)
	}
	nss, err := c.nsLister.List(labels.Everything())
	if err != nil {
		return Snapshot{}, fmt.Errorf("list namespaces: %w", err)
	}
	snap := Snapshot{Pods: c.convert(pods), Namespaces: make([]string, 0, len(nss))}
	for _, ns := range nss {
		snap.addNamespace(ns.Name, ns.Annotations)
	}
	slices.Sort(snap.Namespaces)
	return snap, nil
}

// convert is podFromAPI of every pod, reusing the conversions of objects seen before.
func (c *Cluster) convert(pods []*corev1.Pod) []Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.converted == nil {
		c.converted = make(map[*corev1.Pod]convertedPod, len(pods))
	}
	c.sweep++
	out := make([]Pod, 0, len(pods))
	for _, p := range pods {
		cp, ok := c.converted[p]
		if !ok {
			cp.pod = podFromAPI(p)
		}
		cp.sweep = c.sweep
		c.converted[p] = cp
		out = append(out, cp.pod)
	}
	if len(c.converted) > len(pods) {
		for p, cp := range c.converted {
			if cp.sweep != c.sweep {
				delete(c.converted, p)
			}
		}
	}
	return out
}
