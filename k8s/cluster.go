package k8s

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

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
	nsLister   corelisters.NamespaceLister
	synced     atomic.Bool

	// dirty are the pods changed since the last Changes; begun says whether there was one.
	mu    sync.Mutex
	dirty map[string]struct{} // by cache key, namespace/name
	begun bool
}

// NewCluster returns a source that watches the API through client. It contacts nothing
// before Run.
func NewCluster(client kubernetes.Interface) *Cluster {
	// No periodic resync: the agent follows the changes, and a replay of the cache would
	// change nothing.
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(Transform))
	return &Cluster{
		factory:    f,
		pods:       f.Core().V1().Pods().Informer(),
		namespaces: f.Core().V1().Namespaces().Informer(),
		nsLister:   f.Core().V1().Namespaces().Lister(),
	}
}

// Run starts the informers, waits for their caches to sync, then calls notify(nil) once and
// after every change, until ctx is done. A watch failure is passed to notify as an error;
// client-go lists again and watches anew, and the cache keeps the last state meanwhile.
func (c *Cluster) Run(ctx context.Context, notify func(error)) error {
	handler := func(pods bool) cache.ResourceEventHandlerFuncs {
		changed := func(obj any) {
			if pods {
				c.markDirty(obj)
			}
			if c.synced.Load() {
				notify(nil)
			}
		}
		return cache.ResourceEventHandlerFuncs{
			AddFunc: changed,
			UpdateFunc: func(old, cur any) {
				// A relist after a broken watch replays every object: only what changed counts.
				if o, ok := old.(interface{ GetResourceVersion() string }); ok {
					if n, ok := cur.(interface{ GetResourceVersion() string }); ok && o.GetResourceVersion() == n.GetResourceVersion() {
						return
					}
				}
				changed(cur)
			},
			DeleteFunc: changed,
		}
	}
	var synced []cache.InformerSynced
	for name, inf := range map[string]cache.SharedIndexInformer{"pods": c.pods, "namespaces": c.namespaces} {
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			notify(fmt.Errorf("watch %s: %w", name, err))
		}); err != nil {
			return fmt.Errorf("set watch error handler of %s: %w", name, err)
		}
		reg, err := inf.AddEventHandler(handler(inf == c.pods))
		if err != nil {
			return fmt.Errorf("add event handler to %s: %w", name, err)
		}
		synced = append(synced, reg.HasSynced)
	}
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	// The handlers have seen the objects of the first list when their registrations have
	// synced: the first Changes is whole, and the next ones hold only what changed after it.
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
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

// markDirty notes the pod of an event, for the next Changes.
func (c *Cluster) markDirty(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return // not an object: nothing names it
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dirty == nil {
		c.dirty = map[string]struct{}{}
	}
	c.dirty[key] = struct{}{}
}

// Changes returns the pods that came, changed or left since the last call, read from the
// informer's cache; every pod the first time. The handlers note a change after the cache
// holds it, so a change is never missed, at worst read twice.
func (c *Cluster) Changes() (Delta, error) {
	if !c.synced.Load() {
		return Delta{}, ErrNotSynced
	}
	c.mu.Lock()
	dirty, full := c.dirty, !c.begun
	c.dirty, c.begun = nil, true
	c.mu.Unlock()
	var d Delta
	if full {
		snap, err := c.Snapshot()
		if err != nil {
			c.mu.Lock()
			c.begun = false
			c.mu.Unlock()
			return Delta{}, err
		}
		return Delta{Full: true, Pods: snap.Pods, Namespaces: snap.Namespaces, NamespaceAnnotations: snap.NamespaceAnnotations}, nil
	}
	for key := range dirty {
		obj, ok, err := c.pods.GetIndexer().GetByKey(key)
		if err != nil {
			c.mu.Lock()
			if c.dirty == nil {
				c.dirty = map[string]struct{}{}
			}
			maps.Copy(c.dirty, dirty) // read them again next time
			c.mu.Unlock()
			return Delta{}, fmt.Errorf("read pod %s from the cache: %w", key, err)
		}
		if p, isPod := obj.(*cachedPod); ok && isPod {
			d.Pods = append(d.Pods, p.Pod)
			continue
		}
		ns, name, _ := cache.SplitMetaNamespaceKey(key)
		d.Deleted = append(d.Deleted, PodKey{ns, name})
	}
	snap, err := c.namespaceSnapshot()
	if err != nil {
		return Delta{}, err
	}
	d.Namespaces, d.NamespaceAnnotations = snap.Namespaces, snap.NamespaceAnnotations
	return d, nil
}

// namespaceSnapshot is a Snapshot of the namespaces in the informer's cache, without pods.
func (c *Cluster) namespaceSnapshot() (Snapshot, error) {
	nss, err := c.nsLister.List(labels.Everything())
	if err != nil {
		return Snapshot{}, fmt.Errorf("list namespaces: %w", err)
	}
	snap := Snapshot{Namespaces: make([]string, 0, len(nss))}
	for _, ns := range nss {
		snap.addNamespace(ns.Name, ns.Annotations)
	}
	slices.Sort(snap.Namespaces)
	return snap, nil
}

// Snapshot returns the pods and namespaces in the informers' caches.
func (c *Cluster) Snapshot() (Snapshot, error) {
	if !c.synced.Load() {
		return Snapshot{}, ErrNotSynced
	}
	snap, err := c.namespaceSnapshot()
	if err != nil {
		return Snapshot{}, err
	}
	pods := c.pods.GetIndexer().List()
	snap.Pods = make([]Pod, 0, len(pods))
	for _, obj := range pods {
		if p, ok := obj.(*cachedPod); ok {
			snap.Pods = append(snap.Pods, p.Pod)
		}
	}
	return snap, nil
}
