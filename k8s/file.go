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

// fileSettle is how long File waits after a change of the file before it reads it, and
// between the two reads that must agree before a content is taken: an editor's or a script's
// several writes are read once, whole.
const fileSettle = 50 * time.Millisecond

// Defaults of File's retry and of how long a shrunken content must stay before it is taken.
const (
	fileRetryMin   = 100 * time.Millisecond
	fileRetryMax   = 10 * time.Second
	DefaultConfirm = 30 * time.Second
)

// ErrDistrusted is the error File reports for a content it does not take (yet): an empty file,
// or one that lost most of the pods of the last it took.
var ErrDistrusted = errors.New("pods file distrusted")

// File is the source of standalone mode: Pods and Namespaces in a YAML file, followed as the
// file changes. It watches the file's folder, not the file, so that a file replaced by a
// rename (as editors and `kubectl ... > tmp && mv tmp FILE` write) is followed too.
//
// A content that shrinks the world is distrusted, since a file being written (`kubectl get
// ... > FILE` empties it first) or cut short looks like one where pods were deleted, and a
// pod that vanishes from the view is one a policy no longer names: a content is taken only
// when two reads fileSettle apart agree; an empty file is never taken; and one that lost more
// than half the pods of the last taken (two at least) is taken only once it stayed the same
// for the confirm time. Until then the last content taken stays, and each is reported.
type File struct {
	path    string
	confirm time.Duration

	mu     sync.Mutex
	snap   Snapshot
	synced bool
	taken  []byte // the content of snap
	differ Differ

	// Of the Run loop only: the content last read and not taken, since when it is the same,
	// and the error last reported for it.
	read      []byte
	hasRead   bool // read holds a content (an empty file's too)
	readSince time.Time
	reported  string
	retry     time.Duration
}

// NewFile returns a source for the file at path; it reads nothing before Run. A content that
// lost most pods is taken after it stayed the same for confirm (0: DefaultConfirm).
func NewFile(path string, confirm time.Duration) *File {
	if confirm <= 0 {
		confirm = DefaultConfirm
	}
	return &File{path: path, confirm: confirm}
}

// Run reads the file, then again each time it changes, until ctx is done. notify(nil) follows
// each content taken; notify(err) each failure to read or parse and each content distrusted,
// once per content, after which Snapshot keeps returning the last content taken. A file that
// cannot be read is read again with a backoff up to fileRetryMax.
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
	next := time.NewTimer(0)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if filepath.Clean(ev.Name) == filepath.Clean(f.path) {
				f.retry = 0
				next.Reset(fileSettle)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			notify(fmt.Errorf("watch %s: %w", dir, err))
			next.Reset(fileSettle)
		case <-next.C:
			if d := f.check(notify); d > 0 {
				next.Reset(d)
			}
		}
	}
}

// check reads the file and takes its content if it can be trusted. It returns when to check
// again without an event, 0 for never.
func (f *File) check(notify func(error)) time.Duration {
	data, err := os.ReadFile(f.path)
	if err != nil {
		f.read, f.hasRead = nil, false
		f.retry = min(max(2*f.retry, fileRetryMin), fileRetryMax)
		f.report(notify, fmt.Errorf("read pods file: %w", err))
		return f.retry
	}
	f.retry = 0
	f.mu.Lock()
	same := f.synced && bytes.Equal(data, f.taken)
	f.mu.Unlock()
	if same {
		f.read, f.hasRead, f.reported = nil, false, ""
		return 0
	}
	if !f.hasRead || !bytes.Equal(data, f.read) {
		// A first read of this content: it must read the same once more.
		f.read, f.hasRead, f.readSince, f.reported = data, true, time.Now(), ""
		return fileSettle
	}
	if len(bytes.TrimSpace(data)) == 0 {
		f.report(notify, fmt.Errorf("%w: %s is empty: the last content stays", ErrDistrusted, f.path))
		return 0
	}
	snap, err := ParseFile(data)
	if err != nil {
		f.report(notify, fmt.Errorf("parse pods file %s: %w", f.path, err))
		return 0
	}
	f.mu.Lock()
	last, synced := len(f.snap.Pods), f.synced
	f.mu.Unlock()
	if lost := last - len(snap.Pods); synced && lost >= 2 && 2*lost > last {
		if wait := f.confirm - time.Since(f.readSince); wait > 0 {
			f.report(notify, fmt.Errorf("%w: %s lists %d pods, %d fewer than the last content: the last stays unless this one stays the same for %v",
				ErrDistrusted, f.path, len(snap.Pods), lost, f.confirm))
			return wait
		}
	}
	f.mu.Lock()
	f.snap, f.synced, f.taken = snap, true, data
	f.mu.Unlock()
	f.read, f.hasRead, f.reported = nil, false, ""
	notify(nil)
	return 0
}

// report notifies err unless it was the last reported for the same content.
func (f *File) report(notify func(error), err error) {
	if err.Error() == f.reported {
		return
	}
	f.reported = err.Error()
	notify(err)
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

// Changes returns what changed in the last content of the file that parsed since the last
// call: the whole content the first time.
func (f *File) Changes() (Delta, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.synced {
		return Delta{}, ErrNotSynced
	}
	return f.differ.Diff(f.snap), nil
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
	case kind == "":
		// kubectl prints a list's kind after its items: a file cut short lost it.
		return errors.New("an object without a kind")
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
		s.addNamespace(ns.Name, ns.Annotations)
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
