// Package netnsrun runs a function in another network namespace, on an OS thread locked for
// the purpose, for the callers (the loader, the agent's interface finder) whose kernel calls
// resolve interfaces in the namespace of the calling thread.
//
// Errors: Run returns fn's error as it is. When the thread cannot enter the namespace, fn does
// not run and the error is wrapped with "get current netns" or "enter netns". When the
// thread cannot switch back afterwards, the error joins fn's error with one wrapped with
// "leave netns", and the thread is not unlocked, so that Go throws it away rather than
// running other goroutines in the wrong namespace.
package netnsrun
