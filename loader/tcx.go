package loader

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

func (d direction) tcxAttach() ebpf.AttachType {
	if d == ingress {
		return ebpf.AttachTCXIngress
	}
	return ebpf.AttachTCXEgress
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
	// The pin by its path: a link moveFirst pinned under a temporary name and renamed does
	// not know its pin by this name, and Unpin would miss it.
	if err := detachLink(a.link, a.l.pinPath(a.h, ModeTCX)); err != nil {
		return fmt.Errorf("%s: %w", a.h, err)
	}
	return nil
}

func (a *tcxAttachment) close() error { return a.link.Close() }

func (a *tcxAttachment) first() (bool, error) {
	info, err := a.link.Info()
	if err != nil {
		return false, fmt.Errorf("link info: %w", err)
	}
	tcx := info.TCX()
	if tcx == nil || tcx.Ifindex == 0 {
		// The link was detached: by the interface's removal, or by another tool, which
		// leaves the hook without podwall until moveFirst attaches it again.
		if _, err := a.l.nl.LinkByIndex(a.h.ifindex); err != nil {
			return false, errGone
		}
		return false, nil
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
	if tcx := info.TCX(); tcx != nil && tcx.Ifindex == 0 {
		return old.Close() // detached already
	}
	if err := old.Detach(); err != nil {
		return errors.Join(fmt.Errorf("detach the old link of %s: %w", a.h, err), old.Close())
	}
	return old.Close()
}
