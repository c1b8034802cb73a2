package netif

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Kind is a kind of change in the namespace.
type Kind int

const (
	// LinkChange: an interface came, went or changed state.
	LinkChange Kind = iota
	// RouteChange: a route came or went.
	RouteChange
	// NeighChange: a neighbour or bridge forwarding entry changed.
	NeighChange
)

func (k Kind) String() string {
	return [...]string{"link", "route", "neighbour"}[k]
}

// Change is one notification.
type Change struct {
	Kind Kind
	// Addr is the address of a neighbour entry that changed; the zero Addr for other
	// changes, and for a bridge forwarding entry (which has only a MAC address).
	Addr netip.Addr
}

// Watch calls changed for every link, route and neighbour notification of the namespace
// until ctx is done (then it returns nil) or a subscription breaks (then it returns why:
// notifications were lost, and the caller should look again at everything).
func (f *Finder) Watch(ctx context.Context, changed func(Change)) error {
	ctx, cancel := context.WithCancel(ctx)
	// Each subscription's goroutine closes its channel once its socket is closed; drain them
	// so that none stays blocked on a full channel.
	var drain []func()
	defer func() {
		cancel()
		for _, d := range drain {
			d()
		}
	}()
	var nsp *netns.NsHandle
	if f.ns.IsOpen() {
		nsp = &f.ns
	}
	failed := make(chan error, 3)
	onErr := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	links := make(chan netlink.LinkUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	neighs := make(chan netlink.NeighUpdate, 64)
	done := ctx.Done()
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: nsp, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to links: %w", err)
	}
	drain = append(drain, func() {
		for range links {
		}
	})
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: nsp, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to routes: %w", err)
	}
	drain = append(drain, func() {
		for range routes {
		}
	})
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: nsp, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to neighbours: %w", err)
	}
	drain = append(drain, func() {
		for range neighs {
		}
	})
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("netlink notifications: %w", err)
		case _, ok := <-links:
			if !ok {
				return f.closed(ctx, "link")
			}
			changed(Change{Kind: LinkChange})
		case _, ok := <-routes:
			if !ok {
				return f.closed(ctx, "route")
			}
			changed(Change{Kind: RouteChange})
		case n, ok := <-neighs:
			if !ok {
				return f.closed(ctx, "neighbour")
			}
			c := Change{Kind: NeighChange}
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				c.Addr = a.Unmap()
			}
			changed(c)
		}
	}
}

func (f *Finder) closed(ctx context.Context, what string) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("%s notifications stopped", what)
}
