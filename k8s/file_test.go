package k8s

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/policy"
)

const kubectlList = `apiVersion: v1
items:
- apiVersion: v1
  kind: Pod
  metadata:
    annotations:
      projectcalico.org/policy: allow tcp from label role=frontend to ports 8080
    labels:
      role: backend
    name: api
    namespace: shop
    uid: 11111111-2222
  spec:
    containers:
    - image: nginx
      name: api
    nodeName: node-1
  status:
    phase: Running
    podIP: 10.244.0.2
    podIPs:
    - ip: 10.244.0.2
    - ip: fd00:244::2
- apiVersion: v1
  kind: Namespace
  metadata:
    name: shop
  status:
    phase: Active
- apiVersion: v1
  kind: Namespace
  metadata:
    name: kube-system
kind: List
metadata:
  resourceVersion: ""
`

var apiPod = Pod{
	Pod: compiler.Pod{
		Namespace:   "shop",
		Name:        "api",
		Labels:      map[string]string{"role": "backend"},
		Annotations: map[string]string{policy.AnnotationKey: "allow tcp from label role=frontend to ports 8080"},
		IPs:         []netip.Addr{netip.MustParseAddr("10.244.0.2"), netip.MustParseAddr("fd00:244::2")},
	},
	UID:  "11111111-2222",
	Node: "node-1",
}

func TestParseFile(t *testing.T) {
	for _, tt := range []struct {
		name string
		data string
		want Snapshot
	}{
		{"kubectl List", kubectlList, Snapshot{Pods: []Pod{apiPod}, Namespaces: []string{"kube-system", "shop"}}},
		{"documents", `
---
kind: Namespace
apiVersion: v1
metadata: {name: shop}
---
# a comment only
---
kind: Pod
apiVersion: v1
metadata:
  name: db
  labels: {role: db}
spec: {nodeName: node-2, hostNetwork: true}
status: {podIP: 10.244.0.9}
---
kind: Service
apiVersion: v1
metadata: {name: ignored}
`, Snapshot{
			Pods: []Pod{{Pod: compiler.Pod{
				Namespace: "default", Name: "db", Labels: map[string]string{"role": "db"},
				IPs: []netip.Addr{netip.MustParseAddr("10.244.0.9")}, HostNetwork: true,
			}, Node: "node-2"}},
			Namespaces: []string{"shop"},
		}},
		{"PodList without item kinds, JSON", `{"kind":"PodList","apiVersion":"v1","items":[{"metadata":{"name":"a","namespace":"x"}}]}`,
			Snapshot{Pods: []Pod{{Pod: compiler.Pod{Namespace: "x", Name: "a"}}}}},
		{"empty", ``, Snapshot{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFile([]byte(tt.data))
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestParseFileErrors(t *testing.T) {
	for _, tt := range []struct {
		name, data, err string
	}{
		{"not yaml", "kind: Pod\n  metadata: [", "document 1: "},
		{"pod without name", "kind: Pod\nmetadata: {namespace: a}\n", "document 1: pod without a name"},
		{"namespace without name", "kind: Pod\nmetadata: {name: a}\n---\nkind: Namespace\n", "document 2: namespace without a name"},
		{"bad address in list", "kind: List\nitems:\n- kind: Namespace\n  metadata: {name: a}\n- kind: Pod\n  metadata: {name: p}\n  status: {podIPs: [{ip: 10.0.0.300}]}\n",
			`document 1: item 2: pod default/p: ParseAddr("10.0.0.300")`},
		{"wrong type", "kind: Pod\nmetadata: {name: a, labels: [x]}\n", "document 1: pod: "},
		{"kubectl List cut short", kubectlList[:strings.Index(kubectlList, "\nkind: List")+1], "document 1: an object without a kind"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseFile([]byte(tt.data))
			require.ErrorContains(t, err, tt.err)
		})
	}
}

// notifications records what a source passed to notify.
type notifications struct {
	mu   sync.Mutex
	errs []error
	ch   chan struct{}
}

func newNotifications() *notifications { return &notifications{ch: make(chan struct{}, 100)} }

func (n *notifications) notify(err error) {
	n.mu.Lock()
	n.errs = append(n.errs, err)
	n.mu.Unlock()
	n.ch <- struct{}{}
}

func (n *notifications) next(t *testing.T) error {
	t.Helper()
	select {
	case <-n.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no notification")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.errs[len(n.errs)-1]
}

func TestFileFollowsChanges(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pods.yaml")
	f := NewFile(path, 0)
	_, err := f.Snapshot()
	require.ErrorIs(t, err, ErrNotSynced)

	n := newNotifications()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- f.Run(ctx, n.notify) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	require.ErrorIs(t, n.next(t), os.ErrNotExist, "missing file")
	// Read again with a backoff, and reported once.
	time.Sleep(time.Second)
	n.mu.Lock()
	require.Len(t, n.errs, 1, "%v", n.errs)
	n.mu.Unlock()

	require.NoError(t, os.WriteFile(path, []byte(kubectlList), 0o644))
	require.NoError(t, n.next(t))
	snap, err := f.Snapshot()
	require.NoError(t, err)
	require.Equal(t, []Pod{apiPod}, snap.Pods)

	require.NoError(t, os.WriteFile(path, []byte("kind: Pod\nmetadata: {}\n"), 0o644))
	require.ErrorContains(t, n.next(t), "pod without a name")
	snap, err = f.Snapshot()
	require.NoError(t, err)
	require.Equal(t, []Pod{apiPod}, snap.Pods, "a bad file keeps the last good state")

	// Replaced by a rename, as editors write.
	tmp := filepath.Join(dir, "pods.yaml.tmp")
	require.NoError(t, os.WriteFile(tmp, []byte("kind: Namespace\nmetadata: {name: other}\n"), 0o644))
	require.NoError(t, os.Rename(tmp, path))
	require.NoError(t, n.next(t))
	snap, err = f.Snapshot()
	require.NoError(t, err)
	require.Equal(t, Snapshot{Namespaces: []string{"other"}}, snap)

	// Touching the file without changing it notifies nothing.
	now := time.Now()
	require.NoError(t, os.Chtimes(path, now, now))
	select {
	case <-n.ch:
		t.Fatal("notified for an unchanged file")
	case <-time.After(10 * fileSettle):
	}
}

// podsList is a kubectl List of n pods of namespace ns, p0 to p<n-1>.
func podsList(n int) string {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: List\nitems:\n")
	for i := range n {
		fmt.Fprintf(&b, "- kind: Pod\n  metadata: {name: p%d, namespace: ns}\n  spec: {nodeName: n1}\n  status:\n    podIP: 10.0.0.%d\n", i, i+1)
	}
	return b.String()
}

func TestFileDistrustsWhatShrinksTheWorld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pods.yaml")
	require.NoError(t, os.WriteFile(path, []byte(podsList(6)), 0o644))
	const confirm = 500 * time.Millisecond
	f := NewFile(path, confirm)
	n := newNotifications()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- f.Run(ctx, n.notify) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	require.NoError(t, n.next(t))
	pods := func() int {
		snap, err := f.Snapshot()
		require.NoError(t, err)
		return len(snap.Pods)
	}
	require.Equal(t, 6, pods())

	full := podsList(6)
	for _, tt := range []struct {
		name    string
		content string
		err     string
	}{
		{"emptied, as a shell redirection does first", "", "is empty"},
		{"cut at a line end inside a pod", full[:strings.Index(full, "podIP: 10.0.0.2")], "lists 2 pods, 4 fewer"},
		{"cut mid-quote", full + "- kind: Pod\n  metadata: {name: \"p6", "parse pods file"},
		{"an unrelated file", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n", "lists 0 pods, 6 fewer"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(path, []byte(tt.content), 0o644))
			err := n.next(t)
			require.ErrorContains(t, err, tt.err)
			require.Equal(t, 6, pods(), "the last content stays")
			// Written whole again: the content taken, so nothing to notify.
			require.NoError(t, os.WriteFile(path, []byte(full), 0o644))
			time.Sleep(4 * fileSettle)
			require.Equal(t, 6, pods())
		})
	}

	t.Run("losing most pods is taken once it stays so", func(t *testing.T) {
		require.NoError(t, os.WriteFile(path, []byte(podsList(2)), 0o644))
		require.ErrorIs(t, n.next(t), ErrDistrusted)
		require.Equal(t, 6, pods())
		require.NoError(t, n.next(t), "taken after %v", confirm)
		require.Equal(t, 2, pods())
	})

	t.Run("losing one pod is taken at once", func(t *testing.T) {
		require.NoError(t, os.WriteFile(path, []byte(podsList(1)), 0o644))
		require.NoError(t, n.next(t))
		require.Equal(t, 1, pods())
	})
}
