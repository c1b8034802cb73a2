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
	"github.com/vishvananda/netlink"
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

func (d direction) tcxAttach() ebpf.AttachType {
	if d == ingress {
		return ebpf.AttachTCXIngress
	}
	return ebpf.AttachTCXEgress
}

func (d direction) clsactParent() uint32 {
	if d == ingress {
		return netlink.HANDLE_MIN_INGRESS
	}
	return netlink.HANDLE_MIN_EGRESS
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
	return l.attach(ifindex)
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

// tcx: a link per hook, pinned; the pin keeps it attached after the process exits.
type tcxAttachment struct {
	l    *Loader
	h    hook
	link link.Link
}

// attachTCX attaches prog with a link at the head of the hook's chain and pins it at pin.
func (l *Loader) attachTCX(h hook, prog *ebpf.Program, pin string) (attachment, error) {
	var lk link.Link
	err := l.inNetns(func() error {
		var err error
		lk, err = link.AttachTCX(link.TCXOptions{
			Interface: h.ifindex,
			Program:   prog,
			Attach:    h.dir.tcxAttach(),
			// First in line, on both hooks. On egress, a program after podwall (a CNI's)
			// that redirects the packet or returns TCX_PASS ends the chain, so podwall
			// must judge before it to judge at all; and a packet podwall drops costs the
			// programs after it nothing. On ingress, from_pod must see the pod's packets
			// before a CNI redirects them, or the replies to the pod's own connections
			// would find no record and be dropped. A program attached later with Head
			// goes before podwall until EnsureFirst puts podwall first again.
			Anchor: link.Head(),
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attach tcx %s: %w", h.dir, err)
	}
	if err := lk.Pin(pin); err != nil {
		return nil, errors.Join(fmt.Errorf("pin tcx link %s: %w", h, err), lk.Close())
	}
	return &tcxAttachment{l: l, h: h, link: lk}, nil
}

// loadTCX opens a pinned tcx link; it returns nil, after removing the pin, when the link's
// interface is gone (the kernel detached it).
func (l *Loader) loadTCX(h hook, path string) (attachment, error) {
	lk, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return nil, fmt.Errorf("load pinned link %s: %w", h, err)
	}
	info, err := lk.Info()
	if err != nil {
		_ = lk.Close()
		return nil, fmt.Errorf("link info of %s: %w", h, err)
	}
	if tcx := info.TCX(); tcx == nil || tcx.Ifindex == 0 {
		err := lk.Unpin()
		return nil, errors.Join(err, lk.Close())
	}
	return &tcxAttachment{l: l, h: h, link: lk}, nil
}

func (a *tcxAttachment) mode() Mode { return ModeTCX }

func (a *tcxAttachment) update(prog *ebpf.Program) error { return a.link.Update(prog) }

func (a *tcxAttachment) detach() error {
	// Detach at once: a link whose last reference was its pin is released only after an
	// RCU grace period.
	if err := a.link.Detach(); err != nil {
		return err
	}
	if err := a.link.Unpin(); err != nil {
		return err
	}
	return a.link.Close()
}

func (a *tcxAttachment) close() error { return a.link.Close() }

// clsact: a direct-action bpf filter per hook, and the program pinned as a record of it.
type clsactAttachment struct {
	l *Loader
	h hook
}

const (
	// clsactPriority is the lowest priority number, so podwall's filter runs first, for the
	// reasons given at link.Head() in attachTCX. A bpf filter another tool adds at the same
	// priority later runs before podwall's, until EnsureFirst adds podwall's again.
	clsactPriority = 1
	// clsactHandle is "PW": fixed, so that podwall finds and replaces its own filter.
	// clsactHandleAlt is the other one EnsureFirst moves it to.
	clsactHandle, clsactHandleAlt = 0x5057, 0x5058
	filterPrefix                  = "podwall_"
)

func (l *Loader) filter(h hook, prog *ebpf.Program) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: h.ifindex,
			Parent:    h.dir.clsactParent(),
			Handle:    clsactHandle,
			Priority:  clsactPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           prog.FD(),
		Name:         filterPrefix + h.dir.String(),
		DirectAction: true,
	}
}

// findFilter returns the filter in podwall's slot of a hook, nil if there is none, and
// whether the interface exists.
func (l *Loader) findFilter(h hook) (*netlink.BpfFilter, bool, error) {
	lk, err := l.nl.LinkByIndex(h.ifindex)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("find ifindex %d: %w", h.ifindex, err)
	}
	filters, err := l.nl.FilterList(lk, h.dir.clsactParent())
	if err != nil {
		return nil, true, fmt.Errorf("list filters of %s: %w", h, err)
	}
	for _, f := range filters {
		a := f.Attrs()
		if a.Priority == clsactPriority && (a.Handle == clsactHandle || a.Handle == clsactHandleAlt) {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok || !isOurs(bf) {
				return nil, true, fmt.Errorf("%s: %w", h, ErrHookTaken)
			}
			return bf, true, nil
		}
	}
	return nil, true, nil
}

func isOurs(f *netlink.BpfFilter) bool {
	return f.Priority == clsactPriority && (f.Handle == clsactHandle || f.Handle == clsactHandleAlt) &&
		strings.HasPrefix(f.Name, filterPrefix)
}

func (l *Loader) attachClsact(h hook) (attachment, error) {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: h.ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := l.nl.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("add clsact qdisc to ifindex %d: %w", h.ifindex, err)
	}
	a := &clsactAttachment{l: l, h: h}
	// A filter of ours without a pin is left by a crash between the two steps: replace it.
	if err := a.update(l.program(h.dir)); err != nil {
		return nil, err
	}
	return a, nil
}

// loadClsact returns the attachment a pin records; it returns nil, after removing the pin,
// when the interface or the filter is gone.
func (l *Loader) loadClsact(h hook, path string) (attachment, error) {
	f, _, err := l.findFilter(h)
	if err != nil {
		return nil, err
	}
	if f == nil {
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale pin: %w", err)
		}
		return nil, nil
	}
	return &clsactAttachment{l: l, h: h}, nil
}

func (a *clsactAttachment) mode() Mode { return ModeClsact }

// update replaces the filter's program in place (the kernel swaps it under RCU), then the
// pin, through a temporary name and a rename so that a pin always exists.
func (a *clsactAttachment) update(prog *ebpf.Program) error {
	f, exists, err := a.l.findFilter(a.h)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("update %s: ifindex %d: %w", a.h, a.h.ifindex, unix.ENODEV)
	}
	nf := a.l.filter(a.h, prog)
	if f != nil {
		nf.Handle = f.Handle
		err = a.l.nl.FilterReplace(nf)
	} else {
		err = a.l.nl.FilterAdd(nf)
	}
	if err != nil {
		return fmt.Errorf("set clsact filter %s: %w", a.h, err)
	}
	// A clone has no pin yet: pinning the shared program would move its pin instead.
	clone, err := prog.Clone()
	if err != nil {
		return fmt.Errorf("clone program: %w", err)
	}
	defer clone.Close()
	path := a.l.pinPath(a.h, ModeClsact)
	tmp := path + newSuffix
	if err := clone.Pin(tmp); err != nil {
		return fmt.Errorf("pin program of %s: %w", a.h, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pin program of %s: %w", a.h, err)
	}
	return nil
}

func (a *clsactAttachment) detach() error {
	// A filter of a removed interface went with it: only the pin is left to remove.
	f, _, err := a.l.findFilter(a.h)
	if err != nil {
		return err
	}
	if f != nil {
		if err := a.l.nl.FilterDel(f); err != nil {
			return fmt.Errorf("delete clsact filter %s: %w", a.h, err)
		}
	}
	if err := os.Remove(a.l.pinPath(a.h, ModeClsact)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove pin of %s: %w", a.h, err)
	}
	return nil
}

func (a *clsactAttachment) close() error { return nil }
