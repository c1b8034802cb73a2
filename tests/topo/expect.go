package topo

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// PassWait and DropWait bound how long Expect waits for an answer: PassWait for one that must
// come, DropWait for one that must not. Answers on veth pairs take well under a millisecond,
// so DropWait is short to keep the checks of drops fast.
const (
	PassWait = 2 * time.Second
	DropWait = 250 * time.Millisecond
)

// Check is one exchange and whether the policy under test lets it through.
type Check struct {
	Name string
	UDP  bool
	From *Netns
	Src  netip.Addr // optional: send from this address
	To   netip.AddrPort
	Pass bool
}

// TCP is a check of a TCP connection with one echoed message.
func TCP(name string, from *Netns, src, to netip.Addr, port uint16, pass bool) Check {
	return Check{Name: name, From: from, Src: src, To: netip.AddrPortFrom(to, port), Pass: pass}
}

// UDP is a check of one echoed UDP datagram.
func UDP(name string, from *Netns, src, to netip.Addr, port uint16, pass bool) Check {
	c := TCP(name, from, src, to, port, pass)
	c.UDP = true
	return c
}

// Expect runs each check in turn and fails the test at the first that goes otherwise: a pass
// must be answered within PassWait, a drop must get no answer at all within DropWait (not even
// a refusal, which would mean the packet got through).
func Expect(tb testing.TB, checks ...Check) {
	tb.Helper()
	for _, ck := range checks {
		opts := []Option{Timeout(DropWait)}
		if ck.Pass {
			opts = []Option{Timeout(PassWait)}
		}
		if ck.Src.IsValid() {
			opts = append(opts, From(ck.Src))
		}
		send := TCPEcho
		if ck.UDP {
			send = UDPEcho
		}
		err := send(ck.From, ck.To, opts...)
		if ck.Pass {
			require.NoError(tb, err, "%s: must pass", ck.Name)
		} else {
			require.ErrorIs(tb, err, ErrNoAnswer, "%s: must be dropped", ck.Name)
		}
	}
}
