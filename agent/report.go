package agent

import (
	"cmp"
	"maps"
	"slices"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/k8s"
)

// Events posts warnings where the cluster shows them (k8s.Recorder).
type Events interface {
	PodWarning(p k8s.Pod, reason, message string)
	NodeWarning(reason, message string)
}

// Reasons of the agent's Events.
const (
	ReasonInvalidPolicy     = "InvalidPolicy"
	ReasonAddressConflict   = "AddressConflict"
	ReasonInterfaceNotFound = "InterfaceNotFound"
	ReasonAttachFailed      = "AttachFailed"
	ReasonMapFull           = "MapFull"
	ReasonOverBudget        = "PolicyOverBudget"
	ReasonApplyFailed       = "ApplyFailed"
	ReasonConntrackFull     = "ConntrackNearlyFull"
	ReasonMapNearlyFull     = "MapNearlyFull"
	ReasonProgramAhead      = "ProgramAhead"
	// ReasonInvalidAudit: the pod's or its namespace's podwall.io/audit is neither true nor
	// false; the pod is enforced.
	ReasonInvalidAudit = "InvalidAuditAnnotation"
)

// finding is one thing wrong with one pod, or with the node when pod is zero.
type finding struct {
	pod     podKey
	reason  string // the Event reason; "" for findings that are only logged
	kind    string // what the log line says it is
	message string
}

type findingKey struct {
	pod  podKey
	kind string
}

// reporter reports each finding once per change of its message: a log line, and an Event
// when it has a reason. A finding that is gone is logged as resolved.
type reporter struct {
	log    *zap.Logger
	events Events // nil: logs only
	node   string
	last   map[findingKey]string
}

func newReporter(log *zap.Logger, events Events, node string) *reporter {
	return &reporter{log: log, events: events, node: node, last: map[findingKey]string{}}
}

// report takes every current finding of one area (the kinds listed): what is new or
// changed is reported, what of those kinds is gone is logged as resolved.
func (r *reporter) report(kinds []string, found []finding, uids map[podKey]types.UID) {
	seen := map[findingKey]bool{}
	for _, f := range found {
		k := findingKey{f.pod, f.kind}
		seen[k] = true
		if old, ok := r.last[k]; ok && old == f.message {
			continue
		}
		r.last[k] = f.message
		log := r.log.With(zap.String("kind", f.kind))
		if f.pod != (podKey{}) {
			log = log.With(zap.String("pod", f.pod.String()))
		}
		log.Warn(f.message)
		if r.events == nil || f.reason == "" {
			continue
		}
		if f.pod == (podKey{}) {
			r.events.NodeWarning(f.reason, f.message)
		} else if uid, ok := uids[f.pod]; ok {
			r.events.PodWarning(k8s.Pod{Pod: compiler.Pod{Namespace: f.pod.namespace, Name: f.pod.name}, UID: uid}, f.reason, f.message)
		}
	}
	keys := slices.SortedFunc(maps.Keys(r.last), func(a, b findingKey) int {
		return cmp.Or(cmp.Compare(a.pod.String(), b.pod.String()), cmp.Compare(a.kind, b.kind))
	})
	for _, k := range keys {
		if !seen[k] && slices.Contains(kinds, k.kind) {
			delete(r.last, k)
			log := r.log.With(zap.String("kind", k.kind))
			if k.pod != (podKey{}) {
				log = log.With(zap.String("pod", k.pod.String()))
			}
			log.Info("resolved")
		}
	}
}

// problemKinds are the compiler's problems as findings.
var problemKinds = func() []string {
	var out []string
	for k := compiler.ProblemInvalid; k < compiler.NumProblemKinds; k++ {
		out = append(out, k.String())
	}
	return out
}()

// problemFindings turns the compiler's problems into findings. An ignored annotation (open
// namespace) and duplicates are only logged: SPEC asks for Events on invalid policies, an
// address conflict is worth one too, as it unguards traffic from the pod that lost, and a pod
// isolated for its policy's size or the node's room has to be told why.
func problemFindings(problems []compiler.Problem) []finding {
	out := make([]finding, 0, len(problems))
	for _, p := range problems {
		f := finding{pod: podKey{p.Namespace, p.Name}, kind: p.Kind.String(), message: p.Err.Error()}
		switch p.Kind {
		case compiler.ProblemInvalid, compiler.ProblemTooManyRules:
			f.reason = ReasonInvalidPolicy
		case compiler.ProblemAddressConflict:
			f.reason = ReasonAddressConflict
		case compiler.ProblemOverBudget:
			f.reason = ReasonOverBudget
		case compiler.ProblemNoRoom:
			f.reason = ReasonMapFull
		case compiler.ProblemInvalidAudit:
			f.reason = ReasonInvalidAudit
		}
		out = append(out, f)
	}
	return out
}
