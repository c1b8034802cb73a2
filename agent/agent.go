package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podwall/podwall/agent/netif"
	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/datapath"
	"github.com/podwall/podwall/k8s"
)

// Source is where the agent learns what runs: k8s.Cluster or k8s.File.
type Source interface {
	// Run calls notify(nil) once it holds a whole view and after each change, and
	// notify(err) for each failure after which it keeps its last view.
	Run(ctx context.Context, notify func(error)) error
	// Changes returns what changed since the last call, the whole view the first time.
	Changes() (k8s.Delta, error)
}

// Datapath is the data path the agent keeps in step with the source: datapath.Datapath.
type Datapath interface {
	// Apply makes the maps hold the state; datapath.ErrMapFull when a map had no room.
	Apply(s *compiler.State) error
	// Capacity is the room of the maps the state goes to.
	Capacity() compiler.Capacity
	// Fill says how full each map is.
	Fill() []datapath.Fill
	Attach(ifindex int) error
	Detach(ifindex int) error
	Attached() []int
	// EnsureFirst puts podwall's programs first again where another went ahead of them.
	EnsureFirst() ([]datapath.Displaced, error)
	CollectConntrack() (datapath.Collection, error)
	// Verdicts reads the packets counted under each reason.
	Verdicts() ([bpf.NumReasons]uint64, error)
	// AttachXDP, DetachXDP and XDPAttached manage from_world on the uplinks; XDPDrops reads
	// what it dropped, by reason.
	AttachXDP(ifindex int, mode datapath.XDPMode) error
	DetachXDP(ifindex int) error
	XDPAttached() []int
	XDPDrops() ([bpf.NumReasons]uint64, error)
	// Audits reads the packets audit mode passed that a policy drops, by reason.
	Audits() ([bpf.NumReasons]uint64, error)
	// RuleCounts reads what each rule of an endpoint decided, then what no rule did.
	RuleCounts(ifindex uint32) ([]datapath.RuleCount, error)
	// Mode is how the programs are attached: tcx or clsact.
	Mode() datapath.Mode
}

// Interfaces finds the pods' interfaces in the namespace the Datapath attaches in:
// netif.Finder.
type Interfaces interface {
	// Find returns the ifindex of the interface that carries the traffic to these addresses.
	Find(ips []netip.Addr) (int, error)
	Exists(ifindex int) bool
	// HostAddrs lists the node's own addresses.
	HostAddrs() ([]netip.Addr, error)
	// Links returns the ifindexes of the interfaces whose names match.
	Links(match func(name string) bool) ([]int, error)
	// Uplinks returns the ifindexes of the interfaces holding the default routes.
	Uplinks() ([]int, error)
	// LinkType is the kind of an interface ("veth", "device", ...).
	LinkType(ifindex int) (string, error)
	// Name is an interface's name.
	Name(ifindex int) (string, error)
	// Watch calls changed for each change of links, routes and neighbours until ctx is done
	// (nil) or notifications were lost (an error).
	Watch(ctx context.Context, changed func(netif.Change)) error
}

// Defaults of Config.
const (
	DefaultDebounce    = 5 * time.Millisecond
	DefaultMaxDebounce = 50 * time.Millisecond
	minRetry           = 100 * time.Millisecond
	maxRetry           = 10 * time.Second
	// startupResolve bounds how long the first reconcile waits for the bridge ports of the
	// node's pods to be learnt, so that a restarted agent does not leave a pod without its
	// endpoint for want of a neighbour entry.
	startupResolve = 2 * time.Second
	// healthStale is how long the loop may go without a turn before /healthz fails.
	healthStale = time.Minute
	heartbeat   = 10 * time.Second
	// DefaultConntrackGC is how often expired conntrack entries are removed: the table
	// evicts nothing by itself.
	DefaultConntrackGC = 10 * time.Second
	// DefaultChainCheck is how often the agent checks that its programs run first on every
	// interface it guards.
	DefaultChainCheck = 10 * time.Second
	// conntrackNearlyFull is the share of the conntrack table in use past which the node
	// gets an Event: new flows will soon go unrecorded.
	conntrackNearlyFull = 0.9
	// mapNearlyFull is the same for the maps the applier writes: a policy, an address or an
	// endpoint will soon not fit.
	mapNearlyFull = 0.9
)

// Config is what the agent works with.
type Config struct {
	// Node is the name of this node: its pods are the endpoints.
	Node     string
	Options  compiler.Options
	Source   Source
	Datapath Datapath
	// Finder looks up interfaces in the namespace the Datapath attaches in.
	Finder Interfaces
	// Events receives Kubernetes Events; nil: findings are only logged.
	Events Events
	// Metrics default: NewMetrics of the Datapath's stats map.
	Metrics *Metrics
	Logger  *zap.Logger
	// ReadyFile, if set, is written once the first apply succeeded and every local pod with
	// an address is attached.
	ReadyFile string
	// Debounce is the quiet time that ends a burst of changes, MaxDebounce the longest a
	// burst is waited for. Defaults DefaultDebounce and DefaultMaxDebounce.
	Debounce, MaxDebounce time.Duration
	// ConntrackGC is how often the conntrack collector runs. Default DefaultConntrackGC.
	ConntrackGC time.Duration
	// ChainCheck is how often the agent checks that its programs run first on every
	// interface, and puts them first again. Default DefaultChainCheck.
	ChainCheck time.Duration
	// Strict lists name patterns (path.Match) of the pods' interfaces: each gets the programs
	// as soon as it appears, before the source tells which pod it belongs to, and passes
	// nothing until that pod's entry is written. Empty: an interface is attached once its
	// pod is known.
	Strict []string
	// Status, if set, receives each local pod's podwall.io/policy-enforced condition after
	// every apply that changes it; nil (a pods file): none.
	Status Status
	// RuleMetrics picks the rules whose counters are metrics.
	RuleMetrics RuleMetrics
	// XDP lists the uplinks to attach from_world to, by name, or XDPAuto alone for the
	// interfaces holding the default routes. Empty: no XDP. Auto attaches in native mode only
	// and skips a driver without it; a named interface falls back to generic mode.
	XDP []string
}

// XDPAuto in Config.XDP stands for the interfaces that hold the default routes.
const XDPAuto = "auto"

// Status sets the pods' podwall.io/policy-enforced condition (k8s.StatusWriter).
type Status interface {
	SetEnforced(ctx context.Context, p k8s.Pod, enforced bool, reason, message string, since time.Time) error
}

// Reasons of the podwall.io/policy-enforced condition besides the findings' (InvalidPolicy,
// InterfaceNotFound, MapFull, ...).
const (
	ReasonEnforced    = "Enforced"
	ReasonNotEnforced = "NotEnforced"
)

// Agent runs the loop.
type Agent struct {
	cfg    Config
	log    *zap.Logger
	report *reporter

	kick    trigger
	synced  atomic.Bool                         // the source holds a whole view
	pending atomic.Pointer[map[netip.Addr]bool] // addresses of the local pods whose interface is not found
	applied atomic.Bool                         // the first apply succeeded
	// applyFailures counts the applies that failed since the last one that succeeded.
	applyFailures atomic.Int64
	lastTurn      atomic.Int64
	ready         bool // the ready file is written

	known map[podKey]int // the interface each local pod was last found on
	// found caches each local pod's interface as found at links and routes generation
	// linksGen: a pod moves to another interface only with a change of links or routes,
	// which bumps linksGen, so the loop does not look every pod up on every change.
	found    map[podKey]foundIf
	linksGen atomic.Uint64
	// strict are the interfaces the Strict patterns matched at the last look.
	strict []int
	// view is the cluster as the source's changes left it; compiler keeps the last
	// compilation, and takes each change of a pod from view.
	view     *view
	compiler compiler.Compiler
	// xdpSkipped are the uplinks auto leaves to tc (no native XDP, or veth), reported once;
	// xdpFailed the last error of each uplink XDP could not be attached to.
	xdpSkipped map[int]bool
	xdpFailed  map[int]string
	// enforcement is the condition last handed to conditions for each local pod (a pod
	// re-created under its name is another pod); conditions writes them, and is nil without
	// Config.Status.
	enforcement map[podUID]condition
	conditions  *conditions
	// status is what the last apply left of each local pod, for Status.
	status atomic.Pointer[[]PodStatus]
}

// foundIf is a local pod's interface, found for its addresses at a generation of the links.
type foundIf struct {
	gen     uint64
	ips     []netip.Addr
	ifindex int
	name    string
}

type podUID struct {
	podKey
	uid types.UID
}

// condition is a pod's podwall.io/policy-enforced condition as the agent last wrote it.
type condition struct {
	enforced        bool
	reason, message string
	since           time.Time
}

// New returns an agent; Run starts it.
func New(cfg Config) *Agent {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(cfg.Datapath)
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.MaxDebounce == 0 {
		cfg.MaxDebounce = DefaultMaxDebounce
	}
	if cfg.ConntrackGC == 0 {
		cfg.ConntrackGC = DefaultConntrackGC
	}
	if cfg.ChainCheck == 0 {
		cfg.ChainCheck = DefaultChainCheck
	}
	a := &Agent{
		cfg:    cfg,
		log:    cfg.Logger,
		report: newReporter(cfg.Logger, cfg.Events, cfg.Node),
		kick:   newTrigger(),
		known:  map[podKey]int{},
		found:  map[podKey]foundIf{},
		view:   newView(cfg.Node),

		xdpSkipped: map[int]bool{},
		xdpFailed:  map[int]string{},

		enforcement: map[podUID]condition{},
	}
	if cfg.Status != nil {
		a.conditions = newConditions(cfg.Status, cfg.Logger)
	}
	if err := cfg.Metrics.Registry.Register(&ruleHits{status: a.Status, cfg: cfg.RuleMetrics, log: cfg.Logger}); err != nil {
		// Metrics of another agent (a test's): that agent's rules are the series.
		cfg.Logger.Warn("register the rule metrics", zap.Error(err))
	}
	return a
}

// Ready says whether the maps hold a state compiled from the source: the first apply
// succeeded, and the last one did too.
func (a *Agent) Ready() bool { return a.applied.Load() && a.applyFailures.Load() == 0 }

// Healthy says whether the loop took a turn recently.
func (a *Agent) Healthy() bool {
	return time.Since(time.Unix(0, a.lastTurn.Load())) < healthStale
}

// Run runs the loop until ctx is done. The maps and attachments stay as they are when it
// returns.
func (a *Agent) Run(ctx context.Context) error {
	if a.cfg.ReadyFile != "" {
		if err := os.Remove(a.cfg.ReadyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale ready file: %w", err)
		}
	}
	a.lastTurn.Store(time.Now().UnixNano())
	ctx, cancel := context.WithCancel(ctx)
	// Nothing the agent started outlives Run: ctx ends the source and the watcher, and Run
	// waits for both.
	var started sync.WaitGroup
	defer func() {
		cancel()
		started.Wait()
	}()
	sourceDone := make(chan error, 1) // buffered: the source's goroutine never waits on Run
	started.Go(func() { sourceDone <- a.cfg.Source.Run(ctx, a.sourceChanged) })
	started.Go(func() { a.watchInterfaces(ctx) })
	if a.conditions != nil {
		started.Go(func() { a.conditions.run(ctx) })
	}

	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	gc := time.NewTicker(a.cfg.ConntrackGC)
	defer gc.Stop()
	order := time.NewTicker(a.cfg.ChainCheck)
	defer order.Stop()
	back := backoff{min: minRetry, max: maxRetry}
	first := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-sourceDone:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("source: %w", err)
		case <-beat.C:
			a.lastTurn.Store(time.Now().UnixNano())
			continue
		case <-gc.C:
			a.collectConntrack()
			continue
		case <-order.C:
			a.ensureFirst()
			continue
		case <-a.kick:
		case <-retry.C:
		}
		if !settle(ctx, a.kick, a.cfg.Debounce, a.cfg.MaxDebounce) {
			return nil
		}
		a.lastTurn.Store(time.Now().UnixNano())
		again := a.holdStrict()
		if !a.synced.Load() {
			if again {
				retry.Reset(back.delay())
			}
			continue
		}
		if a.reconcile(ctx, first) || again {
			retry.Reset(back.delay())
		} else {
			back.reset()
			retry.Stop()
		}
		first = false
	}
}

// wakes says whether a change of the node's interfaces can change the endpoints, given the
// addresses of the pods whose interface is missing.
func wakes(c netif.Change, pending *map[netip.Addr]bool) bool {
	if c.Kind != netif.NeighChange {
		return true
	}
	if pending == nil || len(*pending) == 0 {
		return false
	}
	return !c.Addr.IsValid() || (*pending)[c.Addr]
}

func (a *Agent) sourceChanged(err error) {
	if err != nil {
		a.cfg.Metrics.sourceErrors.Inc()
		a.log.Warn("source failed; the last state it held stays enforced", zap.Error(err))
		return
	}
	a.synced.Store(true)
	a.kick.fire()
}

// watchInterfaces wakes the loop on link and route changes, and on the neighbour changes
// that may reveal a missing interface: of a missing pod's address, or a bridge forwarding
// entry while a pod is missing. A broken subscription is started again, and everything
// looked at again, since notifications were lost.
func (a *Agent) watchInterfaces(ctx context.Context) {
	for {
		err := a.cfg.Finder.Watch(ctx, func(c netif.Change) {
			if c.Kind != netif.NeighChange {
				a.linksGen.Add(1)
			}
			if wakes(c, a.pending.Load()) {
				a.kick.fire()
			}
		})
		if ctx.Err() != nil {
			return
		}
		a.linksGen.Add(1)
		a.log.Warn("interface notifications lost; watching again", zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		a.kick.fire()
	}
}

// reconcile makes the data path match the source, and says whether something must be tried
// again.
func (a *Agent) reconcile(ctx context.Context, first bool) (again bool) {
	start := time.Now()
	d, err := a.cfg.Source.Changes()
	if err != nil {
		a.log.Error("read source", zap.Error(err))
		return true
	}
	a.view.take(d, &a.compiler)
	hostIPs, err := a.cfg.Finder.HostAddrs()
	if err != nil {
		a.log.Error("read node addresses", zap.Error(err))
		return true
	}
	a.cfg.Metrics.pods.Set(float64(len(a.view.uids)))
	a.cfg.Metrics.namespaces.Set(float64(len(a.view.namespaces)))
	uids := a.view.uids

	locals := a.view.localPods()
	endpoints, missing := a.endpoints(locals)
	if first && len(missing) > 0 {
		endpoints, missing = a.awaitEndpoints(ctx, locals, endpoints, missing)
	}
	pending := map[netip.Addr]bool{}
	for _, p := range locals {
		if slices.ContainsFunc(missing, func(f finding) bool { return f.pod == keyOf(p) }) {
			for _, ip := range p.IPs {
				pending[ip] = true
			}
		}
	}
	a.pending.Store(&pending)
	a.cfg.Metrics.interfaceMissing.Set(float64(len(missing)))
	a.report.report([]string{kindInterface}, missing, uids)

	opts := a.cfg.Options
	opts.Capacity = a.cfg.Datapath.Capacity()
	state := a.compiler.CompileNode(compiler.Input{Endpoints: endpoints, HostIPs: hostIPs,
		NamespaceAnnotations: a.view.namespaceAnnotations, Options: opts})
	a.report.report(problemKinds, problemFindings(state.Problems), uids)
	// Every pod's interface gets the programs before its entry exists: without one they
	// drop everything, so a pod is guarded from the moment it is found, whether Apply then
	// writes its entry or fails, and a pod the maps have no room for stays isolated.
	attachFailed := a.attach(endpoints)
	a.report.report([]string{kindAttach}, attachFailed, uids)
	if err := a.cfg.Datapath.Apply(state); err != nil {
		a.cfg.Metrics.applyErrors.Inc()
		a.cfg.Metrics.applyFailing.Set(float64(a.applyFailures.Add(1)))
		f := finding{kind: kindApply, reason: ReasonApplyFailed, message: err.Error()}
		if errors.Is(err, datapath.ErrMapFull) {
			f.reason = ReasonMapFull
		}
		a.report.report([]string{kindApply}, []finding{f}, uids)
		return true
	}
	a.applyFailures.Store(0)
	a.cfg.Metrics.applyFailing.Set(0)
	a.report.report([]string{kindApply}, nil, uids)
	a.cfg.Metrics.applySeconds.Observe(time.Since(start).Seconds())
	fill := a.cfg.Datapath.Fill()
	a.cfg.Metrics.observeState(state, fill)
	a.reportFill(fill)
	if !a.applied.Swap(true) {
		a.log.Info("first state applied", zap.Int("pods", len(uids)), zap.Int("endpoints", len(state.Endpoints)),
			zap.Duration("took", time.Since(start)))
	}

	a.detach(endpoints)
	a.syncXDP()
	a.publishEnforcement(locals, endpoints, state, missing)
	if len(missing) == 0 && len(attachFailed) == 0 {
		a.writeReady()
	}
	a.log.Debug("reconciled", zap.Int("pods", len(uids)), zap.Int("endpoints", len(state.Endpoints)),
		zap.Int("missing", len(missing)), zap.Duration("took", time.Since(start)))
	return len(missing) > 0 || len(attachFailed) > 0
}

// publishEnforcement hands each running local pod's podwall.io/policy-enforced condition to
// the writer (conditions) where it changed, after an apply: True once the kernel holds the
// pod's current policy on its interface (the message names the policy and generation), False
// with the reason while the pod is isolated for its annotation or the node's room, or has no
// interface found.
//
// It also keeps what `podwall status` shows of each pod (Agent.Status), written or not.
func (a *Agent) publishEnforcement(locals []k8s.Pod, eps []compiler.Endpoint, state *compiler.State, missing []finding) {
	ifindexOf := map[podKey]uint32{}
	for _, ep := range eps {
		ifindexOf[podKey{ep.Namespace, ep.Name}] = ep.Ifindex
	}
	why := map[podKey]finding{}
	for _, f := range append(problemFindings(state.Problems), missing...) {
		// An invalid audit annotation enforces: it is reported, but the pod is protected.
		if _, ok := why[f.pod]; !ok && f.reason != "" && f.reason != ReasonInvalidAudit {
			why[f.pod] = f
		}
	}
	live := map[podUID]bool{}
	for _, p := range locals {
		if len(p.IPs) == 0 || p.HostNetwork {
			continue
		}
		k := keyOf(p)
		id := podUID{k, p.UID}
		live[id] = true
		c := condition{reason: ReasonNotEnforced, message: "no entry in the kernel"}
		if f, ok := why[k]; ok {
			c.reason, c.message = f.reason, f.message
		} else if ifindex, ok := ifindexOf[k]; ok {
			if ep, ok := state.Endpoints[ifindex]; ok {
				c = condition{enforced: true, reason: ReasonEnforced, message: enforcedMessage(ep)}
			}
		}
		last, ok := a.enforcement[id]
		if ok && last.enforced == c.enforced && last.reason == c.reason && last.message == c.message {
			continue
		}
		c.since = time.Now()
		if ok && last.enforced == c.enforced {
			c.since = last.since
		}
		a.enforcement[id] = c
		if a.conditions != nil {
			a.conditions.set(id, p, c)
		}
	}
	for id := range a.enforcement {
		if !live[id] {
			delete(a.enforcement, id)
			if a.conditions != nil {
				a.conditions.forget(id)
			}
		}
	}
	a.keepStatus(locals, ifindexOf, state)
}

// statusTimeout bounds one write of a pod's condition.
const statusTimeout = 5 * time.Second

func enforcedMessage(ep bpf.PodwallEndpoint) string {
	switch ep.Mode {
	case bpf.ModeOpen:
		return fmt.Sprintf("open namespace, generation %d", ep.Generation)
	case bpf.ModeIsolate:
		return fmt.Sprintf("isolated: the policy has no rules, generation %d", ep.Generation)
	}
	return fmt.Sprintf("policy %#08x, generation %d", ep.Policy, ep.Generation)
}

// syncXDP keeps from_world on the uplinks Config.XDP names, and on no other: the default
// routes move, interfaces come and go. It runs after an apply, so local_pods holds the pods
// it judges (until then, it would pass everything: harmless, tc judges it all the same).
func (a *Agent) syncXDP() {
	if len(a.cfg.XDP) == 0 {
		return
	}
	auto := len(a.cfg.XDP) == 1 && a.cfg.XDP[0] == XDPAuto
	var want []int
	var err error
	if auto {
		want, err = a.cfg.Finder.Uplinks()
	} else {
		want, err = a.cfg.Finder.Links(func(name string) bool { return slices.Contains(a.cfg.XDP, name) })
	}
	if err != nil {
		a.log.Error("find the uplinks for XDP", zap.Error(err))
		return
	}
	attached := a.cfg.Datapath.XDPAttached()
	for _, ifindex := range want {
		if slices.Contains(attached, ifindex) || a.xdpSkipped[ifindex] {
			continue
		}
		if auto {
			// veth has native XDP, but its skb exists already, so XDP saves little there,
			// and it cut an allowed TCP stream to about a third (tests/bench
			// BenchmarkFlood): a node that is a container (kind) keeps tc alone unless its
			// uplink is named.
			if kind, err := a.cfg.Finder.LinkType(ifindex); err == nil && kind == "veth" {
				a.xdpSkipped[ifindex] = true
				a.log.Info("uplink skipped: XDP on veth costs more than it saves; name it in --xdp-devices to attach anyway",
					zap.Int("ifindex", ifindex))
				continue
			}
		}
		err := a.cfg.Datapath.AttachXDP(ifindex, datapath.XDPNative)
		if err != nil && errors.Is(err, unix.EOPNOTSUPP) {
			if auto {
				a.xdpSkipped[ifindex] = true
				a.log.Info("uplink skipped: its driver has no native XDP, and generic XDP is no faster than tc",
					zap.Int("ifindex", ifindex))
				continue
			}
			a.log.Warn("uplink without native XDP: attaching generic XDP, which drops no earlier than tc",
				zap.Int("ifindex", ifindex))
			err = a.cfg.Datapath.AttachXDP(ifindex, datapath.XDPGeneric)
		}
		if err != nil {
			a.cfg.Metrics.attachErrors.Inc()
			// Tried again at each reconcile (another tool may let the hook go), reported
			// once per error.
			if a.xdpFailed[ifindex] != err.Error() {
				a.xdpFailed[ifindex] = err.Error()
				a.log.Error("attach XDP to an uplink; tc still judges its packets", zap.Int("ifindex", ifindex), zap.Error(err))
			}
			continue
		}
		delete(a.xdpFailed, ifindex)
		a.log.Info("XDP attached to an uplink", zap.Int("ifindex", ifindex))
	}
	for _, ifindex := range a.cfg.Datapath.XDPAttached() {
		if slices.Contains(want, ifindex) {
			continue
		}
		if err := a.cfg.Datapath.DetachXDP(ifindex); err != nil {
			a.log.Error("detach XDP from a former uplink", zap.Int("ifindex", ifindex), zap.Error(err))
			continue
		}
		a.log.Info("XDP detached from a former uplink", zap.Int("ifindex", ifindex))
	}
}

// Kinds of the agent's own findings.
const (
	kindInterface  = "interface-not-found"
	kindAttach     = "attach-failed"
	kindApply      = "apply-failed"
	kindConntrack  = "conntrack-nearly-full"
	kindMapFill    = "map-nearly-full"
	kindChainOrder = "program-ahead"
)

// reportFill reports each map the applier writes that is nearly full (an Event on the node,
// whose message leaves out the count, so that it is posted once) until it is not: before a map is full, its pods are whole; once it is, they are isolated
// (or go uncounted, for rule_counters).
func (a *Agent) reportFill(fill []datapath.Fill) {
	var found []finding
	for _, f := range fill {
		if f.Max == 0 || float64(f.Entries) < mapNearlyFull*float64(f.Max) {
			continue
		}
		then := "pods whose policy or addresses do not fit are isolated"
		if f.Map == bpf.PodwallMapRuleCounters {
			then = "pods whose rules do not fit go uncounted"
		}
		found = append(found, finding{kind: kindMapFill + " " + f.Map, reason: ReasonMapNearlyFull,
			message: fmt.Sprintf("map %s is over %d%% full (of %d entries): raise it with --map-size %s=N; once it is full, %s",
				f.Map, int(mapNearlyFull*100), f.Max, f.Map, then)})
	}
	kinds := make([]string, 0, len(fill))
	for _, f := range fill {
		kinds = append(kinds, kindMapFill+" "+f.Map)
	}
	a.report.report(kinds, found, nil)
}

// collectConntrack runs the conntrack collector, and reports a table that is nearly full
// (an Event on the node) until it is not.
func (a *Agent) collectConntrack() {
	c, err := a.cfg.Datapath.CollectConntrack()
	if err != nil {
		a.cfg.Metrics.ctErrors.Inc()
		a.log.Error("collect conntrack garbage", zap.Error(err))
		return
	}
	a.cfg.Metrics.observeConntrack(c)
	a.log.Debug("conntrack collected", zap.Uint32("live4", c.Live4), zap.Uint32("live6", c.Live6),
		zap.Uint32("expired", c.Expired), zap.Uint32("flushed", c.Flushed),
		zap.Uint32("capacity4", c.Capacity4), zap.Uint32("capacity6", c.Capacity6))
	var found []finding
	if c.Fullest() >= conntrackNearlyFull {
		found = append(found, finding{kind: kindConntrack, reason: ReasonConntrackFull,
			message: fmt.Sprintf("conntrack is over %d%% full (IPv4 %d of %d entries, IPv6 %d of %d, --conntrack-size): new flows will soon go unrecorded, and the replies of a pod's new connections be judged by its policy", int(conntrackNearlyFull*100), c.Live4, c.Capacity4, c.Live6, c.Capacity6)})
	}
	a.report.report([]string{kindConntrack}, found, nil)
}

// endpoints finds the interface of each local pod. A pod whose interface is not found keeps
// the one it was last found on while that interface exists (a neighbour entry that expired
// must not unguard it), and is reported missing otherwise; so does a pod that left the source.
func (a *Agent) endpoints(locals []k8s.Pod) ([]compiler.Endpoint, []finding) {
	var eps []compiler.Endpoint
	var missing []finding
	known := make(map[podKey]int, len(locals))
	gen := a.linksGen.Load()
	found := make(map[podKey]foundIf, len(locals))
	for _, p := range locals {
		k := keyOf(p)
		if f, ok := a.found[k]; ok && f.gen == gen && slices.Equal(f.ips, p.IPs) {
			found[k], known[k] = f, f.ifindex
			eps = append(eps, compiler.Endpoint{Ifindex: uint32(f.ifindex), Namespace: p.Namespace, Name: p.Name})
			continue
		}
		ifindex, err := a.cfg.Finder.Find(p.IPs)
		if err != nil {
			if old, ok := a.known[k]; ok && a.cfg.Finder.Exists(old) {
				ifindex, err = old, nil
			}
		} else {
			f := foundIf{gen: gen, ips: p.IPs, ifindex: ifindex, name: "if" + strconv.Itoa(ifindex)}
			if name, err := a.cfg.Finder.Name(ifindex); err == nil {
				f.name = name
			}
			found[k] = f
		}
		if err != nil {
			missing = append(missing, finding{pod: k, kind: kindInterface, reason: ReasonInterfaceNotFound,
				message: "interface not found, pod not guarded yet: " + err.Error()})
			continue
		}
		known[k] = ifindex
		eps = append(eps, compiler.Endpoint{Ifindex: uint32(ifindex), Namespace: p.Namespace, Name: p.Name})
	}
	a.found = found
	// A pod the source no longer lists (or lists without an address) while its interface
	// lives keeps an endpoint: the compiler isolates a pod it does not know, and from_pod
	// drops what an address-less pod sends. It goes once its interface does.
	for k, ifindex := range a.known {
		if _, ok := known[k]; ok || !a.cfg.Finder.Exists(ifindex) ||
			slices.ContainsFunc(eps, func(ep compiler.Endpoint) bool { return int(ep.Ifindex) == ifindex }) {
			continue
		}
		known[k] = ifindex
		eps = append(eps, compiler.Endpoint{Ifindex: uint32(ifindex), Namespace: k.namespace, Name: k.name})
	}
	a.known = known
	return eps, missing
}

// awaitEndpoints retries the pods whose bridge port is not learnt yet, for a short while:
// the first apply of a restarted agent would otherwise drop their endpoints until it is.
func (a *Agent) awaitEndpoints(ctx context.Context, locals []k8s.Pod, eps []compiler.Endpoint, missing []finding) ([]compiler.Endpoint, []finding) {
	deadline := time.Now().Add(startupResolve)
	for len(missing) > 0 && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return eps, missing
		case <-time.After(20 * time.Millisecond):
		}
		eps, missing = a.endpoints(locals)
	}
	return eps, missing
}

// attach attaches the programs to the endpoints' interfaces that lack them. It returns the
// failures.
func (a *Agent) attach(eps []compiler.Endpoint) []finding {
	attached := a.cfg.Datapath.Attached()
	var failed []finding
	for _, ep := range eps {
		ifindex := int(ep.Ifindex)
		if slices.Contains(attached, ifindex) {
			continue
		}
		pod := podKey{ep.Namespace, ep.Name}
		if err := a.cfg.Datapath.Attach(ifindex); err != nil {
			a.cfg.Metrics.attachErrors.Inc()
			failed = append(failed, finding{pod: pod, kind: kindAttach, reason: ReasonAttachFailed,
				message: "pod not guarded: " + err.Error()})
			continue
		}
		attached = append(attached, ifindex)
		a.log.Info("attached", zap.String("pod", pod.String()), zap.Int("ifindex", ifindex))
	}
	return failed
}

// holdStrict attaches the programs to each interface the Strict patterns match that lacks
// them: with no entry they drop everything, so the pod behind it is isolated from the moment
// its interface appears. It says whether something must be tried again.
func (a *Agent) holdStrict() (again bool) {
	if len(a.cfg.Strict) == 0 {
		return false
	}
	found, err := a.cfg.Finder.Links(a.strictMatch)
	if err != nil {
		// The interfaces of the last look stay held.
		a.log.Error("list interfaces for --strict-interfaces", zap.Error(err))
		return true
	}
	a.strict = found
	if !a.synced.Load() {
		a.cfg.Metrics.interfacesHeld.Set(float64(len(found)))
	}
	attached := a.cfg.Datapath.Attached()
	for _, ifindex := range found {
		if slices.Contains(attached, ifindex) {
			continue
		}
		if err := a.cfg.Datapath.Attach(ifindex); err != nil {
			a.cfg.Metrics.attachErrors.Inc()
			a.log.Error("attach to a new interface (--strict-interfaces)", zap.Int("ifindex", ifindex), zap.Error(err))
			again = true
			continue
		}
		a.log.Info("attached to a new interface; it passes nothing until its pod's entry is written",
			zap.Int("ifindex", ifindex))
	}
	return again
}

func (a *Agent) strictMatch(name string) bool {
	return slices.ContainsFunc(a.cfg.Strict, func(pattern string) bool {
		ok, _ := path.Match(pattern, name) // patterns are checked when the flag is read
		return ok
	})
}

// held returns the strict interfaces that are not endpoints.
func (a *Agent) held(eps []compiler.Endpoint) []int {
	var out []int
	for _, ifindex := range a.strict {
		if !slices.ContainsFunc(eps, func(ep compiler.Endpoint) bool { return int(ep.Ifindex) == ifindex }) {
			out = append(out, ifindex)
		}
	}
	return out
}

// ensureFirst puts podwall's programs first again on each hook where another program went
// ahead: one that passes a packet before podwall judges it opens the pod. Each time it
// happens is reported on the pod (or the node, for an interface no pod is known on yet).
func (a *Agent) ensureFirst() {
	displaced, err := a.cfg.Datapath.EnsureFirst()
	if err != nil {
		a.log.Error("check the order of the programs", zap.Error(err))
		return
	}
	byIfindex := map[int]podKey{}
	for k, ifindex := range a.known {
		byIfindex[ifindex] = k
	}
	var found []finding
	for _, d := range displaced {
		f := finding{pod: byIfindex[d.Ifindex], kind: kindChainOrder, reason: ReasonProgramAhead}
		outcome := "restored"
		if d.Err != nil {
			outcome = "failed"
			f.message = fmt.Sprintf("another program runs before podwall's on ifindex %d (%s) and podwall could not go first again: %v", d.Ifindex, d.Direction, d.Err)
		} else {
			f.message = fmt.Sprintf("another program was attached before podwall's on ifindex %d (%s); podwall runs first again", d.Ifindex, d.Direction)
		}
		a.cfg.Metrics.displaced.WithLabelValues(outcome).Inc()
		found = append(found, f)
	}
	a.report.report([]string{kindChainOrder}, found, a.view.uids)
}

// detach detaches the programs from the interfaces that are gone, once the state without them
// is applied.
func (a *Agent) detach(eps []compiler.Endpoint) {
	held := a.held(eps)
	a.cfg.Metrics.interfacesHeld.Set(float64(len(held)))
	for _, ifindex := range a.cfg.Datapath.Attached() {
		if slices.Contains(held, ifindex) ||
			slices.ContainsFunc(eps, func(ep compiler.Endpoint) bool { return int(ep.Ifindex) == ifindex }) {
			continue
		}
		// An interface that lives keeps the programs, without an entry (it passes nothing)
		// until its pod is found again: a restarted agent that has not resolved a pod's
		// bridge port yet must not unguard it.
		if a.cfg.Finder.Exists(ifindex) {
			continue
		}
		if err := a.cfg.Datapath.Detach(ifindex); err != nil {
			a.log.Warn("detach", zap.Int("ifindex", ifindex), zap.Error(err))
			continue
		}
		a.log.Info("detached", zap.Int("ifindex", ifindex))
	}
}

// writeReady writes the ready file once.
func (a *Agent) writeReady() {
	if a.cfg.ReadyFile == "" || a.ready {
		return
	}
	tmp := filepath.Join(filepath.Dir(a.cfg.ReadyFile), "."+filepath.Base(a.cfg.ReadyFile)+".tmp")
	err := os.WriteFile(tmp, []byte("ready\n"), 0o600)
	if err == nil {
		err = os.Rename(tmp, a.cfg.ReadyFile)
	}
	if err != nil {
		a.log.Error("write ready file", zap.String("path", a.cfg.ReadyFile), zap.Error(err))
		return
	}
	a.ready = true
	a.log.Info("ready", zap.String("file", a.cfg.ReadyFile))
}
