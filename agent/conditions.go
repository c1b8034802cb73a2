package agent

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/podwall/podwall/k8s"
)

// conditions writes the pods' podwall.io/policy-enforced conditions off the reconcile loop:
// a write is an API request, which the client's rate limit may hold, and enforcement must not
// wait for it. The loop hands over each pod's newest condition; a pod's older one not yet
// written is dropped, and a failed write is tried again after a backoff unless a newer one
// came.
type conditions struct {
	status Status
	log    *zap.Logger

	mu      sync.Mutex
	pending map[podUID]pendingCondition
	wake    chan struct{}
}

type pendingCondition struct {
	pod k8s.Pod
	c   condition
}

func newConditions(status Status, log *zap.Logger) *conditions {
	return &conditions{status: status, log: log, pending: map[podUID]pendingCondition{}, wake: make(chan struct{}, 1)}
}

// set queues pod p's condition c.
func (w *conditions) set(id podUID, p k8s.Pod, c condition) {
	w.mu.Lock()
	w.pending[id] = pendingCondition{pod: p, c: c}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// forget drops what is queued for a pod that is gone.
func (w *conditions) forget(id podUID) {
	w.mu.Lock()
	delete(w.pending, id)
	w.mu.Unlock()
}

// run writes what is queued until ctx is done.
func (w *conditions) run(ctx context.Context) {
	back := backoff{min: minRetry, max: maxRetry}
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-retry:
		}
		retry = nil
		if w.writeAll(ctx) {
			back.reset()
		} else {
			retry = time.After(back.delay())
		}
	}
}

// writeAll writes every queued condition once, and says whether all were written.
func (w *conditions) writeAll(ctx context.Context) bool {
	w.mu.Lock()
	todo := w.pending
	w.pending = map[podUID]pendingCondition{}
	w.mu.Unlock()
	ok := true
	for id, p := range todo {
		wctx, cancel := context.WithTimeout(ctx, statusTimeout)
		err := w.status.SetEnforced(wctx, p.pod, p.c.enforced, p.c.reason, p.c.message, p.c.since)
		cancel()
		if err == nil {
			continue
		}
		ok = false
		w.log.Warn("write the policy-enforced condition", zap.Stringer("pod", id.podKey), zap.Error(err))
		w.mu.Lock()
		if _, newer := w.pending[id]; !newer {
			w.pending[id] = p
		}
		w.mu.Unlock()
	}
	return ok
}
