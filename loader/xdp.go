package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/cilium/ebpf/link"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// ErrXDPTaken means another tool's XDP program holds the uplink; podwall does not replace it.
var ErrXDPTaken = errors.New("XDP hook taken by another program")

// XDPMode is how from_world is attached to an uplink.
type XDPMode string

const (
	// XDPNative runs in the driver, before the kernel builds an skb: the point of XDP.
	XDPNative XDPMode = "native"
	// XDPGeneric runs after the skb is built, for drivers without XDP: no faster than tc.
	XDPGeneric XDPMode = "generic"
)

// xdpDir holds the pinned XDP links, one per uplink, named by ifindex; apart from the pod
// hooks' links, whose names say another thing.
func (l *Loader) xdpDir() string { return filepath.Join(l.dir, "xdp") }

func (l *Loader) xdpPin(ifindex int) string {
	return filepath.Join(l.xdpDir(), strconv.Itoa(ifindex))
}

// AttachXDP attaches from_world to the uplink at ifindex with a link, pinned so that it
// outlives the agent. Attaching an attached uplink does nothing. An uplink that holds
// another program fails with ErrXDPTaken; a driver without native XDP fails with the
// kernel's error (EOPNOTSUPP), for the caller to skip it or to ask for generic mode.
func (l *Loader) AttachXDP(ifindex int, mode XDPMode) error {
	return l.changing(func() error {
		if _, ok := l.xdp[ifindex]; ok {
			return nil
		}
		flags := link.XDPDriverMode
		if mode == XDPGeneric {
			flags = link.XDPGenericMode
		}
		var lk link.Link
		err := l.inNetns(func() error {
			var err error
			lk, err = link.AttachXDP(link.XDPOptions{Program: l.objs.FromWorld, Interface: ifindex, Flags: flags})
			return err
		})
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("%w: %w", ErrXDPTaken, err)
		}
		if err != nil {
			return fmt.Errorf("attach xdp (%s) to ifindex %d: %w", mode, ifindex, err)
		}
		if err := lk.Pin(l.xdpPin(ifindex)); err != nil {
			return errors.Join(fmt.Errorf("pin xdp link of ifindex %d: %w", ifindex, err), lk.Close())
		}
		l.xdp[ifindex] = lk
		return nil
	})
}

// DetachXDP removes from_world from the uplink, and its pin. An uplink that is not attached
// is not an error.
func (l *Loader) DetachXDP(ifindex int) error {
	return l.changing(func() error {
		lk, ok := l.xdp[ifindex]
		if !ok {
			return nil
		}
		if err := detachLink(lk, l.xdpPin(ifindex)); err != nil {
			return fmt.Errorf("detach xdp of ifindex %d: %w", ifindex, err)
		}
		delete(l.xdp, ifindex)
		return nil
	})
}

// XDPAttached lists the uplinks from_world is attached to, in order.
func (l *Loader) XDPAttached() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int
	for ifindex := range l.xdp {
		out = append(out, ifindex)
	}
	slices.Sort(out)
	return out
}

// reattachXDP takes over the pinned XDP links: each live one moves to the new program in
// place, with no moment without one; those of uplinks that went are dropped.
func (l *Loader) reattachXDP() error {
	entries, err := os.ReadDir(l.xdpDir())
	if err != nil {
		return fmt.Errorf("list pinned xdp links: %w", err)
	}
	for _, e := range entries {
		path := filepath.Join(l.xdpDir(), e.Name())
		ifindex, err := strconv.Atoi(e.Name())
		if err != nil || ifindex <= 0 {
			l.log.Warn("removing unknown pin", zap.String("path", path))
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("remove unknown pin: %w", err)
			}
			continue
		}
		lk, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			return fmt.Errorf("load pinned xdp link of ifindex %d: %w", ifindex, err)
		}
		info, err := lk.Info()
		if err != nil {
			_ = lk.Close()
			return fmt.Errorf("link info of xdp on ifindex %d: %w", ifindex, err)
		}
		if x := info.XDP(); x == nil || x.Ifindex == 0 {
			l.log.Info("dropped the xdp link of a removed uplink", zap.Int("ifindex", ifindex))
			if err := errors.Join(lk.Unpin(), lk.Close()); err != nil {
				return fmt.Errorf("drop the xdp link of ifindex %d: %w", ifindex, err)
			}
			continue
		}
		if err := lk.Update(l.objs.FromWorld); err != nil {
			_ = lk.Close()
			return fmt.Errorf("update xdp of ifindex %d: %w", ifindex, err)
		}
		l.xdp[ifindex] = lk
		l.log.Info("took over xdp link", zap.Int("ifindex", ifindex))
	}
	return nil
}

// detachLink detaches a pinned link at once and removes its pin: a link whose last
// reference was its pin is released only after an RCU grace period.
func detachLink(lk link.Link, pin string) error {
	if err := lk.Detach(); err != nil {
		return err
	}
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the pin: %w", err)
	}
	return lk.Close()
}
