package k8s

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// fileSettle is how long File waits after a change of its folder before it reads the file,
// so that an editor's or a script's several writes are read once, whole.
const fileSettle = 20 * time.Millisecond

// File is the source of standalone mode: Pods and Namespaces in a YAML file, followed as the
// file changes. It watches the file's folder, not the file, so that a file replaced by a
// rename (as editors and `kubectl ... > tmp && mv tmp FILE` write) is followed too.
type File struct {
	path string

	mu     sync.Mutex
	snap   Snapshot
	synced bool
	read   []byte // the content last read, parsed or not
}

// NewFile returns a source for the file at path; it reads nothing before Run.
func NewFile(path string) *File { return &File{path: path} }

// Run reads the file, then again each time it changes, until ctx is done. notify(nil) follows
// each content that parsed; notify(err) each failure to read or parse, after which Snapshot
// keeps returning the last content that parsed.
func (f *File) Run(ctx context.Context, notify func(error)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch pods file: %w", err)
	}
	defer w.Close()
	dir := filepath.Dir(f.path)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	f.load(notify)
	settle := time.NewTimer(0)
	<-settle.C
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
			settle.Reset(fileSettle)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			notify(fmt.Errorf("watch %s: %w", dir, err))
		case <-settle.C:
			f.load(notify)
		}
	}
}

// load reads and parses the file when its content changed since the last read.
func (f *File) load(notify func(error)) {
	data, err := os.ReadFile(f.path)
	if err != nil {
		notify(fmt.Errorf("read pods file: %w", err))
		return
	}
	f.mu.Lock()
	same := f.read != nil && bytes.Equal(data, f.read)
	f.read = data
	f.mu.Unlock()
	if same {
		return
	}
	snap, err := ParseFile(data)
	if err != nil {
		notify(fmt.Errorf("parse pods file %s: %w", f.path, err))
		return
	}
	f.mu.Lock()
	f.snap, f.synced = snap, true
	f.mu.Unlock()
	notify(nil)
}

// Snapshot returns the last content of the file that parsed.
func (f *File) Snapshot() (Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.synced {
		return Snapshot{}, ErrNotSynced
	}
	return f.snap, nil
}

// ParseFile reads Pods and Namespaces from YAML or JSON: documents separated by `---`, each
// an object or a list (`kind: List`, PodList, NamespaceList) of objects, as `kubectl get
// pods,namespaces -A -o yaml` prints. Objects of other kinds are skipped. A pod without a
// namespace is in "default". A pod or namespace without a name, or with an address that does
// not parse, is an error.
func ParseFile(data []byte) (Snapshot, error) {
	var snap Snapshot
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for doc := 1; ; doc++ {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Snapshot{}, fmt.Errorf("document %d: %w", doc, err)
		}
		if err := snap.add(raw, ""); err != nil {
			return Snapshot{}, fmt.Errorf("document %d: %w", doc, err)
		}
	}
	slices.Sort(snap.Namespaces)
	snap.Namespaces = slices.Compact(snap.Namespaces)
	return snap, nil
}

type typeMeta struct {
	Kind  string            `json:"kind"`
	Items []json.RawMessage `json:"items"`
}

// add adds one object or the items of a list. itemKind is the kind of a list's items, which
// the API may leave out of each item.
func (s *Snapshot) add(raw json.RawMessage, itemKind string) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var tm typeMeta
	if err := json.Unmarshal(raw, &tm); err != nil {
		return err
	}
	kind := tm.Kind
	if kind == "" {
		kind = itemKind
	}
	switch {
	case kind == "Pod":
		var p corev1.Pod
		if err := json.Unmarshal(raw, &p); err != nil {
			return fmt.Errorf("pod: %w", err)
		}
		pod, err := filePod(&p)
		if err != nil {
			return err
		}
		s.Pods = append(s.Pods, pod)
	case kind == "Namespace":
		var ns corev1.Namespace
		if err := json.Unmarshal(raw, &ns); err != nil {
			return fmt.Errorf("namespace: %w", err)
		}
		if ns.Name == "" {
			return errors.New("namespace without a name")
		}
		s.Namespaces = append(s.Namespaces, ns.Name)
	case strings.HasSuffix(kind, "List"):
		items := strings.TrimSuffix(kind, "List")
		for i, item := range tm.Items {
			if err := s.add(item, items); err != nil {
				return fmt.Errorf("item %d: %w", i+1, err)
			}
		}
	}
	return nil
}

// filePod converts a pod of the file, more strictly than one of the API: a mistake in a
// hand-written file is reported rather than ignored.
func filePod(p *corev1.Pod) (Pod, error) {
	if p.Name == "" {
		return Pod{}, errors.New("pod without a name")
	}
	if p.Namespace == "" {
		p.Namespace = corev1.NamespaceDefault
	}
	for _, ip := range append([]corev1.PodIP{{IP: p.Status.PodIP}}, p.Status.PodIPs...) {
		if ip.IP == "" {
			continue
		}
		if _, err := netip.ParseAddr(ip.IP); err != nil {
			return Pod{}, fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	return podFromAPI(p), nil
}
