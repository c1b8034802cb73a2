package datapath

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/podwall/podwall/bpf"
	"github.com/podwall/podwall/compiler"
	"github.com/podwall/podwall/loader"
	"github.com/podwall/podwall/maps"
)

// The data path's API is this package's: the agent imports it, not loader or maps.
type (
	// Config is how the data path is loaded (loader.Config).
	Config = loader.Config
	// Mode is how the programs are attached (loader.Mode).
	Mode = loader.Mode
	// Fill is how full one map is (maps.Fill).
	Fill = maps.Fill
	// Collection is what one run of the conntrack collector did (maps.Collection).
	Collection = maps.Collection
	// Displaced is a hook where another program ran before podwall's (loader.Displaced).
	Displaced = loader.Displaced
	// XDPMode is how from_world is attached to an uplink (loader.XDPMode).
	XDPMode = loader.XDPMode
	// RuleCount is what one rule of one pod decided (maps.RuleCount).
	RuleCount = maps.RuleCount
)

// The XDP modes (loader.XDPNative, loader.XDPGeneric).
const (
	XDPNative  = loader.XDPNative
	XDPGeneric = loader.XDPGeneric
)

// ErrXDPTaken means another tool's XDP program holds the uplink (loader.ErrXDPTaken).
var ErrXDPTaken = loader.ErrXDPTaken

// ErrMapFull means a map had no room for an entry: the apply failed, and the next one
// starts from what the kernel holds.
var ErrMapFull = maps.ErrMapFull

// Datapath is a loaded, pinned data path.
type Datapath struct {
	l *loader.Loader

	mu sync.Mutex // one Apply at a time: the applier's view of the maps is not shared
	a  *maps.Applier
	ct *maps.Conntrack
}

// CollectConntrack removes the conntrack entries that expired (see maps.Conntrack).
func (d *Datapath) CollectConntrack() (Collection, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ct.Collect(nil, nil)
}

// Open loads the data path, reusing and repinning what a previous agent left.
func Open(cfg Config) (*Datapath, error) {
	l, err := loader.Open(cfg)
	if err != nil {
		return nil, fmt.Errorf("open data path: %w", err)
	}
	return &Datapath{l: l, a: maps.NewApplier(l.Objects()), ct: maps.NewConntrack(l.Objects())}, nil
}

// Apply makes the maps hold s.
func (d *Datapath) Apply(s *compiler.State) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.a.Apply(s)
}

// Fill reports how full each map the applier writes is.
func (d *Datapath) Fill() []Fill {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.a.Fill()
}

// Capacity is the room of the maps the compiled state goes to, as loaded.
func (d *Datapath) Capacity() compiler.Capacity {
	m := d.l.Maps()
	return compiler.Capacity{
		Endpoints: int(m.Endpoints.MaxEntries()), IPCache: int(m.Ipcache.MaxEntries()),
		Ident: int(m.PolIdent.MaxEntries()), CIDR: int(m.PolCidr.MaxEntries()),
		Port: int(m.PolPort.MaxEntries()), ICMP: int(m.PolIcmp.MaxEntries()),
	}
}

// Attach starts judging the packets of the interface at ifindex.
func (d *Datapath) Attach(ifindex int) error { return d.l.Attach(ifindex) }

// Detach stops judging the interface's packets.
func (d *Datapath) Detach(ifindex int) error { return d.l.Detach(ifindex) }

// EnsureFirst puts podwall's programs first again where another program went ahead of them.
func (d *Datapath) EnsureFirst() ([]Displaced, error) { return d.l.EnsureFirst() }

// Attached lists the interfaces whose packets are judged.
func (d *Datapath) Attached() []int { return d.l.Attached() }

// Mode is how the programs are attached: tcx or clsact.
func (d *Datapath) Mode() Mode { return d.l.Mode() }

// AttachXDP attaches from_world to an uplink, in the namespace the Datapath attaches in.
func (d *Datapath) AttachXDP(ifindex int, mode XDPMode) error { return d.l.AttachXDP(ifindex, mode) }

// DetachXDP removes from_world from an uplink.
func (d *Datapath) DetachXDP(ifindex int) error { return d.l.DetachXDP(ifindex) }

// XDPAttached lists the uplinks from_world is attached to.
func (d *Datapath) XDPAttached() []int { return d.l.XDPAttached() }

// Verdicts reads the packets tc counted under each reason, summed over the CPUs.
func (d *Datapath) Verdicts() ([bpf.NumReasons]uint64, error) { return ReadStats(d.l.Maps().Stats) }

// XDPDrops reads the packets from_world dropped at the uplinks, under each reason.
func (d *Datapath) XDPDrops() ([bpf.NumReasons]uint64, error) { return ReadStats(d.l.Maps().XdpStats) }

// Audits reads the packets to pods in audit mode that their policy drops, under each reason:
// they passed.
func (d *Datapath) Audits() ([bpf.NumReasons]uint64, error) { return ReadStats(d.l.Maps().AuditStats) }

// RuleCounts reads what each rule of the endpoint at ifindex decided, by rule bit, then the
// packets no rule decided; nil when the endpoint has no entry or is not counted.
func (d *Datapath) RuleCounts(ifindex uint32) ([]RuleCount, error) {
	var e bpf.PodwallEndpointEntry
	if err := d.l.Maps().Endpoints.Lookup(ifindex, &e); errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read endpoint %d: %w", ifindex, err)
	}
	return maps.ReadRuleCounts(d.l.Maps().RuleCounters, e)
}

// ReadStats sums a per-CPU stats map (stats, xdp_stats) over the CPUs, by reason.
func ReadStats(m *ebpf.Map) ([bpf.NumReasons]uint64, error) {
	var out [bpf.NumReasons]uint64
	var perCPU []uint64
	for r := range bpf.NumReasons {
		if err := m.Lookup(uint32(r), &perCPU); err != nil {
			return out, fmt.Errorf("read the stats of reason %s: %w", r, err)
		}
		for _, n := range perCPU {
			out[r] += n
		}
	}
	return out, nil
}

// Maps gives read access to the maps (stats, conntrack, events).
func (d *Datapath) Maps() *bpf.PodwallMaps { return d.l.Maps() }

// Close releases the data path and leaves it enforcing: programs, links and maps stay pinned.
func (d *Datapath) Close() error { return d.l.Close() }

// Uninstall removes every program, link and map podwall made.
func (d *Datapath) Uninstall() error { return d.l.Uninstall() }
