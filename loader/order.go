package loader

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Displaced is a hook where another program ran before podwall's: it judged, or let
// through, packets podwall never saw.
type Displaced struct {
	Ifindex   int
	Direction string // "egress" (to the pod) or "ingress" (from the pod)
	// Err says why podwall could not be put first again; nil: it is first again.
	Err error
}

// EnsureFirst checks that podwall's program runs first on every hook it is attached to, and
// puts it first again, with no moment without it, where another program went ahead. It
// returns the hooks it found displaced.
func (l *Loader) EnsureFirst() ([]Displaced, error) {
	stateLock, err := lock(l.dir, unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer stateLock.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.attached == nil {
		return nil, ErrClosed
	}
	var out []Displaced
	for h, a := range l.attached {
		first, err := a.first()
		if errors.Is(err, errGone) {
			continue // the interface went; Detach drops the attachment
		}
		if err == nil && first {
			continue
		}
		d := Displaced{Ifindex: h.ifindex, Direction: h.dir.String(), Err: err}
		if err == nil {
			d.Err = a.moveFirst(l.program(h.dir))
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b Displaced) int {
		return cmp.Or(cmp.Compare(a.Ifindex, b.Ifindex), cmp.Compare(a.Direction, b.Direction))
	})
	return out, nil
}

// errGone means the hook's interface no longer exists.
var errGone = errors.New("interface gone")

func (a *tcxAttachment) first() (bool, error) {
	info, err := a.link.Info()
	if err != nil {
		return false, fmt.Errorf("link info: %w", err)
	}
	tcx := info.TCX()
	if tcx == nil || tcx.Ifindex == 0 {
		return false, errGone
	}
	var res *link.QueryResult
	err = a.l.inNetns(func() error {
		var err error
		res, err = link.QueryPrograms(link.QueryOptions{Target: int(tcx.Ifindex), Attach: a.h.dir.tcxAttach()})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("query programs of %s: %w", a.h, err)
	}
	if len(res.Programs) == 0 {
		return false, nil
	}
	id, _ := res.Programs[0].LinkID()
	return id == info.ID, nil
}

// moveFirst attaches a new link at the head, with the program's twin when the old link
// runs the program itself (tcx takes a program once per hook), pins it where the old one was
// pinned, and only then detaches the old one: the hook always has podwall's program.
func (a *tcxAttachment) moveFirst(prog *ebpf.Program) error {
	info, err := a.link.Info()
	if err != nil {
		return fmt.Errorf("link info: %w", err)
	}
	progInfo, err := prog.Info()
	if err != nil {
		return fmt.Errorf("program info: %w", err)
	}
	if id, _ := progInfo.ID(); id == info.Program {
		if prog, err = a.l.twin(a.h.dir); err != nil {
			return err
		}
	}
	pin := a.l.pinPath(a.h, ModeTCX)
	head, err := a.l.attachTCX(a.h, prog, pin+newSuffix)
	if err != nil {
		return err
	}
	if err := os.Rename(pin+newSuffix, pin); err != nil {
		return errors.Join(fmt.Errorf("pin %s: %w", a.h, err), head.detach())
	}
	old := a.link
	a.link = head.(*tcxAttachment).link
	if err := old.Detach(); err != nil {
		return fmt.Errorf("detach the old link of %s: %w", a.h, err)
	}
	return old.Close()
}

// first says whether podwall's filter is the first of the hook. Filters of the lowest
// priority run first, and among the filters of one priority the one added last.
func (a *clsactAttachment) first() (bool, error) {
	lk, err := a.l.nl.LinkByIndex(a.h.ifindex)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return false, errGone
	}
	if err != nil {
		return false, fmt.Errorf("find ifindex %d: %w", a.h.ifindex, err)
	}
	filters, err := a.l.nl.FilterList(lk, a.h.dir.clsactParent())
	if err != nil {
		return false, fmt.Errorf("list filters of %s: %w", a.h, err)
	}
	if len(filters) == 0 {
		return false, nil
	}
	bf, ok := filters[0].(*netlink.BpfFilter)
	return ok && isOurs(bf), nil
}

// moveFirst adds podwall's filter again under its other handle, which puts it ahead of
// every filter of its priority, and then deletes the one that was displaced.
func (a *clsactAttachment) moveFirst(prog *ebpf.Program) error {
	old, exists, err := a.l.findFilter(a.h)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("%s: %w", a.h, errGone)
	}
	nf := a.l.filter(a.h, prog)
	if old != nil && old.Handle == clsactHandle {
		nf.Handle = clsactHandleAlt
	}
	if err := a.l.nl.FilterAdd(nf); err != nil {
		return fmt.Errorf("add clsact filter %s: %w", a.h, err)
	}
	if old != nil {
		if err := a.l.nl.FilterDel(old); err != nil {
			return fmt.Errorf("delete the displaced filter of %s: %w", a.h, err)
		}
	}
	return nil
}
