package netnsrun

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Run runs fn on a thread in the namespace ns and waits for it; with a namespace that is not
// open (netns.None(), the process's own), it runs fn on the calling goroutine.
func Run(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	done := make(chan error, 1)
	go func() {
		// fn may end the goroutine (runtime.Goexit: a t.FailNow in a test): answer anyway
		// rather than hang, and let the thread, still locked and maybe in the namespace, die
		// with it.
		answered := false
		defer func() {
			if !answered {
				select {
				case done <- errors.New("fn did not return (runtime.Goexit, a t.FailNow?)"):
				default: // answered already, before fn ran
				}
			}
		}()
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		answered = true
		if err := netns.Set(orig); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("leave netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}
