package topo

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// BPFFSRoot is where bpffs is mounted (`make bpffs` mounts it).
const BPFFSRoot = "/sys/fs/bpf"

// BPFFS creates an empty folder for pins under BPFFSRoot, removed with everything in it when
// the test ends. It fails the test when BPFFSRoot is not a bpf filesystem.
func BPFFS(tb testing.TB) string {
	tb.Helper()
	var st unix.Statfs_t
	require.NoError(tb, unix.Statfs(BPFFSRoot, &st), "statfs %s", BPFFSRoot)
	require.Equal(tb, int64(unix.BPF_FS_MAGIC), int64(st.Type),
		"%s is not a bpf filesystem: run `make bpffs`", BPFFSRoot)
	dir, err := os.MkdirTemp(BPFFSRoot, Prefix)
	require.NoError(tb, err, "create pin folder")
	tb.Cleanup(func() { assert.NoError(tb, os.RemoveAll(dir), "remove pin folder %s", dir) })
	return dir
}

// Main runs the tests and then fails the run if they left anything behind: namespaces or pin
// folders of this process, links with podwall's names in the root namespace (tests must never
// create any there), or open file descriptors (sockets, namespaces, BPF objects). Use it as
// `func TestMain(m *testing.M) { topo.Main(m) }`.
func Main(m *testing.M) {
	fds, err := openFDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "leak check:", err)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		if leaks := findLeaks(fds); len(leaks) > 0 {
			fmt.Fprintln(os.Stderr, "leak check: the tests left behind:")
			for _, l := range leaks {
				fmt.Fprintln(os.Stderr, " ", l)
			}
			code = 1
		}
	}
	os.Exit(code)
}

func findLeaks(fdsBefore map[string]string) []string {
	var leaks []string
	for _, dir := range []string{RunDir, BPFFSRoot} {
		entries, err := os.ReadDir(dir)
		if err != nil && !os.IsNotExist(err) {
			leaks = append(leaks, fmt.Sprintf("cannot read %s: %v", dir, err))
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), Prefix) {
				leaks = append(leaks, filepath.Join(dir, e.Name()))
			}
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		leaks = append(leaks, fmt.Sprintf("cannot list links of the root namespace: %v", err))
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "pw") {
			leaks = append(leaks, "link "+l.Attrs().Name+" in the test's own namespace")
		}
	}
	fds, err := openFDs()
	if err != nil {
		leaks = append(leaks, err.Error())
	}
	for fd, target := range fds {
		if _, ok := fdsBefore[fd]; ok || runtimeFD(target) {
			continue
		}
		leaks = append(leaks, fmt.Sprintf("fd %s -> %s", fd, target))
	}
	slices.Sort(leaks)
	return leaks
}

// runtimeFD says whether an fd is one the Go runtime opens for itself on first use (the
// network poller) and keeps for the life of the process.
func runtimeFD(target string) bool {
	return target == "anon_inode:[eventpoll]" || target == "anon_inode:[eventfd]"
}

func openFDs() (map[string]string, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("list open fds: %w", err)
	}
	fds := make(map[string]string, len(entries))
	for _, e := range entries {
		// The fd ReadDir itself used is closed by now: skip what no longer resolves.
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil {
			fds[e.Name()] = target
		}
	}
	return fds, nil
}
