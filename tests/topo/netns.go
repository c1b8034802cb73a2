package topo

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/podwall/podwall/internal/netnsrun"
)

// RunDir is where named network namespaces are registered, as iproute2 does.
const RunDir = "/run/netns"

// Prefix starts the name of every namespace and bpffs folder this process creates. It holds a
// random token so that test binaries running at the same time (go test ./... runs packages in
// parallel) never see each other's namespaces as leaks.
var Prefix = "pw-" + randomHex(3) + "-"

var seq atomic.Uint64

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("read random bytes: %v", err))
	}
	return hex.EncodeToString(b)
}

// Netns is a named network namespace that lives until the end of the test that made it.
type Netns struct {
	Name string
	// Path is the namespace's file under RunDir, for nsenter --net=PATH or netns.GetFromPath.
	Path   string
	handle netns.NsHandle
	nl     *netlink.Handle
}

// NewNetns creates a named network namespace with loopback up, deleted when the test ends.
// role ends the name ("node", "pod1", ...) so a leftover says what it was.
func NewNetns(tb testing.TB, role string) *Netns {
	tb.Helper()
	name := fmt.Sprintf("%s%d-%s", Prefix, seq.Add(1), role)
	handle, err := newNamed(name)
	require.NoError(tb, err, "create netns %s", name)
	n := &Netns{Name: name, Path: filepath.Join(RunDir, name), handle: handle}
	tb.Cleanup(func() {
		if n.nl != nil {
			n.nl.Close()
		}
		assert.NoError(tb, n.handle.Close(), "close netns %s", name)
		assert.NoError(tb, netns.DeleteNamed(name), "delete netns %s", name)
	})
	n.nl, err = netlink.NewHandleAt(handle)
	require.NoError(tb, err, "netlink handle in %s", name)
	lo, err := n.nl.LinkByName("lo")
	require.NoError(tb, err, "find lo in %s", name)
	require.NoError(tb, n.nl.LinkSetUp(lo), "set lo up in %s", name)
	// Datagram ICMP sockets (what Ping uses) are allowed only to the groups in this range;
	// the default ("1 0") allows nobody.
	require.NoError(tb, n.Sysctl("net/ipv4/ping_group_range", "0 2147483647"))
	require.NoError(tb, n.Sysctl("net/ipv4/ip_local_reserved_ports", ChosenPorts))
	return n
}

// ChosenPorts are the source ports tests bind themselves (a `from ports` rule's probes). Every
// namespace reserves them (both families), so the kernel never hands one out as the ephemeral
// port of another probe running at the same time, which would make that bind fail with
// EADDRINUSE.
const ChosenPorts = "40000-40999"

// newNamed creates and registers a namespace from a thread of its own, so that the
// goroutine that asked never changes namespace.
func newNamed(name string) (netns.NsHandle, error) {
	type result struct {
		h   netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("get current netns: %w", err)}
			return
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if err != nil {
			// NewNamed may have left an empty file behind when the bind mount failed.
			_ = os.Remove(filepath.Join(RunDir, name))
		}
		if serr := netns.Set(orig); serr != nil {
			// The thread is in an unknown namespace: leave it locked so it dies with this
			// goroutine instead of running other goroutines there.
			done <- result{err: errors.Join(err, fmt.Errorf("restore netns: %w", serr))}
			return
		}
		runtime.UnlockOSThread()
		done <- result{h: h, err: err}
	}()
	r := <-done
	return r.h, r.err
}

// Do runs fn on an OS thread switched into the namespace. Sockets fn creates stay in the
// namespace after Do returns. If the thread cannot switch back, it is thrown away rather
// than reused.
func (n *Netns) Do(fn func() error) error {
	if err := netnsrun.Run(n.handle, fn); err != nil {
		return fmt.Errorf("in netns %s: %w", n.Name, err)
	}
	return nil
}

// Enter moves the calling goroutine, locked to its thread, into the namespace for the rest of
// the test, so require can be used as anywhere else. The thread is never switched back: it
// ends with the test's goroutine, and Go throws a thread away when a goroutine exits locked.
func (n *Netns) Enter(tb testing.TB) {
	tb.Helper()
	runtime.LockOSThread()
	require.NoError(tb, netns.Set(n.handle), "enter netns %s", n.Name)
}

// Handle is a netlink handle whose requests act inside the namespace.
func (n *Netns) Handle() *netlink.Handle { return n.nl }

// NsHandle is the namespace's file descriptor, valid until the test ends.
func (n *Netns) NsHandle() netns.NsHandle { return n.handle }

// Sysctl writes a sysctl of the namespace; key is the path under /proc/sys
// ("net/ipv4/ip_forward"). /proc/sys/net shows the namespace of the thread that opens it.
func (n *Netns) Sysctl(key, value string) error {
	return n.Do(func() error {
		path := filepath.Join("/proc/sys", key)
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s in %s: %w", key, n.Name, err)
		}
		return nil
	})
}

// ReadSysctl reads a sysctl of the namespace, without the trailing newline.
func (n *Netns) ReadSysctl(key string) (string, error) {
	var out string
	err := n.Do(func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", key))
		if err != nil {
			return fmt.Errorf("sysctl %s in %s: %w", key, n.Name, err)
		}
		out = strings.TrimSpace(string(b))
		return nil
	})
	return out, err
}
