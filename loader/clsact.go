package loader

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func (d direction) clsactParent() uint32 {
	if d == ingress {
		return netlink.HANDLE_MIN_INGRESS
	}
	return netlink.HANDLE_MIN_EGRESS
}

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

// addClsactQdisc adds the clsact qdisc to an interface that has none.
func (l *Loader) addClsactQdisc(ifindex int) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := l.nl.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc to ifindex %d: %w", ifindex, err)
	}
	return nil
}

func (l *Loader) attachClsact(h hook) (attachment, error) {
	if err := l.addClsactQdisc(h.ifindex); err != nil {
		return nil, err
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
	if old == nil { // the filter, or the whole qdisc, was removed
		if err := a.l.addClsactQdisc(a.h.ifindex); err != nil {
			return err
		}
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
