package loader

import (
	"cmp"
	"errors"
	"slices"
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
	var out []Displaced
	err := l.changing(func() error {
		out = l.ensureFirst()
		return nil
	})
	return out, err
}

func (l *Loader) ensureFirst() []Displaced {
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
	return out
}

// errGone means the hook's interface no longer exists.
var errGone = errors.New("interface gone")
