package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/internal/netnsrun"
)

// direction is one of the two program slots of an interface.
type direction int

const (
	// egress of the pod's host-side interface: packets going to the pod, judged by to_pod.
	egress direction = iota
	// ingress of the pod's host-side interface: packets from the pod, recorded by from_pod.
	ingress
)

var directions = []direction{egress, ingress}

func (d direction) String() string {
	if d == ingress {
		return "ingress"
	}
	return "egress"
}

func (l *Loader) program(d direction) *ebpf.Program {
	if d == ingress {
		return l.objs.FromPod
	}
	return l.objs.ToPod
}

// twin returns a program that does what program(d) does, on the same maps and globals, but
// is another program to the kernel: tcx takes a program once per hook, so podwall's goes
// ahead of another's by attaching its twin at the head before the old link goes.
func (l *Loader) twin(d direction) (*ebpf.Program, error) {
	if l.twins == nil {
		c, err := ebpf.NewCollectionWithOptions(l.spec, ebpf.CollectionOptions{MapReplacements: l.shared})
		if err != nil {
			return nil, fmt.Errorf("load podwall's twin programs: %w", err)
		}
		l.twins = c
	}
	name := bpf.PodwallProgToPod
	if d == ingress {
		name = bpf.PodwallProgFromPod
	}
	return l.twins.Programs[name], nil
}

// hook is one program slot of one interface.
type hook struct {
	ifindex int
	dir     direction
}

func (h hook) String() string { return fmt.Sprintf("%d-%s", h.ifindex, h.dir) }

// Pins are named <ifindex>-<direction> for tcx links and <ifindex>-<direction>_clsact for the
// program of a clsact filter (the filter holds the program; the pin records that podwall
// attached it). bpffs refuses names with a dot.
const (
	clsactSuffix = "_clsact"
	newSuffix    = "_new"
)

func (l *Loader) pinPath(h hook, m Mode) string {
	name := h.String()
	if m == ModeClsact {
		name += clsactSuffix
	}
	return filepath.Join(l.linksDir(), name)
}

func parsePin(name string) (hook, Mode, bool) {
	mode := ModeTCX
	if base, ok := strings.CutSuffix(name, clsactSuffix); ok {
		name, mode = base, ModeClsact
	}
	idx, dir, ok := strings.Cut(name, "-")
	if !ok {
		return hook{}, "", false
	}
	ifindex, err := strconv.Atoi(idx)
	if err != nil || ifindex <= 0 {
		return hook{}, "", false
	}
	for _, d := range directions {
		if dir == d.String() {
			return hook{ifindex, d}, mode, true
		}
	}
	return hook{}, "", false
}

// attachment is a program attached to a hook and pinned.
type attachment interface {
	mode() Mode
	// first says whether the program runs before any other of the hook; errGone: the
	// interface went.
	first() (bool, error)
	// moveFirst puts prog first in the hook's chain, with no moment without it.
	moveFirst(prog *ebpf.Program) error
	// update swaps in a new program with no moment without one.
	update(prog *ebpf.Program) error
	// detach removes the program from the hook and its pin.
	detach() error
	// close releases what the process holds and leaves the attachment in the kernel.
	close() error
}

// Attach attaches podwall to both hooks of an interface of the Loader's namespace and pins
// the attachments. Attaching an attached interface does nothing. On failure nothing of this
// call stays attached.
func (l *Loader) Attach(ifindex int) error {
	return l.changing(func() error { return l.attach(ifindex) })
}

// changing runs fn, a change of the attachments and their pins, holding the state folder's
// exclusive lock (readers see no pin half replaced) and the Loader's mutex; ErrClosed after
// Close.
func (l *Loader) changing(fn func() error) error {
	stateLock, err := lock(l.dir, unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer stateLock.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.attached == nil {
		return ErrClosed
	}
	return fn()
}

func (l *Loader) attach(ifindex int) error {
	var made []hook
	for _, d := range directions {
		h := hook{ifindex, d}
		if _, ok := l.attached[h]; ok {
			continue
		}
		a, err := l.attachHook(h)
		if err != nil {
			errs := []error{fmt.Errorf("attach to ifindex %d: %w", ifindex, err)}
			for _, m := range made {
				if err := l.attached[m].detach(); err != nil {
					errs = append(errs, fmt.Errorf("undo %s: %w", m, err))
				}
				delete(l.attached, m)
			}
			return errors.Join(errs...)
		}
		l.attached[h] = a
		made = append(made, h)
	}
	return nil
}

func (l *Loader) attachHook(h hook) (attachment, error) {
	if l.mode == ModeClsact {
		return l.attachClsact(h)
	}
	return l.attachTCX(h, l.program(h.dir), l.pinPath(h, ModeTCX))
}

// Detach removes podwall from both hooks of an interface, and their pins. An interface that
// is not attached, or no longer exists, is not an error.
func (l *Loader) Detach(ifindex int) error {
	return l.changing(func() error {
		var errs []error
		for _, d := range directions {
			h := hook{ifindex, d}
			if a, ok := l.attached[h]; ok {
				if err := a.detach(); err != nil {
					errs = append(errs, fmt.Errorf("detach %s: %w", h, err))
					continue
				}
				delete(l.attached, h)
			}
		}
		return errors.Join(errs...)
	})
}

// reattach takes over the pinned attachments: each live one moves to the new programs (in
// place when it has the Loader's mode; otherwise the new mode is attached first and the old
// one removed after, so the interface is never without podwall), stale ones (their
// interface is gone) are dropped, and an interface with only one hook attached (a crash
// between the two) gets the other.
func (l *Loader) reattach() error {
	entries, err := os.ReadDir(l.linksDir())
	if err != nil {
		return fmt.Errorf("list pinned links: %w", err)
	}
	pinned := map[hook][]attachment{}
	for _, e := range entries {
		path := filepath.Join(l.linksDir(), e.Name())
		h, mode, ok := parsePin(e.Name())
		if !ok {
			// A pin of an interrupted update (newSuffix, see clsactAttachment.update) or
			// not ours.
			l.log.Warn("removing unknown pin", zap.String("path", path))
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("remove unknown pin: %w", err)
			}
			continue
		}
		var a attachment
		if mode == ModeTCX {
			a, err = l.loadTCX(h, path)
		} else {
			a, err = l.loadClsact(h, path)
		}
		if err != nil {
			return err
		}
		if a == nil {
			l.log.Info("dropped attachment of a removed interface", zap.Stringer("hook", h), zap.String("mode", string(mode)))
			continue
		}
		pinned[h] = append(pinned[h], a)
	}
	for h, as := range pinned {
		if err := l.takeOver(h, as); err != nil {
			return err
		}
	}
	for h := range pinned {
		if err := l.attach(h.ifindex); err != nil {
			return err
		}
	}
	return nil
}

// takeOver moves the attachments found for a hook to the Loader's programs and mode.
func (l *Loader) takeOver(h hook, found []attachment) error {
	var keep attachment
	var old []attachment
	for _, a := range found {
		if keep == nil && a.mode() == l.mode {
			keep = a
		} else {
			old = append(old, a)
		}
	}
	if keep != nil {
		if err := keep.update(l.program(h.dir)); err != nil {
			return fmt.Errorf("update %s: %w", h, err)
		}
	} else {
		var err error
		if keep, err = l.attachHook(h); err != nil {
			return fmt.Errorf("move %s to %s: %w", h, l.mode, err)
		}
	}
	l.attached[h] = keep
	for _, a := range old {
		if err := a.detach(); err != nil {
			return fmt.Errorf("detach %s of %s: %w", a.mode(), h, err)
		}
	}
	l.log.Info("took over attachment", zap.Stringer("hook", h), zap.String("mode", string(l.mode)))
	return nil
}

// inNetns runs fn on a thread in the Loader's network namespace: tcx resolves an ifindex in
// the namespace of the calling thread. A thread that cannot switch back is not reused.
func (l *Loader) inNetns(fn func() error) error {
	return netnsrun.Run(l.ns, fn)
}

// AttachedToPod opens the to_pod program podwall attached to the interface at ifindex, from
// the pins under bpffs: the program of its tcx link, or of its clsact filter.
func AttachedToPod(bpffs string, ifindex int) (*ebpf.Program, error) {
	pin := filepath.Join(StateDir(bpffs), "links", hook{ifindex, egress}.String())
	lk, err := link.LoadPinnedLink(pin, nil)
	if err == nil {
		defer func() { _ = lk.Close() }()
		info, err := lk.Info()
		if err != nil {
			return nil, fmt.Errorf("read the info of link %s: %w", pin, err)
		}
		prog, err := ebpf.NewProgramFromID(info.Program)
		if err != nil {
			return nil, fmt.Errorf("open the program of link %s: %w", pin, err)
		}
		return prog, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load pinned link %s: %w", pin, err)
	}
	prog, err := ebpf.LoadPinnedProgram(pin+clsactSuffix, &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("podwall is not attached to ifindex %d (no pin %s or %s%s)", ifindex, pin, pin, clsactSuffix)
	}
	if err != nil {
		return nil, fmt.Errorf("load pinned program %s%s: %w", pin, clsactSuffix, err)
	}
	return prog, nil
}
