package agent

import (
	"context"
	"time"
)

// trigger wakes the loop; any number of fires before the loop looks count as one.
type trigger chan struct{}

func newTrigger() trigger { return make(trigger, 1) }

func (t trigger) fire() {
	select {
	case t <- struct{}{}:
	default:
	}
}

// settle returns once no fire came for quiet, or max after it was called, whichever is first,
// or when ctx is done (false). Bursts of changes (a deployment's pods, a relist) are so
// compiled once.
func settle(ctx context.Context, t trigger, quiet, max time.Duration) bool {
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	idle := time.NewTimer(quiet)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return true
		case <-idle.C:
			return true
		case <-t:
			idle.Reset(quiet)
		}
	}
}

// backoff is the delay before the next retry of what failed: doubling from min to max, back
// to min after a reconcile that left nothing to retry.
type backoff struct {
	min, max, next time.Duration
}

func (b *backoff) delay() time.Duration {
	if b.next == 0 {
		b.next = b.min
	}
	d := b.next
	b.next = min(2*b.next, b.max)
	return d
}

func (b *backoff) reset() { b.next = 0 }
